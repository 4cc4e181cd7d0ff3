package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/probe"
)

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"--mode", "compat", "-cache-dir=/c", "--config", "/etc/k.yaml", "--dry-run",
		"--enroll-netns=a", "--enroll-netns", "b", "--bpf-fs-path", "/x/bpf", "--admin-addr=127.0.0.1:1", "--output=json"})
	if err != nil {
		t.Fatal(err)
	}
	if o.mode != "compat" || o.cacheDir != "/c" || !o.dryRun || o.output != "json" || o.bpffsPath != "/x/bpf" {
		t.Errorf("own flags: %+v", o)
	}
	// unknown flags pass through in order, values included; shared ones are passed on too
	want := []string{"--config", "/etc/k.yaml", "--enroll-netns=a", "--enroll-netns", "b", "--bpf-fs-path=/x/bpf", "--admin-addr=127.0.0.1:1"}
	if !slices.Equal(o.daemonArgs, want) {
		t.Errorf("daemon args = %q, want %q", o.daemonArgs, want)
	}
	for _, bad := range [][]string{{"--mode"}, {"--output", "yaml"}, {"--bpf-dir", "/x"}, {"--dry-run=maybe"}} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseArgs([]string{"--help"}); err != errHelp {
		t.Errorf("--help: %v", err)
	}
}

type env struct {
	dir                                 string
	cache, state, bpffs, cgroup2, admin string
}

func newEnv(t *testing.T) *env {
	d := t.TempDir()
	e := &env{dir: d, cache: filepath.Join(d, "cache"), state: filepath.Join(d, "run"), bpffs: filepath.Join(d, "bpffs"), cgroup2: filepath.Join(d, "cg")}
	t.Cleanup(func() {
		if out, err := exec.Command("go", "run", "kmesh.dev/kmesh/cmd/kmesh-daemon", "uninstall", "--bpf-fs-path", e.bpffs, "--cgroup2-path", e.cgroup2).CombinedOutput(); err != nil {
			t.Errorf("uninstall: %v %s", err, out)
		}
	})
	return e
}

func (e *env) args(extra ...string) []string {
	return append([]string{"--cache-dir", e.cache, "--state-dir", e.state, "--src-dir", "../..", "--bpf-fs-path", e.bpffs, "--cgroup2-path", e.cgroup2}, extra...)
}

func TestDryRunJSON(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	e := newEnv(t)
	var out, errb bytes.Buffer
	noExec := func(string, []string, []string) error { t.Fatal("dry run must not exec"); return nil }
	link := filepath.Join(t.TempDir(), "out", "bpf")
	if code := run(context.Background(), e.args("--dry-run", "--output", "json", "--objects-link", link), &out, &errb, noExec); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res struct {
		Decision struct {
			Mode    string   `json:"mode"`
			Reasons []string `json:"reasons"`
		} `json:"decision"`
		Build struct {
			CacheHit   bool   `json:"cache_hit"`
			ObjectsDir string `json:"objects_dir"`
			Verify     []struct {
				OK bool `json:"ok"`
			} `json:"verify"`
		} `json:"build"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output is not the documented JSON: %v\n%s", err, out.String())
	}
	if res.Decision.Mode != "compat" || res.Build.CacheHit || len(res.Build.Verify) == 0 || !res.Build.Verify[0].OK {
		t.Fatalf("first dry run: %+v", res)
	}
	if !strings.Contains(strings.Join(res.Decision.Reasons, "\n"), "CONFIG_MODULES is not set") {
		t.Errorf("reasons: %q", res.Decision.Reasons)
	}
	for _, p := range []string{"mount", "probe", "build"} {
		if !strings.Contains(errb.String(), "phase="+p) {
			t.Errorf("log lacks phase %s:\n%s", p, errb.String())
		}
	}
	if _, err := os.Stat(filepath.Join(e.state, "decision.json")); err != nil {
		t.Errorf("decision record: %v", err)
	}
	// --objects-link: make bpf's out/bpf points at the verified objects
	checkLink := func(which string) {
		t.Helper()
		if target, err := os.Readlink(link); err != nil || target != mustAbs(t, res.Build.ObjectsDir) {
			t.Errorf("%s: objects link: %q %v, want %s", which, target, err, res.Build.ObjectsDir)
		}
		if _, err := os.Stat(filepath.Join(link, "connect.o")); err != nil {
			t.Errorf("%s: objects link: %v", which, err)
		}
		if left, _ := filepath.Glob(link + ".tmp-*"); len(left) > 0 {
			t.Errorf("%s: temporary links left behind: %v", which, left)
		}
	}
	checkLink("first dry run")
	out.Reset()
	if code := run(context.Background(), e.args("--dry-run", "--output=json", "--objects-link="+link), &out, &errb, noExec); code != 0 {
		t.Fatal("second dry run failed (an earlier link is replaced)")
	}
	json.Unmarshal(out.Bytes(), &res)
	if !res.Build.CacheHit {
		t.Error("second dry run was not a cache hit")
	}
	checkLink("second dry run")
	// anything but a symlink at the link's path is left alone, and said so
	notLink := filepath.Join(t.TempDir(), "bpf")
	if err := os.WriteFile(notLink, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := run(context.Background(), e.args("--dry-run", "--objects-link", notLink), &out, &errb, noExec); code != 1 {
		t.Errorf("--objects-link onto a regular file: exit %d, want 1", code)
	}
	if b, _ := os.ReadFile(notLink); string(b) != "mine" || !strings.Contains(errb.String(), "exists and is not a symlink") {
		t.Errorf("--objects-link onto a regular file: file %q, log:\n%s", b, errb.String())
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestNoModeExitsNonZero(t *testing.T) {
	e := newEnv(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), e.args("--mode", "enhanced", "--dry-run"), &out, &errb, nil)
	if code == 0 || !strings.Contains(errb.String(), "no mode can run") || !strings.Contains(out.String(), "mode: none") {
		t.Errorf("forced enhanced on this host: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
}

// TestHandOffToDaemon runs the real binaries: kmesh-start builds, then execs
// kmesh-daemon, which becomes ready with the flags kmesh-start gave it.
func TestHandOffToDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	e := newEnv(t)
	bin := t.TempDir()
	for _, p := range []string{"kmesh-start", "kmesh-daemon"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, p), "kmesh.dev/kmesh/cmd/"+p).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v %s", p, err, out)
		}
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	admin := l.Addr().String()
	l.Close()
	cmd := exec.Command(filepath.Join(bin, "kmesh-start"), e.args("--admin-addr", admin, "--metrics-addr", "127.0.0.1:0")...)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	var status struct {
		Mode     string          `json:"mode"`
		Ready    bool            `json:"ready"`
		Decision json.RawMessage `json:"decision"`
		Build    struct {
			CacheKey string `json:"cache_key"`
		} `json:"build"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/status")
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&status)
			resp.Body.Close()
			if status.Ready {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status.Mode != "compat" || len(status.Decision) == 0 || status.Build.CacheKey == "" {
		t.Errorf("status after hand-off: mode %q decision %d bytes build %+v", status.Mode, len(status.Decision), status.Build)
	}
	// the daemon replaced kmesh-start: same PID
	if b, _ := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/comm"); strings.TrimSpace(string(b)) != "kmesh-daemon" {
		t.Errorf("PID %d runs %q, want kmesh-daemon (exec)", cmd.Process.Pid, b)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// On this kernel (no module support) an enhanced start builds kmesh.ko,
// the kernel refuses it, and the start falls back to compat saying why.
func TestModuleRefusedFallsBackToCompat(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	trees, _ := filepath.Glob("/usr/src/linux-headers-*-amd64")
	if len(trees) == 0 {
		t.Fatal("make deps installs linux-headers-amd64")
	}
	b, _ := os.ReadFile(filepath.Join(trees[0], "include/generated/utsrelease.h"))
	rel := strings.Trim(strings.Fields(string(b))[2], `"`)
	rec, err := probe.Decide(probe.Probe(probe.Config{Live: true}), probe.ModeAuto, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rec.Mode, rec.Kernel.Release = probe.ModeEnhanced, rel
	rec.Inputs.BuildTree = &probe.BuildTree{Path: trees[0], HostPath: trees[0], Release: rel, Compiler: "gcc-12"}
	e := newEnv(t)
	o := defaults()
	o.srcDir, o.cacheDir = "../..", e.cache
	rep, err := buildFor(context.Background(), o, rec, logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != probe.ModeCompat || rep.ModulePath != "" || len(rep.Fallbacks) == 0 ||
		!strings.Contains(rep.Fallbacks[0], "kmesh.ko could not be loaded") || !strings.Contains(rep.Fallbacks[0], "no module support") {
		t.Fatalf("mode %s module %q fallbacks %q", rep.Mode, rep.ModulePath, rep.Fallbacks)
	}
	if rep.Module == nil || rep.Module.Srcversion == "" || rep.Module.Error == "" {
		t.Errorf("the report keeps the module's build and the refusal: %+v", rep.Module)
	}
}
