package probe

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestKernelAndDistroFromHostRoot(t *testing.T) {
	f := newFixture(t, "6.1.0-99-amd64")
	s := probeFixture(t, f, nil)
	if s.Kernel.Release != "6.1.0-99-amd64" || !strings.Contains(s.Kernel.Version, "Debian") {
		t.Errorf("kernel = %+v", s.Kernel)
	}
	if s.Kernel.Distro != "Test Linux 1" || s.Kernel.DistroID != "testos" {
		t.Errorf("distro = %q id %q", s.Kernel.Distro, s.Kernel.DistroID)
	}
}

func TestDistroThroughHostPID1(t *testing.T) {
	f := newFixture(t, "5.10.0-1")
	os.Remove(f.path("/etc/os-release"))
	f.write("/proc/1/root/etc/os-release", "PRETTY_NAME=\"openEuler 23.03\"\nID=openEuler\n")
	s := probeFixture(t, f, nil)
	wantCheck(t, s, "kernel.distro", Supported, "openEuler 23.03", "/proc/1/root/etc/os-release")
}

func TestKConfigSources(t *testing.T) {
	for _, src := range []string{"/proc/config.gz", "/boot/config-%s", "/lib/modules/%s/config"} {
		t.Run(src, func(t *testing.T) {
			f := newFixture(t, "6.1.0-9")
			p := strings.ReplaceAll(src, "%s", "6.1.0-9")
			if strings.HasSuffix(p, ".gz") {
				f.writeGz(p, kconfigText(true))
			} else {
				f.write(p, kconfigText(true))
			}
			s := probeFixture(t, f, nil)
			wantCheck(t, s, "kconfig.source", Supported, p)
			wantCheck(t, s, "kconfig.modules", Supported)
		})
	}
	t.Run("none", func(t *testing.T) {
		f := newFixture(t, "6.1.0-9")
		s := probeFixture(t, f, nil)
		wantCheck(t, s, "kconfig.source", Inconclusive, "no readable kernel config", "/boot")
		wantCheck(t, s, "kconfig.modules", Inconclusive)
	})
	t.Run("garbage", func(t *testing.T) {
		f := newFixture(t, "6.1.0-9")
		f.write("/proc/config.gz", "not gzip at all")
		f.write("/boot/config-6.1.0-9", "\x00\x01garbage")
		s := probeFixture(t, f, nil)
		wantCheck(t, s, "kconfig.source", Inconclusive, "gzip", "no CONFIG_ options")
	})
}

func TestNoModuleSupport(t *testing.T) {
	f := newFixture(t, "6.18.0-nomod")
	f.writeGz("/proc/config.gz", kconfigText(false))
	s := probeFixture(t, f, nil)
	wantCheck(t, s, "kconfig.modules", Unsupported, "CONFIG_MODULES is not set", "CONFIG_MODULES=y")
	wantCheck(t, s, "module.modules_disabled", Unsupported, "no module support")
	wantCheck(t, s, "module.sig_enforce", Unsupported)
}

func TestModuleLoadingPolicy(t *testing.T) {
	base := func(t *testing.T) *fixture {
		f := newFixture(t, "6.1.0-9")
		f.writeGz("/proc/config.gz", kconfigText(true))
		f.write("/proc/sys/kernel/modules_disabled", "0\n")
		f.write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
		f.write("/sys/module/module/parameters/sig_enforce", "N\n")
		return f
	}
	t.Run("permissive", func(t *testing.T) {
		s := probeFixture(t, base(t), nil)
		wantCheck(t, s, "module.modules_disabled", Supported)
		wantCheck(t, s, "module.lockdown", Supported, "none")
		wantCheck(t, s, "module.sig_enforce", Supported)
	})
	t.Run("disabled", func(t *testing.T) {
		f := base(t)
		f.write("/proc/sys/kernel/modules_disabled", "1\n")
		wantCheck(t, probeFixture(t, f, nil), "module.modules_disabled", Unsupported, "= 1", "reboot")
	})
	t.Run("lockdown", func(t *testing.T) {
		f := base(t)
		f.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
		wantCheck(t, probeFixture(t, f, nil), "module.lockdown", Unsupported, "lockdown=integrity", "sign kmesh.ko")
	})
	t.Run("sig_enforce", func(t *testing.T) {
		f := base(t)
		f.write("/sys/module/module/parameters/sig_enforce", "Y\n")
		wantCheck(t, probeFixture(t, f, nil), "module.sig_enforce", Unsupported, "= Y")
	})
	t.Run("sig_force_config", func(t *testing.T) {
		f := base(t)
		f.writeGz("/proc/config.gz", kconfigText(true, "CONFIG_MODULE_SIG_FORCE=y"))
		wantCheck(t, probeFixture(t, f, nil), "module.sig_enforce", Unsupported, "CONFIG_MODULE_SIG_FORCE=y", "unsigned")
	})
}

func TestBuildTree(t *testing.T) {
	const rel = "6.1.0-9-amd64"
	cfg := kconfigText(true)
	setup := func(t *testing.T) *fixture {
		f := newFixture(t, rel)
		f.write("/boot/config-"+rel, cfg)
		return f
	}
	t.Run("absolute symlink into /usr/src", func(t *testing.T) {
		f := setup(t)
		f.buildTree("/usr/src/linux-headers-"+rel, rel, cfg)
		f.symlink("/usr/src/linux-headers-"+rel, "/lib/modules/"+rel+"/build")
		s := probeFixture(t, f, fakeGCC12(t))
		wantCheck(t, s, "build_tree.present", Supported, "/usr/src/linux-headers-"+rel)
		wantCheck(t, s, "build_tree.kbuild", Supported)
		wantCheck(t, s, "build_tree.release_match", Supported)
		wantCheck(t, s, "build_tree.config_match", Supported, "identical")
		wantCheck(t, s, "build_tree.compiler", Supported, "gcc-12")
		if s.BuildTree.HostPath != "/usr/src/linux-headers-"+rel || !strings.HasPrefix(s.BuildTree.Path, f.root) {
			t.Errorf("build tree = %+v", s.BuildTree)
		}
	})
	t.Run("relative symlink", func(t *testing.T) {
		f := setup(t)
		f.buildTree("/usr/src/kernels/"+rel, rel, cfg)
		f.symlink("../../../usr/src/kernels/"+rel, "/lib/modules/"+rel+"/build")
		s := probeFixture(t, f, fakeGCC12(t))
		wantCheck(t, s, "build_tree.present", Supported, "/usr/src/kernels/"+rel)
	})
	t.Run("symlink escaping the root stays inside", func(t *testing.T) {
		f := setup(t)
		f.symlink("../../../../../../../../../usr/src/x", "/lib/modules/"+rel+"/build")
		wantCheck(t, probeFixture(t, f, nil), "build_tree.present", Unsupported, "dangling", "linux-headers-"+rel, "kernel-devel")
	})
	t.Run("dangling: /usr/src not mapped", func(t *testing.T) {
		f := setup(t)
		f.symlink("/usr/src/linux-headers-"+rel, "/lib/modules/"+rel+"/build")
		c := wantCheck(t, probeFixture(t, f, nil), "build_tree.present", Unsupported, "dangling", "/usr/src/linux-headers-"+rel, "/usr/src")
		if strings.Contains(c.Detail, f.root) {
			t.Errorf("detail leaks the container path: %q", c.Detail)
		}
	})
	t.Run("missing", func(t *testing.T) {
		f := setup(t)
		wantCheck(t, probeFixture(t, f, nil), "build_tree.present", Unsupported, "does not exist", "linux-headers-"+rel)
	})
	t.Run("loop", func(t *testing.T) {
		f := setup(t)
		f.symlink("/lib/modules/"+rel+"/loop2", "/lib/modules/"+rel+"/build")
		f.symlink("/lib/modules/"+rel+"/build", "/lib/modules/"+rel+"/loop2")
		c := probeFixture(t, f, nil).Check("build_tree.present")
		if c.OK() || !strings.Contains(c.Detail, "/lib/modules/"+rel+"/build") {
			t.Errorf("loop: %+v", c)
		}
	})
	t.Run("headers of another kernel", func(t *testing.T) {
		f := setup(t)
		f.buildTree("/usr/src/linux-headers-6.1.0-8-amd64", "6.1.0-8-amd64", cfg)
		f.symlink("/usr/src/linux-headers-6.1.0-8-amd64", "/lib/modules/"+rel+"/build")
		wantCheck(t, probeFixture(t, f, fakeGCC12(t)), "build_tree.release_match", Unsupported, "6.1.0-8-amd64", rel)
	})
	t.Run("config differs", func(t *testing.T) {
		f := setup(t)
		f.buildTree("/usr/src/h", rel, kconfigText(true, "CONFIG_RANDSTRUCT=y"))
		f.symlink("/usr/src/h", "/lib/modules/"+rel+"/build")
		wantCheck(t, probeFixture(t, f, fakeGCC12(t)), "build_tree.config_match", Unsupported, "CONFIG_RANDSTRUCT tree=y kernel=n")
	})
	t.Run("version string differs", func(t *testing.T) {
		f := setup(t)
		f.buildTree("/usr/src/h", rel, cfg)
		f.write("/usr/src/h/include/generated/compile.h", `#define UTS_VERSION "#2 SMP other"`+"\n")
		f.symlink("/usr/src/h", "/lib/modules/"+rel+"/build")
		wantCheck(t, probeFixture(t, f, fakeGCC12(t)), "build_tree.version_match", Unsupported, "#2 SMP other")
	})
	t.Run("no matching compiler", func(t *testing.T) {
		f := setup(t)
		f.buildTree("/usr/src/h", rel, cfg)
		f.symlink("/usr/src/h", "/lib/modules/"+rel+"/build")
		wantCheck(t, probeFixture(t, f, nil), "build_tree.compiler", Unsupported, ccText, "gcc-12")
	})
	t.Run("debian kbuild links not mapped", func(t *testing.T) {
		f := setup(t)
		d := "/usr/src/linux-headers-" + rel
		f.buildTree(d, rel, cfg)
		os.RemoveAll(f.path(d + "/scripts"))
		f.symlink("../../lib/linux-kbuild-6.1/scripts", d+"/scripts")
		f.symlink(d, "/lib/modules/"+rel+"/build")
		c := wantCheck(t, probeFixture(t, f, fakeGCC12(t)), "build_tree.kbuild", Unsupported, "/usr/lib/linux-kbuild-6.1", "mount the host's /usr/lib/linux-kbuild-6.1")
		wantFix(t, c, "docker run -v /usr/lib/linux-kbuild-6.1:"+f.path("/usr/lib/linux-kbuild-6.1")+":ro",
			"host's /usr/src at /host/usr/src (volume ko-build-path)", "volume host-usr-lib (hostPath /usr/lib mounted read-only at /host/usr/lib)", "install linux-kbuild-6.1")
	})

	// kmesh's image and DaemonSet: /usr/src links to /host/usr/src (volume
	// ko-build-path), the host's /usr/lib is at /host/usr/lib (volume
	// host-usr-lib): Debian's relative links from the tree land there.
	daemonSet := func(t *testing.T) (*fixture, string) {
		f := setup(t)
		d := "/host/usr/src/linux-headers-" + rel
		f.buildTree(d, rel, cfg)
		for _, l := range []string{"scripts", "tools"} {
			os.RemoveAll(f.path(d + "/" + l))
			f.symlink("../../lib/linux-kbuild-6.1/"+l, d+"/"+l)
		}
		f.symlink("../lib/linux-kbuild-6.1", "/host/usr/src/linux-kbuild-6.1")
		f.symlink("/host/usr/src", "/usr/src")
		f.mkdir("/host/usr/lib") // empty in the image
		f.symlink("/usr/src/linux-headers-"+rel, "/lib/modules/"+rel+"/build")
		return f, d
	}
	kbuildTree := func(f *fixture, dir string) {
		f.write(dir+"/scripts/basic/fixdep", "")
		f.write(dir+"/scripts/mod/modpost", "")
		f.mkdir(dir + "/tools")
	}
	t.Run("daemonset: host-usr-lib mounted", func(t *testing.T) {
		f, d := daemonSet(t)
		kbuildTree(f, "/host/usr/lib/linux-kbuild-6.1")
		f.write("/host/usr/lib/os-release", "ID=debian\n")
		s := probeFixture(t, f, fakeGCC12(t))
		wantCheck(t, s, "build_tree.present", Supported, d)
		wantCheck(t, s, "build_tree.kbuild", Supported)
		if s.BuildTree.HostPath != d || s.BuildTree.Path != f.path(d) {
			t.Errorf("build tree = %+v", s.BuildTree)
		}
	})
	t.Run("daemonset: host-usr-lib not mounted", func(t *testing.T) {
		f, d := daemonSet(t)
		c := wantCheck(t, probeFixture(t, f, fakeGCC12(t)), "build_tree.kbuild", Unsupported,
			d+"/scripts (-> /host/usr/lib/linux-kbuild-6.1/scripts)")
		wantFix(t, c, "mount the host's /usr/lib/linux-kbuild-6.1 at "+f.path("/host/usr/lib/linux-kbuild-6.1"),
			"DaemonSet: volume host-usr-lib (hostPath /usr/lib mounted read-only at /host/usr/lib)",
			"docker run: -v /usr/lib:/host/usr/lib:ro (or -v /usr/lib/linux-kbuild-6.1:"+f.path("/host/usr/lib/linux-kbuild-6.1")+":ro)")
	})
	t.Run("daemonset: host's /usr/lib has no kbuild", func(t *testing.T) {
		f, _ := daemonSet(t)
		f.write("/host/usr/lib/os-release", "ID=debian\n")
		c := wantCheck(t, probeFixture(t, f, fakeGCC12(t)), "build_tree.kbuild", Unsupported, "/host/usr/lib/linux-kbuild-6.1/scripts")
		wantFix(t, c, "the host's /usr/lib is mounted at /host/usr/lib but has no linux-kbuild-6.1", "install linux-kbuild-6.1 on the host", "linux-headers-"+rel)
	})
	t.Run("tree at /usr/src, the host's /usr/lib at /host/usr/lib", func(t *testing.T) {
		// -v /usr/src:/usr/src in an image whose /usr/src is a directory:
		// the links land in the container's /usr/lib, not in /host/usr/lib
		f := setup(t)
		d := "/usr/src/linux-headers-" + rel
		f.buildTree(d, rel, cfg)
		os.RemoveAll(f.path(d + "/scripts"))
		f.symlink("../../lib/linux-kbuild-6.1/scripts", d+"/scripts")
		f.symlink(d, "/lib/modules/"+rel+"/build")
		kbuildTree(f, "/host/usr/lib/linux-kbuild-6.1")
		c := wantCheck(t, probeFixture(t, f, fakeGCC12(t)), "build_tree.kbuild", Unsupported, d+"/scripts (-> /usr/lib/linux-kbuild-6.1/scripts)")
		wantFix(t, c, "docker run -v /usr/lib/linux-kbuild-6.1:"+f.path("/usr/lib/linux-kbuild-6.1")+":ro",
			"the host's /usr/lib is mounted at /host/usr/lib, but the links land there only when the host's /usr/src is mounted at /host/usr/src")
	})
}

// TestDebianHeadersTree probes the real Debian 6.1 header tree installed by
// make deps (linux-headers-amd64), seen through a host root that bind-mounts
// the host's /usr/src, /lib/modules/<ver> and, in one case, /usr/lib/linux-kbuild-<ver>
// read-only, like the DaemonSet does.
func TestDebianHeadersTree(t *testing.T) {
	matches, _ := filepath.Glob("/usr/src/linux-headers-*-amd64")
	if len(matches) == 0 {
		t.Fatal("no /usr/src/linux-headers-*-amd64: run make deps (linux-headers-amd64)")
	}
	dir := matches[0]
	rel := strings.TrimPrefix(filepath.Base(dir), "linux-headers-")
	kbuild, err := filepath.EvalSymlinks(filepath.Join(dir, "scripts"))
	if err != nil {
		t.Fatal(err)
	}
	kbuild = filepath.Dir(kbuild) // /usr/lib/linux-kbuild-6.1
	cfg, err := os.ReadFile(filepath.Join(dir, ".config"))
	if err != nil {
		t.Fatal(err)
	}
	// the DaemonSet's layout, with the real tree: the image's /usr/src links
	// to /host/usr/src (volume ko-build-path), the host's /usr/lib is at
	// /host/usr/lib (volume host-usr-lib)
	for _, withKbuild := range []bool{true, false} {
		t.Run(map[bool]string{true: "daemonset layout", false: "daemonset layout without host-usr-lib"}[withKbuild], func(t *testing.T) {
			f := newFixture(t, rel)
			f.write("/boot/config-"+rel, string(cfg))
			f.symlink("/host/usr/src", "/usr/src")
			bindRO(t, "/usr/src", f.path("/host/usr/src"))
			bindRO(t, "/lib/modules/"+rel, f.path("/lib/modules/"+rel))
			f.mkdir("/host/usr/lib")
			if withKbuild {
				bindRO(t, kbuild, f.path("/host"+kbuild))
			}
			s := Probe(Config{HostRoot: f.root, BPFHeader: "/usr/include/linux/bpf.h"})
			wantCheck(t, s, "build_tree.present", Supported, "/host"+dir)
			wantCheck(t, s, "build_tree.release_match", Supported, rel)
			if withKbuild {
				wantCheck(t, s, "build_tree.kbuild", Supported)
			} else {
				c := wantCheck(t, s, "build_tree.kbuild", Unsupported, "/host"+dir+"/scripts (-> /host"+kbuild+"/scripts)")
				wantFix(t, c, "DaemonSet: volume host-usr-lib (hostPath /usr/lib mounted read-only at /host/usr/lib)", "-v /usr/lib:/host/usr/lib:ro")
			}
		})
	}
	for _, withKbuild := range []bool{true, false} {
		t.Run(map[bool]string{true: "all mounts", false: "kbuild dir not mounted"}[withKbuild], func(t *testing.T) {
			f := newFixture(t, rel)
			f.write("/boot/config-"+rel, string(cfg))
			binds := []string{"/usr/src", "/lib/modules/" + rel}
			if withKbuild {
				binds = append(binds, kbuild)
			}
			for _, b := range binds {
				bindRO(t, b, f.path(b))
			}
			s := Probe(Config{HostRoot: f.root, BPFHeader: "/usr/include/linux/bpf.h"})
			wantCheck(t, s, "build_tree.present", Supported, dir)
			wantCheck(t, s, "build_tree.release_match", Supported, rel)
			wantCheck(t, s, "build_tree.config_match", Supported, "identical")
			wantCheck(t, s, "build_tree.compiler", Supported, "gcc")
			if withKbuild {
				wantCheck(t, s, "build_tree.kbuild", Supported)
			} else {
				wantCheck(t, s, "build_tree.kbuild", Unsupported, "mount the host's "+kbuild)
			}
		})
	}
}

func bindRO(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("bind %s (tests run as root): %v", src, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dst, err)
		}
	})
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dst, err)
	}
}
