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
// and translate its static_resources. The elements of
// static_resources.listeners and .clusters are decoded in parallel, one
// goroutine per CPU up to 4: in JSON a tokenizer finds them (decode.go); in
// YAML they are cut out of the text by their lines and each item is
// parsed, converted and decoded on its own (yamlsplit.go: the document's
// node tree is never built); the rest of the document is decoded on its
// own. The message is the one-piece decode's; input that fails, or a shape
// the split does not take apart (YAML anchors, aliases, directives, tabs in
// indentation, flow-style sequences), is decoded in one piece, for
// protojson's error, and Model.SerialDecode says why (LogSerialDecode warns
// for a large config). Unknown fields and typed_config @type values other than
// tcp_proxy, http_connection_manager, the router filter and the common
// filters and access loggers of extensions.go (which parse and are noted as
// not applied) are rejected with a *ParseError giving line, column and field
// path. Watch follows a file (edits, renames, ConfigMap symlink swaps);
// content whose apply fails is retried with a doubling backoff, not every
// poll. Default and LoadDefault give the embedded default.yaml.
//
// # Model
//
// A Model is canonical: weighted clusters are sorted by name with duplicates
// merged and zero weights dropped; endpoints are sorted by address with
// duplicates merged (weights added). Reordering the input therefore changes
// neither Version nor Diff. Version hashes Services and Clusters, not the
// notes. A ServiceKey with an unspecified address (0.0.0.0 or ::) matches any
// destination of that family on its port that no specific key matches.
// IPv4-mapped IPv6 addresses are stored as IPv4. Notes are sorted and
// carry no duplicates.
//
// A passthrough service has no clusters: compat mode leaves connections to
// its key at their original destination. The model has one for every
// specific VIP:port that a listener address or an IP-literal virtual host
// domain claims but compat mode cannot serve (the listener is not applied,
// or the virtual host has no usable catch-all route), so that those
// connections do not fall through to the wildcard service of the port.
// Wildcard keys are never passthrough: a connection no key matches keeps
// its original destination anyway. A service turning passthrough, or served
// again, is a change to Version and Diff.
//
// # Supported subset
//
// Listeners: a TCP socket_address with an IP literal and port_value (plus
// additional_addresses). The filter chain used is the one without a
// filter_chain_match, else default_filter_chain (a default_filter_chain next
// to a match-less chain is noted as never used); chains with a match are
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
//     others are noted, and so is a domain naming the VIP with another port
//     (as on a wildcard listener). In the chosen virtual host the first
//     catch-all route (match prefix "/" and nothing else but
//     case_sensitive; not path "/", not a regex, not an empty prefix)
//     supplies cluster or weighted_clusters. Every route before it is noted
//     "needs enhanced mode"; routes after it are unreachable in Envoy too. Without a usable
//     catch-all the virtual host is noted and yields no served service (its
//     specific keys are passthrough). HTTP filters other than the router
//     are noted.
//
// A listener on a VIP:port takes connections to it before a wildcard
// listener on the port, as in Envoy: when a wildcard listener's virtual
// host names that VIP too, the listener's service (served or passthrough)
// wins and the virtual host gets a note, whatever the order of the input.
//
// Listeners compat mode cannot apply at all (UDP, pipe, internal, api
// listeners, no filter chain for every connection, other terminal filters,
// rds, scoped_routes) are skipped with a Note: their connections keep their
// original destination, through a passthrough service for each specific
// TCP address (the note names them).
//
// Clusters: type STATIC (or unset) with load_assignment; lb_policy
// ROUND_ROBIN (default) or RANDOM; endpoints with an IP-literal
// socket_address, port_value > 0 and load_balancing_weight (default 1).
// Priority > 0 localities and UNHEALTHY, DRAINING and TIMEOUT endpoints are
// excluded with a note. A cluster of type ORIGINAL_DST (Istio's
// PassthroughCluster; lb_policy CLUSTER_PROVIDED, no load_assignment, no
// original_dst_lb_config) sends each connection where the application
// connected, which compat mode does by not rewriting it: a specific key
// whose whole weight is on such clusters is a passthrough service, a
// wildcard key gets no entry, and a share of a split is an error. Any other
// cluster type (EDS, STRICT_DNS, LOGICAL_DNS, custom), lb_policy or
// load_balancing_policy is an error naming the cluster, because silently
// balancing differently than configured is worse than keeping the last good
// config.
//
// # Fields not applied
//
// No field that changes behaviour is ignored silently. For each message it
// reads (cluster down to endpoint addresses, listener, the chosen filter
// chain, tcp_proxy, http_connection_manager with its route_config and
// router, the chosen virtual host and its catch-all route) Translate checks
// the fields that are set against an allow-list of those compat mode
// honours, handles with a note or issue of its own, or that provably do not
// change where a connection goes (names, stats, connect_timeout, buffer
// limits, socket options, metadata, settings of features that are rejected
// or noted anyway). Every other set field gets one Note naming its path, e.g.
// `cluster "c": load_assignment.policy.drop_overloads is not applied: compat
// mode drops no connections`; one object's notes for a field in several list
// elements are merged ("(and 9 more)"). Among them: circuit_breakers,
// health_checks, outlier_detection, lb_subset_config, transport_socket,
// upstream options, locality-weighted balancing, drop_overloads and
// overprovisioning_factor of clusters; additional_addresses of endpoints;
// listener_filters and access_log of listeners; metadata_match (also per
// cluster), hash_policy, idle timeouts, access_log, max_connect_attempts and
// tunneling_config of tcp_proxy; rewrites, timeouts, retries, mirroring,
// hash_policy, rate_limits, CORS, require_tls and header manipulation of the
// catch-all route and its virtual host; random_value_specifier of
// weighted_clusters; and every option of http_connection_manager and the
// router.
//
// # Errors
//
// Translate collects every problem into one *ValidationError (ErrInvalid):
// Envoy schema (protoc-gen-validate) violations, duplicate listener or
// cluster names, unknown clusters, two listeners on the same address, two
// virtual hosts of a listener naming the same VIP:port (unless neither can
// serve it), two filter chains of a listener without a filter_chain_match
// (Envoy rejects chains with the same matching rules), a weighted_clusters
// total_weight other than the sum of the weights (the API requires them
// equal), a total weight of zero or above 2^32-1, more than
// MaxWeightedClusters clusters per service, endpoint port 0, non-IP
// endpoints, and endpoints whose address family differs from the service's
// (connect() cannot be redirected across families). A model is returned only
// when there is none, so a caller keeps its previous model on error.
package config
