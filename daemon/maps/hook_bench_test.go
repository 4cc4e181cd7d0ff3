package maps

import (
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

// BenchmarkConnectHook measures the time the kernel spends inside
// kmesh_connect4 per connect(), from the kernel's BPF statistics
// (BPF_ENABLE_STATS; its two clock reads per run are included), for the
// paths a connect can take: not enrolled (the early exit), a rewrite with
// and without the original destination kept in sk_storage, and both
// policies. Each connect goes to a VIP rewritten to a listener in backend
// A (not enrolled: to the listener itself).
func BenchmarkConnectHook(b *testing.B) {
	testnet.RequireRoot(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	id := testnet.ID(b)
	tp := testnet.NewTopology(b, "khb-"+id)
	cg := testnet.NewCgroup(b, "khb-"+id)
	for _, c := range []struct {
		name      string
		skStorage bool
		enroll    bool
		policy    Policy
	}{
		{"not_enrolled", true, false, PolicyRoundRobin},
		{"rewrite_round_robin", true, true, PolicyRoundRobin},
		{"rewrite_random", true, true, PolicyRandom},
		{"rewrite_round_robin_no_sk_storage", false, true, PolicyRoundRobin},
	} {
		b.Run(c.name, func(b *testing.B) {
			objs, err := Open(objDir(b, variant{skStorage: c.skStorage}), OpenOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer objs.Close()
			links, err := objs.AttachCgroup(cg.Path)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				for _, l := range links {
					l.Close()
				}
			}()
			slots, err := SlotTable([]WeightedEndpoint{ep(a1, 1), ep(a2, 1)})
			if err != nil {
				b.Fatal(err)
			}
			if err := objs.PutCluster(1, c.policy, slots); err != nil {
				b.Fatal(err)
			}
			if err := objs.PutService(MustAddr(testnet.VIP), Service{ID: 1, Clusters: []WeightedCluster{{ClusterID: 1}}}); err != nil {
				b.Fatal(err)
			}
			if c.enroll {
				if err := objs.Enroll(tp.Client.Cookie(b)); err != nil {
					b.Fatal(err)
				}
			}
			// not enrolled, the VIP is routable nowhere: connect to A1 itself
			target := a1
			if c.enroll {
				target = testnet.VIP
			}
			before, err := objs.Connect4.Stats()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			err = tp.Client.Do(func() error {
				d := net.Dialer{Timeout: 3 * time.Second}
				for i := 0; i < b.N; i++ {
					conn, err := d.Dial("tcp4", target)
					if err != nil {
						return err
					}
					conn.Close()
				}
				return nil
			})
			b.StopTimer()
			if err != nil {
				b.Fatalf("connect through the hook: %v", err)
			}
			after, err := objs.Connect4.Stats()
			if err != nil {
				b.Fatal(err)
			}
			runs := after.RunCount - before.RunCount
			if runs < uint64(b.N) {
				b.Fatalf("%d runs of kmesh_connect4 for %d connects", runs, b.N)
			}
			b.ReportMetric(float64((after.Runtime-before.Runtime).Nanoseconds())/float64(runs), "hook-ns/connect")
		})
	}
}
