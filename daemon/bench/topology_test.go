package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon"
	"kmesh.dev/kmesh/daemon/config/configtest"
	"kmesh.dev/kmesh/daemon/internal/testnet"
	"kmesh.dev/kmesh/daemon/maps"
)

// Addresses exist only inside the benchmark's namespaces. The VIP is routable
// nowhere: only kmesh's connect() rewrite reaches the backend through it.
const (
	clientCIDR  = "10.203.0.1/24"
	backendCIDR = "10.203.0.2/24"
	backendAddr = "10.203.0.2:8080"
	vipAddr     = "10.96.203.10:80"
	proxyTCP    = "127.0.0.1:15001" // haproxy, mode tcp, in the client namespace
	proxyHTTP   = "127.0.0.1:15002" // haproxy, mode http
	// The sidecar mesh path: the client pod's sidecar (haproxy, mode http,
	// in the client namespace) to the backend pod's inbound sidecar (haproxy,
	// mode http, in the backend namespace), as Istio puts one in every pod.
	proxySidecars = "127.0.0.1:15003"
	serverSidecar = "10.203.0.2:15006"
	// The sidecars listen on ports the capture redirects to.
	inboundPort = "15006"
	svcName     = "bench"
)

// topo is the benchmark topology: client netns -- veth -- backend netns, a
// fortio server in the backend, two haproxy instances in the client and the
// kmesh daemon (in-process) whose programs act on the client once enrolled.
type topo struct {
	tools          tools
	client, server *testnet.Netns
	backend        *proc
	haTCP, haHTTP  *proc
	// haOut and haIn are the two sidecars of the sidecars case.
	haOut, haIn *proc
	dopts       daemon.Options
	dlog        *capBuffer
	nice        int
}

// exec returns the command line running args in ns (ip netns exec, which
// execs args: the child's PID is the tool's), under nice when set.
func (tp *topo) exec(ns *testnet.Netns, args ...string) []string {
	cmd := append([]string{"ip", "netns", "exec", ns.Name}, args...)
	if tp.nice != 0 {
		cmd = append([]string{"nice", "-n", fmt.Sprint(tp.nice)}, cmd...)
	}
	return cmd
}

func newTopo(b *testing.B, tl tools, nice int) *topo {
	b.Helper()
	id := "kb" + testnet.ID(b)
	tp := &topo{tools: tl, nice: nice}
	tp.client = testnet.NewNetns(b, id+"-c")
	tp.server = testnet.NewNetns(b, id+"-s")
	tp.client.IP(b, "link", "add", "bc", "type", "veth", "peer", "name", "bs", "netns", tp.server.Name)
	tp.client.IP(b, "addr", "add", clientCIDR, "dev", "bc")
	tp.client.IP(b, "link", "set", "bc", "up")
	tp.server.IP(b, "addr", "add", backendCIDR, "dev", "bs")
	tp.server.IP(b, "link", "set", "bs", "up")
	// Connection-per-request runs open tens of thousands of connections:
	// let the client namespace reuse TIME_WAIT ports (these sysctls are
	// per namespace; the host's are untouched).
	for _, ns := range []*testnet.Netns{tp.client, tp.server} {
		sysctl(b, ns, "net/ipv4/tcp_tw_reuse", "1")
		sysctl(b, ns, "net/ipv4/ip_local_port_range", "1024 65000")
	}

	tp.backend = startProc(b, "fortio server", nil, nil, tp.exec(tp.server, tl.fortio, "server",
		"-http-port", backendAddr, "-grpc-port", "disabled", "-redirect-port", "disabled",
		"-tcp-port", "disabled", "-udp-port", "disabled", "-loglevel", "Error")...)
	tp.waitListening(b, tp.client, backendAddr, tp.backend)

	dir := b.TempDir()
	tp.haTCP = tp.startHAProxy(b, dir, "tcp", tp.client, proxyTCP, backendAddr)
	tp.haHTTP = tp.startHAProxy(b, dir, "http", tp.client, proxyHTTP, backendAddr)
	tp.haIn = tp.startHAProxy(b, dir, "http", tp.server, serverSidecar, backendAddr)
	// to the backend's address: the backend pod's capture sends it to haIn
	tp.haOut = tp.startHAProxy(b, dir, "http", tp.client, proxySidecars, backendAddr)
	return tp
}

// sysctl writes a per-namespace sysctl from a thread inside ns.
func sysctl(b *testing.B, ns *testnet.Netns, key, val string) {
	b.Helper()
	p := filepath.Join("/proc/sys", key)
	err := ns.Do(func() error {
		if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
			return err
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Join(strings.Fields(string(got)), " ") != val {
			return fmt.Errorf("reads back %q", got)
		}
		return nil
	})
	if err != nil {
		b.Fatalf("sysctl %s=%s in %s: %v", key, val, ns.Name, err)
	}
}

const haproxyConfig = `global
    maxconn 4000
defaults
    mode %[1]s
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend fe
    bind %[2]s
    default_backend be
backend be
    server backend %[3]s
`

// startHAProxy runs haproxy in the foreground (-db) in ns, listening on addr
// and forwarding to target; nbthread defaults to the CPU count, like a
// sidecar with concurrency = cores. In http mode it pools and reuses server
// connections (haproxy's default http-reuse safe), as a sidecar does.
func (tp *topo) startHAProxy(b *testing.B, dir, mode string, ns *testnet.Netns, addr, target string) *proc {
	b.Helper()
	name := strings.NewReplacer(":", "_", ".", "_").Replace(mode + "-" + addr)
	cfg := filepath.Join(dir, "haproxy-"+name+".cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(haproxyConfig, mode, addr, target)), 0o644); err != nil {
		b.Fatal(err)
	}
	p := startProc(b, "haproxy "+mode+" "+addr, nil, nil, tp.exec(ns, tp.tools.haproxy, "-db", "-f", cfg)...)
	tp.waitListening(b, ns, addr, p)
	return p
}

// waitListening waits until addr accepts connections from ns.
func (tp *topo) waitListening(b *testing.B, ns *testnet.Netns, addr string, p *proc) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := ns.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if p.exited() {
			b.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out)
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not listening on %s after 10s: %v\n%s", p.name, addr, err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDaemon runs the real daemon in-process on a config naming the VIP and
// the backend, with private bpffs and cgroup2 mount points; it is stopped
// and uninstalled at cleanup. No namespace is enrolled yet.
func (tp *topo) startDaemon(b *testing.B) {
	b.Helper()
	base := b.TempDir()
	cfg := filepath.Join(base, "kmesh.yaml")
	writeFileAtomic(b, cfg, configtest.Config{
		Services: []configtest.Service{{Name: svcName, VIP: vipAddr, Clusters: []configtest.WeightedCluster{{Name: svcName}}}},
		Clusters: []configtest.Cluster{{Name: svcName, Endpoints: []string{backendAddr}}},
	}.YAML())
	tp.dlog = &capBuffer{max: 1 << 20}
	log := logrus.New()
	log.SetOutput(tp.dlog)
	tp.dopts = daemon.Options{Mode: "compat", ConfigPath: cfg, BPFDir: objects(b),
		BPFFSPath: filepath.Join(base, "bpffs"), Cgroup2Path: filepath.Join(base, "cgroup2"),
		AdminAddr: freeAddr(b), MetricsAddr: freeAddr(b), Log: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, tp.dopts) }()
	b.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("daemon returned %v", err)
			}
		case <-time.After(10 * time.Second):
			b.Error("daemon did not stop within 10s")
		}
		if err := daemon.Uninstall(tp.dopts); err != nil {
			b.Errorf("uninstall: %v", err)
		}
	})
	exited := func() error {
		select {
		case err := <-done:
			done <- err // for the cleanup
			return fmt.Errorf("daemon exited before ready: %v", err)
		default:
			return nil
		}
	}
	if err := waitReady(tp.dopts.AdminAddr, 20*time.Second, exited); err != nil {
		b.Fatalf("in-process daemon: %v\n%s", err, tp.dlog)
	}
}

// waitReady polls /ready until 200; exited reports an early exit.
func waitReady(admin string, timeout time.Duration, exited func() error) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := exited(); err != nil {
			return err
		}
		if code, _, _ := httpDo(http.MethodGet, "http://"+admin+"/ready"); code == http.StatusOK {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s", timeout)
}

// setEnrolled enrolls or releases the client namespace through the admin API.
func (tp *topo) setEnrolled(b *testing.B, on bool) { tp.enroll(b, tp.client.Name, on) }

// setServerEnrolled enrolls or releases the backend's namespace: with both
// ends enrolled, their connections are accelerated (same-node).
func (tp *topo) setServerEnrolled(b *testing.B, on bool) { tp.enroll(b, tp.server.Name, on) }

func (tp *topo) enroll(b *testing.B, netns string, on bool) {
	b.Helper()
	path := "/unenroll"
	if on {
		path = "/enroll"
	}
	if code, body, err := httpDo(http.MethodPost, "http://"+tp.dopts.AdminAddr+path+"?netns="+netns); code != http.StatusOK {
		b.Fatalf("POST %s: %d %s %v", path, code, body, err)
	}
}

// accelStats reads same-node acceleration's counters from /status.
func (tp *topo) accelStats(b *testing.B) maps.AccelStats {
	b.Helper()
	_, body, err := httpDo(http.MethodGet, "http://"+tp.dopts.AdminAddr+"/status")
	if err != nil {
		b.Fatal(err)
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		b.Fatalf("/status: %v", err)
	}
	if !st.SameNodeAccel.Enabled || st.SameNodeAccel.Stats == nil {
		b.Fatalf("same-node acceleration is off on this kernel (%s): the kmesh-accel case cannot run", st.SameNodeAccel.Note)
	}
	return *st.SameNodeAccel.Stats
}

// checkAccel proves what the kmesh-accel case measures: with both
// namespaces enrolled an HTTP request to the VIP is redirected socket to
// socket both ways; with only the client enrolled (the kmesh case) nothing
// is redirected.
func (tp *topo) checkAccel(b *testing.B) {
	b.Helper()
	tp.setEnrolled(b, true)
	defer tp.setEnrolled(b, false)
	// one request first, both enrolled (enrolment records the addresses;
	// this is a warm-up of the accelerated path)
	tp.setServerEnrolled(b, true)
	if st, err := tp.get(vipAddr); err != nil || !strings.Contains(st, " 200 ") {
		b.Fatalf("GET via the VIP: %q %v", st, err)
	}
	for _, both := range []bool{true, false} {
		tp.setServerEnrolled(b, both)
		before := tp.accelStats(b)
		if st, err := tp.get(vipAddr); err != nil || !strings.Contains(st, " 200 ") {
			b.Fatalf("GET via the VIP (backend enrolled: %v): %q %v", both, st, err)
		}
		d := tp.accelStats(b)
		sockets, redirected, notLocal := d.Sockets-before.Sockets, d.Redirected-before.Redirected, d.NotLocal-before.NotLocal
		switch {
		case both && (sockets != 2 || redirected < 2):
			b.Fatalf("both ends enrolled: %d sockets accelerated, %d sends redirected; want 2 and the request and response", sockets, redirected)
		case !both && (sockets != 0 || notLocal != 1 || redirected != 0):
			b.Fatalf("client only: %d sockets accelerated (%d not local), %d sends redirected; want 0 (1) and 0: the kmesh case must not run sk_msg", sockets, notLocal, redirected)
		}
	}
	tp.setServerEnrolled(b, false)
}

// redirected reads the daemon's connection counter for the benchmark service.
func (tp *topo) redirected(b *testing.B) int64 {
	b.Helper()
	_, body, err := httpDo(http.MethodGet, "http://"+tp.dopts.MetricsAddr+"/metrics")
	if err != nil {
		b.Fatal(err)
	}
	series := fmt.Sprintf(`kmesh_service_connections_redirected_total{service=%q,vip=%q} `, svcName, vipAddr)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			var f float64
			fmt.Sscanf(v, "%g", &f)
			return int64(f)
		}
	}
	b.Fatalf("no %s in /metrics", series)
	return 0
}

// get sends one HTTP/1.0 GET from the client namespace to addr and returns
// the status line.
func (tp *topo) get(addr string) (string, error) {
	c, err := tp.client.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "GET /echo HTTP/1.0\r\nHost: bench\r\n\r\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// captureRule is one iptables nat REDIRECT of a sidecar's traffic capture.
type captureRule struct {
	ns    *testnet.Netns
	chain string // OUTPUT: the pod's outbound connections; PREROUTING: inbound
	dst   string // host:port captured
	to    string // the sidecar's port
	// routeDev, for an OUTPUT capture, routes dst's host through this
	// device while the capture is in place: connect() needs a route before
	// netfilter sees the packet (a pod has its default route; the VIP is
	// otherwise routable nowhere here, and the packets never leave these
	// namespaces: the redirect sends them to the sidecar on 127.0.0.1).
	routeDev string
}

// captures are the proxy cases' traffic captures, as Istio's sidecar
// injection sets them up (istio-iptables): the application connects to the
// service VIP and the kernel redirects the connection to the pod's sidecar;
// in sidecars-http the backend pod's inbound connections go to its own
// sidecar too. They are in place only during the case's runs.
func (tp *topo) captures() map[string][]captureRule {
	port := func(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }
	out := func(proxy string) captureRule {
		return captureRule{tp.client, "OUTPUT", vipAddr, port(proxy), "bc"}
	}
	return map[string][]captureRule{
		caseProxyTCP:  {out(proxyTCP)},
		caseProxyHTTP: {out(proxyHTTP)},
		caseSidecars:  {out(proxySidecars), {tp.server, "PREROUTING", backendAddr, inboundPort, ""}},
	}
}

// capture installs rules and returns the function that removes them.
func (tp *topo) capture(b *testing.B, rules []captureRule) func() {
	b.Helper()
	args := func(op string, r captureRule) []string {
		host, p, _ := strings.Cut(r.dst, ":")
		return []string{"ip", "netns", "exec", r.ns.Name, tp.tools.iptables, "-w", "-t", "nat", op, r.chain,
			"-p", "tcp", "-d", host, "--dport", p, "-j", "REDIRECT", "--to-ports", r.to}
	}
	route := func(op string, r captureRule) []string {
		host, _, _ := strings.Cut(r.dst, ":")
		return []string{"ip", "-n", r.ns.Name, "route", op, host + "/32", "dev", r.routeDev}
	}
	run := func(cmd []string) error {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v %s", strings.Join(cmd, " "), err, out)
		}
		return nil
	}
	for _, r := range rules {
		if r.routeDev != "" {
			if err := run(route("replace", r)); err != nil {
				b.Fatal(err)
			}
		}
		if err := run(args("-A", r)); err != nil {
			b.Fatalf("capture %s in %s: %v", r.dst, r.ns.Name, err)
		}
	}
	return func() {
		for _, r := range rules {
			if err := run(args("-D", r)); err != nil {
				b.Errorf("remove capture of %s in %s: %v", r.dst, r.ns.Name, err)
			}
			if r.routeDev != "" {
				if err := run(route("del", r)); err != nil {
					b.Error(err)
				}
			}
		}
	}
}

// checkPaths asserts each path works, and that the VIP does not work without
// kmesh or a sidecar's capture (it must only ever be rewritten or
// redirected, never routed).
func (tp *topo) checkPaths(b *testing.B) {
	b.Helper()
	tp.setEnrolled(b, false)
	if c, err := tp.client.Dial("tcp", vipAddr); err == nil {
		c.Close()
		b.Fatalf("the VIP %s is reachable from the client namespace without kmesh", vipAddr)
	}
	if st, err := tp.get(backendAddr); err != nil || !strings.Contains(st, " 200 ") {
		b.Fatalf("GET via %s: %q %v", backendAddr, st, err)
	}
	for name, rules := range tp.captures() {
		undo := tp.capture(b, rules)
		st, err := tp.get(vipAddr)
		undo()
		if err != nil || !strings.Contains(st, " 200 ") {
			b.Fatalf("GET via the VIP through %s's capture: %q %v", name, st, err)
		}
	}
	tp.setEnrolled(b, true)
	before := tp.redirected(b)
	if st, err := tp.get(vipAddr); err != nil || !strings.Contains(st, " 200 ") {
		b.Fatalf("GET via the VIP %s with kmesh: %q %v\n%s", vipAddr, st, err, tp.dlog)
	}
	if n := tp.redirected(b) - before; n != 1 {
		b.Fatalf("one connection to the VIP, %d redirects counted", n)
	}
	tp.setEnrolled(b, false)
}

// objects returns $KMESH_BPF_DIR when set (objects built by `make bpf`,
// out/bpf), else the objects testnet builds from bpf/ for this kernel.
func objects(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("KMESH_BPF_DIR"); dir != "" {
		if !fileExists(filepath.Join(dir, "connect.o")) {
			t.Fatalf("KMESH_BPF_DIR=%s has no connect.o (make bpf builds it into out/bpf)", dir)
		}
		return dir
	}
	return testnet.Objects(t, testnet.DefaultFeatures())
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func httpDo(method, url string) (int, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// tcpCounters reads ns's TCP counters (/proc/net/snmp and netstat, as seen
// from a thread inside ns), e.g. "TcpExt:TCPSynRetrans", "Tcp:RetransSegs".
func tcpCounters(ns *testnet.Netns) map[string]int64 {
	out := map[string]int64{}
	ns.Do(func() error {
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"} {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			lines := strings.Split(string(b), "\n")
			for i := 0; i+1 < len(lines); i += 2 {
				names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
				if len(names) != len(values) || len(names) == 0 {
					continue
				}
				for j := 1; j < len(names); j++ {
					var v int64
					fmt.Sscan(values[j], &v)
					out[names[0]+names[j]] = v
				}
			}
		}
		return nil
	})
	return out
}
