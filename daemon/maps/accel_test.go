package maps

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

// accel is sockmap.o loaded next to a connect object (sharing its
// km_enrolled), sk_msg on km_socks and sockops on a test cgroup.
type accel struct {
	coll  *ebpf.Collection
	stats *Maps
}

func openAccel(t *testing.T, objDir string, objs *Objects, cgroupPath string) *accel {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(objDir, ObjectSockmap))
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{MapEnrolled: objs.Collection.Maps[MapEnrolled]}})
	if err != nil {
		t.Fatalf("load %s: %v", ObjectSockmap, err)
	}
	t.Cleanup(func() { coll.Close() })
	socks, verdict, sockops := coll.Maps[MapSocks], coll.Programs[ProgSkMsg], coll.Programs[ProgSockops]
	if socks == nil || verdict == nil || sockops == nil {
		t.Fatalf("%s: maps %v programs %v", ObjectSockmap, coll.Maps, coll.Programs)
	}
	opts := link.RawAttachProgramOptions{Target: socks.FD(), Program: verdict, Attach: ebpf.AttachSkMsgVerdict}
	if err := link.RawAttachProgram(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = link.RawDetachProgram(link.RawDetachProgramOptions{Target: socks.FD(), Program: verdict, Attach: ebpf.AttachSkMsgVerdict})
	})
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: ebpf.AttachCGroupSockOps, Program: sockops})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	all := map[string]*ebpf.Map{}
	for n, m := range objs.Collection.Maps {
		all[n] = m
	}
	for n, m := range coll.Maps {
		all[n] = m
	}
	m, err := FromMaps(all)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Accelerates() {
		t.Fatal("Accelerates() = false with sockmap.o loaded")
	}
	return &accel{coll: coll, stats: m}
}

func (a *accel) read(t *testing.T) AccelStats {
	t.Helper()
	s, err := a.stats.AccelStatsOf()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s AccelStats) minus(o AccelStats) AccelStats {
	return AccelStats{Sockets: s.Sockets - o.Sockets, SockErrors: s.SockErrors - o.SockErrors,
		Redirected: s.Redirected - o.Redirected, Passed: s.Passed - o.Passed, NotLocal: s.NotLocal - o.NotLocal}
}

// vethPackets is the packets the client's veths to backends A (ca) and B
// (cb) sent and received.
func vethPackets(t *testing.T, ns *testnet.Netns) uint64 {
	t.Helper()
	return devPackets(t, ns, "ca") + devPackets(t, ns, "cb")
}

func devPackets(t *testing.T, ns *testnet.Netns, dev string) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns.Name, "-s", "-j", "link", "show", "dev", dev).Output()
	if err != nil {
		t.Fatalf("ip -s link show %s: %v", dev, err)
	}
	var links []struct {
		Stats struct {
			RX, TX struct {
				Packets uint64 `json:"packets"`
			}
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show %s: %v %s", dev, err, out)
	}
	return links[0].Stats.RX.Packets + links[0].Stats.TX.Packets
}

// waitSockets waits until the counter of sockets added reaches n.
func (a *accel) waitSockets(t *testing.T, base AccelStats, n uint64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for a.read(t).minus(base).Sockets < n {
		if time.Now().After(deadline) {
			t.Fatalf("sockets added: %+v, want %d", a.read(t).minus(base), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSameNodeAccel runs sockmap.o on the test topology: client and backend
// A enrolled (B and Other not), the connect programs rewriting VIPs to A's
// echo servers.
func TestSameNodeAccel(t *testing.T) {
	testnet.RequireRoot(t)
	if !testnet.KernelAccelerates() {
		t.Run("kernel_without_accel", testAccelAbsent)
		return
	}
	id := testnet.ID(t)
	tp := testnet.NewTopology(t, "kacc-"+id)
	const (
		echo4  = "10.201.1.2:8101"
		echo6  = "[fd00:201:1::2]:8101"
		echoDS = "[::]:8102" // dual stack: IPv4 clients arrive as IPv4-mapped IPv6
		echoB  = "10.201.2.2:8101"
		vip    = "10.96.0.10:80"
		vip6   = "[fd00:96::10]:80"
		vipDS  = "10.96.0.11:80"
		vipB   = "10.96.0.12:80"
		lines  = 200
		conns  = 300
		// packets across the veths during a fully redirected exchange of
		// lines lines (TCP/IP needs >= 2 per line; IPv6 adds neighbour
		// discovery)
		maxVeth = lines / 10
	)
	// servers listen from the test cgroup: accepted sockets are in their
	// listener's cgroup, where sockops runs
	cg := testnet.NewCgroup(t, "kacc-"+id)
	tp.A.ServeEcho(t, echo4)
	tp.A.ServeEcho(t, echo6)
	tp.A.ServeEcho(t, echoDS)
	tp.B.ServeEcho(t, echoB)
	dir := objDir(t, variant{skStorage: true})
	objs, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	attachForTest(t, objs, cg.Path)
	a := openAccel(t, dir, objs, cg.Path)
	for _, ns := range []*testnet.Netns{tp.Client, tp.A} {
		if err := objs.Enroll(ns.Cookie(t)); err != nil {
			t.Fatal(err)
		}
	}
	h := &harness{t: t, objs: objs}
	for i, s := range []struct{ vip, ep string }{{vip, echo4}, {vip6, echo6}, {vipDS, "10.201.1.2:8102"}, {vipB, echoB}} {
		id := uint32(100 + i)
		h.cluster(id, PolicyRoundRobin, ep(s.ep, 1))
		h.service(s.vip, id, WeightedCluster{ClusterID: id})
	}

	// exchange sends lines lines on one connection to vip and checks each
	// reply, once both ends are in km_socks when both are enrolled.
	exchange := func(t *testing.T, vip, replyFrom string, bothEnds bool) (AccelStats, uint64) {
		base, veth := a.read(t), vethPackets(t, tp.Client)
		c, err := tp.Client.Dial("tcp", vip)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if bothEnds {
			a.waitSockets(t, base, 2)
		}
		r := bufio.NewReader(c)
		for i := 0; i < lines; i++ {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := fmt.Fprintf(c, "line-%d\n", i); err != nil {
				t.Fatal(err)
			}
			got, err := r.ReadString('\n')
			if want := replyFrom + " line-" + fmt.Sprint(i) + "\n"; err != nil || got != want {
				t.Fatalf("reply %d = %q, %v; want %q", i, got, err, want)
			}
		}
		return a.read(t).minus(base), vethPackets(t, tp.Client) - veth
	}

	// The first connection between two addresses teaches km_local_ips the
	// server's: the client's end is not added (its peer's address is not
	// known yet), the server's is (the client's became known a moment
	// before, at its own end's establishment); the server then finds no
	// peer and sends through TCP/IP.
	for _, c := range []struct{ name, vip, reply string }{{"ipv4", vip, echo4}, {"ipv6", vip6, echo6}} {
		t.Run(c.name+"_first_connection_learns", func(t *testing.T) {
			base := a.read(t)
			conn, err := tp.Client.Dial("tcp", c.vip)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got, err := testnet.Echo(conn, "hello"); err != nil || got != c.reply+" hello" {
				t.Fatalf("echo: %q %v", got, err)
			}
			if d := a.read(t).minus(base); d != (AccelStats{Sockets: 1, NotLocal: 1, Passed: 1}) {
				t.Errorf("stats delta %+v, want the client's end not local, the server's added and its reply passed", d)
			}
		})
	}

	for _, c := range []struct{ name, vip, reply string }{
		{"ipv4", vip, echo4}, {"ipv6", vip6, echo6}, {"ipv4_to_dual_stack", vipDS, echoDS}} {
		t.Run(c.name+"_redirected", func(t *testing.T) {
			d, veth := exchange(t, c.vip, c.reply, true)
			// every send of both ends skipped TCP/IP: one message per line each way
			if want := (AccelStats{Sockets: 2, Redirected: 2 * lines}); d != want {
				t.Errorf("stats delta %+v, want %+v", d, want)
			}
			if veth > maxVeth {
				t.Errorf("%d packets crossed the veth for %d redirected lines, want <= %d", veth, lines, maxVeth)
			}
		})
	}

	t.Run("backend_not_enrolled", func(t *testing.T) {
		d, veth := exchange(t, vipB, echoB, false)
		// B's address was never learned (B is not enrolled): the client's
		// socket is not added, and no send of either end runs sk_msg, as
		// for a backend on another node
		if want := (AccelStats{NotLocal: 1}); d != want {
			t.Errorf("stats delta %+v, want %+v", d, want)
		}
		if veth < 2*lines {
			t.Errorf("%d packets crossed the veth for %d lines through TCP/IP, want >= %d", veth, lines, 2*lines)
		}
	})

	t.Run("loopback_untouched", func(t *testing.T) {
		tp.Client.ServeEcho(t, "127.0.0.1:8103")
		base := a.read(t)
		c, err := tp.Client.Dial("tcp", "127.0.0.1:8103")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, err := testnet.Echo(c, "x"); err != nil || got != "127.0.0.1:8103 x" {
			t.Fatalf("echo over loopback: %q, %v", got, err)
		}
		if d := a.read(t).minus(base); d != (AccelStats{}) {
			t.Errorf("loopback connection touched: %+v", d)
		}
	})

	t.Run("not_enrolled_untouched", func(t *testing.T) {
		if err := objs.Unenroll(tp.Client.Cookie(t)); err != nil {
			t.Fatal(err)
		}
		defer objs.Enroll(tp.Client.Cookie(t))
		base := a.read(t)
		// straight to A (the VIP is not rewritten for a non-enrolled client)
		c, err := tp.Client.Dial("tcp", echo4)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, err := testnet.Echo(c, "y"); err != nil || got != echo4+" y" {
			t.Fatalf("echo: %q, %v", got, err)
		}
		// A's end is enrolled, but its peer's address belongs to a
		// namespace no longer enrolled: not added either
		if d := a.read(t).minus(base); d != (AccelStats{NotLocal: 1}) {
			t.Errorf("stats delta %+v, want A's end not added", d)
		}
	})

	// pair opens one connection from the client to vip, a service (and
	// cluster) id of the one endpoint ep in A, and returns both ends; they
	// close at the end of the test.
	pair := func(t *testing.T, id uint32, ep_, vip string) (client, server net.Conn) {
		t.Helper()
		h := &harness{t: t, objs: objs}
		h.cluster(id, PolicyRoundRobin, ep(ep_, 1))
		h.service(vip, id, WeightedCluster{ClusterID: id})
		var ln net.Listener
		if err := tp.A.Do(func() (err error) { ln, err = net.Listen("tcp", ep_); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := tp.Client.Dial("tcp", vip)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		return c, sc
	}

	// The first send decides: a client that sent through TCP/IP because
	// its peer was not in km_socks yet keeps doing so when the peer shows
	// up, or the reader would get the later bytes first.
	t.Run("sticky_decision_keeps_order", func(t *testing.T) {
		base := a.read(t)
		c, sc := pair(t, 110, "10.201.1.2:8104", "10.96.0.13:80")
		// the race lost: the server's end is not in km_socks yet at the
		// client's first send (taken out here, before any byte moved)
		a.waitSockets(t, base, 2)
		key, err := SockKeyFrom(netip.MustParseAddrPort(sc.LocalAddr().String()), netip.MustParseAddrPort(sc.RemoteAddr().String()))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.coll.Maps[MapSocks].Delete(key); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "first\n"); err != nil {
			t.Fatal(err)
		}
		waitQueued(t, sc, len("first\n"))
		// and then it is in
		if err := putSocket(a.coll.Maps[MapSocks], key, sc); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "second\n"); err != nil {
			t.Fatal(err)
		}
		sc.SetDeadline(time.Now().Add(3 * time.Second))
		got := make([]byte, len("first\nsecond\n"))
		if _, err := io.ReadFull(sc, got); err != nil || string(got) != "first\nsecond\n" {
			t.Fatalf("server read %q, %v; want first then second", got, err)
		}
		if d := a.read(t).minus(base); d != (AccelStats{Sockets: 2, Passed: 2}) {
			t.Errorf("stats delta %+v, want both ends added and both sends passed", d)
		}
	})

	// A socket leaving km_socks loses the bytes redirected to it that it has
	// not read (the kernel purges them): uninstall first sets PASS_ALL, so
	// that new sends go through TCP/IP while readers drain, in order.
	t.Run("pass_all_drains_in_order", func(t *testing.T) {
		base := a.read(t)
		c, sc := pair(t, 111, "10.201.1.2:8105", "10.96.0.14:80")
		a.waitSockets(t, base, 2)
		if _, err := io.WriteString(c, "redirected\n"); err != nil {
			t.Fatal(err)
		}
		ctl := a.coll.Maps[MapAccelCtl]
		if err := ctl.Put(uint32(0), AccelCtlValue{Flags: AccelPassAll}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "tcp\n"); err != nil {
			t.Fatal(err)
		}
		// switched back: this socket stays on TCP/IP (it sent through it,
		// and its peer has not read that yet)
		if err := ctl.Put(uint32(0), AccelCtlValue{}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "again\n"); err != nil {
			t.Fatal(err)
		}
		if d := a.read(t).minus(base); d != (AccelStats{Sockets: 2, Redirected: 1, Passed: 2}) {
			t.Errorf("stats delta %+v, want one redirected send, then two passed (PASS_ALL sticks)", d)
		}
		waitQueued(t, sc, len("tcp\nagain\n"))
		sc.SetDeadline(time.Now().Add(2 * time.Second))
		got := make([]byte, len("redirected\ntcp\nagain\n"))
		if _, err := io.ReadFull(sc, got); err != nil || string(got) != "redirected\ntcp\nagain\n" {
			t.Fatalf("server read %q, %v; want the redirected bytes, then those through TCP/IP", got, err)
		}
		// drained: leaving km_socks now loses nothing, and TCP/IP carries on
		for _, conn := range []net.Conn{c, sc} {
			key, err := SockKeyFrom(netip.MustParseAddrPort(conn.LocalAddr().String()), netip.MustParseAddrPort(conn.RemoteAddr().String()))
			if err != nil {
				t.Fatal(err)
			}
			if err := a.coll.Maps[MapSocks].Delete(key); err != nil {
				t.Fatalf("remove %s from km_socks: %v", conn.LocalAddr(), err)
			}
		}
		if _, err := io.WriteString(c, "after\n"); err != nil {
			t.Fatal(err)
		}
		if d := a.read(t).minus(base); d != (AccelStats{Sockets: 2, Redirected: 1, Passed: 2}) {
			// the last send ran no sk_msg: its socket had left km_socks
			t.Errorf("stats delta %+v after leaving km_socks", d)
		}
		sc.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(sc, got[:len("after\n")]); err != nil || string(got[:6]) != "after\n" {
			t.Fatalf("server read %q, %v after leaving km_socks", got[:6], err)
		}
	})

	// The client writes twice right after connect(), racing the server's
	// socket into km_socks: whatever each end decides, every byte arrives
	// once and in order.
	t.Run("order_under_connect_race", func(t *testing.T) {
		base := a.read(t)
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < conns/4; i++ {
					if err := raceOnce(tp.Client, vip, echo4); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		d := a.read(t).minus(base)
		// per connection four client sends (two writes per line) and two
		// reply lines, each either redirected or passed
		if d.Sockets != 2*conns || d.Redirected+d.Passed != 6*conns || d.SockErrors != 0 {
			t.Errorf("stats delta %+v for %d connections", d, conns)
		}
		t.Logf("%d connections: %+v", conns, d)
	})
}

// waitQueued waits until c's receive queue holds n bytes (SIOCINQ).
func waitQueued(t *testing.T, c net.Conn, n int) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		var queued int
		var ierr error
		raw.Control(func(fd uintptr) { queued, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if ierr != nil {
			t.Fatal(ierr)
		}
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes queued, want %d", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// putSocket adds c to the sockhash m under key (user space passes the fd).
func putSocket(m *ebpf.Map, key SockKey, c net.Conn) error {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	if err := raw.Control(func(fd uintptr) { perr = m.Update(key, uint64(fd), ebpf.UpdateNoExist) }); err != nil {
		return err
	}
	return perr
}

// raceOnce writes a line in two writes straight after connect, then a second
// line, and reads both replies.
func raceOnce(ns *testnet.Netns, vip, replyFrom string) error {
	c, err := ns.Dial("tcp", vip)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	for _, part := range []string{"head-", "body\n", "second-", "line\n"} {
		if _, err := io.WriteString(c, part); err != nil {
			return err
		}
	}
	r := bufio.NewReader(c)
	for _, want := range []string{"head-body", "second-line"} {
		got, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if got != replyFrom+" "+want+"\n" {
			return fmt.Errorf("reply %q, want %q: bytes out of order", strings.TrimSpace(got), replyFrom+" "+want)
		}
	}
	return nil
}

// testAccelAbsent: on a kernel without what acceleration needs, sockmap.o
// builds without programs or maps, and the connect object is unaffected.
func testAccelAbsent(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(objDir(t, variant{skStorage: true}), ObjectSockmap))
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Programs) != 0 || len(spec.Maps) != 0 {
		t.Errorf("sockmap.o without KMESH_HAVE_SAME_NODE_ACCEL: programs %v maps %v", keys(spec.Programs), keys(spec.Maps))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLayoutSockmap checks sockmap.o's maps against their Go mirrors, and
// that without the feature the object holds nothing.
func TestLayoutSockmap(t *testing.T) {
	want := map[string]mirror{
		MapEnrolled:   {reflect.TypeFor[uint64](), reflect.TypeFor[uint32](), MaxEnrolledNetns, ebpf.Hash},
		MapSocks:      {reflect.TypeFor[SockKey](), reflect.TypeFor[uint64](), MaxSockets, ebpf.SockHash},
		MapAccelSk:    {reflect.TypeFor[int32](), reflect.TypeFor[AccelSkValue](), 0, ebpf.SkStorage},
		MapAccelStats: {reflect.TypeFor[uint32](), reflect.TypeFor[AccelStats](), 1, ebpf.PerCPUArray},
		MapAccelCtl:   {reflect.TypeFor[uint32](), reflect.TypeFor[AccelCtlValue](), 1, ebpf.Array},
		MapLocalIPs:   {reflect.TypeFor[IPKey](), reflect.TypeFor[uint64](), MaxLocalIPs, ebpf.LRUHash},
	}
	f := testnet.DefaultFeatures()
	f.SameNodeAccel = true
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(testnet.Objects(t, f), ObjectSockmap))
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		ms, ok := spec.Maps[name]
		if !ok {
			t.Errorf("map %s missing from %s", name, ObjectSockmap)
			continue
		}
		checkMirror(t, name, ms, w)
	}
	if len(spec.Maps) != len(want) {
		t.Errorf("%s has maps %v, Go mirrors %d", ObjectSockmap, keys(spec.Maps), len(want))
	}
	f.SameNodeAccel = false
	off, err := ebpf.LoadCollectionSpec(filepath.Join(testnet.Objects(t, f), ObjectSockmap))
	if err != nil {
		t.Fatal(err)
	}
	if len(off.Programs) != 0 || len(off.Maps) != 0 {
		t.Errorf("without KMESH_HAVE_SAME_NODE_ACCEL: programs %v maps %v", keys(off.Programs), keys(off.Maps))
	}
}
