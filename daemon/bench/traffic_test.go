package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

// The cases, in report order; "direct" is the baseline.
const (
	caseDirect = "direct"
	caseKmesh  = "kmesh"
	// caseKmeshAccel is kmesh with the backend's namespace enrolled too:
	// both ends are pods of this node, so same-node acceleration
	// (bpf/sockmap.c) hands each send to the peer socket.
	caseKmeshAccel = "kmesh-accel"
	caseProxyTCP   = "proxy-tcp"
	caseProxyHTTP  = "proxy-http"
	// caseSidecars is the path of a sidecar mesh: a sidecar in each pod
	// (haproxy http in the client and in the backend namespace).
	caseSidecars = "sidecars-http"
)

var caseNames = []string{caseDirect, caseKmesh, caseKmeshAccel, caseProxyTCP, caseProxyHTTP, caseSidecars}

type scenario struct {
	name      string
	keepalive bool
}

var scenarios = []scenario{
	{"new connection per request", false},
	{"keep-alive", true},
}

// sample is one fortio load run.
type sample struct {
	qps, avg, p50, p90, p99 float64 // requests/s; latencies in seconds
	count, ok, sockets      int64
	// CPU (user+system) used during the run by the load generator, the
	// backend and the proxy; kmesh's work is in the client's connect().
	clientCPU, serverCPU, proxyCPU time.Duration
	// SYN retransmissions in the client and backend namespaces during the
	// run: each is a connect() stalled for the 1 s initial RTO.
	synRetrans int64
}

// cpuPerReq is the CPU all the benchmark's processes spent per request.
func (x sample) cpuPerReq() float64 {
	if x.count == 0 {
		return 0
	}
	return float64(x.clientCPU+x.serverCPU+x.proxyCPU) / float64(time.Second) / float64(x.count)
}

// BenchmarkTraffic measures direct, kmesh and proxy side by side, then the
// daemon's footprint with a large config, and writes the markdown report.
// Each part runs once whatever b.N is (run with -benchtime 1x).
func BenchmarkTraffic(b *testing.B) {
	testnet.RequireRoot(b)
	s := loadSettings(b)
	tl := findTools(b)
	rep := &report{settings: s, tools: tl}
	rep.begin()
	b.Run("load", func(b *testing.B) { benchLoad(b, s, tl, rep) })
	b.Run("daemon", func(b *testing.B) { benchDaemon(b, s, rep) })
	rep.end()
	md := rep.markdown()
	b.Logf("\n%s", md)
	if err := os.MkdirAll(filepath.Dir(s.out), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(s.out, []byte(md), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("report written to %s", s.out)
}

func benchLoad(b *testing.B, s settings, tl tools, rep *report) {
	if rep.samples != nil { // called again for -benchtime > 1x: measured once
		rep.reportLoad(b)
		return
	}
	rep.cgroupProgs = otherConnectProgs()
	tp := newTopo(b, tl, s.nice)
	tp.startDaemon(b)
	tp.checkPaths(b)
	tp.checkAccel(b)

	urls := map[string]string{
		caseDirect:     backendAddr,
		caseKmesh:      vipAddr,
		caseKmeshAccel: vipAddr,
		// the proxy cases connect to the VIP too: their captures send it on
		caseProxyTCP:  vipAddr,
		caseProxyHTTP: vipAddr,
		caseSidecars:  vipAddr,
	}
	captures := tp.captures()
	proxies := map[string][]*proc{caseProxyTCP: {tp.haTCP}, caseProxyHTTP: {tp.haHTTP}, caseSidecars: {tp.haOut, tp.haIn}}
	// The daemon's counters are read once before and once after all runs:
	// a scrape costs the benchmark process CPU (and GC) that must not
	// overlap a run.
	redirected0, kmeshSockets := tp.redirected(b), int64(0)
	// run loads one case; qps 0 is the maximum rate.
	run := func(sc scenario, name string, d time.Duration, qps int) sample {
		b.Helper()
		if name == caseKmesh || name == caseKmeshAccel {
			tp.setEnrolled(b, true)
			defer tp.setEnrolled(b, false)
		}
		if name == caseKmeshAccel {
			tp.setServerEnrolled(b, true)
			defer tp.setServerEnrolled(b, false)
		}
		if rules := captures[name]; rules != nil {
			defer tp.capture(b, rules)()
		}
		var cpu0 time.Duration
		for _, p := range proxies[name] {
			cpu0 += p.cpu()
		}
		srv0 := tp.backend.cpu()
		tc0, ts0 := tcpCounters(tp.client), tcpCounters(tp.server)
		url := fmt.Sprintf("http://%s/echo?size=%d", urls[name], s.payload)
		sm, err := tp.load(b, url, sc.keepalive, s.conc, qps, d)
		if err != nil {
			b.Fatalf("%s, %s: %v", name, sc.name, err)
		}
		sm.serverCPU = tp.backend.cpu() - srv0
		tc1, ts1 := tcpCounters(tp.client), tcpCounters(tp.server)
		const syn = "TcpExt:TCPSynRetrans"
		if _, ok := tc1[syn]; !ok {
			b.Fatalf("no %s in the client namespace's /proc/net/netstat", syn)
		}
		sm.synRetrans = tc1[syn] - tc0[syn] + ts1[syn] - ts0[syn]
		if ps := proxies[name]; ps != nil {
			sm.proxyCPU = -cpu0
			for _, p := range ps {
				sm.proxyCPU += p.cpu()
				if p.exited() {
					b.Fatalf("%s exited during the run: %v\n%s", p.name, p.err, p.out)
				}
			}
		}
		if sm.ok != sm.count || sm.count == 0 {
			b.Fatalf("%s, %s: %d of %d requests answered 200", name, sc.name, sm.ok, sm.count)
		}
		switch {
		case sc.keepalive && sm.sockets > int64(2*s.conc):
			b.Errorf("%s, keep-alive: %d connections for %d workers", name, sm.sockets, s.conc)
		case !sc.keepalive && sm.sockets < sm.count:
			b.Errorf("%s, new connection per request: %d connections for %d requests", name, sm.sockets, sm.count)
		}
		if name == caseKmesh || name == caseKmeshAccel {
			kmeshSockets += sm.sockets
		}

		return sm
	}

	// Warm every path up (haproxy, the backend, caches), unrecorded, and
	// pick each scenario's fixed rate for the latency runs: 40% of the
	// slowest case's maximum, so every case sustains it and latency compares
	// paths at equal load (at the maximum rate, latency is mostly queueing).
	warm := min(time.Second, s.duration/2)
	rep.rate = map[string]int{}
	for _, sc := range scenarios {
		slowest := 0.0
		for i, name := range caseNames {
			if q := run(sc, name, warm, 0).qps; i == 0 || q < slowest {
				slowest = q
			}
		}
		rep.rate[sc.name] = roundRate(0.4 * slowest)
	}
	rep.samples, rep.fixed = map[string]map[string][]sample{}, map[string]map[string][]sample{}
	live := []*proc{tp.backend, tp.haTCP, tp.haHTTP, tp.haOut, tp.haIn}
	cpu0 := snapCPU(live...)
	for r := range s.rounds {
		for _, sc := range scenarios {
			if rep.samples[sc.name] == nil {
				rep.samples[sc.name], rep.fixed[sc.name] = map[string][]sample{}, map[string][]sample{}
			}
			rate := rep.rate[sc.name]
			// ABBA: forward in even rounds, reversed in odd ones, so a
			// steady drift in the machine's load cancels out of the ratios
			for i := range caseNames {
				name := caseNames[i]
				if r%2 == 1 {
					name = caseNames[len(caseNames)-1-i]
				}
				mx := run(sc, name, s.duration, 0)
				fx := run(sc, name, s.duration, rate)
				rep.samples[sc.name][name] = append(rep.samples[sc.name][name], mx)
				rep.fixed[sc.name][name] = append(rep.fixed[sc.name][name], fx)
				b.Logf("round %d, %s, %-10s max %6.0f req/s (p99 %s µs, %d SYN retransmits); at %d req/s: p50 %s p99 %s µs (%d SYN retransmits)",
					r+1, sc.name, name, mx.qps, us(mx.p99), mx.synRetrans, rate, us(fx.p50), us(fx.p99), fx.synRetrans)
			}
		}
	}
	rep.otherCPU, rep.stealCPU = others(cpu0, snapCPU(live...))
	measureHookCost(b, s, rep, tp.dopts.BPFFSPath, run)
	if p := tp.backend; p.exited() {
		b.Fatalf("backend exited: %v\n%s", p.err, p.out)
	}
	// every connection the client opened to the VIP went through the rewrite
	if n := tp.redirected(b) - redirected0; n != kmeshSockets {
		b.Errorf("kmesh: fortio opened %d connections to the VIP, the daemon counted %d redirects", kmeshSockets, n)
	}
	rep.reportLoad(b)
}

// reportLoad reports the headline ratios as benchmark metrics.
func (rep *report) reportLoad(b *testing.B) {
	for _, sc := range scenarios {
		tag := "newconn"
		if sc.keepalive {
			tag = "keepalive"
		}
		mx, fx := rep.samples[sc.name], rep.fixed[sc.name]
		b.ReportMetric(medianRatio(mx[caseKmesh], mx[caseDirect], qpsOf), tag+"-kmesh/direct-rps")
		b.ReportMetric(medianRatio(fx[caseKmesh], fx[caseDirect], p99Of), tag+"-kmesh/direct-p99")
		b.ReportMetric(medianRatio(fx[caseProxyTCP], fx[caseKmesh], p99Of), tag+"-proxytcp/kmesh-p99")
		b.ReportMetric(medianRatio(fx[caseKmesh], fx[caseDirect], cpuOf), tag+"-kmesh/direct-cpu")
	}
}

// roundRate rounds q down to two significant digits (at least 100).
func roundRate(q float64) int {
	p := 1
	for q/float64(p) >= 100 {
		p *= 10
	}
	return max(100, int(q)/p*p)
}

// fortioResult is the part of fortio's JSON output the benchmark reads.
type fortioResult struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Avg         float64
		Percentiles []struct{ Percentile, Value float64 }
	}
	RetCodes    map[string]int64
	SocketCount int64
}

// load runs fortio in the client namespace with conc connections for d, at
// qps requests/s in total (0: as fast as it can; else spread evenly over
// the connections, -uniform). Bounded: the process is killed by PID past d+30s.
// The histogram resolution is 10µs: its buckets are ≤ 20% wide from 50µs
// to 10ms.
func (tp *topo) load(b *testing.B, url string, keepalive bool, conc, qps int, d time.Duration) (sample, error) {
	out := filepath.Join(b.TempDir(), "fortio.json")
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	args := tp.exec(tp.client, tp.tools.fortio, "load",
		"-quiet", "-c", strconv.Itoa(conc), "-t", d.String(), "-qps", strconv.Itoa(qps), "-r", "0.00001", "-p", "50,90,99",
		"-keepalive="+strconv.FormatBool(keepalive), "-timeout", "3s", "-json", out)
	if qps > 0 {
		args = append(args, "-uniform")
	}
	args = append(args, url)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	buf := &capBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Run(); err != nil {
		return sample{}, fmt.Errorf("fortio load %s: %w\n%s", url, err, buf)
	}
	clientCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	data, err := os.ReadFile(out)
	if err != nil {
		return sample{}, err
	}
	var fr fortioResult
	if err := json.Unmarshal(data, &fr); err != nil {
		return sample{}, fmt.Errorf("parse fortio output: %w", err)
	}
	h := fr.DurationHistogram
	sm := sample{qps: fr.ActualQPS, avg: h.Avg, count: h.Count, ok: fr.RetCodes["200"], sockets: fr.SocketCount, clientCPU: clientCPU}
	for _, p := range h.Percentiles {
		switch p.Percentile {
		case 50:
			sm.p50 = p.Value
		case 90:
			sm.p90 = p.Value
		case 99:
			sm.p99 = p.Value
		}
	}
	if sm.p99 == 0 {
		return sm, fmt.Errorf("fortio output has no p99:\n%s", buf)
	}
	return sm, nil
}
