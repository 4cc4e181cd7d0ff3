package apply

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/daemon/internal/testnet"
	"kmesh.dev/kmesh/daemon/maps"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveObjects()
	os.Exit(code)
}

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newMaps loads connect.o (real clang, real verifier) and wraps its maps.
func newMaps(tb testing.TB) *maps.Maps {
	tb.Helper()
	m, _ := newMapsColl(tb)
	return m
}

// newMapsColl is newMaps that also returns the collection, for tests that
// write the maps behind the Applier's back.
func newMapsColl(tb testing.TB) (*maps.Maps, *ebpf.Collection) {
	tb.Helper()
	testnet.RequireRoot(tb)
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(testnet.Objects(tb, testnet.DefaultFeatures()), maps.ObjectConnect))
	if err != nil {
		tb.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(coll.Close)
	m, err := maps.New(coll)
	if err != nil {
		tb.Fatal(err)
	}
	return m, coll
}

// model builds n services 10.96.x.y:80 -> cluster c<i> with eps endpoints.
func model(n, eps int) *config.Model {
	m := &config.Model{Services: map[config.ServiceKey]config.Service{}, Clusters: map[string]config.Cluster{}}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("c%d", i)
		cl := config.Cluster{Name: name, Policy: config.LBPolicy(i % 2)}
		for j := 0; j < eps; j++ {
			ip := netip.AddrFrom4([4]byte{10, byte(200 + i>>16), byte(i >> 8), byte(i)})
			cl.Endpoints = append(cl.Endpoints, config.Endpoint{Addr: netip.AddrPortFrom(ip, uint16(8000+j)), Weight: 1})
		}
		m.Clusters[name] = cl
		vip := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		m.Services[config.ServiceKey{Addr: vip, Port: 80}] = config.Service{Name: fmt.Sprintf("s%d", i), Clusters: []config.WeightedCluster{{Name: name, Weight: 1}}}
	}
	m.Version = fmt.Sprintf("v%d-%d", n, eps)
	return m
}

// check verifies that the maps hold exactly model m as a knows it: every
// service with the clusters, weights, policies and slot tables of m, and
// no other service, cluster or slot.
func check(t *testing.T, a *Applier, mp *maps.Maps, m *config.Model) {
	t.Helper()
	all, err := mp.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(m.Services) {
		t.Fatalf("maps hold %d services, model %d", len(all), len(m.Services))
	}
	live := map[uint32]bool{}
	for k, s := range m.Services {
		key, _ := serviceKey(k)
		v, ok := all[key]
		id, _ := a.ServiceID(k)
		if !ok || v.ServiceID != id || int(v.ClusterCount) != len(s.Clusters) {
			t.Fatalf("service %s: %+v (id %d)", k, v, id)
		}
		for i, wc := range s.Clusters {
			cid, _ := a.ClusterID(wc.Name)
			if v.Clusters[i].ClusterID != cid || v.Clusters[i].Weight != wc.Weight {
				t.Fatalf("service %s cluster %d: %+v, want id %d weight %d", k, i, v.Clusters[i], cid, wc.Weight)
			}
		}
	}
	for n, c := range m.Clusters {
		cid, ok := a.ClusterID(n)
		if !ok {
			t.Fatalf("cluster %s has no id", n)
		}
		live[cid] = true
		want, err := clusterTables(m, []string{n})
		if err != nil {
			t.Fatal(err)
		}
		v, slots, err := mp.LookupCluster(cid)
		if err != nil || maps.Policy(v.Policy) != want[0].Policy || !slices.Equal(slots, want[0].Slots) {
			t.Fatalf("cluster %s (id %d, %d endpoints): policy %d, %d slots %v; want policy %d, %d slots",
				n, cid, len(c.Endpoints), v.Policy, len(slots), err, want[0].Policy, len(want[0].Slots))
		}
	}
	cls, err := mp.Clusters()
	if err != nil {
		t.Fatal(err)
	}
	slotsWant := 0
	for id, v := range cls {
		if !live[id] {
			t.Fatalf("maps hold cluster %d that the model does not have", id)
		}
		slotsWant += int(v.SlotCount)
	}
	if slots, err := mp.Slots(); err != nil || len(slots) != slotsWant {
		t.Fatalf("maps hold %d slots (%v), the clusters' tables %d", len(slots), err, slotsWant)
	}
	if a.slotsUsed != slotsWant {
		t.Fatalf("applier counts %d slots in use, maps %d", a.slotsUsed, slotsWant)
	}
}

func TestApplyFullIncrementalAndAdoption(t *testing.T) {
	mp := newMaps(t)
	a := New(mp, quiet())
	m1 := model(50, 3)
	r, err := a.Apply(m1)
	if err != nil || !r.Full || r.ServicesAdded != 50 || r.ClustersAdded != 50 {
		t.Fatalf("full apply: %+v %v", r, err)
	}
	check(t, a, mp, m1)

	// incremental: one endpoint changed, one service removed, one added
	m2 := model(50, 3)
	c7 := m2.Clusters["c7"]
	c7.Endpoints = c7.Endpoints[:2]
	m2.Clusters["c7"] = c7
	var gone config.ServiceKey
	for k, s := range m2.Services {
		if s.Name == "s3" {
			gone = k
		}
	}
	delete(m2.Services, gone)
	delete(m2.Clusters, "c3")
	c3id, _ := a.ClusterID("c3")
	newKey := config.ServiceKey{Addr: netip.MustParseAddr("10.97.0.1"), Port: 443}
	m2.Services[newKey] = config.Service{Name: "new", Clusters: []config.WeightedCluster{{Name: "c7", Weight: 1}}}
	m2.Version = "v2"
	r, err = a.Apply(m2)
	if err != nil || r.Full || r.ClustersChanged != 1 || r.ServicesRemoved != 1 || r.ClustersRemoved != 1 || r.ServicesAdded != 1 {
		t.Fatalf("incremental apply: %+v %v", r, err)
	}
	check(t, a, mp, m2)
	if _, _, err := mp.LookupCluster(c3id); err == nil {
		t.Errorf("removed cluster c3 (id %d) still in the maps", c3id)
	}

	// a new Applier (restarted daemon) over the same maps with another
	// model: the clusters the maps already hold (same policy and slot
	// table) are taken over under their IDs, the others written under IDs
	// no live entry uses; services keep their IDs; nothing else is left
	oldIDs := map[uint32]string{}
	for n, id := range a.clusterIDs {
		oldIDs[id] = n
	}
	b := New(mp, quiet())
	m3 := model(20, 2) // c7 (two endpoints) is m2's c7; the other clusters differ
	r, err = b.Apply(m3)
	stale := 0 // m2's services that m3 does not have
	for k := range m2.Services {
		if _, ok := m3.Services[k]; !ok {
			stale++
		}
	}
	if err != nil || !r.Full || r.ServicesRemoved != stale || r.ClustersAdopted != 1 || r.ClustersAdded != 19 || r.ClustersRemoved != len(m2.Clusters)-1 {
		t.Fatalf("adopting apply: %+v %v (had %d services, %d clusters)", r, err, len(m2.Services), len(m2.Clusters))
	}
	check(t, b, mp, m3)
	for n, id := range b.clusterIDs {
		if old, ok := oldIDs[id]; ok && (n != "c7" || old != "c7") {
			t.Errorf("cluster %s reuses adopted id %d of %s, a cluster with other endpoints", n, id, old)
		}
	}
	for k := range m3.Services {
		if old, ok := a.ServiceID(k); ok {
			if id, _ := b.ServiceID(k); id != old {
				t.Errorf("service %s: id %d after the restart, %d before", k, id, old)
			}
		}
	}
}

// A restart with the config the maps hold writes nothing, keeps every ID
// and counter, and works above half the maps' capacity (a replacement that
// rewrote everything would need twice the IDs and slots).
func TestApplyRestartSameConfig(t *testing.T) {
	mp, coll := newMapsColl(t)
	a := New(mp, quiet())
	m := model(20000, 7) // > half of the service and cluster ids; 140,000 of 262,144 slots
	if _, err := a.Apply(m); err != nil {
		t.Fatal(err)
	}
	k := config.ServiceKey{Addr: netip.AddrFrom4([4]byte{10, 96, 0, 5}), Port: 80}
	sid, _ := a.ServiceID(k)
	cid, _ := a.ClusterID("c5")
	bumpStats(t, coll, sid, cid)

	b := New(mp, quiet())
	r, err := b.Apply(m)
	if err != nil || !r.Full || r.ServicesAdopted != 20000 || r.ClustersAdopted != 20000 ||
		r.ServicesAdded+r.ServicesChanged+r.ClustersAdded+r.ServicesRemoved+r.ClustersRemoved != 0 {
		t.Fatalf("restart apply: %+v %v", r, err)
	}
	check(t, b, mp, m)
	for n, id := range a.clusterIDs {
		if got, _ := b.ClusterID(n); got != id {
			t.Fatalf("cluster %s: id %d after the restart, %d before", n, got, id)
		}
	}
	if s, err := mp.ServiceStatsOf(sid); err != nil || s.Redirected != 3 {
		t.Errorf("service counters after the restart: %+v %v, want 3 redirected kept", s, err)
	}
	if s, err := mp.ClusterStatsOf(cid); err != nil || s.Redirected != 3 {
		t.Errorf("cluster counters after the restart: %+v %v, want 3 redirected kept", s, err)
	}

	// a restart with every endpoint changed does not fit next to the
	// entries it replaces: refused before anything of it is written, with
	// the way out in the message; the old config keeps serving
	moved := model(20000, 7)
	for n, c := range moved.Clusters {
		c.Endpoints = slices.Clone(c.Endpoints)
		c.Endpoints[0].Addr = netip.AddrPortFrom(c.Endpoints[0].Addr.Addr(), 9999)
		moved.Clusters[n] = c
	}
	moved.Version = "moved"
	c := New(mp, quiet())
	if _, err := c.Apply(moved); !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "changes apply in place") {
		t.Fatalf("apply that does not fit: %v, want ErrCapacity naming the fix", err)
	}
	check(t, b, mp, m)
	// the way out: the old config, then the change while running
	if r, err := c.Apply(m); err != nil || r.ClustersAdopted != 20000 {
		t.Fatalf("restart with the old config: %+v %v", r, err)
	}
	if r, err := c.Apply(moved); err != nil || r.Full || r.ClustersChanged != 20000 {
		t.Fatalf("the change applied in place: %+v %v", r, err)
	}
	check(t, c, mp, moved)
}

// TestApplyRefusedKeepsAdopted: a restart with a config too large for the
// maps, none of whose services the maps hold, removes nothing of what they
// hold (the room those entries would leave is counted, not made, before
// the capacity check) and says the config is too large, not that it does
// not fit next to the old one.
func TestApplyRefusedKeepsAdopted(t *testing.T) {
	mp := newMaps(t)
	a := New(mp, quiet())
	m := model(100, 2)
	if _, err := a.Apply(m); err != nil {
		t.Fatal(err)
	}
	huge := &config.Model{Version: "huge", Services: map[config.ServiceKey]config.Service{}, Clusters: map[string]config.Cluster{}}
	for i := range maps.MaxSlots/maps.MaxSlotsPerCluster + 1 { // 1024 slots each: one cluster too many
		name := fmt.Sprintf("heavy%d", i)
		ip := netip.AddrFrom4([4]byte{10, 150, byte(i >> 8), byte(i)})
		huge.Clusters[name] = config.Cluster{Name: name, Endpoints: []config.Endpoint{
			{Addr: netip.AddrPortFrom(ip, 1), Weight: 1}, {Addr: netip.AddrPortFrom(ip, 2), Weight: 1023}}}
		huge.Services[config.ServiceKey{Addr: netip.AddrFrom4([4]byte{10, 97, byte(i >> 8), byte(i)}), Port: 80}] =
			config.Service{Name: name, Clusters: []config.WeightedCluster{{Name: name, Weight: 1}}}
	}
	_, err := New(mp, quiet()).Apply(huge)
	if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "need 263168 endpoint slots, the maps hold 262144") {
		t.Fatalf("apply of a config larger than the maps: %v, want ErrCapacity with the sizes", err)
	}
	check(t, a, mp, m) // every entry of m still there, nothing of huge
}

// bumpStats adds 3 redirected connects to a service's and a cluster's
// counters (as the program would count them).
func bumpStats(t *testing.T, coll *ebpf.Collection, sid, cid uint32) {
	t.Helper()
	for _, p := range []struct {
		name string
		id   uint32
	}{{maps.MapSvcStats, sid}, {maps.MapClusterStats, cid}} {
		m := testMap(t, coll, p.name)
		n, err := ebpf.PossibleCPU()
		if err != nil {
			t.Fatal(err)
		}
		per := make([]maps.StatsValue, n)
		per[0].Redirected = 3
		if err := m.Update(p.id, per, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
}

// A delta that names existing entries as added (a superset of the diff, as
// an xDS update may be) rewrites them under their IDs: no ID leaks, nothing
// is left behind.
func TestApplyDeltaSuperset(t *testing.T) {
	mp := newMaps(t)
	a := New(mp, quiet())
	m1 := model(20, 3)
	if _, err := a.Apply(m1); err != nil {
		t.Fatal(err)
	}
	before := a.clFree.available()
	c5, _ := a.ClusterID("c5")
	m2 := model(20, 3)
	c := m2.Clusters["c5"]
	c.Endpoints = c.Endpoints[:1]
	m2.Clusters["c5"] = c
	m2.Version = "v2"
	k5 := config.ServiceKey{Addr: netip.AddrFrom4([4]byte{10, 96, 0, 5}), Port: 80}
	if _, err := a.ApplyDelta(m2, config.Delta{ClustersAdded: []string{"c5"}, ServicesAdded: []config.ServiceKey{k5}}); err != nil {
		t.Fatal(err)
	}
	check(t, a, mp, m2)
	if id, _ := a.ClusterID("c5"); id != c5 || a.clFree.available() != before {
		t.Errorf("cluster c5 now id %d (was %d), %d ids free (were %d)", id, c5, a.clFree.available(), before)
	}
}

// Nothing of a delta the maps have no room for is written.
func TestApplyDeltaCapacity(t *testing.T) {
	mp := newMaps(t)
	a := New(mp, quiet())
	m1 := model(100, 1000) // 100,000 slots
	if _, err := a.Apply(m1); err != nil {
		t.Fatal(err)
	}
	m2 := model(300, 1000) // 300,000 slots: more than the map holds
	m2.Version = "too big"
	r, err := a.Apply(m2)
	if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "endpoint slots") {
		t.Fatalf("apply over capacity: %+v %v, want ErrCapacity about slots", r, err)
	}
	check(t, a, mp, m1)
	if a.dirty {
		t.Fatal("a refused apply marked the maps dirty")
	}
	m3 := model(200, 1000)
	m3.Version = "fits"
	if r, err := a.Apply(m3); err != nil || r.Full || r.ClustersAdded != 100 {
		t.Fatalf("apply that fits: %+v %v", r, err)
	}
	check(t, a, mp, m3)
}

// After a failed write the next apply reconciles from what the maps hold:
// entries of neither model, slots outside every table, a service pointing
// at the wrong cluster are all put right.
func TestApplyReconcilesAfterFailure(t *testing.T) {
	mp, coll := newMapsColl(t)
	a := New(mp, quiet())
	m1 := model(30, 4)
	if _, err := a.Apply(m1); err != nil {
		t.Fatal(err)
	}
	// the debris a failed apply can leave
	c2, _ := a.ClusterID("c2")
	c4, _ := a.ClusterID("c4")
	s2key, _ := serviceKey(config.ServiceKey{Addr: netip.AddrFrom4([4]byte{10, 96, 0, 2}), Port: 80})
	s2, err := mp.LookupService(s2key)
	if err != nil {
		t.Fatal(err)
	}
	s2.Clusters[0].ClusterID = c4 // s2 now sends to c4's endpoints
	if err := testMap(t, coll, maps.MapServices).Update(s2key, s2, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	stray := maps.MustAddr("10.99.0.1:80")
	if err := mp.PutService(stray, maps.Service{ID: 31000, Clusters: []maps.WeightedCluster{{ClusterID: c2, Weight: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := mp.PutCluster(30000, maps.PolicyRandom, []maps.Addr{maps.MustAddr("10.250.0.1:1")}); err != nil {
		t.Fatal(err)
	}
	orphan := maps.SlotKey{ClusterID: c2, Slot: 900}
	if err := testMap(t, coll, maps.MapSlots).Update(orphan, maps.MustAddr("10.250.0.2:1"), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	a.dirty = true // as a failed write leaves it

	m2 := model(30, 4)
	m2.Version = "after failure"
	r, err := a.Apply(m2)
	if err != nil || !r.Full || r.ServicesRemoved != 1 || r.ServicesChanged != 1 || r.ClustersRemoved != 1 {
		t.Fatalf("reconciling apply: %+v %v", r, err)
	}
	check(t, a, mp, m2)
	if a.dirty {
		t.Fatal("still dirty after a successful apply")
	}
}

func testMap(t *testing.T, coll *ebpf.Collection, name string) *ebpf.Map {
	t.Helper()
	m := coll.Maps[name]
	if m == nil {
		t.Fatalf("no map %s", name)
	}
	return m
}

func TestIDsComeBackLate(t *testing.T) {
	s := newIDs(4)
	var got []uint32
	for range 3 {
		id, _ := s.take()
		got = append(got, id)
	}
	s.give(1)
	s.give(0)
	s.reserve(3)
	if s.available() != 2 {
		t.Fatalf("available %d, want 2", s.available())
	}
	for range 2 {
		id, _ := s.take()
		got = append(got, id)
	}
	if _, ok := s.take(); ok {
		t.Fatal("took more ids than there are")
	}
	// never used first (none left after 0-2, 3 reserved), then oldest released first
	if want := []uint32{0, 1, 2, 1, 0}; !slices.Equal(got, want) {
		t.Fatalf("ids handed out %v, want %v", got, want)
	}
}

// The ten-thousand-service config of the goals (< 1 s to apply).
func BenchmarkApplyFull10kx10(b *testing.B) {
	m := model(10000, 10)
	for b.Loop() {
		b.StopTimer()
		mp := newMaps(b)
		a := New(mp, quiet())
		b.StartTimer()
		if _, err := a.Apply(m); err != nil {
			b.Fatal(err)
		}
	}
}

// A restart over maps that hold the same 10k services: read back, compare,
// nothing written (the full apply of a restarted daemon).
func BenchmarkApplyRestart10kx10(b *testing.B) {
	m := model(10000, 10)
	mp := newMaps(b)
	if _, err := New(mp, quiet()).Apply(m); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r, err := New(mp, quiet()).Apply(m)
		if err != nil || r.ClustersAdopted != 10000 || r.ServicesAdopted != 10000 {
			b.Fatalf("%+v %v", r, err)
		}
	}
}

// One endpoint change on top of 10k services (goal < 1 ms), as an xDS
// update delivers it: the changed cluster is known (ApplyDelta).
func BenchmarkApplyDeltaOneEndpoint(b *testing.B) {
	a, models := oneEndpointSetup(b)
	d := config.Delta{ClustersChanged: []string{"c5000"}}
	i := 0
	for b.Loop() {
		r, err := a.ApplyDelta(models[i%2], d)
		if err != nil || r.ClustersChanged != 1 {
			b.Fatalf("%+v %v", r, err)
		}
		i++
	}
}

// The same change found by comparing whole models (a config file reload).
func BenchmarkApplyOneEndpointChange(b *testing.B) {
	a, models := oneEndpointSetup(b)
	i := 0
	for b.Loop() {
		r, err := a.Apply(models[i%2])
		if err != nil || r.ClustersChanged != 1 {
			b.Fatalf("%+v %v", r, err)
		}
		i++
	}
}

func oneEndpointSetup(b *testing.B) (*Applier, []*config.Model) {
	mp := newMaps(b)
	a := New(mp, quiet())
	base := model(10000, 10)
	if _, err := a.Apply(base); err != nil {
		b.Fatal(err)
	}
	alt := model(10000, 10)
	c := alt.Clusters["c5000"]
	c.Endpoints = append([]config.Endpoint(nil), c.Endpoints...)
	c.Endpoints[3].Addr = netip.MustParseAddrPort("10.250.0.1:9999")
	alt.Clusters["c5000"] = c
	alt.Version = "alt"
	return a, []*config.Model{alt, base}
}
