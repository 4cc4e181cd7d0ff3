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
