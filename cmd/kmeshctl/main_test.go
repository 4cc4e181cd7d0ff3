package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"kmesh.dev/kmesh/probe"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestProbeJSON(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	code, out, stderr := runCLI(t, "probe", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rec probe.Record
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("record is not JSON: %v\n%s", err, out)
	}
	if rec.SchemaVersion != probe.SchemaVersion || rec.Mode == "" || len(rec.Checks) < 40 || rec.Kernel.Release == "" || len(rec.Features.Helpers) < 100 {
		t.Errorf("record: schema %d mode %q checks %d kernel %+v helpers %d", rec.SchemaVersion, rec.Mode, len(rec.Checks), rec.Kernel, len(rec.Features.Helpers))
	}
	// documented stable keys
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"mode", "reasons", "kernel", "checks", "features", "inputs"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("record lacks %q", k)
		}
	}
	for _, c := range raw["checks"].([]any) {
		m := c.(map[string]any)
		if m["name"] == "" || m["status"] == "" {
			t.Errorf("check without name/status: %v", m)
		}
	}
	if !strings.Contains(stderr, "mode decided") || !strings.Contains(stderr, "subsys=probe") {
		t.Errorf("log lacks the decision line: %s", stderr)
	}
}

func TestProbeTextAndForcedMode(t *testing.T) {
	code, out, _ := runCLI(t, "probe")
	if code != 0 || !strings.Contains(out, "CHECK") || !strings.Contains(out, "cgroup.attach") || !strings.Contains(out, "\nmode: ") {
		t.Fatalf("exit %d, text output:\n%s", code, out)
	}
	code, out, stderr := runCLI(t, "probe", "--mode", "enhanced")
	if strings.Contains(out, "mode: enhanced") { // a module-capable host
		if code != 0 {
			t.Errorf("forced enhanced chosen but exit %d", code)
		}
		return
	}
	if code != 3 || !strings.Contains(out, "mode: none") || !strings.Contains(out, "enhanced mode was requested but cannot run") || !strings.Contains(stderr, "no mode can run") {
		t.Errorf("forced enhanced: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
}

func TestBadUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"probe", "--output", "yaml"}, {"probe", "--mode", "dual-engine"}, {"probe", "--no-such-flag"}, {"probe", "extra"}} {
		code, _, stderr := runCLI(t, args...)
		if code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// TestMemoryLimitInCgroup runs kmeshctl probe inside a memory cgroup limited
// to 800Mi (the DaemonSet's limit) and checks the record reports it.
func TestMemoryLimitInCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	bin := filepath.Join(t.TempDir(), "kmeshctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build kmeshctl: %v\n%s", err, out)
	}
	const limit = int64(800 << 20)
	name := fmt.Sprintf("kmesh-test-%d", os.Getpid())
	var procs string
	switch cgroups.Mode() {
	case cgroups.Unified:
		parent, err := cgroup2.PidGroupPath(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		group := filepath.Join(filepath.Dir(parent), name)
		m, err := cgroup2.NewManager("/sys/fs/cgroup", group, &cgroup2.Resources{Memory: &cgroup2.Memory{Max: ptr(limit)}})
		if err != nil {
			t.Fatalf("create cgroup %s: %v", group, err)
		}
		t.Cleanup(func() { m.Delete() })
		procs = filepath.Join("/sys/fs/cgroup", group, "cgroup.procs")
	default:
		own, err := cgroup1.ParseCgroupFile("/proc/self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(own["memory"], name)
		cg, err := cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(limit)}},
			cgroup1.WithHiearchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory)))
		if err != nil {
			t.Fatalf("create memory cgroup %s: %v", path, err)
		}
		t.Cleanup(func() { cg.Delete() })
		procs = filepath.Join("/sys/fs/cgroup/memory", path, "cgroup.procs")
	}
	out, err := exec.Command("sh", "-c", `echo $$ > "$1" && exec "$2" probe --output json`, "sh", procs, bin).Output()
	if err != nil {
		t.Fatalf("probe in cgroup: %v", err)
	}
	var rec probe.Record
	if err := json.Unmarshal(out, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Inputs.Environment == nil || rec.Inputs.Environment.MemoryLimit != uint64(limit) {
		t.Fatalf("memory limit = %+v, want %d", rec.Inputs.Environment, limit)
	}
}

func ptr[T any](v T) *T { return &v }

func TestFeaturesFromProbeAndRecord(t *testing.T) {
	dir := t.TempDir()
	hdr := filepath.Join(dir, "gen", "kmesh_features.h")
	if code, _, stderr := runCLI(t, "features", "--out", hdr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	live, err := os.ReadFile(hdr)
	if err != nil || !strings.Contains(string(live), "#define KMESH_HAVE_NETNS_COOKIE 1") {
		t.Fatalf("header %q: %v", live, err)
	}
	code, rec, _ := runCLI(t, "probe", "--output", "json")
	if code != 0 {
		t.Fatal("probe failed")
	}
	recFile := filepath.Join(dir, "record.json")
	os.WriteFile(recFile, []byte(rec), 0o644)
	code, fromRec, stderr := runCLI(t, "features", "--record", recFile)
	if code != 0 || fromRec != string(live) {
		t.Errorf("header from the saved record differs (exit %d, %s):\n%s\nvs\n%s", code, stderr, fromRec, live)
	}
	if code, _, _ := runCLI(t, "features", "--record", filepath.Join(dir, "none.json")); code != 1 {
		t.Errorf("missing record: exit %d", code)
	}
}
