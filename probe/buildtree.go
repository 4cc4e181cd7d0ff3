package probe

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// BuildTree describes the kernel build tree for out-of-tree modules.
type BuildTree struct {
	// Link is the host path /lib/modules/<release>/build.
	Link string `json:"link"`
	// Path is where it resolves to under the host root ("" when it does not).
	Path string `json:"path,omitempty"`
	// HostPath is Path as the host names it (without the host root prefix).
	HostPath string `json:"host_path,omitempty"`
	// Release is the tree's include/config/kernel.release.
	Release string `json:"release,omitempty"`
	// CCVersionText is the compiler the kernel was built with (CONFIG_CC_VERSION_TEXT).
	CCVersionText string `json:"cc_version_text,omitempty"`
	// Compiler is the compiler found on this system that matches it.
	Compiler string `json:"compiler,omitempty"`
}

// Compilers lists C compilers to look for on PATH, newest first.
var compilerNames = []string{"gcc-15", "gcc-14", "gcc-13", "gcc-12", "gcc-11", "gcc-10", "gcc", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14", "clang"}

func probeBuildTree(h Host, release, version string, kc *KConfig, lookPath func(string) (string, error)) (*BuildTree, []Check) {
	bt := &BuildTree{Link: "/lib/modules/" + release + "/build"}
	installFix := "install the kernel headers for " + release + " on the host (Debian/Ubuntu: linux-headers-" + release +
		"; RHEL/openEuler/Fedora: kernel-devel-" + release + ") and mount the host's /lib/modules and /usr/src (ko-build-path)"

	resolved, err := h.Resolve(bt.Link)
	if err != nil {
		// securejoin reports symlink loops as ELOOP
		return bt, []Check{fromErr("build_tree.present", fmt.Errorf("resolve %s: %w", bt.Link, err), "")}
	}
	st, err := os.Stat(resolved)
	if err != nil {
		target := ""
		if t, lerr := os.Readlink(filepath.Join(h.root(), bt.Link)); lerr == nil {
			target = " -> " + t
		}
		if errors.Is(err, os.ErrNotExist) {
			what := "does not exist"
			if target != "" {
				what = "is a dangling symlink" + target + " (" + h.hostPath(resolved) + " missing under the host root)"
			}
			return bt, []Check{unsupported("build_tree.present", installFix, "%s %s", bt.Link, what)}
		}
		return bt, []Check{fromErr("build_tree.present", fmt.Errorf("stat %s%s: %w", bt.Link, target, err), "")}
	}
	if !st.IsDir() {
		return bt, []Check{unsupported("build_tree.present", installFix, "%s is not a directory", bt.Link)}
	}
	bt.Path = resolved
	bt.HostPath = h.hostPath(resolved)
	checks := []Check{supported("build_tree.present", "%s -> %s", bt.Link, bt.HostPath)}
	checks = append(checks, kbuildCheck(h, bt, release))
	checks = append(checks, releaseCheck(h, bt, release, installFix))
	checks = append(checks, versionCheck(h, bt, version))
	treeCfg, cfgCheck := treeConfigCheck(h, bt, kc)
	checks = append(checks, cfgCheck)
	checks = append(checks, compilerCheck(bt, treeCfg, kc, lookPath))
	return bt, checks
}

// kbuildCheck verifies the parts kbuild needs for external modules. Debian's
// trees link scripts/ and tools/ into /usr/lib/linux-kbuild-<ver> with
// relative links (../../lib/linux-kbuild-<ver>/scripts): when that directory
// is not mapped where the links land the links dangle and the fix names the
// mount.
func kbuildCheck(h Host, bt *BuildTree, release string) Check {
	const name = "build_tree.kbuild"
	var missing []string
	kbuildDir := ""
	for _, p := range []string{"Makefile", "scripts", "include/config/auto.conf", "Module.symvers", "scripts/basic/fixdep", "scripts/mod/modpost"} {
		hp := filepath.Join(bt.HostPath, p)
		r, err := h.Resolve(hp)
		if err == nil {
			if _, err = os.Stat(r); err == nil {
				continue
			}
		}
		where := hp
		if err == nil || errors.Is(err, os.ErrNotExist) {
			if target := h.hostPath(r); target != hp {
				where += " (-> " + target + ")"
				if d, ok := kbuildLinkDir(target); ok && kbuildDir == "" {
					kbuildDir = d
				}
			}
		}
		missing = append(missing, where)
	}
	if len(missing) == 0 {
		return supported(name, "Makefile, scripts, auto.conf, Module.symvers present")
	}
	fix := "install the complete kernel headers/devel package for this kernel on the host"
	if kbuildDir != "" {
		fix = kbuildFix(h, kbuildDir, release)
	}
	return unsupported(name, fix, "missing: %s", strings.Join(missing, ", "))
}

// kbuildLinkDir returns the linux-kbuild-<ver> directory a path lies in, as
// this process sees it: /usr/lib/linux-kbuild-<ver> when the header tree is
// seen at /usr/src, /host/usr/lib/linux-kbuild-<ver> when it is seen at
// /host/usr/src (kmesh's image and DaemonSet).
func kbuildLinkDir(p string) (string, bool) {
	const marker = "/usr/lib/linux-kbuild-"
	i := strings.Index(p, marker)
	if i < 0 {
		return "", false
	}
	ver, _, _ := strings.Cut(p[i+len("/usr/lib/"):], "/")
	return p[:i] + "/usr/lib/" + ver, true
}

// kbuildFix says how to map the host's /usr/lib/linux-kbuild-<ver> to dir,
// where the header tree's links land (dir as this process names it under
// the host root).
func kbuildFix(h Host, dir, release string) string {
	ver := filepath.Base(dir) // linux-kbuild-6.1
	hostDir := "/usr/lib/" + ver
	at := filepath.Join(h.root(), dir)
	exists := func(p string) bool {
		r, err := h.Resolve(p)
		if err != nil {
			return false
		}
		_, err = os.Stat(r)
		return err == nil
	}
	hostUsrLibMounted := false
	if r, err := h.Resolve("/host/usr/lib"); err == nil {
		if ents, err := os.ReadDir(r); err == nil && len(ents) > 0 {
			hostUsrLibMounted = true
		}
	}
	pkg := "linux-kbuild-" + strings.TrimPrefix(ver, "linux-kbuild-")
	if strings.HasPrefix(dir, "/host/usr/lib/") {
		if hostUsrLibMounted {
			return fmt.Sprintf("the host's /usr/lib is mounted at /host/usr/lib but has no %s: install %s on the host (Debian: the package linux-headers-%s depends on)",
				ver, pkg, release)
		}
		return fmt.Sprintf("mount the host's %s at %s, where the header tree's scripts/ and tools/ links land: "+
			"DaemonSet: volume host-usr-lib (hostPath /usr/lib mounted read-only at /host/usr/lib); "+
			"docker run: -v /usr/lib:/host/usr/lib:ro (or -v %s:%s:ro)", hostDir, at, hostDir, at)
	}
	fix := fmt.Sprintf("mount the host's %s at %s, where the header tree's scripts/ and tools/ links land: docker run -v %s:%s:ro", hostDir, at, hostDir, at)
	if exists("/host/usr/lib/" + ver) {
		return fix + "; the host's /usr/lib is mounted at /host/usr/lib, but the links land there only when the host's /usr/src is " +
			"mounted at /host/usr/src (DaemonSet volume ko-build-path; kmesh's image links /usr/src there)"
	}
	return fix + "; the DaemonSet mounts the host's /usr/src at /host/usr/src (volume ko-build-path), where the links land in " +
		"volume host-usr-lib (hostPath /usr/lib mounted read-only at /host/usr/lib); on the host itself: install " + pkg
}

func releaseCheck(h Host, bt *BuildTree, release, fix string) Check {
	const name = "build_tree.release_match"
	// UTS_RELEASE is what vermagic carries; Debian's include/config/kernel.release
	// holds the upstream version (6.1.192) instead.
	rel := ""
	b, err := h.ReadFile(filepath.Join(bt.HostPath, "include/generated/utsrelease.h"))
	if err == nil {
		if m := utsReleaseRe.FindSubmatch(b); m != nil {
			rel = string(m[1])
		}
	}
	if rel == "" {
		var kerr error
		if rel, kerr = h.readTrim(filepath.Join(bt.HostPath, "include/config/kernel.release")); kerr != nil {
			return fromErr(name, fmt.Errorf("read the tree's kernel release (utsrelease.h: %v): %w", err, kerr), "")
		}
	}
	bt.Release = rel
	if rel != release {
		return unsupported(name, fix, "tree is for %s, running kernel is %s", rel, release)
	}
	return supported(name, "tree is for %s", rel)
}

var (
	utsReleaseRe = regexp.MustCompile(`UTS_RELEASE\s+"([^"]+)"`)
	utsVersionRe = regexp.MustCompile(`UTS_VERSION\s+"([^"]+)"`)
)

// versionCheck compares the tree's UTS_VERSION (when the tree has one) with
// the running kernel's version string.
func versionCheck(h Host, bt *BuildTree, version string) Check {
	const name = "build_tree.version_match"
	// UTS_VERSION moved from compile.h to utsversion.h in 6.1.
	for _, f := range []string{"include/generated/utsversion.h", "include/generated/compile.h"} {
		b, err := h.ReadFile(filepath.Join(bt.HostPath, f))
		if err != nil {
			continue
		}
		m := utsVersionRe.FindSubmatch(b)
		if m == nil {
			continue
		}
		if string(m[1]) != version {
			return unsupported(name, "install the headers package built together with the running kernel",
				"tree is version %q, running kernel is %q", m[1], version)
		}
		return supported(name, "%s", version)
	}
	return supported(name, "tree records no UTS_VERSION; the release match is the check")
}

// configsThatMatter must agree between the running kernel and the tree: they
// change the module ABI or its acceptance.
var configsThatMatter = []string{"CONFIG_MODVERSIONS", "CONFIG_MODULE_UNLOAD", "CONFIG_SMP", "CONFIG_PREEMPT", "CONFIG_PREEMPT_DYNAMIC",
	"CONFIG_MODULE_SIG", "CONFIG_RANDSTRUCT", "CONFIG_KASAN", "CONFIG_DEBUG_INFO_BTF_MODULES", "CONFIG_IPV6", "CONFIG_CC_VERSION_TEXT"}

func treeConfigCheck(h Host, bt *BuildTree, kc *KConfig) (*KConfig, Check) {
	const name = "build_tree.config_match"
	b, err := h.ReadFile(filepath.Join(bt.HostPath, ".config"))
	if err != nil {
		return nil, fromErr(name, fmt.Errorf("read the tree's .config: %w", err), "")
	}
	vals, err := ParseKConfig(bytes.NewReader(b))
	if err != nil {
		return nil, inconclusive(name, err)
	}
	tc := &KConfig{Source: filepath.Join(bt.HostPath, ".config"), Values: vals}
	if kc == nil {
		return tc, Check{Name: name, Status: Inconclusive, Detail: "running kernel's config unknown; cannot compare",
			Err: errors.New("running kernel config unknown")}
	}
	var diff []string
	for _, o := range configsThatMatter {
		if tc.Get(o) != kc.Get(o) {
			diff = append(diff, fmt.Sprintf("%s tree=%s kernel=%s", o, tc.Get(o), kc.Get(o)))
		}
	}
	if len(diff) > 0 {
		return tc, unsupported(name, "install the headers package built together with the running kernel",
			"tree config differs: %s", strings.Join(diff, "; "))
	}
	if tc.Hash() == kc.Hash() {
		return tc, supported(name, "identical to the running kernel's config")
	}
	return tc, supported(name, "module-relevant options agree with the running kernel's config")
}

// ccVersion extracts the compiler family and major version from a
// "--version" line or CONFIG_CC_VERSION_TEXT: "gcc-12 (Debian 12.2.0-14) 12.2.0",
// "gcc (GCC) 15.3.0", "Debian clang version 19.1.7 (3~deb12u1)".
func ccVersion(text string) (family, major string, ok bool) {
	if m := clangVersionRe.FindStringSubmatch(text); m != nil {
		return "clang", m[1], true
	}
	if strings.Contains(text, "gcc") || strings.Contains(text, "GCC") {
		// "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", or with a build date
		// after the version: "gcc-10 (Debian 10.2.1-6) 10.2.1 20210110", Red Hat:
		// "gcc (GCC) 11.4.1 20231218 (Red Hat 11.4.1-3)"
		if m := gccVersionRe.FindStringSubmatch(text); m != nil {
			return "gcc", m[1], true
		}
		if m := trailingVersionRe.FindStringSubmatch(text); m != nil {
			return "gcc", m[1], true
		}
	}
	return "", "", false
}

var (
	clangVersionRe    = regexp.MustCompile(`clang version (\d+)\.\d+`)
	gccVersionRe      = regexp.MustCompile(`\)\s+(\d+)\.\d+`)
	trailingVersionRe = regexp.MustCompile(`(\d+)\.\d+(?:\.\d+)?\s*$`)
)

// compilerCheck finds a compiler matching CONFIG_CC_VERSION_TEXT.
func compilerCheck(bt *BuildTree, treeCfg, kc *KConfig, lookPath func(string) (string, error)) Check {
	const name = "build_tree.compiler"
	text := ""
	for _, c := range []*KConfig{treeCfg, kc} {
		if c != nil && c.Get("CONFIG_CC_VERSION_TEXT") != "n" {
			text = c.Get("CONFIG_CC_VERSION_TEXT")
			break
		}
	}
	if text == "" {
		return Check{Name: name, Status: Inconclusive, Detail: "CONFIG_CC_VERSION_TEXT unknown", Err: errors.New("CONFIG_CC_VERSION_TEXT unknown")}
	}
	bt.CCVersionText = text
	family, major, ok := ccVersion(text)
	if !ok {
		return inconclusive(name, fmt.Errorf("parse CONFIG_CC_VERSION_TEXT %q", text))
	}
	var seen []string
	for _, cn := range compilerNames {
		p, err := lookPath(cn)
		if err != nil {
			continue
		}
		out, err := exec.Command(p, "--version").Output()
		if err != nil {
			continue
		}
		line := strings.SplitN(string(out), "\n", 2)[0]
		if line == text {
			bt.Compiler = p
			return supported(name, "%s matches the kernel's compiler %q", p, text)
		}
		if f, m, ok := ccVersion(line); ok && f == family && m == major {
			bt.Compiler = p
			return supported(name, "%s (%s) has the kernel compiler's major version (%q)", p, line, text)
		}
		seen = append(seen, fmt.Sprintf("%s: %s", cn, line))
	}
	return unsupported(name, fmt.Sprintf("provide %s-%s in the image (kbuild must use the compiler the kernel was built with)", family, major),
		"kernel built with %q; compilers here: %s", text, listOrNone(seen))
}
