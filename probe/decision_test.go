package probe

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// allSupported returns signals where every requirement of both modes holds.
func allSupported() *Signals {
	s := &Signals{Kernel: Kernel{Release: "6.9.0-test"}}
	for _, reqs := range [][]requirement{compatRequirements, enhancedRequirements, {sameNodeAccel}} {
		for _, r := range reqs {
			for _, n := range r.checks {
				if n != "kfunc" {
					s.Checks = append(s.Checks, Check{Name: n, Status: Supported})
				}
			}
		}
	}
	s.Checks = append(s.Checks, Check{Name: "btf.kfunc_hook_sock_addr", Status: Supported}, Check{Name: "btf.modules", Status: Supported})
	return s
}

func set(s *Signals, name string, st Status, detail, fix string) *Signals {
	for i := range s.Checks {
		if s.Checks[i].Name == name {
			s.Checks[i] = Check{Name: name, Status: st, Detail: detail, Fix: fix}
			return s
		}
	}
	s.Checks = append(s.Checks, Check{Name: name, Status: st, Detail: detail, Fix: fix})
	return s
}

var now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func TestDecideEnhanced(t *testing.T) {
	r, err := Decide(allSupported(), ModeAuto, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != ModeEnhanced || r.RequestedMode != ModeAuto || len(r.Reasons) != 1 || !strings.Contains(r.Reasons[0], "build_tree.compiler") {
		t.Errorf("record = mode %q reasons %q", r.Mode, r.Reasons)
	}
}

// TestDecideSameNodeAccel: acceleration follows its checks, never the mode.
func TestDecideSameNodeAccel(t *testing.T) {
	r, err := Decide(allSupported(), ModeAuto, now)
	if err != nil || !r.Features.SameNodeAccel {
		t.Fatalf("all supported: same_node_accel %v, %v", r.Features.SameNodeAccel, err)
	}
	// 5.10: no bpf_get_netns_cookie in sock_ops
	s := set(allSupported(), "helper.sock_ops.get_netns_cookie", Unsupported, "helper not available for program type sock_ops", "")
	r, err = Decide(s, ModeAuto, now)
	if err != nil || r.Mode != ModeEnhanced || r.Features.SameNodeAccel {
		t.Fatalf("without the sock_ops netns cookie: mode %q same_node_accel %v, %v", r.Mode, r.Features.SameNodeAccel, err)
	}
	joined := strings.Join(r.Reasons, "\n")
	for _, want := range []string{"note: same-node acceleration is off", "same-node acceleration (sockops + sk_msg): helper.sock_ops.get_netns_cookie is unsupported"} {
		if !strings.Contains(joined, want) {
			t.Errorf("reasons lack %q:\n%s", want, joined)
		}
	}
	// inconclusive is not yes either
	s = set(allSupported(), "helper.sk_msg.sk_storage_get", Inconclusive, "EPERM", "")
	if r, _ := Decide(s, ModeCompat, now); r.Features.SameNodeAccel {
		t.Error("an inconclusive check enabled acceleration")
	}
}

func TestDecideCompatWhenNoModules(t *testing.T) {
	s := set(allSupported(), "kconfig.modules", Unsupported, "CONFIG_MODULES is not set (/proc/config.gz)", "use a kernel built with CONFIG_MODULES=y")
	r, err := Decide(s, ModeAuto, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != ModeCompat {
		t.Fatalf("mode = %q", r.Mode)
	}
	joined := strings.Join(r.Reasons, "\n")
	for _, want := range []string{"loading kmesh.ko: kconfig.modules is unsupported", "CONFIG_MODULES is not set", "fix: use a kernel built with CONFIG_MODULES=y"} {
		if !strings.Contains(joined, want) {
			t.Errorf("reasons lack %q:\n%s", want, joined)
		}
	}
}

func TestDecideAnyOfHooks(t *testing.T) {
	// kfunc path missing but kernel-patch helpers present: still enhanced
	s := set(allSupported(), "btf.kfunc_hook_sock_addr", Unsupported, "absent", "")
	s = set(s, "bpf_header.enhanced_helpers", Supported, "parse_header_msg=212", "")
	if r, err := Decide(s, ModeAuto, now); err != nil || r.Mode != ModeEnhanced {
		t.Fatalf("mode = %v, err %v", r.Mode, err)
	}
	// neither: compat, one reason naming both alternatives
	s = set(s, "bpf_header.enhanced_helpers", Unsupported, "helpers absent", "")
	r, err := Decide(s, ModeAuto, now)
	if err != nil || r.Mode != ModeCompat {
		t.Fatalf("mode = %v, err %v", r.Mode, err)
	}
	joined := strings.Join(r.Reasons, "\n")
	if !strings.Contains(joined, "none available") || !strings.Contains(joined, "bpf_header.enhanced_helpers") || !strings.Contains(joined, "btf.kfunc_hook_sock_addr") {
		t.Errorf("reasons = %s", joined)
	}
}

func TestDecideNoMode(t *testing.T) {
	s := set(allSupported(), "prog_type.cgroup_sock_addr", NotPermitted, "operation not permitted", "run privileged")
	r, err := Decide(s, ModeAuto, now)
	if !errors.Is(err, ErrNoMode) {
		t.Fatalf("err = %v", err)
	}
	if r.Mode != ModeNone || !strings.Contains(err.Error(), "prog_type.cgroup_sock_addr is not_permitted") || !strings.Contains(strings.Join(r.Reasons, " "), "fix: run privileged") {
		t.Errorf("mode %q err %v reasons %q", r.Mode, err, r.Reasons)
	}
}

func TestDecideForced(t *testing.T) {
	s := set(allSupported(), "build_tree.present", Unsupported, "/lib/modules/x/build does not exist", "install kernel-devel")
	s = set(s, "build_tree.kbuild", Inconclusive, notProbed, "")
	r, err := Decide(s, ModeEnhanced, now)
	if !errors.Is(err, ErrNoMode) || r.Mode != ModeNone {
		t.Fatalf("forced enhanced: mode %q err %v", r.Mode, err)
	}
	joined := strings.Join(r.Reasons, "\n")
	if !strings.Contains(joined, "build_tree.present") || strings.Contains(joined, "build_tree.kbuild") {
		t.Errorf("reasons should name the failing check, not the skipped one:\n%s", joined)
	}
	if r, err := Decide(allSupported(), ModeCompat, now); err != nil || r.Mode != ModeCompat || !strings.Contains(r.Reasons[0], "compat mode requested") {
		t.Errorf("forced compat: %v %v", r, err)
	}
}

func TestDecideInconclusiveIsNotSupported(t *testing.T) {
	s := set(allSupported(), "cgroup.attach", Inconclusive, "weird error", "")
	if _, err := Decide(s, ModeAuto, now); !errors.Is(err, ErrNoMode) {
		t.Fatalf("err = %v", err)
	}
}

func TestFeaturesHelperSource(t *testing.T) {
	kernel := map[string]int32{"unspec": 0, "a": 1, "b": 2}
	s := allSupported()
	s.BTF = &BTFInfo{Helpers: kernel, Hash: "h"}
	hdr := &HeaderHelpers{IDs: map[string]int32{"unspec": 0, "a": 1, "b": 2}, Enhanced: map[string]int32{}}
	d := DiffHelpers(hdr.IDs, kernel)
	s.Header = &HeaderInfo{Path: "/x/bpf.h", Helpers: hdr, Diff: &d}
	r, _ := Decide(s, ModeAuto, now)
	if r.Features.HelperSource != "bpf_header" || !r.Inputs.BPFHeaderUsable {
		t.Errorf("matching header: source %s usable %v", r.Features.HelperSource, r.Inputs.BPFHeaderUsable)
	}
	other := &HeaderHelpers{IDs: map[string]int32{"unspec": 0, "a": 2}, Enhanced: map[string]int32{}}
	d = DiffHelpers(other.IDs, kernel)
	s.Header = &HeaderInfo{Path: "/x/bpf.h", Helpers: other, Diff: &d}
	r, _ = Decide(s, ModeAuto, now)
	if r.Features.HelperSource != "btf" || r.Features.Helpers["a"] != 1 || r.Inputs.BPFHeaderUsable {
		t.Errorf("foreign header: source %s a=%d usable %v", r.Features.HelperSource, r.Features.Helpers["a"], r.Inputs.BPFHeaderUsable)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "enhanced": ModeEnhanced, "compat": ModeCompat} {
		if m, err := ParseMode(in); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, m, err)
		}
	}
	if _, err := ParseMode("dual-engine"); err == nil {
		t.Error("ParseMode(dual-engine) accepted")
	}
}
