package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func goBuild(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestEnrollThroughTheDaemon runs the real binaries: kmesh-start probes,
// builds and execs kmesh-daemon, and kmeshctl enrolls, inspects and
// unenrolls a namespace through the daemon's admin API.
func TestEnrollThroughTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	tmp := t.TempDir()
	start := goBuild(t, tmp, "kmesh.dev/kmesh/cmd/kmesh-start")
	daemonBin := goBuild(t, tmp, "kmesh.dev/kmesh/cmd/kmesh-daemon")
	ns := fmt.Sprintf("kctl-%d", os.Getpid())
	if b, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, b)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	admin := l.Addr().String()
	l.Close()
	paths := []string{"--bpf-fs-path", filepath.Join(tmp, "bpffs"), "--cgroup2-path", filepath.Join(tmp, "cg")}
	d := exec.Command(start, append([]string{"--src-dir", "../..", "--cache-dir", filepath.Join(tmp, "cache"), "--state-dir", filepath.Join(tmp, "run"),
		"--admin-addr", admin, "--metrics-addr", "127.0.0.1:0"}, paths...)...)
	logf, _ := os.Create(filepath.Join(tmp, "daemon.log"))
	d.Stdout, d.Stderr = logf, logf
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Process.Signal(os.Interrupt)
		d.Wait()
		if b, err := exec.Command(daemonBin, append([]string{"uninstall"}, paths...)...).CombinedOutput(); err != nil {
			t.Errorf("uninstall: %v %s", err, b)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _, _ := runCLI(t, "status", "--admin-addr", admin); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(tmp, "daemon.log"))
			t.Fatalf("daemon did not come up:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if code, out, stderr := runCLI(t, "enroll", "--netns", ns, "--admin-addr", admin); code != 0 || !strings.Contains(out, `"cookie"`) {
		t.Fatalf("enroll: %d %s %s", code, out, stderr)
	}
	var st struct {
		Enrolled []struct {
			Ref    string `json:"ref"`
			Cookie uint64 `json:"cookie"`
		} `json:"enrolled_netns"`
		Mode string `json:"mode"`
	}
	_, out, _ := runCLI(t, "status", "--admin-addr", admin)
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Mode != "compat" || len(st.Enrolled) != 1 || st.Enrolled[0].Ref != ns {
		t.Fatalf("status after enroll: %+v %v", st, err)
	}
	if code, _, stderr := runCLI(t, "unenroll", "--netns", ns, "--admin-addr", admin); code != 0 {
		t.Fatalf("unenroll: %s", stderr)
	}
	_, out, _ = runCLI(t, "status", "--admin-addr", admin)
	json.Unmarshal([]byte(out), &st)
	if len(st.Enrolled) != 0 {
		t.Errorf("still enrolled: %+v", st.Enrolled)
	}
	if code, _, stderr := runCLI(t, "enroll", "--netns", "kmesh-absent-ns", "--admin-addr", admin); code != 1 || !strings.Contains(stderr, "not found") {
		t.Errorf("enroll of a missing namespace: %d %q", code, stderr)
	}
	if code, _, _ := runCLI(t, "enroll", "--admin-addr", admin); code != 2 {
		t.Errorf("enroll without --netns: exit %d", code)
	}

	// a relative path is made absolute here (the daemon's working
	// directory is not ours), and --cookie releases by cookie
	wd, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(wd) })
	if err := os.Chdir("/run"); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "enroll", "--netns", "netns/"+ns, "--admin-addr", admin)
	var en struct {
		Ref    string `json:"ref"`
		Cookie uint64 `json:"cookie"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &en) != nil || en.Ref != "/run/netns/"+ns {
		t.Fatalf("enroll by a relative path: %d %s %s, want ref /run/netns/%s", code, out, stderr, ns)
	}
	if code, out, stderr := runCLI(t, "unenroll", "--cookie", fmt.Sprint(en.Cookie), "--admin-addr", admin); code != 0 || !strings.Contains(out, `"was_enrolled": true`) {
		t.Errorf("unenroll --cookie: %d %s %s", code, out, stderr)
	}
	if code, _, _ := runCLI(t, "unenroll", "--cookie", "1", "--netns", ns, "--admin-addr", admin); code != 2 {
		t.Errorf("unenroll with both --cookie and --netns: exit %d, want 2", code)
	}
}
