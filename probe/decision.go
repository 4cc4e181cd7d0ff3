package probe

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mode is the data-plane mode kmesh runs in.
type Mode string

// Modes. ModeAuto is only valid as a request.
const (
	ModeAuto     Mode = "auto"
	ModeEnhanced Mode = "enhanced"
	ModeCompat   Mode = "compat"
	ModeNone     Mode = ""
)

// ParseMode validates a --mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeEnhanced, ModeCompat:
		return m, nil
	case "":
		return ModeAuto, nil
	default:
		return "", fmt.Errorf("parse mode %q: want auto, enhanced or compat", s)
	}
}

// ErrNoMode is returned by Decide when the requested mode (or, for auto, any
// mode) cannot run on this host. The record's reasons say why.
var ErrNoMode = errors.New("no mode can run on this host")

// SchemaVersion of the decision record. Bump on incompatible changes.
const SchemaVersion = 1

// Record is the decision record: the probe's findings and the mode chosen.
// It is the contract between the prober, the builder, the daemon's /status
// and users; docs/decision.md documents every field.
type Record struct {
	SchemaVersion   int       `json:"schema_version"`
	Mode            Mode      `json:"mode"`
	RequestedMode   Mode      `json:"requested_mode"`
	Reasons         []string  `json:"reasons"`
	Kernel          Kernel    `json:"kernel"`
	Features        Features  `json:"features"`
	Inputs          Inputs    `json:"inputs"`
	Checks          []Check   `json:"checks"`
	ProbedAt        time.Time `json:"probed_at"`
	ProbeDurationMS float64   `json:"probe_duration_ms"`
}

// Features are what the builder turns into compile flags (one macro each, see
// docs/decision.md).
type Features struct {
	NetnsCookie bool `json:"netns_cookie"`
	SkStorage   bool `json:"sk_storage"`
	IPv6        bool `json:"ipv6"`
	SockHash    bool `json:"sockhash"`
	SkMsg       bool `json:"sk_msg"`
	// SameNodeAccel: bpf/sockmap.c can run (sameNodeAccel lists the checks).
	SameNodeAccel bool `json:"same_node_accel"`
	RingBuf       bool `json:"ringbuf"`
	HashOfMaps    bool `json:"hash_of_maps"`
	KfuncSockAddr bool `json:"kfunc_sock_addr"`
	ModuleBTF     bool `json:"module_btf"`
	// EnhancedHelpers are the kernel-patch helpers found in bpf.h, with IDs.
	EnhancedHelpers map[string]int32 `json:"enhanced_helpers"`
	// HelperSource says where Helpers come from: "bpf_header" when the host's
	// header matches the running kernel, else "btf" (the kernel's own enum
	// bpf_func_id), else "none".
	HelperSource string           `json:"helper_source"`
	Helpers      map[string]int32 `json:"helpers"`
}

// Inputs are the host inputs the builder compiles against and keys its cache on.
type Inputs struct {
	HostRoot string `json:"host_root"`
	// BPFHeader is the host's bpf.h; BPFHeaderUsable is true when it parses and
	// every helper ID it names is right for the running kernel.
	BPFHeader       string       `json:"bpf_header"`
	BPFHeaderUsable bool         `json:"bpf_header_usable"`
	BTFHash         string       `json:"btf_hash,omitempty"`
	KConfigSource   string       `json:"kconfig_source,omitempty"`
	KConfigHash     string       `json:"kconfig_hash,omitempty"`
	BuildTree       *BuildTree   `json:"build_tree,omitempty"`
	Environment     *Environment `json:"environment,omitempty"`
}

// requirement is a named group of checks that must all be supported, or (any)
// at least one of them.
type requirement struct {
	what   string
	checks []string
	any    bool
}

var compatRequirements = []requirement{
	{what: "BPF cgroup sock_addr programs", checks: []string{"prog_type.cgroup_sock_addr", "map_type.hash", "cgroup.attach"}},
	{what: "network-namespace enrollment", checks: []string{"helper.cgroup_sock_addr.get_netns_cookie"}},
	{what: "mounts for pins and attach", checks: []string{"env.cgroup2", "env.bpffs"}},
	{what: "an attach point that sees every process (the host's cgroup2 root)", checks: []string{"env.cgroup2_root"}},
	{what: "privileges", checks: []string{"env.cap_sys_admin", "env.cap_net_admin"}},
}

// sameNodeAccel is what same-node acceleration (bpf/sockmap.c) needs. It is
// optional in both modes: without it the data plane runs without it, and the
// record's reasons say why.
var sameNodeAccel = requirement{what: "same-node acceleration (sockops + sk_msg)", checks: []string{
	"prog_type.sock_ops", "prog_type.sk_msg", "map_type.sockhash", "map_type.sk_storage",
	"helper.sock_ops.sock_hash_update", "helper.sock_ops.get_netns_cookie",
	"helper.sk_msg.msg_redirect_hash", "helper.sk_msg.sk_storage_get"}}

var enhancedRequirements = []requirement{
	{what: "loading kmesh.ko", checks: []string{"kconfig.modules", "module.modules_disabled", "module.lockdown", "module.sig_enforce", "module.cap_sys_module"}},
	{what: "building kmesh.ko", checks: []string{"build_tree.present", "build_tree.kbuild", "build_tree.release_match", "build_tree.version_match", "build_tree.config_match", "build_tree.compiler"}},
	{what: "BPF hooks for the deferred-connect programs", checks: []string{"prog_type.sock_ops", "map_type.sk_storage"}},
	{what: "a kernel hook to hand sockets to kmesh.ko (kernel-patch helpers, or module kfuncs from cgroup connect programs)",
		checks: []string{"bpf_header.enhanced_helpers", "kfunc"}, any: true},
}

// Decide turns signals into a decision record. It is a pure function of its
// inputs. When the requested mode cannot run it returns the record (with
// Mode "" and the reasons) and an error wrapping ErrNoMode.
func Decide(s *Signals, requested Mode, now time.Time) (*Record, error) {
	if requested == "" {
		requested = ModeAuto
	}
	r := &Record{
		SchemaVersion:   SchemaVersion,
		RequestedMode:   requested,
		Kernel:          s.Kernel,
		Checks:          s.Checks,
		ProbedAt:        now.UTC(),
		ProbeDurationMS: float64(s.Duration.Microseconds()) / 1000,
		Reasons:         []string{},
	}
	r.Features = deriveFeatures(s)
	r.Inputs = deriveInputs(s)

	compatMissing := unmet(s, compatRequirements)
	enhancedMissing := append(append([]string(nil), compatMissing...), unmet(s, enhancedRequirements)...)

	switch requested {
	case ModeEnhanced:
		if len(enhancedMissing) > 0 {
			r.Reasons = append([]string{"enhanced mode was requested but cannot run on this host"}, enhancedMissing...)
			return r, fmt.Errorf("decide mode: enhanced requested: %s: %w", strings.Join(enhancedMissing, "; "), ErrNoMode)
		}
		r.Mode = ModeEnhanced
		r.Reasons = []string{"enhanced mode requested; " + met(enhancedRequirements)}
	case ModeCompat:
		if len(compatMissing) > 0 {
			r.Reasons = append([]string{"compat mode was requested but cannot run on this host"}, compatMissing...)
			return r, fmt.Errorf("decide mode: compat requested: %s: %w", strings.Join(compatMissing, "; "), ErrNoMode)
		}
		r.Mode = ModeCompat
		r.Reasons = []string{"compat mode requested; " + met(compatRequirements)}
	default:
		switch {
		case len(enhancedMissing) == 0:
			r.Mode = ModeEnhanced
			r.Reasons = []string{"enhanced: " + met(enhancedRequirements)}
		case len(compatMissing) == 0:
			r.Mode = ModeCompat
			r.Reasons = append([]string{"compat: the L4 data plane can run (" + met(compatRequirements) + "); enhanced mode is unavailable:"}, enhancedMissing...)
		default:
			r.Reasons = append([]string{"no mode can run: the L4 data plane's requirements are not met:"}, compatMissing...)
			return r, fmt.Errorf("decide mode: %s: %w", strings.Join(compatMissing, "; "), ErrNoMode)
		}
	}
	if n := cgroupNamespaceNote(s); n != "" {
		r.Reasons = append(r.Reasons, n)
	}
	if missing := unmet(s, []requirement{sameNodeAccel}); len(missing) > 0 {
		r.Reasons = append(r.Reasons, "note: same-node acceleration is off (connections between pods of this node go through TCP/IP):")
		r.Reasons = append(r.Reasons, missing...)
	}
	return r, nil
}

// cgroupNamespaceNote warns when this process has a private cgroup namespace
// but sees the host's cgroup2 root (the DaemonSet's layout): kmesh can run,
// only attached there.
func cgroupNamespaceNote(s *Signals) string {
	ns, root := s.Check("env.cgroup_namespace"), s.Check("env.cgroup2_root")
	if ns.Status != Unsupported || !root.OK() {
		return ""
	}
	at := "the cgroup2 root the probe found"
	if s.Environment != nil && s.Environment.Cgroup2Mount != "" {
		at = s.Environment.Cgroup2Mount + " (--cgroup2-path=" + s.Environment.Cgroup2Mount + ")"
	}
	return "note: env.cgroup_namespace is unsupported (" + ns.Detail + "): kmesh runs because the host's cgroup2 hierarchy is mounted (" +
		root.Detail + "); the daemon must attach at " + at + ": a cgroup2 mounted inside this namespace would be rooted at this container's own cgroup and see no pod"
}

// unmet returns one reason per check that keeps a requirement from being met.
func unmet(s *Signals, reqs []requirement) []string {
	var out []string
	for _, req := range reqs {
		var bad []string
		for _, name := range req.checks {
			c := lookup(s, name)
			// a check skipped because an earlier one failed adds nothing
			if !c.OK() && !(len(bad) > 0 && c.Detail == notProbed) {
				bad = append(bad, reason(c))
			}
		}
		switch {
		case len(bad) == 0, req.any && !allFailed(s, req.checks):
		case req.any:
			out = append(out, fmt.Sprintf("%s: none available: %s", req.what, strings.Join(bad, "; ")))
		default:
			for _, b := range bad {
				out = append(out, req.what+": "+b)
			}
		}
	}
	return out
}

// lookup resolves the pseudo-check "kfunc": kmesh.ko kfuncs are callable from
// cgroup connect programs when kfunc calls work in cgroup sock_addr programs
// (the live load when it ran, else the BTF evidence) and modules have BTF.
func lookup(s *Signals, name string) Check {
	if name != "kfunc" {
		return s.Check(name)
	}
	hook := "kfunc.cgroup_sock_addr"
	if s.Check(hook).Detail == notProbed {
		hook = "btf.kfunc_hook_sock_addr"
	}
	for _, n := range []string{hook, "btf.modules"} {
		if c := s.Check(n); !c.OK() {
			return c
		}
	}
	return Check{Name: "kfunc", Status: Supported}
}

func reason(c Check) string {
	msg := fmt.Sprintf("%s is %s (%s)", c.Name, c.Status, c.Detail)
	if c.Fix != "" {
		msg += "; fix: " + c.Fix
	}
	return msg
}

func met(reqs []requirement) string {
	var names []string
	for _, r := range reqs {
		names = append(names, r.what+" ["+strings.Join(r.checks, ", ")+"]")
	}
	return "all requirements met: " + strings.Join(names, "; ")
}

func deriveFeatures(s *Signals) Features {
	ok := func(n string) bool { return s.Check(n).OK() }
	f := Features{
		NetnsCookie:     ok("helper.cgroup_sock_addr.get_netns_cookie"),
		SkStorage:       ok("map_type.sk_storage") && ok("helper.cgroup_sock_addr.sk_storage_get"),
		IPv6:            ok("kconfig.ipv6"),
		SockHash:        ok("map_type.sockhash") && ok("helper.sock_ops.sock_hash_update"),
		SkMsg:           ok("prog_type.sk_msg") && ok("helper.sk_msg.msg_redirect_hash"),
		SameNodeAccel:   len(unmet(s, []requirement{sameNodeAccel})) == 0,
		RingBuf:         ok("map_type.ringbuf"),
		HashOfMaps:      ok("map_type.hash_of_maps"),
		KfuncSockAddr:   lookup(s, "kfunc").OK(),
		ModuleBTF:       ok("btf.modules"),
		EnhancedHelpers: map[string]int32{},
		HelperSource:    "none",
	}
	if s.Header != nil && s.Header.Helpers != nil {
		for k, v := range s.Header.Helpers.Enhanced {
			f.EnhancedHelpers[k] = v
		}
	}
	switch {
	case s.Header != nil && s.Header.Helpers != nil && s.Header.Diff != nil && s.Header.Diff.Match():
		f.HelperSource, f.Helpers = "bpf_header", s.Header.Helpers.IDs
	case s.BTF != nil && s.BTF.Helpers != nil:
		f.HelperSource, f.Helpers = "btf", s.BTF.Helpers
	case s.Header != nil && s.Header.Helpers != nil:
		// no BTF to check against: the header is all there is
		f.HelperSource, f.Helpers = "bpf_header", s.Header.Helpers.IDs
	}
	return f
}

func deriveInputs(s *Signals) Inputs {
	in := Inputs{HostRoot: s.HostRoot, BuildTree: s.BuildTree, Environment: s.Environment}
	if s.Header != nil {
		in.BPFHeader = s.Header.Path
		in.BPFHeaderUsable = s.Header.Helpers != nil && (s.Header.Diff == nil || s.Header.Diff.Compatible())
	}
	if s.BTF != nil {
		in.BTFHash = s.BTF.Hash
	}
	if s.KConfig != nil {
		in.KConfigSource, in.KConfigHash = s.KConfig.Source, s.KConfig.Hash()
	}
	return in
}

func allFailed(s *Signals, names []string) bool {
	for _, n := range names {
		if lookup(s, n).OK() {
			return false
		}
	}
	return true
}
