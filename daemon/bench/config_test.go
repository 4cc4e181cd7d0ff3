package bench

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// service is one tcp_proxy listener (a VIP) routed to one cluster.
type service struct {
	name, vip string // vip "10.96.203.10:80"
	endpoints []string
}

// bootstrap renders services as an Envoy v3 bootstrap (YAML), one cluster
// per service named after it.
func bootstrap(svcs []service) string {
	var b strings.Builder
	b.Grow(len(svcs) * (500 + 100*len(svcs[0].endpoints)))
	b.WriteString("static_resources:\n  listeners:\n")
	for _, s := range svcs {
		host, port, _ := net.SplitHostPort(s.vip)
		fmt.Fprintf(&b, `  - name: %s
    address: { socket_address: { address: "%s", port_value: %s } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %s
          cluster: %s
`, s.name, host, port, s.name, s.name)
	}
	b.WriteString("  clusters:\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, "  - name: %s\n    type: STATIC\n    lb_policy: ROUND_ROBIN\n    load_assignment:\n      cluster_name: %s\n      endpoints:\n      - lb_endpoints:\n", s.name, s.name)
		for _, e := range s.endpoints {
			host, port, _ := net.SplitHostPort(e)
			fmt.Fprintf(&b, "        - endpoint: { address: { socket_address: { address: \"%s\", port_value: %s } } }\n", host, port)
		}
	}
	return b.String()
}

// bootstrapJSON renders the same bootstrap as JSON (one line per listener
// and per cluster).
func bootstrapJSON(svcs []service) string {
	var b strings.Builder
	b.Grow(len(svcs) * (400 + 90*len(svcs[0].endpoints)))
	b.WriteString("{\"static_resources\":{\"listeners\":[\n")
	for i, s := range svcs {
		host, port, _ := net.SplitHostPort(s.vip)
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"name":%q,"address":{"socket_address":{"address":%q,"port_value":%s}},"filter_chains":[{"filters":[`+
			`{"name":"envoy.filters.network.tcp_proxy","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",`+
			`"stat_prefix":%q,"cluster":%q}}]}]}`, s.name, host, port, s.name, s.name)
	}
	b.WriteString("],\n\"clusters\":[\n")
	for i, s := range svcs {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"name":%q,"type":"STATIC","lb_policy":"ROUND_ROBIN","load_assignment":{"cluster_name":%q,"endpoints":[{"lb_endpoints":[`, s.name, s.name)
		for j, e := range s.endpoints {
			host, port, _ := net.SplitHostPort(e)
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"endpoint":{"address":{"socket_address":{"address":%q,"port_value":%s}}}}`, host, port)
		}
		b.WriteString("]}]}}")
	}
	b.WriteString("]}}\n")
	return b.String()
}

// largeServices builds n services of eps endpoints each: VIPs 10.96.x.y:80,
// endpoints 10.128.0.0/9 on port. Nothing routes to them: the daemon that
// gets this config enrolls no namespace.
func largeServices(n, eps, port int) []service {
	svcs := make([]service, n)
	for i := range svcs {
		s := service{name: fmt.Sprintf("svc-%d", i), vip: fmt.Sprintf("10.96.%d.%d:80", i/256, i%256)}
		s.endpoints = make([]string, eps)
		for j := range eps {
			k := i*eps + j
			s.endpoints[j] = fmt.Sprintf("10.%d.%d.%d:%d", 128+k>>16, (k>>8)&255, k&255, port)
		}
		svcs[i] = s
	}
	return svcs
}

// writeFileAtomic replaces path with content (write, then rename), as an
// editor or kubelet does.
func writeFileAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
