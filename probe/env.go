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

func probeEnvironment(bpffsPath string) (*Environment, []Check) {
	env := &Environment{BPFFSPath: bpffsPath}
	var checks []Check

	// cgroup2
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2", "bpf"))
	if err != nil {
		checks = append(checks, inconclusive("env.cgroup2", fmt.Errorf("read mountinfo: %w", err)))
	}
	for _, m := range mounts {
		if m.FSType == "cgroup2" && env.Cgroup2Mount == "" && m.Root == "/" {
			env.Cgroup2Mount = m.Mountpoint
		}
		if m.FSType == "bpf" && path.Clean(m.Mountpoint) == path.Clean(bpffsPath) {
			env.BPFFSMounted = true
		}
	}
	if err == nil {
		checks = append(checks, mountCheck("env.cgroup2", "cgroup2", env.Cgroup2Mount, "",
			"mount the host's /mnt (the daemon mounts cgroup2 at /mnt/kmesh_cgroup2) and run privileged"))
		at := ""
		if env.BPFFSMounted {
			at = bpffsPath
		}
		checks = append(checks, mountCheck("env.bpffs", "bpf", at, bpffsPath,
			"mount the host's /sys/fs/bpf into the container (hostPath sys-fs-bpf) and run privileged"))
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
		cg, err := cgroup1.Load(cgroup1.PidPath(pid), cgroup1.WithHiearchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory)))
		if err == nil {
			m, err := cg.Stat(cgroup1.IgnoreNotExist)
			if err != nil {
				return 0, "", fmt.Errorf("read cgroup v1 memory stats: %w", err)
			}
			if m.Memory == nil {
				return 0, "", errors.New("read cgroup v1 memory stats: no memory controller data")
			}
			l := m.Memory.HierarchicalMemoryLimit
			if l == 0 && m.Memory.Usage != nil {
				l = m.Memory.Usage.Limit
			}
			if l >= noLimit {
				l = 0
			}
			return l, "cgroup v1 memory controller", nil
		}
		if mode == cgroups.Legacy {
			return 0, "", fmt.Errorf("load cgroup v1 memory controller: %w", err)
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
