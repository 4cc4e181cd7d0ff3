// Package configtest renders Envoy v3 bootstraps of tcp_proxy services for
// tests and benchmarks (daemon's, daemon/config's, daemon/bench).
package configtest

import (
	"fmt"
	"net"
	"strings"
)

// Config is a set of tcp_proxy listeners and STATIC clusters.
type Config struct {
	Services []Service
	Clusters []Cluster
}

// Service is one tcp_proxy listener on a VIP ("10.96.203.10:80",
// "[fd00:96::10]:80"), routed to its clusters: one cluster without a weight
// is written as `cluster:`, anything else as weighted_clusters.
type Service struct {
	Name, VIP string
	Clusters  []WeightedCluster
}

// WeightedCluster is a route target with its weight.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// Cluster is a STATIC cluster; Policy defaults to ROUND_ROBIN. With
// OriginalDst it is an ORIGINAL_DST cluster as Istio writes
// PassthroughCluster (lb_policy CLUSTER_PROVIDED, no endpoints; Policy and
// Endpoints are not used).
type Cluster struct {
	Name, Policy string
	Endpoints    []string // "10.0.0.1:8080"
	// Weights, when set, are the endpoints' load_balancing_weight, by index.
	Weights     []uint32
	OriginalDst bool
}

// weight renders endpoint i's load_balancing_weight field, if it has one.
func (c Cluster) weight(i int, json bool) string {
	if i >= len(c.Weights) {
		return ""
	}
	if json {
		return fmt.Sprintf(`,"load_balancing_weight":%d`, c.Weights[i])
	}
	return fmt.Sprintf(", load_balancing_weight: %d", c.Weights[i])
}

func (c Cluster) policy() string {
	if c.Policy == "" {
		return "ROUND_ROBIN"
	}
	return c.Policy
}

func (s Service) single() bool { return len(s.Clusters) == 1 && s.Clusters[0].Weight == 0 }

// Large is n services of eps endpoints each, one cluster per service named
// after it: VIPs 10.96.x.y:80, endpoints in 10.128.0.0/9 on port. Nothing
// routes to them: a daemon that gets this config should enroll no namespace.
func Large(n, eps, port int) Config {
	c := Config{Services: make([]Service, n), Clusters: make([]Cluster, n)}
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		c.Services[i] = Service{Name: name, VIP: fmt.Sprintf("10.96.%d.%d:80", i/256, i%256), Clusters: []WeightedCluster{{Name: name}}}
		cl := Cluster{Name: name, Endpoints: make([]string, eps)}
		for j := range eps {
			k := i*eps + j
			cl.Endpoints[j] = fmt.Sprintf("10.%d.%d.%d:%d", 128+k>>16, (k>>8)&255, k&255, port)
		}
		c.Clusters[i] = cl
	}
	return c
}

// YAML renders c as a bootstrap in YAML, addresses in flow style.
func (c Config) YAML() string {
	var b strings.Builder
	b.Grow(len(c.Services)*400 + len(c.Clusters)*150 + endpoints(c)*100)
	b.WriteString("static_resources:\n  listeners:\n")
	for _, s := range c.Services {
		host, port, _ := net.SplitHostPort(s.VIP)
		fmt.Fprintf(&b, `  - name: %s
    address: { socket_address: { address: "%s", port_value: %s } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %s
`, s.Name, host, port, s.Name)
		if s.single() {
			fmt.Fprintf(&b, "          cluster: %s\n", s.Clusters[0].Name)
			continue
		}
		b.WriteString("          weighted_clusters:\n            clusters:\n")
		for _, wc := range s.Clusters {
			fmt.Fprintf(&b, "            - { name: %s, weight: %d }\n", wc.Name, wc.Weight)
		}
	}
	b.WriteString("  clusters:\n")
	for _, cl := range c.Clusters {
		if cl.OriginalDst {
			fmt.Fprintf(&b, "  - name: %s\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 10s\n", cl.Name)
			continue
		}
		fmt.Fprintf(&b, "  - name: %s\n    type: STATIC\n    lb_policy: %s\n    load_assignment:\n      cluster_name: %s\n      endpoints:\n      - lb_endpoints:\n",
			cl.Name, cl.policy(), cl.Name)
		for j, e := range cl.Endpoints {
			host, port, _ := net.SplitHostPort(e)
			fmt.Fprintf(&b, "        - { endpoint: { address: { socket_address: { address: \"%s\", port_value: %s } } }%s }\n", host, port, cl.weight(j, false))
		}
	}
	return b.String()
}

// JSON renders c as a bootstrap in JSON, one line per listener and per
// cluster.
func (c Config) JSON() string {
	var b strings.Builder
	b.Grow(len(c.Services)*400 + len(c.Clusters)*150 + endpoints(c)*90)
	b.WriteString("{\"static_resources\":{\"listeners\":[\n")
	for i, s := range c.Services {
		host, port, _ := net.SplitHostPort(s.VIP)
		if i > 0 {
			b.WriteString(",\n")
		}
		route := ""
		if s.single() {
			route = fmt.Sprintf(`"cluster":%q`, s.Clusters[0].Name)
		} else {
			parts := make([]string, len(s.Clusters))
			for j, wc := range s.Clusters {
				parts[j] = fmt.Sprintf(`{"name":%q,"weight":%d}`, wc.Name, wc.Weight)
			}
			route = `"weighted_clusters":{"clusters":[` + strings.Join(parts, ",") + `]}`
		}
		fmt.Fprintf(&b, `{"name":%q,"address":{"socket_address":{"address":%q,"port_value":%s}},"filter_chains":[{"filters":[`+
			`{"name":"envoy.filters.network.tcp_proxy","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",`+
			`"stat_prefix":%q,%s}}]}]}`, s.Name, host, port, s.Name, route)
	}
	b.WriteString("],\n\"clusters\":[\n")
	for i, cl := range c.Clusters {
		if i > 0 {
			b.WriteString(",\n")
		}
		if cl.OriginalDst {
			fmt.Fprintf(&b, `{"name":%q,"type":"ORIGINAL_DST","lb_policy":"CLUSTER_PROVIDED","connect_timeout":"10s"}`, cl.Name)
			continue
		}
		fmt.Fprintf(&b, `{"name":%q,"type":"STATIC","lb_policy":%q,"load_assignment":{"cluster_name":%q,"endpoints":[{"lb_endpoints":[`, cl.Name, cl.policy(), cl.Name)
		for j, e := range cl.Endpoints {
			host, port, _ := net.SplitHostPort(e)
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"endpoint":{"address":{"socket_address":{"address":%q,"port_value":%s}}}%s}`, host, port, cl.weight(j, true))
		}
		b.WriteString("]}]}}")
	}
	b.WriteString("]}}\n")
	return b.String()
}

func endpoints(c Config) int {
	n := 0
	for _, cl := range c.Clusters {
		n += len(cl.Endpoints)
	}
	return n
}
