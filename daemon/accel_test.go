package daemon

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	tn "kmesh.dev/kmesh/daemon/internal/testnet"
	"kmesh.dev/kmesh/daemon/loader"
	"kmesh.dev/kmesh/daemon/maps"
)

// TestDaemonSameNodeAccel: with the client and backend A enrolled, a
// connection between them is accelerated; it stays so across a daemon
// restart and keeps working, in order, after uninstall.
func TestDaemonSameNodeAccel(t *testing.T) {
	tp := newTopo(t)
	e := newEnv(t, baseConfig("echo-a"), tp.Client.Path, tp.A.Path)
	e.start()
	st := e.status()
	if !tn.KernelAccelerates() {
		// only a kernel older than 5.15 (no bpf_get_netns_cookie in sock_ops,
		// the QEMU guest's 5.10) may lack it; on a newer one it is a probe bug
		if tn.KernelAtLeast(5, 15) {
			t.Fatalf("the live probe says same-node acceleration cannot run on a kernel >= 5.15, which has all it needs")
		}
		if st.SameNodeAccel.Enabled || !strings.Contains(st.SameNodeAccel.Note, "decision record") {
			t.Errorf("kernel without acceleration: /status same_node_accel %+v", st.SameNodeAccel)
		}
		return
	}
	if !st.SameNodeAccel.Enabled || st.SameNodeAccel.Stats == nil {
		t.Fatalf("same_node_accel %+v", st.SameNodeAccel)
	}
	// The echo server in A listened before the daemon attached: accepted
	// sockets inherit their listener's cgroup, here the root's, where
	// sockops runs. Enrolment is by namespace, not by cgroup.
	// Enrolment recorded both namespaces' addresses: the very first
	// connection between them is accelerated.
	long, err := tp.Client.Dial("tcp", vipL)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	echo := func(i int) {
		t.Helper()
		line := fmt.Sprintf("line-%d", i)
		if r, err := tn.Echo(long, line); err != nil || r != echoA+" "+line {
			t.Fatalf("echo %d: %q %v", i, r, err)
		}
	}
	waitFor(t, "both ends of the connection in km_socks", func() bool {
		s := e.status().SameNodeAccel.Stats
		return s != nil && s.Sockets >= 2
	})
	for i := 0; i < 100; i++ {
		echo(i)
	}
	before := *e.status().SameNodeAccel.Stats
	if before.Redirected < 200 {
		t.Errorf("after 100 echoes: %+v, want both directions redirected", before)
	}
	m := e.metrics()
	if v := metricValue(m, `kmesh_accel_messages_total{result="redirected"}`); v != float64(before.Redirected) {
		t.Errorf("kmesh_accel_messages_total{redirected} = %v, /status says %d", v, before.Redirected)
	}
	if v := metricValue(m, `kmesh_accel_sockets_not_local_total`); v != 0 {
		t.Errorf("kmesh_accel_sockets_not_local_total = %v, want 0 (the enrolled namespaces' addresses are known from enrolment)", v)
	}
	if v := metricValue(m, `kmesh_accel_sockets_total`); v != 2 {
		t.Errorf("kmesh_accel_sockets_total = %v", v)
	}

	// restart: the sk_msg program is replaced on the adopted map; the
	// established connection keeps its program and stays accelerated
	e.stop()
	echo(100)
	e.start()
	echo(101)
	st = e.status()
	for _, l := range st.Links {
		if l.Map != "" && !l.Adopted {
			t.Errorf("sk_msg after restart: %+v, want it to replace the earlier program", l)
		}
	}
	if got := st.SameNodeAccel.Stats; got == nil || got.Redirected < before.Redirected+4 {
		t.Errorf("across the restart: %+v, want the echoes still redirected (before %+v)", got, before)
	}
	_, progs := attached(t, st)
	held, err := ebpf.LoadPinnedMap(loader.Config{BPFFSPath: e.opts.BPFFSPath}.MapPinPath(maps.MapAccelStats), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldStats := func() maps.AccelStats {
		t.Helper()
		st, err := maps.ReadAccelStats(held)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	// restart with --same-node-accel=false: its programs go, the
	// accelerated connection carries on through TCP/IP
	e.opts.NoSameNodeAccel = true
	e.stop()
	e.start()
	st = e.status()
	if st.SameNodeAccel.Enabled || st.SameNodeAccel.Note != "off: --same-node-accel=false" || len(st.Links) != 2 {
		t.Errorf("with --same-node-accel=false: %+v, links %+v", st.SameNodeAccel, st.Links)
	}
	off := heldStats()
	for i := 110; i < 120; i++ {
		echo(i)
	}
	if got := heldStats(); got.Redirected != off.Redirected || got.Passed != off.Passed+20 {
		t.Errorf("accelerated connection after switching off: %+v (at the switch %+v), want its 20 sends passed", got, off)
	}
	// and on again: a new connection is accelerated
	e.opts.NoSameNodeAccel = false
	e.stop()
	e.start()
	on := heldStats()
	again, err := tp.Client.Dial("tcp", vipL)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	waitFor(t, "the new connection's ends in km_socks", func() bool { return heldStats().Sockets >= on.Sockets+2 })
	if r, err := tn.Echo(again, "on"); err != nil || r != echoA+" on" {
		t.Fatalf("echo: %q %v", r, err)
	}
	if got := e.status().SameNodeAccel; !got.Enabled || got.Stats.Redirected != on.Redirected+2 {
		t.Errorf("switched on again: %+v, want the new connection's two sends redirected (before %+v)", got, on)
	}
	again.Close()

	// uninstall with the connection open: it must not lose a byte. The
	// kernel would purge bytes not yet read if its sockets left km_socks;
	// they stay in it, sending through TCP/IP, until they close.
	redirected := heldStats().Redirected
	e.stop()
	if err := Uninstall(e.opts); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.log.String(), "open accelerated connections carry on through TCP/IP") {
		t.Errorf("uninstall did not report the open accelerated sockets:\n%s", e.log.String())
	}
	for i := 200; i < 300; i++ {
		echo(i)
	}
	if got := heldStats(); got.Redirected != redirected || got.Passed < 200 {
		t.Errorf("after uninstall: %+v, want no more redirects (%d before) and the echoes passed", got, redirected)
	}
	long.Close()
	// once the last accelerated connection is gone, nothing of kmesh remains
	for _, id := range progs {
		waitFor(t, fmt.Sprintf("program %d to be freed after the connection closed", id), func() bool {
			p, err := ebpf.NewProgramFromID(id)
			if err == nil {
				p.Close()
			}
			return err != nil
		})
	}
}
