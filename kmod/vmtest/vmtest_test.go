package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/builder"
)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	return l
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (see kmod/README.md): %v", tool, err)
		}
	}
}

// moduleRoot is the Go module root (where go.mod is).
func moduleRoot(t *testing.T) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			t.Fatal("go.mod not found above the test directory")
		}
		d = parent
	}
}

// selectedKernels honours KMESH_VMTEST_KERNELS (comma-separated names).
func selectedKernels(t *testing.T) []Kernel {
	t.Helper()
	all := DefaultKernels()
	want := os.Getenv("KMESH_VMTEST_KERNELS")
	if want == "" {
		return all
	}
	var out []Kernel
	for _, name := range strings.Split(want, ",") {
		found := false
		for _, k := range all {
			if k.Name == strings.TrimSpace(name) {
				out = append(out, k)
				found = true
			}
		}
		if !found {
			t.Fatalf("KMESH_VMTEST_KERNELS: unknown kernel %q", name)
		}
	}
	return out
}

// TestKbuild builds kmesh.ko with the real kbuild of each kernel and checks
// that its vermagic is exactly the one of a module shipped in the kernel's
// image package (what the kernel compares at insmod).
func TestKbuild(t *testing.T) {
	requireTools(t, "make", "apt-get", "dpkg-deb", "xz")
	ctx := context.Background()
	log := testLogger(t)
	fetcher, err := NewFetcher(log)
	if err != nil {
		t.Fatal(err)
	}
	root := moduleRoot(t)
	work := t.TempDir()
	trees := map[string]*KernelTree{}
	for _, k := range DefaultKernels() {
		tree, err := fetcher.Fetch(ctx, k)
		if err != nil {
			t.Fatalf("fetch %s: %v", k.Name, err)
		}
		trees[tree.Release] = tree
	}
	type target struct{ name, headers string }
	var targets []target
	for _, k := range DefaultKernels() {
		for _, tree := range trees {
			if tree.Name == k.Name {
				targets = append(targets, target{k.Name, tree.HeadersDir()})
			}
		}
	}
	// The installed Debian linux-headers-amd64 (6.1) as on a developer machine.
	host, _ := filepath.Glob("/usr/src/linux-headers-6.1.*-amd64")
	if len(host) == 0 {
		t.Fatal("linux-headers-amd64 (6.1) is not installed under /usr/src")
	}
	targets = append(targets, target{"6.1-installed", host[len(host)-1]})

	for _, tg := range targets {
		tg := tg
		t.Run(tg.name, func(t *testing.T) {
			b, err := BuildModule(ctx, filepath.Join(root, "kmod"), tg.headers, filepath.Join(work, tg.name), log)
			if err != nil {
				t.Fatal(err)
			}
			if got := builder.VermagicRelease(b.Vermagic); got != b.Release {
				t.Fatalf("vermagic %q names %s, headers are %s", b.Vermagic, got, b.Release)
			}
			info, err := builder.ModuleInfo(b.KO)
			if err != nil {
				t.Fatal(err)
			}
			if info["name"] != ModuleName || info["license"] != "GPL" || info["version"] == "" {
				t.Fatalf("modinfo name=%q license=%q version=%q", info["name"], info["license"], info["version"])
			}
			if !strings.Contains(info["alias"], "tcp-ulp-kmesh_defer") {
				t.Fatalf("aliases %q: want tcp-ulp-kmesh_defer (autoload on setsockopt TCP_ULP)", info["alias"])
			}
			tree := trees[b.Release]
			if tree == nil {
				t.Logf("no image for %s in the cache: vermagic %q checked against the headers only", b.Release, b.Vermagic)
				return
			}
			mods, err := ResolveModules(ctx, tree, []string{"veth"})
			if err != nil {
				t.Fatal(err)
			}
			ref, err := builder.ModuleInfoFrom(bytes.NewReader(mods[len(mods)-1].Data), "veth.ko")
			if err != nil {
				t.Fatal(err)
			}
			if ref["vermagic"] != b.Vermagic {
				t.Fatalf("kmesh.ko vermagic %q, image's veth.ko %q", b.Vermagic, ref["vermagic"])
			}
			t.Logf("%s: vermagic %q (= image's veth.ko), cc %s, %v", tg.name, b.Vermagic, ccName(b.CC), b.Took.Round(100*time.Millisecond))
		})
	}
}

func TestInitramfsNewc(t *testing.T) {
	busybox, err := staticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	r := NewInitramfs()
	r.File("a/b/file.txt", 0o640, []byte("hello"))
	r.File("odd", 0o755, []byte("12345"))
	r.Symlink("bin/sh", "busybox")
	r.Dir("empty")
	cpio := filepath.Join(t.TempDir(), "x.cpio")
	fh, err := os.Create(cpio)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteTo(fh); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("%s cpio -id < %s", busybox, cpio))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -id: %v: %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a/b/file.txt")); err != nil || string(b) != "hello" {
		t.Fatalf("a/b/file.txt: %q %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "odd")); err != nil || st.Mode().Perm() != 0o755 || st.Size() != 5 {
		t.Fatalf("odd: %v %v", st, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "busybox" {
		t.Fatalf("bin/sh: %q %v", l, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "empty")); err != nil || !st.IsDir() {
		t.Fatalf("empty: %v %v", st, err)
	}
}

func TestParseConsole(t *testing.T) {
	console := "KMESH-VMTEST-BOOT 6.1.0\r\n" +
		"KMESH-VMTEST defer/v4 PASS connect ok; no accept\r\n" +
		"[    3.1] random kernel line\r\n" +
		"KMESH-VMTEST rmmod FAIL busy\r\n" +
		"KMESH-VMTEST-CMD ulptest EXIT 1\r\n" +
		"WARNING: printed by a test, not the kernel\r\n" +
		"KMESH-VMTEST-DMESG-BEGIN\r\n[    1.0] WARNING: CPU: 0 PID: 1 at net/ipv4/tcp.c:1 x\r\nKMESH-VMTEST-DMESG-END\r\n" +
		"KMESH-VMTEST-DONE\r\n"
	res := parseConsole(console)
	if !res.Done || len(res.Checks) != 2 || res.Checks[0].Detail != "connect ok; no accept" || res.Checks[1].Status != "FAIL" {
		t.Fatalf("checks %+v done %v", res.Checks, res.Done)
	}
	if len(res.Commands) != 1 || res.Commands[0].Exit != 1 {
		t.Fatalf("commands %+v", res.Commands)
	}
	if len(res.KernelProblems) != 1 || !strings.Contains(res.KernelProblems[0], "tcp.c") {
		t.Fatalf("kernel problems %q", res.KernelProblems)
	}
}

// TestParseConsoleCommands: per-command output, captured stdout (kernel
// lines inside it dropped), failed Go tests and guest timings.
func TestParseConsoleCommands(t *testing.T) {
	console := "KMESH-VMTEST-CMD-START maps\r\n" +
		"=== RUN   TestA\r\n--- FAIL: TestA (0.10s)\r\n    --- FAIL: TestA/sub (0.01s)\r\n--- PASS: TestB (0.00s)\r\nFAIL\r\n" +
		"KMESH-VMTEST-CMD maps EXIT 1 TIME 10.50 12.75\r\n" +
		"KMESH-VMTEST-CMD-START start\r\n" +
		"INFO log line on stderr\r\n" +
		"KMESH-VMTEST-OUT-BEGIN start\r\n{\"decision\": {\"mode\": \"compat\",\r\n[   5.000000] a kernel line\r\n\"reasons\": [\"x\"]}}\r\n\r\nKMESH-VMTEST-OUT-END start\r\n" +
		"KMESH-VMTEST-CMD start EXIT 0 TIME 12.80 13.00\r\n" +
		"KMESH-VMTEST-DONE\r\n"
	res := parseConsole(console)
	if len(res.Commands) != 2 {
		t.Fatalf("commands %+v", res.Commands)
	}
	maps, start := res.Commands[0], res.Commands[1]
	if maps.Exit != 1 || strings.Join(maps.FailedTests, ",") != "TestA,TestA/sub" || maps.Took != 2250*time.Millisecond ||
		!strings.Contains(maps.Output, "--- PASS: TestB") {
		t.Fatalf("maps: %+v", maps)
	}
	st, err := ParseStart(start.Stdout)
	if err != nil || st.Decision.Mode != "compat" || len(st.Decision.Reasons) != 1 {
		t.Fatalf("start stdout %q: %+v %v", start.Stdout, st, err)
	}
	if strings.Contains(start.Stdout, "kernel line") || !strings.Contains(start.Output, "INFO log line") || strings.Contains(start.Output, "decision") {
		t.Fatalf("start output %q stdout %q", start.Output, start.Stdout)
	}
}

// TestResultErrTestLog: a failed command's error carries the lines its
// failed leaf tests printed, not those of the tests that passed.
func TestResultErrTestLog(t *testing.T) {
	console := "KMESH-VMTEST-CMD-START maps\r\n" +
		"=== RUN   TestA\r\n=== RUN   TestA/sub\r\n    a_test.go:10: boom\r\n    a_test.go:11: more\r\n" +
		"=== RUN   TestA/subway\r\n    a_test.go:30: not this one\r\n" +
		"=== RUN   TestA/other\r\n    a_test.go:20: fine\r\n" +
		"--- FAIL: TestA (0.10s)\r\n    --- FAIL: TestA/sub (0.01s)\r\n    --- PASS: TestA/subway (0.01s)\r\n    --- PASS: TestA/other (0.01s)\r\nFAIL\r\n" +
		"KMESH-VMTEST-CMD maps EXIT 1 TIME 10.50 12.75\r\n" +
		"KMESH-VMTEST-DONE\r\n"
	err := parseConsole(console).Err()
	if err == nil {
		t.Fatal("no error for a failed command")
	}
	msg := err.Error()
	// the end of the message (what a CI log cut short keeps) is the failed
	// subtest's log and the reasons
	const end = "--- maps: TestA/sub ---\n    a_test.go:10: boom\n    a_test.go:11: more\n" +
		"--- vmtest  failed: command maps exited 1, want 0; failed tests: TestA TestA/sub"
	if !strings.HasSuffix(msg, end) {
		t.Errorf("error does not end with the failed subtest's log and the reasons:\n%s", msg)
	}
	if !strings.HasPrefix(msg, "vmtest  (): command maps exited 1") {
		t.Errorf("error does not start with the reasons:\n%s", msg)
	}
	i := strings.Index(msg, "--- console tail ---\n")
	after := msg[i+len("--- console tail ---\n"):]
	if j := strings.Index(after, "KMESH-VMTEST-DONE"); j < 0 {
		t.Fatalf("no console tail:\n%s", msg)
	} else if rest := after[j:]; strings.Contains(rest, "fine") || strings.Contains(rest, "not this one") ||
		strings.Contains(rest, "--- maps: TestA ---") {
		t.Errorf("error picks lines of passing tests or the parent:\n%s", msg)
	}
}

// TestTestLogLong: of a long test log, the first quarter and the end are
// kept, so that the last line (a t.Fatal) is never the one left out.
func TestTestLogLong(t *testing.T) {
	out := "=== RUN   TestA\n"
	for i := 1; i <= 100; i++ {
		out += fmt.Sprintf("    a_test.go:%d: line %d\n", i, i)
	}
	out += "--- FAIL: TestA (1.00s)\n"
	got := strings.Split(testLog(out, "TestA", 20), "\n")
	if len(got) != 21 || got[0] != "    a_test.go:1: line 1" || got[4] != "    a_test.go:5: line 5" ||
		got[5] != "... 80 lines left out ..." || got[6] != "    a_test.go:86: line 86" || got[20] != "    a_test.go:100: line 100" {
		t.Errorf("testLog of 100 lines, max 20:\n%s", strings.Join(got, "\n"))
	}
	if got := testLog(out, "TestB", 20); got != "(no output of its own)" {
		t.Errorf("testLog of a test that did not run: %q", got)
	}
}

// TestResultErrRunningTest: a command killed by its timeout names the Go
// test that was running.
func TestResultErrRunningTest(t *testing.T) {
	console := "KMESH-VMTEST-CMD-START maps\r\n" +
		"=== RUN   TestA\r\n--- PASS: TestA (0.10s)\r\n=== RUN   TestB\r\n=== RUN   TestB/one\r\n    --- PASS: TestB/one (0.01s)\r\n=== RUN   TestB/two\r\n" +
		"KMESH-VMTEST-CMD maps EXIT 137 TIME 10.50 310.75\r\n" +
		"KMESH-VMTEST-DONE\r\n"
	err := parseConsole(console).Err()
	if err == nil || !strings.Contains(err.Error(), "command maps exited 137, want 0, while test TestB/two ran") {
		t.Fatalf("error %v, want it to name TestB/two", err)
	}
}

// TestInitScriptHostUsr: the guest's /init with the host's /usr: the 9p
// modules and mounts come before the merged-/usr links, PATH puts the
// host's programs first, commands get their directory, environment,
// timeout and capture.
func TestInitScriptHostUsr(t *testing.T) {
	cfg := Config{Tree: &KernelTree{Release: "6.1.0-57-amd64"}, HostUsr: true, KernelTree: true}
	g := &guestPlan{
		early:  []Command{{Name: "insmod-9p", Args: []string{"insmod", "/kmesh/modules/9p.ko"}}},
		shares: []Share{{Tag: "hostusr", Host: "/usr", Guest: "/usr"}},
		setup: []Command{{Name: "mount-hostusr", Args: []string{"mount", "-t", "9p", "hostusr", "/usr"}},
			{Name: "merged-usr", Args: []string{"sh", "-c", mergedUsrScript}}},
		cmds: []Command{{Name: "t", Args: []string{"/kmesh/bin/x.test", "-test.v"}, Dir: "/work/main/daemon", Env: []string{"CLANG=clang-19"},
			Timeout: 90 * time.Second, Capture: true}},
	}
	s := initScript(cfg, g)
	order := []string{"#!/busybox/sh", "insmod-9p", "mount-hostusr", "merged-usr",
		"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/busybox/bin",
		"(cd '/work/main/daemon' && exec env 'CLANG=clang-19' timeout -s KILL 90 '/kmesh/bin/x.test' '-test.v') </dev/null >/.vmtest/t.out",
		"KMESH-VMTEST-OUT-BEGIN t", "KMESH-VMTEST-CMD t EXIT $rc TIME $t0 $t1", "poweroff -f"}
	at := 0
	for _, want := range order {
		i := strings.Index(s[at:], want)
		if i < 0 {
			t.Fatalf("init script lacks %q after offset %d:\n%s", want, at, s)
		}
		at += i + len(want)
	}
}

// TestBootTimeout: a guest that does not power off in time is killed by PID
// and reported as ErrBootTimeout with its console so far.
func TestBootTimeout(t *testing.T) {
	requireTools(t, "qemu-system-x86_64")
	fetcher, err := NewFetcher(testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := fetcher.Fetch(context.Background(), DefaultKernels()[1])
	if err != nil {
		t.Fatal(err)
	}
	r := NewInitramfs()
	busybox, err := staticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.HostFile("bin/busybox", busybox); err != nil {
		t.Fatal(err)
	}
	r.Symlink("bin/sh", "busybox")
	r.File("init", 0o755, []byte("#!/bin/sh\necho KMESH-VMTEST-HANG\nwhile :; do /bin/busybox sleep 1; done\n"))
	initrd := filepath.Join(t.TempDir(), "hang.cpio")
	fh, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteTo(fh); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	start := time.Now()
	console, err := Boot{Kernel: tree.Vmlinuz(), Initrd: initrd, Timeout: 20 * time.Second}.Run(context.Background())
	if !errors.Is(err, ErrBootTimeout) {
		t.Fatalf("err %v, want ErrBootTimeout", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("killing the guest took until %v", took)
	}
	if !strings.Contains(console, "KMESH-VMTEST-HANG") {
		t.Fatalf("console lacks the guest's output:\n%s", tail(console, 2000))
	}
}

// TestSummaryCommandNotRun: a command the guest never reached (it panicked
// first) is reported as such, not as "exit 0 (want 0)".
func TestSummaryCommandNotRun(t *testing.T) {
	r := &Result{Kernel: "6.12", Commands: []CommandResult{
		{Name: "ran", Ran: true, Exit: 0, Want: 0, Took: time.Second},
		{Name: "never", Want: 0},
	}}
	s := r.Summary()
	if !strings.Contains(s, "ran                        exit 0 (want 0) 1s") ||
		!strings.Contains(s, "never                      did not run (want exit 0)") || strings.Contains(s, "never                      exit") {
		t.Errorf("summary:\n%s", s)
	}
}
