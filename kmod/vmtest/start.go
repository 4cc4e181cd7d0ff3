package vmtest

import (
	"encoding/json"
	"fmt"
	"strings"

	"kmesh.dev/kmesh/builder"
	"kmesh.dev/kmesh/probe"
)

// StartResult is `kmesh-start --dry-run --output json`:
// {"decision": <probe.Record>, "build": <builder.Report>}.
type StartResult struct {
	Decision probe.Record    `json:"decision"`
	Build    *builder.Report `json:"build"`
}

// ParseStart parses kmesh-start's dry-run JSON.
func ParseStart(out string) (*StartResult, error) {
	i := strings.Index(out, "{")
	if i < 0 {
		return nil, fmt.Errorf("parse kmesh-start output: no JSON object in %q", tail(out, 300))
	}
	var r StartResult
	if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(&r); err != nil {
		return nil, fmt.Errorf("parse kmesh-start output: %w", err)
	}
	return &r, nil
}

// Check returns the named check (Status "" when absent).
func (r *StartResult) Check(name string) probe.Check {
	for _, c := range r.Decision.Checks {
		if c.Name == name {
			return c
		}
	}
	return probe.Check{Name: name}
}

// VerifiedOK reports whether the build verified at least one object and
// every object passed the verifier.
func (r *StartResult) VerifiedOK() (bool, string) {
	if r.Build == nil {
		return false, "no build report"
	}
	if len(r.Build.Verify) == 0 {
		return false, "no object verified"
	}
	var bad []string
	for _, v := range r.Build.Verify {
		if !v.OK {
			bad = append(bad, v.Object+": "+v.Error)
		}
	}
	if len(bad) > 0 {
		return false, strings.Join(bad, "; ")
	}
	return true, ""
}

// GroupCounts is "group supported/total" per check group (the name before
// the first dot), e.g. "btf 9/10 module 4/4".
func (r *StartResult) GroupCounts() string {
	type cnt struct{ ok, all int }
	groups := map[string]*cnt{}
	var names []string
	for _, c := range r.Decision.Checks {
		g, _, _ := strings.Cut(c.Name, ".")
		if groups[g] == nil {
			groups[g] = &cnt{}
			names = append(names, g)
		}
		groups[g].all++
		if c.Status == probe.Supported {
			groups[g].ok++
		}
	}
	var parts []string
	for _, g := range names {
		parts = append(parts, fmt.Sprintf("%s %d/%d", g, groups[g].ok, groups[g].all))
	}
	return strings.Join(parts, ", ")
}

// EffectiveMode is what kmesh-start will run: the build's mode, named
// "enhanced-fallback-to-compat" when the decision allowed enhanced but the
// build (or this version) runs compat.
func (r *StartResult) EffectiveMode() string {
	if r.Build == nil {
		return string(r.Decision.Mode)
	}
	if r.Build.Mode == probe.ModeCompat && len(r.Build.Fallbacks) > 0 {
		return "enhanced-fallback-to-compat"
	}
	return string(r.Build.Mode)
}

// Summary is the per-kernel report of a dry run (and of a second run, when
// given): the mode and why, check groups, what the probe says about
// building and loading kmesh.ko and the kernel hook, the build.
func (r *StartResult) Summary(kernel, label string, second *StartResult) string {
	var b strings.Builder
	d := r.Decision
	fmt.Fprintf(&b, "%-6s %s: mode %s, same-node acceleration %s", kernel, label, r.EffectiveMode(), onOff(d.Features.SameNodeAccel))
	if r.Build != nil {
		ok := 0
		for _, v := range r.Build.Verify {
			if v.OK {
				ok++
			}
		}
		fmt.Fprintf(&b, ", cache_hit=%v, objects verified %d/%d, build %.1f s", r.Build.CacheHit, ok, len(r.Build.Verify), r.Build.DurationMS/1000)
		if m := r.Build.Module; m != nil && m.Vermagic != "" {
			fmt.Fprintf(&b, ", kmesh.ko built in the guest (%s, srcversion %s, %.0f s)", m.Vermagic, m.Srcversion, m.BuildMS/1000)
		} else if m != nil {
			fmt.Fprintf(&b, ", kmesh.ko build in the guest FAILED after %.0f s", m.BuildMS/1000)
		} else if r.Build.ModulePath != "" {
			fmt.Fprintf(&b, ", kmesh.ko %s", r.Build.ModulePath)
		}
	}
	if second != nil && second.Build != nil {
		fmt.Fprintf(&b, "; second run cache_hit=%v (%.1f s)", second.Build.CacheHit, second.Build.DurationMS/1000)
	}
	b.WriteString("\n")
	for _, why := range d.Reasons {
		fmt.Fprintf(&b, "%-6s   why: %s\n", kernel, oneLine(why))
	}
	fmt.Fprintf(&b, "%-6s   checks (supported/total): %s\n", kernel, r.GroupCounts())
	shown := map[string]bool{}
	for _, c := range r.Decision.Checks {
		if strings.HasPrefix(c.Name, "build_tree.") || strings.HasPrefix(c.Name, "module.") || strings.HasPrefix(c.Name, "kfunc.") ||
			c.Name == "kconfig.modules" || c.Name == "btf.kfunc_hook_sock_addr" || c.Name == "btf.modules" {
			shown[c.Name] = true
			fmt.Fprintf(&b, "%-6s   %-30s %-13s %s\n", kernel, c.Name, c.Status, oneLine(c.Detail))
		}
	}
	for _, c := range r.Decision.Checks {
		if c.Status != probe.Supported && !shown[c.Name] {
			fmt.Fprintf(&b, "%-6s   %-30s %-13s %s\n", kernel, c.Name, c.Status, oneLine(c.Detail))
		}
	}
	return b.String()
}

func onOff(v bool) string {
	if v {
		return "on"
	}
	return "off"
}

// oneLine folds a multi-line text (a kbuild log in a reason) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
