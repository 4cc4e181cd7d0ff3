package apply

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
	// Full is set for an apply that reconciled the maps as a whole: the
	// first one (over entries adopted from a previous daemon, if any) and
	// the one after a failed apply.
	Full bool
	// ServicesAdopted and ClustersAdopted count the entries of a full apply
	// that the maps already held as the model wants them: kept, not
	// rewritten (a restart with an unchanged config writes nothing).
	ServicesAdopted, ClustersAdopted int
	Duration                         time.Duration
}

// Applier keeps the maps in step with the current model. It is not safe for
// concurrent use; the daemon serialises applies.
type Applier struct {
	m          *maps.Maps
	log        logrus.FieldLogger
	cur        *config.Model
	svcIDs     map[config.ServiceKey]uint32
	clusterIDs map[string]uint32
	// slots is the slot-table length of each cluster in clusterIDs;
	// slotsUsed their sum.
	slots     map[string]int
	slotsUsed int
	svcFree   *ids
	clFree    *ids
	// dirty is set when an apply failed after it had started writing: the
	// maps may hold parts of two models, and the bookkeeping may not match
	// them. The next Apply reconciles from what the maps hold.
	dirty bool
}

// New returns an Applier over m. Nothing is written until Apply.
func New(m *maps.Maps, log logrus.FieldLogger) *Applier {
	a := &Applier{m: m, log: log.WithField("subsys", "apply")}
	a.forget()
	return a
}

// forget drops the bookkeeping (IDs, slot counts, current model).
func (a *Applier) forget() {
	a.cur = nil
	a.svcIDs, a.clusterIDs, a.slots, a.slotsUsed = map[config.ServiceKey]uint32{}, map[string]uint32{}, map[string]int{}, 0
	a.svcFree, a.clFree = newIDs(maps.MaxServices), newIDs(maps.MaxClusterIDs)
}

// SlotsUsed returns how many endpoint slots (km_slots entries, of
// maps.MaxSlots) the current clusters' tables take.
func (a *Applier) SlotsUsed() int { return a.slotsUsed }

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
// current model. Capacity is checked before anything is written. When a
// write fails part way, the maps may hold parts of both models; the next
// Apply then reconciles them from what they hold (a full apply).
func (a *Applier) Apply(next *config.Model) (Result, error) {
	if a.cur == nil || a.dirty {
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
	if a.cur == nil || a.dirty {
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

	// Everything that can be refused is refused before the first write.
	written := append(append([]string(nil), d.ClustersAdded...), d.ClustersChanged...)
	tables, err := clusterTables(next, written)
	if err != nil {
		return r, fmt.Errorf("apply: %w", err)
	}
	if err := a.checkDelta(d, written, tables); err != nil {
		return r, err
	}

	// From here on a failure leaves the maps between two models.
	a.dirty = true
	// 1. clusters added or changed (changed ones keep their ID, and are
	// rewritten in place: slots first, then the count)
	for _, n := range d.ClustersAdded {
		if _, ok := a.clusterIDs[n]; ok {
			continue // "added" again (a superset delta): rewritten in place
		}
		id, _ := a.clFree.take() // checked above
		a.clusterIDs[n] = id
		if err := a.m.ResetClusterStats(id); err != nil {
			return r, fmt.Errorf("apply: cluster %s: %w", n, err)
		}
	}
	for i, n := range written {
		tables[i].ID = a.clusterIDs[n]
	}
	if err := a.m.PutClusters(tables); err != nil {
		return r, fmt.Errorf("apply: write clusters: %w", err)
	}
	for i, n := range written {
		a.slotsUsed += len(tables[i].Slots) - a.slots[n]
		a.slots[n] = len(tables[i].Slots)
	}
	// 2. services added or changed
	for _, k := range d.ServicesAdded {
		if _, ok := a.svcIDs[k]; ok {
			continue // "added" again: switched over in one update
		}
		id, _ := a.svcFree.take() // checked above
		a.svcIDs[k] = id
		if err := a.m.ResetServiceStats(id); err != nil {
			return r, fmt.Errorf("apply: service %s: %w", k, err)
		}
	}
	svcs, err := a.serviceEntries(next, append(append([]config.ServiceKey(nil), d.ServicesAdded...), d.ServicesChanged...))
	if err == nil {
		err = a.m.PutServices(svcs)
	}
	if err != nil {
		return r, fmt.Errorf("apply: write services: %w", err)
	}
	// 3. removals: services, then the clusters nothing names any more
	for _, k := range d.ServicesRemoved {
		id, ok := a.svcIDs[k]
		if !ok {
			continue
		}
		key, err := serviceKey(k)
		if err == nil {
			err = a.m.DeleteService(key)
		}
		if err != nil {
			return r, fmt.Errorf("apply: remove service %s: %w", k, err)
		}
		a.svcFree.give(id)
		delete(a.svcIDs, k)
	}
	for _, n := range d.ClustersRemoved {
		id, ok := a.clusterIDs[n]
		if !ok {
			continue
		}
		if err := a.m.DeleteCluster(id); err != nil {
			return r, fmt.Errorf("apply: remove cluster %s: %w", n, err)
		}
		a.clFree.give(id)
		delete(a.clusterIDs, n)
		a.slotsUsed -= a.slots[n]
		delete(a.slots, n)
	}
	a.cur, a.dirty = next, false
	r.Duration = time.Since(start)
	a.log.WithFields(logrus.Fields{"version": next.Version, "services_added": r.ServicesAdded, "services_changed": r.ServicesChanged,
		"services_removed": r.ServicesRemoved, "clusters_added": r.ClustersAdded, "clusters_changed": r.ClustersChanged,
		"clusters_removed": r.ClustersRemoved, "duration_ms": ms(r.Duration)}).Info("config applied")
	return r, nil
}

// checkDelta refuses a delta the maps have no room for: IDs for the added
// entries, and slots for the added tables plus the growth of changed ones
// (a table being rewritten holds its old and new slots until the end; the
// removed clusters' slots are freed last).
func (a *Applier) checkDelta(d config.Delta, written []string, tables []maps.Cluster) error {
	if n, free := len(d.ClustersAdded), a.clFree.available(); n > free {
		return fmt.Errorf("apply: %d clusters added, %d cluster ids free (of %d): %w", n, free, maps.MaxClusterIDs, ErrCapacity)
	}
	if n, free := len(d.ServicesAdded), a.svcFree.available(); n > free {
		return fmt.Errorf("apply: %d services added, %d service ids free (of %d): %w", n, free, maps.MaxServices, ErrCapacity)
	}
	need := 0
	for i, n := range written { // tables[i] is the new table of written[i]
		need += max(0, len(tables[i].Slots)-a.slots[n])
	}
	if free := maps.MaxSlots - a.slotsUsed; need > free {
		return fmt.Errorf("apply: the changed clusters need %d more endpoint slots, %d are free (of %d; weighted endpoints take up to %d slots a cluster): %w",
			need, free, maps.MaxSlots, maps.MaxSlotsPerCluster, ErrCapacity)
	}
	return nil
}

// full reconciles the maps with next from what they hold: entries adopted
// from a previous daemon, or left by a failed apply. It never lets a VIP go
// unserved or point at a half-written cluster, and writes only what differs:
//   - a cluster whose policy and slot table the maps already hold under some
//     ID keeps that ID and is not rewritten (whatever its name was);
//   - the other clusters are written under IDs no live entry uses;
//   - each service keeps its ID and is switched over in one update (none
//     when its entry is already right);
//   - then the adopted clusters nothing names any more, and slots outside
//     every table, are deleted.
//
// Adopted services and clusters the model does not need are deleted first,
// to make room; the model is refused (ErrCapacity) only when it cannot fit
// next to the adopted entries it replaces.
func (a *Applier) full(next *config.Model) (Result, error) {
	r := Result{Version: next.Version, Full: true}
	a.forget()
	a.dirty = true // until the maps hold next
	oldSvcs, err := a.m.Services()
	if err != nil {
		return r, fmt.Errorf("apply: read adopted services: %w", err)
	}
	oldCls, err := a.m.Clusters()
	if err != nil {
		return r, fmt.Errorf("apply: read adopted clusters: %w", err)
	}
	oldSlots, err := a.m.Slots()
	if err != nil {
		return r, fmt.Errorf("apply: read adopted slots: %w", err)
	}
	for _, v := range oldSvcs {
		a.svcFree.reserve(v.ServiceID)
	}
	for id := range oldCls {
		a.clFree.reserve(id)
	}

	// Clusters: take over adopted ones with the same content.
	names := next.SortedClusterNames()
	tables, err := clusterTables(next, names)
	if err != nil {
		return r, fmt.Errorf("apply: %w", err)
	}
	byContent := map[string][]uint32{}
	for id, v := range oldCls {
		if c, ok := storedContent(id, v, oldSlots); ok {
			byContent[c] = append(byContent[c], id)
		}
	}
	for _, ids := range byContent {
		slices.Sort(ids) // deterministic
	}
	wanted := map[string]int{} // clusters of next per content
	contents := make([]string, len(names))
	for i := range names {
		contents[i] = content(tables[i].Policy, tables[i].Slots)
		wanted[contents[i]]++
	}
	kept := map[uint32]bool{}
	var fresh []int // indexes into names
	for i, n := range names {
		ids := byContent[contents[i]]
		if len(ids) == 0 {
			fresh = append(fresh, i)
			continue
		}
		id := ids[0]
		// counters carry over only when the content names one cluster on both sides
		if len(ids) > 1 || wanted[contents[i]] > 1 {
			if err := a.m.ResetClusterStats(id); err != nil {
				return r, fmt.Errorf("apply: cluster %s: %w", n, err)
			}
		}
		byContent[contents[i]] = ids[1:]
		a.clusterIDs[n] = id
		kept[id] = true
		r.ClustersAdopted++
	}

	// Make room: adopted services next does not have, and adopted clusters
	// neither kept nor named by a remaining adopted service.
	keys := next.SortedServiceKeys()
	wantKey := make(map[maps.Addr]config.ServiceKey, len(keys))
	for _, k := range keys {
		mk, err := serviceKey(k)
		if err != nil {
			return r, fmt.Errorf("apply: %w", err)
		}
		wantKey[mk] = k
	}
	// What makes room: adopted services next does not have, and adopted
	// clusters neither kept nor named by a remaining adopted service. They
	// are removed only once next is known to fit in the room they leave.
	var gone []maps.Addr
	named := map[uint32]bool{}
	for mk, v := range oldSvcs {
		if _, ok := wantKey[mk]; !ok {
			gone = append(gone, mk)
			continue
		}
		for i := uint32(0); i < v.ClusterCount && i < maps.MaxClusters; i++ {
			named[v.Clusters[i].ClusterID] = true
		}
	}
	drop := func(id uint32) bool { return !kept[id] && !named[id] }

	// Capacity, before the first write.
	slotsHeld, clustersHeld := 0, 0
	for id, v := range oldCls {
		if !drop(id) {
			slotsHeld += int(v.SlotCount)
			clustersHeld++
		}
	}
	c := room{clusters: len(fresh), clustersTotal: len(names), clustersHeld: clustersHeld,
		clustersFree: a.clFree.available() + (len(oldCls) - clustersHeld), slotsHeld: slotsHeld,
		servicesFree: a.svcFree.available() + len(gone)}
	for i := range tables {
		c.slotsTotal += len(tables[i].Slots)
	}
	for _, i := range fresh {
		c.slots += len(tables[i].Slots)
	}
	for mk := range wantKey {
		if _, ok := oldSvcs[mk]; !ok {
			c.services++
		}
	}
	if err := c.check(); err != nil {
		return r, err
	}

	// Make room.
	slices.SortFunc(gone, func(x, y maps.Addr) int { return cmp.Compare(oldSvcs[x].ServiceID, oldSvcs[y].ServiceID) })
	for _, mk := range gone {
		if err := a.m.DeleteService(mk); err != nil {
			return r, fmt.Errorf("apply: remove adopted service %s: %w", mk, err)
		}
		a.svcFree.give(oldSvcs[mk].ServiceID)
		delete(oldSvcs, mk)
		r.ServicesRemoved++
	}
	if err := a.dropOrphanSlots(oldCls, oldSlots); err != nil {
		return r, err
	}
	if err := a.dropClusters(oldCls, drop, &r); err != nil {
		return r, err
	}

	// Write the clusters not taken over.
	var write []maps.Cluster
	for _, i := range fresh {
		id, _ := a.clFree.take()
		if err := a.m.ResetClusterStats(id); err != nil {
			return r, fmt.Errorf("apply: cluster %s: %w", names[i], err)
		}
		a.clusterIDs[names[i]] = id
		tables[i].ID = id
		write = append(write, tables[i])
	}
	if err := a.m.PutClusters(write); err != nil {
		return r, fmt.Errorf("apply: write clusters: %w", err)
	}
	r.ClustersAdded = len(write)
	for i, n := range names {
		a.slots[n] = len(tables[i].Slots)
		a.slotsUsed += len(tables[i].Slots)
	}

	// Services: keep the adopted ID of a key; write what differs.
	claimed := make(map[uint32]bool, len(oldSvcs))
	for _, k := range keys {
		mk, _ := serviceKey(k)
		if v, ok := oldSvcs[mk]; ok && !claimed[v.ServiceID] {
			a.svcIDs[k] = v.ServiceID
			claimed[v.ServiceID] = true
			continue
		}
		id, ok := a.svcFree.take()
		if !ok { // two adopted keys shared an ID: only possible in a damaged map
			return r, fmt.Errorf("apply: service %s: no free service id (max %d): %w", k, maps.MaxServices, ErrCapacity)
		}
		if err := a.m.ResetServiceStats(id); err != nil {
			return r, fmt.Errorf("apply: service %s: %w", k, err)
		}
		a.svcIDs[k] = id
	}
	entries, err := a.serviceEntries(next, keys)
	if err != nil {
		return r, fmt.Errorf("apply: write services: %w", err)
	}
	var changed []maps.ServiceEntry
	for _, e := range entries {
		v, err := e.Service.Value()
		if err != nil {
			return r, fmt.Errorf("apply: write services: %w", err)
		}
		if old, ok := oldSvcs[e.Key]; ok && old == v {
			r.ServicesAdopted++
			continue
		}
		if _, ok := oldSvcs[e.Key]; ok {
			r.ServicesChanged++
		} else {
			r.ServicesAdded++
		}
		changed = append(changed, e)
	}
	if err := a.m.PutServices(changed); err != nil {
		return r, fmt.Errorf("apply: write services: %w", err)
	}

	// The adopted clusters nothing names now.
	if err := a.dropClusters(oldCls, func(id uint32) bool { return !kept[id] }, &r); err != nil {
		return r, err
	}
	a.cur, a.dirty = next, false
	a.log.WithFields(logrus.Fields{"version": next.Version, "services": len(keys), "clusters": len(names),
		"services_written": len(changed), "services_kept": r.ServicesAdopted, "services_removed": r.ServicesRemoved,
		"clusters_written": r.ClustersAdded, "clusters_kept": r.ClustersAdopted, "clusters_removed": r.ClustersRemoved}).
		Info("config applied (full)")
	return r, nil
}

// room is what a full apply writes (clusters, of slots; services) next to
// the entries it keeps, and what the model needs in all.
type room struct {
	clusters, clustersTotal, clustersHeld, clustersFree int
	slots, slotsTotal, slotsHeld                        int
	services, servicesFree                              int
}

// check says whether the apply fits and, when not, whether the config is too
// large for the maps at all or only next to what they hold now.
func (c room) check() error {
	if c.clusters > c.clustersFree {
		if c.clustersTotal > maps.MaxClusterIDs {
			return fmt.Errorf("apply: %d clusters, the maps hold %d: %w", c.clustersTotal, maps.MaxClusterIDs, ErrCapacity)
		}
		return fmt.Errorf("apply: %d clusters to write next to %d still in use, %d cluster ids free (of %d); %s: %w",
			c.clusters, c.clustersHeld, c.clustersFree, maps.MaxClusterIDs, capacityFix, ErrCapacity)
	}
	if free := maps.MaxSlots - c.slotsHeld; c.slots > free {
		if c.slotsTotal > maps.MaxSlots {
			return fmt.Errorf("apply: the clusters need %d endpoint slots, the maps hold %d (a cluster's weighted endpoints take up to %d): %w",
				c.slotsTotal, maps.MaxSlots, maps.MaxSlotsPerCluster, ErrCapacity)
		}
		return fmt.Errorf("apply: the clusters to write need %d endpoint slots, %d are free next to those still in use (of %d); %s: %w",
			c.slots, free, maps.MaxSlots, capacityFix, ErrCapacity)
	}
	if c.services > c.servicesFree {
		return fmt.Errorf("apply: %d services to add, %d service ids free (of %d): %w", c.services, c.servicesFree, maps.MaxServices, ErrCapacity)
	}
	return nil
}

// capacityFix is the way out of a full apply that does not fit next to the
// entries it replaces.
const capacityFix = "the maps must hold the old and the new entries at once while they are replaced without a gap; " +
	"start with the configuration the node ran before, then change it while the daemon runs (changes apply in place), " +
	"or run kmesh-daemon uninstall first (connections are not redirected until the daemon is ready again)"

// dropClusters deletes the clusters of old that drop says to, and forgets
// them in old.
func (a *Applier) dropClusters(old map[uint32]maps.ClusterValue, drop func(uint32) bool, r *Result) error {
	ids := make([]uint32, 0, len(old))
	for id := range old {
		if drop(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := a.m.DeleteCluster(id); err != nil {
			return fmt.Errorf("apply: remove adopted cluster %d: %w", id, err)
		}
		a.clFree.give(id)
		delete(old, id)
		r.ClustersRemoved++
	}
	return nil
}

// dropOrphanSlots deletes the slots outside every table of old (left by an
// apply that failed between writing slots and publishing their count).
func (a *Applier) dropOrphanSlots(old map[uint32]maps.ClusterValue, slots map[maps.SlotKey]maps.Addr) error {
	var orphans []maps.SlotKey
	for k := range slots {
		if v, ok := old[k.ClusterID]; !ok || k.Slot >= v.SlotCount {
			orphans = append(orphans, k)
		}
	}
	if len(orphans) == 0 {
		return nil
	}
	if err := a.m.DeleteSlots(orphans); err != nil {
		return fmt.Errorf("apply: remove slots outside every cluster: %w", err)
	}
	a.log.WithField("slots", len(orphans)).Warn("removed endpoint slots outside every cluster (left by an apply that failed part way)")
	return nil
}

// storedContent returns the content key of the stored cluster id, or false
// when its table is not whole.
func storedContent(id uint32, v maps.ClusterValue, slots map[maps.SlotKey]maps.Addr) (string, bool) {
	if v.SlotCount > maps.MaxSlotsPerCluster {
		return "", false
	}
	table := make([]maps.Addr, v.SlotCount)
	for i := range table {
		s, ok := slots[maps.SlotKey{ClusterID: id, Slot: uint32(i)}]
		if !ok {
			return "", false
		}
		table[i] = s
	}
	return content(maps.Policy(v.Policy), table), true
}

// content is a cluster's identity in the maps: its policy and slot table.
func content(p maps.Policy, slots []maps.Addr) string {
	b := make([]byte, 0, 4+len(slots)*20) // 20: the size of an Addr
	b = binary.LittleEndian.AppendUint32(b, uint32(p))
	for _, s := range slots {
		b = append(b, s.Family, s.Pad, s.Port[0], s.Port[1])
		b = append(b, s.IP[:]...)
	}
	return string(b)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// clusterTables returns the map form of the named clusters of m (IDs unset).
func clusterTables(m *config.Model, names []string) ([]maps.Cluster, error) {
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
		out = append(out, maps.Cluster{Policy: pol, Slots: slots})
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

// ids hands out IDs below max: never-used ones first, then released ones,
// the longest-released first, so that an ID comes back as late as possible
// (sockets keep the IDs they were redirected by in km_orig_dst, and a
// scrape may pair an ID's counters with its previous name).
type ids struct {
	used     map[uint32]bool
	released map[uint32]bool // the IDs in free
	free     []uint32        // released, oldest first
	next     uint32          // IDs below next were used or released once
	max      uint32
}

func newIDs(max int) *ids {
	return &ids{used: map[uint32]bool{}, released: map[uint32]bool{}, max: uint32(max)}
}

func (s *ids) take() (uint32, bool) {
	for ; s.next < s.max; s.next++ {
		if !s.used[s.next] && !s.released[s.next] {
			s.used[s.next] = true
			s.next++
			return s.next - 1, true
		}
	}
	for len(s.free) > 0 {
		id := s.free[0]
		s.free = s.free[1:]
		if s.released[id] {
			delete(s.released, id)
			s.used[id] = true
			return id, true
		}
	}
	return 0, false
}

// available returns how many IDs take can still hand out.
func (s *ids) available() int { return int(s.max) - len(s.used) }

// reserve marks an ID in use by an entry the Applier did not write.
func (s *ids) reserve(id uint32) {
	if id < s.max {
		s.used[id] = true
		delete(s.released, id) // its stale place in free is skipped
	}
}

func (s *ids) give(id uint32) {
	if s.used[id] {
		delete(s.used, id)
		s.released[id] = true
		s.free = append(s.free, id)
	}
}
