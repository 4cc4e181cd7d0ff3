package config_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/daemon/config/configtest"
)

// benchInput builds n tcp_proxy services, each with its own cluster of eps
// endpoints, as an xDS client would receive them.
func benchInput(b testing.TB, n, eps int) ([]*listenerv3.Listener, []*clusterv3.Cluster) {
	listeners := make([]*listenerv3.Listener, n)
	clusters := make([]*clusterv3.Cluster, n)
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		listeners[i] = pTCP(b, name, fmt.Sprintf("10.96.%d.%d", i/256, i%256), 80, name)
		c := pCluster(name)
		lbs := make([]*endpointv3.LbEndpoint, eps)
		for j := range eps {
			k := i*eps + j
			lbs[j] = &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: pAddr(fmt.Sprintf("10.%d.%d.%d", 128+k>>16, (k>>8)&255, k&255), 8080)}},
				LoadBalancingWeight: wrapperspb.UInt32(uint32(1 + j%3)),
			}
		}
		c.LoadAssignment.Endpoints[0].LbEndpoints = lbs
		clusters[i] = c
	}
	return listeners, clusters
}

func BenchmarkTranslate(b *testing.B) {
	listeners, clusters := benchInput(b, 10000, 10)
	// baseline: the least any translator must do with this input: decode
	// each tcp_proxy Any and parse every endpoint address into a map.
	b.Run("baseline/10000x10", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			svc := make(map[netip.AddrPort]string, len(listeners))
			for _, l := range listeners {
				tp := new(tcpv3.TcpProxy)
				if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(tp); err != nil {
					b.Fatal(err)
				}
				sa := l.Address.GetSocketAddress()
				svc[netip.AddrPortFrom(netip.MustParseAddr(sa.Address), uint16(sa.GetPortValue()))] = tp.GetCluster()
			}
			cl := make(map[string][]netip.AddrPort, len(clusters))
			for _, c := range clusters {
				var eps []netip.AddrPort
				for _, e := range c.LoadAssignment.Endpoints[0].LbEndpoints {
					sa := e.GetEndpoint().GetAddress().GetSocketAddress()
					eps = append(eps, netip.AddrPortFrom(netip.MustParseAddr(sa.Address), uint16(sa.GetPortValue())))
				}
				cl[c.Name] = eps
			}
		}
	})
	b.Run("translate/10000x10", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, err := config.Translate(listeners, clusters)
			if err != nil {
				b.Fatal(err)
			}
			if len(m.Services) != 10000 {
				b.Fatalf("%d services", len(m.Services))
			}
		}
	})
}

func BenchmarkDiff(b *testing.B) {
	listeners, clusters := benchInput(b, 10000, 10)
	old, err := config.Translate(listeners, clusters)
	if err != nil {
		b.Fatal(err)
	}
	clusters[42].LoadAssignment.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(9)
	cur, err := config.Translate(listeners, clusters)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("10000x10/one-change", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := config.Diff(old, cur); len(d.ClustersChanged) != 1 {
				b.Fatalf("%+v", d)
			}
		}
	})
}

func BenchmarkParseBootstrapDefault(b *testing.B) {
	data := config.Default()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := config.ParseBootstrap(data, config.FormatYAML); err != nil {
			b.Fatal(err)
		}
	}
}

// largeBootstrap renders n tcp_proxy services of eps endpoints each as the
// daemon benchmark (daemon/bench) writes them.
func largeBootstrap(n, eps int, format config.Format) []byte {
	c := configtest.Large(n, eps, 8080)
	if format == config.FormatJSON {
		return []byte(c.JSON())
	}
	return []byte(c.YAML())
}

// BenchmarkDecodeYAML10k decodes the 10,000 services × 10 endpoints
// bootstrap in YAML (15 MB). Baselines in the same run: "node-tree" only
// parses the YAML into yaml.Node (the floor of a one-piece path), "reference"
// is the former path through map[string]any and encoding/json, "one-piece"
// the path a YAML bootstrap takes when the parallel one does not apply.
func BenchmarkDecodeYAML10k(b *testing.B) {
	data := largeBootstrap(10000, 10, config.FormatYAML)
	b.Run("node-tree", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var n yaml.Node
			if err := yaml.Unmarshal(data, &n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			bs, err := config.RefDecodeBootstrap(data, config.FormatYAML)
			if err != nil || len(bs.GetStaticResources().GetClusters()) != 10000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-piece", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			bs, err := config.DecodeYAMLOnePiece(data)
			if err != nil || len(bs.GetStaticResources().GetClusters()) != 10000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			bs, err := config.DecodeBootstrap(data, config.FormatYAML)
			if err != nil || len(bs.GetStaticResources().GetClusters()) != 10000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) { // decode + translate
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			m, err := config.ParseBootstrap(data, config.FormatYAML)
			if err != nil || len(m.Services) != 10000 {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeJSON10k is BenchmarkDecodeYAML10k for the same bootstrap in
// JSON (13.6 MB). Baseline: encoding/json decoding it into any.
func BenchmarkDecodeJSON10k(b *testing.B) {
	data := largeBootstrap(10000, 10, config.FormatJSON)
	b.Run("baseline-encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var v any
			if err := json.Unmarshal(data, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			bs, err := config.DecodeBootstrap(data, config.FormatJSON)
			if err != nil || len(bs.GetStaticResources().GetClusters()) != 10000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			m, err := config.ParseBootstrap(data, config.FormatJSON)
			if err != nil || len(m.Services) != 10000 {
				b.Fatal(err)
			}
		}
	})
}
