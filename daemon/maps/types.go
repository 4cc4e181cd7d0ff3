package maps

import (
	"errors"
	"fmt"
	"net/netip"
)

// Limits and map sizes; they mirror bpf/include/kmesh_types.h (the layout
// test checks the map sizes against the object).
const (
	// MaxClusters is the number of weighted clusters one service entry holds.
	MaxClusters = 16
	// MaxSlotsPerCluster caps a cluster's slot table (see ExpandSlots).
	MaxSlotsPerCluster = 1024
	// MaxEnrolledNetns is km_enrolled's size.
	MaxEnrolledNetns = 4096
	// MaxServices is km_services' and km_svc_stats' size; service IDs are below it.
	MaxServices = 32768
	// MaxClusterIDs is km_clusters' and km_clust_stats' size; cluster IDs are below it.
	MaxClusterIDs = 32768
	// MaxSlots is km_slots' size: all slot tables together.
	MaxSlots = 262144
	// MaxSockets is km_socks' size: accelerated sockets on the node.
	MaxSockets = 65536
	// MaxLocalIPs is km_local_ips' size (LRU): addresses of enrolled namespaces.
	MaxLocalIPs = 16384
)

// Map and program names in the object; maps are pinned under these names.
const (
	MapEnrolled     = "km_enrolled"
	MapServices     = "km_services"
	MapClusters     = "km_clusters"
	MapSlots        = "km_slots"
	MapSvcStats     = "km_svc_stats"
	MapClusterStats = "km_clust_stats"
	MapOrigDst      = "km_orig_dst"
	// MapEnrollRefs is the daemon's own record of the reference (path)
	// each namespace was enrolled by; no program uses it.
	MapEnrollRefs = "km_enroll_refs"
	// Maps of sockmap.o (same-node acceleration).
	MapSocks      = "km_socks"
	MapAccelSk    = "km_accel_sk"
	MapAccelStats = "km_accel_stats"
	MapAccelCtl   = "km_accel_ctl"
	MapLocalIPs   = "km_local_ips"

	ProgConnect4 = "kmesh_connect4"
	ProgConnect6 = "kmesh_connect6"

	ProgSockops = "kmesh_sockops"
	ProgSkMsg   = "kmesh_sk_msg"

	// ObjectConnect is the object file holding both connect programs.
	ObjectConnect = "connect.o"
	// ObjectSockmap holds same-node acceleration (sockops and sk_msg); it
	// has no program when the kernel lacks what it needs.
	ObjectSockmap = "sockmap.o"
)

// Address families as stored in Addr.Family (the kernel's AF_INET/AF_INET6).
const (
	FamilyIPv4 uint8 = 2
	FamilyIPv6 uint8 = 10
)

// Policy is a cluster's load-balancing policy (km_cluster.policy).
type Policy uint32

const (
	// PolicyRoundRobin walks the slot table with one cursor shared by all CPUs.
	PolicyRoundRobin Policy = 0
	// PolicyRandom picks a slot with bpf_get_prandom_u32.
	PolicyRandom Policy = 1
)

func (p Policy) String() string {
	switch p {
	case PolicyRoundRobin:
		return "ROUND_ROBIN"
	case PolicyRandom:
		return "RANDOM"
	}
	return fmt.Sprintf("Policy(%d)", uint32(p))
}

// Sentinel errors callers can branch on.
var (
	ErrInvalid           = errors.New("invalid argument")
	ErrTooManyEndpoints  = errors.New("too many endpoints for one slot table")
	ErrTooManyClusters   = errors.New("too many weighted clusters for one service")
	ErrMixedFamilies     = errors.New("endpoints of one cluster mix address families")
	ErrOrigDstNotTracked = errors.New("object built without sk_storage: original destination not tracked")
)

// Addr mirrors struct km_addr: the services map key and a slot's endpoint.
// Port and IP are in network byte order; IPv4 uses IP[0:4].
type Addr struct {
	Family uint8
	Pad    uint8
	Port   [2]byte
	IP     [16]byte
}

// AddrFrom converts ap. An IPv4-mapped IPv6 address stays IPv6; as a
// services key it never matches (connect6 looks an IPv4-mapped destination up
// as IPv4): unmap service addresses first.
func AddrFrom(ap netip.AddrPort) (Addr, error) {
	ip := ap.Addr()
	var a Addr
	switch {
	case ip.Is4():
		a.Family = FamilyIPv4
		b := ip.As4()
		copy(a.IP[:4], b[:])
	case ip.Is6():
		if ip.Zone() != "" {
			return Addr{}, fmt.Errorf("convert %s: zoned address: %w", ap, ErrInvalid)
		}
		a.Family = FamilyIPv6
		a.IP = ip.As16()
	default:
		return Addr{}, fmt.Errorf("convert %s: %w", ap, ErrInvalid)
	}
	a.Port = [2]byte{byte(ap.Port() >> 8), byte(ap.Port())}
	return a, nil
}

// MustAddr is AddrFrom(netip.MustParseAddrPort(s)); it panics on error.
func MustAddr(s string) Addr {
	a, err := AddrFrom(netip.MustParseAddrPort(s))
	if err != nil {
		panic(err)
	}
	return a
}

// WildcardAddr is the services key matching every destination of family
// with the given port.
func WildcardAddr(family uint8, port uint16) Addr {
	return Addr{Family: family, Port: [2]byte{byte(port >> 8), byte(port)}}
}

// PortNumber returns the port in host order.
func (a Addr) PortNumber() uint16 { return uint16(a.Port[0])<<8 | uint16(a.Port[1]) }

// AddrPort converts back; ok is false for an unknown family.
func (a Addr) AddrPort() (netip.AddrPort, bool) {
	switch a.Family {
	case FamilyIPv4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(a.IP[:4])), a.PortNumber()), true
	case FamilyIPv6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.IP), a.PortNumber()), true
	}
	return netip.AddrPort{}, false
}

func (a Addr) String() string {
	if ap, ok := a.AddrPort(); ok {
		return ap.String()
	}
	return fmt.Sprintf("family(%d):%d", a.Family, a.PortNumber())
}

func (a Addr) valid() error {
	if a.Family != FamilyIPv4 && a.Family != FamilyIPv6 {
		return fmt.Errorf("address %s: family %d: %w", a, a.Family, ErrInvalid)
	}
	if a.Family == FamilyIPv4 {
		for _, b := range a.IP[4:] {
			if b != 0 {
				return fmt.Errorf("address %s: IPv4 with non-zero ip[1..3]: %w", a, ErrInvalid)
			}
		}
	}
	return nil
}

// WeightedCluster mirrors struct km_weighted_cluster.
type WeightedCluster struct {
	ClusterID uint32
	Weight    uint32
}

// ServiceValue mirrors struct km_service.
type ServiceValue struct {
	ServiceID    uint32
	ClusterCount uint32
	TotalWeight  uint32
	Clusters     [MaxClusters]WeightedCluster
}

// SpinLock mirrors struct bpf_spin_lock; the kernel ignores it on updates.
type SpinLock struct {
	Val uint32
}

// ClusterValue mirrors struct km_cluster.
type ClusterValue struct {
	Policy    uint32
	SlotCount uint32
	Lock      SpinLock
	RRNext    uint32
}

// SlotKey mirrors struct km_slot_key.
type SlotKey struct {
	ClusterID uint32
	Slot      uint32
}

// OrigDstValue mirrors struct km_orig_dst (the km_orig_dst sk_storage value).
type OrigDstValue struct {
	Addr      Addr
	ServiceID uint32
	ClusterID uint32
}

// SockKey mirrors struct km_sock_key (km_socks' key): a socket's own view
// of its connection, ports in host byte order.
type SockKey struct {
	Family     uint32
	LocalPort  uint32
	RemotePort uint32
	LocalIP    [16]byte // network byte order; IPv4 uses [0:4]
	RemoteIP   [16]byte
}

// SockKeyFrom is the km_socks key of the socket with these local and remote
// addresses, as sockops makes it: IPv4-mapped IPv6 is IPv4.
func SockKeyFrom(local, remote netip.AddrPort) (SockKey, error) {
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	if l.Is4() != r.Is4() || !l.IsValid() || !r.IsValid() {
		return SockKey{}, fmt.Errorf("socket key of %s -> %s: %w", local, remote, ErrInvalid)
	}
	k := SockKey{Family: uint32(FamilyIPv6), LocalPort: uint32(local.Port()), RemotePort: uint32(remote.Port())}
	if l.Is4() {
		k.Family = uint32(FamilyIPv4)
		l4, r4 := l.As4(), r.As4()
		copy(k.LocalIP[:4], l4[:])
		copy(k.RemoteIP[:4], r4[:])
		return k, nil
	}
	k.LocalIP, k.RemoteIP = l.As16(), r.As16()
	return k, nil
}

// AccelSkValue mirrors struct km_accel_sk (km_accel_sk's sk_storage value).
type AccelSkValue struct {
	State uint32
}

// AccelCtlValue mirrors struct km_accel_ctl (km_accel_ctl's one value).
type AccelCtlValue struct {
	Flags uint32
}

// AccelPassAll (AccelCtlValue.Flags) sends every message through TCP/IP.
const AccelPassAll uint32 = 1

// AccelStats mirrors struct km_accel_stats; AccelStatsOf sums the CPUs.
type AccelStats struct {
	// Sockets were added to km_socks; SockErrors could not be (map full).
	Sockets    uint64 `json:"sockets"`
	SockErrors uint64 `json:"sock_errors"`
	// Redirected messages went straight to the peer socket; Passed went
	// through TCP/IP.
	Redirected uint64 `json:"redirected"`
	Passed     uint64 `json:"passed"`
	// NotLocal sockets were not added: their peer is no address of an
	// enrolled namespace on this node (yet).
	NotLocal uint64 `json:"not_local"`
}

// IPKey mirrors struct km_ip (km_local_ips' key).
type IPKey struct {
	Family uint32
	IP     [16]byte // network byte order; IPv4 uses [0:4]
}

// StatsValue mirrors struct km_stats (one CPU's counters).
type StatsValue struct {
	Redirected uint64
	NoEndpoint uint64
}

// Service is the Go-side description of one services-map entry.
type Service struct {
	// ID indexes the per-service counters; it must be below MaxServices.
	ID uint32
	// Clusters are picked by weight; one cluster needs no weight. No
	// clusters is a PASSTHROUGH entry: a connect matching it is left
	// untouched (it also shadows the per-port wildcard) and counts nothing.
	// A matched cluster without an endpoint refuses the connect (EPERM).
	Clusters []WeightedCluster
}

// Value validates s and builds the map value.
func (s Service) Value() (ServiceValue, error) {
	var v ServiceValue
	if s.ID >= MaxServices {
		return v, fmt.Errorf("service %d: id not below %d: %w", s.ID, MaxServices, ErrInvalid)
	}
	if len(s.Clusters) > MaxClusters {
		return v, fmt.Errorf("service %d: %d clusters: %w", s.ID, len(s.Clusters), ErrTooManyClusters)
	}
	v.ServiceID = s.ID
	v.ClusterCount = uint32(len(s.Clusters))
	var total uint64
	for i, c := range s.Clusters {
		if c.ClusterID >= MaxClusterIDs {
			return v, fmt.Errorf("service %d: cluster id %d not below %d: %w", s.ID, c.ClusterID, MaxClusterIDs, ErrInvalid)
		}
		w := c.Weight
		if len(s.Clusters) == 1 && w == 0 {
			w = 1
		}
		if w == 0 {
			return v, fmt.Errorf("service %d: cluster %d has weight 0: %w", s.ID, c.ClusterID, ErrInvalid)
		}
		total += uint64(w)
		v.Clusters[i] = WeightedCluster{ClusterID: c.ClusterID, Weight: w}
	}
	if total > 1<<32-1 {
		return v, fmt.Errorf("service %d: total weight %d overflows u32: %w", s.ID, total, ErrInvalid)
	}
	v.TotalWeight = uint32(total)
	return v, nil
}

// Stats are counters summed over CPUs.
type Stats struct {
	Redirected uint64
	NoEndpoint uint64
}

func sumStats(per []StatsValue) Stats {
	var s Stats
	for _, v := range per {
		s.Redirected += v.Redirected
		s.NoEndpoint += v.NoEndpoint
	}
	return s
}

// OrigDst is a redirected socket's destination before the rewrite.
type OrigDst struct {
	Dst       netip.AddrPort
	ServiceID uint32
	ClusterID uint32
}
