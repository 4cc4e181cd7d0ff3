package probe

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is a host-root tree a test builds.
type fixture struct {
	t    *testing.T
	root string
}

func newFixture(t *testing.T, release string) *fixture {
	t.Helper()
	f := &fixture{t: t, root: t.TempDir()}
	f.write("/proc/sys/kernel/osrelease", release+"\n")
	f.write("/proc/sys/kernel/version", "#1 SMP PREEMPT_DYNAMIC Debian "+release+"\n")
	f.write("/etc/os-release", "PRETTY_NAME=\"Test Linux 1\"\nID=testos\nVERSION_ID=\"1\"\n")
	return f
}

func (f *fixture) path(p string) string { return filepath.Join(f.root, p) }

func (f *fixture) write(p, content string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(f.path(p)), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(f.path(p), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) writeGz(p, content string) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(content))
	zw.Close()
	f.write(p, b.String())
}

func (f *fixture) symlink(target, p string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(f.path(p)), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(target, f.path(p)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mkdir(p string) {
	if err := os.MkdirAll(f.path(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

const ccText = "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"

func kconfigText(modules bool, extra ...string) string {
	lines := []string{"CONFIG_BPF_SYSCALL=y", "CONFIG_CGROUP_BPF=y", "CONFIG_DEBUG_INFO_BTF=y", "CONFIG_IPV6=y",
		"CONFIG_NET_SOCK_MSG=y", `CONFIG_CC_VERSION_TEXT="` + ccText + `"`, "CONFIG_SMP=y"}
	if modules {
		lines = append(lines, "CONFIG_MODULES=y", "CONFIG_MODULE_UNLOAD=y", "CONFIG_MODVERSIONS=y", "CONFIG_DEBUG_INFO_BTF_MODULES=y")
	} else {
		lines = append(lines, "# CONFIG_MODULES is not set")
	}
	return strings.Join(append(lines, extra...), "\n") + "\n"
}

// buildTree writes a complete kbuild tree for release at dir (host path).
func (f *fixture) buildTree(dir, release, config string) {
	f.write(dir+"/Makefile", "# kbuild\n")
	f.write(dir+"/include/config/auto.conf", config)
	f.write(dir+"/include/config/kernel.release", release+"\n")
	f.write(dir+"/Module.symvers", "")
	f.write(dir+"/.config", config)
	f.write(dir+"/scripts/basic/fixdep", "")
	f.write(dir+"/scripts/mod/modpost", "")
}

// fakeGCC12 answers LookPath with a script printing the kernel's compiler.
func fakeGCC12(t *testing.T) func(string) (string, error) {
	dir := t.TempDir()
	script := filepath.Join(dir, "gcc-12")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho '"+ccText+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return func(name string) (string, error) {
		if name == "gcc-12" {
			return script, nil
		}
		return "", os.ErrNotExist
	}
}

func probeFixture(t *testing.T, f *fixture, lookPath func(string) (string, error)) *Signals {
	t.Helper()
	if lookPath == nil {
		lookPath = func(string) (string, error) { return "", os.ErrNotExist }
	}
	return Probe(Config{HostRoot: f.root, BPFHeader: f.path("/usr/include/linux/bpf.h"), LookPath: lookPath})
}

func wantCheck(t *testing.T, s *Signals, name string, status Status, detailHas ...string) Check {
	t.Helper()
	c := s.Check(name)
	if c.Status != status {
		t.Errorf("%s: status %s (%s), want %s", name, c.Status, c.Detail, status)
	}
	for _, d := range detailHas {
		if !strings.Contains(c.Detail+" "+c.Fix, d) {
			t.Errorf("%s: detail %q / fix %q lacks %q", name, c.Detail, c.Fix, d)
		}
	}
	return c
}
