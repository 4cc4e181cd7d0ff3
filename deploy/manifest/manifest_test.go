package manifest_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"

	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/deploy/manifest"
)

func repo(t *testing.T, rel string) string {
	t.Helper()
	root, err := manifest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

func load(t *testing.T, rel string) []manifest.Object {
	t.Helper()
	objs, err := manifest.Load(repo(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	if errs := manifest.Validate(objs); len(errs) > 0 {
		for _, e := range errs {
			t.Error(e)
		}
		t.FailNow()
	}
	return objs
}

var (
	helmOnce sync.Once
	helmBin  *manifest.Helm
	helmErr  error
	helmHome string // helm's cache and configuration for this run
)

func TestMain(m *testing.M) {
	var err error
	if helmHome, err = os.MkdirTemp("", "kmesh-helm-home-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(helmHome)
	os.Exit(code)
}

// helm builds (once per machine) or finds helm; a missing helm fails.
func helm(t *testing.T) *manifest.Helm {
	t.Helper()
	helmOnce.Do(func() {
		home := helmHome
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		start := time.Now()
		helmBin, helmErr = manifest.FindHelm(ctx, home)
		t.Logf("helm %s at %v (%.1f s)", manifest.HelmVersion, helmBin, time.Since(start).Seconds())
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmBin
}

func render(t *testing.T, extra ...string) []manifest.Object {
	t.Helper()
	h := helm(t) // first: a cold build of helm takes minutes
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	objs, err := h.Template(ctx, repo(t, "deploy/helm/kmesh"), "kmesh-system", extra...)
	if err != nil {
		t.Fatal(err)
	}
	if errs := manifest.Validate(objs); len(errs) > 0 {
		for _, e := range errs {
			t.Error(e)
		}
		t.FailNow()
	}
	return objs
}

func daemonSet(t *testing.T, objs []manifest.Object) (*appsv1.DaemonSet, *corev1.Container) {
	t.Helper()
	ds, err := manifest.DaemonSet(objs)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("%d containers, want 1", n)
	}
	return ds, &ds.Spec.Template.Spec.Containers[0]
}

// TestStaticManifest checks deploy/yaml/kmesh.yaml against the and
// the seeds' requirements.
func TestStaticManifest(t *testing.T) {
	objs := load(t, "deploy/yaml/kmesh.yaml")
	for _, k := range []string{"Namespace//kmesh-system", "ServiceAccount/kmesh-system/kmesh", "ClusterRole//kmesh",
		"ClusterRoleBinding//kmesh", "ConfigMap/kmesh-system/kmesh-config", "DaemonSet/kmesh-system/kmesh"} {
		if !slices.ContainsFunc(objs, func(o manifest.Object) bool { return o.Key() == k }) {
			t.Errorf("%s missing", k)
		}
	}

	cr := manifest.Find(objs, "ClusterRole", "kmesh").Obj.(*rbacv1.ClusterRole)
	if len(cr.Rules) != 1 || !slices.Equal(cr.Rules[0].APIGroups, []string{""}) ||
		!slices.Equal(cr.Rules[0].Resources, []string{"pods", "services", "namespaces"}) ||
		!slices.Equal(cr.Rules[0].Verbs, []string{"get", "list", "watch", "patch"}) {
		t.Errorf("ClusterRole rules = %+v, want pods, services, namespaces: get list watch patch", cr.Rules)
	}

	ds, c := daemonSet(t, objs)
	ps := ds.Spec.Template.Spec
	checkCommon(t, ds, c)

	// privileges: the capability list, not privileged
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged {
		t.Errorf("securityContext.privileged must be false by default")
	}
	if sc != nil && sc.Capabilities != nil {
		want := []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE", "SYS_PTRACE", "DAC_OVERRIDE"}
		if !slices.Equal(sc.Capabilities.Add, want) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("capabilities = %+v, want drop ALL, add %v", sc.Capabilities, want)
		}
	} else {
		t.Errorf("no capabilities")
	}
	for _, m := range c.VolumeMounts {
		if m.MountPropagation != nil {
			t.Errorf("mount %s: propagation %s in the unprivileged DaemonSet", m.Name, *m.MountPropagation)
		}
	}
	if !ps.HostNetwork || ps.HostPID {
		t.Errorf("hostNetwork %v hostPID %v, want true, false", ps.HostNetwork, ps.HostPID)
	}

	// the config the daemon is pointed at is the ConfigMap's, and it parses
	cm := manifest.Find(objs, "ConfigMap", "kmesh-config").Obj.(*corev1.ConfigMap)
	if !slices.Contains(c.Args, "--config=/etc/kmesh/config.yaml") || mountOf(c, "kmesh-config") != "/etc/kmesh" {
		t.Errorf("--config=/etc/kmesh/config.yaml with ConfigMap kmesh-config at /etc/kmesh expected; args %v", c.Args)
	}
	m, err := config.ParseBootstrap([]byte(cm.Data["config.yaml"]), config.FormatYAML)
	if err != nil {
		t.Fatalf("the ConfigMap's bootstrap: %v", err)
	}
	if len(m.Services) != 0 {
		t.Errorf("the default config should configure no service, has %d", len(m.Services))
	}
}

// checkCommon holds for every render of the chart and the static manifest.
func checkCommon(t *testing.T, ds *appsv1.DaemonSet, c *corev1.Container) {
	t.Helper()
	ps := ds.Spec.Template.Spec
	// the seeds' volume table, plus the cache, the host's /usr/lib and cgroup2
	for _, want := range []struct {
		name, hostPath, mountPath string
		readOnly                  bool
	}{
		{"mnt", "/mnt", "/mnt", false},
		{"sys-fs-bpf", "/sys/fs/bpf", "/sys/fs/bpf", false},
		{"lib-modules", "/lib/modules", "/lib/modules", true},
		{"cni", "/etc/cni/net.d", "/etc/cni/net.d", false},
		{"kmesh-cni-install-path", "/opt/cni/bin", "/opt/cni/bin", false},
		{"linux-bpf", "/usr/include/linux/bpf.h", "/usr/include/linux/bpf.h", true},
		{"ko-build-path", "/usr/src", "/host/usr/src", true},
		{"host-usr-lib", "/usr/lib", "/host/usr/lib", true},
		{"host-procfs", "/proc", "/host/proc", true},
		{"host-cgroup", "/sys/fs/cgroup", "/host/sys/fs/cgroup", false},
		{"kmesh-cache", "/var/lib/kmesh", "/var/lib/kmesh", false},
	} {
		v := volumeOf(ps, want.name)
		if v == nil || v.HostPath == nil || v.HostPath.Path != want.hostPath {
			t.Errorf("volume %s: want hostPath %s, got %+v", want.name, want.hostPath, v)
			continue
		}
		m := mountOf(c, want.name)
		if m != want.mountPath {
			t.Errorf("volume %s: mounted at %q, want %q", want.name, m, want.mountPath)
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == want.name && vm.ReadOnly != want.readOnly {
				t.Errorf("volume %s: readOnly %v, want %v", want.name, vm.ReadOnly, want.readOnly)
			}
		}
	}
	// the host's /usr/lib never over the image's
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == "/usr/lib" || vm.MountPath == "/usr" || vm.MountPath == "/lib" {
			t.Errorf("mount %s at %s hides the image's libraries", vm.Name, vm.MountPath)
		}
	}
	for _, e := range []string{"XDS_ADDRESS", "POD_NAME", "POD_NAMESPACE", "NODE_NAME", "INSTANCE_IP"} {
		if !slices.ContainsFunc(c.Env, func(v corev1.EnvVar) bool { return v.Name == e }) {
			t.Errorf("env %s missing", e)
		}
	}
	if lim := c.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("800Mi")) != 0 {
		t.Errorf("memory limit %s, want 800Mi", lim.String())
	}
	if req, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok || req.IsZero() {
		t.Errorf("no memory request")
	}
	if ps.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", ps.PriorityClassName)
	}
	if len(ps.Tolerations) == 0 {
		t.Errorf("no tolerations")
	}
	// the admin API is on loopback: with hostNetwork the kubelet reaches it at 127.0.0.1
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet, got %+v", name, p)
			continue
		}
		if ps.HostNetwork && p.HTTPGet.Host != "127.0.0.1" {
			t.Errorf("%s probe host %q: the admin API listens on 127.0.0.1", name, p.HTTPGet.Host)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/ready" {
		t.Errorf("readiness path %q, want /ready", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem expected")
	}
	for _, p := range []string{"/tmp", "/run/kmesh", "/var/lib/kmesh"} {
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == p && !m.ReadOnly }) {
			t.Errorf("no writable mount at %s (the root file system is read-only)", p)
		}
	}
}

func volumeOf(ps corev1.PodSpec, name string) *corev1.Volume {
	for i := range ps.Volumes {
		if ps.Volumes[i].Name == name {
			return &ps.Volumes[i]
		}
	}
	return nil
}

func mountOf(c *corev1.Container, name string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath
		}
	}
	return ""
}

// TestChartDefaultIsStaticManifest: the chart cannot drift from the static
// manifest.
func TestChartDefaultIsStaticManifest(t *testing.T) {
	static := load(t, "deploy/yaml/kmesh.yaml")
	got := render(t, "--set", "createNamespace=true")
	if d := manifest.Equal(static, got); d != "" {
		t.Errorf("helm template -n kmesh-system --set createNamespace=true differs from deploy/yaml/kmesh.yaml:\n%s", d)
	}
	// without it, no Namespace object (helm install --create-namespace)
	plain := render(t)
	if manifest.Find(plain, "Namespace", "kmesh-system") != nil {
		t.Errorf("the chart's default creates the namespace")
	}
	if len(plain) != len(static)-1 {
		t.Errorf("default render has %d objects, want %d", len(plain), len(static)-1)
	}
}

// TestPrivilegedPatch: deploy/yaml/privileged-patch.yaml applied to the
// static DaemonSet is what the chart renders with privileged=true.
func TestPrivilegedPatch(t *testing.T) {
	static := load(t, "deploy/yaml/kmesh.yaml")
	ds, _ := daemonSet(t, static)
	orig, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	patchYAML, err := os.ReadFile(repo(t, "deploy/yaml/privileged-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	patch, err := yaml.YAMLToJSON(patchYAML)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := strategicpatch.StrategicMergePatch(orig, patch, appsv1.DaemonSet{})
	if err != nil {
		t.Fatalf("apply the patch: %v", err)
	}
	patched, err := manifest.Decode(merged, "static+privileged-patch")
	if err != nil {
		t.Fatal(err)
	}
	if errs := manifest.Validate(append(withoutDaemonSet(static), patched...)); len(errs) > 0 {
		t.Fatalf("patched manifest invalid: %v", errs)
	}
	chart := render(t, "--set", "createNamespace=true", "--set", "privileged=true")
	if d := manifest.Equal(append(withoutDaemonSet(static), patched...), chart); d != "" {
		t.Errorf("patched static manifest differs from the chart's privileged render:\n%s", d)
	}
	pds, pc := daemonSet(t, chart)
	checkCommon(t, pds, pc)
	if sc := pc.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged || sc.Capabilities != nil {
		t.Errorf("privileged render: securityContext %+v", sc)
	}
	for _, m := range pc.VolumeMounts {
		if m.Name == "sys-fs-bpf" && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional) {
			t.Errorf("privileged render: sys-fs-bpf propagation %v, want Bidirectional", m.MountPropagation)
		}
	}
}

func withoutDaemonSet(objs []manifest.Object) []manifest.Object {
	var out []manifest.Object
	for _, o := range objs {
		if o.Kind != "DaemonSet" {
			out = append(out, o)
		}
	}
	return out
}

// TestChartValues: the values reach the objects.
func TestChartValues(t *testing.T) {
	cfg := "static_resources:\n  listeners: []\n  clusters:\n  - name: c\n    type: STATIC\n    load_assignment:\n      cluster_name: c\n      endpoints: []\n"
	objs := render(t,
		"--set", "image.repository=registry.example/kmesh", "--set", "image.tag=v1.2.3", "--set", "image.pullPolicy=Always",
		"--set", "xdsAddress=istiod-1-22-6.istio-system.svc:15012", "--set", "mode=compat",
		"--set", "cgroup2Path=/host/sys/fs/cgroup/unified", "--set", "bpfHeader.enabled=false",
		"--set", "adminPort=15300", "--set", "metricsPort=15021",
		"--set", "resources.requests.memory=300Mi", "--set", "resources.limits.memory=1Gi",
		"--set-json", `extraArgs=["--enroll-netns=/host/proc/1/ns/net"]`,
		"--set-json", `extraEnv=[{"name":"CLUSTER_ID","value":"c1"}]`,
		"--set-json", `extraVolumes=[{"name":"kube-config","hostPath":{"path":"/root/.kube"}}]`,
		"--set-json", `extraVolumeMounts=[{"name":"kube-config","mountPath":"/root/.kube","readOnly":true}]`,
		"--set", "config="+cfg)
	ds, c := daemonSet(t, objs)
	if c.Image != "registry.example/kmesh:v1.2.3" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	wantArgs := []string{"--mode=compat", "--cgroup2-path=/host/sys/fs/cgroup/unified", "--config=/etc/kmesh/config.yaml",
		"--admin-addr=127.0.0.1:15300", "--metrics-addr=:15021", "--enroll-netns=/host/proc/1/ns/net"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %v, want %v", c.Args, wantArgs)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["XDS_ADDRESS"] != "istiod-1-22-6.istio-system.svc:15012" || env["CLUSTER_ID"] != "c1" {
		t.Errorf("env %v", env)
	}
	if c.ReadinessProbe.HTTPGet.Port.IntValue() != 15300 || c.Ports[0].ContainerPort != 15021 {
		t.Errorf("ports: probe %v, container %v", c.ReadinessProbe.HTTPGet.Port, c.Ports)
	}
	if q := c.Resources.Requests[corev1.ResourceMemory]; q.String() != "300Mi" {
		t.Errorf("memory request %s", q.String())
	}
	if volumeOf(ds.Spec.Template.Spec, "linux-bpf") != nil || mountOf(c, "linux-bpf") != "" {
		t.Errorf("bpfHeader.enabled=false keeps the linux-bpf volume")
	}
	if mountOf(c, "kube-config") != "/root/.kube" || volumeOf(ds.Spec.Template.Spec, "kube-config") == nil {
		t.Errorf("extra volume not mounted")
	}
	cm := manifest.Find(objs, "ConfigMap", "kmesh-config").Obj.(*corev1.ConfigMap)
	if strings.TrimSpace(cm.Data["config.yaml"]) != strings.TrimSpace(cfg) {
		t.Errorf("config.yaml = %q, want %q", cm.Data["config.yaml"], cfg)
	}
	if _, err := config.ParseBootstrap([]byte(cm.Data["config.yaml"]), config.FormatYAML); err != nil {
		t.Errorf("rendered config: %v", err)
	}
}

func TestChartLint(t *testing.T) {
	h := helm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := h.Run(ctx, "lint", "--strict", repo(t, "deploy/helm/kmesh"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestValidateCatches: the checks refuse what the API server would.
func TestValidateCatches(t *testing.T) {
	b, err := os.ReadFile(repo(t, "deploy/yaml/kmesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"unknown field", "hostNetwork: true", "hostNetwork: true\n      hostNetworks: true", "unknown field"},
		{"mount without volume", "- name: tmp\n              mountPath: /tmp", "- name: tmpx\n              mountPath: /tmp", "no such volume"},
		{"selector mismatch", "matchLabels:\n      app: kmesh", "matchLabels:\n      app: kmesh2", "does not match"},
		{"request above limit", "memory: 320Mi", "memory: 900Mi", "above its limit"},
		{"bidirectional unprivileged", "mountPath: /sys/fs/bpf\n", "mountPath: /sys/fs/bpf\n              mountPropagation: Bidirectional\n", "only allowed in privileged"},
		{"bad capability", `"DAC_OVERRIDE"]`, `"CAP_DAC_OVERRIDE"]`, "without CAP_"},
		{"missing service account", "serviceAccountName: kmesh", "serviceAccountName: kmesh2", "no such ServiceAccount"},
		{"wrong type", "failureThreshold: 60", "failureThreshold: sixty", "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(b), tc.from) {
				t.Fatalf("manifest has no %q", tc.from)
			}
			mutated := strings.Replace(string(b), tc.from, tc.to, 1)
			objs, err := manifest.Decode([]byte(mutated), "mutated")
			var msgs []string
			if err != nil {
				msgs = append(msgs, err.Error())
			} else {
				for _, e := range manifest.Validate(objs) {
					msgs = append(msgs, e.Error())
				}
			}
			if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, tc.want) }) {
				t.Errorf("want an error containing %q, got %q", tc.want, msgs)
			}
		})
	}
}
