package apply

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
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
	return m
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

// check verifies the maps hold exactly model m as a knows it.
func check(t *testing.T, a *Applier, mp *maps.Maps, m *config.Model) {
	t.Helper()
	all, err := mp.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(m.Services) {
		t.Fatalf("maps hold %d services, model %d", len(all), len(m.Services))
	}
	for k, s := range m.Services {
		key, _ := serviceKey(k)
		v, ok := all[key]
		id, _ := a.ServiceID(k)
		if !ok || v.ServiceID != id || int(v.ClusterCount) != len(s.Clusters) {
			t.Fatalf("service %s: %+v (id %d)", k, v, id)
		}
		for i, wc := range s.Clusters {
			cid, _ := a.ClusterID(wc.Name)
			if v.Clusters[i].ClusterID != cid {
				t.Fatalf("service %s cluster %d: id %d, want %d", k, i, v.Clusters[i].ClusterID, cid)
			}
			_, slots, err := mp.LookupCluster(cid)
			if err != nil || len(slots) != len(m.Clusters[wc.Name].Endpoints) {
				t.Fatalf("cluster %s: %d slots %v", wc.Name, len(slots), err)
			}
		}
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
	newKey := config.ServiceKey{Addr: netip.MustParseAddr("10.97.0.1"), Port: 443}
	m2.Services[newKey] = config.Service{Name: "new", Clusters: []config.WeightedCluster{{Name: "c7", Weight: 1}}}
	m2.Version = "v2"
	r, err = a.Apply(m2)
	if err != nil || r.Full || r.ClustersChanged != 1 || r.ServicesRemoved != 1 || r.ClustersRemoved != 1 || r.ServicesAdded != 1 {
		t.Fatalf("incremental apply: %+v %v", r, err)
	}
	check(t, a, mp, m2)
	if _, _, err := mp.LookupCluster(999); err == nil {
		t.Error("unexpected cluster")
	}

	// a new Applier (restarted daemon) over the same maps: full replace,
	// new IDs disjoint from the adopted ones, old clusters deleted
	oldIDs := map[uint32]bool{}
	for _, id := range a.clusterIDs {
		oldIDs[id] = true
	}
	b := New(mp, quiet())
	m3 := model(20, 2)
	r, err = b.Apply(m3)
	stale := 0 // m2's services that m3 does not have
	for k := range m2.Services {
		if _, ok := m3.Services[k]; !ok {
			stale++
		}
	}
	if err != nil || !r.Full || r.ServicesRemoved != stale || r.ClustersRemoved != len(m2.Clusters) {
		t.Fatalf("adopting apply: %+v %v (had %d services, %d clusters)", r, err, len(m2.Services), len(m2.Clusters))
	}
	check(t, b, mp, m3)
	for n, id := range b.clusterIDs {
		if oldIDs[id] {
			t.Errorf("cluster %s reuses adopted id %d while the old entry was live", n, id)
		}
	}
	for id := range oldIDs {
		if _, _, err := mp.LookupCluster(id); err == nil {
			t.Errorf("adopted cluster %d not deleted", id)
		}
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
