package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveObjects()
	os.Exit(code)
}

func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// env is a daemon's node-level environment: objects, private bpffs and
// cgroup2 mount points, admin and metrics addresses, a config file.
type env struct {
	t      *testing.T
	opts   Options
	cfg    string
	log    *strings.Builder
	cancel context.CancelFunc
	done   chan error
	// readyWithin bounds how long start waits for /ready (60 s unless a
	// test that parses a huge config sets more)
	readyWithin time.Duration
}

func newEnv(t *testing.T, config string, enroll ...string) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{t: t, cfg: filepath.Join(base, "kmesh.yaml"), log: &strings.Builder{}, readyWithin: 60 * time.Second}
	writeFileAtomic(t, e.cfg, config)
	l := logrus.New()
	l.SetOutput(io.MultiWriter(e.log, testWriter{t}))
	e.opts = Options{Mode: "compat", ConfigPath: e.cfg, BPFDir: testnet.Objects(t, testnet.DefaultFeatures()),
		BPFFSPath: filepath.Join(base, "bpffs"), Cgroup2Path: filepath.Join(base, "cgroup2"),
		AdminAddr: freeAddr(t), MetricsAddr: freeAddr(t), EnrollNetns: enroll, Log: l}
	t.Cleanup(func() {
		e.stop()
		if err := Uninstall(e.opts); err != nil {
			t.Errorf("uninstall at cleanup: %v", err)
		}
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start runs the daemon and waits until /ready answers 200.
func (e *env) start() {
	e.t.Helper()
	e.startWith(func(code int) bool { return code == http.StatusOK })
}

// startWith runs the daemon and waits until /ready answers a code ok accepts.
func (e *env) startWith(ok func(code int) bool) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- Run(ctx, e.opts) }()
	// generous: under TCG on a loaded machine the verifier alone takes seconds
	deadline := time.Now().Add(e.readyWithin)
	for time.Now().Before(deadline) {
		select {
		case err := <-e.done:
			e.cancel = nil
			e.t.Fatalf("daemon exited: %v", err)
		default:
		}
		if code, _ := e.get("/ready"); ok(code) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("daemon not ready after %v", e.readyWithin)
}

// stop ends the daemon like SIGTERM does.
func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("daemon returned %v", err)
	}
	e.cancel = nil
}

func (e *env) get(path string) (int, string) {
	return e.do(http.MethodGet, "http://"+e.opts.AdminAddr+path)
}

func (e *env) post(path string) (int, string) {
	return e.do(http.MethodPost, "http://"+e.opts.AdminAddr+path)
}

func (e *env) metrics() string {
	_, body := e.do(http.MethodGet, "http://"+e.opts.MetricsAddr+"/metrics")
	return body
}

func (e *env) do(method, url string) (int, string) {
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond for up to 30 s (generous: the QEMU guests run these
// under TCG on a loaded machine; the bound only limits how long a failure
// takes to report).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscanf(strings.TrimPrefix(line, series+" "), "%g", &v)
			return v
		}
	}
	return -1
}
