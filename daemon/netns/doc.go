// Package netns resolves network namespaces (by name under /run/netns or by
// path, e.g. /proc/<pid>/ns/net) and reads their cookies, the identity the
// BPF programs use to decide whether a socket is enrolled.
package netns
