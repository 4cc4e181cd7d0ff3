package config

import (
	"testing"
)

func FuzzParseBootstrap(f *testing.F) {
	f.Add(defaultYAML)
	f.Add([]byte(`{"static_resources":{"listeners":[{"name":"l","address":{"socket_address":{"address":"10.96.0.10","port_value":80}},"filter_chains":[{"filters":[{"name":"t","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy","stat_prefix":"s","cluster":"a"}}]}]}],"clusters":[{"name":"a","load_assignment":{"cluster_name":"a","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"10.0.0.1","port_value":1}}}}]}]}}]}}`))
	f.Add([]byte("static_resources:\n  clusters:\n  - name: a\n    lb_polcy: RANDOM\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("x: &x {<<: *x}\n"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("{\"static_resources\": {\"clusters\": [{\"name\": \"\u00e9\", \"x\": 1}]}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []Format{FormatAuto, FormatYAML, FormatJSON} {
			m, err := ParseBootstrap(data, format)
			if (m == nil) == (err == nil) {
				t.Fatalf("model %v with error %v", m != nil, err)
			}
			if m == nil {
				continue
			}
			if v := m.computeVersion(); v != m.Version {
				t.Fatalf("Version %s, recomputed %s", m.Version, v)
			}
			for k, s := range m.Services {
				if s.Passthrough() {
					if k.Wildcard() {
						t.Fatalf("wildcard service %s is passthrough", k)
					}
					continue
				}
				var total uint64
				for _, wc := range s.Clusters {
					c, ok := m.Clusters[wc.Name]
					if !ok {
						t.Fatalf("service %s names missing cluster %q", k, wc.Name)
					}
					for _, e := range c.Endpoints {
						if e.Addr.Addr().Is4() != k.Addr.Is4() || e.Addr.Port() == 0 || e.Weight == 0 {
							t.Fatalf("service %s: bad endpoint %v", k, e)
						}
					}
					total += uint64(wc.Weight)
				}
				if total == 0 || total > 1<<32-1 || len(s.Clusters) > MaxWeightedClusters {
					t.Fatalf("service %s: clusters %v", k, s.Clusters)
				}
			}
			if !Diff(m, m).Empty() {
				t.Fatal("Diff(m, m) not empty")
			}
		}
	})
}
