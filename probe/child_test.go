package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Some tests run the probe in a child process (this test binary re-executed)
// inside namespaces of its own: a private cgroup namespace, a private mount
// namespace where cgroup file systems are re-arranged the way a container
// sees them, a PID namespace standing in for a host. The child is told what
// to do through the environment.
const (
	childKind = "KMESH_PROBE_TEST_CHILD" // "env": run probeEnvironment; "init": a PID 1 that runs an "env" child
	// set up the child's private mount namespace
	childMemcg      = "KMESH_PROBE_TEST_MEMCG"       // join this cgroup v1 memory cgroup (its directory)
	childMemBind    = "KMESH_PROBE_TEST_MEMBIND"     // "container": the memory hierarchy's root is the cgroup above; "stacked": bound on top
	childScratch    = "KMESH_PROBE_TEST_SCRATCH"     // an empty directory for bind mounts
	childHostCgroup = "KMESH_PROBE_TEST_HOST_CGROUP" // bind the host's cgroup2 root here, then unmount every other cgroup2
	childFreshCg2   = "KMESH_PROBE_TEST_FRESH_CG2"   // unmount every cgroup2 (but the one above), mount a fresh one here
	childProcAt     = "KMESH_PROBE_TEST_PROC_AT"     // init: mount this PID namespace's proc here and over /proc
	childInnerFlags = "KMESH_PROBE_TEST_INNER_FLAGS" // init: "cgroup" runs the env child in a new cgroup namespace
	// the probe's configuration in the child
	childHostRoot   = "KMESH_PROBE_TEST_HOST_ROOT"
	childHostProc   = "KMESH_PROBE_TEST_HOST_PROC"
	childCgroup2    = "KMESH_PROBE_TEST_CGROUP2_PATH"
	childBPFFS      = "KMESH_PROBE_TEST_BPFFS"
	childMarkerLine = "KMESH-PROBE-CHILD-RESULT "
)

func TestMain(m *testing.M) {
	switch k := os.Getenv(childKind); k {
	case "":
		os.Exit(m.Run())
	case "env", "init":
		if err := childMain(k); err != nil {
			fmt.Fprintf(os.Stderr, "probe test child %s: %v\n", k, err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childKind, k)
		os.Exit(2)
	}
}

// childResult is what an "env" child reports.
type childResult struct {
	Environment *Environment `json:"environment"`
	Checks      []Check      `json:"checks"`
	// PidPathErr is containerd/cgroups' own cgroup1.Load(PidPath) error for
	// the memory controller: the symptom the fallback handles.
	PidPathErr string `json:"pid_path_err"`
	// OwnCgroup is /proc/self/cgroup as the child saw it.
	OwnCgroup string `json:"own_cgroup"`
}

func (r childResult) check(t *testing.T, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("child reported no %s check: %+v", name, r.Checks)
	return Check{}
}

func childMain(kind string) error {
	// Every child runs in a mount namespace of its own (CLONE_NEWNS): make it
	// private first, so nothing below propagates to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if kind == "init" {
		return childInit()
	}
	if err := childMounts(); err != nil {
		return err
	}
	env, checks := probeEnvironment(envConfig{host: Host{Root: os.Getenv(childHostRoot)}, bpffsPath: envOr(childBPFFS, DefaultBPFFSPath),
		cgroup2Path: os.Getenv(childCgroup2), hostProc: os.Getenv(childHostProc)})
	res := childResult{Environment: env, Checks: checks}
	if _, err := cgroup1.Load(cgroup1.PidPath(os.Getpid()), cgroup1.WithHiearchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory))); err != nil {
		res.PidPathErr = err.Error()
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		res.OwnCgroup = string(b)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Printf("%s%s\n", childMarkerLine, b)
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func childMounts() error {
	if dir := os.Getenv(childMemcg); dir != "" {
		if err := os.WriteFile(dir+"/cgroup.procs", []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("join memory cgroup %s: %w", dir, err)
		}
		memRoot, err := memoryMount()
		if err != nil {
			return err
		}
		switch os.Getenv(childMemBind) {
		case "":
		case "stacked":
			if err := unix.Mount(dir, memRoot, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s on %s: %w", dir, memRoot, err)
			}
		case "container":
			// what a container sees: one memory mount whose root is its cgroup
			scratch := os.Getenv(childScratch)
			if err := unix.Mount(dir, scratch, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s on %s: %w", dir, scratch, err)
			}
			if err := unix.Unmount(memRoot, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", memRoot, err)
			}
			if err := unix.Mount(scratch, memRoot, "", unix.MS_MOVE, ""); err != nil {
				return fmt.Errorf("move %s to %s: %w", scratch, memRoot, err)
			}
		default:
			return fmt.Errorf("%s=%q", childMemBind, os.Getenv(childMemBind))
		}
	}
	hostCg, fresh := os.Getenv(childHostCgroup), os.Getenv(childFreshCg2)
	if hostCg == "" && fresh == "" {
		return nil
	}
	if hostCg != "" {
		root, err := hierarchyRootMount()
		if err != nil {
			return err
		}
		if err := unix.Mount(root, hostCg, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind the cgroup2 root %s on %s: %w", root, hostCg, err)
		}
	}
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2"))
	if err != nil {
		return err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Mountpoint != hostCg {
			if err := unix.Unmount(ms[i].Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", ms[i].Mountpoint, err)
			}
		}
	}
	if fresh != "" {
		if err := unix.Mount("none", fresh, "cgroup2", 0, ""); err != nil {
			return fmt.Errorf("mount cgroup2 on %s: %w", fresh, err)
		}
	}
	return nil
}

// childInit is PID 1 of a new PID namespace: a stand-in host whose /proc
// (mounted at $KMESH_PROBE_TEST_PROC_AT and over /proc) shows it as PID 1.
// It runs an "env" child and passes its output on.
func childInit() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	at := os.Getenv(childProcAt)
	for _, dir := range []string{at, "/proc"} {
		if err := unix.Mount("proc", dir, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount proc on %s: %w", dir, err)
		}
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childKind+"=env")
	var flags uintptr = unix.CLONE_NEWNS
	if os.Getenv(childInnerFlags) == "cgroup" {
		flags |= unix.CLONE_NEWCGROUP
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

// memoryMount is where the cgroup v1 memory controller is mounted.
func memoryMount() (string, error) {
	subs, err := cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory)()
	if err != nil || len(subs) != 1 {
		return "", fmt.Errorf("find the cgroup v1 memory controller: %v (%d)", err, len(subs))
	}
	p, ok := subs[0].(interface{ Path(string) string })
	if !ok {
		return "", errors.New("memory subsystem has no path")
	}
	return p.Path("/"), nil
}

// hierarchyRootMount is a mount of the cgroup2 hierarchy's root (inode 1).
func hierarchyRootMount() (string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2"))
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if ino, ok, err := statCgroup2(m.Mountpoint); err == nil && ok && ino == 1 {
			return m.Mountpoint, nil
		}
	}
	return "", errors.New("no mount of the cgroup2 hierarchy's root")
}

// child describes one child run.
type child struct {
	kind     string // "env" or "init"
	flags    uintptr
	cgroupFD int // > 0: start in this cgroup2 (clone3 CLONE_INTO_CGROUP)
	env      map[string]string
}

func runChild(t *testing.T, c child) childResult {
	t.Helper()
	requireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childKind+"="+c.kind)
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	attr := &syscall.SysProcAttr{Cloneflags: c.flags | unix.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if c.cgroupFD > 0 {
		attr.UseCgroupFD, attr.CgroupFD = true, c.cgroupFD
	}
	cmd.SysProcAttr = attr
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child %+v: %v\nstdout:\n%s\nstderr:\n%s", c, err, stdout.String(), stderr.String())
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if js, ok := strings.CutPrefix(line, childMarkerLine); ok {
			var r childResult
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("child %+v printed no result:\n%s\nstderr:\n%s", c, stdout.String(), stderr.String())
	return childResult{}
}
