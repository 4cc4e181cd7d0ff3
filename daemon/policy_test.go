package daemon

import (
	"slices"
	"strings"
	"testing"

	"kmesh.dev/kmesh/daemon/config/configtest"
	tn "kmesh.dev/kmesh/daemon/internal/testnet"
)

// hcmListener is an http_connection_manager on 0.0.0.0:80 (a listener item of
// static_resources): the virtual host is picked by the VIP among its domains
// (Istio's outbound model; "other" names another VIP), and the routes on a
// path and on a header cannot be decided at connect() (noted, not taken), so
// 10.96.0.10:80 gets the catch-all's weighted_clusters: "aw" 3 : "b" 1.
const hcmListener = `  - name: outbound_80
    address: { socket_address: { address: 0.0.0.0, port_value: 80 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_80
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: outbound_80
            virtual_hosts:
            - name: other
              domains: [other.default.svc.cluster.local, 10.96.0.99]
              routes:
              - match: { prefix: / }
                route: { cluster: b }
            - name: web
              domains: [web.default.svc.cluster.local, "10.96.0.10:80"]
              routes:
              - name: api
                match: { prefix: /api }
                route: { cluster: b }
              - name: canary
                match: { prefix: /, headers: [ { name: x-canary, present_match: true } ] }
                route: { cluster: b }
              - name: default
                match: { prefix: / }
                route:
                  weighted_clusters:
                    clusters:
                    - { name: aw, weight: 3 }
                    - { name: b, weight: 1 }
`

// policyConfig is hcmListener, a tcp_proxy service on [fd00:96::10]:80 to
// "rnd" (RANDOM, load_balancing_weight 3 (A1v6) : 1 (B1v6)), and "aw"
// (ROUND_ROBIN, load_balancing_weight 3 (A1) : 1 (A2)).
func policyConfig() string {
	c := configtest.Config{
		Services: []configtest.Service{{Name: "rnd6", VIP: tn.VIPv6, Clusters: []configtest.WeightedCluster{{Name: "rnd"}}}},
		Clusters: []configtest.Cluster{
			{Name: "aw", Endpoints: []string{tn.A1, tn.A2}, Weights: []uint32{3, 1}},
			{Name: "b", Endpoints: []string{tn.B1}},
			{Name: "rnd", Policy: "RANDOM", Endpoints: []string{tn.A1v6, tn.B1v6}, Weights: []uint32{3, 1}},
		},
	}.YAML()
	return strings.Replace(c, "  listeners:\n", "  listeners:\n"+hcmListener, 1)
}

// TestDaemonHTTPRoutesAndPolicies drives the HTTP compat rules, endpoint
// weights and RANDOM through the daemon from a config file, with traffic.
func TestDaemonHTTPRoutesAndPolicies(t *testing.T) {
	tp := newTopo(t)
	e := newEnv(t, policyConfig(), tp.Client.Path)
	e.start()

	// HTTP, IPv4: cluster by weight (random), endpoint by weighted round robin
	const n = 2000
	got, err := tp.Client.Fetch(tn.VIP, n)
	if err != nil {
		t.Fatal(err)
	}
	c := tn.Tally(got)
	if c[tn.A1]+c[tn.A2]+c[tn.B1] != n {
		t.Fatalf("replies %v: want only %s, %s and %s", c, tn.A1, tn.A2, tn.B1)
	}
	tn.Within5Sigma(t, "cluster b (weight 1 of 4)", c[tn.B1], n, 0.25)
	// aw's picks cycle A1 A1 A1 A2: its counts stay within one cycle of 3:1
	if d := c[tn.A1] - 3*c[tn.A2]; d < -3 || d > 3 {
		t.Errorf("weighted round robin inside aw: %d (A1) vs %d (A2), want 3:1 exactly up to one cycle", c[tn.A1], c[tn.A2])
	}
	// the routes on a path and on a header, and the other virtual host, are
	// listed, never silently dropped
	st := e.status()
	for _, want := range []string{`route "api": matches on path prefix "/api"`, `route "canary": matches on headers`} {
		found := false
		for _, nt := range st.NotApplied {
			found = found || strings.Contains(nt.String(), want) && nt.Kind.String() == "needs enhanced mode"
		}
		if !found {
			t.Errorf("not_applied has no note %q (needs enhanced mode): %v", want, st.NotApplied)
		}
	}
	var svc []string
	for _, s := range st.Services {
		svc = append(svc, s.Key)
	}
	slices.Sort(svc)
	if want := []string{"10.96.0.10:80", "10.96.0.99:80", "[fd00:96::10]:80"}; !slices.Equal(svc, want) {
		t.Errorf("services %v: want %v (the other virtual host's VIP too)", svc, want)
	}

	// RANDOM, IPv6, endpoint weights 3:1
	got6, err := tp.Client.Fetch(tn.VIPv6, n)
	if err != nil {
		t.Fatal(err)
	}
	c6 := tn.Tally(got6)
	if c6[tn.A1v6]+c6[tn.B1v6] != n {
		t.Fatalf("replies %v: want only %s and %s", c6, tn.A1v6, tn.B1v6)
	}
	tn.Within5Sigma(t, "RANDOM endpoint of weight 1 of 4", c6[tn.B1v6], n, 0.25)
	// and random, not a weighted cycle: a cycle of 4 repeats at lag 4 every
	// time, independent picks with probability 3/4·3/4 + 1/4·1/4 = 0.625
	same := 0
	for i := 4; i < n; i++ {
		if got6[i] == got6[i-4] {
			same++
		}
	}
	if f := float64(same) / float64(n-4); f > 0.75 {
		t.Errorf("RANDOM: %.3f of picks repeat the pick 4 before (want ~0.625; a round-robin cycle gives 1)", f)
	}
	if v := metricValue(e.metrics(), `kmesh_cluster_connections_redirected_total{cluster="rnd"}`); v != n {
		t.Errorf("cluster rnd redirected = %v, want %d", v, n)
	}
}
