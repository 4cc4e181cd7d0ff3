package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon"
	"kmesh.dev/kmesh/daemon/config/configtest"
)

// daemonFigures is what one kmesh-daemon process with a large config showed.
type daemonFigures struct {
	format        string // yaml or json
	services, eps int
	configBytes   int
	ready         time.Duration // process start to /ready
	settled       time.Duration // process start to the watcher's first pass done
	rssReady      int64         // KiB, VmRSS once ready and settled
	rssEnd        int64         // KiB, VmRSS after the reloads
	hwm           int64         // KiB, VmHWM: peak RSS over the whole run
	heapInuse     float64       // bytes, go_memstats_heap_inuse_bytes at the end
	statusCost    time.Duration // one GET /status with this config
	reloads       map[string][]reload
}

// The reload kinds, in report order.
var reloadKinds = []string{"one endpoint changed", "all endpoints changed"}

// reload is one config change, timed from the start of writing the file.
type reload struct {
	logged  time.Duration // → the daemon logs "config applied" (the model is in effect)
	status  time.Duration // → GET /status answered with the new config_version
	watcher time.Duration // the daemon's own read + parse + apply time (its log)
	apply   time.Duration // of which map writes (last_apply.Duration)
	version string
}

// benchDaemon runs kmesh-daemon as its own process (so its RSS is its own)
// with services x endpoints in each format, and times config reloads.
func benchDaemon(b *testing.B, s settings, rep *report) {
	if rep.daemon != nil { // called again for -benchtime > 1x: measured once
		rep.reportDaemon(b)
		return
	}
	bin := daemonBinary(b)
	objs := objects(b)
	formats := []string{"yaml", "json"}
	if testing.Short() {
		formats = formats[:1]
	}
	for _, format := range formats {
		f := runDaemon(b, s, bin, objs, format)
		rep.daemon = append(rep.daemon, f)
	}
	rep.reportDaemon(b)
}

// reportDaemon reports the YAML run's headline figures as benchmark metrics.
func (rep *report) reportDaemon(b *testing.B) {
	if len(rep.daemon) == 0 {
		return
	}
	f := rep.daemon[0]
	b.ReportMetric(float64(f.rssReady)/1024, "RSS-MiB")
	b.ReportMetric(float64(f.hwm)/1024, "peakRSS-MiB")
	b.ReportMetric(float64(medianDur(f.reloads[reloadKinds[0]], func(r reload) time.Duration { return r.status }))/1e6, "reload-ms")
}

func runDaemon(b *testing.B, s settings, bin, objs, format string) *daemonFigures {
	b.Helper()
	render := configtest.Config.YAML
	if format == "json" {
		render = configtest.Config.JSON
	}
	base := b.TempDir()
	cfg := filepath.Join(base, "kmesh."+format)
	baseCfg := render(configtest.Large(s.services, s.eps, 8080))
	oneSvcs := configtest.Large(s.services, s.eps, 8080)
	oneSvcs.Clusters[s.services/2].Endpoints[s.eps/2] = "10.250.0.1:9999"
	alts := map[string]string{
		reloadKinds[0]: render(oneSvcs),                                   // the common edit
		reloadKinds[1]: render(configtest.Large(s.services, s.eps, 8081)), // every cluster rewritten
	}
	writeFileAtomic(b, cfg, baseCfg)
	f := &daemonFigures{format: format, services: s.services, eps: s.eps, configBytes: len(baseCfg), reloads: map[string][]reload{}}

	ulog := logrus.New()
	ulog.SetOutput(io.Discard)
	opts := daemon.Options{BPFFSPath: filepath.Join(base, "bpffs"), Cgroup2Path: filepath.Join(base, "cgroup2"), Log: ulog}
	b.Cleanup(func() {
		if err := daemon.Uninstall(opts); err != nil {
			b.Errorf("uninstall the kmesh-daemon process's data plane: %v", err)
		}
	})
	admin, metrics := freeAddr(b), freeAddr(b)
	events := newLineEvents(`msg="config applied"`, `msg="config rejected`, `msg="config apply failed"`, `msg="watching config"`)
	start := time.Now()
	p := startProc(b, "kmesh-daemon", events, []string{"KMESH_LOG_LEVEL=info"}, bin, "--mode=compat", "--config", cfg,
		"--bpf-dir", objs, "--bpf-fs-path", opts.BPFFSPath, "--cgroup2-path", opts.Cgroup2Path,
		"--admin-addr", admin, "--metrics-addr", metrics)
	b.Cleanup(p.stop) // SIGTERM by PID (a clean shutdown); startProc's cleanup kills it if still there
	if err := waitReady(admin, 120*time.Second, func() error {
		if p.exited() {
			return fmt.Errorf("exited before ready: %v", p.err)
		}
		return nil
	}); err != nil {
		b.Fatalf("kmesh-daemon with %dx%d (%s): %v\n%s", s.services, s.eps, format, err, p.out)
	}
	f.ready = time.Since(start)
	st, err := status(admin)
	if err != nil || st.ConfigVersion == "" {
		b.Fatalf("/status: %+v %v", st, err)
	}
	version := st.ConfigVersion
	// The config watcher's first pass finds the file unchanged since start
	// (it is parsed once); wait for it so it does not overlap the first
	// timed reload.
	settle := time.After(120 * time.Second)
	for f.settled == 0 {
		select {
		case ev := <-events.C:
			switch {
			case strings.Contains(ev.line, `msg="watching config"`):
				f.settled = ev.at.Sub(start)
			case strings.Contains(ev.line, `msg="config applied"`) && strings.Contains(ev.line, "subsys=config"):
				b.Fatalf("the watcher's first pass parsed and applied the file again (version %s): %s", version, ev.line)
			case !strings.Contains(ev.line, `msg="config applied"`):
				b.Fatalf("first watcher pass: %s", ev.line)
			}
		case <-settle:
			b.Fatalf("no \"watching config\" from the watcher 120s after start\n%s", p.out)
		}
	}
	if f.rssReady, err = procStatusKB(p.pid(), "VmRSS"); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if _, err := status(admin); err != nil {
		b.Fatal(err)
	}
	f.statusCost = time.Since(t0)

	cur := baseCfg
	kinds := reloadKinds
	if testing.Short() {
		kinds = kinds[:1]
	}
	for _, kind := range kinds {
		for i := range s.reloads {
			next := alts[kind]
			if cur == next {
				next = baseCfg
			}
			r, err := timeReload(cfg, next, version, admin, p, events)
			if err != nil {
				b.Fatalf("reload (%s, %s) #%d: %v\n%s", format, kind, i+1, err, p.out)
			}
			cur, version = next, r.version
			f.reloads[kind] = append(f.reloads[kind], r)
			b.Logf("%s reload, %s: applied after %s, in /status after %s", format, kind, ms(r.logged), ms(r.status))
		}
	}
	if f.rssEnd, err = procStatusKB(p.pid(), "VmRSS"); err != nil {
		b.Fatal(err)
	}
	if f.hwm, err = procStatusKB(p.pid(), "VmHWM"); err != nil {
		b.Fatal(err)
	}
	if _, body, err := httpDo(http.MethodGet, "http://"+metrics+"/metrics"); err == nil {
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
				fmt.Sscanf(v, "%g", &f.heapInuse)
			}
		}
	}
	p.stop()
	if !p.exited() {
		b.Errorf("kmesh-daemon (pid %d) did not stop on SIGTERM", p.pid())
	}
	return f
}

// timeReload replaces cfg with content and waits (bounded: 120 s) for the
// daemon's "config applied" log line, then checks /status reports that
// version. The log line is read as it arrives, so waiting costs the daemon
// nothing (polling /status would: it renders every service).
func timeReload(cfg, content, prev, admin string, p *proc, events *lineEvents) (reload, error) {
	for len(events.C) > 0 {
		<-events.C
	}
	start := time.Now()
	tmp := cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return reload{}, err
	}
	if err := os.Rename(tmp, cfg); err != nil {
		return reload{}, err
	}
	timeout := time.After(120 * time.Second)
	for {
		select {
		case ev := <-events.C:
			if !strings.Contains(ev.line, `msg="config applied"`) {
				return reload{}, fmt.Errorf("daemon: %s", ev.line)
			}
			if !strings.Contains(ev.line, "subsys=config") {
				continue // the applier's line; the watcher's follows
			}
			m := appliedLine.FindStringSubmatch(ev.line)
			if m == nil {
				return reload{}, fmt.Errorf("unexpected log line %q", ev.line)
			}
			if m[2] == prev {
				continue // a pass over the previous content (a poll or a late event)
			}
			r := reload{logged: ev.at.Sub(start), version: m[2]}
			r.watcher, _ = time.ParseDuration(m[1])
			version := m[2]
			st, err := status(admin)
			if err != nil {
				return r, err
			}
			r.status = time.Since(start)
			if st.ConfigVersion != version {
				return r, fmt.Errorf("/status config_version %s, the daemon logged %s applied", st.ConfigVersion, version)
			}
			if st.LastApply != nil {
				r.apply = st.LastApply.Duration
			}
			return r, nil
		case <-p.done:
			return reload{}, fmt.Errorf("kmesh-daemon exited: %v", p.err)
		case <-timeout:
			return reload{}, fmt.Errorf("no \"config applied\" 120s after the write")
		}
	}
}

var appliedLine = regexp.MustCompile(`msg="config applied".* duration=([0-9.]+[a-zµ]+).* version=([0-9a-f]+)`)

type statusDoc struct {
	ConfigVersion string `json:"config_version"`
	LastError     string `json:"last_error"`
	LastApply     *struct {
		Duration time.Duration
	} `json:"last_apply"`
}

func status(admin string) (statusDoc, error) {
	code, body, err := httpDo(http.MethodGet, "http://"+admin+"/status")
	if err != nil || code != http.StatusOK {
		return statusDoc{}, fmt.Errorf("GET /status: %d %v", code, err)
	}
	var st statusDoc
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return statusDoc{}, fmt.Errorf("parse /status: %w", err)
	}
	return st, nil
}

// daemonBinary builds cmd/kmesh-daemon (or uses $KMESH_DAEMON_BIN).
func daemonBinary(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("KMESH_DAEMON_BIN"); p != "" {
		if !fileExists(p) {
			b.Fatalf("KMESH_DAEMON_BIN=%s does not exist", p)
		}
		return p
	}
	out := filepath.Join(b.TempDir(), "kmesh-daemon")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, "./cmd/kmesh-daemon")
	cmd.Dir = repoRoot()
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/kmesh-daemon: %v\n%s", err, msg)
	}
	return out
}
