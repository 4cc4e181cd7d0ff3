package probe

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Environment is what the probing process itself can do: mounts, privileges
// and memory. It describes this process (the container), not the host root.
type Environment struct {
	// Cgroup2Mount is where cgroup2 is mounted ("" when nowhere).
	Cgroup2Mount string `json:"cgroup2_mount,omitempty"`
	// BPFFSMounted tells whether bpffs is mounted at the configured path.
	BPFFSPath    string `json:"bpffs_path"`
	BPFFSMounted bool   `json:"bpffs_mounted"`
	// MemoryLimit is the effective memory limit of this process's cgroup in
	// bytes; 0 means unlimited or unknown (see the env.memory_limit check).
	MemoryLimit uint64 `json:"memory_limit_bytes"`
	// Capabilities lists the effective capabilities kmesh cares about.
	Capabilities []string `json:"capabilities"`
}

type capProbe struct {
	name string
	bit  uint
}

var wantedCaps = []capProbe{
	{"CAP_BPF", unix.CAP_BPF},
	{"CAP_SYS_ADMIN", unix.CAP_SYS_ADMIN},
	{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN},
	{"CAP_SYS_MODULE", unix.CAP_SYS_MODULE},
	{"CAP_PERFMON", unix.CAP_PERFMON},
}

// envConfig says where the environment probes look.
type envConfig struct {
	host Host
	// bpffsPath and cgroup2Path are the daemon's pin and attach paths
	// (cgroup2Path "" = whatever cgroup2 is mounted).
	bpffsPath, cgroup2Path string
	// hostProc is where the host's /proc is mounted ("" = nowhere).
	hostProc string
}

func probeEnvironment(cfg envConfig) (*Environment, []Check) {
	bpffsPath := cfg.bpffsPath
	env := &Environment{BPFFSPath: bpffsPath}
	var checks []Check

	// cgroup2: where the programs attach, and whether that is the host's root
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2", "bpf"))
	if err != nil {
		checks = append(checks, inconclusive("env.cgroup2", fmt.Errorf("read mountinfo: %w", err)))
	}
	for _, m := range mounts {
		if m.FSType == "bpf" && path.Clean(m.Mountpoint) == path.Clean(bpffsPath) {
			env.BPFFSMounted = true
		}
	}
	cg, others, cgErr := findCgroup2(mounts, cfg.cgroup2Path)
	if cg.mounted {
		env.Cgroup2Mount = cg.dir
	}
	if err == nil {
		checks = append(checks, mountCheck("env.cgroup2", "cgroup2", env.Cgroup2Mount, cfg.cgroup2Path,
			"mount the host's /mnt (the daemon mounts cgroup2 at /mnt/kmesh_cgroup2) and run privileged"))
		at := ""
		if env.BPFFSMounted {
			at = bpffsPath
		}
		checks = append(checks, mountCheck("env.bpffs", "bpf", at, bpffsPath,
			"mount the host's /sys/fs/bpf into the container (hostPath sys-fs-bpf) and run privileged"))
	}
	checks = append(checks, cgroupNamespaceCheck(cfg.host, cfg.hostProc))
	if cgErr != nil {
		checks = append(checks, fromErr("env.cgroup2_root", fmt.Errorf("inspect cgroup2 at %s: %w", cfg.cgroup2Path, cgErr), ""))
	} else {
		checks = append(checks, cgroup2RootCheck(cg, others))
	}

	// capabilities
	have, capErr := effectiveCaps()
	for _, c := range wantedCaps {
		name := "env." + strings.ToLower(c.name)
		switch {
		case capErr != nil:
			checks = append(checks, inconclusive(name, capErr))
		case have&(1<<c.bit) != 0:
			env.Capabilities = append(env.Capabilities, c.name)
			checks = append(checks, supported(name, "effective"))
		default:
			checks = append(checks, Check{Name: name, Status: NotPermitted, Detail: "not in the effective set",
				Fix: "add " + c.name + " to the container's capabilities (securityContext.capabilities.add)",
				Err: fmt.Errorf("%s not effective: %w", c.name, unix.EPERM)})
		}
	}

	// memory limit
	limit, src, err := memoryLimit()
	switch {
	case err != nil:
		checks = append(checks, inconclusive("env.memory_limit", err))
	case limit == 0:
		checks = append(checks, supported("env.memory_limit", "unlimited (%s)", src))
	default:
		env.MemoryLimit = limit
		checks = append(checks, supported("env.memory_limit", "%d MiB (%s)", limit>>20, src))
	}
	return env, checks
}

// mountCheck reports a pseudo file system that is mounted, or else whether a
// private test mount of it succeeds (the daemon mounts it when needed).
func mountCheck(name, fstype, mountedAt, want, fix string) Check {
	if mountedAt != "" {
		return supported(name, "mounted at %s", mountedAt)
	}
	_, cleanup, err := tempMount(fstype, "kmesh-probe-mnt-")
	where := ""
	if want != "" {
		where = " at " + want
	}
	if err != nil {
		c := fromErr(name, fmt.Errorf("%s not mounted%s and a test mount failed: %w", fstype, where, err), "")
		c.Fix = fix
		return c
	}
	cleanup()
	return supported(name, "not mounted%s; mountable (test mount succeeded)", where)
}

func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

// unlimited v1 limits are PAGE_COUNTER_MAX pages; anything this large is no limit.
const noLimit = uint64(1) << 62

// memoryLimit returns the effective memory limit of this process's cgroup
// (the smallest limit on the path to the root), 0 for unlimited.
func memoryLimit() (uint64, string, error) {
	pid := os.Getpid()
	mode := cgroups.Mode()
	if mode == cgroups.Legacy || mode == cgroups.Hybrid {
		l, src, err := memoryLimitV1(pid)
		if err == nil {
			return l, src, nil
		}
		if mode == cgroups.Legacy || !errors.Is(err, errNoV1Memory) {
			return 0, "", err
		}
		// hybrid with memory on the unified hierarchy: fall through
	}
	if mode == cgroups.Unavailable {
		return 0, "", errors.New("no cgroup file system at /sys/fs/cgroup")
	}
	group, err := cgroup2.PidGroupPath(pid)
	if err != nil {
		return 0, "", fmt.Errorf("find cgroup v2 group: %w", err)
	}
	var opts []cgroup2.InitOpts
	if mode == cgroups.Hybrid {
		opts = append(opts, cgroup2.WithMountpoint("/sys/fs/cgroup/unified"))
	}
	limit := uint64(math.MaxUint64)
	for g := group; ; g = path.Dir(g) {
		if g != "/" {
			m, err := cgroup2.Load(g, opts...)
			if err != nil {
				return 0, "", fmt.Errorf("load cgroup %s: %w", g, err)
			}
			st, err := m.StatFiltered(cgroup2.StatMemory)
			if err != nil {
				return 0, "", fmt.Errorf("read memory stats of %s: %w", g, err)
			}
			if st.Memory != nil && st.Memory.UsageLimit != 0 && st.Memory.UsageLimit < limit {
				limit = st.Memory.UsageLimit
			}
		}
		if g == "/" || g == "." {
			break
		}
	}
	if limit >= noLimit {
		limit = 0
	}
	return limit, "cgroup v2 " + group, nil
}

// errNoV1Memory: the memory controller is not on a cgroup v1 hierarchy.
var errNoV1Memory = errors.New("no cgroup v1 memory controller")

// memoryLimitV1 reads the limit of this process's cgroup v1 memory cgroup.
//
// In a container on cgroup v1 (podman, docker with the host's cgroup
// namespace) /proc/self/cgroup names the cgroup as the host does
// (/machine.slice/libpod-<id>.scope) while the container's
// /sys/fs/cgroup/memory is a bind mount of that cgroup alone: the path does
// not exist under the mount (containerd/cgroups reports ErrCgroupDeleted)
// and the container's own cgroup is the mount's root. The limit is then read
// there; the source names the path used.
func memoryLimitV1(pid int) (uint64, string, error) {
	hier := cgroup1.WithHiearchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory))
	own := cgroup1.PidPath(pid)
	ownPath, err := own(cgroup1.Memory)
	if errors.Is(err, cgroup1.ErrControllerNotActive) {
		return 0, "", fmt.Errorf("find the cgroup v1 memory cgroup of pid %d: %w: %w", pid, errNoV1Memory, err)
	}
	if err != nil {
		return 0, "", fmt.Errorf("find the cgroup v1 memory cgroup of pid %d: %w", pid, err)
	}
	mnt := "the memory controller's mount"
	if subs, err := cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory)(); err == nil && len(subs) == 1 {
		if p, ok := subs[0].(interface{ Path(string) string }); ok {
			mnt = p.Path("/")
		}
	}
	cg, err := cgroup1.Load(own, hier)
	src := fmt.Sprintf("cgroup v1 memory %s", ownPath)
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		root, rootErr := cgroup1.Load(cgroup1.RootPath, hier)
		if rootErr != nil {
			return 0, "", fmt.Errorf("load cgroup v1 memory controller: %s (from /proc/self/cgroup) not under %s: %w; its root: %w", ownPath, mnt, err, rootErr)
		}
		cg, err = root, nil
		src = fmt.Sprintf("cgroup v1 memory at the mount root %s: /proc/self/cgroup names %s, which is not under the mount (a container's view: its own cgroup is mounted at the root)", mnt, ownPath)
	}
	if err != nil {
		return 0, "", fmt.Errorf("load cgroup v1 memory controller: %w", err)
	}
	m, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return 0, "", fmt.Errorf("read cgroup v1 memory stats (%s): %w", src, err)
	}
	if m.Memory == nil {
		return 0, "", fmt.Errorf("read cgroup v1 memory stats (%s): no memory controller data", src)
	}
	l := m.Memory.HierarchicalMemoryLimit
	if l == 0 && m.Memory.Usage != nil {
		l = m.Memory.Usage.Limit
	}
	if l >= noLimit {
		l = 0
	}
	return l, src, nil
}
