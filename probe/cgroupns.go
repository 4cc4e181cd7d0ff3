package probe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// The inode numbers of the initial namespaces (PROC_CGROUP_INIT_INO and
// PROC_PID_INIT_INO, include/linux/proc_ns.h): fixed by the kernel.
const (
	initCgroupNSIno = 0xEFFFFFFB
	initPIDNSIno    = 0xEFFFFFFC
)

// DefaultHostProc is where the DaemonSet mounts the host's /proc (volume
// host-procfs).
const DefaultHostProc = "/host/proc"

// cgroupNSFix says what to do when this process's cgroup namespace is not the
// host's and the programs would attach inside it.
const cgroupNSFix = "a cgroup2 mounted in a private cgroup namespace is rooted at the container's own cgroup, and programs " +
	"attached there see no other process. docker/podman: run with --cgroupns=host, or mount the host's hierarchy " +
	"(-v /sys/fs/cgroup:/host/sys/fs/cgroup) and pass --cgroup2-path=/host/sys/fs/cgroup. Kubernetes has no pod field " +
	"for the cgroup namespace (hostPID does not change it; containerd and CRI-O give non-privileged containers a private " +
	"one on cgroup v2): keep the DaemonSet's host-cgroup volume (hostPath /sys/fs/cgroup at /host/sys/fs/cgroup) and " +
	"--cgroup2-path=/host/sys/fs/cgroup (hybrid cgroup v1/v2 nodes: /host/sys/fs/cgroup/unified), or run privileged " +
	"(privileged containers get the host's cgroup namespace)"

type nsID struct{ dev, ino uint64 }

func (n nsID) String() string { return fmt.Sprintf("cgroup:[%d]", n.ino) }

// statNS identifies the namespace a /proc/<pid>/ns/<type> link names. stat(2)
// follows the link into nsfs; other processes' links need ptrace read access.
func statNS(p string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nsID{}, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

func isProcfs(dir string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(dir, &fs) == nil && fs.Type == unix.PROC_SUPER_MAGIC
}

// hostProcCandidates lists the /proc directories whose PID 1 is the host's
// init, as far as this process can tell: the host root's /proc, the host's
// /proc mounted at hostProc (the DaemonSet's /host/proc), and this process's
// own /proc when its PID 1 is in the initial PID namespace (on the host, or a
// container with the host's PID namespace). The errors say why the others
// were not usable.
func hostProcCandidates(h Host, hostProc string) ([]string, []error) {
	var dirs []string
	var errs []error
	add := func(dir string) {
		switch {
		case !isProcfs(dir):
			errs = append(errs, fmt.Errorf("%s: not a proc mount", dir))
		case !slices.Contains(dirs, dir):
			dirs = append(dirs, dir)
		}
	}
	if !h.IsRealRoot() {
		if r, err := h.Resolve("/proc"); err == nil {
			add(r)
		} else {
			errs = append(errs, err)
		}
	}
	if hostProc != "" {
		add(filepath.Clean(hostProc))
	}
	switch pid, err := statNS("/proc/1/ns/pid"); {
	case err == nil && pid.ino == initPIDNSIno:
		add("/proc")
	case err == nil:
		errs = append(errs, fmt.Errorf("/proc: PID 1 is not the host's init (pid:[%d] is not the initial PID namespace)", pid.ino))
	default:
		errs = append(errs, fmt.Errorf("/proc: is PID 1 the host's init: %w", err))
	}
	return dirs, errs
}

// cgroupNamespaceCheck compares this process's cgroup namespace with the
// host's: the initial one, or that of the host's PID 1.
func cgroupNamespaceCheck(h Host, hostProc string) Check {
	const name = "env.cgroup_namespace"
	self, err := statNS("/proc/self/ns/cgroup")
	if err != nil {
		return fromErr(name, fmt.Errorf("identify this process's cgroup namespace: %w", err), "")
	}
	if self.ino == initCgroupNSIno {
		return supported(name, "%s, the initial cgroup namespace", self)
	}
	dirs, errs := hostProcCandidates(h, hostProc)
	for _, dir := range dirs {
		host, err := statNS(filepath.Join(dir, "1/ns/cgroup"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if host == self {
			return supported(name, "%s, the host's (PID 1 in %s)", self, dir)
		}
		return unsupported(name, cgroupNSFix, "private: this process is in %s, the host's PID 1 (%s) in %s", self, dir, host)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	c := fromErr(name, fmt.Errorf("%s is not the initial cgroup namespace; no host PID 1 to compare it with: %w", self, errors.Join(errs...)), "")
	c.Detail = fmt.Sprintf("%s is not the initial cgroup namespace; no host PID 1 to compare it with: %s", self, strings.Join(msgs, "; "))
	switch caps, err := effectiveCaps(); {
	case c.Status == NotPermitted && err == nil && caps&(1<<unix.CAP_SYS_PTRACE) != 0:
		c.Fix = "ptrace access to the host's PID 1 is refused although CAP_SYS_PTRACE is effective (an LSM or sandbox protects PID 1); " +
			"this check only explains env.cgroup2_root, which decides"
	case c.Status == NotPermitted:
		c.Fix = "reading the host's PID 1 namespaces needs ptrace read access to it: add SYS_PTRACE to the container's capabilities"
	default:
		c.Fix = "mount the host's /proc at " + DefaultHostProc + " (DaemonSet volume host-procfs; docker/podman -v /proc:/host/proc:ro) or run with the host's PID namespace"
	}
	return c
}

// cgroup2Root is a cgroup2 directory and what the probe found about it.
type cgroup2Root struct {
	dir     string
	ino     uint64
	mounted bool // false: a test mount stood in for the mount the daemon would make
}

func (r cgroup2Root) isRoot() bool { return r.ino == 1 }

// statCgroup2 returns the inode of a cgroup2 directory. The root of the
// cgroup2 hierarchy is inode 1 (the cgroup ID of the root cgroup); a cgroup2
// mounted in a private cgroup namespace is rooted at the namespace's cgroup,
// another inode, although mountinfo shows its root as "/".
func statCgroup2(dir string) (uint64, bool, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, false, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, false, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, true, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return st.Ino, true, nil
}

// findCgroup2 chooses the cgroup2 directory the programs attach at: want (the
// daemon's --cgroup2-path) when given, else the first mount of the hierarchy's
// root, else the first mount whose root mountinfo shows as "/". It returns
// "" when nothing is mounted there (the daemon would mount it) and the other
// cgroup2 mounts that are not the hierarchy's root.
func findCgroup2(mounts []*mountinfo.Info, want string) (cgroup2Root, []cgroup2Root, error) {
	if want != "" {
		ino, ok, err := statCgroup2(want)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return cgroup2Root{}, nil, err
		}
		if ok {
			return cgroup2Root{dir: want, ino: ino, mounted: true}, nil, nil
		}
		return cgroup2Root{dir: want}, nil, nil
	}
	var root, first cgroup2Root
	var others []cgroup2Root
	for _, m := range mounts {
		if m.FSType != "cgroup2" {
			continue
		}
		ino, ok, err := statCgroup2(m.Mountpoint)
		if err != nil || !ok {
			continue
		}
		r := cgroup2Root{dir: m.Mountpoint, ino: ino, mounted: true}
		switch {
		case r.isRoot():
			if root.dir == "" {
				root = r
			}
		default:
			others = append(others, r)
			if first.dir == "" && m.Root == "/" {
				first = r
			}
		}
	}
	if root.dir != "" {
		return root, others, nil
	}
	return first, others, nil
}

// cgroup2RootCheck tells whether programs attached at the chosen cgroup2
// directory see every process: only at the hierarchy's root do they. When
// nothing is mounted there a test mount shows what the daemon's mount would
// be rooted at.
func cgroup2RootCheck(r cgroup2Root, others []cgroup2Root) Check {
	const name = "env.cgroup2_root"
	where := r.dir
	if !r.mounted {
		dir, cleanup, err := tempMount("cgroup2", "kmesh-probe-cgroot-")
		if err != nil {
			c := fromErr(name, fmt.Errorf("test-mount cgroup2 to see its root: %w", err), "")
			c.Fix = "run privileged, or mount the host's cgroup2 hierarchy and pass --cgroup2-path (DaemonSet volume host-cgroup)"
			return c
		}
		defer cleanup()
		ino, _, err := statCgroup2(dir)
		if err != nil {
			return inconclusive(name, err)
		}
		r.ino = ino
		where = "a cgroup2 mounted now"
		if r.dir != "" {
			where = r.dir + " is not mounted; a cgroup2 mounted now"
		}
	}
	var notRoot []string
	for _, o := range others {
		notRoot = append(notRoot, fmt.Sprintf("%s (inode %d)", o.dir, o.ino))
	}
	if r.isRoot() {
		c := supported(name, "%s is the root of the cgroup2 hierarchy (inode 1): attached programs see every process", where)
		if len(notRoot) > 0 {
			c.Detail += "; not the root, do not attach there: " + strings.Join(notRoot, ", ")
		}
		return c
	}
	return unsupported(name, cgroupNSFix,
		"%s is rooted at cgroup inode %d, not the hierarchy's root (inode 1): attached programs see only the processes below it (a private cgroup namespace roots cgroup2 at the container's own cgroup)",
		where, r.ino)
}
