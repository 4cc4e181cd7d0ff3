package probe

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root (make test does; CI runs as root)")
	}
}

// hostModulesEnabled reads CONFIG_MODULES independently of the code under test.
func hostModulesEnabled(t *testing.T) bool {
	b, err := os.ReadFile("/proc/config.gz")
	if err != nil {
		t.Fatalf("read /proc/config.gz: %v", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := io.ReadAll(zr)
	return bytes.Contains(cfg, []byte("\nCONFIG_MODULES=y\n"))
}

// TestProbeThisHost runs every probe for real on this machine. The CI and
// development machines run a 6.18 kernel built without module support: the
// answer must be compat, with that reason.
func TestProbeThisHost(t *testing.T) {
	requireRoot(t)
	s := Probe(Config{Live: true})
	r, err := Decide(s, ModeAuto, time.Now())
	if err != nil {
		t.Fatalf("decide: %v\nreasons: %q", err, r.Reasons)
	}
	for _, name := range []string{"kernel.release", "btf.vmlinux", "btf.helpers", "prog_type.cgroup_sock_addr", "map_type.hash",
		"map_type.sk_storage", "helper.cgroup_sock_addr.get_netns_cookie", "cgroup.attach", "kfunc.cgroup_sock_addr", "env.cgroup2", "env.bpffs", "env.cap_sys_admin",
		"env.cgroup_namespace", "env.cgroup2_root", "env.memory_limit"} {
		if c := s.Check(name); !c.OK() {
			t.Errorf("%s: %s (%s)", name, c.Status, c.Detail)
		}
	}
	if !hostModulesEnabled(t) {
		if r.Mode != ModeCompat {
			t.Fatalf("mode = %q on a kernel without CONFIG_MODULES", r.Mode)
		}
		joined := strings.Join(r.Reasons, "\n")
		if !strings.Contains(joined, "kconfig.modules is unsupported (CONFIG_MODULES is not set") {
			t.Errorf("reasons do not say the kernel has no module support:\n%s", joined)
		}
		if _, err := Decide(s, ModeEnhanced, time.Now()); !errors.Is(err, ErrNoMode) {
			t.Errorf("forced enhanced on a no-module kernel: err = %v", err)
		}
	}
	if r.Kernel.Release == "" || r.Features.HelperSource == "none" || r.Features.Helpers["get_netns_cookie"] != 122 {
		t.Errorf("kernel %+v, helper source %s, get_netns_cookie=%d", r.Kernel, r.Features.HelperSource, r.Features.Helpers["get_netns_cookie"])
	}
	if !r.Features.NetnsCookie || !r.Features.SkStorage || r.Inputs.BTFHash == "" || r.Inputs.KConfigHash == "" {
		t.Errorf("features %+v inputs %+v", r.Features, r.Inputs)
	}
	// the probes leave nothing behind: no probe cgroup, no temporary mount
	if s.Environment.Cgroup2Mount != "" {
		left, _ := filepath.Glob(filepath.Join(s.Environment.Cgroup2Mount, "kmesh-probe-*"))
		if len(left) > 0 {
			t.Errorf("probe cgroups left behind: %v", left)
		}
	}
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (bool, bool) {
		return !strings.Contains(m.Mountpoint, "kmesh-probe-"), false
	})
	if err != nil || len(mounts) > 0 {
		t.Errorf("probe mounts left behind: %v %v", mounts, err)
	}
}

func TestKfuncProbeWithoutBTF(t *testing.T) {
	if err := probeKfuncSockAddr(nil); StatusOf(err) != Unsupported {
		t.Errorf("no BTF: %v (%s)", err, StatusOf(err))
	}
}

// A bpf.h made from the kernel's own helper list matches; one with two IDs
// swapped is reported as belonging to another kernel and the helper IDs then
// come from BTF.
func TestHeaderAgainstRunningKernel(t *testing.T) {
	requireRoot(t)
	base := Probe(Config{})
	if base.BTF == nil || base.BTF.Helpers == nil {
		t.Fatal("no kernel BTF helper list")
	}
	ids := base.BTF.Helpers
	names := make([]string, 0, len(ids))
	for n := range ids {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return ids[names[i]] < ids[names[j]] })

	dir := t.TempDir()
	same := filepath.Join(dir, "same.h")
	os.WriteFile(same, []byte(explicitHeader(ids, names...)), 0o644)
	s := Probe(Config{BPFHeader: same})
	wantCheck(t, s, "bpf_header.matches_kernel", Supported, "match the running kernel")
	if r, _ := Decide(s, ModeAuto, now); r.Features.HelperSource != "bpf_header" || !r.Inputs.BPFHeaderUsable {
		t.Errorf("matching header: source %s", r.Features.HelperSource)
	}

	swapped := map[string]int32{}
	for n, id := range ids {
		swapped[n] = id
	}
	swapped["map_lookup_elem"], swapped["map_update_elem"] = ids["map_update_elem"], ids["map_lookup_elem"]
	other := filepath.Join(dir, "other.h")
	os.WriteFile(other, []byte(explicitHeader(swapped, names...)), 0o644)
	s = Probe(Config{BPFHeader: other})
	wantCheck(t, s, "bpf_header.matches_kernel", Unsupported, "does not belong to the running kernel", "map_lookup_elem (header 2, kernel 1)", "bpf.h of the running kernel")
	r, _ := Decide(s, ModeAuto, now)
	if r.Features.HelperSource != "btf" || r.Features.Helpers["map_lookup_elem"] != 1 || r.Inputs.BPFHeaderUsable {
		t.Errorf("foreign header: source %s lookup=%d usable %v", r.Features.HelperSource, r.Features.Helpers["map_lookup_elem"], r.Inputs.BPFHeaderUsable)
	}

	missing := Probe(Config{BPFHeader: filepath.Join(dir, "absent.h")})
	wantCheck(t, missing, "bpf_header.present", Unsupported, "does not exist", "linux-bpf")
	if r, _ := Decide(missing, ModeAuto, now); r.Features.HelperSource != "btf" {
		t.Errorf("missing header: source %s", r.Features.HelperSource)
	}
}

func BenchmarkProbe(b *testing.B) {
	requireRoot(b)
	for b.Loop() {
		s := Probe(Config{Live: true})
		if _, err := Decide(s, ModeAuto, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
