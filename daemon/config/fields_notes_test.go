package config_test

import (
	"slices"
	"strings"
	"testing"

	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/daemon/config/configtest"
)

// Fields that change behaviour and that compat mode does not apply are
// noted with their path, one note per object and field.
func TestTranslateUnappliedFields(t *testing.T) {
	const (
		hcmObj   = `listener "h" filter_chain[0] filter "envoy.filters.network.http_connection_manager"`
		routeObj = `listener "h" virtual_host "v" route "r"`
		vhostObj = `listener "h" virtual_host "v"`
		tcpObj   = `listener "l" filter_chain[0] filter "envoy.filters.network.tcp_proxy"`
	)
	// catchAllWith is a 0.0.0.0:9080 listener whose virtual host "v" (for
	// 10.96.0.20) has the catch-all route "r" with action fields added to
	// its route action and route fields to the route.
	catchAllWith := func(action, routeFields M) M {
		r := route("r", catchAll, with(to("a"), flat(action)...))
		return hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, with(r, flat(routeFields)...)))
	}
	withVhost := func(fields M) M {
		return hcmL("h", "0.0.0.0", 9080, with(vhost("v", []string{"10.96.0.20"}, route("r", catchAll, to("a"))), flat(fields)...))
	}
	withHCM := func(fields M) M {
		l := hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, route("r", catchAll, to("a"))))
		tc := l["filter_chains"].([]any)[0].(M)["filters"].([]any)[0].(M)["typed_config"].(M)
		for k, v := range fields {
			tc[k] = v
		}
		return l
	}
	withTCP := func(fields M) M { return tcpL("l", "10.96.0.10", 80, with(to("a"), flat(fields)...)) }
	header := []any{M{"header": M{"key": "x-a", "value": "1"}}}
	subset := M{"filter_metadata": M{"envoy.lb": M{"version": "v1"}}}

	tests := []struct {
		name  string
		cfg   M
		notes []string // exactly, sorted
	}{{
		name: "catch-all route action",
		cfg: boot(ls(catchAllWith(M{
			"prefix_rewrite": "/v2", "timeout": "5s", "idle_timeout": "60s",
			"retry_policy": M{"retry_on": "5xx"}, "request_mirror_policies": []any{M{"cluster": "b"}},
			"hash_policy": []any{M{"header": M{"header_name": "x-user"}}}, "host_rewrite_literal": "example.com",
			"metadata_match": subset, "rate_limits": []any{M{"actions": []any{M{"remote_address": M{}}}}},
		}, nil)), cA, cB),
		notes: []string{
			routeObj + `: route.hash_policy is not applied: only hash-based lb_policy clusters use it, and compat mode supports ROUND_ROBIN and RANDOM only (ignored)`,
			routeObj + `: route.host_rewrite_literal is not applied: rewriting the request needs it (needs enhanced mode)`,
			routeObj + `: route.idle_timeout is not applied: per-request timeouts need the request (needs enhanced mode)`,
			routeObj + `: route.metadata_match is not applied: subset load balancing is not applied; every endpoint of the cluster is used (ignored)`,
			routeObj + `: route.prefix_rewrite is not applied: rewriting the request needs it (needs enhanced mode)`,
			routeObj + `: route.rate_limits is not applied: rate limiting is per request (needs enhanced mode)`,
			routeObj + `: route.request_mirror_policies is not applied: request mirroring needs the request (needs enhanced mode)`,
			routeObj + `: route.retry_policy is not applied: retries and hedging are per request; the client's connect() is the only attempt (needs enhanced mode)`,
			routeObj + `: route.timeout is not applied: per-request timeouts need the request (needs enhanced mode)`,
		},
	}, {
		name: "catch-all route action: regex_rewrite and an unlisted field (cors)",
		cfg: boot(ls(catchAllWith(M{
			"regex_rewrite": M{"pattern": M{"regex": "^/a"}, "substitution": "/b"},
			"cors":          M{"allow_credentials": true},
		}, nil)), cA),
		notes: []string{
			routeObj + `: route.cors is not applied: compat mode cannot see the request (needs enhanced mode)`,
			routeObj + `: route.regex_rewrite is not applied: rewriting the request needs it (needs enhanced mode)`,
		},
	}, {
		name: "catch-all route header manipulation",
		cfg:  boot(ls(catchAllWith(nil, M{"request_headers_to_add": header, "response_headers_to_remove": []any{"x-b"}})), cA),
		notes: []string{
			routeObj + `: request_headers_to_add is not applied: header manipulation needs the request (needs enhanced mode)`,
			routeObj + `: response_headers_to_remove is not applied: header manipulation needs the request (needs enhanced mode)`,
		},
	}, {
		name: "weighted_clusters random value and per-cluster fields",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, route("r", catchAll, M{"weighted_clusters": M{
			"header_name": "x-random",
			"clusters": []any{
				M{"name": "a", "weight": 1, "metadata_match": subset, "request_headers_to_add": header},
				M{"name": "b", "weight": 1, "metadata_match": subset},
			},
		}})))), cA, cB),
		notes: []string{
			routeObj + `: route.weighted_clusters.clusters[0].metadata_match (and 1 more) is not applied: subset load balancing is not applied; every endpoint of the cluster is used (ignored)`,
			routeObj + `: route.weighted_clusters.clusters[0].request_headers_to_add is not applied: header manipulation needs the request (needs enhanced mode)`,
			routeObj + `: route.weighted_clusters.header_name is not applied: random_value_specifier picks the split per request; compat mode splits connections by weight at random (needs enhanced mode)`,
		},
	}, {
		name: "weighted_clusters use_hash_policy",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, route("r", catchAll, M{"weighted_clusters": M{
			"use_hash_policy": true, "clusters": []any{M{"name": "a", "weight": 1}},
		}})))), cA),
		notes: []string{
			routeObj + `: route.weighted_clusters.use_hash_policy is not applied: random_value_specifier picks the split per request; compat mode splits connections by weight at random (needs enhanced mode)`,
		},
	}, {
		name: "catch-all virtual host",
		cfg: boot(ls(withVhost(M{
			"require_tls": "ALL", "cors": M{"allow_credentials": true},
			"request_headers_to_add": header, "response_headers_to_add": header,
			"retry_policy": M{"retry_on": "5xx"}, "rate_limits": []any{M{"actions": []any{M{"remote_address": M{}}}}},
			"request_mirror_policies": []any{M{"cluster": "a"}}, "virtual_clusters": []any{M{"name": "vc", "headers": []any{M{"name": ":path", "present_match": true}}}},
		})), cA),
		notes: []string{
			vhostObj + `: cors is not applied: CORS is answered per request (needs enhanced mode)`,
			vhostObj + `: rate_limits is not applied: rate limiting is per request (needs enhanced mode)`,
			vhostObj + `: request_headers_to_add is not applied: header manipulation needs the request (needs enhanced mode)`,
			vhostObj + `: request_mirror_policies is not applied: request mirroring needs the request (needs enhanced mode)`,
			vhostObj + `: require_tls is not applied: Envoy answers requests that are not over TLS itself; compat mode passes them on (needs enhanced mode)`,
			vhostObj + `: response_headers_to_add is not applied: header manipulation needs the request (needs enhanced mode)`,
			vhostObj + `: retry_policy is not applied: retries and hedging are per request; the client's connect() is the only attempt (needs enhanced mode)`,
		},
	}, {
		name: "fields of a virtual host that gets no service are not walked",
		cfg: boot(ls(hcmL("h", "0.0.0.0", 9080,
			with(vhost("v", []string{"10.96.0.20"}, route("r", M{"prefix": "/api"}, to("a"))), "require_tls", "ALL"))), cA),
		notes: []string{
			vhostObj + `: no catch-all route (match prefix "/" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service; connections to 10.96.0.20:9080 keep their original destination (needs enhanced mode)`,
			routeObj + `: matches on path prefix "/api"; compat mode cannot see the request, so these requests go to the catch-all route's clusters (needs enhanced mode)`,
		},
	}, {
		name: "http_connection_manager, route_config and router",
		cfg: boot(ls(func() M {
			l := withHCM(M{"stream_idle_timeout": "10s", "use_remote_address": true, "access_log": []any{M{"name": "log"}},
				"http_filters": []any{M{"name": "envoy.filters.http.router", "typed_config": M{"@type": routerType, "suppress_envoy_headers": true}}}})
			tc := l["filter_chains"].([]any)[0].(M)["filters"].([]any)[0].(M)["typed_config"].(M)
			tc["route_config"].(M)["request_headers_to_add"] = header
			return l
		}()), cA),
		notes: []string{
			hcmObj + `: access_log is not applied: compat mode writes no access log (ignored)`,
			hcmObj + `: route_config.request_headers_to_add is not applied: header manipulation needs the request (needs enhanced mode)`,
			hcmObj + `: stream_idle_timeout is not applied: compat mode does not process HTTP requests; the client's bytes reach the endpoint unchanged (needs enhanced mode)`,
			hcmObj + `: use_remote_address is not applied: compat mode does not process HTTP requests; the client's bytes reach the endpoint unchanged (needs enhanced mode)`,
			hcmObj + ` http_filter "envoy.filters.http.router": suppress_envoy_headers is not applied: compat mode does not process HTTP requests; the client's bytes reach the endpoint unchanged (needs enhanced mode)`,
		},
	}, {
		name: "tcp_proxy",
		cfg: boot(ls(withTCP(M{
			"metadata_match": subset, "hash_policy": []any{M{"source_ip": M{}}}, "access_log": []any{M{"name": "log"}},
			"idle_timeout": "10s", "max_connect_attempts": 3, "tunneling_config": M{"hostname": "proxy.example.com"},
			"on_demand": M{}, "max_downstream_connection_duration": "3600s",
		})), cA),
		notes: []string{
			tcpObj + `: access_log is not applied: compat mode writes no access log (ignored)`,
			tcpObj + `: hash_policy is not applied: only hash-based lb_policy clusters use it, and compat mode supports ROUND_ROBIN and RANDOM only (ignored)`,
			tcpObj + `: idle_timeout is not applied: compat mode does not close idle connections (ignored)`,
			tcpObj + `: max_connect_attempts is not applied: the client's connect() is the only attempt; a failed connection is not retried on another endpoint (ignored)`,
			tcpObj + `: max_downstream_connection_duration is not applied: compat mode does not limit how long a connection lasts (ignored)`,
			tcpObj + `: metadata_match is not applied: subset load balancing is not applied; every endpoint of the cluster is used (ignored)`,
			tcpObj + `: on_demand is not applied: on-demand cluster discovery is not supported (not supported)`,
			tcpObj + `: tunneling_config is not applied: HTTP CONNECT tunneling is not done; connections go to the cluster directly (needs enhanced mode)`,
		},
	}, {
		name: "tcp_proxy per-cluster metadata_match",
		cfg: boot(ls(tcpL("l", "10.96.0.10", 80, M{"weighted_clusters": M{"clusters": []any{
			M{"name": "a", "weight": 1}, M{"name": "b", "weight": 1, "metadata_match": subset}}}})), cA, cB),
		notes: []string{
			tcpObj + `: weighted_clusters.clusters[1].metadata_match is not applied: subset load balancing is not applied; every endpoint of the cluster is used (ignored)`,
		},
	}, {
		name: "cluster",
		cfg: boot(nil, with(
			M{"name": "c", "type": "STATIC", "connect_timeout": "1s", "per_connection_buffer_limit_bytes": 32768,
				"load_assignment": M{"cluster_name": "c",
					"endpoints": []any{
						M{"load_balancing_weight": 3, "lb_endpoints": []any{ep("10.244.0.1", 80), ep("10.244.0.2", 80)}},
						M{"load_balancing_weight": 1, "lb_endpoints": []any{ep("10.244.0.3", 80)}},
					},
					"policy": M{"drop_overloads": []any{M{"category": "throttle", "drop_percentage": M{"numerator": 10}}}, "overprovisioning_factor": 200},
				}},
			"circuit_breakers", M{"thresholds": []any{M{"max_connections": 10}}},
			"health_checks", []any{M{"timeout": "1s", "interval": "5s", "unhealthy_threshold": 2, "healthy_threshold": 1, "tcp_health_check": M{}}},
			"outlier_detection", M{"consecutive_5xx": 3},
			"common_lb_config", M{"locality_weighted_lb_config": M{}, "update_merge_window": "1s"},
			"lb_subset_config", M{"fallback_policy": "ANY_ENDPOINT"},
			"transport_socket", M{"name": "tls"},
			"upstream_connection_options", M{"tcp_keepalive": M{}},
		)),
		notes: []string{
			`cluster "c": circuit_breakers is not applied: compat mode does not limit or queue connections or requests per cluster (ignored)`,
			`cluster "c": common_lb_config.locality_weighted_lb_config is not applied: locality load_balancing_weight values are not applied; endpoints are balanced by their own weights across all localities (ignored)`,
			`cluster "c": health_checks is not applied: compat mode performs no health checks; every listed endpoint receives connections (ignored)`,
			`cluster "c": lb_subset_config is not applied: all endpoints form one set (ignored)`,
			`cluster "c": load_assignment.policy.drop_overloads is not applied: compat mode drops no connections (ignored)`,
			`cluster "c": load_assignment.policy.overprovisioning_factor is not applied: compat mode uses the priority 0 endpoints only, without priority or locality spillover (ignored)`,
			`cluster "c": outlier_detection is not applied: compat mode does not eject failing endpoints (ignored)`,
			`cluster "c": transport_socket is not applied: compat mode redirects the client's own connection, so upstream TLS is not originated (ignored)`,
			`cluster "c": upstream_connection_options is not applied: compat mode redirects the client's own connection; Envoy's upstream connection settings do not apply to it (ignored)`,
		},
	}, {
		name: "endpoint fields, merged across endpoints",
		cfg: boot(nil, cluster("c",
			M{"endpoint": M{"address": sockAddr("10.244.0.1", 80), "hostname": "a", "additional_addresses": []any{M{"address": sockAddr("10.244.1.1", 80)}}}},
			M{"endpoint": M{"address": sockAddr("10.244.0.2", 80), "additional_addresses": []any{M{"address": sockAddr("10.244.1.2", 80)}}}},
			M{"endpoint": M{"address": M{"socket_address": M{"address": "10.244.0.3", "port_value": 80, "resolver_name": "custom"}}}},
			M{"endpoint": M{"address": sockAddr("10.244.0.4", 80)}, "metadata": subset, "health_status": "HEALTHY"})),
		notes: []string{
			`cluster "c": load_assignment.endpoints[0].lb_endpoints[0].endpoint.additional_addresses (and 1 more) is not applied: compat mode connects to the endpoint's address only (ignored)`,
			`cluster "c": load_assignment.endpoints[0].lb_endpoints[2].endpoint.address.socket_address.resolver_name is not applied: custom resolvers are not supported; the address is used as an IP literal (not supported)`,
		},
	}, {
		name: "listener",
		cfg: boot(ls(with(tcpL("l", "10.96.0.10", 80, to("a")),
			"listener_filters", []any{M{"name": "envoy.filters.listener.tls_inspector"}},
			"access_log", []any{M{"name": "log"}},
			"per_connection_buffer_limit_bytes", 32768, "socket_options", []any{M{"level": 1, "name": 9, "int_value": 1}},
			"traffic_direction", "OUTBOUND", "bind_to_port", false)), cA),
		notes: []string{
			`listener "l": access_log is not applied: compat mode writes no access log (ignored)`,
			`listener "l": listener_filters is not applied: compat mode runs no listener filters (TLS or HTTP inspection, PROXY protocol, original_dst) (not supported)`,
		},
	}}
	for _, tc := range tests {
		parseEach(t, tc.name, tc.cfg, func(t *testing.T, m *config.Model) {
			if got := noteStrings(m); !slices.Equal(got, tc.notes) {
				t.Errorf("notes:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(tc.notes, "\n      "))
			}
		})
	}
}

// flat turns a map into with's key, value arguments.
func flat(m M) []any {
	var kv []any
	for k, v := range m {
		kv = append(kv, k, v)
	}
	return kv
}

// The configs of the daemon's tests and benchmarks (configtest; the e2e
// test's has the same shape) and the embedded default produce only the
// notes they mean to.
func TestTranslateNoSpuriousNotes(t *testing.T) {
	split := configtest.Large(3, 2, 8080)
	split.Services = append(split.Services, configtest.Service{Name: "split", VIP: "[fd00:96::10]:80",
		Clusters: []configtest.WeightedCluster{{Name: "v6a", Weight: 90}, {Name: "v6b", Weight: 10}}})
	split.Clusters = append(split.Clusters, configtest.Cluster{Name: "v6a", Policy: "RANDOM", Endpoints: []string{"[fd00:201::2]:8080"}},
		configtest.Cluster{Name: "v6b", Endpoints: []string{"[fd00:202::2]:8080"}})
	for name, in := range map[string]struct {
		data   string
		format config.Format
		notes  int
	}{
		"configtest.Large YAML":        {configtest.Large(50, 3, 8080).YAML(), config.FormatYAML, 0},
		"configtest.Large JSON":        {configtest.Large(50, 3, 8080).JSON(), config.FormatJSON, 0},
		"configtest weighted IPv6":     {split.YAML(), config.FormatYAML, 0},
		"default (the /admin route)":   {string(config.Default()), config.FormatYAML, 1},
		"empty listeners and clusters": {"static_resources:\n  listeners: []\n  clusters: []\n", config.FormatYAML, 0},
	} {
		m, err := config.ParseBootstrap([]byte(in.data), in.format)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m.Unsupported) != in.notes {
			t.Errorf("%s: %d notes, want %d:\n  %s", name, len(m.Unsupported), in.notes, strings.Join(noteStrings(m), "\n  "))
		}
		for k, s := range m.Services {
			if s.Passthrough() {
				t.Errorf("%s: service %s is passthrough", name, k)
			}
		}
	}
}

// Filters and access loggers of extensions.go parse, and are noted as not
// applied; the service is served.
func TestTranslateRegisteredExtensions(t *testing.T) {
	const cfg = `static_resources:
  listeners:
  - name: h
    address: { socket_address: { address: 0.0.0.0, port_value: 80 } }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          access_log:
          - name: envoy.access_loggers.file
            typed_config: { "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/stdout }
          http_filters:
          - name: envoy.filters.http.cors
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          route_config:
            virtual_hosts:
            - name: v
              domains: ["10.96.0.10"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: a }
  clusters:
  - name: a
    type: STATIC
    load_assignment:
      cluster_name: a
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } }
`
	m, err := config.ParseBootstrap([]byte(cfg), config.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Services) != 1 {
		t.Errorf("services %v, want the one of 10.96.0.10:80", m.Services)
	}
	notes := strings.Join(noteStrings(m), "\n")
	for _, want := range []string{`http_filter "envoy.filters.http.cors": HTTP filters are not applied`, "listener_filters", "access_log"} {
		if !strings.Contains(notes, want) {
			t.Errorf("no note naming %q:\n%s", want, notes)
		}
	}
}
