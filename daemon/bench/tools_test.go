package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveObjects()
	os.Exit(code)
}

// settings are the benchmark's knobs (environment, -short).
type settings struct {
	duration time.Duration
	rounds   int
	conc     int
	payload  int
	services int
	eps      int
	reloads  int
	nice     int
	out      string
}

func loadSettings(t testing.TB) settings {
	t.Helper()
	s := settings{duration: 3 * time.Second, rounds: 6, conc: 4, payload: 1024, services: 10000, eps: 10, reloads: 3,
		out: filepath.Join(repoRoot(), "out", "bench-traffic.md")}
	if testing.Short() {
		s.duration, s.rounds, s.reloads = time.Second, 1, 1
	}
	if v := os.Getenv("KMESH_BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 500*time.Millisecond || d > 5*time.Minute {
			t.Fatalf("KMESH_BENCH_DURATION=%q: want a duration from 500ms to 5m", v)
		}
		s.duration = d
	}
	for _, e := range []struct {
		name     string
		dst      *int
		min, max int
	}{
		{"KMESH_BENCH_ROUNDS", &s.rounds, 1, 50},
		{"KMESH_BENCH_CONC", &s.conc, 1, 256},
		{"KMESH_BENCH_PAYLOAD", &s.payload, 0, 1 << 20},
		{"KMESH_BENCH_RELOADS", &s.reloads, 1, 50},
		{"KMESH_BENCH_NICE", &s.nice, -20, 19},
	} {
		if v := os.Getenv(e.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < e.min || n > e.max {
				t.Fatalf("%s=%q: want an integer from %d to %d", e.name, v, e.min, e.max)
			}
			*e.dst = n
		}
	}
	if v := os.Getenv("KMESH_BENCH_SERVICES"); v != "" {
		if _, err := fmt.Sscanf(v, "%dx%d", &s.services, &s.eps); err != nil || s.services < 1 || s.services > 30000 || s.eps < 1 || s.eps > 64 {
			t.Fatalf("KMESH_BENCH_SERVICES=%q: want SERVICESxENDPOINTS, e.g. 10000x10", v)
		}
	}
	if v := os.Getenv("KMESH_BENCH_OUT"); v != "" {
		s.out = v
	}
	return s
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// tools are the external programs the benchmark runs.
type tools struct {
	fortio, haproxy       string
	iptables              string
	fortioVer, haproxyVer string
}

// findTools fails (never skips) when a tool is missing, naming the package.
func findTools(t testing.TB) tools {
	t.Helper()
	var tl tools
	tl.fortio = lookTool("FORTIO", "fortio", goBin())
	if tl.fortio == "" {
		t.Fatal("fortio not found (load generator and backend): install it with `go install fortio.org/fortio@v1.66.0` " +
			"(newer versions are refused by the module proxy), or set FORTIO to its path")
	}
	tl.haproxy = lookTool("HAPROXY", "haproxy", "")
	if tl.haproxy == "" {
		t.Fatal("haproxy not found (the sidecar stand-in): install the Debian package with `apt-get install haproxy` (make deps), or set HAPROXY")
	}
	tl.iptables = lookTool("IPTABLES", "iptables", "")
	if tl.iptables == "" {
		t.Fatal("iptables not found (the sidecars' traffic capture): install the Debian package with `apt-get install iptables` (make deps), or set IPTABLES")
	}
	tl.fortioVer = firstLine(output(tl.fortio, "version"))
	tl.haproxyVer = firstLine(output(tl.haproxy, "-v"))
	return tl
}

// lookTool returns $env, else name on $PATH, else name in dir.
func lookTool(env, name, dir string) string {
	if p := os.Getenv(env); p != "" {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
		return ""
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if dir != "" {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// goBin is where `go install` puts binaries.
func goBin() string {
	if out := strings.TrimSpace(output(goTool(), "env", "GOBIN")); out != "" {
		return out
	}
	if out := strings.TrimSpace(output(goTool(), "env", "GOPATH")); out != "" {
		return filepath.Join(strings.Split(out, string(os.PathListSeparator))[0], "bin")
	}
	return ""
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// output runs a short command and returns its combined output ("" on error).
func output(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(b)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

// proc is a child process the benchmark started; it is killed by PID at
// cleanup (or by kill) and reaped.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *capBuffer
	done chan struct{}
	err  error
}

// startProc starts args[0] with its output captured (bounded) and also
// copied to tee when not nil. The child gets SIGKILL if the benchmark
// process dies (Pdeathsig).
func startProc(t testing.TB, name string, tee io.Writer, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &capBuffer{max: 256 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	var w io.Writer = p.out
	if tee != nil {
		w = io.MultiWriter(p.out, tee)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s (%s): %v", name, strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's PID and waits up to 5 s, then kills it.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.kill()
	}
}

// kill sends SIGKILL to the child's PID and reaps it.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// cpu returns the child's user+system CPU time so far (/proc/PID/stat).
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0
	}
	// fields after the parenthesised command name; utime, stime are 14, 15
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on Linux for every architecture Go supports.
const clockTicks = 100

// procStatusKB returns a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("parse %s %q: %w", field, line, err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// capBuffer keeps the first max bytes written to it.
type capBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// lineEvents sends each complete line that contains one of match, with the
// time it arrived, to C (dropped when C is full).
type lineEvents struct {
	match []string
	C     chan lineEvent
	mu    sync.Mutex
	part  []byte
}

type lineEvent struct {
	at   time.Time
	line string
}

func newLineEvents(match ...string) *lineEvents {
	return &lineEvents{match: match, C: make(chan lineEvent, 64)}
}

func (l *lineEvents) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		line := string(l.part[:i])
		l.part = l.part[i+1:]
		for _, m := range l.match {
			if strings.Contains(line, m) {
				select {
				case l.C <- lineEvent{now, line}:
				default:
				}
				break
			}
		}
	}
	if len(l.part) > 1<<20 {
		l.part = nil
	}
	return len(p), nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// cpuSnap is the machine's busy CPU time and the benchmark's own share.
type cpuSnap struct {
	at          time.Time
	busy, steal time.Duration // all CPUs: user+nice+system; steal
	ours        time.Duration // this process, its reaped children and live
}

// snapCPU reads /proc/stat and the CPU time of this process, its waited-for
// children and the live children given.
func snapCPU(live ...*proc) cpuSnap {
	s := cpuSnap{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(firstLine(string(b)))
		var v [9]int64
		for i := 1; i < len(f) && i < 9; i++ {
			v[i], _ = strconv.ParseInt(f[i], 10, 64)
		}
		s.busy = time.Duration(v[1]+v[2]+v[3]) * time.Second / clockTicks
		s.steal = time.Duration(v[8]) * time.Second / clockTicks
	}
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		str := string(b)
		f := strings.Fields(str[strings.LastIndexByte(str, ')')+1:])
		var sum int64
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			n, _ := strconv.ParseInt(f[i], 10, 64)
			sum += n
		}
		s.ours = time.Duration(sum) * time.Second / clockTicks
	}
	for _, p := range live {
		if p != nil {
			s.ours += p.cpu()
		}
	}
	return s
}

// others is the share of the machine's CPU capacity that processes other
// than the benchmark's used between a and b, and the steal share.
func others(a, b cpuSnap) (other, steal float64) {
	capacity := float64(b.at.Sub(a.at)) * float64(runtime.NumCPU())
	if capacity <= 0 {
		return 0, 0
	}
	return max(0, float64((b.busy-a.busy)-(b.ours-a.ours))) / capacity, float64(b.steal-a.steal) / capacity
}
