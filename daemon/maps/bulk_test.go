package maps

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

type bulkConfig struct {
	clusters []Cluster
	services []ServiceEntry
}

// bulkTable builds services × endpoints: service i -> cluster i -> endpoints
// (weights 1, or 1..3 when weighted) expanded with SlotTable.
func bulkTable(t *testing.T, services, endpoints int, weighted bool) bulkConfig {
	t.Helper()
	var cfg bulkConfig
	eps := make([]WeightedEndpoint, endpoints)
	for i := 0; i < services; i++ {
		for j := range eps {
			w := uint32(1)
			if weighted {
				w = uint32(1 + (i+j)%3)
			}
			ip := netip.AddrFrom4([4]byte{10, byte(200 + i>>16), byte(i >> 8), byte(i)})
			eps[j] = WeightedEndpoint{Addr: netip.AddrPortFrom(ip, uint16(8000+j)), Weight: w}
		}
		slots, err := SlotTable(eps)
		if err != nil {
			t.Fatal(err)
		}
		cfg.clusters = append(cfg.clusters, Cluster{ID: uint32(i), Policy: Policy(i % 2), Slots: slots})
		vip := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		key, err := AddrFrom(netip.AddrPortFrom(vip, 80))
		if err != nil {
			t.Fatal(err)
		}
		cfg.services = append(cfg.services, ServiceEntry{Key: key, Service: Service{ID: uint32(i), Clusters: []WeightedCluster{{ClusterID: uint32(i)}}}})
	}
	return cfg
}

func (m *Maps) apply(cfg bulkConfig) error {
	if err := m.PutClusters(cfg.clusters); err != nil {
		return err
	}
	return m.PutServices(cfg.services)
}

func countEntries(t *testing.T, m *Maps) (slots, clusters, services int) {
	t.Helper()
	var sk SlotKey
	var a Addr
	it := m.slots.Iterate()
	for it.Next(&sk, &a) {
		slots++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	var id uint32
	var cv ClusterValue
	it = m.clusters.Iterate()
	for it.Next(&id, &cv) {
		clusters++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	var sv ServiceValue
	it = m.services.Iterate()
	for it.Next(&a, &sv) {
		services++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return
}

func verifySample(t *testing.T, m *Maps, cfg bulkConfig) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 200; n++ {
		i := r.IntN(len(cfg.clusters))
		c := cfg.clusters[i]
		cv, slots, err := m.LookupCluster(c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cv.Policy != uint32(c.Policy) || !reflect.DeepEqual(slots, c.Slots) {
			t.Fatalf("cluster %d: %+v %v, want %v %v", c.ID, cv, slots, c.Policy, c.Slots)
		}
		s := cfg.services[i]
		sv, err := m.LookupService(s.Key)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := s.Service.Value()
		if sv != want {
			t.Fatalf("service %s: %+v, want %+v", s.Key, sv, want)
		}
	}
}

// TestBulkApply loads 10,000 services × 10 endpoints (and a weighted
// variant, then a shrink to 5 endpoints) with batch operations and with the
// one-element fallback, checking the content. Apply times are measured by
// the benchmarks in daemon/apply (make bench), not asserted here.
func TestBulkApply(t *testing.T) {
	testnet.RequireRoot(t)
	const services, endpoints = 10000, 10
	start := time.Now()
	full := bulkTable(t, services, endpoints, false)
	weighted := bulkTable(t, services, endpoints, true)
	shrunk := bulkTable(t, services, endpoints/2, false)
	t.Logf("expanded 3 × %d slot tables in %s", services, time.Since(start))

	for _, mode := range []struct {
		name    string
		noBatch bool
	}{{"batch", false}, {"fallback", true}} {
		t.Run(mode.name, func(t *testing.T) {
			objs, err := Open(objDir(t, variant{skStorage: true}), OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer objs.Close()
			objs.noBatch = mode.noBatch
			if !mode.noBatch {
				// Batch operations must really be in use on this kernel.
				if _, err := objs.slots.BatchUpdate([]SlotKey{{ClusterID: 1 << 30}}, []Addr{MustAddr("10.0.0.1:1")}, nil); err != nil {
					t.Fatalf("batch update not available: %v", err)
				}
				if _, err := objs.slots.BatchDelete([]SlotKey{{ClusterID: 1 << 30}}, nil); err != nil {
					t.Fatalf("batch delete: %v", err)
				}
			}
			for _, step := range []struct {
				name  string
				cfg   bulkConfig
				slots int
			}{
				{"10000x10", full, services * endpoints},
				{"weighted", weighted, slotsIn(weighted)},
				{"shrink to 5", shrunk, services * endpoints / 2},
			} {
				start := time.Now()
				if err := objs.apply(step.cfg); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				d := time.Since(start)
				t.Logf("%s: applied %d services, %d clusters, %d slots in %s", step.name, services, services, step.slots, d)
				sl, cl, sv := countEntries(t, objs.Maps)
				if sl != step.slots || cl != services || sv != services {
					t.Errorf("%s: maps hold %d slots, %d clusters, %d services; want %d, %d, %d", step.name, sl, cl, sv, step.slots, services, services)
				}
				verifySample(t, objs.Maps, step.cfg)
			}
		})
	}
}

func slotsIn(cfg bulkConfig) int {
	n := 0
	for _, c := range cfg.clusters {
		n += len(c.Slots)
	}
	return n
}

func TestPutValidation(t *testing.T) {
	testnet.RequireRoot(t)
	objs, err := Open(objDir(t, variant{skStorage: true}), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	for i, err := range []error{
		objs.PutCluster(MaxClusterIDs, PolicyRoundRobin, nil),
		objs.PutCluster(1, Policy(7), nil),
		objs.PutCluster(1, PolicyRandom, []Addr{MustAddr("10.0.0.1:1"), MustAddr("[fd00::1]:1")}),
		objs.PutCluster(1, PolicyRandom, make([]Addr, MaxSlotsPerCluster+1)),
		objs.PutService(Addr{Family: 3}, Service{ID: 1}),
		objs.PutService(MustAddr("10.0.0.1:1"), Service{ID: MaxServices}),
	} {
		if err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	if _, _, err := objs.LookupCluster(1); err == nil {
		t.Error("rejected cluster was written")
	}
}
