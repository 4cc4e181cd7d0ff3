//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/deploy/manifest"
)

// env is one run's private world: a work directory under /var/tmp holding a
// podman store, its configuration, the podman service's socket and the
// test's mounts. Everything is removed at the end; only the base image's
// cached root file system (BASE_CACHE) stays.
type env struct {
	t      *testing.T
	id     string
	dir    string
	repo   string
	podman []string // the podman command with the private store
	conf   string   // CONTAINERS_CONF
	sock   string   // the podman service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the e2e needs root (bpffs, cgroup2, network namespaces, podman)")
	}
	for _, c := range []string{"podman", "runc", "debootstrap", "docker", "ip", "make", "go"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is required (make deps installs podman, runc, debootstrap; the docker CLI is the machine's): %v", c, err)
		}
	}
	repo, err := manifest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, id: hex.EncodeToString(b), repo: repo}
	e.dir, err = os.MkdirTemp("/var/tmp", "kmesh-e2e-"+e.id+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.removeDir)
	// the docker CLI's configuration (podman reads its auth file from there too)
	if err := os.MkdirAll(filepath.Join(e.dir, "docker-config"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "docker-config", "config.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	e.conf = filepath.Join(e.dir, "containers.conf")
	// runc: crun cannot run on hybrid cgroups; no default ulimits: setrlimit
	// is not permitted here (docs/machine.md)
	conf := "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n"
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.podman = []string{"podman", "--root", filepath.Join(e.dir, "store"), "--runroot", filepath.Join(e.dir, "run"), "--storage-driver", "vfs"}
	e.sock = filepath.Join(e.dir, "podman.sock")
	t.Logf("work directory %s (id %s)", e.dir, e.id)
	return e
}

// environ is the environment of podman, docker and make.
// Temporary files (podman's API uploads, build contexts) stay in the work
// directory.
func (e *env) environ() []string {
	return append(os.Environ(), "CONTAINERS_CONF="+e.conf, "BUILDAH_ISOLATION=chroot", "TMPDIR="+filepath.Join(e.dir, "tmp"),
		"DOCKER_HOST=unix://"+e.sock, "DOCKER_CONFIG="+filepath.Join(e.dir, "docker-config"))
}

// run runs a command and returns its standard output; the error carries
// standard error.
func (e *env) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = e.environ()
	cmd.Dir = e.repo
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, tail(stdout.String(), 15), tail(stderr.String(), 25))
	}
	return stdout.String(), nil
}

func (e *env) pod(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return e.run(ctx, e.podman[0], append(append([]string(nil), e.podman[1:]...), args...)...)
}

func (e *env) mustPod(args ...string) string {
	e.t.Helper()
	out, err := e.pod(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// make runs targets of the Makefile together with docker/docker.mk (the
// guard in docker.mk makes that right whether the Makefile includes it yet
// or not).
func (e *env) make(vars map[string]string, targets ...string) (time.Duration, error) {
	args := []string{"-f", "Makefile", "-f", "docker/docker.mk"}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, k+"="+vars[k])
	}
	args = append(args, targets...)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := e.run(ctx, "make", args...)
	d := time.Since(start)
	if err == nil {
		e.t.Logf("make %s: %.1f s\n%s", strings.Join(targets, " "), d.Seconds(), tail(out, 4))
	}
	return d, err
}

// startService runs `podman system service` on the private store, so the
// docker CLI can talk to it through DOCKER_HOST.
func (e *env) startService() {
	e.t.Helper()
	args := append(append([]string(nil), e.podman[1:]...), "system", "service", "--time=0", "unix://"+e.sock)
	cmd := exec.Command(e.podman[0], args...)
	cmd.Env = e.environ()
	log, err := os.Create(filepath.Join(e.dir, "podman-service.log"))
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start podman system service: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	e.t.Cleanup(func() {
		// this process only, by its PID
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", e.sock)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b, _ := os.ReadFile(log.Name())
			e.t.Fatalf("podman system service exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("podman system service: no socket after 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeStore removes every container and image of the private store.
func (e *env) removeStore() {
	if _, err := os.Stat(filepath.Join(e.dir, "store")); err != nil {
		return
	}
	if out, err := e.pod("rm", "--all", "--force", "--time", "5"); err != nil {
		e.t.Logf("podman rm: %v %s", err, out)
	}
	if out, err := e.pod("system", "reset", "--force"); err != nil {
		e.t.Logf("podman system reset: %v %s", err, out)
	}
}

// removeDir unmounts whatever is left under the work directory (deepest
// first, lazily) and removes it.
func (e *env) removeDir() {
	e.removeStore()
	for _, m := range mountsUnder(e.dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			e.t.Logf("unmount %s: %v", m, err)
		}
	}
	if left := mountsUnder(e.dir); len(left) > 0 {
		e.t.Errorf("mounts left under %s: %v; not removing it", e.dir, left)
		return
	}
	if err := os.RemoveAll(e.dir); err != nil {
		e.t.Errorf("remove %s: %v", e.dir, err)
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// mount mounts a pseudo file system of fstype at a new directory under the
// work directory; it is unmounted at the end.
func (e *env) mount(fstype, name string) string {
	e.t.Helper()
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := unix.Mount("none", dir, fstype, 0, ""); err != nil {
		e.t.Fatalf("mount %s at %s: %v", fstype, dir, err)
	}
	e.t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			e.t.Logf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func (e *env) mkdir(name string) string {
	e.t.Helper()
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// ip runs ip(8).
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// topology is a client and a backend network namespace joined by a veth
// pair, 10.x addresses inside them only. The VIP has no route anywhere: a
// connection to it works only when kmesh rewrites it.
type topology struct {
	client, backend      string // netns names
	clientIP, backendIP  string
	vip                  string
	vipPort, backendPort int
}

func (e *env) topology() *topology {
	e.t.Helper()
	b, _ := hex.DecodeString(e.id)
	net10 := 100 + int(b[0])%150
	tp := &topology{client: "kme2e-" + e.id + "-c", backend: "kme2e-" + e.id + "-b",
		clientIP: fmt.Sprintf("10.%d.1.1", net10), backendIP: fmt.Sprintf("10.%d.1.2", net10),
		vip: fmt.Sprintf("10.%d.2.10", net10), vipPort: 80, backendPort: 8080}
	vc, vb := "km"+e.id+"c", "km"+e.id+"b"
	for _, ns := range []string{tp.client, tp.backend} {
		if err := ip("netns", "add", ns); err != nil {
			e.t.Fatal(err)
		}
		ns := ns
		e.t.Cleanup(func() {
			if err := ip("netns", "del", ns); err != nil {
				e.t.Logf("%v", err)
			}
		})
	}
	e.t.Cleanup(func() { ip("link", "del", vc) }) // only if it never moved
	for _, args := range [][]string{
		{"link", "add", vc, "type", "veth", "peer", "name", vb},
		{"link", "set", vc, "netns", tp.client},
		{"link", "set", vb, "netns", tp.backend},
		{"-n", tp.client, "addr", "add", tp.clientIP + "/24", "dev", vc},
		{"-n", tp.backend, "addr", "add", tp.backendIP + "/24", "dev", vb},
		{"-n", tp.client, "link", "set", "lo", "up"},
		{"-n", tp.backend, "link", "set", "lo", "up"},
		{"-n", tp.client, "link", "set", vc, "up"},
		{"-n", tp.backend, "link", "set", vb, "up"},
	} {
		if err := ip(args...); err != nil {
			e.t.Fatal(err)
		}
	}
	return tp
}

// inNetns runs f on a thread that is in the named network namespace.
// Sockets made there stay there.
func inNetns(name string, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	ns, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// leave the thread locked: it dies with the goroutine
		return fmt.Errorf("return from netns %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// serveBackend answers every connection on the backend with a banner.
func (e *env) serveBackend(tp *topology, banner string) {
	e.t.Helper()
	var ln net.Listener
	err := inNetns(tp.backend, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(tp.backendIP, fmt.Sprint(tp.backendPort)))
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, banner+"\n")
			c.Close()
		}
	}()
}

// dial connects from the client namespace to the VIP and reads a line.
func dial(tp *topology) (string, error) {
	var line string
	err := inNetns(tp.client, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(tp.vip, fmt.Sprint(tp.vipPort)), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

// sleeper starts a process in the client namespace: the daemon enrolls the
// namespace through /host/proc/<pid>/ns/net, as in a cluster.
func (e *env) sleeper(ns string) int {
	e.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "sleep", "3600")
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// ip netns exec execs sleep in the same process once it has joined the namespace
	nsStat, err := os.Stat(filepath.Join("/run/netns", ns))
	if err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err == nil && os.SameFile(st, nsStat) {
			return cmd.Process.Pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("pid %d did not join netns %s", cmd.Process.Pid, ns)
	return 0
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
