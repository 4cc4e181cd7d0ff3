package config_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"kmesh.dev/kmesh/daemon/config"
)

func mustParse(t testing.TB, cfg M) *config.Model {
	t.Helper()
	m, err := config.ParseBootstrap(encode(t, cfg, config.FormatJSON), config.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// base: two services over three clusters.
func baseCfg() M {
	return boot(ls(
		tcpL("l1", "10.96.0.10", 80, weighted("a", 90, "b", 10)),
		hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, route("", catchAll, to("c"))))),
		cluster("a", ep("10.244.0.1", 80), ep("10.244.0.2", 80, 2)),
		cluster("b", ep("10.244.0.3", 80)),
		cluster("c", ep("10.244.0.4", 80)))
}

// reorder reverses listeners, clusters, endpoints and weighted clusters.
func reorder(cfg M) M {
	c := deepCopy(cfg).(M)
	sr := c["static_resources"].(map[string]any)
	for _, k := range []string{"listeners", "clusters"} {
		slices.Reverse(sr[k].([]any))
	}
	for _, cl := range sr["clusters"].([]any) {
		for _, lle := range cl.(map[string]any)["load_assignment"].(map[string]any)["endpoints"].([]any) {
			slices.Reverse(lle.(map[string]any)["lb_endpoints"].([]any))
		}
	}
	for _, l := range sr["listeners"].([]any) {
		tc := l.(map[string]any)["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)["typed_config"].(map[string]any)
		if wc, ok := tc["weighted_clusters"].(map[string]any); ok {
			slices.Reverse(wc["clusters"].([]any))
		}
	}
	return c
}

func TestVersionStable(t *testing.T) {
	a := mustParse(t, baseCfg())
	b := mustParse(t, reorder(baseCfg()))
	if a.Version != b.Version {
		t.Fatalf("reordered input: Version %s != %s", a.Version, b.Version)
	}
	if d := config.Diff(a, b); !d.Empty() {
		t.Fatalf("reordered input: Diff = %+v", d)
	}
	if !reflect.DeepEqual(a.Services, b.Services) || !reflect.DeepEqual(a.Clusters, b.Clusters) {
		t.Fatal("reordered input: models differ")
	}
	for range 20 { // map iteration order must not leak into Version
		if v := mustParse(t, baseCfg()).Version; v != a.Version {
			t.Fatalf("Version not deterministic: %s != %s", v, a.Version)
		}
	}

	// Notes are not part of the version: adding a path route changes notes only.
	withRoute := baseCfg()
	withRoute["static_resources"].(M)["listeners"].([]any)[1] = hcmL("h", "0.0.0.0", 9080,
		vhost("v", []string{"10.96.0.20"}, route("p", M{"prefix": "/x"}, to("a")), route("", catchAll, to("c"))))
	r := mustParse(t, withRoute)
	if r.Version != a.Version || len(r.Unsupported) != 1 || !config.Diff(a, r).Empty() {
		t.Fatalf("note-only change: version %s vs %s, notes %v", r.Version, a.Version, r.Unsupported)
	}

	changed := baseCfg()
	changed["static_resources"].(M)["listeners"].([]any)[0] = tcpL("l1", "10.96.0.10", 80, weighted("a", 80, "b", 20))
	if c := mustParse(t, changed); c.Version == a.Version {
		t.Fatal("changed weight kept the Version")
	}
	epw := baseCfg()
	epw["static_resources"].(M)["clusters"].([]any)[1] = cluster("b", ep("10.244.0.3", 80, 5))
	if c := mustParse(t, epw); c.Version == a.Version {
		t.Fatal("changed endpoint weight kept the Version")
	}
}

func TestDiff(t *testing.T) {
	base := mustParse(t, baseCfg())
	mod := func(f func(sr M)) *config.Model {
		c := baseCfg()
		f(c["static_resources"].(M))
		return mustParse(t, c)
	}
	// l1's only filter chain matches by SNI: 10.96.0.10:80 is passthrough.
	passthroughL1 := mod(func(sr M) { sr["listeners"].([]any)[0] = sniOnly("l1", "10.96.0.10", 80, "a") })
	if s := passthroughL1.Services[key("10.96.0.10:80")]; !s.Passthrough() || s.Equal(base.Services[key("10.96.0.10:80")]) ||
		passthroughL1.Version == base.Version {
		t.Fatalf("passthrough service %+v (version %s) vs %+v (version %s)", s, passthroughL1.Version, base.Services[key("10.96.0.10:80")], base.Version)
	}
	tests := []struct {
		name     string
		old, new *config.Model
		want     config.Delta
	}{{
		name: "nil to model adds everything, sorted",
		old:  nil, new: base,
		want: config.Delta{
			ServicesAdded: []config.ServiceKey{key("10.96.0.10:80"), key("10.96.0.20:9080")},
			ClustersAdded: []string{"a", "b", "c"},
		},
	}, {
		name: "model to nil removes everything",
		old:  base, new: nil,
		want: config.Delta{
			ServicesRemoved: []config.ServiceKey{key("10.96.0.10:80"), key("10.96.0.20:9080")},
			ClustersRemoved: []string{"a", "b", "c"},
		},
	}, {
		name: "identical", old: base, new: base,
	}, {
		name: "weight change changes the service only",
		old:  base,
		new: mod(func(sr M) {
			sr["listeners"].([]any)[0] = tcpL("l1", "10.96.0.10", 80, weighted("a", 50, "b", 50))
		}),
		want: config.Delta{ServicesChanged: []config.ServiceKey{key("10.96.0.10:80")}},
	}, {
		name: "endpoint added changes the cluster only",
		old:  base,
		new: mod(func(sr M) {
			sr["clusters"].([]any)[1] = cluster("b", ep("10.244.0.3", 80), ep("10.244.0.9", 80))
		}),
		want: config.Delta{ClustersChanged: []string{"b"}},
	}, {
		name: "endpoint order alone is no change",
		old:  base,
		new: mod(func(sr M) {
			sr["clusters"].([]any)[0] = cluster("a", ep("10.244.0.2", 80, 2), ep("10.244.0.1", 80))
		}),
	}, {
		name: "served to passthrough changes the service",
		old:  base,
		new:  passthroughL1,
		want: config.Delta{ServicesChanged: []config.ServiceKey{key("10.96.0.10:80")}},
	}, {
		name: "passthrough to served changes the service",
		old:  passthroughL1,
		new:  base,
		want: config.Delta{ServicesChanged: []config.ServiceKey{key("10.96.0.10:80")}},
	}, {
		name: "a virtual host losing its catch-all route turns passthrough",
		old:  base,
		new: mod(func(sr M) {
			sr["listeners"].([]any)[1] = hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20"}, route("", M{"prefix": "/api"}, to("c"))))
		}),
		want: config.Delta{ServicesChanged: []config.ServiceKey{key("10.96.0.20:9080")}},
	}, {
		name: "policy change changes the cluster",
		old:  base,
		new: mod(func(sr M) {
			sr["clusters"].([]any)[2] = with(cluster("c", ep("10.244.0.4", 80)), "lb_policy", "RANDOM")
		}),
		want: config.Delta{ClustersChanged: []string{"c"}},
	}, {
		name: "service moved to a new cluster; old cluster removed",
		old:  base,
		new: mod(func(sr M) {
			sr["listeners"].([]any)[1] = hcmL("h", "0.0.0.0", 9080, vhost("v", []string{"10.96.0.20", "10.96.0.5"}, route("", catchAll, to("d"))))
			sr["clusters"].([]any)[2] = cluster("d", ep("10.244.0.4", 80))
		}),
		want: config.Delta{
			ServicesAdded:   []config.ServiceKey{key("10.96.0.5:9080")},
			ServicesChanged: []config.ServiceKey{key("10.96.0.20:9080")},
			ClustersAdded:   []string{"d"},
			ClustersRemoved: []string{"c"},
		},
	}, {
		name: "listener rename changes the service",
		old:  base,
		new: mod(func(sr M) {
			sr["listeners"].([]any)[0] = tcpL("renamed", "10.96.0.10", 80, weighted("a", 90, "b", 10))
		}),
		want: config.Delta{ServicesChanged: []config.ServiceKey{key("10.96.0.10:80")}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := config.Diff(tc.old, tc.new)
			if !reflect.DeepEqual(norm(got), norm(tc.want)) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tc.want)
				t.Fatalf("Diff:\n got  %s\n want %s", g, w)
			}
			if got.Empty() != (tc.want.Empty()) {
				t.Fatalf("Empty() = %v", got.Empty())
			}
			if (tc.old != nil && tc.new != nil) && got.Empty() != (tc.old.Version == tc.new.Version) {
				t.Fatalf("Empty() = %v but versions %s, %s", got.Empty(), tc.old.Version, tc.new.Version)
			}
		})
	}
}

func TestDiffOrderDeterministic(t *testing.T) {
	var listeners []M
	var clusters []M
	for i := 255; i >= 0; i-- {
		n := string(rune('a'+i%26)) + string(rune('a'+i/26))
		listeners = append(listeners, tcpL(n, "10.96.1."+itoa(i), 80, to(n)))
		clusters = append(clusters, cluster(n, ep("10.244.1."+itoa(i), 80)))
	}
	listeners = append(listeners, tcpL("v6", "fd00::1", 80, to("c6")), tcpL("w", "0.0.0.0", 80, to("aa")))
	clusters = append(clusters, cluster("c6", ep("fd00::2", 80)))
	m := mustParse(t, boot(listeners, clusters...))
	d := config.Diff(nil, m)
	if !slices.IsSortedFunc(d.ServicesAdded, config.ServiceKey.Compare) || !slices.IsSorted(d.ClustersAdded) {
		t.Fatal("delta not sorted")
	}
	if d.ServicesAdded[0] != key("0.0.0.0:80") || d.ServicesAdded[len(d.ServicesAdded)-1] != key("[fd00::1]:80") {
		t.Fatalf("order: first %v last %v", d.ServicesAdded[0], d.ServicesAdded[len(d.ServicesAdded)-1])
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func norm(d config.Delta) config.Delta {
	z := func(s []config.ServiceKey) []config.ServiceKey {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	y := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	return config.Delta{z(d.ServicesAdded), z(d.ServicesChanged), z(d.ServicesRemoved), y(d.ClustersAdded), y(d.ClustersChanged), y(d.ClustersRemoved)}
}
