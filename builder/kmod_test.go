package builder

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/probe"
)

// debianTree returns the installed Debian header tree and its release.
func debianTree(t *testing.T) (string, string) {
	t.Helper()
	m, _ := filepath.Glob("/usr/src/linux-headers-*-amd64")
	if len(m) == 0 {
		t.Fatal("no /usr/src/linux-headers-*-amd64: make deps installs linux-headers-amd64")
	}
	b, err := os.ReadFile(filepath.Join(m[0], "include/generated/utsrelease.h"))
	if err != nil {
		t.Fatal(err)
	}
	return m[0], regexp.MustCompile(`"([^"]+)"`).FindStringSubmatch(string(b))[1]
}

func TestBuildModuleAgainstDebianHeaders(t *testing.T) {
	tree, rel := debianTree(t)
	r, err := BuildModule(context.Background(), ModuleOptions{SrcDir: "../kmod", BuildTree: tree, OutDir: t.TempDir(), Release: rel, Compiler: "gcc-12", Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Vermagic, rel+" ") || r.Srcversion == "" || r.BuildMS <= 0 {
		t.Fatalf("report: %+v", r)
	}
	info, err := ModuleInfo(r.Path)
	if err != nil || info["name"] != ModuleName || info["license"] == "" {
		t.Fatalf("modinfo: %v %v", info, err)
	}
	// the sources stay clean: kbuild ran in a copy
	if m, _ := filepath.Glob("../kmod/*.o"); len(m) > 0 {
		t.Errorf("build artefacts in the source tree: %v", m)
	}

	// a tree that belongs to another kernel than the running one
	_, err = BuildModule(context.Background(), ModuleOptions{SrcDir: "../kmod", BuildTree: tree, OutDir: t.TempDir(), Release: "6.18.0-other", Compiler: "gcc-12"})
	if !errors.Is(err, ErrVermagic) || !strings.Contains(err.Error(), "6.18.0-other") {
		t.Errorf("vermagic mismatch: %v", err)
	}
}

func TestBuildModuleErrors(t *testing.T) {
	tree, rel := debianTree(t)
	src := t.TempDir()
	if out, err := exec.Command("sh", "-c", "cp ../kmod/*.c ../kmod/*.h ../kmod/Kbuild "+src).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	f, _ := os.OpenFile(filepath.Join(src, "kmesh_main.c"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("\nint this is not C;\n")
	f.Close()
	_, err := BuildModule(context.Background(), ModuleOptions{SrcDir: src, BuildTree: tree, OutDir: t.TempDir(), Release: rel, Compiler: "gcc-12"})
	if !errors.Is(err, ErrKbuild) || !strings.Contains(err.Error(), "kmesh_main.c") {
		t.Errorf("broken source: %v", err)
	}
	_, err = BuildModule(context.Background(), ModuleOptions{SrcDir: "../kmod", BuildTree: filepath.Join(t.TempDir(), "none"), OutDir: t.TempDir(), Release: rel})
	if err == nil || !strings.Contains(err.Error(), "install the kernel headers") {
		t.Errorf("missing tree: %v", err)
	}
}

// On this machine's kernel (CONFIG_MODULES off) the kernel itself refuses:
// the error must say so.
func TestLoadModuleRefusedWithoutModuleSupport(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/proc/modules"); err == nil {
		t.Fatal("this test expects a kernel without module support (the CI machines'); the QEMU guests test loading")
	}
	tree, rel := debianTree(t)
	r, err := BuildModule(context.Background(), ModuleOptions{SrcDir: "../kmod", BuildTree: tree, OutDir: t.TempDir(), Release: rel, Compiler: "gcc-12"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = LoadModule(r.Path)
	if !errors.Is(err, ErrModuleRefused) || !strings.Contains(err.Error(), "no module support") {
		t.Errorf("load on a kernel without modules: %v", err)
	}
}

// An enhanced build adds kmesh.ko to the cache entry; one whose tree does
// not match the running kernel falls back to compat with the reason.
func TestBuildEnhancedWithModule(t *testing.T) {
	requireRoot(t)
	rec := enhancedRecord(t)
	rel := rec.Kernel.Release
	cfg := Config{Record: rec, SrcDir: "..", CacheDir: t.TempDir(), Log: quiet()}
	r, err := Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != probe.ModeEnhanced || r.Module == nil || !strings.HasPrefix(r.Module.Vermagic, rel+" ") {
		t.Fatalf("enhanced build: mode %s module %+v fallbacks %q", r.Mode, r.Module, r.Fallbacks)
	}
	if info, err := ModuleInfo(r.ModulePath); err != nil || info["srcversion"] != r.Module.Srcversion {
		t.Fatalf("cached module %s: %v %v", r.ModulePath, info, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(r.ObjectsDir), "kbuild")); !os.IsNotExist(err) {
		t.Error("kbuild intermediates kept in the cache entry")
	}
	hit, err := Build(context.Background(), cfg)
	if err != nil || !hit.CacheHit || hit.ModulePath != r.ModulePath {
		t.Fatalf("second enhanced build: %+v %v", hit, err)
	}

	other := *rec
	other.Kernel.Release = "6.18.0-another"
	r, err = Build(context.Background(), Config{Record: &other, SrcDir: "..", CacheDir: t.TempDir(), Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != probe.ModeCompat || r.ModulePath != "" || len(r.Fallbacks) != 1 || !strings.Contains(r.Fallbacks[0], "vermagic") {
		t.Fatalf("mismatched tree: mode %s module %q fallbacks %q", r.Mode, r.ModulePath, r.Fallbacks)
	}
}

// enhancedRecord is this host's record made enhanced as on a 6.1 node whose
// build tree is the installed Debian headers (the running kernel's, there).
func enhancedRecord(t *testing.T) *probe.Record {
	tree, rel := debianTree(t)
	rec := hostRecord(t)
	rec.Mode = probe.ModeEnhanced
	rec.Kernel.Release = rel
	rec.Inputs.BuildTree = &probe.BuildTree{Path: tree, HostPath: tree, Release: rel, Compiler: "gcc-12"}
	return rec
}

// kbuild must not need to write into the host's trees: the DaemonSet may
// mount /lib/modules and /usr/src read-only. The test re-runs itself in a
// private mount namespace where both are remounted read-only (nothing
// outside that process sees it) and builds there.
func TestBuildModuleReadOnlyTrees(t *testing.T) {
	requireRoot(t)
	if os.Getenv("KMESH_RO_TREES_CHILD") == "1" {
		for _, d := range []string{"/usr/src", "/lib/modules"} {
			if err := unix.Mount(d, d, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("", d, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile("/usr/src/kmesh-ro-probe", nil, 0o644); err == nil {
			t.Fatal("/usr/src is writable in the child")
		}
		tree, rel := debianTree(t)
		r, err := BuildModule(context.Background(), ModuleOptions{SrcDir: "../kmod", BuildTree: tree, OutDir: t.TempDir(), Release: rel, Compiler: "gcc-12"})
		if err != nil {
			t.Fatalf("build against read-only trees: %v", err)
		}
		if r.Srcversion == "" {
			t.Fatal("no module")
		}
		return
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run", "^TestBuildModuleReadOnlyTrees$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KMESH_RO_TREES_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	} else if !strings.Contains(string(out), "PASS") {
		t.Fatalf("child did not pass:\n%s", out)
	}
}
