package config_test

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"kmesh.dev/kmesh/daemon/config"
)

var (
	cA = cluster("a", ep("10.244.0.1", 8080))
	cB = cluster("b", ep("10.244.0.2", 8080))
	// cOrigDst is an ORIGINAL_DST cluster as Istio writes PassthroughCluster.
	cOrigDst = func(name string) M { return M{"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED"} }
	cA6      = cluster("a6", ep("fd00::1", 8080))
)

func TestTranslateSupported(t *testing.T) {
	tests := []struct {
		name     string
		cfg      M
		services []string // serviceSummary lines, in key order
		notes    []string // substrings of some note
		nNotes   int      // exact note count
	}{{
		name:     "tcp single cluster",
		cfg:      boot(ls(tcpL("l", "10.96.0.10", 80, to("a"))), cA),
		services: []string{"10.96.0.10:80 -> a:1"},
	}, {
		name:     "tcp weighted clusters sorted and duplicates merged",
		cfg:      boot(ls(tcpL("l", "10.96.0.10", 80, weighted("b", 10, "a", 60, "a", 30))), cA, cB),
		services: []string{"10.96.0.10:80 -> a:90,b:10"},
	}, {
		name:     "tcp on 0.0.0.0 is the IPv4 wildcard key",
		cfg:      boot(ls(tcpL("l", "0.0.0.0", 5432, to("a"))), cA),
		services: []string{"0.0.0.0:5432 -> a:1"},
	}, {
		name:     "tcp IPv6 VIP and [::] wildcard",
		cfg:      boot(ls(tcpL("l6", "fd00::10", 80, to("a6")), tcpL("w6", "::", 81, to("a6"))), cA6),
		services: []string{"[::]:81 -> a6:1", "[fd00::10]:80 -> a6:1"},
	}, {
		name:     "IPv4-mapped listener address is stored as IPv4",
		cfg:      boot(ls(tcpL("l", "::ffff:10.96.0.10", 80, to("a"))), cA),
		services: []string{"10.96.0.10:80 -> a:1"},
	}, {
		name: "additional_addresses add service keys",
		cfg: boot(ls(with(tcpL("l", "10.96.0.10", 80, to("a")),
			"additional_addresses", []any{M{"address": sockAddr("10.96.0.11", 80)}})), cA),
		services: []string{"10.96.0.10:80 -> a:1", "10.96.0.11:80 -> a:1"},
	}, {
		name: "http wildcard listener: one service per IP-literal domain",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("ratings", []string{"ratings.default.svc", "10.96.0.20", "10.96.0.20:9080", "10.96.0.21"},
				route("all", catchAll, routeWeighted("a", 3, "b", 1))),
			vhost("reviews", []string{"reviews", "10.96.0.30:9080"}, route("", catchAll, to("b"))))),
			cA, cB),
		services: []string{"10.96.0.20:9080 -> a:3,b:1", "10.96.0.21:9080 -> a:3,b:1", "10.96.0.30:9080 -> b:1"},
	}, {
		name: "http [::] listener with bracketed IPv6 domains",
		cfg: boot(ls(hcmL("h", "::", 9080,
			vhost("v", []string{"[fd00::20]", "[fd00::21]:9080", "fd00::22"}, route("", catchAll, to("a6"))))), cA6),
		services: []string{"[fd00::20]:9080 -> a6:1", "[fd00::21]:9080 -> a6:1", "[fd00::22]:9080 -> a6:1"},
	}, {
		name:     "http wildcard listener: \"*\" virtual host is the wildcard key",
		cfg:      boot(ls(hcmL("h", "0.0.0.0", 8000, vhost("any", []string{"*"}, route("", catchAll, to("a"))))), cA),
		services: []string{"0.0.0.0:8000 -> a:1"},
	}, {
		name: "http wildcard: zero-weight route cluster dropped",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20"}, route("", catchAll, routeWeighted("a", 0, "b", 5))))), cA, cB),
		services: []string{"10.96.0.20:9080 -> b:5"},
	}, {
		name: "http VIP listener: \"*\" virtual host applies; host-name virtual hosts noted",
		cfg: boot(ls(hcmL("h", "10.96.0.40", 80,
			vhost("by-name", []string{"shop.example.com"}, route("", catchAll, to("b"))),
			vhost("star", []string{"*"}, route("", catchAll, to("a"))))), cA, cB),
		services: []string{"10.96.0.40:80 -> a:1"},
		notes:    []string{`listener "h" virtual_host "by-name": selected by Host header only; compat mode sends every connection to 10.96.0.40:80 to virtual host "star" (needs enhanced mode)`},
		nNotes:   1,
	}, {
		name: "http VIP listener: the virtual host naming the VIP wins over \"*\"",
		cfg: boot(ls(hcmL("h", "10.96.0.40", 80,
			vhost("star", []string{"*"}, route("", catchAll, to("a"))),
			vhost("exact", []string{"10.96.0.40:80"}, route("", catchAll, to("b"))))), cA, cB),
		services: []string{"10.96.0.40:80 -> b:1"},
		notes:    []string{`virtual_host "star": selected by Host header only`},
		nNotes:   1,
	}, {
		name: "routes before the catch-all need enhanced mode",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20"},
				route("admin", M{"prefix": "/admin"}, to("b")),
				route("exact", M{"path": "/login"}, to("b")),
				route("re", M{"safe_regex": M{"regex": ".*"}}, to("b")),
				route("hdr", M{"prefix": "/", "headers": []any{M{"name": "x-canary", "present_match": true}}}, to("b")),
				route("", M{"prefix": "/", "query_parameters": []any{M{"name": "v", "present_match": true}}}, to("b")),
				route("default", M{"prefix": "/", "case_sensitive": false}, to("a")),
				route("after", M{"prefix": "/late"}, to("b"))))),
			cA, cB),
		services: []string{"10.96.0.20:9080 -> a:1"},
		notes: []string{
			`listener "h" virtual_host "v" route "admin": matches on path prefix "/admin"; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
			`route "exact": matches on path "/login"`,
			`route "re": matches on path regex ".*"`,
			`route "hdr": matches on headers`,
			`route[4]: matches on query_parameters`,
		},
		nNotes: 5, // nothing about "after": Envoy never reaches it either
	}, {
		name: "virtual host without a catch-all route: note, no service",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20"}, route("api", M{"prefix": "/api"}, to("a"))),
			vhost("w", []string{"10.96.0.21"}, route("", catchAll, to("b"))))), cA, cB),
		services: []string{"10.96.0.20:9080 -> passthrough", "10.96.0.21:9080 -> b:1"},
		notes: []string{
			`virtual_host "v" route "api": matches on path prefix "/api"`,
			`listener "h" virtual_host "v": no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service; connections to 10.96.0.20:9080 keep their original destination (needs enhanced mode)`,
		},
		nNotes: 2,
	}, {
		name: "catch-all redirect: note, no service",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20"}, M{"name": "r", "match": catchAll, "redirect": M{"https_redirect": true}}))), cA),
		services: []string{"10.96.0.20:9080 -> passthrough"},
		notes:    []string{`route "r": catch-all route action redirect is not a cluster route`},
		nNotes:   1,
	}, {
		name: "catch-all cluster_header: note, no service",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20"}, route("r", catchAll, M{"cluster_header": "x-cluster"})))), cA),
		services: []string{"10.96.0.20:9080 -> passthrough"},
		notes:    []string{`route "r": catch-all route picks its cluster per request`},
		nNotes:   1,
	}, {
		name: "domains of another port or family, and host-name-only virtual hosts, are noted",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20:80", "[fd00::1]", "10.96.0.21"}, route("", catchAll, to("a"))),
			vhost("names", []string{"reviews", "reviews:9080"}, route("", catchAll, to("a"))))), cA),
		services: []string{"10.96.0.21:9080 -> a:1"},
		notes: []string{
			`virtual_host "v": domain "10.96.0.20:80": port differs from the listener port 9080`,
			`virtual_host "v": domain "[fd00::1]": address family differs`,
			`virtual_host "names": no IP-literal or "*" domain: selected by Host header only`,
		},
		nNotes: 3,
	}, {
		name: "rds is noted, listener not applied",
		cfg: boot(ls(M{"name": "h", "address": sockAddr("0.0.0.0", 9080), "filter_chains": []any{M{"filters": []any{M{
			"name": "hcm", "typed_config": M{"@type": hcmType, "stat_prefix": "h",
				"rds": M{"route_config_name": "r", "config_source": M{"ads": M{}}}}}}}}}), cA),
		notes:  []string{`listener "h" filter_chain[0] filter "hcm": rds (route discovery) is not supported`},
		nNotes: 1,
	}, {
		name: "filter chain with filter_chain_match noted; match-less chain used",
		cfg: boot(ls(M{"name": "l", "address": sockAddr("10.96.0.10", 443), "filter_chains": []any{
			M{"name": "sni", "filter_chain_match": M{"server_names": []any{"a.example.com"}}, "filters": []any{M{
				"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "b"}}}},
			M{"filters": []any{M{
				"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "a"}}}},
		}}), cA, cB),
		services: []string{"10.96.0.10:443 -> a:1"},
		notes:    []string{`listener "l" filter_chain "sni": filter_chain_match needs connection attributes`},
		nNotes:   1,
	}, {
		name: "default_filter_chain next to a chain without a match is never used",
		cfg: boot(ls(M{"name": "l", "address": sockAddr("10.96.0.10", 443),
			"filter_chains": []any{M{"filters": []any{M{
				"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "a"}}}}},
			"default_filter_chain": M{"filters": []any{M{
				"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "b"}}}},
		}), cA, cB),
		services: []string{"10.96.0.10:443 -> a:1"},
		notes:    []string{`listener "l" default_filter_chain: never used: filter_chain[0] has no filter_chain_match, so it takes every connection (ignored)`},
		nNotes:   1,
	}, {
		name: "weighted_clusters total_weight equal to the sum of the weights",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, route("r", catchAll,
			M{"weighted_clusters": M{"total_weight": 90, "clusters": []any{M{"name": "a", "weight": 60}, M{"name": "b", "weight": 30}}}})))), cA, cB),
		services: []string{"10.96.0.20:9080 -> a:60,b:30"},
	}, {
		// deprecated: current Envoy and gRPC's xDS clients use the sum
		name: "weighted_clusters total_weight differs from the sum of the weights",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, route("r", catchAll,
			M{"weighted_clusters": M{"total_weight": 100, "clusters": []any{M{"name": "a", "weight": 60}, M{"name": "b", "weight": 30}}}})))), cA, cB),
		services: []string{"10.96.0.20:9080 -> a:60,b:30"},
		notes:    []string{`listener "h" virtual_host "v" route "r": weighted_clusters total_weight 100 differs from the sum of the cluster weights, 90: the sum is used, as current Envoy does (total_weight is deprecated: remove it)`},
		nNotes:   1,
	}, {
		name: "only default_filter_chain applies",
		cfg: boot(ls(M{"name": "l", "address": sockAddr("10.96.0.10", 443),
			"default_filter_chain": M{"filters": []any{M{
				"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "a"}}}},
		}), cA),
		services: []string{"10.96.0.10:443 -> a:1"},
	}, {
		name: "UDP listener noted; unhealthy and priority-1 endpoints excluded",
		cfg: boot(ls(
			with(tcpL("u", "10.96.0.53", 53, to("a")), "address", M{"socket_address": M{"address": "10.96.0.53", "port_value": 53, "protocol": "UDP"}}),
			tcpL("l", "10.96.0.10", 80, to("c"))),
			cA,
			M{"name": "c", "load_assignment": M{"cluster_name": "c", "endpoints": []any{
				M{"lb_endpoints": []any{ep("10.244.0.5", 80), with(ep("10.244.0.6", 80), "health_status", "UNHEALTHY")}},
				M{"priority": 1, "lb_endpoints": []any{ep("10.244.0.7", 80)}},
			}}}),
		services: []string{"10.96.0.10:80 -> c:1"},
		notes: []string{
			`listener "u": address protocol UDP`,
			`cluster "c" endpoint 10.244.0.6:80: excluded: health_status UNHEALTHY (ignored)`,
			`cluster "c" load_assignment.endpoints[1]: priority 1 endpoints are failover only`,
		},
		nNotes: 3,
	}, {
		name: "dynamic_resources noted",
		cfg: with(boot(ls(tcpL("l", "10.96.0.10", 80, to("a"))), cA),
			"dynamic_resources", M{"ads_config": M{"api_type": "GRPC"}}),
		services: []string{"10.96.0.10:80 -> a:1"},
		notes:    []string{`bootstrap dynamic_resources: xDS sources are not used in local-file mode`},
		nNotes:   1,
	}, {
		name:  "empty static_resources",
		cfg:   M{"static_resources": M{}},
		notes: nil,
	}}
	for _, tc := range tests {
		parseEach(t, tc.name, tc.cfg, func(t *testing.T, m *config.Model) {
			if got := serviceSummary(m); !slices.Equal(got, tc.services) {
				t.Errorf("services:\n got  %q\n want %q", got, tc.services)
			}
			requireNotes(t, m, tc.notes)
			if len(m.Unsupported) != tc.nNotes {
				t.Errorf("got %d notes, want %d:\n  %s", len(m.Unsupported), tc.nNotes, strings.Join(noteStrings(m), "\n  "))
			}
			if len(m.Version) != 16 {
				t.Errorf("Version = %q, want 16 hex digits", m.Version)
			}
		})
	}
}

func TestTranslateClusters(t *testing.T) {
	cfg := boot(nil,
		cluster("rr", ep("10.244.0.2", 80), ep("10.244.0.1", 80, 3), ep("10.244.0.2", 80, 2)),
		with(cluster("rand", ep("fd00::2", 443), ep("::ffff:10.244.0.9", 443)), "lb_policy", "RANDOM"),
		M{"name": "untyped", "load_assignment": M{"cluster_name": "untyped", "endpoints": []any{
			M{"lb_endpoints": []any{ep("10.244.1.1", 80)}}, M{"lb_endpoints": []any{ep("10.244.1.2", 80)}}}}},
		M{"name": "empty"},
	)
	want := map[string]config.Cluster{
		"rr":      {Name: "rr", Policy: config.RoundRobin, Endpoints: eps("10.244.0.1:80", 3, "10.244.0.2:80", 3)},
		"rand":    {Name: "rand", Policy: config.Random, Endpoints: eps("10.244.0.9:443", 1, "[fd00::2]:443", 1)},
		"untyped": {Name: "untyped", Policy: config.RoundRobin, Endpoints: eps("10.244.1.1:80", 1, "10.244.1.2:80", 1)},
		"empty":   {Name: "empty", Policy: config.RoundRobin, Endpoints: []config.Endpoint{}},
	}
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			m, err := config.ParseBootstrap(encode(t, cfg, f), f)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Clusters) != len(want) {
				t.Fatalf("got %d clusters, want %d", len(m.Clusters), len(want))
			}
			for n, w := range want {
				if g := m.Clusters[n]; !g.Equal(w) {
					t.Errorf("cluster %s = %+v, want %+v", n, g, w)
				}
			}
		})
	}
}

func TestTranslateRejected(t *testing.T) {
	tcpObj := `(listener "l")`
	many := []any{}
	var manyClusters []M
	for i := range 17 {
		n := string(rune('a'+i)) + "x"
		many = append(many, n, 1)
		manyClusters = append(manyClusters, cluster(n, ep("10.244.0.1", 80)))
	}
	tests := []struct {
		name string
		cfg  M
		want []string // one substring per expected issue
	}{{
		name: "unknown cluster",
		cfg:  boot(ls(tcpL("l", "10.96.0.10", 80, to("nope"))), cA),
		want: []string{`service 10.96.0.10:80 ` + tcpObj + `: unknown cluster "nope"`},
	}, {
		name: "unknown cluster in a route",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20"}, route("", catchAll, routeWeighted("a", 1, "gone", 1))))), cA),
		want: []string{`service 10.96.0.20:9080 (listener "h" virtual_host "v"): unknown cluster "gone"`},
	}, {
		name: "duplicate service key from two listeners",
		cfg: boot(ls(tcpL("l", "10.96.0.10", 80, to("a")),
			M{"name": "m", "address": sockAddr("10.96.0.10", 80), "filter_chains": []any{M{
				"filter_chain_match": M{"server_names": []any{"a.example.com"}}, "filters": []any{M{
					"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "a"}}}}}}), cA),
		want: []string{`service 10.96.0.10:80 (listener "m"): duplicate service key 10.96.0.10:80: also defined by listener "l"; name the address in one listener or virtual host only`},
	}, {
		name: "duplicate service key from two virtual hosts",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 80,
			vhost("v", []string{"10.96.0.10"}, route("", catchAll, to("a"))),
			vhost("w", []string{"10.96.0.10:80"}, route("", catchAll, to("a"))))), cA),
		want: []string{`(listener "h" virtual_host "w"): duplicate service key 10.96.0.10:80: also defined by listener "h" virtual_host "v"`},
	}, {
		name: "a virtual host that cannot serve a VIP and one that serves it",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 80,
			vhost("v", []string{"10.96.0.10"}, route("", M{"prefix": "/v"}, to("a"))),
			vhost("w", []string{"10.96.0.10:80"}, route("", catchAll, to("a"))))), cA),
		want: []string{`service 10.96.0.10:80 (listener "h" virtual_host "w"): duplicate service key 10.96.0.10:80: also defined by listener "h" virtual_host "v"; name the address in one listener or virtual host only`},
	}, {
		name: "two filter chains without a filter_chain_match",
		cfg: boot(ls(M{"name": "l", "address": sockAddr("10.96.0.10", 80), "filter_chains": []any{
			M{"name": "one", "filters": []any{M{"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "a"}}}},
			M{"name": "two", "filter_chain_match": M{}, "filters": []any{M{"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": "s", "cluster": "b"}}}},
		}}), cA, cB),
		want: []string{`listener "l" filter_chain "two": has no filter_chain_match, like filter_chain "one"; Envoy rejects filter chains with the same matching rules: give one of them a filter_chain_match or remove it`},
	}, {
		name: "zero total weight",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("v", []string{"10.96.0.20"}, route("", catchAll, routeWeighted("a", 0, "b", 0))))), cA, cB),
		want: []string{`service 10.96.0.20:9080 (listener "h" virtual_host "v"): total weight is 0`},
	}, {
		name: "cluster weights overflow",
		cfg:  boot(ls(tcpL("l", "10.96.0.10", 80, weighted("a", math.MaxUint32, "b", 1))), cA, cB),
		want: []string{`service 10.96.0.10:80 ` + tcpObj + `: cluster weights sum to 4294967296, more than 4294967295`},
	}, {
		name: "endpoint weights overflow",
		cfg:  boot(nil, cluster("big", ep("10.244.0.1", 80, math.MaxUint32), ep("10.244.0.2", 80, 1))),
		want: []string{`cluster "big": endpoint weights sum to 4294967296, more than 4294967295`},
	}, {
		name: "more than 16 weighted clusters",
		cfg:  boot(ls(tcpL("l", "10.96.0.10", 80, weighted(many...))), manyClusters...),
		want: []string{`service 10.96.0.10:80 ` + tcpObj + `: splits across 17 clusters, more than the limit of 16`},
	}, {
		name: "endpoint port 0",
		cfg:  boot(nil, cluster("a", ep("10.244.0.1", 0))),
		want: []string{`cluster "a" load_assignment.endpoints[0].lb_endpoints[0]: endpoint 10.244.0.1 has port 0`},
	}, {
		name: "non-IP endpoint address",
		cfg:  boot(nil, cluster("a", ep("reviews.default.svc", 80))),
		want: []string{`cluster "a" load_assignment.endpoints[0].lb_endpoints[0]: address "reviews.default.svc" is not an IP literal`},
	}, {
		name: "unspecified endpoint address",
		cfg:  boot(nil, cluster("a", ep("0.0.0.0", 80))),
		want: []string{`lb_endpoints[0]: address 0.0.0.0 is unspecified`},
	}, {
		name: "scoped endpoint address",
		cfg:  boot(nil, cluster("a", ep("fe80::1%eth0", 80))),
		want: []string{`lb_endpoints[0]: address "fe80::1%eth0" has a zone`},
	}, {
		name: "UDP endpoint",
		cfg: boot(nil, cluster("a", M{"endpoint": M{"address": M{"socket_address": M{
			"address": "10.244.0.1", "port_value": 53, "protocol": "UDP"}}}})),
		want: []string{`lb_endpoints[0]: protocol UDP is not supported`},
	}, {
		name: "named endpoint port",
		cfg: boot(nil, cluster("a", M{"endpoint": M{"address": M{"socket_address": M{
			"address": "10.244.0.1", "named_port": "http"}}}})),
		want: []string{`lb_endpoints[0]: named_port is not supported; use port_value`},
	}, {
		name: "IPv4 VIP with an IPv6 endpoint",
		cfg:  boot(ls(tcpL("l", "10.96.0.10", 80, weighted("a", 1, "a6", 1))), cA, cA6),
		want: []string{`service 10.96.0.10:80 ` + tcpObj + `: cluster "a6" endpoint [fd00::1]:8080 is IPv6 but the service address is IPv4; connect() cannot be redirected across address families`},
	}, {
		name: "[::] wildcard with IPv4 endpoints",
		cfg:  boot(ls(tcpL("l", "::", 80, to("m"))), cluster("m", ep("10.0.0.1", 80), ep("10.0.0.2", 80), ep("fd00::3", 80))),
		want: []string{`service [::]:80 ` + tcpObj + `: cluster "m" endpoint 10.0.0.1:80 (and 1 more) is IPv4 but the service address is IPv6`},
	}, {
		name: "unsupported lb_policy",
		cfg: boot(nil,
			with(cA, "lb_policy", "LEAST_REQUEST"),
			with(cB, "lb_policy", "RING_HASH"),
			with(cluster("c", ep("10.244.0.3", 80)), "lb_policy", "MAGLEV")),
		want: []string{
			`cluster "a": lb_policy LEAST_REQUEST is not supported; use ROUND_ROBIN or RANDOM`,
			`cluster "b": lb_policy RING_HASH is not supported; use ROUND_ROBIN or RANDOM`,
			`cluster "c": lb_policy MAGLEV is not supported`,
		},
	}, {
		name: "unsupported cluster types",
		cfg: boot(nil,
			M{"name": "e", "type": "EDS", "eds_cluster_config": M{"eds_config": M{"ads": M{}}}},
			with(cluster("d", ep("10.244.0.3", 80)), "type", "STRICT_DNS"),
			with(cluster("ld", ep("10.244.0.3", 80)), "type", "LOGICAL_DNS"),
			with(cluster("cp", ep("10.244.0.3", 80)), "lb_policy", "CLUSTER_PROVIDED")),
		want: []string{
			`cluster "e": type EDS is not supported by the local-file translator (endpoints come only from an xDS server); use type STATIC with load_assignment`,
			`cluster "d": type STRICT_DNS is not supported`,
			`cluster "ld": type LOGICAL_DNS is not supported`,
			`cluster "cp": lb_policy CLUSTER_PROVIDED is not supported`,
		},
	}, {
		name: "ORIGINAL_DST clusters that would not keep the original destination, or only for a share",
		cfg: boot(ls(tcpL("l", "10.96.0.10", 80, weighted("a", 90, "od", 10))),
			cA, cOrigDst("od"),
			with(cOrigDst("o1"), "lb_policy", "RANDOM"),
			with(cluster("o2", ep("10.244.0.3", 80)), "type", "ORIGINAL_DST", "lb_policy", "CLUSTER_PROVIDED"),
			with(cOrigDst("o3"), "original_dst_lb_config", M{"upstream_port_override": 8080})),
		want: []string{
			`cluster "o1": type ORIGINAL_DST takes lb_policy CLUSTER_PROVIDED, not RANDOM`,
			`cluster "o2": an ORIGINAL_DST cluster has no load_assignment (Envoy rejects it too)`,
			`cluster "o3": original_dst_lb_config is not supported`,
			`service 10.96.0.10:80 (listener "l"): weighted_clusters gives ORIGINAL_DST cluster "od" a share next to other clusters`,
		},
	}, {
		name: "a service naming an invalid cluster reports the cluster only",
		cfg:  boot(ls(tcpL("l", "10.96.0.10", 80, to("a"))), with(cA, "lb_policy", "LEAST_REQUEST")),
		want: []string{`cluster "a": lb_policy LEAST_REQUEST`},
	}, {
		name: "duplicate names",
		cfg:  boot(ls(tcpL("l", "10.96.0.10", 80, to("a")), tcpL("l", "10.96.0.11", 80, to("a"))), cA, cA),
		want: []string{
			`cluster "a": duplicate cluster name (first defined as cluster "a")`,
			`listener "l": duplicate listener name (first defined as listener "l")`,
		},
	}, {
		name: "listener address not an IP, port 0, zone",
		cfg: boot(ls(tcpL("n", "localhost", 80, to("a")), tcpL("p", "10.96.0.10", 0, to("a")),
			tcpL("z", "fe80::1%eth0", 80, to("a"))), cA),
		want: []string{
			`listener "n": address "localhost" is not an IP literal`,
			`listener "p": address has port 0`,
			`listener "z": address "fe80::1%eth0" has a zone`,
		},
	}, {
		name: "envoy schema violations",
		cfg:  boot(ls(tcpL("l", "10.96.0.10", 70000, to("a"))), cA, cluster("", ep("10.244.0.1", 80))),
		want: []string{
			`listener "l": envoy schema: address.socket_address.port_value: value must be less than or equal to 65535`,
			`cluster[1]: envoy schema: name: value length must be at least 1 runes`,
			`cluster[1]: envoy schema: load_assignment.cluster_name: value length must be at least 1 runes`,
		},
	}, {
		name: "all problems are reported together",
		cfg: boot(ls(tcpL("l", "10.96.0.10", 80, to("nope")), tcpL("m", "10.96.0.11", 80, to("a"))),
			with(cA, "lb_policy", "RANDOM"), cluster("z", ep("10.0.0.1", 0)), with(cB, "type", "EDS")),
		want: []string{
			`unknown cluster "nope"`,
			`cluster "z" load_assignment.endpoints[0].lb_endpoints[0]: endpoint 10.0.0.1 has port 0`,
			`cluster "b": type EDS`,
		},
	}}
	for _, tc := range tests {
		for _, f := range formats {
			t.Run(tc.name+"/"+f.String(), func(t *testing.T) {
				m, err := config.ParseBootstrap(encode(t, tc.cfg, f), f)
				if m != nil {
					t.Fatalf("got a model with error %v", err)
				}
				requireIssues(t, err, tc.want)
			})
		}
	}
}

func TestServiceKeyText(t *testing.T) {
	for _, s := range []string{"10.96.0.10:80", "[fd00::10]:443", "0.0.0.0:9080", "[::]:1"} {
		var k config.ServiceKey
		if err := k.UnmarshalText([]byte(s)); err != nil {
			t.Fatal(err)
		}
		b, _ := k.MarshalText()
		if string(b) != s {
			t.Errorf("round trip %q = %q", s, b)
		}
		if k.Wildcard() != strings.HasPrefix(s, "0.0.0.0") && k.Wildcard() != strings.HasPrefix(s, "[::]") {
			t.Errorf("%s: Wildcard() = %v", s, k.Wildcard())
		}
	}
	var k config.ServiceKey
	if err := k.UnmarshalText([]byte("nope")); err == nil {
		t.Error("UnmarshalText(nope) succeeded")
	}
}

// connectTo returns the service a connect() to dst uses, looked up as the
// BPF program does: the exact key, else the wildcard of dst's family on its
// port. ok is false when neither exists.
func connectTo(m *config.Model, dst string) (svc config.Service, ok bool) {
	k := key(dst)
	if s, ok := m.Services[k]; ok {
		return s, true
	}
	wild := netip.IPv4Unspecified()
	if k.Addr.Is6() {
		wild = netip.IPv6Unspecified()
	}
	s, ok := m.Services[config.ServiceKey{Addr: wild, Port: k.Port}]
	return s, ok
}

// sniOnly is a listener whose only filter chain matches by SNI, which
// compat mode cannot see.
func sniOnly(name, addr string, port int, cluster string) M {
	return M{"name": name, "address": sockAddr(addr, port), "filter_chains": []any{M{
		"name": "sni", "filter_chain_match": M{"server_names": []any{"a.example.com"}}, "filters": []any{M{
			"name": "tcp", "typed_config": M{"@type": tcpType, "stat_prefix": name, "cluster": cluster}}}}}}
}

// A VIP:port that the input claims but compat mode cannot serve gets a
// passthrough service, so that its connections keep their original
// destination instead of falling through to the wildcard service of the
// port; the wildcard still serves every other VIP.
func TestTranslatePassthrough(t *testing.T) {
	tests := []struct {
		name     string
		cfg      M
		services []string
		notes    []string          // exactly
		connect  map[string]string // destination -> its clusterSummary, "" for no service
	}{{
		name:     "SNI-only VIP listener next to a 0.0.0.0 tcp_proxy on the same port",
		cfg:      boot(ls(sniOnly("sni", "10.96.0.10", 443, "a"), tcpL("any", "0.0.0.0", 443, to("b"))), cA, cB),
		services: []string{"0.0.0.0:443 -> b:1", "10.96.0.10:443 -> passthrough"},
		notes: []string{
			`listener "sni": no filter chain applies to every connection; listener not applied; connections to 10.96.0.10:443 keep their original destination (ignored)`,
			`listener "sni" filter_chain "sni": filter_chain_match needs connection attributes (SNI, ALPN, transport, source); chain not applied (needs enhanced mode)`,
		},
		connect: map[string]string{"10.96.0.10:443": "passthrough", "10.96.0.11:443": "b:1", "10.96.0.10:80": ""},
	}, {
		name: "virtual host with only an /api route next to a \"*\" virtual host",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("api", []string{"10.96.0.20"}, route("api", M{"prefix": "/api"}, to("a"))),
			vhost("any", []string{"*"}, route("", catchAll, to("b"))))), cA, cB),
		services: []string{"0.0.0.0:9080 -> b:1", "10.96.0.20:9080 -> passthrough"},
		notes: []string{
			`listener "h" virtual_host "api": no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service; connections to 10.96.0.20:9080 keep their original destination (needs enhanced mode)`,
			`listener "h" virtual_host "api" route "api": matches on path prefix "/api"; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
		},
		connect: map[string]string{"10.96.0.20:9080": "passthrough", "10.96.0.21:9080": "b:1"},
	}, {
		name: "virtual host whose routes need headers: every IP-literal domain is passthrough",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			vhost("hdr", []string{"10.96.0.21", "10.96.0.20:9080", "hdr.example.com"},
				route("canary", M{"prefix": "/", "headers": []any{M{"name": "x-canary", "present_match": true}}}, to("a"))),
			vhost("any", []string{"*"}, route("", catchAll, to("b"))))), cA, cB),
		services: []string{"0.0.0.0:9080 -> b:1", "10.96.0.20:9080 -> passthrough", "10.96.0.21:9080 -> passthrough"},
		notes: []string{
			`listener "h" virtual_host "hdr": no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service; connections to 10.96.0.20:9080, 10.96.0.21:9080 keep their original destination (needs enhanced mode)`,
			`listener "h" virtual_host "hdr" route "canary": matches on headers; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
		},
		connect: map[string]string{"10.96.0.21:9080": "passthrough", "10.96.0.22:9080": "b:1"},
	}, {
		name: "listener with a specific and a wildcard address: only the specific one is passthrough",
		cfg: boot(ls(with(sniOnly("sni", "10.96.0.10", 443, "a"), "additional_addresses", []any{
			M{"address": sockAddr("0.0.0.0", 443)}, M{"address": sockAddr("fd00::10", 443)}})), cA),
		services: []string{"10.96.0.10:443 -> passthrough", "[fd00::10]:443 -> passthrough"},
		notes: []string{
			`listener "sni": no filter chain applies to every connection; listener not applied; connections to 10.96.0.10:443, [fd00::10]:443 keep their original destination (ignored)`,
			`listener "sni" filter_chain "sni": filter_chain_match needs connection attributes (SNI, ALPN, transport, source); chain not applied (needs enhanced mode)`,
		},
	}, {
		name: "a wildcard listener that is not applied gets no entry",
		cfg:  boot(ls(sniOnly("sni", "0.0.0.0", 443, "a")), cA),
		notes: []string{
			`listener "sni": no filter chain applies to every connection; listener not applied (ignored)`,
			`listener "sni" filter_chain "sni": filter_chain_match needs connection attributes (SNI, ALPN, transport, source); chain not applied (needs enhanced mode)`,
		},
	}, {
		name: "VIP listener with rds",
		cfg: boot(ls(M{"name": "h", "address": sockAddr("10.96.0.30", 80), "filter_chains": []any{M{"filters": []any{M{
			"name": "hcm", "typed_config": M{"@type": hcmType, "stat_prefix": "h",
				"rds": M{"route_config_name": "r", "config_source": M{"ads": M{}}}}}}}}}), cA),
		services: []string{"10.96.0.30:80 -> passthrough"},
		notes: []string{
			`listener "h" filter_chain[0] filter "hcm": rds (route discovery) is not supported by the local-file translator; inline the routes as route_config; listener not applied; connections to 10.96.0.30:80 keep their original destination (not supported)`,
		},
	}, {
		name: "VIP http listener: the virtual host naming the VIP has no catch-all",
		cfg: boot(ls(hcmL("h", "10.96.0.40", 80,
			vhost("exact", []string{"10.96.0.40"}, route("api", M{"prefix": "/api"}, to("a"))))), cA),
		services: []string{"10.96.0.40:80 -> passthrough"},
		notes: []string{
			`listener "h" virtual_host "exact": no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service; connections to 10.96.0.40:80 keep their original destination (needs enhanced mode)`,
			`listener "h" virtual_host "exact" route "api": matches on path prefix "/api"; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
		},
	}, {
		name: "VIP http listener: no virtual host names the VIP or \"*\"; a domain with another port is noted",
		cfg: boot(ls(hcmL("h", "10.96.0.40", 80,
			vhost("names", []string{"shop.example.com", "10.96.0.40:8080"}, route("", catchAll, to("a"))))), cA),
		services: []string{"10.96.0.40:80 -> passthrough"},
		notes: []string{
			`listener "h": no virtual host names 10.96.0.40 or "*", so none applies to every connection to 10.96.0.40:80; connections to 10.96.0.40:80 keep their original destination (needs enhanced mode)`,
			`listener "h" virtual_host "names": domain "10.96.0.40:8080": port differs from the listener port 80, so no connection to this listener has that Host (ignored)`,
			`listener "h" virtual_host "names": selected by Host header only; no virtual host names 10.96.0.40 or "*" (needs enhanced mode)`,
		},
	}, {
		name: "VIP http listener: a domain with another port does not select the virtual host",
		cfg: boot(ls(hcmL("h", "10.96.0.40", 80,
			vhost("other-port", []string{"10.96.0.40:8080"}, route("", catchAll, to("b"))),
			vhost("star", []string{"*"}, route("", catchAll, to("a"))))), cA, cB),
		services: []string{"10.96.0.40:80 -> a:1"},
		notes: []string{
			`listener "h" virtual_host "other-port": domain "10.96.0.40:8080": port differs from the listener port 80, so no connection to this listener has that Host (ignored)`,
			`listener "h" virtual_host "other-port": selected by Host header only; compat mode sends every connection to 10.96.0.40:80 to virtual host "star" (needs enhanced mode)`,
		},
	}, {
		// Istio's sidecar config: the outbound capture listener and the
		// allow_any virtual host send what no service matches to
		// PassthroughCluster (ORIGINAL_DST); a service may too.
		name: "ORIGINAL_DST: a wildcard key sent to it gets no entry, a specific one is passthrough",
		cfg: boot(ls(
			with(tcpL("virtualOutbound", "0.0.0.0", 15001, to("PassthroughCluster")), "use_original_dst", true),
			tcpL("vip", "10.96.0.50", 80, to("PassthroughCluster")),
			hcmL("zero-share", "10.96.0.51", 80,
				vhost("v", []string{"*"}, route("", catchAll, routeWeighted("a", 10, "PassthroughCluster", 0)))),
			hcmL("h", "0.0.0.0", 8080,
				vhost("svc", []string{"10.96.0.60"}, route("", catchAll, to("a"))),
				vhost("external", []string{"10.96.0.62:8080"}, route("", catchAll, to("PassthroughCluster"))),
				vhost("any", []string{"*"}, route("", catchAll, to("b")))),
			hcmL("allow-any", "0.0.0.0", 9090,
				vhost("svc", []string{"10.96.0.70"}, route("", catchAll, to("a"))),
				vhost("allow_any", []string{"*"}, route("", catchAll, to("PassthroughCluster"))))),
			cA, cB, with(cOrigDst("PassthroughCluster"), "connect_timeout", "10s")),
		services: []string{"0.0.0.0:8080 -> b:1", "10.96.0.50:80 -> passthrough", "10.96.0.51:80 -> a:10",
			"10.96.0.60:8080 -> a:1", "10.96.0.62:8080 -> passthrough", "10.96.0.70:9090 -> a:1"},
		connect: map[string]string{
			"10.1.2.3:15001": "", "10.96.0.50:80": "passthrough", "10.96.0.51:80": "a:10",
			"10.96.0.62:8080": "passthrough", "10.96.0.63:8080": "b:1",
			"10.96.0.70:9090": "a:1", "10.96.0.71:9090": "",
		},
	}, {
		name: "two virtual hosts that cannot serve the same VIP agree",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 80,
			vhost("v", []string{"10.96.0.10"}, route("", M{"prefix": "/v"}, to("a"))),
			vhost("w", []string{"10.96.0.10:80"}, route("", M{"prefix": "/w"}, to("a"))))), cA),
		services: []string{"10.96.0.10:80 -> passthrough"},
		notes: []string{
			`listener "h" virtual_host "v": no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service; connections to 10.96.0.10:80 keep their original destination (needs enhanced mode)`,
			`listener "h" virtual_host "v" route[0]: matches on path prefix "/v"; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
			`listener "h" virtual_host "w": no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service (needs enhanced mode)`,
			`listener "h" virtual_host "w" route[0]: matches on path prefix "/w"; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
		},
	}}
	for _, tc := range tests {
		parseEach(t, tc.name, tc.cfg, func(t *testing.T, m *config.Model) {
			if got := serviceSummary(m); !slices.Equal(got, tc.services) {
				t.Errorf("services:\n got  %q\n want %q", got, tc.services)
			}
			if got := noteStrings(m); !slices.Equal(got, tc.notes) {
				t.Errorf("notes:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(tc.notes, "\n      "))
			}
			for dst, want := range tc.connect {
				got := ""
				if s, ok := connectTo(m, dst); ok {
					got = clusterSummary(s)
				}
				if got != want {
					t.Errorf("connect to %s: %q, want %q", dst, got, want)
				}
			}
			for k, s := range m.Services {
				if s.Passthrough() && (k.Wildcard() || s.Clusters != nil) {
					t.Errorf("service %s: passthrough %+v", k, s)
				}
			}
		})
	}
}

// A listener on a VIP:port takes its connections before a wildcard
// listener on the port, whatever a virtual host of the wildcard listener
// says: the listener's service (served or passthrough) wins, the virtual
// host gets a note, and the order of the listeners does not matter.
func TestTranslateSpecificListenerWins(t *testing.T) {
	wild := hcmL("h", "0.0.0.0", 80, vhost("v", []string{"10.96.0.10", "10.96.0.11"}, route("", catchAll, to("b"))))
	lost := `listener "h" virtual_host "v": domain "10.96.0.10": listener "l" listens on 10.96.0.10:80 and takes its connections before this wildcard listener, so this virtual host gets none of them (ignored)`
	tests := []struct {
		name     string
		specific M
		wild     M
		services []string
		notes    []string
	}{{
		name:     "served tcp_proxy listener over a served virtual host",
		specific: tcpL("l", "10.96.0.10", 80, to("a")),
		wild:     wild,
		services: []string{"10.96.0.10:80 -> a:1", "10.96.0.11:80 -> b:1"},
		notes:    []string{lost},
	}, {
		name:     "passthrough listener over a served virtual host",
		specific: sniOnly("l", "10.96.0.10", 80, "a"),
		wild:     wild,
		services: []string{"10.96.0.10:80 -> passthrough", "10.96.0.11:80 -> b:1"},
		notes: []string{
			`listener "h" virtual_host "v": domain "10.96.0.10": listener "l" listens on 10.96.0.10:80 and takes its connections before this wildcard listener, so this virtual host gets none of them (ignored)`,
			`listener "l": no filter chain applies to every connection; listener not applied; connections to 10.96.0.10:80 keep their original destination (ignored)`,
			`listener "l" filter_chain "sni": filter_chain_match needs connection attributes (SNI, ALPN, transport, source); chain not applied (needs enhanced mode)`,
		},
	}, {
		name:     "served listener over a passthrough virtual host",
		specific: tcpL("l", "10.96.0.10", 80, to("a")),
		wild:     hcmL("h", "0.0.0.0", 80, vhost("v", []string{"10.96.0.10", "10.96.0.11"}, route("p", M{"prefix": "/p"}, to("b")))),
		services: []string{"10.96.0.10:80 -> a:1", "10.96.0.11:80 -> passthrough"},
		notes: []string{
			lost,
			`listener "h" virtual_host "v": no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service; connections to 10.96.0.11:80 keep their original destination (needs enhanced mode)`,
			`listener "h" virtual_host "v" route "p": matches on path prefix "/p"; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
		},
	}, {
		name:     "VIP http listener over a served virtual host",
		specific: hcmL("l", "10.96.0.10", 80, vhost("star", []string{"*"}, route("", catchAll, to("a")))),
		wild:     wild,
		services: []string{"10.96.0.10:80 -> a:1", "10.96.0.11:80 -> b:1"},
		notes:    []string{lost},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var versions []string
			for _, order := range [][]M{{tc.specific, tc.wild}, {tc.wild, tc.specific}} {
				m := mustParse(t, boot(order, cA, cB))
				if got := serviceSummary(m); !slices.Equal(got, tc.services) {
					t.Errorf("services:\n got  %q\n want %q", got, tc.services)
				}
				if got := noteStrings(m); !slices.Equal(got, tc.notes) {
					t.Errorf("notes:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(tc.notes, "\n      "))
				}
				if s := m.Services[key("10.96.0.10:80")]; s.Listener != "l" {
					t.Errorf("10.96.0.10:80 from listener %q, want l", s.Listener)
				}
				versions = append(versions, m.Version)
			}
			if versions[0] != versions[1] {
				t.Errorf("listener order changes the version: %v", versions)
			}
		})
	}
}

// A virtual host serving two keys of a listener is checked once per key;
// its notes are reported once.
func TestTranslateIssuesReportedOnce(t *testing.T) {
	l := with(hcmL("h", "10.96.0.40", 80, vhost("star", []string{"*"}, route("r", catchAll,
		M{"weighted_clusters": M{"total_weight": 5, "clusters": []any{M{"name": "a", "weight": 1}}}}))),
		"additional_addresses", []any{M{"address": sockAddr("10.96.0.41", 80)}})
	m, err := config.ParseBootstrap(encode(t, boot(ls(l), cA), config.FormatJSON), config.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, note := range m.Unsupported {
		if strings.Contains(note.String(), "total_weight 5 differs") {
			n++
		}
	}
	if n != 1 || len(m.Services) != 2 {
		t.Errorf("total_weight note %d times (want 1), %d services (want 2): %v", n, len(m.Services), m.Unsupported)
	}

}
