// Package daemon runs the kmesh data plane on a node: it loads and attaches
// the BPF objects (daemon/loader), keeps the maps in step with the Envoy
// configuration (daemon/config → daemon/apply → daemon/maps), enrolls network
// namespaces, and serves the admin API (/ready, /status, /config_dump,
// enrollment) and Prometheus metrics.
//
// Run returns when its context ends, leaving the pinned programs attached so
// traffic keeps flowing; a restarted daemon adopts them. Uninstall removes
// everything kmesh left on the node.
package daemon
