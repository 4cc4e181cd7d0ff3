// Package testnet builds real test topologies for privileged tests: network
// namespaces joined by veth pairs, TCP servers inside them that answer with
// their identity, clients that connect from inside a namespace, and a child
// cgroup holding the test process. Names are unique per run and everything
// is removed in t.Cleanup, also on failure.
//
// Addresses are 10.x / fd00::/8 inside the namespaces only; service VIPs are
// never routable there, so only a BPF rewrite reaches a backend.
package testnet
