package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Sentinel errors of the BPF build; callers branch on them to fall back.
var (
	ErrNoCompiler = errors.New("BPF compiler not found")
	ErrCompile    = errors.New("BPF compile failed")
	ErrNoSources  = errors.New("no BPF sources")
)

// BPFOptions say what to compile and how.
type BPFOptions struct {
	// SrcDir is the bpf/ source directory: one object per *.c, shared
	// headers in include/. Files named enhanced_*.c are enhanced-mode only.
	SrcDir string
	// OutDir receives the objects; GenDir the generated headers.
	OutDir, GenDir string
	// FeatureHeader is the rendered kmesh_features.h.
	FeatureHeader []byte
	// VmlinuxBTF, when set, is the kernel BTF the UAPI types bpf/ uses are
	// taken from into GenDir/vmlinux.h (printed as C by Bpftool; the
	// sources include it under KMESH_USE_VMLINUX_H).
	VmlinuxBTF string
	// Enhanced includes the enhanced-mode objects.
	Enhanced bool
	Clang    string // default clang-19
	Bpftool  string // default bpftool
	// Jobs bounds the compiles running at once (see Jobs).
	Jobs int
	Log  logrus.FieldLogger
}

// ObjectReport describes one compiled object.
type ObjectReport struct {
	Name      string  `json:"name"`
	Source    string  `json:"source"`
	CompileMS float64 `json:"compile_ms"`
	Bytes     int64   `json:"bytes"`
	// PeakRSSBytes is the compiler's peak resident memory.
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
}

// Sources lists the objects to build from srcDir for a mode.
func Sources(srcDir string, enhanced bool) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(srcDir, "*.c"))
	if err != nil {
		return nil, fmt.Errorf("list BPF sources in %s: %w", srcDir, err)
	}
	var out []string
	for _, f := range all {
		if strings.HasPrefix(filepath.Base(f), "enhanced_") && !enhanced {
			continue
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("list BPF sources in %s: %w", srcDir, ErrNoSources)
	}
	sort.Strings(out)
	return out, nil
}

// bpfCFlags are the flags of every BPF compile (the single definition: the
// Makefile, the tests and kmesh-start all build through this package).
func bpfCFlags(srcDir, genDir string) []string {
	flags := []string{"-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
		"-I", filepath.Join(srcDir, "include"), "-I", genDir}
	if ma := multiarchInclude(); ma != "" {
		flags = append(flags, "-I", ma)
	}
	return flags
}

// multiarchInclude is Debian's per-architecture include directory, which
// holds asm/types.h for linux/types.h.
func multiarchInclude() string {
	tuple := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	dir := filepath.Join("/usr/include", tuple)
	if st, err := os.Stat(dir); tuple == "" || err != nil || !st.IsDir() {
		return ""
	}
	return dir
}

// CompileBPF compiles every object the mode needs, at most Jobs at a time.
func CompileBPF(ctx context.Context, o BPFOptions) ([]ObjectReport, error) {
	if o.Clang == "" {
		o.Clang = "clang-19"
	}
	if o.Bpftool == "" {
		o.Bpftool = "bpftool"
	}
	if o.Jobs < 1 {
		o.Jobs = 1
	}
	clang, err := exec.LookPath(o.Clang)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w (the image ships clang-19; --clang selects another)", o.Clang, ErrNoCompiler)
	}
	srcs, err := Sources(o.SrcDir, o.Enhanced)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{o.OutDir, o.GenDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := os.WriteFile(filepath.Join(o.GenDir, FeatureHeaderName), o.FeatureHeader, 0o644); err != nil {
		return nil, fmt.Errorf("write feature header: %w", err)
	}
	if o.VmlinuxBTF != "" {
		start := time.Now()
		out := filepath.Join(o.GenDir, UAPIHeaderName)
		n, err := deriveUAPIHeader(ctx, o.Bpftool, o.VmlinuxBTF, out)
		if err != nil {
			return nil, err
		}
		// Decoding the kernel's BTF leaves ~50 MiB of garbage; give it back
		// before the compilers run, so that it does not add to their peak
		// under the container's memory limit.
		debug.FreeOSMemory()
		if o.Log != nil {
			st, _ := os.Stat(out)
			var size int64
			if st != nil {
				size = st.Size()
			}
			o.Log.WithFields(logrus.Fields{"phase": "uapi-header", "btf": o.VmlinuxBTF, "root_types": n, "bytes": size,
				"duration_ms": ms(time.Since(start))}).Info("UAPI header derived from BTF")
		}
	}
	flags := bpfCFlags(o.SrcDir, o.GenDir)
	reports := make([]ObjectReport, len(srcs))
	errs := make([]error, len(srcs))
	sem := make(chan struct{}, o.Jobs)
	var wg sync.WaitGroup
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			reports[i], errs[i] = compileOne(ctx, clang, flags, src, o.OutDir)
			if errs[i] == nil && o.Log != nil {
				o.Log.WithFields(logrus.Fields{"object": reports[i].Name, "compile_ms": reports[i].CompileMS,
					"peak_rss_mib": reports[i].PeakRSSBytes >> 20}).Info("compiled")
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return reports, err
	}
	return reports, nil
}

func compileOne(ctx context.Context, clang string, flags []string, src, outDir string) (ObjectReport, error) {
	name := strings.TrimSuffix(filepath.Base(src), ".c")
	out := filepath.Join(outDir, name+".o")
	r := ObjectReport{Name: name, Source: filepath.Base(src)}
	cmd := exec.CommandContext(ctx, clang, append(append([]string(nil), flags...), "-c", src, "-o", out)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	r.CompileMS = float64(time.Since(start).Microseconds()) / 1000
	if cmd.ProcessState != nil {
		r.PeakRSSBytes = peakRSS(cmd.ProcessState)
	}
	if err != nil {
		return r, fmt.Errorf("compile %s: %w: %v\n%s", r.Source, ErrCompile, err, tail(stderr.String(), 20))
	}
	st, err := os.Stat(out)
	if err != nil {
		return r, fmt.Errorf("compile %s: %w", r.Source, err)
	}
	r.Bytes = st.Size()
	return r, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
