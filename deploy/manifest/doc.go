// Package manifest reads and checks kmesh's Kubernetes manifests: the static
// deploy/yaml/kmesh.yaml and the Helm chart deploy/helm/kmesh as rendered by
// the real helm.
//
// Decode splits a multi-document YAML stream and decodes each document
// strictly into its k8s.io/api type: unknown or duplicate fields, wrong
// types and unknown kinds are errors. Validate then checks what the API
// server would refuse and decoding cannot see (names, references between
// objects, volumes and their mounts, probes, ports, requests against limits,
// propagation only for privileged containers). Equal compares two sets of
// objects semantically (field order, comments and quantity spellings do not
// matter) and describes the differences.
//
// Helm finds a helm binary ($HELM, else one built once with `go install
// helm.sh/helm/v3/cmd/helm@HelmVersion` into the user cache directory) and
// renders the chart. The tests of this package keep the chart's default
// render equal to deploy/yaml/kmesh.yaml and its privileged render equal to
// the static manifest patched with deploy/yaml/privileged-patch.yaml; the
// e2e (deploy/e2e) runs the image with the DaemonSet's own mounts and
// arguments, read through this package.
package manifest
