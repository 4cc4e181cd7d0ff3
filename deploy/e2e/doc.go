// Package e2e tests the kmesh image on this host, end to end (build tag
// e2e; `make e2e`):
//
//  1. `make base-image` (debootstrap; the root file system is cached by
//     content in /var/cache/kmesh-base) and `make docker`, once with the real
//     docker CLI against a `podman system service` the test starts, once with
//     DOCKER=podman, both in a private podman store (vfs, runc, a
//     CONTAINERS_CONF of its own) that is removed afterwards.
//  2. The container runs with the DaemonSet's own securityContext, mounts
//     and arguments, read from deploy/yaml/kmesh.yaml (host paths that kmesh
//     writes are replaced by private ones: a bpffs and a cgroup2 mount of the
//     test's, a cache directory), enrolls a test network namespace through
//     /host/proc and must redirect its connections from a VIP to a backend
//     namespace; the decision must be compat for this host's reason (no
//     module support); a restart with the warm cache must be ready within
//     5 s; traffic must keep flowing while the container is stopped; and
//     `kmesh-daemon uninstall` in the image must leave no pin, link or mount.
//  3. The image builds kmesh.ko against the host's Debian header tree with
//     the seeds' `docker run --privileged -v /usr/src:/usr/src ...` mounts
//     plus the host's /usr/lib.
//
// Figures (image size, start peak memory, cold and warm start to ready) are
// logged with -v.
package e2e
