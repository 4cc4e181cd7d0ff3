package probe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests run on the host: the initial cgroup namespace.
func TestCgroupNamespaceOnHost(t *testing.T) {
	requireRoot(t)
	if own, err := os.Readlink("/proc/self/ns/cgroup"); err != nil || own != "cgroup:[4026531835]" {
		t.Fatalf("the tests run on the host, in the initial cgroup namespace: /proc/self/ns/cgroup = %q (%v)", own, err)
	}
	c := cgroupNamespaceCheck(Host{Root: "/"}, DefaultHostProc)
	if c.Status != Supported || !strings.Contains(c.Detail, "cgroup:[4026531835], the initial cgroup namespace") {
		t.Errorf("env.cgroup_namespace on the host: %+v", c)
	}
	env, checks := probeEnvironment(envConfig{host: Host{Root: "/"}, bpffsPath: DefaultBPFFSPath, hostProc: DefaultHostProc})
	s := &Signals{Checks: checks, Environment: env}
	wantCheck(t, s, "env.cgroup2_root", Supported, env.Cgroup2Mount+" is the root of the cgroup2 hierarchy (inode 1)")
	if ino, ok, err := statCgroup2(env.Cgroup2Mount); err != nil || !ok || ino != 1 {
		t.Errorf("the probe chose %s: inode %d, cgroup2 %v, %v", env.Cgroup2Mount, ino, ok, err)
	}
}

// A child in a new cgroup namespace (unshare(CLONE_NEWCGROUP) at clone) is
// told it is not in the host's. Its reference is the host's PID 1: where this
// machine refuses access to PID 1's namespaces (some sandboxes do, even to
// root) the child says so (not_permitted), else it compares (unsupported).
func TestCgroupNamespacePrivate(t *testing.T) {
	requireRoot(t)
	r := runChild(t, child{kind: "env", flags: unix.CLONE_NEWCGROUP, env: map[string]string{childHostProc: t.TempDir()}})
	c := r.check(t, "env.cgroup_namespace")
	if _, err := os.Stat("/proc/1/ns/cgroup"); err == nil {
		wantStatus(t, c, Unsupported, "private: this process is in cgroup:[", "the host's PID 1 (/proc) in cgroup:[4026531835]")
		wantFix(t, c, "--cgroupns=host", "host-cgroup", "--cgroup2-path=/host/sys/fs/cgroup", "hostPID does not change it")
	} else if errors.Is(err, os.ErrPermission) {
		wantStatus(t, c, NotPermitted, "is not the initial cgroup namespace", "stat /proc/1/ns/pid: permission denied")
		wantFix(t, c, "SYS_PTRACE")
	} else {
		t.Fatalf("stat /proc/1/ns/cgroup: %v", err)
	}
	if c.Detail == "cgroup:[4026531835], the initial cgroup namespace" {
		t.Errorf("the child is in the initial cgroup namespace: %+v", c)
	}
}

// A stand-in host: PID 1 of a PID namespace of its own, in a cgroup namespace
// of its own (like a nested node), with its /proc mounted where the DaemonSet
// mounts the host's (/host/proc) or under a host root.
func TestCgroupNamespaceAgainstHostPID1(t *testing.T) {
	requireRoot(t)
	hostProc := t.TempDir()
	run := func(t *testing.T, procAt, inner string, env map[string]string) Check {
		t.Helper()
		env[childProcAt], env[childInnerFlags] = procAt, inner
		r := runChild(t, child{kind: "init", flags: unix.CLONE_NEWPID | unix.CLONE_NEWCGROUP, env: env})
		return r.check(t, "env.cgroup_namespace")
	}
	t.Run("same namespace as the host's PID 1", func(t *testing.T) {
		c := run(t, hostProc, "", map[string]string{childHostProc: hostProc})
		wantStatus(t, c, Supported, "the host's (PID 1 in "+hostProc+")")
	})
	t.Run("private namespace, host /proc mounted", func(t *testing.T) {
		c := run(t, hostProc, "cgroup", map[string]string{childHostProc: hostProc})
		wantStatus(t, c, Unsupported, "private: this process is in cgroup:[", "the host's PID 1 ("+hostProc+") in cgroup:[")
		wantFix(t, c, "--cgroupns=host", "host-cgroup")
	})
	t.Run("private namespace, host root", func(t *testing.T) {
		root := t.TempDir()
		if err := os.Mkdir(filepath.Join(root, "proc"), 0o755); err != nil {
			t.Fatal(err)
		}
		c := run(t, filepath.Join(root, "proc"), "cgroup", map[string]string{childHostRoot: root, childHostProc: filepath.Join(root, "absent")})
		wantStatus(t, c, Unsupported, "private: this process is in cgroup:[", "the host's PID 1 ("+filepath.Join(root, "proc")+") in cgroup:[")
	})
	t.Run("private namespace, no host /proc", func(t *testing.T) {
		c := run(t, hostProc, "cgroup", map[string]string{childHostProc: filepath.Join(t.TempDir(), "absent")})
		wantStatus(t, c, Inconclusive, "is not the initial cgroup namespace; no host PID 1 to compare it with",
			"not a proc mount", "/proc: PID 1 is not the host's init")
		wantFix(t, c, "/host/proc", "host-procfs")
	})
}

// A process in a private cgroup namespace rooted at a child cgroup (what
// docker and Kubernetes give a container on cgroup v2): a cgroup2 it mounts
// is rooted at its own cgroup; a bind of the host's hierarchy (the
// DaemonSet's host-cgroup volume) is the root. The decision follows.
func TestCgroup2RootInPrivateNamespace(t *testing.T) {
	requireRoot(t)
	root, err := hierarchyRootMount()
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(root, fmt.Sprintf("kmesh-test-cgns-%d-%s", os.Getpid(), randSuffix()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(cg); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(cg, &st); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	scratch := t.TempDir()
	hostProc, hostCg, fresh := filepath.Join(scratch, "host-proc"), filepath.Join(scratch, "host-sys-fs-cgroup"), filepath.Join(scratch, "sys-fs-cgroup")
	for _, d := range []string{hostProc, hostCg, fresh} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// PID 1 of a new PID namespace, started in the test cgroup (in the host's
	// cgroup namespace), runs the probe in a new cgroup namespace: rooted
	// at the test cgroup, compared with PID 1's.
	run := func(t *testing.T, env map[string]string) childResult {
		t.Helper()
		env[childProcAt], env[childInnerFlags], env[childHostProc] = hostProc, "cgroup", hostProc
		r := runChild(t, child{kind: "init", flags: unix.CLONE_NEWPID, cgroupFD: fd, env: env})
		if !strings.Contains(r.OwnCgroup, "0::/\n") {
			t.Errorf("the child's cgroup namespace is not rooted at its cgroup: /proc/self/cgroup\n%s", r.OwnCgroup)
		}
		wantStatus(t, r.check(t, "env.cgroup_namespace"), Unsupported, "private")
		return r
	}
	decide := func(r childResult) (*Record, error) {
		s := allSupported()
		for _, c := range r.Checks {
			if strings.HasPrefix(c.Name, "env.cgroup") {
				set(s, c.Name, c.Status, c.Detail, c.Fix)
			}
		}
		s.Environment = r.Environment
		return Decide(s, ModeAuto, now)
	}
	notRoot := fmt.Sprintf("rooted at cgroup inode %d, not the hierarchy's root (inode 1)", st.Ino)

	t.Run("container without the host's hierarchy", func(t *testing.T) {
		r := run(t, map[string]string{childFreshCg2: fresh})
		c := r.check(t, "env.cgroup2_root")
		wantStatus(t, c, Unsupported, fresh+" is "+notRoot)
		wantFix(t, c, "--cgroupns=host", "host-cgroup", "--cgroup2-path=/host/sys/fs/cgroup")
		if r.Environment.Cgroup2Mount != fresh {
			t.Errorf("cgroup2 mount = %q, want %s", r.Environment.Cgroup2Mount, fresh)
		}
		rec, err := decide(r)
		if !errors.Is(err, ErrNoMode) || rec.Mode != ModeNone {
			t.Fatalf("decision: mode %q, err %v", rec.Mode, err)
		}
		joined := strings.Join(rec.Reasons, "\n")
		if !strings.Contains(joined, "an attach point that sees every process (the host's cgroup2 root): env.cgroup2_root is unsupported") ||
			!strings.Contains(joined, "fix: a cgroup2 mounted in a private cgroup namespace") {
			t.Errorf("reasons:\n%s", joined)
		}
	})
	t.Run("DaemonSet layout: the host's hierarchy mounted", func(t *testing.T) {
		r := run(t, map[string]string{childHostCgroup: hostCg, childFreshCg2: fresh})
		c := r.check(t, "env.cgroup2_root")
		wantStatus(t, c, Supported, hostCg+" is the root of the cgroup2 hierarchy (inode 1)", fmt.Sprintf("do not attach there: %s (inode %d)", fresh, st.Ino))
		if r.Environment.Cgroup2Mount != hostCg {
			t.Errorf("cgroup2 mount = %q, want %s", r.Environment.Cgroup2Mount, hostCg)
		}
		rec, err := decide(r)
		if err != nil || rec.Mode != ModeEnhanced {
			t.Fatalf("decision: mode %q, err %v", rec.Mode, err)
		}
		var note string
		for _, why := range rec.Reasons {
			if strings.HasPrefix(why, "note: env.cgroup_namespace") {
				note = why
			}
		}
		for _, want := range []string{"note: env.cgroup_namespace is unsupported (private", "the daemon must attach at " + hostCg + " (--cgroup2-path=" + hostCg + ")"} {
			if !strings.Contains(note, want) {
				t.Errorf("note %q lacks %q", note, want)
			}
		}
	})
	t.Run("--cgroup2-path at a cgroup2 mounted in the namespace", func(t *testing.T) {
		r := run(t, map[string]string{childHostCgroup: hostCg, childFreshCg2: fresh, childCgroup2: fresh})
		wantStatus(t, r.check(t, "env.cgroup2_root"), Unsupported, fresh+" is "+notRoot)
	})
	t.Run("--cgroup2-path at the host's hierarchy", func(t *testing.T) {
		r := run(t, map[string]string{childHostCgroup: hostCg, childFreshCg2: fresh, childCgroup2: hostCg})
		wantStatus(t, r.check(t, "env.cgroup2_root"), Supported, hostCg+" is the root")
	})
	t.Run("--cgroup2-path not mounted yet", func(t *testing.T) {
		want := filepath.Join(scratch, "mnt", "kmesh_cgroup2")
		r := run(t, map[string]string{childFreshCg2: fresh, childCgroup2: want})
		wantStatus(t, r.check(t, "env.cgroup2_root"), Unsupported, want+" is not mounted; a cgroup2 mounted now is "+notRoot)
		if r.Environment.Cgroup2Mount != "" {
			t.Errorf("cgroup2 mount = %q for an unmounted --cgroup2-path", r.Environment.Cgroup2Mount)
		}
	})
}

func wantStatus(t *testing.T, c Check, st Status, detailHas ...string) {
	t.Helper()
	if c.Status != st {
		t.Errorf("%s: status %s (%s), want %s", c.Name, c.Status, c.Detail, st)
	}
	for _, d := range detailHas {
		if !strings.Contains(c.Detail, d) {
			t.Errorf("%s: detail %q lacks %q", c.Name, c.Detail, d)
		}
	}
}

func wantFix(t *testing.T, c Check, fixHas ...string) {
	t.Helper()
	for _, f := range fixHas {
		if !strings.Contains(c.Fix, f) {
			t.Errorf("%s: fix %q lacks %q", c.Name, c.Fix, f)
		}
	}
}
