package config

import (
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/runtime/protoimpl"
)

// Fields that change behaviour are never ignored silently. For each message
// Translate reads, an allow-list names the fields compat mode honours (or
// that the translator handles with a note or an issue of its own) and those
// that provably do not change where a connection goes; every other field
// that is set gets a Note naming its path ("<path> is not applied: <why>").
// The lists classify every field of the go-control-plane version built in
// (a test checks it); a field added by a newer version gets its message's
// default reason until it is classified.

// fieldRules is the allow-list of one message type, compiled against its
// descriptor and its generated Go struct.
//
// The walk does not use protoreflect: Has and Get on a generated message
// cost about 50 ns each (reflect.NewAt on every call, more through a oneof),
// and walking the 100,000 endpoints of a large config that way doubled
// Translate's time (reflect.Value per field still added a third). Instead a
// noted field is resolved once to its Go struct field, from the generated
// code's struct tags and OneofWrappers as protoimpl does, and its presence
// is read at its offset (a oneof member's through reflect); a walked field is
// reached through its generated getter, which the compiler type-checks and
// newFieldRules matches to the field.
type fieldRules struct {
	desc   protoreflect.MessageDescriptor
	goType reflect.Type // the generated struct (not the pointer)
	leaves []fieldCheck // fields noted when set, in declaration order
	edges  []fieldCheck // message fields walked into, in declaration order
	// defaulted lists the fields no rule names and that get an unclassified
	// default.
	defaulted []protoreflect.Name
}

// fieldCheck is one field that is noted when set (a leaf) or walked into (an
// edge).
type fieldCheck struct {
	name protoreflect.Name
	// leaves
	index   int          // of the Go struct field (for a oneof member, the oneof's interface field)
	wrapper reflect.Type // a oneof member: its wrapper type (*Msg_Member); nil otherwise
	off     uintptr      // not a oneof member: the field's offset in the struct
	rep     leafRep      // and how it is stored
	kind    NoteKind
	why     string
	// edges
	sub *fieldRules
	one func(proto.Message) (proto.Message, bool)      // a message field: its value if set
	n   func(proto.Message) int                        // a list of messages: its length
	at  func(proto.Message, int) (proto.Message, bool) // and its element i if not nil
}

// fieldRule is one entry of an allow-list under construction.
type fieldRule struct {
	names      []string
	kind       NoteKind // 0 and no sub: allowed
	why        string
	deliberate bool // a default that covers the unlisted fields on purpose
	// walked fields
	sub         *fieldRules
	owner, elem reflect.Type // the getter's receiver (*Msg) and result struct
	list        bool
	one         func(proto.Message) (proto.Message, bool)
	n           func(proto.Message) int
	at          func(proto.Message, int) (proto.Message, bool)
}

// allowed lists fields compat mode honours, handles elsewhere, or that do not
// change where a connection goes.
func allowed(names ...string) fieldRule { return fieldRule{names: names} }

// noted lists fields that get a note of kind when set: "<path> is not
// applied: <why>".
func noted(kind NoteKind, why string, names ...string) fieldRule {
	return fieldRule{names: names, kind: kind, why: why}
}

// unclassified is the default of a message whose fields are all listed:
// only a field added by a newer go-control-plane gets it (and
// TestAllowListsClassifyEveryField fails until it is listed).
func unclassified(kind NoteKind, why string) fieldRule {
	return fieldRule{kind: kind, why: why}
}

// otherwise is the default of a message whose unlisted fields are all of
// one kind by nature (every HTTP connection manager or route option needs
// the request), new ones included.
func otherwise(kind NoteKind, why string) fieldRule {
	return fieldRule{kind: kind, why: why, deliberate: true}
}

// walkedOne is a message field whose own fields are checked against sub;
// get is its generated getter, e.g. (*corev3.Address).GetSocketAddress.
func walkedOne[T proto.Message, M any, E interface {
	*M
	proto.Message
}](name string, sub *fieldRules, get func(T) E) fieldRule {
	return fieldRule{names: []string{name}, sub: sub, owner: reflect.TypeFor[T](), elem: reflect.TypeFor[M](),
		one: func(m proto.Message) (proto.Message, bool) {
			if e := get(m.(T)); e != nil {
				return e, true
			}
			return nil, false
		}}
}

// walkedList is walkedOne for a repeated message field.
func walkedList[T proto.Message, M any, E interface {
	*M
	proto.Message
}](name string, sub *fieldRules, get func(T) []E) fieldRule {
	return fieldRule{names: []string{name}, sub: sub, owner: reflect.TypeFor[T](), elem: reflect.TypeFor[M](), list: true,
		n: func(m proto.Message) int { return len(get(m.(T))) },
		at: func(m proto.Message, i int) (proto.Message, bool) {
			if e := get(m.(T))[i]; e != nil {
				return e, true
			}
			return nil, false
		}}
}

// newFieldRules compiles the allow-list of m's type. Fields no rule names get
// def (a noted rule without names). A rule that does not fit m (an unknown or
// repeated field name, a getter of another field type) is a programming
// error and panics: every Translate call builds the lists, so any test
// finds it.
func newFieldRules(m proto.Message, def fieldRule, rules ...fieldRule) *fieldRules {
	md := m.ProtoReflect().Descriptor()
	bad := func(what string) { panic("config: allow-list of " + string(md.FullName()) + ": " + what) }
	fields := md.Fields()
	byField := make(map[protoreflect.Name]*fieldRule, fields.Len())
	for i := range rules {
		for _, n := range rules[i].names {
			name := protoreflect.Name(n)
			if fields.ByName(name) == nil {
				bad("unknown field " + n)
			}
			if _, dup := byField[name]; dup {
				bad("field " + n + " listed twice")
			}
			byField[name] = &rules[i]
		}
	}

	// The Go struct fields: tag `protobuf:"...,name=x,..."` for a field,
	// `protobuf_oneof:"x"` for a oneof; the wrapper of each oneof member has
	// one field, tagged with the member's name.
	st := reflect.TypeOf(m).Elem()
	goField := make(map[protoreflect.Name]int, st.NumField())
	goOneof := make(map[protoreflect.Name]int)
	for i := range st.NumField() {
		f := st.Field(i)
		if n := tagName(f.Tag.Get("protobuf")); n != "" {
			goField[n] = i
		} else if o := f.Tag.Get("protobuf_oneof"); o != "" {
			goOneof[protoreflect.Name(o)] = i
		}
	}
	wrappers := make(map[protoreflect.Name]reflect.Type)
	if mi, ok := m.ProtoReflect().Type().(*protoimpl.MessageInfo); ok {
		for _, w := range mi.OneofWrappers {
			wt := reflect.TypeOf(w)
			if wt.Kind() == reflect.Pointer && wt.Elem().Kind() == reflect.Struct && wt.Elem().NumField() == 1 {
				wrappers[tagName(wt.Elem().Field(0).Tag.Get("protobuf"))] = wt
			}
		}
	}

	fr := &fieldRules{desc: md, goType: st}
	for i := range fields.Len() {
		fd := fields.Get(i)
		r, ok := byField[fd.Name()]
		if !ok {
			r = &def
			if !def.deliberate {
				fr.defaulted = append(fr.defaulted, fd.Name())
			}
		}
		switch {
		case r.sub != nil:
			if r.owner != reflect.TypeOf(m) || fd.Message() == nil || fd.IsMap() || fd.IsList() != r.list ||
				r.elem != r.sub.goType || fd.Message().FullName() != r.sub.desc.FullName() {
				bad("the getter of walked field " + string(fd.Name()) + " does not fit it")
			}
			fr.edges = append(fr.edges, fieldCheck{name: fd.Name(), sub: r.sub, one: r.one, n: r.n, at: r.at})
		case r.kind != 0:
			c := fieldCheck{name: fd.Name(), kind: r.kind, why: r.why}
			if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
				idx, okO := goOneof[od.Name()]
				w, okW := wrappers[fd.Name()]
				if !okO || !okW {
					bad("no Go field for oneof member " + string(fd.Name()))
				}
				c.index, c.wrapper = idx, w
			} else if idx, okF := goField[fd.Name()]; okF {
				sf := st.Field(idx)
				c.index, c.off, c.rep = idx, sf.Offset, repOf(sf.Type)
				if c.rep == repUnknown {
					bad("field " + string(fd.Name()) + " has Go type " + sf.Type.String())
				}
			} else {
				bad("no Go field for " + string(fd.Name()))
			}
			fr.leaves = append(fr.leaves, c)
		}
	}
	return fr
}

// leafRep is how a noted field is stored in the generated struct, which
// says how to tell whether it is set.
type leafRep uint8

const (
	repUnknown leafRep = iota
	repPointer         // a message (pointer) or a map: set when not nil
	repSlice           // a list or bytes: set when not empty
	repString          // set when not empty
	repBool
	rep32 // int32, uint32, float32, enum: set when any bit is
	rep64 // int64, uint64, float64
)

func repOf(t reflect.Type) leafRep {
	switch t.Kind() {
	case reflect.Pointer, reflect.Map:
		return repPointer
	case reflect.Slice:
		return repSlice
	case reflect.String:
		return repString
	case reflect.Bool:
		return repBool
	case reflect.Int32, reflect.Uint32, reflect.Float32:
		return rep32
	case reflect.Int64, reflect.Uint64, reflect.Float64:
		return rep64
	}
	return repUnknown
}

// tagName returns the name= part of a protobuf struct tag, or "".
func tagName(tag string) protoreflect.Name {
	for part := range strings.SplitSeq(tag, ",") {
		if n, ok := strings.CutPrefix(part, "name="); ok {
			return protoreflect.Name(n)
		}
	}
	return ""
}

// Reasons shared by several fields.
const (
	whyNoHTTP        = "compat mode does not process HTTP requests; the client's bytes reach the endpoint unchanged"
	whyNoRequest     = "compat mode cannot see the request"
	whyNoAccessLog   = "compat mode writes no access log"
	whyNoSubset      = "subset load balancing is not applied; every endpoint of the cluster is used"
	whyNoUpstreamTLS = "compat mode redirects the client's own connection, so upstream TLS is not originated"
	whyNoUpstream    = "compat mode redirects the client's own connection; Envoy's upstream connection settings do not apply to it"
	whyNoHeaders     = "header manipulation needs the request"
	whyNoIdle        = "compat mode does not close idle connections"
	whyNotImpl       = "compat mode does not implement it"
)

// ruleSet holds the compiled allow-lists of the messages Translate walks.
type ruleSet struct {
	cluster, listener, chain, tcpProxy, hcm, router, vhost, route *fieldRules
}

// fieldRuleSet returns the rule set, built on first use (about 0.3 ms, a
// lot next to translating a small config) and never changed after.
var fieldRuleSet = sync.OnceValue(newRuleSet)

func newRuleSet() *ruleSet {
	sockAddr := newFieldRules(&corev3.SocketAddress{}, unclassified(NotSupported, whyNotImpl),
		allowed("protocol", "address", "port_value", "named_port", "ipv4_compat"),
		noted(NotSupported, "custom resolvers are not supported; the address is used as an IP literal", "resolver_name"),
		noted(NotSupported, "compat mode matches connect() in every enrolled network namespace", "network_namespace_filepath"))
	addr := newFieldRules(&corev3.Address{}, unclassified(NotSupported, whyNotImpl),
		allowed("pipe", "envoy_internal_address"), // handled: not a socket_address
		walkedOne("socket_address", sockAddr, (*corev3.Address).GetSocketAddress))

	// ---- clusters ----
	endpoint := newFieldRules(&endpointv3.Endpoint{}, unclassified(NotSupported, whyNotImpl),
		walkedOne("address", addr, (*endpointv3.Endpoint).GetAddress),
		allowed("health_check_config", "hostname", "observability_name"),
		noted(Ignored, "compat mode connects to the endpoint's address only", "additional_addresses"))
	lbEndpoint := newFieldRules(&endpointv3.LbEndpoint{}, unclassified(NotSupported, whyNotImpl),
		walkedOne("endpoint", endpoint, (*endpointv3.LbEndpoint).GetEndpoint),
		allowed("endpoint_name", "health_status", "metadata", "load_balancing_weight"))
	locality := newFieldRules(&endpointv3.LocalityLbEndpoints{}, unclassified(NotSupported, whyNotImpl),
		walkedList("lb_endpoints", lbEndpoint, (*endpointv3.LocalityLbEndpoints).GetLbEndpoints),
		// load_balancing_weight only counts with locality_weighted_lb_config,
		// which is noted.
		allowed("locality", "metadata", "leds_cluster_locality_config", "load_balancing_weight", "priority", "proximity"),
		noted(NotSupported, "list the endpoints in lb_endpoints", "load_balancer_endpoints"))
	policy := newFieldRules(&endpointv3.ClusterLoadAssignment_Policy{}, unclassified(NotSupported, whyNotImpl),
		noted(Ignored, "compat mode drops no connections", "drop_overloads"),
		noted(Ignored, "compat mode uses the priority 0 endpoints only, without priority or locality spillover", "overprovisioning_factor"),
		allowed("endpoint_stale_after", "weighted_priority_health"))
	loadAssignment := newFieldRules(&endpointv3.ClusterLoadAssignment{}, unclassified(NotSupported, whyNotImpl),
		allowed("cluster_name", "named_endpoints"),
		walkedList("endpoints", locality, (*endpointv3.ClusterLoadAssignment).GetEndpoints),
		walkedOne("policy", policy, (*endpointv3.ClusterLoadAssignment).GetPolicy))
	commonLB := newFieldRules(&clusterv3.Cluster_CommonLbConfig{}, unclassified(NotSupported, whyNotImpl),
		noted(Ignored, "panic routing is not done; endpoints with an unhealthy health_status are always excluded", "healthy_panic_threshold"),
		noted(Ignored, "compat mode balances across all localities by endpoint weight", "zone_aware_lb_config"),
		noted(Ignored, "locality load_balancing_weight values are not applied; endpoints are balanced by their own weights across all localities", "locality_weighted_lb_config"),
		allowed("update_merge_window", "ignore_new_hosts_until_first_hc", "close_connections_on_host_set_change",
			"consistent_hashing_lb_config", "override_host_status"))
	cluster := newFieldRules(&clusterv3.Cluster{}, unclassified(NotSupported, whyNotImpl),
		allowed("name", "alt_stat_name", "stats_matcher", "type", "cluster_type", "eds_cluster_config",
			"connect_timeout", "per_connection_buffer_limit_bytes", "per_connection_buffer_high_watermark_timeout",
			"lb_policy", "load_balancing_policy", "max_requests_per_connection", "metadata",
			// DNS settings: STATIC clusters resolve nothing (DNS types are rejected).
			"dns_refresh_rate", "dns_jitter", "dns_failure_refresh_rate", "respect_dns_ttl", "dns_lookup_family",
			"dns_resolvers", "use_tcp_for_dns_lookups", "dns_resolution_config", "typed_dns_resolver_config",
			"wait_for_warm_on_init", "cleanup_interval",
			// configs of lb_policy values compat mode rejects; Envoy ignores them for ROUND_ROBIN and RANDOM
			// (original_dst_lb_config of an ORIGINAL_DST cluster is an issue of translate.go)
			"ring_hash_lb_config", "maglev_lb_config", "original_dst_lb_config", "least_request_lb_config",
			"close_connections_on_host_health_failure", "ignore_health_on_host_removal",
			"lrs_server", "lrs_report_endpoint_metrics", "track_timeout_budgets", "track_cluster_stats",
			"preconnect_policy", "connection_pool_per_downstream_connection"),
		walkedOne("load_assignment", loadAssignment, (*clusterv3.Cluster).GetLoadAssignment),
		walkedOne("common_lb_config", commonLB, (*clusterv3.Cluster).GetCommonLbConfig),
		noted(Ignored, whyNoUpstreamTLS, "transport_socket", "transport_socket_matches", "transport_socket_matcher"),
		noted(Ignored, "compat mode performs no health checks; every listed endpoint receives connections", "health_checks"),
		noted(Ignored, "compat mode does not limit or queue connections or requests per cluster", "circuit_breakers", "queuing_policies"),
		noted(Ignored, "compat mode does not eject failing endpoints", "outlier_detection"),
		noted(Ignored, "all endpoints form one set", "lb_subset_config"),
		noted(Ignored, "slow start and locality settings are not applied; endpoints get their configured weights", "round_robin_lb_config"),
		noted(Ignored, "the client's connection keeps its own source address", "upstream_bind_config"),
		noted(Ignored, whyNoUpstream, "upstream_http_protocol_options", "common_http_protocol_options",
			"http_protocol_options", "http2_protocol_options", "typed_extension_protocol_options", "protocol_selection",
			"upstream_connection_options"),
		noted(NotSupported, "upstream network filters do not run in compat mode", "filters"),
		noted(NotSupported, "custom upstream connection pools do not run in compat mode", "upstream_config"))

	// ---- listeners ----
	additional := newFieldRules(&listenerv3.AdditionalAddress{}, unclassified(NotSupported, whyNotImpl),
		walkedOne("address", addr, (*listenerv3.AdditionalAddress).GetAddress),
		allowed("socket_options", "tcp_keepalive"))
	listener := newFieldRules(&listenerv3.Listener{}, unclassified(NotSupported, whyNotImpl),
		walkedOne("address", addr, (*listenerv3.Listener).GetAddress),
		walkedList("additional_addresses", additional, (*listenerv3.Listener).GetAdditionalAddresses),
		allowed("name", "stat_prefix", "stats_matcher", "filter_chains", "filter_chain_matcher", "default_filter_chain",
			"api_listener", "internal_listener", "udp_listener_config",
			// connections redirected to a use_original_dst listener go to the
			// listener of their original destination, which is what compat mode does
			"use_original_dst", "bind_to_port",
			"per_connection_buffer_limit_bytes", "per_connection_buffer_high_watermark_timeout",
			"metadata", "deprecated_v1", "drain_type", "listener_filters_timeout", "continue_on_listener_filters_timeout",
			"transparent", "freebind", "socket_options", "tcp_fast_open_queue_length", "traffic_direction",
			"connection_balance_config", "reuse_port", "enable_reuse_port", "tcp_backlog_size",
			"max_connections_to_accept_per_socket_event", "enable_mptcp", "ignore_global_conn_limit",
			"bypass_overload_manager", "tcp_keepalive",
			"fcds_config"), // not implemented by Envoy either
		noted(NotSupported, "compat mode runs no listener filters (TLS or HTTP inspection, PROXY protocol, original_dst)", "listener_filters"),
		noted(Ignored, whyNoAccessLog, "access_log"))
	chain := newFieldRules(&listenerv3.FilterChain{}, unclassified(NotSupported, whyNotImpl),
		allowed("filter_chain_match", "filters", "metadata", "transport_socket_connect_timeout", "name"),
		noted(Ignored, "compat mode does not terminate TLS; the client's bytes reach the endpoint unchanged", "transport_socket"),
		noted(NotSupported, "compat mode does not parse the PROXY protocol", "use_proxy_proto"))

	tcpWeight := newFieldRules(&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{}, unclassified(NotSupported, whyNotImpl),
		allowed("name", "weight"),
		noted(Ignored, whyNoSubset, "metadata_match"))
	tcpWeighted := newFieldRules(&tcpv3.TcpProxy_WeightedCluster{}, unclassified(NotSupported, whyNotImpl),
		walkedList("clusters", tcpWeight, (*tcpv3.TcpProxy_WeightedCluster).GetClusters))
	tcpProxy := newFieldRules(&tcpv3.TcpProxy{}, unclassified(NotSupported, whyNotImpl),
		allowed("stat_prefix", "cluster", "backoff_options"),
		walkedOne("weighted_clusters", tcpWeighted, (*tcpv3.TcpProxy).GetWeightedClusters),
		noted(NotSupported, "on-demand cluster discovery is not supported", "on_demand"),
		noted(Ignored, whyNoSubset, "metadata_match"),
		noted(Ignored, whyNoIdle, "idle_timeout", "downstream_idle_timeout", "upstream_idle_timeout"),
		noted(Ignored, whyNoAccessLog, "access_log", "access_log_flush_interval", "flush_access_log_on_connected", "access_log_options"),
		noted(Ignored, "the client's connect() is the only attempt; a failed connection is not retried on another endpoint", "max_connect_attempts"),
		noted(Ignored, "only hash-based lb_policy clusters use it, and compat mode supports ROUND_ROBIN and RANDOM only", "hash_policy"),
		noted(NeedsEnhanced, "HTTP CONNECT tunneling is not done; connections go to the cluster directly", "tunneling_config"),
		noted(Ignored, "compat mode does not limit how long a connection lasts", "max_downstream_connection_duration", "max_downstream_connection_duration_jitter_percentage"),
		noted(Ignored, "compat mode sends no PROXY protocol header", "proxy_protocol_tlvs", "proxy_protocol_tlv_merge_policy"),
		noted(Ignored, "the client's connect() reaches the endpoint directly, when the client makes it", "upstream_connect_mode", "max_early_data_bytes"),
		noted(Ignored, "compat mode does not close connections when the listener drains", "check_drain_close"))

	// ---- HTTP ----
	routeWeight := newFieldRules(&routev3.WeightedCluster_ClusterWeight{}, otherwise(NeedsEnhanced, whyNoRequest),
		allowed("name", "cluster_header", "weight", "typed_per_filter_config"),
		noted(Ignored, whyNoSubset, "metadata_match"),
		noted(NeedsEnhanced, whyNoHeaders, "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove", "host_rewrite_literal"))
	routeWeighted := newFieldRules(&routev3.WeightedCluster{}, otherwise(NeedsEnhanced, whyNoRequest),
		walkedList("clusters", routeWeight, (*routev3.WeightedCluster).GetClusters),
		allowed("total_weight"), // checked against the weights
		noted(NotSupported, "runtime is not read; the configured weights apply", "runtime_key_prefix"),
		noted(NeedsEnhanced, "random_value_specifier picks the split per request; compat mode splits connections by weight at random", "header_name", "use_hash_policy"))
	routeAction := newFieldRules(&routev3.RouteAction{}, otherwise(NeedsEnhanced, whyNoRequest),
		allowed("cluster", "cluster_header", "cluster_specifier_plugin", "inline_cluster_specifier_plugin",
			"cluster_not_found_response_code", "priority"),
		walkedOne("weighted_clusters", routeWeighted, (*routev3.RouteAction).GetWeightedClusters),
		noted(Ignored, whyNoSubset, "metadata_match"),
		noted(NeedsEnhanced, "rewriting the request needs it", "prefix_rewrite", "regex_rewrite", "path_rewrite_policy",
			"path_rewrite", "host_rewrite_literal", "auto_host_rewrite", "host_rewrite_header", "host_rewrite_path_regex",
			"host_rewrite", "append_x_forwarded_host"),
		noted(NeedsEnhanced, "per-request timeouts need the request", "timeout", "idle_timeout", "flush_timeout",
			"max_stream_duration", "max_grpc_timeout", "grpc_timeout_offset"),
		noted(NeedsEnhanced, "retries and hedging are per request; the client's connect() is the only attempt", "retry_policy",
			"retry_policy_typed_config", "hedge_policy"),
		noted(NeedsEnhanced, "request mirroring needs the request", "request_mirror_policies"),
		noted(NeedsEnhanced, "rate limiting is per request", "rate_limits", "include_vh_rate_limits"),
		noted(Ignored, "only hash-based lb_policy clusters use it, and compat mode supports ROUND_ROBIN and RANDOM only", "hash_policy"))
	route := newFieldRules(&routev3.Route{}, otherwise(NeedsEnhanced, whyNoRequest),
		allowed("name", "match", "redirect", "direct_response", "filter_action", "non_forwarding_action",
			"metadata", "decorator", "typed_per_filter_config", "tracing", "per_request_buffer_limit_bytes",
			"stat_prefix", "request_body_buffer_limit"),
		walkedOne("route", routeAction, (*routev3.Route).GetRoute),
		noted(NeedsEnhanced, whyNoHeaders, "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove"))
	vhost := newFieldRules(&routev3.VirtualHost{}, otherwise(NeedsEnhanced, whyNoRequest),
		allowed("name", "domains", "routes", "virtual_clusters", "typed_per_filter_config",
			"per_request_buffer_limit_bytes", "request_body_buffer_limit", "metadata"),
		noted(NeedsEnhanced, "Envoy answers requests that are not over TLS itself; compat mode passes them on", "require_tls"),
		noted(NeedsEnhanced, "rate limiting is per request", "rate_limits"),
		noted(NeedsEnhanced, whyNoHeaders, "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove", "include_request_attempt_count",
			"include_attempt_count_in_response", "include_is_timeout_retry_header"),
		noted(NeedsEnhanced, "CORS is answered per request", "cors"),
		noted(NeedsEnhanced, "retries and hedging are per request; the client's connect() is the only attempt", "retry_policy",
			"retry_policy_typed_config", "hedge_policy"),
		noted(NeedsEnhanced, "request mirroring needs the request", "request_mirror_policies"),
		noted(NeedsEnhanced, "a matcher tree picks routes per request", "matcher"))
	routeConfig := newFieldRules(&routev3.RouteConfiguration{}, otherwise(NeedsEnhanced, whyNoRequest),
		allowed("name", "virtual_hosts", "most_specific_header_mutations_wins", "validate_clusters",
			"max_direct_response_body_size_bytes", "cluster_specifier_plugins", "ignore_port_in_host_matching",
			"ignore_path_parameters_in_path_matching", "typed_per_filter_config", "metadata"),
		noted(NotSupported, "virtual host discovery is not supported", "vhds"),
		noted(NeedsEnhanced, whyNoHeaders, "internal_only_headers", "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove"),
		noted(NeedsEnhanced, "request mirroring needs the request", "request_mirror_policies"),
		noted(NeedsEnhanced, "compat mode maps virtual hosts to the VIPs their domains name, not by a request header", "vhost_header"))
	hcm := newFieldRules(&hcmv3.HttpConnectionManager{}, otherwise(NeedsEnhanced, whyNoHTTP),
		allowed("codec_type", "stat_prefix", "rds", "scoped_routes", "http_filters"),
		walkedOne("route_config", routeConfig, (*hcmv3.HttpConnectionManager).GetRouteConfig),
		noted(Ignored, whyNoAccessLog, "access_log", "access_log_flush_interval", "flush_access_log_on_new_request", "access_log_options"))
	router := newFieldRules(&routerv3.Router{}, otherwise(NeedsEnhanced, whyNoHTTP),
		allowed("dynamic_stats", "start_child_span", "suppress_grpc_request_failure_code_stats"),
		noted(Ignored, whyNoAccessLog, "upstream_log", "upstream_log_options"))

	return &ruleSet{cluster: cluster, listener: listener, chain: chain, tcpProxy: tcpProxy,
		hcm: hcm, router: router, vhost: vhost, route: route}
}

// pathStep is one field of the path being walked; index is the list element
// or -1.
type pathStep struct {
	name  protoreflect.Name
	index int
}

// fieldNote is a walk note being collected: the notes of one object and
// field (list indices aside) are merged into one.
type fieldNote struct {
	idx  int    // in translator.notes
	path string // of the first occurrence
	more int    // further occurrences
	why  string
}

// unapplied notes every field of m (a non-nil generated message of r's
// type, which obj names) that is set and that r does not allow, walking
// into the message fields r says to. Notes name the field path from m; one
// object's notes for the same field in several list elements merge into one
// naming the first.
func (t *translator) unapplied(obj string, m proto.Message, r *fieldRules) {
	if len(r.leaves) > 0 {
		v := reflect.ValueOf(m)
		p := v.UnsafePointer()
		for i := range r.leaves {
			if c := &r.leaves[i]; set(v, p, c) {
				t.fieldNote(obj, c)
			}
		}
	}
	for i := range r.edges {
		c := &r.edges[i]
		if c.one != nil {
			if e, ok := c.one(m); ok {
				t.path = append(t.path, pathStep{c.name, -1})
				t.unapplied(obj, e, c.sub)
				t.path = t.path[:len(t.path)-1]
			}
			continue
		}
		for j, n := 0, c.n(m); j < n; j++ {
			if e, ok := c.at(m, j); ok {
				t.path = append(t.path, pathStep{c.name, j})
				t.unapplied(obj, e, c.sub)
				t.path = t.path[:len(t.path)-1]
			}
		}
	}
}

// set reports whether leaf c of the message v (p its pointer) is set, as
// protobuf defines it: a message, list, map, string or bytes field when
// non-nil or non-empty, a scalar when not zero, a oneof member when the
// oneof holds its wrapper. The field is read at its offset in the struct p
// points to, with the type newFieldRules found there.
func set(v reflect.Value, p unsafe.Pointer, c *fieldCheck) bool {
	if c.wrapper != nil {
		f := v.Elem().Field(c.index)
		return !f.IsNil() && f.Elem().Type() == c.wrapper
	}
	f := unsafe.Add(p, c.off)
	switch c.rep {
	case repPointer:
		return *(*unsafe.Pointer)(f) != nil
	case repSlice:
		return len(*(*[]byte)(f)) > 0 // every slice header has the same layout
	case repString:
		return len(*(*string)(f)) > 0
	case repBool:
		return *(*bool)(f)
	case rep32:
		return *(*uint32)(f) != 0
	case rep64:
		return *(*uint64)(f) != 0
	}
	return false
}

func (t *translator) fieldNote(obj string, c *fieldCheck) {
	var path, generic strings.Builder
	for _, s := range t.path {
		path.WriteString(string(s.name))
		generic.WriteString(string(s.name))
		if s.index >= 0 {
			path.WriteString("[" + strconv.Itoa(s.index) + "]")
			generic.WriteString("[]")
		}
		path.WriteByte('.')
		generic.WriteByte('.')
	}
	path.WriteString(string(c.name))
	generic.WriteString(string(c.name))
	key := obj + "\x00" + generic.String()
	if fn, seen := t.fieldNotes[key]; seen {
		fn.more++
		return
	}
	if t.fieldNotes == nil {
		t.fieldNotes = make(map[string]*fieldNote)
	}
	t.fieldNotes[key] = &fieldNote{idx: len(t.notes), path: path.String(), why: c.why}
	t.notes = append(t.notes, Note{Kind: c.kind, Object: obj})
}

// finishFieldNotes writes the reasons of the walk notes, now that their
// counts are known.
func (t *translator) finishFieldNotes() {
	for _, fn := range t.fieldNotes {
		p := fn.path
		if fn.more > 0 {
			p += " (and " + strconv.Itoa(fn.more) + " more)"
		}
		t.notes[fn.idx].Reason = p + " is not applied: " + fn.why
	}
}
