package builder

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ModuleName is kmesh.ko's module name.
const ModuleName = "kmesh"

// Module errors callers branch on.
var (
	ErrKbuild        = errors.New("kbuild failed")
	ErrVermagic      = errors.New("module vermagic does not match the running kernel")
	ErrModuleBusy    = errors.New("an older kmesh.ko is loaded and in use")
	ErrModuleRefused = errors.New("the kernel refused to load kmesh.ko")
)

// ModuleOptions say how to build kmesh.ko.
type ModuleOptions struct {
	// SrcDir is kmod/ (Kbuild, *.c, *.h); it is copied, never built in place.
	SrcDir string
	// BuildTree is the kernel build tree (/lib/modules/<release>/build resolved).
	BuildTree string
	// OutDir receives the build; Release is the running kernel's release,
	// which the module's vermagic must name.
	OutDir, Release string
	// Compiler is CC for kbuild ("" = the kernel's own, as the tree selects).
	Compiler string
	// KCFlags are extra compiler flags (KCFLAGS).
	KCFlags string
	Log     logrus.FieldLogger
}

// ModuleReport describes kmesh.ko's build and load.
type ModuleReport struct {
	Path         string  `json:"path"`
	Vermagic     string  `json:"vermagic"`
	Srcversion   string  `json:"srcversion"`
	Version      string  `json:"version"`
	Compiler     string  `json:"compiler"`
	BuildMS      float64 `json:"build_ms"`
	PeakRSSBytes uint64  `json:"peak_rss_bytes"`
	Load         string  `json:"load,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// BuildModule builds kmesh.ko with kbuild against o.BuildTree and checks
// that its vermagic names o.Release.
func BuildModule(ctx context.Context, o ModuleOptions) (*ModuleReport, error) {
	r := &ModuleReport{Compiler: o.Compiler}
	if _, err := os.Stat(filepath.Join(o.BuildTree, "Makefile")); err != nil {
		return r, fmt.Errorf("build kmesh.ko: kernel build tree %s: %w (install the kernel headers/devel package for %s and mount /lib/modules and /usr/src)", o.BuildTree, err, o.Release)
	}
	work := filepath.Join(o.OutDir, "kmod")
	if err := os.RemoveAll(work); err != nil {
		return r, fmt.Errorf("clean module build dir: %w", err)
	}
	if err := copySources(o.SrcDir, work); err != nil {
		return r, err
	}
	args := []string{"-C", o.BuildTree, "M=" + work}
	if o.Compiler != "" {
		args = append(args, "CC="+o.Compiler)
	}
	if o.KCFlags != "" {
		args = append(args, "KCFLAGS="+o.KCFlags)
	}
	args = append(args, "modules")
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r.BuildMS = ms(time.Since(start))
	if cmd.ProcessState != nil {
		r.PeakRSSBytes = peakRSS(cmd.ProcessState)
	}
	if err != nil {
		return r, fmt.Errorf("make %s: %w: %v\n%s", strings.Join(args, " "), ErrKbuild, err, tail(out.String(), 25))
	}
	if strings.Contains(strings.ToLower(out.String()), "warning:") {
		return r, fmt.Errorf("make %s: %w: warnings:\n%s", strings.Join(args, " "), ErrKbuild, tail(out.String(), 25))
	}
	r.Path = filepath.Join(work, ModuleName+".ko")
	info, err := ModuleInfo(r.Path)
	if err != nil {
		return r, err
	}
	r.Vermagic, r.Srcversion, r.Version = info["vermagic"], info["srcversion"], info["version"]
	if rel := vermagicRelease(r.Vermagic); rel != o.Release {
		return r, fmt.Errorf("build kmesh.ko: vermagic %q names %s, running kernel is %s: %w (the build tree belongs to another kernel)", r.Vermagic, rel, o.Release, ErrVermagic)
	}
	if o.Log != nil {
		o.Log.WithFields(logrus.Fields{"subsys": "builder", "phase": "kbuild", "release": o.Release, "srcversion": r.Srcversion,
			"duration_ms": r.BuildMS, "peak_rss_mib": r.PeakRSSBytes >> 20}).Info("kmesh.ko built")
	}
	return r, nil
}

// moduleSources are the files kbuild compiles: Kbuild, *.c and *.h of kmod/
// (not the test harness below it, nor output of an in-place build).
func moduleSources(src string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(src, "*.[ch]"))
	if err != nil {
		return nil, fmt.Errorf("list module sources in %s: %w", src, err)
	}
	out := []string{filepath.Join(src, "Kbuild")}
	for _, f := range files {
		if !strings.Contains(filepath.Base(f), ".mod.") {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out, nil
}

func copySources(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("create module build dir: %w", err)
	}
	files, err := moduleSources(src)
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read module source: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
			return fmt.Errorf("copy module source: %w", err)
		}
	}
	return nil
}

// ModuleInfo parses a module's .modinfo section (vermagic, srcversion,
// version, ...). Repeated keys (alias, depends) are comma-joined.
func ModuleInfo(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	return ModuleInfoFrom(f, path)
}

// ModuleInfoFrom is ModuleInfo for a module already in memory or open
// (e.g. decompressed from a kernel package); name is used in errors.
func ModuleInfoFrom(r io.ReaderAt, name string) (map[string]string, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", name, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read module %s: no .modinfo section", name)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read module %s: .modinfo: %w", name, err)
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		if old, dup := info[k]; dup {
			if k == "alias" || k == "depends" {
				info[k] = old + "," + v
			}
			continue
		}
		info[k] = v
	}
	return info, nil
}

// VermagicRelease is the kernel release a vermagic string names (its
// first word).
func VermagicRelease(v string) string { return vermagicRelease(v) }

func vermagicRelease(v string) string {
	if f := strings.Fields(v); len(f) > 0 {
		return f[0]
	}
	return ""
}

// checkRelease refuses a module whose vermagic names another kernel release.
func checkRelease(path, vermagic string) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("load %s: uname: %w", path, err)
	}
	if want, got := unix.ByteSliceToString(uts.Release[:]), vermagicRelease(vermagic); got != want {
		return fmt.Errorf("load %s: vermagic %q names %s, running kernel is %s: %w: %w (rebuild against the running kernel's headers; the loaded kmesh.ko stays)",
			path, vermagic, got, want, ErrModuleRefused, ErrVermagic)
	}
	return nil
}

// LoadResult says what LoadModule did.
type LoadResult string

// Load results.
const (
	ModuleLoaded   LoadResult = "loaded"
	ModuleReused   LoadResult = "reused"   // the same build was already loaded
	ModuleReplaced LoadResult = "replaced" // an older, unused kmesh.ko was unloaded first
)

// LoadModule loads kmesh.ko with finit_module. The same build already loaded
// (equal srcversion) is reused; another build is replaced only when nothing
// uses it (refcnt 0), else ErrModuleBusy. A refusal by the kernel wraps
// ErrModuleRefused and says why (vermagic, signature, lockdown, no module
// support); a replacement built for another kernel release is refused
// before the loaded module is touched.
func LoadModule(path string) (LoadResult, error) {
	info, err := ModuleInfo(path)
	if err != nil {
		return "", err
	}
	name := info["name"]
	if name == "" {
		name = ModuleName
	}
	result := ModuleLoaded
	if cur, refcnt, loaded, err := loadedModule(name); err != nil {
		return "", err
	} else if loaded {
		if cur == info["srcversion"] {
			return ModuleReused, nil
		}
		if refcnt > 0 {
			return "", fmt.Errorf("load %s: loaded srcversion %s has %d users, new is %s: %w (restart the node or stop the sockets using kmesh_defer)", name, cur, refcnt, info["srcversion"], ErrModuleBusy)
		}
		// A replace unloads first; refuse a module built for another kernel
		// before that, or the kernel's refusal would leave the node with none.
		if err := checkRelease(path, info["vermagic"]); err != nil {
			return "", err
		}
		if err := UnloadModule(name); err != nil {
			return "", err
		}
		result = ModuleReplaced
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		if errors.Is(err, unix.EEXIST) { // loaded meanwhile
			return ModuleReused, nil
		}
		lost := ""
		if result == ModuleReplaced {
			lost = "; the previously loaded kmesh.ko was unloaded first, so none is loaded now"
		}
		return "", fmt.Errorf("load %s: %w: %w (%s)%s", path, ErrModuleRefused, err, refusalReason(err), lost)
	}
	return result, nil
}

func refusalReason(err error) string {
	switch {
	case errors.Is(err, unix.ENOSYS):
		return "the kernel has no module support (CONFIG_MODULES off)"
	case errors.Is(err, unix.ENOEXEC):
		return "bad module format or vermagic for this kernel: rebuild against the running kernel's headers"
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.ENOKEY):
		return "module signature required or rejected: sign kmesh.ko or run compat mode"
	case errors.Is(err, unix.EPERM):
		return "not permitted: CAP_SYS_MODULE missing, modules disabled, or kernel lockdown refuses unsigned modules"
	}
	return "see the kernel log (dmesg)"
}

// UnloadModule removes a loaded module (delete_module, non-blocking).
func UnloadModule(name string) error {
	if err := unix.DeleteModule(name, unix.O_NONBLOCK); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unload %s: %w: %w", name, ErrModuleBusy, err)
		}
		return fmt.Errorf("unload %s: %w", name, err)
	}
	return nil
}

// loadedModule reads /sys/module/<name>: srcversion and refcnt.
func loadedModule(name string) (srcversion string, refcnt int, loaded bool, err error) {
	dir := filepath.Join("/sys/module", name)
	if _, err := os.Stat(filepath.Join(dir, "refcnt")); errors.Is(err, os.ErrNotExist) {
		return "", 0, false, nil // absent, or built in (no refcnt)
	}
	b, err := os.ReadFile(filepath.Join(dir, "srcversion"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", 0, true, fmt.Errorf("read %s/srcversion: %w", dir, err)
	}
	rb, err := os.ReadFile(filepath.Join(dir, "refcnt"))
	if err != nil {
		return "", 0, true, fmt.Errorf("read %s/refcnt: %w", dir, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(rb)))
	if err != nil {
		return "", 0, true, fmt.Errorf("parse %s/refcnt: %w", dir, err)
	}
	return strings.TrimSpace(string(b)), n, true, nil
}
