package daemon

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kmesh.dev/kmesh/daemon/config/configtest"
	tn "kmesh.dev/kmesh/daemon/internal/testnet"
)

func enrolledRef(st Status, cookie uint64) (string, bool) {
	for _, e := range st.Enrolled {
		if e.Cookie == cookie {
			return e.Ref, true
		}
	}
	return "", false
}

// addNetns makes a namespace the test deletes itself (cleanup deletes it
// if the test did not get that far).
func addNetns(t *testing.T) string {
	t.Helper()
	name := "kg" + tn.ID(t)
	tn.Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// TestDaemonEnrollment: references are checked (400 for what is no
// namespace), a namespace that is gone is released by the daemon itself,
// and one can be released by its cookie.
func TestDaemonEnrollment(t *testing.T) {
	tn.RequireRoot(t)
	e := newEnv(t, baseConfig("echo-a"))
	e.opts.EnrollCheckInterval = 100 * time.Millisecond
	e.start()

	name := addNetns(t)
	code, body := e.post("/enroll?netns=" + name)
	var en EnrolledNetns
	if code != http.StatusOK || json.Unmarshal([]byte(body), &en) != nil || en.Cookie == 0 {
		t.Fatalf("enroll: %d %s", code, body)
	}
	if ref, ok := enrolledRef(e.status(), en.Cookie); !ok || ref != name {
		t.Fatalf("enrolled namespace listed as %q (%v), want %q", ref, ok, name)
	}

	notNetns := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(notNetns, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ref, want string }{
		{"run/netns/" + name, "must be absolute"},
		{notNetns, "not a network namespace"},
	} {
		if code, body := e.post("/enroll?netns=" + url.QueryEscape(c.ref)); code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("enroll %s: %d %s, want 400 saying %q", c.ref, code, body, c.want)
		}
	}

	// the namespace goes (its pod was deleted): released within the interval
	tn.Run(t, "ip", "netns", "del", name)
	waitFor(t, "the deleted namespace to be released", func() bool {
		_, ok := enrolledRef(e.status(), en.Cookie)
		return !ok
	})
	if !strings.Contains(e.log.String(), "enrolled namespace is gone") {
		t.Error("the log does not say why the namespace was released")
	}

	// release by cookie; twice is fine (a CNI DEL may come twice)
	other := addNetns(t)
	code, body = e.post("/enroll?netns=" + other)
	if code != http.StatusOK || json.Unmarshal([]byte(body), &en) != nil {
		t.Fatalf("enroll: %d %s", code, body)
	}
	for i, want := range []string{`"was_enrolled": true`, `"was_enrolled": false`} {
		if code, body := e.post("/unenroll?cookie=" + jsonNumber(en.Cookie)); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("unenroll by cookie, #%d: %d %s, want %s", i+1, code, body, want)
		}
	}
	if _, ok := enrolledRef(e.status(), en.Cookie); ok {
		t.Error("namespace still listed after unenroll by cookie")
	}
	if code, body := e.post("/unenroll?cookie=x"); code != http.StatusBadRequest {
		t.Errorf("unenroll of cookie x: %d %s, want 400", code, body)
	}
}

func jsonNumber(c uint64) string {
	b, _ := json.Marshal(c)
	return string(b)
}

// TestDaemonConfigNotesAndRecovery: a change of what is not applied (the
// services stay the same) reaches /status; a failure stops being shown when
// the file goes back to the applied content; a config invalid at start is
// reported once.
func TestDaemonConfigNotesAndRecovery(t *testing.T) {
	tn.RequireRoot(t)
	good := baseConfig("echo-a")
	e := newEnv(t, good)
	e.start()
	version := e.status().ConfigVersion

	// a wildcard listener compat mode cannot apply: a note, no service
	sni := withSNIListener(good, "sni-only", "0.0.0.0:8443", "echo-a")
	writeFileAtomic(t, e.cfg, sni)
	waitFor(t, "the new note in /status", func() bool {
		for _, n := range e.status().NotApplied {
			if strings.Contains(n.Object, "sni-only") {
				return true
			}
		}
		return false
	})
	if st := e.status(); st.ConfigVersion != version {
		t.Errorf("config version changed %s -> %s for a change of notes only", version, st.ConfigVersion)
	}

	// broken, then back to the applied content: the failure is over
	writeFileAtomic(t, e.cfg, "static_resources: {bogus: 1}\n")
	waitFor(t, "the invalid config to be reported", func() bool { return e.status().LastError != "" })
	writeFileAtomic(t, e.cfg, sni)
	waitFor(t, "last_error to clear after the revert", func() bool { return e.status().LastError == "" })
	e.stop()

	// invalid at start: not ready, the reason in /ready, counted once
	writeFileAtomic(t, e.cfg, "static_resources: {bogus: 1}\n")
	e.startWith(func(code int) bool { return code != 0 }) // answering, ready or not
	code, body := e.get("/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "bogus") {
		t.Errorf("/ready with an invalid config at start: %d %s", code, body)
	}
	time.Sleep(300 * time.Millisecond) // the watcher's first pass is done
	if v := metricValue(e.metrics(), `kmesh_config_applies_total{result="rejected"}`); v != 1 {
		t.Errorf("rejected count after start with an invalid config = %v, want 1", v)
	}
	writeFileAtomic(t, e.cfg, good)
	waitFor(t, "ready once the file is fixed", func() bool { code, _ := e.get("/ready"); return code == http.StatusOK })
}

// TestDaemonPassthrough: a VIP a listener claims but compat mode cannot
// serve (its only chain matches on SNI), and one a listener sends to an
// ORIGINAL_DST cluster (Istio's PassthroughCluster), keep their original
// destination; they do not fall through to the port's wildcard service,
// which still serves every other VIP.
func TestDaemonPassthrough(t *testing.T) {
	tp := newTopo(t)
	type wc = configtest.WeightedCluster
	cfg := configtest.Config{
		Services: []configtest.Service{
			{Name: "any", VIP: "0.0.0.0:80", Clusters: []wc{{Name: "a", Weight: 1}}},
			{Name: "external", VIP: "10.96.0.78:80", Clusters: []wc{{Name: "PassthroughCluster"}}},
		},
		Clusters: []configtest.Cluster{{Name: "a", Endpoints: []string{tn.A1}}, {Name: "PassthroughCluster", OriginalDst: true}},
	}.YAML()
	cfg = withSNIListener(cfg, "tls-only", "10.96.0.77:80", "a")
	e := newEnv(t, cfg, tp.Client.Path)
	e.start()
	st := e.status()
	for _, vip := range []string{"10.96.0.77:80", "10.96.0.78:80"} {
		var pt *ServiceStatus
		for i, s := range st.Services {
			if s.Key == vip {
				pt = &st.Services[i]
			}
		}
		if pt == nil || !pt.Passthrough || len(pt.Clusters) != 0 {
			t.Fatalf("/status services %+v: want %s passthrough", st.Services, vip)
		}
		if got, err := tp.Client.Fetch(vip, 1); err == nil {
			t.Errorf("passthrough VIP %s reached %v: it must keep its (unroutable) destination, not take the wildcard's cluster", vip, got)
		}
	}
	if got, err := tp.Client.Fetch(tn.VIP, 2); err != nil || tn.Tally(got)[tn.A1] != 2 {
		t.Errorf("another VIP on port 80: %v %v, want the wildcard's %s", got, err, tn.A1)
	}
	if v := metricValue(e.metrics(), `kmesh_service_connections_redirected_total{service="any",vip="0.0.0.0:80"}`); v != 2 {
		t.Errorf("wildcard redirected %v connections, want 2 (the passthrough VIPs' connects are not its)", v)
	}
}

// withSNIListener adds to a configtest YAML config a listener on addr whose
// only filter chain matches on SNI: compat mode cannot apply it.
func withSNIListener(cfg, name, addr, cluster string) string {
	ap := netip.MustParseAddrPort(addr)
	return strings.Replace(cfg, "  listeners:\n", fmt.Sprintf(`  listeners:
  - name: %s
    address: { socket_address: { address: "%s", port_value: %d } }
    filter_chains:
    - filter_chain_match: { server_names: ["a.example"] }
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %s
          cluster: %s
`, name, ap.Addr(), ap.Port(), name, cluster), 1)
}
