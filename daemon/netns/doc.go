// Package netns resolves network namespaces (by name under /run/netns or by
// path, e.g. /proc/<pid>/ns/net) and reads their cookies, the identity the
// BPF programs use to decide whether a socket is enrolled: SO_NETNS_COOKIE on
// Linux 5.14+, a short-lived recording BPF program on older kernels
// (CookieFromBPF).
package netns
