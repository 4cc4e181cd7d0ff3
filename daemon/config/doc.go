// Package config translates Envoy v3 configuration into the model the
// compat-mode data plane applies: for each destination a connect() may
// target (a service key), the weighted clusters to send it to, and for each
// cluster its endpoints and balancing policy.
//
// # Sources
//
// Translate is the core and takes go-control-plane types, so the local-file
// mode and an xDS client share it. ParseBootstrap (YAML or JSON, decoded with
// protojson; YAML is converted to JSON first) and LoadFile read a bootstrap
// and translate its static_resources. Unknown fields and typed_config @type
// values other than tcp_proxy, http_connection_manager and the router filter
// are rejected with a *ParseError giving line, column and field path. Watch
// follows a file (edits, renames, ConfigMap symlink swaps). Default and
// LoadDefault give the embedded default.yaml.
//
// # Model
//
// A Model is canonical: weighted clusters are sorted by name with duplicates
// merged and zero weights dropped; endpoints are sorted by address with
// duplicates merged (weights added). Reordering the input therefore changes
// neither Version nor Diff. Version hashes Services and Clusters, not the
// notes. A ServiceKey with an unspecified address (0.0.0.0 or ::) matches any
// destination of that family on its port that no specific key matches.
// IPv4-mapped IPv6 addresses are stored as IPv4.
//
// # Supported subset
//
// Listeners: a TCP socket_address with an IP literal and port_value (plus
// additional_addresses). The filter chain used is the first one without a
// filter_chain_match, else default_filter_chain; chains with a match are
// noted (they need connection attributes). The last network filter must be:
//
//   - tcp_proxy with cluster or weighted_clusters: one service per listener
//     address.
//   - http_connection_manager with an inline route_config (rds and
//     scoped_routes are noted, not applied). HTTP is balanced per
//     connection. On a wildcard listener (0.0.0.0:port, [::]:port) each
//     virtual host yields a service for every IP-literal domain of the
//     listener's family ("10.96.0.20", "10.96.0.20:9080" if the port is the
//     listener's, "[fd00::20]"), and for "*" the wildcard key itself; host
//     names are matched by Host header only and are skipped. On a VIP:port
//     listener the virtual host naming the VIP wins, else the "*" one; the
//     others are noted. In the chosen virtual host the first catch-all route
//     (match prefix "/" and nothing else but case_sensitive; not path "/",
//     not a regex, not an empty prefix) supplies cluster or
//     weighted_clusters. Every route before it is noted "needs enhanced
//     mode"; routes after it are unreachable in Envoy too. Without a usable
//     catch-all the virtual host is noted and yields no service. HTTP
//     filters other than the router are noted.
//
// Listeners compat mode cannot apply at all (UDP, pipe, internal, api
// listeners, other terminal filters, rds) are skipped with a Note: their
// connections keep their original destination.
//
// Clusters: type STATIC (or unset) with load_assignment; lb_policy
// ROUND_ROBIN (default) or RANDOM; endpoints with an IP-literal
// socket_address, port_value > 0 and load_balancing_weight (default 1).
// Priority > 0 localities and UNHEALTHY, DRAINING and TIMEOUT endpoints are
// excluded with a note; transport_socket, health_checks, outlier_detection
// and lb_subset_config are noted as ignored. Any other cluster type (EDS,
// STRICT_DNS, LOGICAL_DNS, ORIGINAL_DST, custom), lb_policy or
// load_balancing_policy is an error naming the cluster, because silently
// balancing differently than configured is worse than keeping the last
// good config.
//
// # Errors
//
// Translate collects every problem into one *ValidationError (ErrInvalid):
// Envoy schema (protoc-gen-validate) violations, duplicate listener or
// cluster names, unknown clusters, two listeners or virtual hosts claiming
// the same service key, a total weight of zero or above 2^32-1, more than
// MaxWeightedClusters clusters per service, endpoint port 0, non-IP
// endpoints, and endpoints whose address family differs from the service's
// (connect() cannot be redirected across families). A model is returned only
// when there is none, so a caller keeps its previous model on error.
package config
