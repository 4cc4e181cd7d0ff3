package config_test

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"kmesh.dev/kmesh/daemon/config"
)

// These tests drive Translate with go-control-plane values, as an xDS client
// would.

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func pAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func pFilter(t testing.TB, name string, m proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

func pTCP(t testing.TB, name, ip string, port uint32, clusterName string, before ...*listenerv3.Filter) *listenerv3.Listener {
	tp := &tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: clusterName}}
	return &listenerv3.Listener{Name: name, Address: pAddr(ip, port), FilterChains: []*listenerv3.FilterChain{{
		Filters: append(before, pFilter(t, "envoy.filters.network.tcp_proxy", tp)),
	}}}
}

func pCluster(name string, eps ...string) *clusterv3.Cluster {
	var lbs []*endpointv3.LbEndpoint
	for _, e := range eps {
		ap := mustAddrPort(e)
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: pAddr(ap.Addr().String(), uint32(ap.Port()))}}})
	}
	return &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(1e9),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}},
	}
}

func TestTranslateProtoInputsUntouched(t *testing.T) {
	l := pTCP(t, "l", "10.96.0.10", 80, "a")
	c := pCluster("a", "10.244.0.2:80", "10.244.0.1:80")
	lc, cc := proto.Clone(l), proto.Clone(c)
	m, err := config.Translate([]*listenerv3.Listener{l}, []*clusterv3.Cluster{c})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(l, lc) || !proto.Equal(c, cc) {
		t.Fatal("Translate modified its inputs")
	}
	want := eps("10.244.0.1:80", 1, "10.244.0.2:80", 1)
	if got := m.Clusters["a"].Endpoints; !slices.Equal(got, want) {
		t.Fatalf("endpoints = %v, want %v", got, want)
	}
	if got := serviceSummary(m); !slices.Equal(got, []string{"10.96.0.10:80 -> a:1"}) {
		t.Fatalf("services = %v", got)
	}
}

func TestTranslateProtoNotes(t *testing.T) {
	// A network filter before tcp_proxy (any type; only its position matters).
	pre := pFilter(t, "envoy.filters.network.rbac", &routerv3.Router{})
	tcpWithPre := pTCP(t, "pre", "10.96.0.10", 80, "a", pre)

	// A terminal filter of another type.
	other := &listenerv3.Listener{Name: "redis", Address: pAddr("10.96.0.11", 6379), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{pFilter(t, "envoy.filters.network.redis_proxy", wrapperspb.String("x"))}}}}

	// An HCM with an extra HTTP filter and a TLS transport socket.
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "h",
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, wrapperspb.String("jwt"))}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}},
		},
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"}}},
			}}}},
		}},
	}
	h := &listenerv3.Listener{Name: "h", Address: pAddr("10.96.0.12", 443), FilterChains: []*listenerv3.FilterChain{{
		TransportSocket: &corev3.TransportSocket{Name: "tls"},
		Filters:         []*listenerv3.Filter{pFilter(t, "hcm", hcm)},
	}}}

	// ipv4_compat on [::].
	v6 := pTCP(t, "v6", "::", 80, "a6")
	v6.Address.GetSocketAddress().Ipv4Compat = true

	// Internal listener.
	internal := &listenerv3.Listener{Name: "int", ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}}}

	a := pCluster("a", "10.244.0.1:80")
	a.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(1e9), Interval: durationpb.New(1e9),
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}}}
	a.TransportSocket = &corev3.TransportSocket{Name: "tls"}

	m, err := config.Translate(
		[]*listenerv3.Listener{tcpWithPre, other, h, v6, internal},
		[]*clusterv3.Cluster{a, pCluster("a6", "[fd00::1]:80")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := serviceSummary(m), []string{"10.96.0.10:80 -> a:1", "10.96.0.11:6379 -> passthrough", "10.96.0.12:443 -> a:1", "[::]:80 -> a6:1"}; !slices.Equal(got, want) {
		t.Errorf("services = %q, want %q", got, want)
	}
	requireNotes(t, m, []string{
		`listener "pre" filter_chain[0] filter "envoy.filters.network.rbac": network filters before the terminal filter are not applied in compat mode (needs enhanced mode)`,
		`listener "redis" filter_chain[0] filter "envoy.filters.network.redis_proxy": terminal filter type google.protobuf.StringValue is not supported (use tcp_proxy or http_connection_manager); listener not applied; connections to 10.96.0.11:6379 keep their original destination (not supported)`,
		`listener "h" filter_chain[0] filter "hcm" http_filter "envoy.filters.http.jwt_authn": HTTP filters are not applied in compat mode`,
		`listener "h" filter_chain[0]: transport_socket is not applied`,
		`listener "v6": address ipv4_compat is ignored: [::]:80 matches IPv6 destinations only`,
		`listener "int": internal listeners are not reachable`,
		`cluster "a": health_checks is not applied: compat mode performs no health checks`,
		`cluster "a": transport_socket is not applied`,
	})
	if len(m.Unsupported) != 8 {
		t.Errorf("got %d notes, want 8: %q", len(m.Unsupported), noteStrings(m))
	}
	if !slices.IsSortedFunc(m.Unsupported, func(a, b config.Note) int {
		if a.Object != b.Object {
			if a.Object < b.Object {
				return -1
			}
			return 1
		}
		return 0
	}) {
		t.Error("notes not sorted by object")
	}
}

func TestTranslateProtoRejected(t *testing.T) {
	lbp := pCluster("lbp", "10.244.0.1:80")
	lbp.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{}
	eds := &clusterv3.Cluster{Name: "eds", ConnectTimeout: durationpb.New(1e9),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	custom := &clusterv3.Cluster{Name: "agg", ConnectTimeout: durationpb.New(1e9),
		ClusterDiscoveryType: &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{
			Name: "envoy.clusters.aggregate", TypedConfig: mustAny(t, wrapperspb.String("x"))}}}
	named := pCluster("named")
	named.LoadAssignment.Endpoints[0].LbEndpoints = []*endpointv3.LbEndpoint{{
		HostIdentifier: &endpointv3.LbEndpoint_EndpointName{EndpointName: "ep1"}}}
	noTC := &listenerv3.Listener{Name: "notc", Address: pAddr("10.96.0.9", 80), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "x"}}}}}
	_, err := config.Translate(
		[]*listenerv3.Listener{nil, pTCP(t, "l", "10.96.0.10", 80, "eds"), noTC},
		[]*clusterv3.Cluster{lbp, eds, custom, named, nil})
	requireIssues(t, err, []string{
		`listener[0]: is nil`,
		`cluster[4]: is nil`,
		`cluster "lbp": load_balancing_policy is not supported; use lb_policy ROUND_ROBIN or RANDOM`,
		`cluster "eds": type EDS is not supported by the local-file translator`,
		`cluster "agg": cluster_type "envoy.clusters.aggregate" is not supported; use type STATIC`,
		`cluster "named" load_assignment.endpoints[0].lb_endpoints[0]: endpoint_name (named endpoints) is not supported`,
	})
	// notc is a note, not an issue: check on its own.
	m, err := config.Translate([]*listenerv3.Listener{noTC}, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireNotes(t, m, []string{`listener "notc" filter_chain[0] filter "x": has no typed_config`})
}
