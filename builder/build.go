package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/probe"
)

// Config is one build for a decision record.
type Config struct {
	Record *probe.Record
	// SrcDir holds bpf/ (and kmod/) as shipped in the image.
	SrcDir string
	// CacheDir is the content-addressed cache; when it cannot be written the
	// build goes to WorkDir uncached (and the report says why).
	CacheDir string
	WorkDir  string
	// Keep is how many cache entries to keep (default 4).
	Keep           int
	Clang, Bpftool string
	Log            logrus.FieldLogger
}

// Report is the build report: written next to the objects and shown in the
// daemon's /status.
type Report struct {
	Mode       probe.Mode        `json:"mode"`
	Fallbacks  []string          `json:"fallbacks,omitempty"`
	CacheHit   bool              `json:"cache_hit"`
	CacheKey   string            `json:"cache_key"`
	CacheNote  string            `json:"cache_note,omitempty"`
	ObjectsDir string            `json:"objects_dir"`
	Inputs     map[string]string `json:"inputs"`
	Jobs       int               `json:"compile_jobs"`
	MemLimit   uint64            `json:"memory_limit_bytes"`
	Objects    []ObjectReport    `json:"objects,omitempty"`
	Verify     []VerifyReport    `json:"verify,omitempty"`
	// Module is kmesh.ko's build (enhanced mode), ModulePath its file.
	Module     *ModuleReport `json:"module,omitempty"`
	ModulePath string        `json:"module_path,omitempty"`
	// PeakRSSBytes is the largest resident set among the compilers run (0 on a cache hit).
	PeakRSSBytes uint64   `json:"peak_rss_bytes"`
	DurationMS   float64  `json:"duration_ms"`
	Pruned       []string `json:"pruned,omitempty"`
}

// ReportName is the build report's file name, next to the objects.
const ReportName = "build-report.json"

// Build produces verified BPF objects for the record's mode, from the cache
// when an entry for exactly these inputs exists (no compiler runs), else by
// compiling, load-testing and storing them. An enhanced object the verifier
// rejects turns the build into a compat build, with the verifier's lines in
// Report.Verify and the reason in Report.Fallbacks.
func Build(ctx context.Context, cfg Config) (*Report, error) {
	start := time.Now()
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	log := cfg.Log.WithField("subsys", "builder")
	if cfg.Keep == 0 {
		cfg.Keep = 4
	}
	rec := *cfg.Record
	rep := &Report{Mode: rec.Mode}
	for {
		err := buildMode(ctx, cfg, &rec, rep, log)
		if err == nil {
			break
		}
		if rec.Mode == probe.ModeEnhanced && (errors.Is(err, ErrVerifier) || errors.Is(err, ErrKbuild) || errors.Is(err, ErrVermagic) || errors.Is(err, errNoBuildTree)) {
			reason := "enhanced build failed, built compat instead: " + err.Error()
			log.WithError(err).Warn("falling back to compat mode")
			rep.Fallbacks = append(rep.Fallbacks, reason)
			rec.Mode = probe.ModeCompat
			rep.Mode = probe.ModeCompat
			continue
		}
		rep.DurationMS = ms(time.Since(start))
		return rep, err
	}
	rep.DurationMS = ms(time.Since(start))
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(filepath.Dir(rep.ObjectsDir), ReportName), b, 0o644); err != nil {
		log.WithError(err).Warn("build report not written")
	}
	log.WithFields(logrus.Fields{"mode": rep.Mode, "cache_hit": rep.CacheHit, "objects": rep.ObjectsDir,
		"duration_ms": rep.DurationMS, "peak_rss_mib": rep.PeakRSSBytes >> 20}).Info("build done")
	return rep, nil
}

func buildMode(ctx context.Context, cfg Config, rec *probe.Record, rep *Report, log logrus.FieldLogger) error {
	bpfSrc := filepath.Join(cfg.SrcDir, "bpf")
	clang := cfg.Clang
	if clang == "" {
		clang = "clang-19"
	}
	header := FeatureHeader(rec)
	inputs, err := cacheInputs(rec, bpfSrc, clang, header)
	if err != nil {
		return err
	}
	enhanced := rec.Mode == probe.ModeEnhanced
	var bt *probe.BuildTree
	if enhanced {
		if bt = rec.Inputs.BuildTree; bt == nil || bt.Path == "" {
			return fmt.Errorf("build kmesh.ko: %w", errNoBuildTree)
		}
		if err := moduleInputs(inputs, filepath.Join(cfg.SrcDir, "kmod"), bt); err != nil {
			return err
		}
	}
	key := keyOf(inputs)
	rep.Inputs, rep.CacheKey = inputs, key
	cache := &Cache{Dir: cfg.CacheDir, Keep: cfg.Keep}

	if cfg.CacheDir != "" {
		ent, err := cache.Lookup(key)
		switch {
		case err == nil:
			rep.CacheHit, rep.ObjectsDir, rep.Objects, rep.Verify = true, filepath.Join(ent.Dir, "bpf"), nil, nil
			if enhanced {
				rep.ModulePath = filepath.Join(ent.Dir, "kmod", ModuleName+".ko")
			}
			log.WithField("key", key[:12]).Info("cache hit: no compile")
			return nil
		case errors.Is(err, ErrCacheCorrupt):
			log.WithError(err).Warn("cache entry corrupt: removed, rebuilding")
			rep.CacheNote = err.Error()
		case !errors.Is(err, ErrCacheMiss):
			rep.CacheNote = err.Error()
		}
	}

	env := rec.Inputs.Environment
	var limit uint64
	if env != nil {
		limit = env.MemoryLimit
	}
	rep.MemLimit = limit
	rep.Jobs = Jobs(limit, runtime.NumCPU(), BPFJobBytes)
	build := func(dir string) error {
		o := BPFOptions{SrcDir: bpfSrc, OutDir: filepath.Join(dir, "bpf"), GenDir: filepath.Join(dir, "gen"),
			FeatureHeader: header, Enhanced: rec.Mode == probe.ModeEnhanced, Clang: clang, Bpftool: cfg.Bpftool,
			Jobs: rep.Jobs, Log: log}
		if !rec.Inputs.BPFHeaderUsable {
			o.VmlinuxBTF = filepath.Join(hostRootOr(rec.Inputs.HostRoot), "sys/kernel/btf/vmlinux")
		}
		objs, err := CompileBPF(ctx, o)
		rep.Objects = objs
		for _, ob := range objs {
			rep.PeakRSSBytes = max(rep.PeakRSSBytes, ob.PeakRSSBytes)
		}
		if err != nil {
			return err
		}
		if rep.Verify, err = VerifyObjects(o.OutDir); err != nil || !enhanced {
			return err
		}
		mod, err := BuildModule(ctx, ModuleOptions{SrcDir: filepath.Join(cfg.SrcDir, "kmod"), BuildTree: bt.Path, OutDir: filepath.Join(dir, "kbuild"),
			Release: rec.Kernel.Release, Compiler: bt.Compiler, Log: log})
		rep.Module = mod
		if mod != nil {
			rep.PeakRSSBytes = max(rep.PeakRSSBytes, mod.PeakRSSBytes)
		}
		if err != nil {
			return err
		}
		// keep only the module in the entry, not kbuild's intermediate files
		if err := os.MkdirAll(filepath.Join(dir, "kmod"), 0o755); err != nil {
			return err
		}
		if err := os.Rename(mod.Path, filepath.Join(dir, "kmod", ModuleName+".ko")); err != nil {
			return fmt.Errorf("keep kmesh.ko: %w", err)
		}
		return os.RemoveAll(filepath.Join(dir, "kbuild"))
	}

	if cfg.CacheDir != "" {
		ent, err := cache.Store(key, inputs, build)
		if err == nil {
			rep.ObjectsDir = filepath.Join(ent.Dir, "bpf")
			if enhanced {
				rep.ModulePath = filepath.Join(ent.Dir, "kmod", ModuleName+".ko")
			}
			if pruned, perr := cache.Prune(); perr == nil {
				rep.Pruned = pruned
			}
			return nil
		}
		if !errors.Is(err, ErrCacheWrite) {
			return err
		}
		rep.CacheNote = "cache not writable, built uncached: " + err.Error()
		log.WithError(err).Warn("cache not writable; building uncached")
	}
	work := cfg.WorkDir
	if work == "" {
		work = os.TempDir()
	}
	dir, err := os.MkdirTemp(work, "kmesh-build-")
	if err != nil {
		return fmt.Errorf("create build directory: %w", err)
	}
	if err := build(dir); err != nil {
		return err
	}
	rep.ObjectsDir = filepath.Join(dir, "bpf")
	if enhanced {
		rep.ModulePath = filepath.Join(dir, "kmod", ModuleName+".ko")
	}
	return nil
}

// errNoBuildTree: enhanced mode was decided without a usable build tree.
var errNoBuildTree = errors.New("no kernel build tree in the decision record")

// moduleInputs adds what kmesh.ko depends on to the cache key.
func moduleInputs(inputs map[string]string, kmodSrc string, bt *probe.BuildTree) error {
	files, err := moduleSources(kmodSrc)
	if err != nil {
		return err
	}
	h := sha256.New()
	for _, f := range files {
		sum, err := fileSHA256(f)
		if err != nil {
			return fmt.Errorf("hash module sources: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%s\n", filepath.Base(f), sum)
	}
	inputs["kmod_sources"] = hex.EncodeToString(h.Sum(nil))
	inputs["build_tree"] = bt.HostPath + " " + bt.Release
	inputs["cc"] = bt.CCVersionText + " " + bt.Compiler
	return nil
}

// cacheInputs are everything the objects depend on.
func cacheInputs(rec *probe.Record, bpfSrc, clang string, header []byte) (map[string]string, error) {
	src, err := HashTree(bpfSrc)
	if err != nil {
		return nil, err
	}
	tc, err := toolVersion(clang)
	if err != nil {
		return nil, fmt.Errorf("%w: %w (the image ships clang-19; --clang selects another)", ErrNoCompiler, err)
	}
	hs := sha256.Sum256(header)
	uapi := "host linux/bpf.h"
	if !rec.Inputs.BPFHeaderUsable {
		uapi = uapiDerivation
	}
	return map[string]string{
		"uapi_header":    uapi,
		"kernel_release": rec.Kernel.Release,
		"kernel_version": rec.Kernel.Version,
		"kconfig_hash":   rec.Inputs.KConfigHash,
		"btf_hash":       rec.Inputs.BTFHash,
		"bpf_sources":    src,
		"clang":          tc,
		"features":       hex.EncodeToString(hs[:]),
		"mode":           string(rec.Mode),
		"format":         "1", // bump when the entry layout changes
	}, nil
}

func keyOf(inputs map[string]string) string {
	keys := make([]string, 0, len(inputs))
	for k := range inputs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, inputs[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func toolVersion(tool string) (string, error) {
	p, err := exec.LookPath(tool)
	if err != nil {
		return "", fmt.Errorf("find %s: %w", tool, err)
	}
	out, err := exec.Command(p, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", tool, err)
	}
	return strings.SplitN(string(out), "\n", 2)[0], nil
}

func hostRootOr(r string) string {
	if r == "" {
		return "/"
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
