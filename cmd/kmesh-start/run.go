package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/builder"
	"kmesh.dev/kmesh/daemon/loader"
	"kmesh.dev/kmesh/probe"
)

// execFunc replaces the process (syscall.Exec); tests pass a recorder.
type execFunc func(argv0 string, argv []string, envv []string) error

// dryRunOutput is what --dry-run --output json prints.
type dryRunOutput struct {
	Decision *probe.Record   `json:"decision"`
	Build    *builder.Report `json:"build"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, exec execFunc) int {
	o, err := parseArgs(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "kmesh-start: %v\n%s", err, usage)
		return 2
	}
	log := logrus.New()
	log.SetOutput(stderr)
	if v := os.Getenv("KMESH_LOG_LEVEL"); v != "" {
		if lvl, err := logrus.ParseLevel(v); err == nil {
			log.SetLevel(lvl)
		} else {
			log.WithField("KMESH_LOG_LEVEL", v).Warn("unknown log level (want error, warn, info, debug or trace); logging at info")
		}
	}
	l := log.WithField("subsys", "start")
	mode, err := probe.ParseMode(o.mode)
	if err != nil {
		fmt.Fprintf(stderr, "kmesh-start: %v\n", err)
		return 2
	}
	begin := time.Now()
	phase := func(name string, since time.Time, f logrus.Fields) {
		if f == nil {
			f = logrus.Fields{}
		}
		f["phase"], f["duration_ms"] = name, time.Since(since).Milliseconds()
		l.WithFields(f).Info("phase done")
	}

	// 1. mounts (the probe then sees what the daemon will use)
	t := time.Now()
	mb, mc, err := loader.EnsureMounts(loader.Config{BPFFSPath: o.bpffsPath, Cgroup2Path: o.cgroup2Path, Log: log})
	if err != nil {
		l.WithError(err).Error("cannot prepare the mounts; no mode can run")
		return 1
	}
	phase("mount", t, logrus.Fields{"mounted_bpffs": mb, "mounted_cgroup2": mc})

	// 2. probe and decide
	t = time.Now()
	sig := probe.Probe(probe.Config{HostRoot: o.hostRoot, BPFHeader: o.bpfHeader, BPFFSPath: o.bpffsPath, Cgroup2Path: o.cgroup2Path, Live: true, Log: log})
	rec, err := probe.Decide(sig, mode, time.Now())
	if err != nil {
		for _, r := range rec.Reasons {
			l.WithField("reason", r).Error("decision")
		}
		l.WithError(err).Error("no mode can run on this host")
		if o.dryRun {
			writeDryRun(stdout, o.output, rec, nil)
		}
		return 1
	}
	phase("probe", t, logrus.Fields{"mode": rec.Mode, "checks": len(rec.Checks)})
	// The probe's garbage (kernel BTF decoded, probe programs) is returned
	// before the compilers run: the start's peak is counted against the
	// container's memory limit.
	debug.FreeOSMemory()
	for _, r := range rec.Reasons {
		l.WithField("reason", r).Info("decision")
	}

	// 3. build or hit the cache, verify
	t = time.Now()
	rep, err := buildFor(ctx, o, rec, log)
	if err != nil {
		l.WithError(err).Error("build failed; no mode can run")
		if o.dryRun {
			writeDryRun(stdout, o.output, rec, rep)
		}
		return 1
	}
	phase("build", t, logrus.Fields{"mode": rep.Mode, "cache_hit": rep.CacheHit, "objects": rep.ObjectsDir})
	rec.Mode = rep.Mode
	rec.Reasons = append(rec.Reasons, rep.Fallbacks...)

	recPath := filepath.Join(o.stateDir, "decision.json")
	if err := writeJSON(recPath, rec); err != nil {
		l.WithError(err).Warn("decision record not written; /status will not show it")
		recPath = ""
	}
	if o.objectsLink != "" {
		if err := linkObjects(rep.ObjectsDir, o.objectsLink); err != nil {
			if o.dryRun { // the link is what was asked for
				l.WithError(err).Error("objects built and verified, but not linked")
				writeDryRun(stdout, o.output, rec, rep)
				return 1
			}
			l.WithError(err).Warn("objects not linked; the daemon uses them from the cache")
		} else {
			l.WithFields(logrus.Fields{"link": o.objectsLink, "objects": rep.ObjectsDir}).Info("objects linked")
		}
	}
	if o.dryRun {
		writeDryRun(stdout, o.output, rec, rep)
		phase("dry-run", begin, nil)
		return 0
	}

	// 4. hand off: the daemon replaces this process
	daemon, err := daemonPath(o.daemon)
	if err != nil {
		l.WithError(err).Error("cannot start the daemon")
		return 1
	}
	argv := []string{daemon, "--mode=" + string(rep.Mode), "--bpf-dir=" + rep.ObjectsDir,
		"--build-report=" + filepath.Join(filepath.Dir(rep.ObjectsDir), builder.ReportName)}
	if recPath != "" {
		argv = append(argv, "--decision="+recPath)
	}
	argv = append(argv, o.daemonArgs...)
	phase("start", begin, logrus.Fields{"daemon": daemon, "args": argv[1:]})
	if err := exec(daemon, argv, daemonEnv(os.Environ(), rec, l)); err != nil {
		l.WithError(err).Error("exec kmesh-daemon")
		return 1
	}
	return 0
}

// buildFor builds for the decided mode and, in enhanced mode (not on a dry
// run), loads kmesh.ko. An enhanced build or module load that fails falls
// back to a compat build, with the reason; a failing compat build is an error.
func buildFor(ctx context.Context, o options, rec *probe.Record, log logrus.FieldLogger) (*builder.Report, error) {
	cfg := builder.Config{Record: rec, SrcDir: o.srcDir, CacheDir: o.cacheDir, Clang: o.clang, Log: log}
	rep, err := builder.Build(ctx, cfg)
	if err != nil || rep.Mode != probe.ModeEnhanced || o.dryRun {
		return rep, err
	}
	t := time.Now()
	res, err := builder.LoadModule(rep.ModulePath)
	if err == nil {
		rep.Module.Load = string(res)
		log.WithFields(logrus.Fields{"subsys": "start", "phase": "module", "result": res, "duration_ms": time.Since(t).Milliseconds()}).Info("kmesh.ko ready")
		return rep, nil
	}
	reason := "kmesh.ko could not be loaded, running compat: " + err.Error()
	log.WithError(err).Warn("falling back to compat mode")
	compat := *rec
	compat.Mode = probe.ModeCompat
	cfg.Record = &compat
	crep, cerr := builder.Build(ctx, cfg)
	if crep != nil {
		crep.Fallbacks = append([]string{reason}, crep.Fallbacks...)
		crep.Module = rep.Module
		crep.Module.Error = err.Error()
	}
	return crep, cerr
}

func daemonPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "kmesh-daemon")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("kmesh-daemon")
	if err != nil {
		return "", fmt.Errorf("find kmesh-daemon (next to kmesh-start or on PATH; --daemon sets it): %w", err)
	}
	return p, nil
}

// linkObjects points the symlink link at dir (made absolute), replacing an
// earlier symlink atomically; anything else at link is left alone.
func linkObjects(dir, link string) error {
	target, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("link objects: %w", err)
	}
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("link objects: %s exists and is not a symlink; remove it or pick another --objects-link", link)
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("link objects: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", link, os.Getpid())
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("link objects: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link objects: %w", err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeDryRun(w io.Writer, output string, rec *probe.Record, rep *builder.Report) {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(dryRunOutput{Decision: rec, Build: rep})
		return
	}
	rec.WriteText(w)
	if rep != nil {
		fmt.Fprintf(w, "build: mode %s, cache hit %v, objects %s, %.0f ms\n", rep.Mode, rep.CacheHit, rep.ObjectsDir, rep.DurationMS)
		for _, f := range rep.Fallbacks {
			fmt.Fprintf(w, "  - %s\n", f)
		}
	}
}
