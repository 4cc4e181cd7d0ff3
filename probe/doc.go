// Package probe inspects the host kmesh is about to run on and decides which
// mode it can run in.
//
// It is the first stage of the start pipeline (probe → decision record →
// builder → start → daemon). Every signal is a Check with a name, a Status
// and a detail; statuses follow cilium/ebpf's features contract:
//
//   - supported:     the probe succeeded (nil error)
//   - unsupported:   the kernel or host definitely lacks it (ebpf.ErrNotSupported, or a definite fact such as "CONFIG_MODULES is not set")
//   - not_permitted: the probe was refused (EPERM/EACCES): neither present nor absent
//   - inconclusive:  anything else; the error is kept in the detail
//
// Signals are gathered by Probe (files under a host root, BTF, live BPF loads
// against the running kernel) and turned into a Record by Decide, a pure
// function. The Record's JSON form is documented in docs/decision.md and read
// by the builder, the daemon's /status endpoint and users.
package probe
