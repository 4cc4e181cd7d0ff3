package config_test

import (
	"bytes"
	"reflect"
	"testing"

	"kmesh.dev/kmesh/daemon/config"
)

func TestDefault(t *testing.T) {
	m, err := config.LoadDefault()
	if err != nil {
		t.Fatal(err)
	}
	wantServices := map[config.ServiceKey]config.Service{
		key("10.96.0.10:80"):   {Name: "reviews", Listener: "reviews", Clusters: wcs("reviews-v1", 90, "reviews-v2", 10)},
		key("10.96.0.20:9080"): {Name: "ratings", Listener: "http_9080", Clusters: wcs("ratings-v1", 1)},
	}
	if !reflect.DeepEqual(m.Services, wantServices) {
		t.Errorf("services:\n got  %+v\n want %+v", m.Services, wantServices)
	}
	wantClusters := map[string]config.Cluster{
		"reviews-v1": {Name: "reviews-v1", Policy: config.RoundRobin, Endpoints: eps("10.244.1.10:9080", 1, "10.244.2.10:9080", 1)},
		"reviews-v2": {Name: "reviews-v2", Policy: config.RoundRobin, Endpoints: eps("10.244.1.11:9080", 1)},
		"ratings-v1": {Name: "ratings-v1", Policy: config.RoundRobin, Endpoints: eps("10.244.1.20:9080", 2, "10.244.2.20:9080", 1)},
		"ratings-v2": {Name: "ratings-v2", Policy: config.RoundRobin, Endpoints: eps("10.244.3.20:9080", 1)},
	}
	if !reflect.DeepEqual(m.Clusters, wantClusters) {
		t.Errorf("clusters:\n got  %+v\n want %+v", m.Clusters, wantClusters)
	}
	wantNotes := []config.Note{{
		Kind:   config.NeedsEnhanced,
		Object: `listener "http_9080" virtual_host "ratings" route "admin"`,
		Reason: `matches on path prefix "/admin"; compat mode cannot see the request, so these requests go to the catch-all route's clusters`,
	}}
	if !reflect.DeepEqual(m.Unsupported, wantNotes) {
		t.Errorf("notes:\n got  %+v\n want %+v", m.Unsupported, wantNotes)
	}

	// Default returns a copy; the embedded bytes cannot be changed through it.
	d := config.Default()
	if !bytes.Contains(d, []byte("10.96.0.10")) {
		t.Fatal("Default() does not look like default.yaml")
	}
	d[0] ^= 0xff
	if m2, err := config.LoadDefault(); err != nil || m2.Version != m.Version {
		t.Fatalf("LoadDefault after mutating Default(): %v", err)
	}
}
