package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxWeightedClusters is the most clusters one service may split traffic
// across (the size of the BPF service value's cluster array).
const MaxWeightedClusters = 16

// Model is the translated, canonical form of a configuration: everything
// compat mode applies, plus notes about what it does not. Build one with
// Translate, ParseBootstrap, LoadFile or LoadDefault; treat it as read-only.
type Model struct {
	// Services maps a destination (VIP:port, or a wildcard address of one
	// family and a port) to the clusters a connect() there is sent to. A
	// passthrough service (no clusters) keeps a specific VIP:port that the
	// input claims but compat mode cannot serve from falling through to the
	// wildcard service of its port.
	Services map[ServiceKey]Service
	// Clusters maps a cluster name to its endpoints. It holds every valid
	// cluster of the input, referenced or not.
	Clusters map[string]Cluster
	// Unsupported lists the parts of the input compat mode does not apply,
	// sorted by Object then Reason.
	Unsupported []Note
	// Version is a content hash of Services and Clusters (not of
	// Unsupported): equal models have equal versions, whatever the order of
	// the input. Diff(a, b) is empty exactly when a.Version == b.Version
	// (a service turning passthrough, or served again, changes both).
	Version string
	// SerialDecode, set by ParseBootstrap, says why the input's listeners
	// and clusters were not parsed and decoded on several goroutines (a
	// YAML anchor, a shape the parallel decode does not take apart); nil
	// when they were. A large config decoded serially takes several times
	// as long and, in YAML, several times the memory.
	SerialDecode error
}

// ServiceKey identifies a service by the destination of connect(). An
// unspecified Addr (0.0.0.0 or ::) matches every destination of that address
// family on Port that has no more specific key.
type ServiceKey struct {
	Addr netip.Addr
	Port uint16
}

// String returns "10.96.0.10:80" or "[fd00::10]:80".
func (k ServiceKey) String() string { return netip.AddrPortFrom(k.Addr, k.Port).String() }

// Wildcard reports whether k matches any address of its family.
func (k ServiceKey) Wildcard() bool { return k.Addr.IsUnspecified() }

// Compare orders keys by address (IPv4 before IPv6) then port.
func (k ServiceKey) Compare(o ServiceKey) int {
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	return int(k.Port) - int(o.Port)
}

// MarshalText implements encoding.TextMarshaler (so a Model encodes as JSON).
func (k ServiceKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses the form String returns.
func (k *ServiceKey) UnmarshalText(b []byte) error {
	ap, err := netip.ParseAddrPort(string(b))
	if err != nil {
		return fmt.Errorf("parse service key: %w", err)
	}
	*k = ServiceKey{Addr: ap.Addr().Unmap(), Port: ap.Port()}
	return nil
}

// Service is what connects to one ServiceKey are balanced across, or, for a
// passthrough service, the record that they are left alone.
type Service struct {
	// Name is the listener name for tcp_proxy services and the virtual host
	// name for http_connection_manager services.
	Name string
	// Listener is the name of the listener the service came from.
	Listener string
	// Clusters is empty exactly for a passthrough service: compat mode leaves
	// connections to it at their original destination. Otherwise it is
	// sorted by name, has no duplicates and no zero weights; the weights sum
	// to more than zero and fit in a uint32.
	Clusters []WeightedCluster
}

// Passthrough reports whether s has no clusters: connections to its key
// keep their original destination instead of matching the wildcard service
// of the port. Only specific (not wildcard) keys are passthrough.
func (s Service) Passthrough() bool { return len(s.Clusters) == 0 }

// Equal reports whether s and o are identical. A passthrough service never
// equals a served one.
func (s Service) Equal(o Service) bool {
	return s.Name == o.Name && s.Listener == o.Listener && slices.Equal(s.Clusters, o.Clusters)
}

// WeightedCluster is one cluster of a service with its share of connections.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// Cluster is a set of endpoints and the policy that picks one per connection.
type Cluster struct {
	Name   string
	Policy LBPolicy
	// Endpoints is sorted by address and has no duplicates (weights of
	// repeated addresses are added up). It may be empty.
	Endpoints []Endpoint
}

// Equal reports whether c and o are identical.
func (c Cluster) Equal(o Cluster) bool {
	return c.Name == o.Name && c.Policy == o.Policy && slices.Equal(c.Endpoints, o.Endpoints)
}

// LBPolicy is how a cluster picks an endpoint for a connection.
type LBPolicy uint8

const (
	// RoundRobin is weighted round robin (Envoy ROUND_ROBIN, the default).
	RoundRobin LBPolicy = iota
	// Random is weighted random (Envoy RANDOM).
	Random
)

// String returns the Envoy name of the policy.
func (p LBPolicy) String() string {
	switch p {
	case RoundRobin:
		return "ROUND_ROBIN"
	case Random:
		return "RANDOM"
	}
	return fmt.Sprintf("LBPolicy(%d)", uint8(p))
}

// MarshalText implements encoding.TextMarshaler.
func (p LBPolicy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Endpoint is one upstream address and its weight (Envoy
// load_balancing_weight, default 1, never 0).
type Endpoint struct {
	Addr   netip.AddrPort
	Weight uint32
}

// NoteKind says why a Note was recorded.
type NoteKind uint8

const (
	// NeedsEnhanced: the construct needs the request (L7) or per-request
	// processing, which only enhanced mode has; compat mode skips it.
	NeedsEnhanced NoteKind = iota + 1
	// NotSupported: the construct is valid Envoy configuration this
	// translator does not implement (e.g. RDS in local-file mode); skipped.
	NotSupported
	// Ignored: the construct has no effect in compat mode (or cannot be
	// reached by connect()); it is skipped.
	Ignored
)

// String returns "needs enhanced mode", "not supported" or "ignored".
func (k NoteKind) String() string {
	switch k {
	case NeedsEnhanced:
		return "needs enhanced mode"
	case NotSupported:
		return "not supported"
	case Ignored:
		return "ignored"
	}
	return fmt.Sprintf("NoteKind(%d)", uint8(k))
}

// MarshalText implements encoding.TextMarshaler.
func (k NoteKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (the /status document
// decodes, for kmeshctl and tests).
func (k *NoteKind) UnmarshalText(b []byte) error {
	for _, c := range []NoteKind{NeedsEnhanced, NotSupported, Ignored} {
		if string(b) == c.String() {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("decode note kind %q: want needs enhanced mode, not supported or ignored", b)
}

// Note records a part of the input that compat mode does not apply.
type Note struct {
	Kind NoteKind
	// Object names what was skipped, outermost first, e.g.
	// `listener "ratings_http" virtual_host "ratings" route "admin"`.
	Object string
	// Reason says why, and what would apply it.
	Reason string
}

// String returns `object: reason (kind)`.
func (n Note) String() string { return n.Object + ": " + n.Reason + " (" + n.Kind.String() + ")" }

// SortedServiceKeys returns the keys of m.Services in Compare order.
func (m *Model) SortedServiceKeys() []ServiceKey {
	keys := make([]ServiceKey, 0, len(m.Services))
	for k := range m.Services {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, ServiceKey.Compare)
	return keys
}

// SortedClusterNames returns the names of m.Clusters in lexical order.
func (m *Model) SortedClusterNames() []string {
	names := make([]string, 0, len(m.Clusters))
	for n := range m.Clusters {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// computeVersion hashes a canonical binary encoding of the services and
// clusters. Strings are length-prefixed so no two models encode alike.
func (m *Model) computeVersion() string {
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	u := func(v uint64) { buf = binary.AppendUvarint(buf, v) }
	flush := func() {
		if len(buf) > 4096 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	u(uint64(len(m.Services)))
	for _, k := range m.SortedServiceKeys() {
		s := m.Services[k]
		b, _ := k.Addr.MarshalBinary()
		str(string(b))
		u(uint64(k.Port))
		str(s.Name)
		str(s.Listener)
		u(uint64(len(s.Clusters))) // 0 marks a passthrough service
		for _, wc := range s.Clusters {
			str(wc.Name)
			u(uint64(wc.Weight))
		}
		flush()
	}
	u(uint64(len(m.Clusters)))
	for _, n := range m.SortedClusterNames() {
		c := m.Clusters[n]
		str(c.Name)
		u(uint64(c.Policy))
		u(uint64(len(c.Endpoints)))
		for _, e := range c.Endpoints {
			b, _ := e.Addr.Addr().MarshalBinary()
			str(string(b))
			u(uint64(e.Addr.Port()))
			u(uint64(e.Weight))
		}
		flush()
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// sortNotes orders notes by Object, then Reason, then Kind.
func sortNotes(notes []Note) {
	slices.SortFunc(notes, func(a, b Note) int {
		if c := strings.Compare(a.Object, b.Object); c != 0 {
			return c
		}
		if c := strings.Compare(a.Reason, b.Reason); c != 0 {
			return c
		}
		return int(a.Kind) - int(b.Kind)
	})
}
