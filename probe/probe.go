package probe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/sirupsen/logrus"
)

// Config says where and how to probe.
type Config struct {
	// HostRoot is where the host's file system is seen ("/" by default).
	HostRoot string
	// BPFHeader is the host's linux/bpf.h (default /usr/include/linux/bpf.h,
	// where the DaemonSet maps the host's file). It is read as is, not under
	// HostRoot.
	BPFHeader string
	// BPFFSPath is where the daemon pins (default /sys/fs/bpf).
	BPFFSPath string
	// Cgroup2Path is where the daemon attaches its programs (its
	// --cgroup2-path). Empty: the probe looks at the cgroup2 mounts it sees
	// and prefers one of the hierarchy's root.
	Cgroup2Path string
	// HostProc is where the host's /proc is mounted (default /host/proc, the
	// DaemonSet's host-procfs volume): the host's PID 1 there tells the
	// host's cgroup namespace (a directory that is not a proc mount is
	// skipped).
	HostProc string
	// Live runs the live kernel probes (program loads, map creation, cgroup
	// attach). Tests on fixture trees turn it off.
	Live bool
	// LookPath finds compilers (default exec.LookPath).
	LookPath func(string) (string, error)
	Log      logrus.FieldLogger
}

// DefaultBPFHeader is where the host's bpf.h is mapped into the container.
const DefaultBPFHeader = "/usr/include/linux/bpf.h"

// DefaultBPFFSPath is the default bpffs mount point.
const DefaultBPFFSPath = "/sys/fs/bpf"

// Signals is everything the probes found.
type Signals struct {
	// HostRoot is where the host's files were read.
	HostRoot    string
	Kernel      Kernel
	Header      *HeaderInfo
	BTF         *BTFInfo
	KConfig     *KConfig
	BuildTree   *BuildTree
	Environment *Environment
	Checks      []Check
	Duration    time.Duration
}

// Check returns the named check, or an inconclusive one when it was not run.
func (s *Signals) Check(name string) Check {
	for _, c := range s.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{Name: name, Status: Inconclusive, Detail: notProbed, Err: errors.New(notProbed)}
}

const notProbed = "not probed"

// HeaderInfo is what the host's bpf.h says.
type HeaderInfo struct {
	Path    string
	Helpers *HeaderHelpers
	// Diff compares it with the kernel's BTF (nil when either is missing).
	Diff *HelperDiff
}

// Probe gathers all signals. It never fails: what it cannot tell is an
// inconclusive check.
func Probe(cfg Config) *Signals {
	start := time.Now()
	if cfg.HostRoot == "" {
		cfg.HostRoot = "/"
	}
	if cfg.BPFHeader == "" {
		cfg.BPFHeader = DefaultBPFHeader
	}
	if cfg.BPFFSPath == "" {
		cfg.BPFFSPath = DefaultBPFFSPath
	}
	if cfg.LookPath == nil {
		cfg.LookPath = exec.LookPath
	}
	if cfg.HostProc == "" {
		cfg.HostProc = DefaultHostProc
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	log = log.WithField("subsys", "probe")
	h := Host{Root: cfg.HostRoot}
	s := &Signals{HostRoot: cfg.HostRoot}

	phase := func(name string, f func() []Check) {
		t := time.Now()
		checks := f()
		s.Checks = append(s.Checks, checks...)
		bad := 0
		for _, c := range checks {
			if !c.OK() {
				bad++
			}
		}
		log.WithFields(logrus.Fields{"phase": name, "checks": len(checks), "not_supported": bad,
			"duration_ms": float64(time.Since(t).Microseconds()) / 1000}).Debug("probed")
	}

	phase("kernel", func() []Check {
		k, c := probeKernel(h)
		s.Kernel = k
		return c
	})
	phase("kconfig", func() []Check {
		kc, c := loadKConfig(h, s.Kernel.Release)
		s.KConfig = kc
		return append([]Check{c}, kconfigChecks(kc)...)
	})
	phase("btf", func() []Check {
		b, c := probeBTF(h, s.KConfig)
		s.BTF = b
		return c
	})
	phase("bpf_header", func() []Check {
		hi, c := probeHeader(cfg.BPFHeader, s.BTF)
		s.Header = hi
		return c
	})
	phase("environment", func() []Check {
		env, c := probeEnvironment(envConfig{host: h, bpffsPath: cfg.BPFFSPath, cgroup2Path: cfg.Cgroup2Path, hostProc: cfg.HostProc})
		s.Environment = env
		return c
	})
	if cfg.Live {
		phase("live", func() []Check {
			var spec *btf.Spec
			if s.BTF != nil {
				spec = s.BTF.spec
			}
			return probeLive(s.Environment.Cgroup2Mount, spec)
		})
	}
	phase("modules", func() []Check { return moduleChecks(h, s.KConfig, s.Environment) })
	phase("build_tree", func() []Check {
		bt, c := probeBuildTree(h, s.Kernel.Release, s.Kernel.Version, s.KConfig, cfg.LookPath)
		s.BuildTree = bt
		return c
	})
	s.Duration = time.Since(start)
	log.WithFields(logrus.Fields{"checks": len(s.Checks), "duration_ms": s.Duration.Milliseconds()}).Info("host probed")
	return s
}

// probeHeader reads and parses the host's bpf.h and compares it with BTF.
func probeHeader(path string, b *BTFInfo) (*HeaderInfo, []Check) {
	hi := &HeaderInfo{Path: path}
	fix := "map the host's /usr/include/linux/bpf.h into the container (hostPath linux-bpf; Debian/Ubuntu: linux-libc-dev, RHEL/openEuler: kernel-headers)"
	data, err := os.ReadFile(path)
	if err != nil {
		c := fromErr("bpf_header.present", fmt.Errorf("read %s: %w", path, err), "")
		if errors.Is(err, os.ErrNotExist) {
			c = unsupported("bpf_header.present", fix, "%s does not exist", path)
		}
		c.Fix = fix
		return hi, []Check{c}
	}
	checks := []Check{supported("bpf_header.present", "%s (%d bytes)", path, len(data))}
	h, err := ParseHelpers(data)
	if err != nil {
		c := Check{Name: "bpf_header.helpers", Status: Unsupported, Detail: fmt.Sprintf("%s: %v", path, err), Err: err,
			Fix: "the file is not a usable linux/bpf.h: " + fix}
		return hi, append(checks, c)
	}
	hi.Helpers = h
	checks = append(checks, supported("bpf_header.helpers", "%d helpers (%s layout)", len(h.IDs), h.Layout))
	if len(h.Enhanced) == len(enhancedHelperNames) {
		checks = append(checks, supported("bpf_header.enhanced_helpers", "%s", fmtIDs(h.Enhanced)))
	} else {
		missing := []string{}
		for _, n := range enhancedHelperNames {
			if _, ok := h.Enhanced[n]; !ok {
				missing = append(missing, n)
			}
		}
		c := unsupported("bpf_header.enhanced_helpers", "", "kmesh kernel-patch helpers absent: %s", listOrNone(missing))
		if len(h.Enhanced) > 0 {
			c.Detail += " (present: " + fmtIDs(h.Enhanced) + ")"
		}
		checks = append(checks, c)
	}
	if b == nil || b.Helpers == nil {
		return hi, append(checks, Check{Name: "bpf_header.matches_kernel", Status: Inconclusive,
			Detail: "no kernel BTF helper list to compare with", Err: errors.New("no kernel BTF")})
	}
	d := DiffHelpers(h.IDs, b.Helpers)
	hi.Diff = &d
	switch {
	case d.Match():
		checks = append(checks, supported("bpf_header.matches_kernel", "all %d helper IDs match the running kernel", len(h.IDs)))
	case d.Compatible():
		checks = append(checks, unsupported("bpf_header.matches_kernel",
			"map the bpf.h of the running kernel (the builder uses the kernel's BTF meanwhile)",
			"header is older than the running kernel: %s", d))
	default:
		checks = append(checks, unsupported("bpf_header.matches_kernel",
			"map the bpf.h of the running kernel (the builder uses the kernel's BTF meanwhile)",
			"header does not belong to the running kernel: %s", d))
	}
	return hi, checks
}

func fmtIDs(m map[string]int32) string {
	s := ""
	for _, k := range sortedKeys(m) {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s=%d", k, m[k])
	}
	return s
}
