package maps

import (
	"errors"
	"kmesh.dev/kmesh/daemon/internal/testnet"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
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

func tally(got []string) map[string]int {
	m := map[string]int{}
	for _, g := range got {
		m[g]++
	}
	return m
}

// within checks k successes of n trials against probability p, 5 sigma.
func within(t *testing.T, what string, k, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	if dev := math.Abs(float64(k) - mean); dev > 5*sigma {
		t.Errorf("%s: %d of %d, expected %.1f ± %.1f (5σ)", what, k, n, mean, 5*sigma)
	} else {
		t.Logf("%s: %d of %d (expected %.1f, %.1fσ off)", what, k, n, mean, dev/sigma)
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
			for k, n := range tally(<-results) {
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
		if c := tally(got); c[a1] != 300 || c[b1] != 100 {
			h.t.Errorf("3:1 round robin gave %v", c)
		}
		h.wantCluster(2, Stats{Redirected: 400})
	})

	sub("random_uniform", func(h *harness) {
		h.cluster(3, PolicyRandom, ep(a1, 1), ep(a2, 1), ep(b1, 1))
		h.service("10.96.0.12:80", 3, WeightedCluster{ClusterID: 3})
		const n = 1200
		c := tally(h.fetch("10.96.0.12:80", n))
		for _, e := range []string{a1, a2, b1} {
			within(h.t, "random "+e, c[e], n, 1.0/3)
		}
		h.wantSvc(3, Stats{Redirected: n})
	})

	sub("random_weighted_3to1", func(h *harness) {
		h.cluster(4, PolicyRandom, ep(a1, 3), ep(b1, 1))
		h.service("10.96.0.13:80", 4, WeightedCluster{ClusterID: 4})
		const n = 1000
		c := tally(h.fetch("10.96.0.13:80", n))
		within(h.t, "random weight 3 of 3:1", c[a1], n, 0.75)
		if c[a1]+c[b1] != n {
			h.t.Errorf("replies %v", c)
		}
	})

	sub("weighted_clusters_90_10", func(h *harness) {
		h.cluster(5, PolicyRoundRobin, ep(a1, 1), ep(a2, 1))
		h.cluster(6, PolicyRoundRobin, ep(b1, 1))
		h.service("10.96.0.14:80", 5, WeightedCluster{5, 90}, WeightedCluster{6, 10})
		const n = 1000
		c := tally(h.fetch("10.96.0.14:80", n))
		within(h.t, "cluster weight 10 of 90/10", c[b1], n, 0.10)
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
		c := tally(h.fetch("[fd00:96::11]:80", 600))
		within(h.t, "IPv6 random weight 3 of 3:1", c[a1v6], 600, 0.75)

		h.cluster(9, PolicyRoundRobin, ep(b1v6, 1))
		h.cluster(15, PolicyRoundRobin, ep(a1v6, 1), ep(a2v6, 1))
		h.service("[fd00:96::12]:80", 8, WeightedCluster{15, 90}, WeightedCluster{9, 10})
		c = tally(h.fetch("[fd00:96::12]:80", 1000))
		within(h.t, "IPv6 cluster weight 10 of 90/10", c[b1v6], 1000, 0.10)
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
		h.cluster(13, PolicyRoundRobin) // no endpoints
		h.service("10.96.0.20:80", 12, WeightedCluster{ClusterID: 13})
		h.service("10.96.0.21:80", 13, WeightedCluster{ClusterID: 999}) // cluster never published
		wantUnreachable(h.t, h.topo.client, "tcp", "10.96.0.20:80")
		wantUnreachable(h.t, h.topo.client, "tcp", "10.96.0.20:80")
		wantUnreachable(h.t, h.topo.client, "tcp", "10.96.0.21:80")
		h.wantSvc(12, Stats{NoEndpoint: 2})
		h.wantCluster(13, Stats{NoEndpoint: 2})
		h.wantSvc(13, Stats{NoEndpoint: 1})
		h.wantCluster(999, Stats{NoEndpoint: 1})
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
		wantUnreachable(h.t, h.topo.client, "tcp", "10.96.0.30:80")
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
