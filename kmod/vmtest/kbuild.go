package vmtest

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// ModuleName is the module kbuild makes from kmod/.
const ModuleName = "kmesh"

// Build is the result of one kbuild run.
type Build struct {
	KO       string        // path of kmesh.ko
	Release  string        // UTS_RELEASE of the headers built against
	CC       string        // compiler used ("" = the kernel's own, per its .kernelvariables)
	Vermagic string        // vermagic of the built module
	Version  string        // MODULE_VERSION of the built module
	Took     time.Duration // make time
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

// BuildModule copies the module sources from src (kmod/) into out and runs
// `make -C headersDir M=out modules` there, so builds for several kernels
// never share objects and the source tree stays clean.
func BuildModule(ctx context.Context, src, headersDir, out string, log logrus.FieldLogger) (*Build, error) {
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
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("create build dir: %w", err)
	}
	srcs, err := filepath.Glob(filepath.Join(src, "*.[ch]"))
	if err != nil {
		return nil, err
	}
	srcs = append(srcs, filepath.Join(src, "Kbuild"))
	for _, s := range srcs {
		if strings.Contains(filepath.Base(s), ".mod.") {
			continue // kbuild output of an in-place build
		}
		b, err := os.ReadFile(s)
		if err != nil {
			return nil, fmt.Errorf("read module source: %w", err)
		}
		if err := os.WriteFile(filepath.Join(out, filepath.Base(s)), b, 0o644); err != nil {
			return nil, fmt.Errorf("copy module source: %w", err)
		}
	}
	args := []string{"-C", headersDir, "M=" + out}
	if cc != "" {
		args = append(args, "CC="+cc)
	}
	args = append(args, "modules")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("make %s: %w\n%s", strings.Join(args, " "), err, tail(output.String(), 4000))
	}
	took := time.Since(start)
	if strings.Contains(strings.ToLower(output.String()), "warning") {
		return nil, fmt.Errorf("make %s: warnings:\n%s", strings.Join(args, " "), tail(output.String(), 4000))
	}
	ko := filepath.Join(out, ModuleName+".ko")
	info, err := ModInfo(ko)
	if err != nil {
		return nil, err
	}
	b := &Build{KO: ko, Release: release, CC: cc, Vermagic: info["vermagic"], Version: info["version"], Took: took}
	if log != nil {
		log.WithFields(logrus.Fields{"phase": "kbuild", "release": release, "cc": ccName(cc),
			"duration_ms": took.Milliseconds()}).Info("kmesh.ko built")
	}
	return b, nil
}

func ccName(cc string) string {
	if cc == "" {
		return "kernel's own"
	}
	return cc
}

// ModInfo parses the .modinfo section of a .ko file (key=value strings).
func ModInfo(ko string) (map[string]string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ko, err)
	}
	defer f.Close()
	return modInfoELF(f, ko)
}

// ModInfoBytes parses .modinfo from an in-memory .ko.
func ModInfoBytes(b []byte, name string) (map[string]string, error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	defer f.Close()
	return modInfoELF(f, name)
}

func modInfoELF(f *elf.File, name string) (map[string]string, error) {
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", name)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: read .modinfo: %w", name, err)
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		old, dup := info[k]
		switch {
		case !dup:
			info[k] = v
		case k == "alias" || k == "depends":
			info[k] = old + "," + v // repeated keys: comma-joined
		}
	}
	return info, nil
}

// VermagicRelease is the kernel release a vermagic string names.
func VermagicRelease(vermagic string) string {
	f := strings.Fields(vermagic)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
