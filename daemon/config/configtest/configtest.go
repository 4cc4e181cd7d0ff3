// Package configtest renders Envoy v3 bootstraps of many tcp_proxy services
// for tests and benchmarks (daemon/config's, daemon/bench).
package configtest

import (
	"fmt"
	"net"
	"strings"
)

// Service is one tcp_proxy listener (a VIP) routed to one cluster.
type Service struct {
	Name, VIP string // VIP "10.96.203.10:80"
	Endpoints []string
}

// YAML renders services as an Envoy v3 bootstrap, one cluster per service
// named after it, with addresses in flow style.
func YAML(svcs []Service) string {
	var b strings.Builder
	b.Grow(len(svcs) * (500 + 100*len(svcs[0].Endpoints)))
	b.WriteString("static_resources:\n  listeners:\n")
	for _, s := range svcs {
		host, port, _ := net.SplitHostPort(s.VIP)
		fmt.Fprintf(&b, `  - name: %s
    address: { socket_address: { address: "%s", port_value: %s } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %s
          cluster: %s
`, s.Name, host, port, s.Name, s.Name)
	}
	b.WriteString("  clusters:\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, "  - name: %s\n    type: STATIC\n    lb_policy: ROUND_ROBIN\n    load_assignment:\n      cluster_name: %s\n      endpoints:\n      - lb_endpoints:\n", s.Name, s.Name)
		for _, e := range s.Endpoints {
			host, port, _ := net.SplitHostPort(e)
			fmt.Fprintf(&b, "        - endpoint: { address: { socket_address: { address: \"%s\", port_value: %s } } }\n", host, port)
		}
	}
	return b.String()
}

// JSON renders the same bootstrap as JSON (one line per listener and per
// cluster).
func JSON(svcs []Service) string {
	var b strings.Builder
	b.Grow(len(svcs) * (400 + 90*len(svcs[0].Endpoints)))
	b.WriteString("{\"static_resources\":{\"listeners\":[\n")
	for i, s := range svcs {
		host, port, _ := net.SplitHostPort(s.VIP)
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"name":%q,"address":{"socket_address":{"address":%q,"port_value":%s}},"filter_chains":[{"filters":[`+
			`{"name":"envoy.filters.network.tcp_proxy","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",`+
			`"stat_prefix":%q,"cluster":%q}}]}]}`, s.Name, host, port, s.Name, s.Name)
	}
	b.WriteString("],\n\"clusters\":[\n")
	for i, s := range svcs {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"name":%q,"type":"STATIC","lb_policy":"ROUND_ROBIN","load_assignment":{"cluster_name":%q,"endpoints":[{"lb_endpoints":[`, s.Name, s.Name)
		for j, e := range s.Endpoints {
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

// Large builds n services of eps endpoints each: VIPs 10.96.x.y:80,
// endpoints in 10.128.0.0/9 on port. Nothing routes to them: a daemon that
// gets this config should enroll no namespace.
func Large(n, eps, port int) []Service {
	svcs := make([]Service, n)
	for i := range svcs {
		s := Service{Name: fmt.Sprintf("svc-%d", i), VIP: fmt.Sprintf("10.96.%d.%d:80", i/256, i%256)}
		s.Endpoints = make([]string, eps)
		for j := range eps {
			k := i*eps + j
			s.Endpoints[j] = fmt.Sprintf("10.%d.%d.%d:%d", 128+k>>16, (k>>8)&255, k&255, port)
		}
		svcs[i] = s
	}
	return svcs
}
