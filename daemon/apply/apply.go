package apply

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/daemon/maps"
)

// ErrCapacity is returned when a model needs more IDs or slots than the maps hold.
var ErrCapacity = errors.New("data plane capacity exceeded")

// Result says what one Apply wrote.
type Result struct {
	Version                                         string
	ServicesAdded, ServicesChanged, ServicesRemoved int
	ClustersAdded, ClustersChanged, ClustersRemoved int
	Full                                            bool // the first apply: everything (re)written
	Duration                                        time.Duration
}

// Applier keeps the maps in step with the current model. It is not safe for
// concurrent use; the daemon serialises applies.
type Applier struct {
	m          *maps.Maps
	log        logrus.FieldLogger
	cur        *config.Model
	svcIDs     map[config.ServiceKey]uint32
	clusterIDs map[string]uint32
	svcFree    *ids
	clFree     *ids
}

// New returns an Applier over m. Nothing is written until Apply.
func New(m *maps.Maps, log logrus.FieldLogger) *Applier {
	return &Applier{m: m, log: log.WithField("subsys", "apply"),
		svcIDs: map[config.ServiceKey]uint32{}, clusterIDs: map[string]uint32{},
		svcFree: newIDs(maps.MaxServices), clFree: newIDs(maps.MaxClusterIDs)}
}

// Current returns the model last applied (nil before the first Apply).
func (a *Applier) Current() *config.Model { return a.cur }

// ServiceID and ClusterID return the map IDs of the current entries.
func (a *Applier) ServiceID(k config.ServiceKey) (uint32, bool) { id, ok := a.svcIDs[k]; return id, ok }
func (a *Applier) ClusterID(name string) (uint32, bool)         { id, ok := a.clusterIDs[name]; return id, ok }

// ServiceNames maps service IDs to their keys; ClusterNames maps cluster IDs to names.
func (a *Applier) ServiceNames() map[uint32]config.ServiceKey {
	out := make(map[uint32]config.ServiceKey, len(a.svcIDs))
	for k, id := range a.svcIDs {
		out[id] = k
	}
	return out
}

func (a *Applier) ClusterNames() map[uint32]string {
	out := make(map[uint32]string, len(a.clusterIDs))
	for n, id := range a.clusterIDs {
		out[id] = n
	}
	return out
}

// Apply brings the maps to model next, writing only what differs from the
// current model. On error the maps may hold part of next; the Applier's
// bookkeeping stays consistent with what was written and a later Apply
// converges.
func (a *Applier) Apply(next *config.Model) (Result, error) {
	if a.cur == nil {
		start := time.Now()
		r, err := a.full(next)
		r.Duration = time.Since(start)
		return r, err
	}
	return a.ApplyDelta(next, config.Diff(a.cur, next))
}

// ApplyDelta is Apply for a caller that already knows what changed (an xDS
// update names its resources), saving the whole-model comparison. d must be
// config.Diff(current, next) or a superset of it.
func (a *Applier) ApplyDelta(next *config.Model, d config.Delta) (Result, error) {
	if a.cur == nil {
		return a.Apply(next)
	}
	start := time.Now()
	r := Result{Version: next.Version,
		ServicesAdded: len(d.ServicesAdded), ServicesChanged: len(d.ServicesChanged), ServicesRemoved: len(d.ServicesRemoved),
		ClustersAdded: len(d.ClustersAdded), ClustersChanged: len(d.ClustersChanged), ClustersRemoved: len(d.ClustersRemoved)}
	if d.Empty() {
		a.cur = next
		r.Duration = time.Since(start)
		return r, nil
	}

	// 1. clusters added or changed (changed ones keep their ID)
	var newCl []string
	for _, n := range d.ClustersAdded {
		id, ok := a.clFree.take()
		if !ok {
			a.releaseClusters(newCl)
			return r, fmt.Errorf("apply: cluster %s: no free cluster id (max %d): %w", n, maps.MaxClusterIDs, ErrCapacity)
		}
		a.clusterIDs[n] = id
		newCl = append(newCl, n)
	}
	cls, err := a.clusterEntries(next, append(append([]string(nil), d.ClustersAdded...), d.ClustersChanged...))
	if err == nil {
		err = a.resetClusterStats(newCl)
	}
	if err == nil {
		err = a.m.PutClusters(cls)
	}
	if err != nil {
		a.releaseClusters(newCl)
		return r, fmt.Errorf("apply: write clusters: %w", err)
	}
	// 2. services added or changed
	var newSvc []config.ServiceKey
	for _, k := range d.ServicesAdded {
		id, ok := a.svcFree.take()
		if !ok {
			return r, fmt.Errorf("apply: service %s: no free service id (max %d): %w", k, maps.MaxServices, ErrCapacity)
		}
		a.svcIDs[k] = id
		newSvc = append(newSvc, k)
	}
	svcs, err := a.serviceEntries(next, append(append([]config.ServiceKey(nil), d.ServicesAdded...), d.ServicesChanged...))
	if err == nil {
		err = a.resetServiceStats(newSvc)
	}
	if err == nil {
		err = a.m.PutServices(svcs)
	}
	if err != nil {
		for _, k := range newSvc {
			a.svcFree.give(a.svcIDs[k])
			delete(a.svcIDs, k)
		}
		return r, fmt.Errorf("apply: write services: %w", err)
	}
	// 3. removals: services, then the clusters nothing names any more
	for _, k := range d.ServicesRemoved {
		key, err := serviceKey(k)
		if err == nil {
			err = a.m.DeleteService(key)
		}
		if err != nil {
			return r, fmt.Errorf("apply: remove service %s: %w", k, err)
		}
		a.svcFree.give(a.svcIDs[k])
		delete(a.svcIDs, k)
	}
	for _, n := range d.ClustersRemoved {
		if err := a.m.DeleteCluster(a.clusterIDs[n]); err != nil {
			return r, fmt.Errorf("apply: remove cluster %s: %w", n, err)
		}
		a.clFree.give(a.clusterIDs[n])
		delete(a.clusterIDs, n)
	}
	a.cur = next
	r.Duration = time.Since(start)
	a.log.WithFields(logrus.Fields{"version": next.Version, "services_added": r.ServicesAdded, "services_changed": r.ServicesChanged,
		"services_removed": r.ServicesRemoved, "clusters_added": r.ClustersAdded, "clusters_changed": r.ClustersChanged,
		"clusters_removed": r.ClustersRemoved, "duration_ms": float64(r.Duration.Microseconds()) / 1000}).Info("config applied")
	return r, nil
}

// full writes next over whatever the maps hold (state adopted from a
// previous daemon) without a window where a VIP is unserved or points at a
// half-written cluster.
func (a *Applier) full(next *config.Model) (Result, error) {
	old, err := a.m.Services()
	if err != nil {
		return Result{}, fmt.Errorf("apply: read adopted services: %w", err)
	}
	// IDs in use by the adopted entries stay reserved until they are deleted.
	oldClusters := map[uint32]bool{}
	for _, v := range old {
		a.svcFree.reserve(v.ServiceID)
		for i := uint32(0); i < v.ClusterCount && i < maps.MaxClusters; i++ {
			oldClusters[v.Clusters[i].ClusterID] = true
			a.clFree.reserve(v.Clusters[i].ClusterID)
		}
	}
	oldSvcIDs := map[uint32]bool{}
	for _, v := range old {
		oldSvcIDs[v.ServiceID] = true
	}
	names := next.SortedClusterNames()
	for _, n := range names {
		id, ok := a.clFree.take()
		if !ok {
			return Result{}, fmt.Errorf("apply: %d clusters (plus %d adopted) exceed %d ids: %w", len(names), len(oldClusters), maps.MaxClusterIDs, ErrCapacity)
		}
		a.clusterIDs[n] = id
	}
	keys := next.SortedServiceKeys()
	for _, k := range keys {
		id, ok := a.svcFree.take()
		if !ok {
			return Result{}, fmt.Errorf("apply: %d services (plus %d adopted) exceed %d ids: %w", len(keys), len(old), maps.MaxServices, ErrCapacity)
		}
		a.svcIDs[k] = id
	}
	cls, err := a.clusterEntries(next, names)
	if err == nil {
		err = a.resetClusterStats(names)
	}
	if err == nil {
		err = a.m.PutClusters(cls)
	}
	if err != nil {
		return Result{}, fmt.Errorf("apply: write clusters: %w", err)
	}
	svcs, err := a.serviceEntries(next, keys)
	if err == nil {
		err = a.resetServiceStats(keys)
	}
	if err == nil {
		err = a.m.PutServices(svcs)
	}
	if err != nil {
		return Result{}, fmt.Errorf("apply: write services: %w", err)
	}
	// Adopted entries the new model does not have: services, then clusters.
	want := map[maps.Addr]bool{}
	for _, e := range svcs {
		want[e.Key] = true
	}
	removedSvc := 0
	for k := range old {
		if !want[k] {
			if err := a.m.DeleteService(k); err != nil {
				return Result{}, fmt.Errorf("apply: remove adopted service %s: %w", k, err)
			}
			removedSvc++
		}
	}
	// new IDs never collide with reserved old ones: release all old IDs
	for id := range oldSvcIDs {
		a.svcFree.give(id)
	}
	removedCl := 0
	for id := range oldClusters {
		if err := a.m.DeleteCluster(id); err != nil {
			return Result{}, fmt.Errorf("apply: remove adopted cluster %d: %w", id, err)
		}
		a.clFree.give(id)
		removedCl++
	}
	a.cur = next
	r := Result{Version: next.Version, Full: true, ServicesAdded: len(keys), ClustersAdded: len(names),
		ServicesRemoved: removedSvc, ClustersRemoved: removedCl}
	a.log.WithFields(logrus.Fields{"version": next.Version, "services": len(keys), "clusters": len(names),
		"adopted_services_replaced": len(old), "adopted_clusters_removed": removedCl}).Info("config applied (full)")
	return r, nil
}

func (a *Applier) clusterEntries(m *config.Model, names []string) ([]maps.Cluster, error) {
	out := make([]maps.Cluster, 0, len(names))
	for _, n := range names {
		c := m.Clusters[n]
		eps := make([]maps.WeightedEndpoint, len(c.Endpoints))
		for i, e := range c.Endpoints {
			eps[i] = maps.WeightedEndpoint{Addr: e.Addr, Weight: e.Weight}
		}
		var slots []maps.Addr
		if len(eps) > 0 {
			var err error
			if slots, err = maps.SlotTable(eps); err != nil {
				return nil, fmt.Errorf("cluster %s: %w", n, err)
			}
		}
		pol := maps.PolicyRoundRobin
		if c.Policy == config.Random {
			pol = maps.PolicyRandom
		}
		out = append(out, maps.Cluster{ID: a.clusterIDs[n], Policy: pol, Slots: slots})
	}
	return out, nil
}

func (a *Applier) serviceEntries(m *config.Model, keys []config.ServiceKey) ([]maps.ServiceEntry, error) {
	out := make([]maps.ServiceEntry, 0, len(keys))
	for _, k := range keys {
		s := m.Services[k]
		key, err := serviceKey(k)
		if err != nil {
			return nil, err
		}
		svc := maps.Service{ID: a.svcIDs[k]}
		for _, wc := range s.Clusters {
			id, ok := a.clusterIDs[wc.Name]
			if !ok {
				return nil, fmt.Errorf("service %s: cluster %s has no id", k, wc.Name)
			}
			svc.Clusters = append(svc.Clusters, maps.WeightedCluster{ClusterID: id, Weight: wc.Weight})
		}
		out = append(out, maps.ServiceEntry{Key: key, Service: svc})
	}
	return out, nil
}

func (a *Applier) resetClusterStats(names []string) error {
	for _, n := range names {
		if err := a.m.ResetClusterStats(a.clusterIDs[n]); err != nil {
			return err
		}
	}
	return nil
}

func (a *Applier) resetServiceStats(keys []config.ServiceKey) error {
	for _, k := range keys {
		if err := a.m.ResetServiceStats(a.svcIDs[k]); err != nil {
			return err
		}
	}
	return nil
}

func (a *Applier) releaseClusters(names []string) {
	for _, n := range names {
		a.clFree.give(a.clusterIDs[n])
		delete(a.clusterIDs, n)
	}
}

// serviceKey converts a model key to the services-map key; an unspecified
// address is the wildcard of its family.
func serviceKey(k config.ServiceKey) (maps.Addr, error) {
	if k.Wildcard() {
		fam := maps.FamilyIPv4
		if k.Addr.Is6() {
			fam = maps.FamilyIPv6
		}
		return maps.WildcardAddr(fam, k.Port), nil
	}
	a, err := maps.AddrFrom(netip.AddrPortFrom(k.Addr, k.Port))
	if err != nil {
		return maps.Addr{}, fmt.Errorf("service %s: %w", k, err)
	}
	return a, nil
}

// ids hands out IDs below max: released ones first, then never-used ones.
type ids struct {
	used map[uint32]bool
	next uint32
	max  uint32
	free []uint32
}

func newIDs(max int) *ids { return &ids{used: map[uint32]bool{}, max: uint32(max)} }

func (s *ids) take() (uint32, bool) {
	for len(s.free) > 0 {
		id := s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		if !s.used[id] {
			s.used[id] = true
			return id, true
		}
	}
	for ; s.next < s.max; s.next++ {
		if !s.used[s.next] {
			s.used[s.next] = true
			s.next++
			return s.next - 1, true
		}
	}
	return 0, false
}

// reserve marks an ID in use by an entry the Applier did not write.
func (s *ids) reserve(id uint32) { s.used[id] = true }

func (s *ids) give(id uint32) {
	if s.used[id] {
		delete(s.used, id)
		s.free = append(s.free, id)
	}
}
