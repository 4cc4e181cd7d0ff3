package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"kmesh.dev/kmesh/daemon/config"
)

// M is a JSON/YAML object under construction.
type M = map[string]any

const (
	tcpType    = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	hcmType    = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	routerType = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
)

func sockAddr(addr string, port int) M {
	return M{"socket_address": M{"address": addr, "port_value": port}}
}

// tcpL is a tcp_proxy listener; spec is {"cluster": x} or weighted(...).
func tcpL(name, addr string, port int, spec M) M {
	tc := M{"@type": tcpType, "stat_prefix": name}
	for k, v := range spec {
		tc[k] = v
	}
	return M{
		"name":    name,
		"address": sockAddr(addr, port),
		"filter_chains": []any{M{"filters": []any{M{
			"name": "envoy.filters.network.tcp_proxy", "typed_config": tc,
		}}}},
	}
}

func to(cluster string) M { return M{"cluster": cluster} }

// weighted builds tcp_proxy weighted_clusters from name, weight pairs.
func weighted(pairs ...any) M {
	var cs []any
	for i := 0; i < len(pairs); i += 2 {
		cs = append(cs, M{"name": pairs[i], "weight": pairs[i+1]})
	}
	return M{"weighted_clusters": M{"clusters": cs}}
}

// routeWeighted builds route weighted_clusters from name, weight pairs.
func routeWeighted(pairs ...any) M { return weighted(pairs...) }

func hcmL(name, addr string, port int, vhosts ...M) M {
	vs := make([]any, len(vhosts))
	for i, v := range vhosts {
		vs[i] = v
	}
	return M{
		"name":    name,
		"address": sockAddr(addr, port),
		"filter_chains": []any{M{"filters": []any{M{
			"name": "envoy.filters.network.http_connection_manager",
			"typed_config": M{
				"@type":        hcmType,
				"stat_prefix":  name,
				"http_filters": []any{M{"name": "envoy.filters.http.router", "typed_config": M{"@type": routerType}}},
				"route_config": M{"name": name, "virtual_hosts": vs},
			},
		}}}},
	}
}

func vhost(name string, domains []string, routes ...M) M {
	rs := make([]any, len(routes))
	for i, r := range routes {
		rs[i] = r
	}
	ds := make([]any, len(domains))
	for i, d := range domains {
		ds[i] = d
	}
	return M{"name": name, "domains": ds, "routes": rs}
}

// route builds a route; action is the "route" action (to(...) or
// routeWeighted(...)).
func route(name string, match, action M) M {
	r := M{"match": match, "route": action}
	if name != "" {
		r["name"] = name
	}
	return r
}

var catchAll = M{"prefix": "/"}

func ep(addr string, port int, weight ...int) M {
	e := M{"endpoint": M{"address": sockAddr(addr, port)}}
	if len(weight) > 0 {
		e["load_balancing_weight"] = weight[0]
	}
	return e
}

func cluster(name string, eps ...M) M {
	lbs := make([]any, len(eps))
	for i, e := range eps {
		lbs[i] = e
	}
	return M{
		"name": name,
		"type": "STATIC",
		"load_assignment": M{
			"cluster_name": name,
			"endpoints":    []any{M{"lb_endpoints": lbs}},
		},
	}
}

func with(m M, kv ...any) M {
	c := deepCopy(m).(M)
	for i := 0; i < len(kv); i += 2 {
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

func deepCopy(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	if m, ok := out.(map[string]any); ok {
		return M(m)
	}
	return out
}

func boot(listeners []M, clusters ...M) M {
	ls := make([]any, len(listeners))
	for i, l := range listeners {
		ls[i] = l
	}
	cs := make([]any, len(clusters))
	for i, c := range clusters {
		cs[i] = c
	}
	return M{"static_resources": M{"listeners": ls, "clusters": cs}}
}

func ls(l ...M) []M { return l }

func encode(t testing.TB, v any, f config.Format) []byte {
	t.Helper()
	switch f {
	case config.FormatJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		return b
	case config.FormatYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("format %v", f)
	return nil
}

var formats = []config.Format{config.FormatYAML, config.FormatJSON}

// parseEach encodes cfg in each format, parses it and runs check on the
// model, as subtest name/format.
func parseEach(t *testing.T, name string, cfg M, check func(t *testing.T, m *config.Model)) {
	t.Helper()
	for _, f := range formats {
		t.Run(name+"/"+f.String(), func(t *testing.T) {
			m, err := config.ParseBootstrap(encode(t, cfg, f), f)
			if err != nil {
				t.Fatalf("ParseBootstrap: %v", err)
			}
			check(t, m)
		})
	}
}

func key(s string) config.ServiceKey {
	ap := netip.MustParseAddrPort(s)
	return config.ServiceKey{Addr: ap.Addr(), Port: ap.Port()}
}

func wcs(pairs ...any) []config.WeightedCluster {
	var out []config.WeightedCluster
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, config.WeightedCluster{Name: pairs[i].(string), Weight: uint32(pairs[i+1].(int))})
	}
	return out
}

func eps(pairs ...any) []config.Endpoint {
	var out []config.Endpoint
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, config.Endpoint{Addr: netip.MustParseAddrPort(pairs[i].(string)), Weight: uint32(pairs[i+1].(int))})
	}
	return out
}

// serviceSummary renders services as "key -> clusterSummary" lines.
func serviceSummary(m *config.Model) []string {
	var out []string
	for _, k := range m.SortedServiceKeys() {
		out = append(out, k.String()+" -> "+clusterSummary(m.Services[k]))
	}
	return out
}

// clusterSummary renders the clusters of s as "name:weight,...", or
// "passthrough".
func clusterSummary(s config.Service) string {
	if s.Passthrough() {
		return "passthrough"
	}
	parts := make([]string, len(s.Clusters))
	for i, wc := range s.Clusters {
		parts[i] = fmt.Sprintf("%s:%d", wc.Name, wc.Weight)
	}
	return strings.Join(parts, ",")
}

func noteStrings(m *config.Model) []string {
	out := make([]string, len(m.Unsupported))
	for i, n := range m.Unsupported {
		out[i] = n.String()
	}
	return out
}

// requireIssues checks err is a *ValidationError whose issues match want one
// to one (each want is a substring of exactly its issue, in any order).
func requireIssues(t testing.TB, err error, want []string) {
	t.Helper()
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %T is not a *ValidationError", err)
	}
	got := make([]string, len(ve.Issues))
	for i, is := range ve.Issues {
		got[i] = is.String()
	}
	if len(got) != len(want) {
		t.Fatalf("got %d issues, want %d:\n  %s", len(got), len(want), strings.Join(got, "\n  "))
	}
	used := make([]bool, len(got))
	for _, w := range want {
		i := slices.IndexFunc(got, func(g string) bool { return strings.Contains(g, w) })
		for i >= 0 && used[i] {
			j := slices.IndexFunc(got[i+1:], func(g string) bool { return strings.Contains(g, w) })
			if j < 0 {
				i = -1
				break
			}
			i += 1 + j
		}
		if i < 0 {
			t.Fatalf("no issue contains %q; issues:\n  %s", w, strings.Join(got, "\n  "))
		}
		used[i] = true
	}
	if !strings.Contains(err.Error(), got[0]) {
		t.Fatalf("Error() = %q does not include issue %q", err, got[0])
	}
}

// requireNotes checks each want is a substring of some note.
func requireNotes(t testing.TB, m *config.Model, want []string) {
	t.Helper()
	got := noteStrings(m)
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("no note contains %q; notes:\n  %s", w, strings.Join(got, "\n  "))
		}
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
