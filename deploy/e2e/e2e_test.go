//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"kmesh.dev/kmesh/builder"
	"kmesh.dev/kmesh/deploy/manifest"
)

// maxImageBytes is the image size goal (upstream's image was 457 MB).
const maxImageBytes = 400_000_000

// warmReadyLimit is the bound for a restart with a warm cache.
const warmReadyLimit = 5 * time.Second

func TestE2E(t *testing.T) {
	e := newEnv(t)
	e.startService()
	image := "localhost/kmesh-e2e-" + e.id
	baseVars := map[string]string{"BASE_IMAGE": "localhost/kmesh-base:bookworm"}
	if c := os.Getenv("KMESH_BASE_CACHE"); c != "" {
		baseVars["BASE_CACHE"] = c
	}

	ok := t.Run("images", func(t *testing.T) {
		// the base through the docker CLI (docker import), the image with
		// both the docker CLI and podman, as `make docker` and `make docker
		// DOCKER=podman` do
		vars := clone(baseVars, "DOCKER", "docker")
		if _, err := e.make(vars, "base-image"); err != nil {
			t.Fatal(err)
		}
		// a second base-image with podman finds the image up to date
		if _, err := e.make(clone(baseVars, "DOCKER", strings.Join(e.podman, " ")), "base-image"); err != nil {
			t.Fatal(err)
		}
		for _, b := range []struct{ tag, docker string }{{"docker-cli", "docker"}, {"podman", strings.Join(e.podman, " ")}} {
			vars := clone(baseVars, "DOCKER", b.docker, "IMAGE", image, "TAG", b.tag)
			d, err := e.make(vars, "docker")
			if err != nil {
				t.Fatal(err)
			}
			size, err := strconv.ParseInt(e.mustPod("image", "inspect", "--format", "{{.Size}}", image+":"+b.tag), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("FIGURE image %s:%s built with %s in %.0f s: %d bytes (%.0f MB, %.0f MiB)", image, b.tag, b.docker, d.Seconds(), size, float64(size)/1e6, float64(size)/(1<<20))
			if size >= maxImageBytes {
				t.Errorf("image %s:%s is %d bytes, goal < %d", image, b.tag, size, maxImageBytes)
			}
			var cfg struct {
				Entrypoint []string
				Labels     map[string]string
			}
			if err := json.Unmarshal([]byte(e.mustPod("image", "inspect", "--format", "{{json .Config}}", image+":"+b.tag)), &cfg); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Entrypoint, []string{"/usr/bin/start_kmesh.sh"}) {
				t.Errorf("entrypoint %v", cfg.Entrypoint)
			}
		}
	})
	if !ok {
		t.FailNow()
	}
	img := image + ":docker-cli"

	t.Run("kbuild", func(t *testing.T) { testKbuild(t, e, img) })
	t.Run("daemonset", func(t *testing.T) { testDaemonSetLifecycle(t, e, img) })
}

func clone(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// testKbuild: the image builds kmesh.ko against the host's Debian header
// tree with the seeds' docker run mounts (-v /usr/src:/usr/src follows the
// image's /usr/src link to /host/usr/src) plus the host's /usr/lib, whose
// linux-kbuild-<ver> the tree's relative links point into.
func testKbuild(t *testing.T, e *env, img string) {
	trees, _ := filepath.Glob("/lib/modules/*/build")
	rel := ""
	for _, l := range trees {
		if st, err := os.Stat(filepath.Join(l, "Makefile")); err == nil && st.Mode().IsRegular() {
			rel = filepath.Base(filepath.Dir(l))
			break
		}
	}
	if rel == "" {
		t.Fatal("no kernel header tree under /lib/modules/*/build on this host (make deps installs linux-headers-amd64)")
	}
	out := e.mkdir("kbuild")
	script := `set -e; mkdir /tmp/k; cp /usr/share/kmesh/src/kmod/Kbuild /usr/share/kmesh/src/kmod/*.[ch] /tmp/k/; ` +
		`make -C /lib/modules/` + rel + `/build M=/tmp/k modules; cp /tmp/k/kmesh.ko /out/`
	start := time.Now()
	if _, err := e.pod("run", "--rm", "--privileged", "--entrypoint", "/bin/sh",
		"-v", "/lib/modules:/lib/modules:ro", "-v", "/usr/src:/usr/src:ro", "-v", "/usr/lib:/host/usr/lib:ro", "-v", out+":/out",
		img, "-c", script); err != nil {
		t.Fatal(err)
	}
	info, err := builder.ModuleInfo(filepath.Join(out, "kmesh.ko"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info["vermagic"], rel+" ") {
		t.Errorf("kmesh.ko vermagic %q, want %s", info["vermagic"], rel)
	}
	t.Logf("kmesh.ko for %s built in the image in %.1f s (vermagic %q)", rel, time.Since(start).Seconds(), info["vermagic"])
}

// containerSpec turns the DaemonSet's pod template into podman arguments:
// its securityContext, resources, environment, host network, every volume
// and mount, and its arguments. Host paths kmesh writes to are replaced by
// the test's own; the host's own directories are only ever mounted
// read-only (the test fails if the DaemonSet mounts one read-write).
type containerSpec struct {
	flags []string // podman create flags
	args  []string // the container's arguments
	// cgroup2Path is --cgroup2-path of the DaemonSet's arguments
	cgroup2Path    string
	request, limit int64 // memory, bytes
}

func daemonSetSpec(t *testing.T, e *env, private map[string]string, configDir string) containerSpec {
	t.Helper()
	objs, err := manifest.Load(filepath.Join(e.repo, "deploy/yaml/kmesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := manifest.DaemonSet(objs)
	if err != nil {
		t.Fatal(err)
	}
	ps := ds.Spec.Template.Spec
	c := ps.Containers[0]
	var s containerSpec
	if ps.HostNetwork {
		s.flags = append(s.flags, "--network", "host")
	}
	if ps.HostPID {
		s.flags = append(s.flags, "--pid", "host")
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.Privileged != nil && *sc.Privileged {
			s.flags = append(s.flags, "--privileged")
		} else if sc.Capabilities != nil {
			for _, d := range sc.Capabilities.Drop {
				s.flags = append(s.flags, "--cap-drop", strings.ToLower(string(d)))
			}
			var add []string
			for _, a := range sc.Capabilities.Add {
				add = append(add, string(a))
			}
			s.flags = append(s.flags, "--cap-add", strings.Join(add, ","))
		}
		if sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined {
			s.flags = append(s.flags, "--security-opt", "seccomp=unconfined")
		}
		if sc.AppArmorProfile != nil && sc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined {
			s.flags = append(s.flags, "--security-opt", "apparmor=unconfined")
		}
		if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			// only what the DaemonSet mounts is writable
			s.flags = append(s.flags, "--read-only", "--read-only-tmpfs=false")
		}
	}
	if lim, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		s.limit = lim.Value()
		s.flags = append(s.flags, "--memory", strconv.FormatInt(s.limit, 10))
	}
	if req, ok := c.Resources.Requests[corev1.ResourceMemory]; ok {
		s.request = req.Value()
	}
	downward := map[string]string{"metadata.name": "kmesh-e2e-" + e.id, "metadata.namespace": "kmesh-system",
		"spec.nodeName": hostname(), "status.podIP": "127.0.0.1"}
	for _, ev := range c.Env {
		v := ev.Value
		if ev.ValueFrom != nil {
			if ev.ValueFrom.FieldRef == nil || downward[ev.ValueFrom.FieldRef.FieldPath] == "" {
				t.Fatalf("env %s: the e2e cannot provide %+v", ev.Name, ev.ValueFrom)
			}
			v = downward[ev.ValueFrom.FieldRef.FieldPath]
		}
		s.flags = append(s.flags, "--env", ev.Name+"="+v)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	// host paths the DaemonSet mounts read-only are the host's own
	shared := map[string]bool{"/lib/modules": true, "/usr/src": true, "/usr/lib": true, "/usr/include/linux/bpf.h": true, "/proc": true}
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		opt := ""
		if m.ReadOnly {
			opt = ":ro"
		}
		switch {
		case v.HostPath != nil:
			src, ok := private[v.HostPath.Path]
			if !ok {
				if !shared[v.HostPath.Path] {
					t.Fatalf("volume %s: the e2e does not know hostPath %s: give it a private directory or list it as shared", m.Name, v.HostPath.Path)
				}
				if !m.ReadOnly {
					t.Fatalf("volume %s: the host's %s is mounted read-write", m.Name, v.HostPath.Path)
				}
				src = v.HostPath.Path
			}
			s.flags = append(s.flags, "--volume", src+":"+m.MountPath+opt)
		case v.ConfigMap != nil:
			s.flags = append(s.flags, "--volume", configDir+":"+m.MountPath+opt)
		case v.EmptyDir != nil:
			s.flags = append(s.flags, "--tmpfs", m.MountPath+":rw,size=512m")
		default:
			t.Fatalf("volume %s: the e2e does not know its source %+v", m.Name, v.VolumeSource)
		}
	}
	s.args = append(s.args, c.Args...)
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--cgroup2-path="); ok {
			s.cgroup2Path = v
		}
	}
	if s.cgroup2Path == "" {
		t.Fatalf("the DaemonSet's arguments %v set no --cgroup2-path", c.Args)
	}
	return s
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "node"
	}
	return h
}

// testDaemonSetLifecycle runs the image as the DaemonSet runs it.
func testDaemonSetLifecycle(t *testing.T, e *env, img string) {
	tp := e.topology()
	banner := "kmesh-e2e backend " + e.id
	e.serveBackend(tp, banner)
	if _, err := dial(tp); err == nil {
		t.Fatalf("the VIP %s answers before kmesh runs: it must not be routable", tp.vip)
	}
	pid := e.sleeper(tp.client)

	hostMounts := allMounts()
	bpffs := e.mount("bpf", "bpffs")
	cgroup2 := e.mount("cgroup2", "cgroup2")
	private := map[string]string{
		"/sys/fs/bpf": bpffs, "/sys/fs/cgroup": cgroup2, "/var/lib/kmesh": e.mkdir("cache"),
		"/mnt": e.mkdir("mnt"), "/etc/cni/net.d": e.mkdir("cni-conf"), "/opt/cni/bin": e.mkdir("cni-bin"),
	}
	configDir := e.mkdir("config")
	cfg := fmt.Sprintf(`static_resources:
  listeners:
  - name: e2e
    address: { socket_address: { address: %s, port_value: %d } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: e2e
          cluster: backend
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: %s, port_value: %d } } }
`, tp.vip, tp.vipPort, tp.backendIP, tp.backendPort)
	if err := os.WriteFile(filepath.Join(configDir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := daemonSetSpec(t, e, private, configDir)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	name := "kmesh-e2e-" + e.id
	args := append(append([]string{}, spec.args...), "--admin-addr="+adminAddr, "--metrics-addr="+metricsAddr,
		fmt.Sprintf("--enroll-netns=/host/proc/%d/ns/net", pid))
	create := append(append([]string{"create", "--name", name}, spec.flags...), img)
	create = append(create, args...)
	e.mustPod(create...)
	t.Cleanup(func() { e.pod("rm", "--force", "--time", "5", name) })
	t.Logf("container: podman %s", strings.Join(create, " "))

	// cold: nothing of the image in the page cache, an empty build cache
	evictPageCache(t, e, name)
	start := time.Now()
	e.mustPod("start", name)
	if _, err := waitReady(adminAddr, 3*time.Minute); err != nil {
		t.Fatalf("cold start: %v\n%s", err, logs(e, name))
	}
	t.Logf("FIGURE cold start (podman start, empty cache) to /ready: %.2f s", time.Since(start).Seconds())
	peak, err := memoryPeak(e, name)
	if err != nil {
		t.Errorf("read the start's peak memory: %v", err)
	} else {
		t.Logf("FIGURE start peak memory (cgroup, cold page cache, host bpf.h): %.0f MiB; the DaemonSet requests %.0f MiB", mib(peak), mib(spec.request))
		if spec.request > 0 && peak > spec.request {
			t.Errorf("the start peaked at %.0f MiB, above the DaemonSet's memory request %.0f MiB", mib(peak), mib(spec.request))
		}
	}
	// The start again, in the running container on a cold page cache and a
	// fresh build cache, once with the host's bpf.h and once with headers
	// derived from BTF (as on a node without a usable bpf.h): the cgroup's
	// high-water mark, daemon included, as for the first start.
	for _, c := range []struct{ label, header string }{{"host bpf.h", ""}, {"headers from BTF", "--bpf-header=/nonexistent/bpf.h"}} {
		peak, base, err := dryRunPeak(t, e, name, spec.cgroup2Path, c.header)
		if err != nil {
			t.Errorf("dry run (%s): %v", c.label, err)
			continue
		}
		t.Logf("FIGURE start peak memory (cgroup, cold page cache, %s, daemon running): %.0f MiB (%.0f MiB before the start)", c.label, mib(peak), mib(base))
		if peak > spec.limit {
			t.Errorf("the start with %s peaked at %.0f MiB, above the limit %.0f MiB", c.label, mib(peak), mib(spec.limit))
		}
	}

	// (a) compat, for this host's reason
	st := status(t, adminAddr)
	if st.Decision.Mode != "compat" || st.Mode != "compat" {
		t.Errorf("mode %q (decision %q), want compat", st.Mode, st.Decision.Mode)
	}
	if !slices.ContainsFunc(st.Decision.Reasons, func(r string) bool { return strings.Contains(r, "CONFIG_MODULES is not set") }) {
		t.Errorf("decision reasons lack the no-modules reason: %q", st.Decision.Reasons)
	}
	if l := logs(e, name); !regexp.MustCompile(`reason="loading kmesh.ko: kconfig.modules is unsupported \(CONFIG_MODULES is not set`).MatchString(l) {
		t.Errorf("kmesh-start's log has no no-modules reason:\n%s", tail(l, 30))
	}
	if st.Build.CacheHit {
		t.Errorf("the first start hit the cache (it must build)")
	}
	// this host's kernel (6.18) has all same-node acceleration needs, and
	// the container's capabilities suffice to attach it
	if !st.SameNodeAccel.Enabled {
		t.Errorf("same-node acceleration off in the container: %s", st.SameNodeAccel.Note)
	}

	// (b) the enrolled client is redirected from the VIP to the backend
	if got, err := dial(tp); err != nil || got != banner {
		t.Fatalf("connect to VIP %s:%d from the enrolled namespace: %q, %v\n%s", tp.vip, tp.vipPort, got, err, logs(e, name))
	}
	if m := metric(t, metricsAddr, "kmesh_service_connections_redirected_total"); m < 1 {
		t.Errorf("kmesh_service_connections_redirected_total = %v after a redirected connection", m)
	}
	linkIDs := pinnedLinks(t, bpffs)
	if len(linkIDs) == 0 {
		t.Fatalf("no links pinned under %s/kmesh/links", bpffs)
	}

	// (d) stopped: the pinned links keep redirecting
	e.mustPod("stop", "--time", "10", name)
	if got, err := dial(tp); err != nil || got != banner {
		t.Errorf("with kmesh stopped, connect to the VIP: %q, %v (the pinned links must keep the programs attached)", got, err)
	}

	// (c) restart with the warm cache
	start = time.Now()
	e.mustPod("start", name)
	if _, err := waitReady(adminAddr, time.Minute); err != nil {
		t.Fatalf("warm restart: %v\n%s", err, logs(e, name))
	}
	warm := time.Since(start)
	t.Logf("FIGURE warm restart (podman start, cached objects) to /ready: %.3f s; kmesh's own: %s", warm.Seconds(), startPhases(logs(e, name)))
	if warm > warmReadyLimit {
		t.Errorf("warm restart took %v to /ready, want < %v", warm, warmReadyLimit)
	}
	st = status(t, adminAddr)
	if !st.Build.CacheHit {
		t.Errorf("the restart did not hit the build cache")
	}
	if len(st.AdoptedMaps) == 0 || len(st.Enrolled) != 1 {
		t.Errorf("after the restart: adopted maps %v, enrolled %v", st.AdoptedMaps, st.Enrolled)
	}
	if got, err := dial(tp); err != nil || got != banner {
		t.Errorf("after the restart, connect to the VIP: %q, %v", got, err)
	}

	// (e) uninstall, in the image with the same mounts
	e.mustPod("stop", "--time", "10", name)
	e.mustPod("rm", name)
	un := append(append([]string{"run", "--rm", "--name", name + "-uninstall"}, spec.flags...),
		"--entrypoint", "/usr/bin/kmesh-daemon", img, "uninstall", "--cgroup2-path="+spec.cgroup2Path)
	if _, err := e.pod(un...); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	entries, err := os.ReadDir(bpffs)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		// the kernel's own (bpf preload) entries of every bpffs
		if en.Name() != "maps.debug" && en.Name() != "progs.debug" {
			t.Errorf("left in the bpffs after uninstall: %s", en.Name())
		}
	}
	for _, id := range linkIDs {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			t.Errorf("link %d still exists after uninstall", id)
		} else if !errors.Is(err, unix.ENOENT) {
			t.Errorf("link %d: %v", id, err)
		}
	}
	if got, err := dial(tp); err == nil {
		t.Errorf("after uninstall the VIP still answers (%q): programs left attached", got)
	}
	for _, m := range mountsUnder(e.dir) {
		if m != bpffs && m != cgroup2 {
			t.Errorf("mount left after uninstall: %s", m)
		}
	}
	// kmesh's default mount points on the host: nothing new there (others'
	// mounts from before are not ours to judge)
	for _, m := range newMounts(hostMounts, allMounts()) {
		if m == "/sys/fs/bpf" || m == "/mnt/kmesh_cgroup2" || strings.HasPrefix(m, "/run/kmesh") {
			t.Errorf("a mount appeared on the host at %s", m)
		}
	}
}

// allMounts lists the host's mount points (with repeats for stacked mounts).
func allMounts() []string { return mountsUnder("") }

// newMounts returns the entries of after that before does not have.
func newMounts(before, after []string) []string {
	count := map[string]int{}
	for _, m := range before {
		count[m]++
	}
	var out []string
	for _, m := range after {
		if count[m] > 0 {
			count[m]--
			continue
		}
		out = append(out, m)
	}
	return out
}

// evictPageCache drops the page cache of the container's root file system
// (its own files only), so the start reads the toolchain from disk and its
// pages are charged to the container's memory cgroup as on a fresh node.
func evictPageCache(t *testing.T, e *env, name string) {
	t.Helper()
	root := e.mustPod("mount", name)
	defer e.pod("umount", name)
	n := 0
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		// written moments ago by podman create: dirty pages are not dropped
		f.Sync()
		if unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) == nil {
			n++
		}
		f.Close()
		return nil
	})
	t.Logf("evicted the page cache of %d files of the container's root file system", n)
}

// memoryPeak reads the container's memory cgroup high-water mark (cgroup v1
// memory.max_usage_in_bytes, or v2 memory.peak).
func memoryPeak(e *env, name string) (int64, error) {
	p, err := e.pod("inspect", "--format", "{{.State.CgroupPath}}", name)
	if err != nil {
		return 0, err
	}
	p = strings.TrimSpace(p)
	for _, f := range []string{filepath.Join("/sys/fs/cgroup/memory", p, "memory.max_usage_in_bytes"), filepath.Join("/sys/fs/cgroup", p, "memory.peak")} {
		if b, err := os.ReadFile(f); err == nil {
			return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		}
	}
	return 0, fmt.Errorf("no memory.max_usage_in_bytes or memory.peak for cgroup %s", p)
}

// dryRunPeak evicts the container's files from the page cache, resets the
// memory high-water mark and runs kmesh-start --dry-run (fresh cache) in
// the container; it returns the peak and the usage before.
func dryRunPeak(t *testing.T, e *env, name, cgroup2Path string, args ...string) (peak, base int64, err error) {
	t.Helper()
	evictPageCache(t, e, name)
	if err := resetMemoryPeak(e, name); err != nil {
		return 0, 0, fmt.Errorf("reset the memory peak: %w", err)
	}
	if base, err = memoryPeak(e, name); err != nil {
		return 0, 0, err
	}
	dir := fmt.Sprintf("/tmp/kmesh-dry-%d", time.Now().UnixNano())
	cmd := []string{"exec", name, "kmesh-start", "--dry-run", "--cache-dir=" + dir + "/cache", "--state-dir=" + dir + "/state", "--cgroup2-path=" + cgroup2Path}
	for _, a := range args {
		if a != "" {
			cmd = append(cmd, a)
		}
	}
	if _, err := e.pod(cmd...); err != nil {
		return 0, 0, err
	}
	peak, err = memoryPeak(e, name)
	return peak, base, err
}

// resetMemoryPeak sets the cgroup v1 high-water mark to the current usage.
func resetMemoryPeak(e *env, name string) error {
	p, err := e.pod("inspect", "--format", "{{.State.CgroupPath}}", name)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join("/sys/fs/cgroup/memory", strings.TrimSpace(p), "memory.max_usage_in_bytes"), []byte("0"), 0o644)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// waitReady polls /ready until 200.
func waitReady(addr string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	c := &http.Client{Timeout: time.Second}
	last := ""
	for time.Since(start) < timeout {
		resp, err := c.Get("http://" + addr + "/ready")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("/ready not 200 after %v: %s", timeout, last)
}

type statusDoc struct {
	Mode     string `json:"mode"`
	Decision struct {
		Mode    string   `json:"mode"`
		Reasons []string `json:"reasons"`
	} `json:"decision"`
	Build struct {
		CacheHit bool `json:"cache_hit"`
	} `json:"build"`
	AdoptedMaps   []string          `json:"adopted_maps"`
	Enrolled      []json.RawMessage `json:"enrolled_netns"`
	SameNodeAccel struct {
		Enabled bool   `json:"enabled"`
		Note    string `json:"note"`
	} `json:"same_node_accel"`
}

func status(t *testing.T, addr string) statusDoc {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s statusDoc
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decode /status: %v", err)
	}
	return s
}

// metric sums a Prometheus counter over its label sets.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// pinnedLinks returns the IDs of the links pinned under <bpffs>/kmesh/links.
func pinnedLinks(t *testing.T, bpffs string) []link.ID {
	t.Helper()
	dir := filepath.Join(bpffs, "kmesh", "links")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []link.ID
	for _, en := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, en.Name()), nil)
		if err != nil {
			t.Fatalf("load pinned link %s: %v", en.Name(), err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	return ids
}

// logs returns the container's output (kmesh logs to standard error).
func logs(e *env, name string) string {
	cmd := exec.Command(e.podman[0], append(append([]string(nil), e.podman[1:]...), "logs", name)...)
	cmd.Env = e.environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("podman logs %s: %v\n%s", name, err, out)
	}
	return string(out)
}

// startPhases picks kmesh-start's phase durations and the daemon's startup
// time from the last start's log lines.
func startPhases(log string) string {
	re := regexp.MustCompile(`duration_ms=(\d+).*phase=(\w[\w-]*)|phase=(\w[\w-]*).*duration_ms=(\d+)|startup_ms=(\d+)`)
	var parts []string
	lines := strings.Split(log, "\n")
	// the last start: from the last "phase=mount"
	from := 0
	for i, l := range lines {
		if strings.Contains(l, "phase=mount") {
			from = i
		}
	}
	for _, l := range lines[from:] {
		m := re.FindStringSubmatch(l)
		switch {
		case m == nil:
		case m[5] != "":
			parts = append(parts, "daemon "+m[5]+" ms")
		case m[2] != "":
			parts = append(parts, m[2]+" "+m[1]+" ms")
		case m[3] != "":
			parts = append(parts, m[3]+" "+m[4]+" ms")
		}
	}
	return strings.Join(parts, ", ")
}
