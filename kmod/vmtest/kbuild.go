package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/builder"
)

// ModuleName is the module kbuild makes from kmod/.
const ModuleName = builder.ModuleName

// Build is the result of one kbuild run.
type Build struct {
	KO       string // path of kmesh.ko
	Release  string // UTS_RELEASE of the headers built against
	CC       string // compiler used ("" = the kernel's own, per its .kernelvariables)
	Vermagic string // vermagic of the built module
	Version  string // MODULE_VERSION of the built module
	// Srcversion is modpost's hash of the sources (what /sys/module/<name>/srcversion shows).
	Srcversion string
	Took       time.Duration // make time
}

// HeadersRelease reads UTS_RELEASE from a kbuild headers directory.
func HeadersRelease(headersDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(headersDir, "include", "generated", "utsrelease.h"))
	if err != nil {
		return "", fmt.Errorf("read utsrelease.h: %w", err)
	}
	m := regexp.MustCompile(`UTS_RELEASE\s+"([^"]+)"`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("no UTS_RELEASE in %s/include/generated/utsrelease.h", headersDir)
	}
	return string(m[1]), nil
}

// KernelCompiler returns the compiler the kernel was built with (first word
// of CONFIG_CC_VERSION_TEXT, e.g. "gcc-10" or "x86_64-linux-gnu-gcc-12").
func KernelCompiler(headersDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(headersDir, "include", "config", "auto.conf"))
	if err != nil {
		return "", fmt.Errorf("read auto.conf: %w", err)
	}
	m := regexp.MustCompile(`(?m)^CONFIG_CC_VERSION_TEXT="?([^\s"]+)`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("no CONFIG_CC_VERSION_TEXT in %s", headersDir)
	}
	return string(m[1]), nil
}

// PickCompiler returns "" when the kernel's own compiler is installed (the
// headers' .kernelvariables then selects it), else the first of fallbacks
// that is installed, to pass as CC=. Debian 5.10 is built with gcc-10,
// which bookworm does not have: gcc-12 builds it (-Werror clean).
func PickCompiler(headersDir string, fallbacks ...string) (string, error) {
	want, err := KernelCompiler(headersDir)
	if err != nil {
		return "", err
	}
	if _, err := exec.LookPath(want); err == nil {
		return "", nil
	}
	for _, cc := range fallbacks {
		if _, err := exec.LookPath(cc); err == nil {
			return cc, nil
		}
	}
	return "", fmt.Errorf("kernel compiler %s not installed and none of %v is", want, fallbacks)
}

// BuildModule builds kmesh.ko from src (kmod/) against headersDir into out
// with the builder's kbuild (kmesh.dev/kmesh/builder.BuildModule, the code
// kmesh-start runs), picking the kernel's compiler or gcc-12.
func BuildModule(ctx context.Context, src, headersDir, out string, log logrus.FieldLogger) (*Build, error) {
	return BuildModuleVariant(ctx, src, headersDir, out, "", log)
}

// VariantSource is the file of the module's sources BuildModuleVariant
// appends to.
const VariantSource = "kmesh_main.c"

// BuildModuleVariant is BuildModule with, when variant is not empty, one
// line appended to a copy of VariantSource:
//
//	MODULE_INFO(kmesh_vmtest_variant, "<variant>");
//
// The result is a build of the same module with another srcversion (what
// modpost hashes is the sources' text, so KCFLAGS=-D... would not change
// it) and a "kmesh_vmtest_variant" modinfo field; the source tree is not
// touched.
func BuildModuleVariant(ctx context.Context, src, headersDir, out, variant string, log logrus.FieldLogger) (*Build, error) {
	release, err := HeadersRelease(headersDir)
	if err != nil {
		return nil, err
	}
	cc, err := PickCompiler(headersDir, "gcc-12", "gcc")
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(out); err != nil {
		return nil, fmt.Errorf("clean build dir: %w", err)
	}
	if variant != "" {
		if src, err = variantSources(src, filepath.Join(out, "src"), variant); err != nil {
			return nil, err
		}
	}
	r, err := builder.BuildModule(ctx, builder.ModuleOptions{SrcDir: src, BuildTree: headersDir, OutDir: out,
		Release: release, Compiler: cc, Log: log})
	if err != nil {
		return nil, err
	}
	if variant != "" {
		info, err := builder.ModuleInfo(r.Path)
		if err != nil {
			return nil, err
		}
		if info["kmesh_vmtest_variant"] != variant {
			return nil, fmt.Errorf("build variant %s: %s has no kmesh_vmtest_variant=%s (is %s still in the sources?)", variant, r.Path, variant, VariantSource)
		}
	}
	return &Build{KO: r.Path, Release: release, CC: cc, Vermagic: r.Vermagic, Version: r.Version,
		Srcversion: r.Srcversion, Took: time.Duration(r.BuildMS * float64(time.Millisecond))}, nil
}

// variantSources copies the module's sources (Kbuild, *.c, *.h) from src
// into dst with the variant line appended to VariantSource.
func variantSources(src, dst, variant string) (string, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", fmt.Errorf("create variant source dir: %w", err)
	}
	srcs, err := filepath.Glob(filepath.Join(src, "*.[ch]"))
	if err != nil {
		return "", fmt.Errorf("list module sources: %w", err)
	}
	found := false
	for _, s := range append(srcs, filepath.Join(src, "Kbuild")) {
		if strings.Contains(filepath.Base(s), ".mod.") {
			continue // kbuild output of an in-place build
		}
		b, err := os.ReadFile(s)
		if err != nil {
			return "", fmt.Errorf("read module source: %w", err)
		}
		if filepath.Base(s) == VariantSource {
			found = true
			b = append(b, fmt.Sprintf("\nMODULE_INFO(kmesh_vmtest_variant, %q);\n", variant)...)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(s)), b, 0o644); err != nil {
			return "", fmt.Errorf("copy module source: %w", err)
		}
	}
	if !found {
		return "", fmt.Errorf("build variant %s: no %s in %s", variant, VariantSource, src)
	}
	return dst, nil
}

func ccName(cc string) string {
	if cc == "" {
		return "kernel's own"
	}
	return cc
}
