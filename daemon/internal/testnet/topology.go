package testnet

import "testing"

// Endpoints of the standard topology's backends (each server replies with
// its own address).
const (
	A1   = "10.201.1.2:8001"
	A2   = "10.201.1.2:8002"
	B1   = "10.201.2.2:8001"
	A1v6 = "[fd00:201:1::2]:8001"
	A2v6 = "[fd00:201:1::2]:8002"
	B1v6 = "[fd00:201:2::2]:8001"

	// VIPs used by the tests: routable only in Other, where a local listener
	// answers Unrewritten.
	VIP   = "10.96.0.10:80"
	VIPv6 = "[fd00:96::10]:80"
	// Unrewritten is what a connection that kmesh did not rewrite gets back.
	Unrewritten = "unrewritten"
)

// Topology is client -- veth -- backend A, client -- veth -- backend B, and
// Other, a namespace that holds the VIPs on lo (it must never be enrolled:
// reaching its listener proves a connection was left untouched).
type Topology struct {
	Client, A, B, Other *Netns
}

// NewTopology builds the standard topology with names prefixed by prefix
// (keep it short: interface names are limited to 15 characters).
func NewTopology(t testing.TB, prefix string) *Topology {
	t.Helper()
	c := NewNetns(t, prefix+"-c")
	a := NewNetns(t, prefix+"-a")
	b := NewNetns(t, prefix+"-b")
	o := NewNetns(t, prefix+"-o")
	for _, l := range []struct {
		peer     *Netns
		cif, pif string
		c4, p4   string
		c6, p6   string
	}{
		{a, "ca", "ac", "10.201.1.1/24", "10.201.1.2/24", "fd00:201:1::1/64", "fd00:201:1::2/64"},
		{b, "cb", "bc", "10.201.2.1/24", "10.201.2.2/24", "fd00:201:2::1/64", "fd00:201:2::2/64"},
	} {
		c.IP(t, "link", "add", l.cif, "type", "veth", "peer", "name", l.pif, "netns", l.peer.Name)
		c.IP(t, "addr", "add", l.c4, "dev", l.cif)
		c.IP(t, "addr", "add", l.c6, "dev", l.cif, "nodad")
		c.IP(t, "link", "set", l.cif, "up")
		l.peer.IP(t, "addr", "add", l.p4, "dev", l.pif)
		l.peer.IP(t, "addr", "add", l.p6, "dev", l.pif, "nodad")
		l.peer.IP(t, "link", "set", l.pif, "up")
	}
	for _, ep := range []string{A1, A2, A1v6, A2v6} {
		a.Serve(t, "tcp", ep, "")
	}
	for _, ep := range []string{B1, B1v6} {
		b.Serve(t, "tcp", ep, "")
	}
	o.IP(t, "addr", "add", "10.96.0.10/32", "dev", "lo")
	o.IP(t, "addr", "add", "fd00:96::10/128", "dev", "lo", "nodad")
	o.Serve(t, "tcp", VIP, Unrewritten)
	o.Serve(t, "tcp", VIPv6, Unrewritten)
	return &Topology{Client: c, A: a, B: b, Other: o}
}
