package configtest_test

import (
	"net/netip"
	"testing"

	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/daemon/config/configtest"
)

// The YAML and JSON renderings of one Config are the same bootstrap: both
// parse, to models with the same version, and the model has what was asked.
func TestYAMLAndJSONAgree(t *testing.T) {
	c := configtest.Large(3, 2, 8080)
	c.Services = append(c.Services, configtest.Service{Name: "split", VIP: "[fd00:96::10]:80",
		Clusters: []configtest.WeightedCluster{{Name: "v6a", Weight: 90}, {Name: "v6b", Weight: 10}}})
	c.Clusters = append(c.Clusters, configtest.Cluster{Name: "v6a", Policy: "RANDOM", Endpoints: []string{"[fd00:201::2]:8080"}},
		configtest.Cluster{Name: "v6b", Endpoints: []string{"[fd00:202::2]:8080", "[fd00:202::3]:8080"}, Weights: []uint32{1, 1023}},
		configtest.Cluster{Name: "PassthroughCluster", OriginalDst: true})
	c.Services = append(c.Services, configtest.Service{Name: "external", VIP: "10.96.9.9:443",
		Clusters: []configtest.WeightedCluster{{Name: "PassthroughCluster"}}})
	y, err := config.ParseBootstrap([]byte(c.YAML()), config.FormatYAML)
	if err != nil {
		t.Fatalf("YAML: %v\n%s", err, c.YAML())
	}
	j, err := config.ParseBootstrap([]byte(c.JSON()), config.FormatJSON)
	if err != nil {
		t.Fatalf("JSON: %v\n%s", err, c.JSON())
	}
	if y.Version != j.Version {
		t.Errorf("YAML model %s, JSON model %s", y.Version, j.Version)
	}
	if s := y.Services[config.ServiceKey{Addr: netip.MustParseAddr("10.96.9.9"), Port: 443}]; !s.Passthrough() || s.Name != "external" {
		t.Errorf("service external: %+v, want passthrough (its cluster is ORIGINAL_DST)", s)
	}
	if len(y.Services) != 5 || len(y.Clusters) != 5 || len(y.Clusters["svc-1"].Endpoints) != 2 {
		t.Errorf("model: %d services, %d clusters, svc-1 %+v", len(y.Services), len(y.Clusters), y.Clusters["svc-1"])
	}
	if eps := y.Clusters["v6b"].Endpoints; len(eps) != 2 || eps[0].Weight != 1 || eps[1].Weight != 1023 {
		t.Errorf("endpoint weights of v6b: %+v, want 1 and 1023", eps)
	}
}
