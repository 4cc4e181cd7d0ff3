package maps

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

// Endpoints served by the backend namespaces (replies are these strings).
const (
	a1   = testnet.A1
	a2   = testnet.A2
	b1   = testnet.B1
	a1v6 = testnet.A1v6
	a2v6 = testnet.A2v6
	b1v6 = testnet.B1v6

	unrewritten = testnet.Unrewritten // the non-enrolled namespace's local VIP listener
)

type topology struct {
	client, other *testnet.Netns // client is enrolled, other is not
	clientCookie  uint64
}

// newTopology builds the shared test topology (see testnet.NewTopology).
func newTopology(t *testing.T, id string) *topology {
	tp := testnet.NewTopology(t, "kmaps-"+id)
	cookie, oc := tp.Client.Cookie(t), tp.Other.Cookie(t)
	if cookie == oc || cookie == 0 {
		t.Fatalf("netns cookies %d and %d", cookie, oc)
	}
	return &topology{client: tp.Client, other: tp.Other, clientCookie: cookie}
}

type harness struct {
	t    *testing.T
	objs *Objects
	topo *topology
}

func (h *harness) cluster(id uint32, policy Policy, eps ...WeightedEndpoint) []Addr {
	h.t.Helper()
	slots, err := SlotTable(eps)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.objs.PutCluster(id, policy, slots); err != nil {
		h.t.Fatal(err)
	}
	return slots
}

func (h *harness) service(key string, id uint32, clusters ...WeightedCluster) Addr {
	h.t.Helper()
	k := MustAddr(key)
	if err := h.objs.PutService(k, Service{ID: id, Clusters: clusters}); err != nil {
		h.t.Fatal(err)
	}
	return k
}

func (h *harness) fetch(addr string, n int) []string {
	h.t.Helper()
	got, err := h.topo.client.Fetch(addr, n)
	if err != nil {
		h.t.Fatal(err)
	}
	return got
}

func (h *harness) svcStats(id uint32) Stats {
	h.t.Helper()
	s, err := h.objs.ServiceStatsOf(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) clusterStats(id uint32) Stats {
	h.t.Helper()
	s, err := h.objs.ClusterStatsOf(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) wantSvc(id uint32, want Stats) {
	h.t.Helper()
	if got := h.svcStats(id); got != want {
		h.t.Errorf("service %d counters %+v, want %+v", id, got, want)
	}
}

func (h *harness) wantCluster(id uint32, want Stats) {
	h.t.Helper()
	if got := h.clusterStats(id); got != want {
		h.t.Errorf("cluster %d counters %+v, want %+v", id, got, want)
	}
}

// wantUnreachable connects to addr from ns and expects ENETUNREACH: the
// VIP was not rewritten (it has no route there).
func wantUnreachable(t *testing.T, ns *testnet.Netns, network, addr string) {
	t.Helper()
	start := time.Now()
	c, err := ns.Dial(network, addr)
	if err == nil && network == "tcp" {
		c.Close()
		t.Fatalf("%s %s from %s connected (rewritten?)", network, addr, ns.Name)
	}
	if network == "udp" {
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, syscall.ENETUNREACH) {
			t.Fatalf("udp connect %s: %v, want ENETUNREACH (left untouched)", addr, err)
		}
		return
	}
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("%s %s: %v, want ENETUNREACH (left untouched)", network, addr, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("unreachable connect took %s", d)
	}
}

// wantRefused connects to addr from ns and expects EPERM at once: the
// program refused a matched service with no endpoint to pick.
func wantRefused(t *testing.T, ns *testnet.Netns, addr string) {
	t.Helper()
	start := time.Now()
	c, err := ns.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("tcp %s from %s connected, want EPERM (refused)", addr, ns.Name)
	}
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("tcp %s: %v, want EPERM (refused)", addr, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refused connect took %s", d)
	}
}

// sock is a raw TCP socket of a namespace, for what net.Dial does not do: an
// AF_INET6 socket connecting to an IPv4-mapped address (Go dials those from
// AF_INET sockets), and several connect() calls on one socket.
type sock struct {
	t      *testing.T
	fd     int
	family int
}

// sockTimeout bounds a read or a connect (blocking or polled). No check
// waits for it to pass: the outcomes asserted (a reply, ECONNREFUSED, EPERM,
// ENETUNREACH) come at once; it is generous because the tests also run in
// QEMU guests under TCG, three at once on two host CPUs, where a guest can
// stall for seconds.
const sockTimeout = 10 * time.Second

// newSock creates a TCP socket in ns. An AF_INET6 socket is dual-stack (not
// IPV6_V6ONLY), as Java's are. Reads and blocking connects time out after
// sockTimeout.
func newSock(t *testing.T, ns *testnet.Netns, family int, nonblock bool) *sock {
	t.Helper()
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	s := &sock{t: t, fd: -1, family: family}
	if err := ns.Do(func() (err error) {
		s.fd, err = unix.Socket(family, typ, 0)
		return err
	}); err != nil {
		t.Fatalf("socket in %s: %v", ns.Name, err)
	}
	t.Cleanup(s.close)
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			t.Fatal(err)
		}
	}
	setSockTimeouts(t, s.fd)
	return s
}

// setSockTimeouts sets SO_RCVTIMEO and SO_SNDTIMEO to sockTimeout.
func setSockTimeouts(t *testing.T, fd int) {
	t.Helper()
	tv := unix.NsecToTimeval(sockTimeout.Nanoseconds())
	for _, o := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, o, &tv); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *sock) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// connect connects to dst (IPv4-mapped on an AF_INET6 socket) and returns
// the outcome; a non-blocking socket waits for it (poll, SO_ERROR).
func (s *sock) connect(dst netip.AddrPort) error {
	var sa unix.Sockaddr
	if s.family == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	}
	err := unix.Connect(s.fd, sa)
	if errors.Is(err, unix.EINTR) {
		// A blocking connect on a socket with SO_SNDTIMEO is not restarted
		// after a signal handler (signal(7)), and the Go runtime signals
		// threads to preempt goroutines: the handshake goes on, as for a
		// non-blocking connect.
		err = unix.EINPROGRESS
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}
	ms := int(sockTimeout.Milliseconds())
	n, err := unix.Poll(pfd, ms)
	for errors.Is(err, unix.EINTR) { // poll is not restarted after a signal
		n, err = unix.Poll(pfd, ms)
	}
	if err != nil || n != 1 {
		return errors.Join(fmt.Errorf("connect did not complete in %v", sockTimeout), err)
	}
	soerr, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return syscall.Errno(soerr)
	}
	return nil
}

// peer is the connected socket's peer address (IPv4-mapped ones unmapped).
func (s *sock) peer() netip.AddrPort {
	s.t.Helper()
	sa, err := unix.Getpeername(s.fd)
	if err != nil {
		s.t.Fatal(err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	s.t.Fatalf("peer address %T", sa)
	return netip.AddrPort{}
}

// readLine reads the server's one-line reply (blocking socket).
func (s *sock) readLine() string {
	s.t.Helper()
	var out []byte
	buf := make([]byte, 128)
	for !strings.Contains(string(out), "\n") {
		n, err := unix.Read(s.fd, buf)
		if errors.Is(err, unix.EINTR) { // not restarted with SO_RCVTIMEO (see connect)
			continue
		}
		if err != nil || n == 0 {
			s.t.Fatalf("read reply: %q, %v", out, err)
		}
		out = append(out, buf[:n]...)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// TestSockReadRetriesEINTR: a read on a socket with SO_RCVTIMEO is not
// restarted after a signal handler, and the Go runtime signals threads to
// preempt goroutines (SIGURG); readLine must read on. (It failed
// TestDatapath once in a QEMU guest: "read reply: interrupted system
// call".) The reading thread gets a SIGURG every millisecond while the
// reply is 300 ms away.
func TestSockReadRetriesEINTR(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		time.Sleep(300 * time.Millisecond)
		c.Write([]byte("hello\n"))
	}()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &sock{t: t, fd: fd, family: unix.AF_INET}
	defer s.close()
	setSockTimeouts(t, fd)
	if err := s.connect(netip.MustParseAddrPort(ln.Addr().String())); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if unix.Tgkill(unix.Getpid(), tid, unix.SIGURG) == nil {
				sent.Add(1)
			}
		}
	}()
	got := s.readLine()
	close(stop)
	<-done
	if got != "hello" {
		t.Fatalf("read %q, want hello", got)
	}
	if n := sent.Load(); n < 20 {
		t.Fatalf("only %d signals reached the reading thread; the test proves nothing", n)
	}
}

// fetchSock connects a fresh socket of family to dst from ns and returns
// the reply and the peer address.
func fetchSock(t *testing.T, ns *testnet.Netns, family int, dst string) (string, netip.AddrPort) {
	t.Helper()
	s := newSock(t, ns, family, false)
	defer s.close()
	if err := s.connect(netip.MustParseAddrPort(dst)); err != nil {
		t.Fatalf("connect to %s (family %d): %v", dst, family, err)
	}
	return s.readLine(), s.peer()
}

// binomPMF is P(X = k) for X ~ Binomial(n, p).
func binomPMF(n, k int, p float64) float64 {
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x) + 1); return v }
	return math.Exp(lg(n) - lg(k) - lg(n-k) + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
}

// binomBounds returns the narrowest [lo, hi] whose two tails under
// Binomial(n, p) each hold at most alpha/2 (exact, no normal approximation):
// a correct implementation falls outside with probability at most alpha.
func binomBounds(n int, p, alpha float64) (lo, hi int) {
	for tail := 0.0; lo < n && tail+binomPMF(n, lo, p) <= alpha/2; lo++ {
		tail += binomPMF(n, lo, p)
	}
	hi = n
	for tail := 0.0; hi > 0 && tail+binomPMF(n, hi, p) <= alpha/2; hi-- {
		tail += binomPMF(n, hi, p)
	}
	return lo, hi
}

// binomIn is P(lo <= X <= hi) for X ~ Binomial(n, p).
func binomIn(n int, p float64, lo, hi int) float64 {
	sum := 0.0
	for k := lo; k <= hi; k++ {
		sum += binomPMF(n, k, p)
	}
	return sum
}

// wantBinomial checks k successes of n trials against probability p with
// exact bounds that a correct implementation misses with probability < 1e-6.
func wantBinomial(t *testing.T, what string, k, n int, p float64) {
	t.Helper()
	lo, hi := binomBounds(n, p, 1e-6)
	if k < lo || k > hi {
		t.Errorf("%s: %d of %d, want [%d, %d] (p = %g, false failure < 1e-6)", what, k, n, lo, hi, p)
	} else {
		t.Logf("%s: %d of %d (expected %.1f, bounds [%d, %d])", what, k, n, float64(n)*p, lo, hi)
	}
}

func addrStrings(slots []Addr) []string {
	s := make([]string, len(slots))
	for i, a := range slots {
		s[i] = a.String()
	}
	return s
}

// wantCycle checks got is slots repeated from slot 0 (exact round robin).
func wantCycle(t *testing.T, got []string, slots []Addr) {
	t.Helper()
	want := addrStrings(slots)
	for i, g := range got {
		if g != want[i%len(want)] {
			t.Fatalf("connection %d went to %s, round robin expects %s\n got %v\nslots %v", i, g, want[i%len(want)], got, want)
		}
	}
}

func ep(s string, w uint32) WeightedEndpoint {
	return WeightedEndpoint{Addr: netip.MustParseAddrPort(s), Weight: w}
}

// TestDatapath attaches the real programs (both feature variants) to a
// child cgroup holding this process and drives TCP connections from an
// enrolled client namespace to VIPs that exist nowhere.
func TestDatapath(t *testing.T) {
	testnet.RequireRoot(t)
	id := testnet.ID(t)
	topo := newTopology(t, id)
	cg := testnet.NewCgroup(t, "kmaps-"+id)

	for _, v := range []variant{{skStorage: true}, {skStorage: false}} {
		t.Run(v.String(), func(t *testing.T) {
			objs, err := Open(objDir(t, v), OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { objs.Close() })
			if objs.TracksOrigDst() != v.skStorage {
				t.Fatalf("TracksOrigDst = %v", objs.TracksOrigDst())
			}
			if links := attachForTest(t, objs, cg.Path); len(links) != 2 {
				t.Fatalf("%d links, want connect4 and connect6", len(links))
			}
			if err := objs.Enroll(topo.clientCookie); err != nil {
				t.Fatal(err)
			}
			runDatapathCases(t, &harness{t: t, objs: objs, topo: topo}, v)
		})
	}
}

func runDatapathCases(t *testing.T, base *harness, v variant) {
	sub := func(name string, fn func(h *harness)) {
		t.Run(name, func(t *testing.T) {
			fn(&harness{t: t, objs: base.objs, topo: base.topo})
		})
	}

	sub("round_robin_exact", func(h *harness) {
		slots := h.cluster(1, PolicyRoundRobin, ep(a1, 1), ep(a2, 1), ep(b1, 1))
		h.service("10.96.0.10:80", 1, WeightedCluster{ClusterID: 1})
		got := h.fetch("10.96.0.10:80", 30)
		wantCycle(h.t, got, slots)
		h.wantSvc(1, Stats{Redirected: 30})
		h.wantCluster(1, Stats{Redirected: 30})

		// One cursor for all CPUs: concurrent connects still split exactly.
		const workers, each = 4, 150
		results := make(chan []string, workers)
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			go func() {
				got, err := h.topo.client.Fetch("10.96.0.10:80", each)
				results <- got
				errs <- err
			}()
		}
		all := map[string]int{}
		for w := 0; w < workers; w++ {
			if err := <-errs; err != nil {
				h.t.Fatal(err)
			}
			for k, n := range testnet.Tally(<-results) {
				all[k] += n
			}
		}
		for _, e := range []string{a1, a2, b1} {
			if all[e] != workers*each/3 {
				h.t.Errorf("concurrent round robin: %v, want %d each", all, workers*each/3)
				break
			}
		}
		h.wantCluster(1, Stats{Redirected: 30 + workers*each})
	})

	sub("round_robin_weighted_3to1", func(h *harness) {
		slots := h.cluster(2, PolicyRoundRobin, ep(a1, 3), ep(b1, 1))
		if !slices.Equal(addrStrings(slots), []string{a1, a1, b1, a1}) {
			h.t.Fatalf("slot table %v", slots)
		}
		h.service("10.96.0.11:80", 2, WeightedCluster{ClusterID: 2})
		got := h.fetch("10.96.0.11:80", 400)
		wantCycle(h.t, got, slots)
		if c := testnet.Tally(got); c[a1] != 300 || c[b1] != 100 {
			h.t.Errorf("3:1 round robin gave %v", c)
		}
		h.wantCluster(2, Stats{Redirected: 400})
	})

	sub("random_uniform", func(h *harness) {
		h.cluster(3, PolicyRandom, ep(a1, 1), ep(a2, 1), ep(b1, 1))
		h.service("10.96.0.12:80", 3, WeightedCluster{ClusterID: 3})
		const n = 1200
		got := h.fetch("10.96.0.12:80", n)
		c := testnet.Tally(got)
		for _, e := range []string{a1, a2, b1} {
			testnet.Within5Sigma(h.t, "random "+e, c[e], n, 1.0/3)
		}
		// The counts alone would pass with round robin. For independent
		// uniform picks over 3 slots the step from one pick to the next is
		// uniform and independent of the past, so the number of repeats (the
		// same backend twice in a row) is Binomial(1199, 1/3): expected 400,
		// bounds [321, 481] miss it with probability < 1e-6 (7.8e-7 exact).
		// Round robin (the strict slot cycle) never repeats, and one that
		// alternates picks or sticks to one backend lands far outside too.
		repeats := 0
		for i := 1; i < n; i++ {
			if got[i] == got[i-1] {
				repeats++
			}
		}
		wantBinomial(h.t, "random repeats in a row", repeats, n-1, 1.0/3)
		h.wantSvc(3, Stats{Redirected: n})
	})

	sub("random_weighted_3to1", func(h *harness) {
		h.cluster(4, PolicyRandom, ep(a1, 3), ep(b1, 1))
		h.service("10.96.0.13:80", 4, WeightedCluster{ClusterID: 4})
		const n = 1000
		c := testnet.Tally(h.fetch("10.96.0.13:80", n))
		testnet.Within5Sigma(h.t, "random weight 3 of 3:1", c[a1], n, 0.75)
		if c[a1]+c[b1] != n {
			h.t.Errorf("replies %v", c)
		}
	})

	sub("weighted_clusters_90_10", func(h *harness) {
		h.cluster(5, PolicyRoundRobin, ep(a1, 1), ep(a2, 1))
		h.cluster(6, PolicyRoundRobin, ep(b1, 1))
		h.service("10.96.0.14:80", 5, WeightedCluster{5, 90}, WeightedCluster{6, 10})
		// n = 4000: the weight-10 cluster gets Binomial(4000, 0.1) connections,
		// expected 400; exact bounds [310, 496] miss a correct 90/10 split with
		// probability 8.1e-7 (< 1e-6), while an 85/15 split (expected 600)
		// lands inside with probability 1.3e-6, so it fails almost surely.
		const n = 4000
		lo, hi := binomBounds(n, 0.10, 1e-6)
		if weak := binomIn(n, 0.15, lo, hi); weak > 1e-5 {
			h.t.Fatalf("bounds [%d, %d] accept an 85/15 split with probability %g", lo, hi, weak)
		}
		c := testnet.Tally(h.fetch("10.96.0.14:80", n))
		wantBinomial(h.t, "cluster weight 10 of 90/10", c[b1], n, 0.10)
		// Within the 90% cluster, round robin stays exact.
		if d := c[a1] - c[a2]; d < 0 || d > 1 {
			h.t.Errorf("round robin inside the 90%% cluster: %v", c)
		}
		h.wantSvc(5, Stats{Redirected: n})
		h.wantCluster(5, Stats{Redirected: uint64(c[a1] + c[a2])})
		h.wantCluster(6, Stats{Redirected: uint64(c[b1])})
	})

	sub("ipv6", func(h *harness) {
		slots := h.cluster(7, PolicyRoundRobin, ep(a1v6, 1), ep(a2v6, 1), ep(b1v6, 1))
		h.service("[fd00:96::10]:80", 6, WeightedCluster{ClusterID: 7})
		wantCycle(h.t, h.fetch("[fd00:96::10]:80", 30), slots)
		h.wantSvc(6, Stats{Redirected: 30})

		h.cluster(8, PolicyRandom, ep(a1v6, 3), ep(b1v6, 1))
		h.service("[fd00:96::11]:80", 7, WeightedCluster{ClusterID: 8})
		c := testnet.Tally(h.fetch("[fd00:96::11]:80", 600))
		testnet.Within5Sigma(h.t, "IPv6 random weight 3 of 3:1", c[a1v6], 600, 0.75)

		h.cluster(9, PolicyRoundRobin, ep(b1v6, 1))
		h.cluster(15, PolicyRoundRobin, ep(a1v6, 1), ep(a2v6, 1))
		h.service("[fd00:96::12]:80", 8, WeightedCluster{15, 90}, WeightedCluster{9, 10})
		c = testnet.Tally(h.fetch("[fd00:96::12]:80", 1000))
		testnet.Within5Sigma(h.t, "IPv6 cluster weight 10 of 90/10", c[b1v6], 1000, 0.10)
		h.wantCluster(9, Stats{Redirected: uint64(c[b1v6])})
		h.wantCluster(15, Stats{Redirected: uint64(c[a1v6] + c[a2v6])})
		h.wantSvc(8, Stats{Redirected: 1000})
		// The IPv4 VIP does not match the IPv6 entry and vice versa.
		wantUnreachable(h.t, h.topo.client, "tcp", "[fd00:96::13]:80")
	})

	sub("wildcard", func(h *harness) {
		h.cluster(10, PolicyRoundRobin, ep(b1, 1))
		h.cluster(11, PolicyRoundRobin, ep(a1, 1))
		h.cluster(12, PolicyRoundRobin, ep(b1v6, 1))
		if err := h.objs.PutService(WildcardAddr(FamilyIPv4, 9090), Service{ID: 9, Clusters: []WeightedCluster{{ClusterID: 10}}}); err != nil {
			h.t.Fatal(err)
		}
		if err := h.objs.PutService(WildcardAddr(FamilyIPv6, 9090), Service{ID: 10, Clusters: []WeightedCluster{{ClusterID: 12}}}); err != nil {
			h.t.Fatal(err)
		}
		h.service("10.96.0.10:9090", 11, WeightedCluster{ClusterID: 11})
		if got := h.fetch("10.97.5.5:9090", 3); !slices.Equal(got, []string{b1, b1, b1}) {
			h.t.Errorf("wildcard v4: %v", got)
		}
		if got := h.fetch("10.96.0.10:9090", 2); !slices.Equal(got, []string{a1, a1}) {
			h.t.Errorf("exact entry must win over the wildcard: %v", got)
		}
		if got := h.fetch("[fd00:97::5]:9090", 2); !slices.Equal(got, []string{b1v6, b1v6}) {
			h.t.Errorf("wildcard v6: %v", got)
		}
		wantUnreachable(h.t, h.topo.client, "tcp", "10.97.5.5:9091")
		h.wantSvc(9, Stats{Redirected: 3})
		h.wantSvc(10, Stats{Redirected: 2})
		h.wantSvc(11, Stats{Redirected: 2})
	})

	sub("orig_dst", func(h *harness) {
		// Service 1 / cluster 1 from round_robin_exact.
		for _, tc := range []struct {
			vip, dst     string
			svc, cluster uint32
		}{
			{"10.96.0.10:80", "10.96.0.10:80", 1, 1},
			{"[fd00:96::10]:80", "[fd00:96::10]:80", 6, 7},
		} {
			c, err := h.topo.client.Dial("tcp", tc.vip)
			if err != nil {
				h.t.Fatal(err)
			}
			peer := c.RemoteAddr().String()
			od, err := origDstOf(h.objs.Maps, c)
			c.Close()
			if strings.Contains(peer, "10.96.0.10") || strings.Contains(peer, "fd00:96::") {
				h.t.Errorf("peer address %s is the VIP: not rewritten", peer)
			}
			if !v.skStorage {
				if !errors.Is(err, ErrOrigDstNotTracked) {
					h.t.Errorf("OrigDst without sk_storage: %v, want ErrOrigDstNotTracked", err)
				}
				continue
			}
			if err != nil {
				h.t.Fatal(err)
			}
			want := OrigDst{Dst: netip.MustParseAddrPort(tc.dst), ServiceID: tc.svc, ClusterID: tc.cluster}
			if od != want {
				h.t.Errorf("OrigDst via %s = %+v, want %+v", peer, od, want)
			}
		}
		if !v.skStorage {
			return
		}
		// A socket that was never redirected has no entry.
		c, err := h.topo.client.Dial("tcp", a1)
		if err != nil {
			h.t.Fatal(err)
		}
		_, err = origDstOf(h.objs.Maps, c)
		c.Close()
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			h.t.Errorf("OrigDst of a direct connection: %v, want ErrKeyNotExist", err)
		}
	})

	sub("no_endpoint", func(h *harness) {
		// A matched service with nothing to pick refuses the connect: EPERM at
		// once, not a VIP left to run into (minutes on a node with a default
		// route).
		h.cluster(13, PolicyRoundRobin) // no endpoints
		h.service("10.96.0.20:80", 12, WeightedCluster{ClusterID: 13})
		h.service("10.96.0.21:80", 13, WeightedCluster{ClusterID: 999}) // cluster never published
		// An IPv6 endpoint for an IPv4 VIP: the wrong family.
		h.cluster(23, PolicyRoundRobin, ep(b1v6, 1))
		h.service("10.96.0.22:80", 23, WeightedCluster{ClusterID: 23})
		wantRefused(h.t, h.topo.client, "10.96.0.20:80")
		wantRefused(h.t, h.topo.client, "10.96.0.20:80")
		wantRefused(h.t, h.topo.client, "10.96.0.21:80")
		wantRefused(h.t, h.topo.client, "10.96.0.22:80")
		h.wantSvc(12, Stats{NoEndpoint: 2})
		h.wantCluster(13, Stats{NoEndpoint: 2})
		h.wantSvc(13, Stats{NoEndpoint: 1})
		h.wantCluster(999, Stats{NoEndpoint: 1})
		h.wantSvc(23, Stats{NoEndpoint: 1})
		h.wantCluster(23, Stats{NoEndpoint: 1})

		// connect6, and an IPv4-mapped destination on a dual-stack socket.
		h.cluster(29, PolicyRoundRobin)
		h.service("[fd00:96::20]:80", 29, WeightedCluster{ClusterID: 29})
		h.service("10.96.0.24:80", 30, WeightedCluster{ClusterID: 29})
		wantRefused(h.t, h.topo.client, "[fd00:96::20]:80")
		s := newSock(h.t, h.topo.client, unix.AF_INET6, false)
		if err := s.connect(netip.MustParseAddrPort("10.96.0.24:80")); !errors.Is(err, syscall.EPERM) {
			h.t.Errorf("dual-stack connect to [::ffff:10.96.0.24]:80 (empty cluster): %v, want EPERM", err)
		}
		h.wantSvc(29, Stats{NoEndpoint: 1})
		h.wantSvc(30, Stats{NoEndpoint: 1})
		h.wantCluster(29, Stats{NoEndpoint: 2})

		// A corrupt entry (user space never writes one): weights that never
		// reach total_weight, so no cluster is picked; counted for the service
		// only.
		bad := ServiceValue{ServiceID: 24, ClusterCount: 2, TotalWeight: 10}
		bad.Clusters[0] = WeightedCluster{ClusterID: 5}
		bad.Clusters[1] = WeightedCluster{ClusterID: 6}
		before5, before6 := h.clusterStats(5), h.clusterStats(6)
		if err := h.objs.services.Update(MustAddr("10.96.0.23:80"), bad, ebpf.UpdateAny); err != nil {
			h.t.Fatal(err)
		}
		wantRefused(h.t, h.topo.client, "10.96.0.23:80")
		h.wantSvc(24, Stats{NoEndpoint: 1})
		h.wantCluster(5, before5)
		h.wantCluster(6, before6)
	})

	sub("passthrough", func(h *harness) {
		// A service entry without clusters (PASSTHROUGH: a listener claims
		// the address, nothing serves it here) leaves the connect untouched,
		// also where the per-port wildcard would catch it, and counts nothing.
		// Backend A's 10.201.1.2:8002 plays the VIP: it is reachable, so
		// passthrough shows as an answer from the original address.
		h.cluster(25, PolicyRoundRobin, ep(b1, 1))
		wild := WildcardAddr(FamilyIPv4, 8002)
		if err := h.objs.PutService(wild, Service{ID: 25, Clusters: []WeightedCluster{{ClusterID: 25}}}); err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { h.objs.DeleteService(wild) })
		if got := h.fetch("10.97.5.5:8002", 1); got[0] != b1 {
			h.t.Fatalf("wildcard 0.0.0.0:8002: %v", got)
		}
		if got := h.fetch(a2, 1); got[0] != b1 {
			h.t.Fatalf("without a passthrough entry the wildcard takes %s: %v", a2, got)
		}
		key := h.service(a2, 26) // no clusters
		h.t.Cleanup(func() { h.objs.DeleteService(key) })
		if sv, err := h.objs.LookupService(key); err != nil || sv.ClusterCount != 0 || sv.TotalWeight != 0 {
			h.t.Fatalf("passthrough entry stored as %+v, %v", sv, err)
		}
		if got := h.fetch(a2, 3); !slices.Equal(got, []string{a2, a2, a2}) {
			h.t.Errorf("passthrough %s: %v, want the original destination", a2, got)
		}
		if got, _ := fetchSock(h.t, h.topo.client, unix.AF_INET6, a2); got != a2 {
			h.t.Errorf("dual-stack passthrough [::ffff:%s]: %s", a2, got)
		}
		if v.skStorage {
			c, err := h.topo.client.Dial("tcp", a2)
			if err != nil {
				h.t.Fatal(err)
			}
			_, err = origDstOf(h.objs.Maps, c)
			c.Close()
			if !errors.Is(err, ebpf.ErrKeyNotExist) {
				h.t.Errorf("OrigDst of a passthrough connection: %v, want ErrKeyNotExist", err)
			}
		}
		h.wantSvc(26, Stats{})
		h.wantSvc(25, Stats{Redirected: 2})
		h.wantCluster(25, Stats{Redirected: 2})
	})

	sub("ipv4_mapped", func(h *harness) {
		// A dual-stack AF_INET6 socket (Java's default) connecting to
		// ::ffff:10.96.0.40 is an IPv4 connect to 10.96.0.40: the IPv4
		// service, IPv4 endpoints written back IPv4-mapped.
		slots := h.cluster(20, PolicyRoundRobin, ep(a1, 1), ep(a2, 1), ep(b1, 1))
		h.service("10.96.0.40:80", 20, WeightedCluster{ClusterID: 20})
		vip := netip.MustParseAddrPort("10.96.0.40:80")
		var got []string
		for i := 0; i < 30; i++ {
			s := newSock(h.t, h.topo.client, unix.AF_INET6, false)
			if err := s.connect(vip); err != nil {
				h.t.Fatalf("dual-stack connect %d to [::ffff:%s]: %v", i, vip, err)
			}
			reply, peer := s.readLine(), s.peer()
			if peer.String() != reply {
				h.t.Errorf("connection %d: peer %s answered as %s", i, peer, reply)
			}
			if i == 0 && v.skStorage {
				od, err := h.objs.OrigDst(s.fd)
				if want := (OrigDst{Dst: vip, ServiceID: 20, ClusterID: 20}); err != nil || od != want {
					h.t.Errorf("OrigDst of a v4-mapped connect = %+v, %v; want %+v (the IPv4 key)", od, err, want)
				}
			}
			s.close()
			got = append(got, reply)
		}
		wantCycle(h.t, got, slots)
		h.wantSvc(20, Stats{Redirected: 30})
		h.wantCluster(20, Stats{Redirected: 30})

		// Not a service: the mapped connect reaches the IPv4 address itself.
		if got, _ := fetchSock(h.t, h.topo.client, unix.AF_INET6, a1); got != a1 {
			h.t.Errorf("dual-stack connect to [::ffff:%s]: %s", a1, got)
		}

		// The IPv6 wildcard [::]:9191 never catches a mapped destination...
		h.cluster(21, PolicyRoundRobin, ep(b1v6, 1))
		h.cluster(22, PolicyRoundRobin, ep(b1, 1))
		wild6, wild4 := WildcardAddr(FamilyIPv6, 9191), WildcardAddr(FamilyIPv4, 9191)
		if err := h.objs.PutService(wild6, Service{ID: 21, Clusters: []WeightedCluster{{ClusterID: 21}}}); err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { h.objs.DeleteService(wild6) })
		s := newSock(h.t, h.topo.client, unix.AF_INET6, false)
		if err := s.connect(netip.MustParseAddrPort("10.97.5.5:9191")); !errors.Is(err, syscall.ENETUNREACH) {
			h.t.Errorf("dual-stack connect to [::ffff:10.97.5.5]:9191 with only [::]:9191: %v, want ENETUNREACH (untouched)", err)
		}
		s.close()
		h.wantSvc(21, Stats{})
		// ... while an IPv6 destination matches it ...
		if got := h.fetch("[fd00:97::5]:9191", 1); got[0] != b1v6 {
			h.t.Errorf("wildcard [::]:9191: %v", got)
		}
		h.wantSvc(21, Stats{Redirected: 1})
		// ... and the IPv4 wildcard 0.0.0.0:9191 does catch it.
		if err := h.objs.PutService(wild4, Service{ID: 22, Clusters: []WeightedCluster{{ClusterID: 22}}}); err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { h.objs.DeleteService(wild4) })
		if got, peer := fetchSock(h.t, h.topo.client, unix.AF_INET6, "10.97.5.5:9191"); got != b1 || peer.String() != b1 {
			h.t.Errorf("dual-stack connect to [::ffff:10.97.5.5]:9191 with 0.0.0.0:9191: %s from %s, want %s", got, peer, b1)
		}
		h.wantSvc(22, Stats{Redirected: 1})
		h.wantSvc(21, Stats{Redirected: 1})
	})

	sub("orig_dst_stale", func(h *harness) {
		// A socket whose connect to a VIP was rewritten and failed connects
		// again on the same socket to an address that is no service: the entry
		// the first connect left must go. 10.201.1.2:8009 has no listener, so
		// the rewritten connect is reset (ECONNREFUSED).
		h.cluster(27, PolicyRoundRobin, ep("10.201.1.2:8009", 1))
		h.service("10.96.0.50:80", 27, WeightedCluster{ClusterID: 27})
		h.cluster(28, PolicyRoundRobin) // empty
		h.service("10.96.0.51:80", 28, WeightedCluster{ClusterID: 28})
		vip := netip.MustParseAddrPort("10.96.0.50:80")
		failVIP := func(s *sock) {
			h.t.Helper()
			if err := s.connect(vip); !errors.Is(err, syscall.ECONNREFUSED) {
				h.t.Fatalf("connect to %s (endpoint without listener): %v, want ECONNREFUSED", vip, err)
			}
			if !v.skStorage {
				return
			}
			od, err := h.objs.OrigDst(s.fd)
			if want := (OrigDst{Dst: vip, ServiceID: 27, ClusterID: 27}); err != nil || od != want {
				h.t.Fatalf("OrigDst after the failed connect = %+v, %v; want %+v", od, err, want)
			}
		}
		wantNoEntry := func(s *sock, after string) {
			h.t.Helper()
			if !v.skStorage {
				return
			}
			if _, err := h.objs.OrigDst(s.fd); !errors.Is(err, ebpf.ErrKeyNotExist) {
				h.t.Errorf("OrigDst after %s: %v, want ErrKeyNotExist (stale entry kept)", after, err)
			}
		}

		// Non-blocking, as event loops connect. After a failed non-blocking
		// connect whose error was read (SO_ERROR), Linux answers the next
		// connect() with ECONNABORTED and resets the socket without running
		// the connect hooks; the connect after that is a new one.
		s := newSock(h.t, h.topo.client, unix.AF_INET, true)
		failVIP(s)
		dst := netip.MustParseAddrPort(a1)
		err := s.connect(dst)
		if errors.Is(err, syscall.ECONNABORTED) {
			h.t.Log("reconnect: connect() after the failure reset the socket (ECONNABORTED); connecting again")
			err = s.connect(dst)
		}
		if err != nil {
			h.t.Fatalf("reconnect to %s: %v", dst, err)
		}
		wantNoEntry(s, "a reconnect to a non-service address")
		s.close()

		// Blocking, then a reconnect the program refuses (empty cluster).
		s = newSock(h.t, h.topo.client, unix.AF_INET, false)
		failVIP(s)
		if err := s.connect(netip.MustParseAddrPort("10.96.0.51:80")); !errors.Is(err, syscall.EPERM) {
			h.t.Fatalf("reconnect to the empty cluster's VIP: %v, want EPERM", err)
		}
		wantNoEntry(s, "a refused reconnect")
		// And the socket still connects: to A directly, answered by A.
		if err := s.connect(dst); err != nil {
			h.t.Fatalf("third connect to %s: %v", dst, err)
		}
		if got := s.readLine(); got != a1 {
			h.t.Errorf("third connect answered by %s", got)
		}
		wantNoEntry(s, "a connect to a non-service address")
		h.wantSvc(27, Stats{Redirected: 2})
		h.wantSvc(28, Stats{NoEndpoint: 1})
	})

	sub("not_enrolled_untouched", func(h *harness) {
		before := h.svcStats(1)
		// The other namespace has the VIPs on lo: untouched connects reach them.
		for _, vip := range []string{"10.96.0.10:80", "[fd00:96::10]:80"} {
			got, err := h.topo.other.Fetch(vip, 5)
			if err != nil {
				h.t.Fatal(err)
			}
			for _, g := range got {
				if g != unrewritten {
					h.t.Fatalf("non-enrolled netns connection to %s answered by %s", vip, g)
				}
			}
		}
		// UDP in the enrolled namespace is not TCP: untouched.
		wantUnreachable(h.t, h.topo.client, "udp", "10.96.0.10:80")
		wantUnreachable(h.t, h.topo.client, "udp", "[fd00:96::10]:80")
		// Unenrolling the client turns it off there too.
		if err := h.objs.Unenroll(h.topo.clientCookie); err != nil {
			h.t.Fatal(err)
		}
		wantUnreachable(h.t, h.topo.client, "tcp", "10.96.0.10:80")
		if ok, err := h.objs.Enrolled(h.topo.clientCookie); ok || err != nil {
			h.t.Fatalf("Enrolled after Unenroll: %v %v", ok, err)
		}
		if err := h.objs.Enroll(h.topo.clientCookie); err != nil {
			h.t.Fatal(err)
		}
		if got := h.svcStats(1); got != before {
			h.t.Errorf("service 1 counters moved from %+v to %+v", before, got)
		}
		if got := h.fetch("10.96.0.10:80", 1); got[0] == unrewritten {
			h.t.Error("re-enrolled client not redirected")
		}
	})

	sub("update_shrink_delete", func(h *harness) {
		slots := h.cluster(14, PolicyRoundRobin, ep(a1, 1), ep(a2, 1), ep(b1, 1))
		key := h.service("10.96.0.30:80", 14, WeightedCluster{ClusterID: 14})
		wantCycle(h.t, h.fetch("10.96.0.30:80", 3), slots)

		slots = h.cluster(14, PolicyRoundRobin, ep(b1, 1))
		cv, table, err := h.objs.LookupCluster(14)
		if err != nil || cv.SlotCount != 1 || len(table) != 1 {
			h.t.Fatalf("after shrink: %+v %v %v", cv, table, err)
		}
		for _, s := range []uint32{1, 2} {
			var a Addr
			if err := h.objs.slots.Lookup(SlotKey{ClusterID: 14, Slot: s}, &a); !errors.Is(err, ebpf.ErrKeyNotExist) {
				h.t.Errorf("stale slot %d after shrink: %v", s, err)
			}
		}
		wantCycle(h.t, h.fetch("10.96.0.30:80", 4), slots)

		slots = h.cluster(14, PolicyRoundRobin, ep(a2, 1), ep(b1, 1))
		wantCycle(h.t, h.fetch("10.96.0.30:80", 4), slots)

		if err := h.objs.DeleteCluster(14); err != nil {
			h.t.Fatal(err)
		}
		if _, _, err := h.objs.LookupCluster(14); !errors.Is(err, ebpf.ErrKeyNotExist) {
			h.t.Errorf("cluster after delete: %v", err)
		}
		var a Addr
		if err := h.objs.slots.Lookup(SlotKey{ClusterID: 14, Slot: 0}, &a); !errors.Is(err, ebpf.ErrKeyNotExist) {
			h.t.Errorf("slot 0 after delete: %v", err)
		}
		wantRefused(h.t, h.topo.client, "10.96.0.30:80") // the service still matches
		h.wantSvc(14, Stats{Redirected: 11, NoEndpoint: 1})

		if err := h.objs.DeleteService(key); err != nil {
			h.t.Fatal(err)
		}
		wantUnreachable(h.t, h.topo.client, "tcp", "10.96.0.30:80")
		h.wantSvc(14, Stats{Redirected: 11, NoEndpoint: 1})
		if err := h.objs.DeleteService(key); err != nil {
			h.t.Errorf("second delete: %v", err)
		}
	})

	sub("all_stats", func(h *harness) {
		svc, err := h.objs.ServiceStats()
		if err != nil {
			h.t.Fatal(err)
		}
		if svc[1].Redirected < 630 || svc[12].NoEndpoint != 2 {
			h.t.Errorf("ServiceStats: %v", svc)
		}
		cl, err := h.objs.ClusterStats()
		if err != nil {
			h.t.Fatal(err)
		}
		if cl[2].Redirected != 400 {
			h.t.Errorf("ClusterStats: %v", cl)
		}
	})
}

func origDstOf(m *Maps, c net.Conn) (OrigDst, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return OrigDst{}, err
	}
	var od OrigDst
	var lerr error
	if err := rc.Control(func(fd uintptr) { od, lerr = m.OrigDst(int(fd)) }); err != nil {
		return OrigDst{}, err
	}
	return od, lerr
}
