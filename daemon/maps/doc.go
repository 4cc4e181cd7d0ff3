// Package maps is the typed Go layer over the compatibility-mode BPF maps
// defined in bpf/include/kmesh_maps.h (programs in bpf/connect.c).
//
// It holds Go mirrors of every C key and value (checked against the object's
// BTF by the package's layout test), conversions between netip.AddrPort and
// the kernel's network-byte-order layout, the weighted-endpoint slot table
// expansion, and a handle (Maps) with the operations the daemon needs:
// enrolling network namespaces, publishing services and clusters (bulk loads
// use batch map operations, falling back to single updates where the kernel
// has none), reading counters and, where the kernel has sk_storage, the
// original destination of a redirected socket.
//
// A Maps value serialises its own writers; the BPF programs read
// concurrently and never observe a half-written slot table (see PutCluster).
// Two Maps values (or processes) writing the same maps must be coordinated
// by their owner.
package maps
