package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// report collects the run's environment and figures and renders markdown.
type report struct {
	settings            settings
	tools               tools
	start               time.Time
	kernel, cpu, commit string
	loadStart, loadEnd  string
	cgroupProgs         string
	samples             map[string]map[string][]sample // max rate: scenario → case → per round
	fixed               map[string]map[string][]sample // at rate[scenario]
	rate                map[string]int
	otherCPU, stealCPU  float64 // shares of the machine during the load runs
	daemon              []*daemonFigures
	hooks               []hookCost
}

func (r *report) begin() {
	r.start = time.Now().UTC()
	r.kernel = firstLine(output("uname", "-r"))
	r.cpu = cpuModel()
	r.loadStart = loadAvg()
	root := repoRoot()
	r.commit = firstLine(output("git", "-C", root, "rev-parse", "--short", "HEAD"))
	if r.commit == "" {
		r.commit = "unknown"
	} else if strings.TrimSpace(output("git", "-C", root, "status", "--porcelain", "--untracked-files=no")) != "" {
		r.commit += " + uncommitted changes"
	}
}

func (r *report) end() { r.loadEnd = loadAvg() }

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// otherConnectProgs counts the connect4 programs already attached at the
// cgroup2 root (other kmesh instances on the machine): they run, and exit
// early, on every connect() of every case alike.
func otherConnectProgs() string {
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		return "unknown (no bpftool)"
	}
	mnt := ""
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if st, err := os.Stat(p + "/cgroup.procs"); err == nil && !st.IsDir() {
			mnt = p
			break
		}
	}
	if mnt == "" {
		return "unknown (no cgroup2 mount)"
	}
	n := 0
	for _, line := range strings.Split(output(bpftool, "cgroup", "show", mnt), "\n") {
		if strings.Contains(line, "connect4") {
			n++
		}
	}
	return fmt.Sprint(n)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratios are a[i]/b[i] for each round.
func ratios(a, b []sample, f func(sample) float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if d := f(b[i]); d != 0 {
			out = append(out, f(a[i])/d)
		}
	}
	return out
}

func medianRatio(a, b []sample, f func(sample) float64) float64 { return median(ratios(a, b, f)) }

func medianOf(s []sample, f func(sample) float64) float64 {
	v := make([]float64, len(s))
	for i := range s {
		v[i] = f(s[i])
	}
	return median(v)
}

func medianDur(rs []reload, f func(reload) time.Duration) time.Duration {
	v := make([]float64, len(rs))
	for i := range rs {
		v[i] = float64(f(rs[i]))
	}
	return time.Duration(median(v))
}

func maxDur(rs []reload, f func(reload) time.Duration) time.Duration {
	var m time.Duration
	for _, r := range rs {
		m = max(m, f(r))
	}
	return m
}

// us formats seconds as microseconds.
func us(sec float64) string { return fmt.Sprintf("%.0f", sec*1e6) }

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f ms", float64(d)/1e6)
}

func mib(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

// spread renders the median of per-round ratios and their range.
func spread(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	if len(v) == 1 {
		return fmt.Sprintf("%.2f", v[0])
	}
	return fmt.Sprintf("%.2f [%.2f–%.2f]", median(v), lo, hi)
}

func niceNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; fortio and haproxy ran under `nice -n %d` (KMESH_BENCH_NICE)", n)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

var (
	qpsOf = func(x sample) float64 { return x.qps }
	p50Of = func(x sample) float64 { return x.p50 }
	p90Of = func(x sample) float64 { return x.p90 }
	p99Of = func(x sample) float64 { return x.p99 }
	cpuOf = func(x sample) float64 { return x.cpuPerReq() }
)

func (r *report) markdown() string {
	var b strings.Builder
	s := r.settings
	fmt.Fprintf(&b, "## Data-plane traffic (BenchmarkTraffic)\n\n")
	fmt.Fprintf(&b, "%s · kernel %s · %d CPUs (%s) · 1-min load %s at start, %s at end · %s · fortio %s · %s · commit %s\n\n",
		r.start.Format("2006-01-02 15:04 MST"), r.kernel, runtime.NumCPU(), r.cpu, r.loadStart, r.loadEnd,
		runtime.Version(), r.tools.fortioVer, r.tools.haproxyVer, r.commit)
	if r.samples != nil {
		fmt.Fprintf(&b, "Client netns → backend netns over a veth pair; backend `fortio server`; load `fortio load -c %d`, %s per run, "+
			"%d round(s), the cases in order in even rounds and reversed in odd ones (ABBA). Each case runs twice a round: at the maximum rate (req/s) and at a fixed "+
			"rate, 40%% of the slowest case's maximum in the warm-up, where the latencies are taken (at the maximum rate they are mostly "+
			"queueing). %d-byte responses; histogram resolution 10 µs. Figures are medians over rounds; ratios are medians of "+
			"per-round ratios [min–max]. Other connect4 programs on the cgroup2 root at start: %s. "+
			"CPU used by processes other than the benchmark's during the measured runs: %.0f%% of the machine (steal %.0f%%; "+
			"approximate: softirq work can be charged to any process)%s.\n\n",
			s.conc, s.duration, s.rounds, s.payload, r.cgroupProgs, 100*r.otherCPU, 100*r.stealCPU, niceNote(s.nice))
		for _, sc := range scenarios {
			mx, fx, rate := r.samples[sc.name], r.fixed[sc.name], r.rate[sc.name]
			what := "`-keepalive=false`: a new connection per request, so connect() (and kmesh's hook) runs for every request"
			if sc.keepalive {
				what = fmt.Sprintf("`-keepalive=true`: %d long-lived connections, the data path only", s.conc)
			}
			fmt.Fprintf(&b, "### %s (%s)\n\n", sc.name, what)
			fmt.Fprintf(&b, "| case | max req/s | vs direct | p50 µs | p90 µs | p99 µs | p99 vs direct | CPU µs / req | vs direct | of which proxy | p99 µs at max rate |\n")
			b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, name := range caseNames {
				cpu := "–"
				if name == caseProxyTCP || name == caseProxyHTTP || name == caseSidecars {
					cpu = us(medianOf(fx[name], func(x sample) float64 {
						return float64(x.proxyCPU) / float64(time.Second) / float64(max(1, x.count))
					}))
				}
				short := ""
				for _, x := range fx[name] {
					if x.qps < 0.95*float64(rate) {
						short = fmt.Sprintf(" (rate not held: %.0f)", x.qps)
					}
				}
				qr, pr, cr := "1", "1", "1"
				if name != caseDirect {
					qr, pr = spread(ratios(mx[name], mx[caseDirect], qpsOf)), spread(ratios(fx[name], fx[caseDirect], p99Of))
					cr = spread(ratios(fx[name], fx[caseDirect], cpuOf))
				}
				fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s%s | %s | %.1f | %s | %s | %s |\n", name, medianOf(mx[name], qpsOf), qr,
					us(medianOf(fx[name], p50Of)), us(medianOf(fx[name], p90Of)), us(medianOf(fx[name], p99Of)), short,
					pr, 1e6*medianOf(fx[name], cpuOf), cr, cpu, us(medianOf(mx[name], p99Of)))
			}
			var syn []string
			for _, name := range caseNames {
				var n int64
				for _, x := range append(append([]sample{}, mx[name]...), fx[name]...) {
					n += x.synRetrans
				}
				syn = append(syn, fmt.Sprintf("%s %d", name, n))
			}
			fmt.Fprintf(&b, "\nSYN retransmissions in the measured runs (each stalls a connect() for 1 s): %s.", strings.Join(syn, ", "))
			fmt.Fprintf(&b, " Latency and CPU columns at %d req/s. CPU: user+system time of fortio load, fortio server and "+
				"haproxy per request (kmesh's work is in the client's connect()); \"of which proxy\": haproxy's share.\n\n", rate)
		}

		b.WriteString("### Against the goals\n\n")
		b.WriteString("| ratio | new connection per request | keep-alive | goal | met |\n| --- | ---: | ---: | --- | --- |\n")
		type goal struct {
			label    string
			num, den string
			fixed    bool
			f        func(sample) float64
			goal     string
			ok       func(float64) bool
		}
		for _, g := range []goal{
			{"kmesh / direct max req/s", caseKmesh, caseDirect, false, qpsOf, "≥ 0.95 (within 5%)", func(v float64) bool { return v >= 0.95 }},
			{"kmesh / direct p99", caseKmesh, caseDirect, true, p99Of, "≤ 1.05 (within 5%)", func(v float64) bool { return v <= 1.05 }},
			{"kmesh / direct CPU per request", caseKmesh, caseDirect, true, cpuOf, "≤ 1.05 (within 5%)", func(v float64) bool { return v <= 1.05 }},
			{"proxy-tcp / kmesh p99", caseProxyTCP, caseKmesh, true, p99Of, "≥ 2", func(v float64) bool { return v >= 2 }},
			{"proxy-http / kmesh p99", caseProxyHTTP, caseKmesh, true, p99Of, "≥ 2", func(v float64) bool { return v >= 2 }},
			{"proxy-tcp / kmesh CPU per request", caseProxyTCP, caseKmesh, true, cpuOf, "(no goal)", nil},
			{"proxy-http / kmesh CPU per request", caseProxyHTTP, caseKmesh, true, cpuOf, "(no goal)", nil},
			{"kmesh-accel / direct max req/s", caseKmeshAccel, caseDirect, false, qpsOf, "≥ 0.95 (within 5%)", func(v float64) bool { return v >= 0.95 }},
			{"kmesh-accel / direct p99", caseKmeshAccel, caseDirect, true, p99Of, "≤ 1.05 (within 5%)", func(v float64) bool { return v <= 1.05 }},
			{"proxy-tcp / kmesh-accel p99", caseProxyTCP, caseKmeshAccel, true, p99Of, "≥ 2", func(v float64) bool { return v >= 2 }},
			{"proxy-http / kmesh-accel p99", caseProxyHTTP, caseKmeshAccel, true, p99Of, "≥ 2", func(v float64) bool { return v >= 2 }},
			{"sidecars-http / kmesh p99", caseSidecars, caseKmesh, true, p99Of, "≥ 2", func(v float64) bool { return v >= 2 }},
			{"sidecars-http / kmesh-accel p99", caseSidecars, caseKmeshAccel, true, p99Of, "≥ 2", func(v float64) bool { return v >= 2 }},
			{"sidecars-http / kmesh CPU per request", caseSidecars, caseKmesh, true, cpuOf, "(no goal)", nil},
			{"kmesh-accel / kmesh max req/s", caseKmeshAccel, caseKmesh, false, qpsOf, "(what acceleration gains)", nil},
			{"kmesh-accel / kmesh p99", caseKmeshAccel, caseKmesh, true, p99Of, "(what acceleration gains)", nil},
			{"kmesh-accel / kmesh CPU per request", caseKmeshAccel, caseKmesh, true, cpuOf, "(what acceleration gains)", nil},
		} {
			var cells, met []string
			for _, sc := range scenarios {
				set := r.samples
				if g.fixed {
					set = r.fixed
				}
				v := ratios(set[sc.name][g.num], set[sc.name][g.den], g.f)
				cells = append(cells, spread(v))
				if g.ok == nil {
					met = append(met, "–")
				} else {
					met = append(met, yesNo(len(v) > 0 && g.ok(median(v))))
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", g.label, cells[0], cells[1], g.goal, strings.Join(met, " / "))
		}
		b.WriteString("\n")
		r.hookMarkdown(&b)
	}

	for _, f := range r.daemon {
		fmt.Fprintf(&b, "### Daemon footprint: kmesh-daemon process, %d services × %d endpoints, %.1f MB %s\n\n",
			f.services, f.eps, float64(f.configBytes)/1e6, strings.ToUpper(f.format))
		b.WriteString("| figure | value | goal |\n| --- | ---: | --- |\n")
		n := 0
		for _, k := range reloadKinds {
			n += len(f.reloads[k])
		}
		fmt.Fprintf(&b, "| RSS once ready and settled | %s | < 64 MiB: %s |\n", mib(f.rssReady), yesNo(f.rssReady < 64<<10))
		fmt.Fprintf(&b, "| RSS after the reloads (%d) | %s | < 64 MiB: %s |\n", n, mib(f.rssEnd), yesNo(f.rssEnd < 64<<10))
		fmt.Fprintf(&b, "| peak RSS (VmHWM) | %s | |\n", mib(f.hwm))
		fmt.Fprintf(&b, "| Go heap in use at the end | %.1f MiB | |\n", f.heapInuse/(1<<20))
		fmt.Fprintf(&b, "| process start → /ready (load, parse, full apply, attach) | %s | |\n", ms(f.ready))
		fmt.Fprintf(&b, "| process start → the watcher's first pass over the file done | %s | |\n", ms(f.settled))
		for _, k := range reloadKinds {
			rs := f.reloads[k]
			if len(rs) == 0 {
				continue
			}
			st := func(x reload) time.Duration { return x.status }
			fmt.Fprintf(&b, "| reload, %s: write → /status shows it, median / max of %d | %s / %s | < 1 s: %s |\n",
				k, len(rs), ms(medianDur(rs, st)), ms(maxDur(rs, st)), yesNo(len(rs) > 0 && maxDur(rs, st) < time.Second))
			fmt.Fprintf(&b, "| … write → applied (log) / read + parse + apply (log) / map writes (last_apply) | %s / %s / %s | |\n",
				ms(medianDur(rs, func(x reload) time.Duration { return x.logged })),
				ms(medianDur(rs, func(x reload) time.Duration { return x.watcher })),
				ms(medianDur(rs, func(x reload) time.Duration { return x.apply })))
		}
		fmt.Fprintf(&b, "\nReload times include the watcher's 100 ms debounce; \"/status shows it\" adds one GET /status after the "+
			"daemon logged the apply (%s with this config). BPF map memory is kernel memory, not in RSS.\n\n", ms(f.statusCost))
	}
	return b.String()
}
