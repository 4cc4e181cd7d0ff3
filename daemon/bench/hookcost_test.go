package bench

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// hookCost is the time the kernel spent inside kmesh's BPF programs during
// one fixed-rate run, from the kernel's own BPF statistics
// (BPF_ENABLE_STATS, run_time_ns and run_cnt per program). It measures
// kmesh's per-request cost directly, where the wall-clock ratios of two
// paths on a shared 2-vCPU machine differ by ~10% between identical paths.
type hookCost struct {
	scenario, name string
	requests       int64
	cpuPerReq      float64 // all the run's processes, seconds per request
	progs          []progCost
}

type progCost struct {
	name string
	runs uint64
	ns   uint64
}

// perRequest is the seconds spent in kmesh's programs per request.
func (h hookCost) perRequest() float64 {
	var ns uint64
	for _, p := range h.progs {
		ns += p.ns
	}
	if h.requests == 0 {
		return 0
	}
	return float64(ns) / 1e9 / float64(h.requests)
}

// kmeshPrograms opens every program the daemon attached: through its
// pinned links and its pinned map-attached programs.
func kmeshPrograms(b *testing.B, bpffs string) map[string]*ebpf.Program {
	b.Helper()
	out := map[string]*ebpf.Program{}
	links, _ := filepath.Glob(filepath.Join(bpffs, "kmesh", "links", "*"))
	for _, p := range links {
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			b.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			b.Fatal(err)
		}
		prog, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			b.Fatal(err)
		}
		out[filepath.Base(p)] = prog
	}
	progs, _ := filepath.Glob(filepath.Join(bpffs, "kmesh", "progs", "*"))
	for _, p := range progs {
		prog, err := ebpf.LoadPinnedProgram(p, nil)
		if err != nil {
			b.Fatal(err)
		}
		out[filepath.Base(p)] = prog
	}
	if len(out) == 0 {
		b.Fatalf("no kmesh program pinned under %s", bpffs)
	}
	return out
}

type progSnap map[string][2]uint64 // name → run count, run time ns

func snapProgs(b *testing.B, progs map[string]*ebpf.Program) progSnap {
	b.Helper()
	s := progSnap{}
	for n, p := range progs {
		st, err := p.Stats()
		if err != nil {
			b.Fatalf("program %s: run statistics: %v", n, err)
		}
		s[n] = [2]uint64{st.RunCount, uint64(st.Runtime.Nanoseconds())}
	}
	return s
}

// measureHookCost runs each kmesh case once per scenario at the fixed rate
// with the kernel's BPF statistics on (they cost two clock reads per
// program run, which is why the rounds run without them).
func measureHookCost(b *testing.B, s settings, rep *report, bpffs string, run func(scenario, string, time.Duration, int) sample) {
	b.Helper()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time statistics (5.8+, CAP_SYS_ADMIN): %v", err)
	}
	defer stats.Close()
	progs := kmeshPrograms(b, bpffs)
	defer func() {
		for _, p := range progs {
			p.Close()
		}
	}()
	for _, sc := range scenarios {
		for _, name := range []string{caseKmesh, caseKmeshAccel} {
			before := snapProgs(b, progs)
			sm := run(sc, name, s.duration, rep.rate[sc.name])
			after := snapProgs(b, progs)
			h := hookCost{scenario: sc.name, name: name, requests: sm.count, cpuPerReq: sm.cpuPerReq()}
			for n := range progs {
				runs, ns := after[n][0]-before[n][0], after[n][1]-before[n][1]
				if runs > 0 {
					h.progs = append(h.progs, progCost{name: strings.ReplaceAll(n, "__", "/"), runs: runs, ns: ns})
				}
			}
			sort.Slice(h.progs, func(i, j int) bool { return h.progs[i].name < h.progs[j].name })
			rep.hooks = append(rep.hooks, h)
			b.Logf("hook cost, %s, %s: %.0f ns per request in kmesh's programs, %.0f µs CPU per request (%s)",
				sc.name, name, h.perRequest()*1e9, h.cpuPerReq*1e6, h.describe())
		}
	}
}

func (h hookCost) describe() string {
	var parts []string
	for _, p := range h.progs {
		parts = append(parts, fmt.Sprintf("%s %.2f runs/req × %.0f ns", p.name, float64(p.runs)/float64(h.requests), float64(p.ns)/float64(p.runs)))
	}
	return strings.Join(parts, ", ")
}

// hookMarkdown renders the hook-cost table.
func (r *report) hookMarkdown(b *strings.Builder) {
	if len(r.hooks) == 0 {
		return
	}
	b.WriteString("### Time inside kmesh's BPF programs (kernel BPF statistics)\n\n")
	b.WriteString("One run per case and scenario at the fixed rate, after the rounds, with `BPF_ENABLE_STATS` on " +
		"(its two clock reads per program run are included). Share: of the CPU per request of all the benchmark's processes in that run.\n\n")
	b.WriteString("| scenario | case | program: runs per request × ns per run | ns per request | CPU µs per request | share |\n| --- | --- | --- | ---: | ---: | ---: |\n")
	for _, h := range r.hooks {
		share := 0.0
		if h.cpuPerReq > 0 {
			share = h.perRequest() / h.cpuPerReq
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.0f | %.1f | %.2f%% |\n", h.scenario, h.name, h.describe(), h.perRequest()*1e9, h.cpuPerReq*1e6, 100*share)
	}
	b.WriteString("\n")
}
