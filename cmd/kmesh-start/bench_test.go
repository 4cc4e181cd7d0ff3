package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// benchBins builds kmesh-start and kmesh-daemon once per benchmark.
func benchBins(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	for _, p := range []string{"kmesh-start", "kmesh-daemon"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, p), "kmesh.dev/kmesh/cmd/"+p).CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v %s", p, err, out)
		}
	}
	return dir
}

// memCgroup is a fresh memory cgroup whose peak usage covers every process
// of one start (kmesh-start, clang, kmesh-daemon).
type memCgroup struct {
	procs, peakFile string
	del             func()
}

func newMemCgroup(b *testing.B) *memCgroup {
	b.Helper()
	name := fmt.Sprintf("kmesh-bench-%d-%d", os.Getpid(), time.Now().UnixNano())
	if cgroups.Mode() == cgroups.Unified {
		parent, _ := cgroup2.PidGroupPath(os.Getpid())
		group := filepath.Join(filepath.Dir(parent), name)
		m, err := cgroup2.NewManager("/sys/fs/cgroup", group, &cgroup2.Resources{})
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join("/sys/fs/cgroup", group)
		return &memCgroup{procs: filepath.Join(p, "cgroup.procs"), peakFile: filepath.Join(p, "memory.peak"), del: func() { m.Delete() }}
	}
	own, err := cgroup1.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(own["memory"], name)
	cg, err := cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{}, cgroup1.WithHiearchy(cgroup1.SingleSubsystem(cgroup1.Default, cgroup1.Memory)))
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join("/sys/fs/cgroup/memory", path)
	return &memCgroup{procs: filepath.Join(p, "cgroup.procs"), peakFile: filepath.Join(p, "memory.max_usage_in_bytes"), del: func() { cg.Delete() }}
}

func (m *memCgroup) peak(b *testing.B) float64 {
	v, err := os.ReadFile(m.peakFile)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := strconv.ParseFloat(strings.TrimSpace(string(v)), 64)
	return n / (1 << 20)
}

// command runs bin with args inside the cgroup (it joins before exec).
func (m *memCgroup) command(bin string, args ...string) *exec.Cmd {
	return exec.Command("sh", append([]string{"-c", `echo $$ > "$0" && exec "$@"`, m.procs, bin}, args...)...)
}

type benchEnv struct{ dir, cache, state, bpffs, cg string }

func newBenchEnv(b *testing.B) *benchEnv {
	d := b.TempDir()
	e := &benchEnv{dir: d, cache: filepath.Join(d, "cache"), state: filepath.Join(d, "run"), bpffs: filepath.Join(d, "bpffs"), cg: filepath.Join(d, "cg")}
	return e
}

func (e *benchEnv) args(extra ...string) []string {
	return append([]string{"--cache-dir", e.cache, "--state-dir", e.state, "--src-dir", "../..", "--bpf-fs-path", e.bpffs, "--cgroup2-path", e.cg}, extra...)
}

func (e *benchEnv) uninstall(b *testing.B, bins string) {
	if out, err := exec.Command(filepath.Join(bins, "kmesh-daemon"), "uninstall", "--bpf-fs-path", e.bpffs, "--cgroup2-path", e.cg).CombinedOutput(); err != nil {
		b.Fatalf("uninstall: %v %s", err, out)
	}
}

// BenchmarkColdStart: empty cache, probe + build + verify (kmesh-start
// --dry-run). Goal < 15 s; peak memory of all processes goal < 256 MiB.
func BenchmarkColdStart(b *testing.B) {
	bins := benchBins(b)
	e := newBenchEnv(b)
	defer e.uninstall(b, bins)
	var peak float64
	for b.Loop() {
		b.StopTimer()
		os.RemoveAll(e.cache)
		cg := newMemCgroup(b)
		cmd := cg.command(filepath.Join(bins, "kmesh-start"), e.args("--dry-run")...)
		b.StartTimer()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("cold start: %v\n%s", err, out)
		}
		b.StopTimer()
		peak = max(peak, cg.peak(b))
		cg.del()
		b.StartTimer()
	}
	b.ReportMetric(peak, "peak-MiB")
}

// BenchmarkWarmStartToReady: cache hit, kmesh-start execs the daemon, timed
// until /ready answers 200; "fresh" uninstalls between runs (no pins to
// adopt: maps are created), "restart" keeps the pins (a DaemonSet restart).
// Goal < 1 s.
func BenchmarkWarmStartToReady(b *testing.B) {
	bins := benchBins(b)
	for _, mode := range []string{"fresh", "restart"} {
		b.Run(mode, func(b *testing.B) {
			e := newBenchEnv(b)
			defer e.uninstall(b, bins)
			if out, err := exec.Command(filepath.Join(bins, "kmesh-start"), e.args("--dry-run")...).CombinedOutput(); err != nil {
				b.Fatalf("fill the cache: %v %s", err, out)
			}
			var peak float64
			for b.Loop() {
				b.StopTimer()
				l, _ := net.Listen("tcp", "127.0.0.1:0")
				admin := l.Addr().String()
				l.Close()
				cg := newMemCgroup(b)
				cmd := cg.command(filepath.Join(bins, "kmesh-start"), e.args("--admin-addr", admin, "--metrics-addr", "127.0.0.1:0")...)
				b.StartTimer()
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				deadline := time.Now().Add(20 * time.Second)
				for {
					resp, err := http.Get("http://" + admin + "/ready")
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == 200 {
							break
						}
					}
					if time.Now().After(deadline) {
						b.Fatal("not ready in 20 s")
					}
					time.Sleep(5 * time.Millisecond)
				}
				b.StopTimer()
				cmd.Process.Signal(os.Interrupt)
				cmd.Wait()
				peak = max(peak, cg.peak(b))
				cg.del()
				if mode == "fresh" {
					e.uninstall(b, bins)
				}
				b.StartTimer()
			}
			b.ReportMetric(peak, "peak-MiB")
		})
	}
}
