package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
)

// Maps is a typed handle over the compatibility-mode maps. It does not own
// the maps (Objects does); it serialises its own writers.
type Maps struct {
	enrolled     *ebpf.Map
	services     *ebpf.Map
	clusters     *ebpf.Map
	slots        *ebpf.Map
	svcStats     *ebpf.Map
	clusterStats *ebpf.Map
	origDst      *ebpf.Map // nil when the object was built without sk_storage
	accelStats   *ebpf.Map // nil without same-node acceleration (sockmap.o)
	accelCtl     *ebpf.Map
	localIPs     *ebpf.Map

	mu sync.Mutex
	// noBatch forces the one-element-per-syscall path (tests exercise it).
	noBatch bool
}

// New wraps the maps of a loaded collection (for example one the daemon
// loaded itself). km_orig_dst is optional.
func New(coll *ebpf.Collection) (*Maps, error) {
	return FromMaps(coll.Maps)
}

// FromMaps wraps maps by name (for example ones opened from their pins).
func FromMaps(ms map[string]*ebpf.Map) (*Maps, error) {
	m := &Maps{}
	for name, dst := range map[string]**ebpf.Map{
		MapEnrolled:     &m.enrolled,
		MapServices:     &m.services,
		MapClusters:     &m.clusters,
		MapSlots:        &m.slots,
		MapSvcStats:     &m.svcStats,
		MapClusterStats: &m.clusterStats,
	} {
		mp, ok := ms[name]
		if !ok || mp == nil {
			return nil, fmt.Errorf("wrap maps: %s missing: %w", name, ErrInvalid)
		}
		*dst = mp
	}
	m.origDst = ms[MapOrigDst]
	m.accelStats, m.accelCtl, m.localIPs = ms[MapAccelStats], ms[MapAccelCtl], ms[MapLocalIPs]
	return m, nil
}

// LearnLocalIPs records addrs as addresses of the enrolled namespace with
// this cookie, so that same-node acceleration takes a connection to one of
// them from its first (sockops learns the others as their sockets
// establish); without acceleration it does nothing.
func (m *Maps) LearnLocalIPs(cookie uint64, addrs []netip.Addr) error {
	if m.localIPs == nil {
		return nil
	}
	for _, a := range addrs {
		k := IPKey{Family: uint32(FamilyIPv6)}
		if a = a.Unmap(); a.Is4() {
			k.Family = uint32(FamilyIPv4)
			b := a.As4()
			copy(k.IP[:4], b[:])
		} else {
			k.IP = a.As16()
		}
		if err := m.localIPs.Update(k, cookie, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("record %s of netns %d in %s: %w", a, cookie, MapLocalIPs, err)
		}
	}
	return nil
}

// SetAccelPassAll switches same-node acceleration to TCP/IP for every send
// (on) or back to redirecting (off); without acceleration it does nothing.
func (m *Maps) SetAccelPassAll(on bool) error {
	if m.accelCtl == nil {
		return nil
	}
	v := AccelCtlValue{}
	if on {
		v.Flags = AccelPassAll
	}
	if err := m.accelCtl.Put(uint32(0), v); err != nil {
		return fmt.Errorf("set %s: %w", MapAccelCtl, err)
	}
	return nil
}

// Accelerates reports whether same-node acceleration is loaded (sockmap.o
// with its programs).
func (m *Maps) Accelerates() bool { return m.accelStats != nil }

// AccelStatsOf returns same-node acceleration's counters, summed over CPUs;
// zero without it.
func (m *Maps) AccelStatsOf() (AccelStats, error) {
	var sum AccelStats
	if m.accelStats == nil {
		return sum, nil
	}
	return ReadAccelStats(m.accelStats)
}

// ReadAccelStats reads a km_accel_stats map (for example one held open past
// uninstall) and sums its CPUs.
func ReadAccelStats(mp *ebpf.Map) (AccelStats, error) {
	var sum AccelStats
	var per []AccelStats
	if err := mp.Lookup(uint32(0), &per); err != nil {
		return sum, fmt.Errorf("look up %s: %w", MapAccelStats, err)
	}
	for _, p := range per {
		sum.Sockets += p.Sockets
		sum.SockErrors += p.SockErrors
		sum.Redirected += p.Redirected
		sum.Passed += p.Passed
		sum.NotLocal += p.NotLocal
	}
	return sum, nil
}

// TracksOrigDst reports whether the object records original destinations.
func (m *Maps) TracksOrigDst() bool { return m.origDst != nil }

// Enroll makes the connect programs act on sockets of the network namespace
// with this cookie (see daemon/netns.Cookie).
func (m *Maps) Enroll(cookie uint64) error {
	if err := m.enrolled.Update(cookie, uint32(0), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("enroll netns %d: %w", cookie, err)
	}
	return nil
}

// Unenroll stops acting on the namespace; absent cookies are not an error.
func (m *Maps) Unenroll(cookie uint64) error {
	if err := m.enrolled.Delete(cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unenroll netns %d: %w", cookie, err)
	}
	return nil
}

// Enrolled reports whether the namespace is enrolled.
func (m *Maps) Enrolled(cookie uint64) (bool, error) {
	var flags uint32
	err := m.enrolled.Lookup(cookie, &flags)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up netns %d: %w", cookie, err)
	}
	return true, nil
}

// ServiceEntry is one services-map entry for PutServices.
type ServiceEntry struct {
	Key     Addr
	Service Service
}

// PutService publishes one service entry. Publish its clusters first.
func (m *Maps) PutService(key Addr, svc Service) error {
	return m.PutServices([]ServiceEntry{{Key: key, Service: svc}})
}

// PutServices publishes service entries in one batch where the kernel has
// batch operations.
func (m *Maps) PutServices(entries []ServiceEntry) error {
	keys := make([]Addr, len(entries))
	vals := make([]ServiceValue, len(entries))
	for i, e := range entries {
		if err := e.Key.valid(); err != nil {
			return fmt.Errorf("put service %d: %w", e.Service.ID, err)
		}
		v, err := e.Service.Value()
		if err != nil {
			return fmt.Errorf("put service: %w", err)
		}
		keys[i], vals[i] = e.Key, v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := updateAll(m, m.services, keys, vals); err != nil {
		return fmt.Errorf("put %d services: %w", len(entries), err)
	}
	return nil
}

// LookupService returns the stored value for key.
func (m *Maps) LookupService(key Addr) (ServiceValue, error) {
	var v ServiceValue
	if err := m.services.Lookup(key, &v); err != nil {
		return v, fmt.Errorf("look up service %s: %w", key, err)
	}
	return v, nil
}

// DeleteService removes a service entry; an absent one is not an error.
func (m *Maps) DeleteService(key Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.services.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %s: %w", key, err)
	}
	return nil
}

// Cluster is one cluster for PutClusters: its policy and expanded slot
// table (see SlotTable / ExpandSlots).
type Cluster struct {
	ID     uint32
	Policy Policy
	Slots  []Addr
}

func (c Cluster) validate() error {
	if c.ID >= MaxClusterIDs {
		return fmt.Errorf("cluster %d: id not below %d: %w", c.ID, MaxClusterIDs, ErrInvalid)
	}
	if c.Policy != PolicyRoundRobin && c.Policy != PolicyRandom {
		return fmt.Errorf("cluster %d: policy %s: %w", c.ID, c.Policy, ErrInvalid)
	}
	if len(c.Slots) > MaxSlotsPerCluster {
		return fmt.Errorf("cluster %d: %d slots: %w", c.ID, len(c.Slots), ErrTooManyEndpoints)
	}
	for _, s := range c.Slots {
		if err := s.valid(); err != nil {
			return fmt.Errorf("cluster %d: %w", c.ID, err)
		}
		if s.Family != c.Slots[0].Family {
			return fmt.Errorf("cluster %d: %w", c.ID, ErrMixedFamilies)
		}
	}
	return nil
}

// PutCluster publishes a cluster and its slot table without a connect ever
// seeing a half-written table: slots are written before the new slot count
// is published; when the table shrinks, the smaller count is published
// before the stale slots are deleted. The round-robin cursor restarts at 0.
func (m *Maps) PutCluster(id uint32, policy Policy, slots []Addr) error {
	return m.PutClusters([]Cluster{{ID: id, Policy: policy, Slots: slots}})
}

// PutClusters is PutCluster for many clusters with batch operations: all
// slots, then all cluster values, then all stale slots.
func (m *Maps) PutClusters(cs []Cluster) error {
	nslots := 0
	for _, c := range cs {
		if err := c.validate(); err != nil {
			return fmt.Errorf("put clusters: %w", err)
		}
		nslots += len(c.Slots)
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	slotKeys := make([]SlotKey, 0, nslots)
	slotVals := make([]Addr, 0, nslots)
	ids := make([]uint32, len(cs))
	vals := make([]ClusterValue, len(cs))
	var stale []SlotKey
	for i, c := range cs {
		old, err := m.slotCount(c.ID)
		if err != nil {
			return fmt.Errorf("put cluster %d: %w", c.ID, err)
		}
		for j, s := range c.Slots {
			slotKeys = append(slotKeys, SlotKey{ClusterID: c.ID, Slot: uint32(j)})
			slotVals = append(slotVals, s)
		}
		for j := uint32(len(c.Slots)); j < old; j++ {
			stale = append(stale, SlotKey{ClusterID: c.ID, Slot: j})
		}
		ids[i] = c.ID
		vals[i] = ClusterValue{Policy: uint32(c.Policy), SlotCount: uint32(len(c.Slots))}
	}
	if err := updateAll(m, m.slots, slotKeys, slotVals); err != nil {
		return fmt.Errorf("put %d slots: %w", len(slotKeys), err)
	}
	if err := updateAll(m, m.clusters, ids, vals); err != nil {
		return fmt.Errorf("put %d clusters: %w", len(ids), err)
	}
	if err := deleteAll(m, m.slots, stale); err != nil {
		return fmt.Errorf("delete %d stale slots: %w", len(stale), err)
	}
	return nil
}

// LookupCluster returns the stored cluster value and its slot table.
func (m *Maps) LookupCluster(id uint32) (ClusterValue, []Addr, error) {
	var v ClusterValue
	if err := m.clusters.Lookup(id, &v); err != nil {
		return v, nil, fmt.Errorf("look up cluster %d: %w", id, err)
	}
	slots := make([]Addr, v.SlotCount)
	for i := range slots {
		if err := m.slots.Lookup(SlotKey{ClusterID: id, Slot: uint32(i)}, &slots[i]); err != nil {
			return v, nil, fmt.Errorf("look up cluster %d slot %d: %w", id, i, err)
		}
	}
	return v, slots, nil
}

// DeleteCluster removes the cluster, then its slots; an absent cluster is
// not an error. Its counters are kept (IDs should not be reused quickly).
func (m *Maps) DeleteCluster(id uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, err := m.slotCount(id)
	if err != nil {
		return fmt.Errorf("delete cluster %d: %w", id, err)
	}
	if err := m.clusters.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete cluster %d: %w", id, err)
	}
	keys := make([]SlotKey, old)
	for i := range keys {
		keys[i] = SlotKey{ClusterID: id, Slot: uint32(i)}
	}
	if err := deleteAll(m, m.slots, keys); err != nil {
		return fmt.Errorf("delete cluster %d slots: %w", id, err)
	}
	return nil
}

func (m *Maps) slotCount(id uint32) (uint32, error) {
	var v ClusterValue
	err := m.clusters.Lookup(id, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up cluster %d: %w", id, err)
	}
	return v.SlotCount, nil
}

// ServiceStatsOf returns one service's counters summed over CPUs.
func (m *Maps) ServiceStatsOf(id uint32) (Stats, error) {
	return statsOf(m.svcStats, id)
}

// ClusterStatsOf returns one cluster's counters summed over CPUs.
func (m *Maps) ClusterStatsOf(id uint32) (Stats, error) {
	return statsOf(m.clusterStats, id)
}

// ServiceStats returns every service's non-zero counters, summed over CPUs.
func (m *Maps) ServiceStats() (map[uint32]Stats, error) {
	return allStats(m.svcStats)
}

// ClusterStats returns every cluster's non-zero counters, summed over CPUs.
func (m *Maps) ClusterStats() (map[uint32]Stats, error) {
	return allStats(m.clusterStats)
}

func statsOf(mp *ebpf.Map, id uint32) (Stats, error) {
	var per []StatsValue
	if err := mp.Lookup(id, &per); err != nil {
		return Stats{}, fmt.Errorf("look up %s[%d]: %w", mp, id, err)
	}
	return sumStats(per), nil
}

func allStats(mp *ebpf.Map) (map[uint32]Stats, error) {
	out := make(map[uint32]Stats)
	var (
		id  uint32
		per []StatsValue
	)
	it := mp.Iterate()
	for it.Next(&id, &per) {
		if s := sumStats(per); s != (Stats{}) {
			out[id] = s
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", mp, err)
	}
	return out, nil
}

// OrigDst returns the original destination recorded for the socket sockFD
// of the calling process. It wraps ErrOrigDstNotTracked when the object was
// built without sk_storage, ebpf.ErrKeyNotExist for a socket that was not
// redirected.
func (m *Maps) OrigDst(sockFD int) (OrigDst, error) {
	if m.origDst == nil {
		return OrigDst{}, fmt.Errorf("look up original destination: %w", ErrOrigDstNotTracked)
	}
	var v OrigDstValue
	if err := m.origDst.Lookup(int32(sockFD), &v); err != nil {
		return OrigDst{}, fmt.Errorf("look up original destination of fd %d: %w", sockFD, err)
	}
	ap, ok := v.Addr.AddrPort()
	if !ok {
		return OrigDst{}, fmt.Errorf("look up original destination of fd %d: family %d: %w", sockFD, v.Addr.Family, ErrInvalid)
	}
	return OrigDst{Dst: ap, ServiceID: v.ServiceID, ClusterID: v.ClusterID}, nil
}

// updateAll writes keys/values with one batch update, or one update per
// element where the kernel has no batch operations.
func updateAll[K, V any](m *Maps, mp *ebpf.Map, keys []K, vals []V) error {
	if len(keys) != len(vals) {
		return fmt.Errorf("update %s: %d keys, %d values: %w", mp, len(keys), len(vals), ErrInvalid)
	}
	if len(keys) == 0 {
		return nil
	}
	if !m.noBatch {
		_, err := mp.BatchUpdate(keys, vals, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("batch update %s: %w", mp, err)
		}
	}
	for i := range keys {
		if err := mp.Update(&keys[i], &vals[i], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update %s: %w", mp, err)
		}
	}
	return nil
}

// deleteAll deletes keys (absent ones are fine), batched where possible.
func deleteAll[K any](m *Maps, mp *ebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if !m.noBatch {
		_, err := mp.BatchDelete(keys, nil)
		if err == nil {
			return nil
		}
		// A missing key (ENOENT) stops a batch part way: finish one by one.
		if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("batch delete %s: %w", mp, err)
		}
	}
	for i := range keys {
		if err := mp.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s: %w", mp, err)
		}
	}
	return nil
}

// Services returns every services-map entry (for example ones adopted from
// a previous daemon).
func (m *Maps) Services() (map[Addr]ServiceValue, error) {
	return dumpAll[Addr, ServiceValue](m, m.services)
}

// EnrolledCookies returns the cookies of every enrolled namespace.
func (m *Maps) EnrolledCookies() ([]uint64, error) {
	var (
		out   []uint64
		c     uint64
		flags uint32
	)
	it := m.enrolled.Iterate()
	for it.Next(&c, &flags) {
		out = append(out, c)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate enrolled namespaces: %w", err)
	}
	return out, nil
}

// ResetServiceStats and ResetClusterStats zero the counters of an ID before
// it is given to a new service or cluster.
func (m *Maps) ResetServiceStats(id uint32) error { return resetStats(m.svcStats, id) }
func (m *Maps) ResetClusterStats(id uint32) error { return resetStats(m.clusterStats, id) }

func resetStats(mp *ebpf.Map, id uint32) error {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("reset %s[%d]: %w", mp, id, err)
	}
	if err := mp.Update(id, make([]StatsValue, n), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset %s[%d]: %w", mp, id, err)
	}
	return nil
}
