package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon/apply"
	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/daemon/loader"
	"kmesh.dev/kmesh/daemon/maps"
	"kmesh.dev/kmesh/daemon/netns"
)

// Daemon is a running data plane.
type Daemon struct {
	opts    Options
	log     logrus.FieldLogger
	dp      *loader.Dataplane
	maps    *maps.Maps
	metrics *metrics

	mu       sync.Mutex // guards everything below and serialises applies
	applier  *apply.Applier
	ready    bool
	enrolled map[uint64]string // cookie -> the reference it was enrolled by
	// loadedSum is the SHA-256 of the config file as applied at start, so
	// the watcher does not parse it a second time (the bytes are not kept).
	loadedSum *[sha256.Size]byte
	lastError string
	lastApply *apply.Result
	applies   int
	started   time.Time
}

// Run starts the daemon and blocks until ctx ends or a server fails. On
// return the programs stay attached through their pinned links.
func Run(ctx context.Context, opts Options) error {
	if err := opts.validate(); err != nil {
		return err
	}
	log := opts.Log.WithField("subsys", "daemon")
	d := &Daemon{opts: opts, log: log, enrolled: map[uint64]string{}, started: time.Now()}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raise memlock limit (needed before Linux 5.11): %w", err)
	}
	if note := opts.xdsNote(); note != "" {
		log.WithField("xds_address", opts.XDSAddress).Warn(note)
	}

	// Listen first: a port clash is reported before anything is touched.
	adminLn, err := net.Listen("tcp", opts.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen on admin address %s: %w", opts.AdminAddr, err)
	}
	metricsLn, err := net.Listen("tcp", opts.MetricsAddr)
	if err != nil {
		adminLn.Close()
		return fmt.Errorf("listen on metrics address %s: %w", opts.MetricsAddr, err)
	}

	model, cfgErr := d.loadConfig()
	dp, err := loader.Load(opts.loaderConfig())
	if err != nil {
		adminLn.Close()
		metricsLn.Close()
		return fmt.Errorf("load data plane: %w", err)
	}
	defer dp.Close()
	d.dp = dp
	if d.maps, err = maps.FromMaps(dp.Maps); err != nil {
		return fmt.Errorf("open data-plane maps: %w", err)
	}
	d.applier = apply.New(d.maps, opts.Log)
	d.metrics = newMetrics(d)
	if opts.NoSameNodeAccel {
		// what an earlier run accelerated carries on through TCP/IP; Attach
		// detaches its programs
		accelOff(opts.loaderConfig(), "start", log)
	} else if err := d.maps.SetAccelPassAll(false); err != nil { // an earlier run may have switched it off
		return fmt.Errorf("switch same-node acceleration on: %w", err)
	}

	// Fill the maps before the programs see traffic (or, when adopting, before
	// the new programs replace the old ones).
	if cfgErr != nil {
		d.setError(cfgErr)
	} else if err := d.applyModel(model); err != nil {
		return err
	}
	if err := dp.Attach(); err != nil {
		return fmt.Errorf("attach programs: %w", err)
	}
	for _, ref := range opts.EnrollNetns {
		if _, err := d.Enroll(ref); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.ready = cfgErr == nil
	d.mu.Unlock()
	log.WithFields(logrus.Fields{"mode": opts.Mode, "admin": adminLn.Addr().String(), "metrics": metricsLn.Addr().String(),
		"enrolled": len(opts.EnrollNetns), "startup_ms": time.Since(d.started).Milliseconds()}).Info("data plane ready")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	admin := &http.Server{Handler: d.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	mets := &http.Server{Handler: d.metrics.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { errc <- serve(admin, adminLn, "admin") }()
	go func() { errc <- serve(mets, metricsLn, "metrics") }()
	if opts.ConfigPath != "" {
		go func() {
			err := config.Watch(ctx, opts.ConfigPath, config.WatchOptions{Log: opts.Log, Applied: d.loadedSum}, d.applyModel, d.setError)
			if err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("watch config: %w", err)
			}
		}()
	}
	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	shut, done := context.WithTimeout(context.Background(), 2*time.Second)
	defer done()
	admin.Shutdown(shut)
	mets.Shutdown(shut)
	log.WithField("reason", reasonOf(err)).Info("stopping; programs stay attached through their pinned links")
	return err
}

func reasonOf(err error) string {
	if err == nil {
		return "signal"
	}
	return err.Error()
}

func serve(s *http.Server, ln net.Listener, name string) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s server: %w", name, err)
	}
	return nil
}

func (d *Daemon) loadConfig() (*config.Model, error) {
	if d.opts.ConfigPath == "" {
		m, err := config.LoadDefault()
		if err != nil {
			return nil, fmt.Errorf("load embedded default config: %w", err)
		}
		d.log.WithField("config", "embedded default").Info("config loaded")
		return m, nil
	}
	m, content, err := config.LoadFileContent(d.opts.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	d.loadedSum = config.AppliedSum(content)
	d.log.WithFields(logrus.Fields{"config": d.opts.ConfigPath, "version": m.Version}).Info("config loaded")
	if len(content) > largeYAML && !bytes.HasPrefix(bytes.TrimLeft(content, " \t\r\n"), []byte("{")) {
		d.log.WithFields(logrus.Fields{"config": d.opts.ConfigPath, "bytes": len(content)}).Warn(
			"large YAML config: the same config as JSON applies in about half the time with a third less memory (docs/benchmarks.md); write large configs as JSON")
	}
	return m, nil
}

// largeYAML is the size from which a YAML config gets a hint to use JSON:
// 10,000 services take 15 MB, 2 s and 85 MiB as YAML, 0.7 s and 55 MiB as
// JSON (the YAML parser builds a node tree of the whole file first).
const largeYAML = 4 << 20

// applyModel writes a new model into the maps (serialised).
func (d *Daemon) applyModel(m *config.Model) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur := d.applier.Current(); cur != nil && cur.Version == m.Version {
		return nil // the watcher's first read of the file applied at start
	}
	r, err := d.applier.Apply(m)
	if err != nil {
		d.metrics.applies.WithLabelValues("failed").Inc()
		d.lastError = err.Error()
		d.log.WithError(err).Error("config apply failed")
		return fmt.Errorf("%w: %w", errApply, err)
	}
	d.metrics.applies.WithLabelValues("applied").Inc()
	// Parsing a large config leaves hundreds of MiB of garbage (10k services
	// in YAML: ~750 MiB); hand it back now rather than keep it as RSS.
	debug.FreeOSMemory()
	d.applies++
	d.lastApply = &r
	d.lastError = ""
	d.ready = true
	for _, n := range m.Unsupported {
		d.log.WithField("note", n.String()).Warn("not applied in compat mode")
	}
	return nil
}

// errApply marks failures applyModel already counted and logged.
var errApply = errors.New("apply config")

// setError records a rejected config; the last good one keeps running.
func (d *Daemon) setError(err error) {
	if errors.Is(err, errApply) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.metrics != nil {
		d.metrics.applies.WithLabelValues("rejected").Inc()
	}
	d.lastError = err.Error()
	d.log.WithError(err).Error("config rejected; the last good config keeps running")
}

// EnrolledNetns is one enrolled namespace.
type EnrolledNetns struct {
	Ref    string `json:"ref,omitempty"`
	Cookie uint64 `json:"cookie"`
}

// Enroll puts a network namespace under kmesh's management.
func (d *Daemon) Enroll(ref string) (EnrolledNetns, error) {
	p, err := netns.Path(ref)
	if err != nil {
		return EnrolledNetns{}, fmt.Errorf("enroll: %w", err)
	}
	c, err := netns.Cookie(p)
	if err != nil {
		return EnrolledNetns{}, fmt.Errorf("enroll %s: %w", ref, err)
	}
	if err := d.maps.Enroll(c); err != nil {
		return EnrolledNetns{}, fmt.Errorf("enroll %s: %w", ref, err)
	}
	// Same-node acceleration takes connections to these addresses from the
	// first one; what this misses (addresses added later) it learns as
	// sockets establish, so a failure here costs only that.
	if addrs, err := netns.Addrs(p); err != nil {
		d.log.WithFields(logrus.Fields{"netns": ref}).WithError(err).Warn("could not list the namespace's addresses; same-node acceleration learns them from its connections")
	} else if err := d.maps.LearnLocalIPs(c, addrs); err != nil {
		d.log.WithFields(logrus.Fields{"netns": ref}).WithError(err).Warn("could not record the namespace's addresses; same-node acceleration learns them from its connections")
	}
	d.mu.Lock()
	d.enrolled[c] = ref
	d.mu.Unlock()
	d.log.WithFields(logrus.Fields{"netns": ref, "cookie": c}).Info("namespace enrolled")
	return EnrolledNetns{Ref: ref, Cookie: c}, nil
}

// Unenroll releases a namespace: its new connections are left alone.
func (d *Daemon) Unenroll(ref string) error {
	p, err := netns.Path(ref)
	if err != nil {
		return fmt.Errorf("unenroll: %w", err)
	}
	c, err := netns.Cookie(p)
	if err != nil {
		return fmt.Errorf("unenroll %s: %w", ref, err)
	}
	if err := d.maps.Unenroll(c); err != nil {
		return fmt.Errorf("unenroll %s: %w", ref, err)
	}
	d.mu.Lock()
	delete(d.enrolled, c)
	d.mu.Unlock()
	d.log.WithFields(logrus.Fields{"netns": ref, "cookie": c}).Info("namespace unenrolled")
	return nil
}

// Status is the /status document.
type Status struct {
	Mode          string              `json:"mode"`
	Node          Node                `json:"node"`
	XDSAddress    string              `json:"xds_address,omitempty"`
	Notes         []string            `json:"notes,omitempty"`
	Ready         bool                `json:"ready"`
	Uptime        string              `json:"uptime"`
	Decision      json.RawMessage     `json:"decision,omitempty"`
	Build         json.RawMessage     `json:"build,omitempty"`
	SameNodeAccel AccelStatus         `json:"same_node_accel"`
	Objects       []loader.ObjectInfo `json:"objects"`
	Links         []loader.LinkInfo   `json:"links"`
	AdoptedMaps   []string            `json:"adopted_maps"`
	Enrolled      []EnrolledNetns     `json:"enrolled_netns"`
	ConfigVersion string              `json:"config_version"`
	Config        string              `json:"config"`
	Applies       int                 `json:"config_applies"`
	LastApply     *apply.Result       `json:"last_apply,omitempty"`
	LastError     string              `json:"last_error"`
	Services      []ServiceStatus     `json:"services"`
	NotApplied    []config.Note       `json:"not_applied"`
}

// AccelStatus is same-node acceleration in /status.
type AccelStatus struct {
	Enabled bool             `json:"enabled"`
	Note    string           `json:"note,omitempty"`
	Stats   *maps.AccelStats `json:"stats,omitempty"`
}

func (d *Daemon) accelStatus() AccelStatus {
	if d.opts.NoSameNodeAccel {
		return AccelStatus{Note: "off: --same-node-accel=false"}
	}
	if !d.maps.Accelerates() {
		return AccelStatus{Note: "off: " + maps.ObjectSockmap + " was built without programs (the kernel lacks what it needs; the decision record's reasons name the checks)"}
	}
	st, err := d.maps.AccelStatsOf()
	if err != nil {
		return AccelStatus{Enabled: true, Note: err.Error()}
	}
	return AccelStatus{Enabled: true, Stats: &st}
}

// ServiceStatus is one service in /status.
type ServiceStatus struct {
	Key      string                   `json:"vip"`
	Name     string                   `json:"name"`
	ID       uint32                   `json:"id"`
	Clusters []config.WeightedCluster `json:"clusters"`
}

func (d *Daemon) status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Status{Mode: d.opts.Mode, Ready: d.ready, Uptime: time.Since(d.started).Round(time.Second).String(),
		Objects: d.dp.Objects(), Links: d.dp.Links(), AdoptedMaps: append([]string{}, d.dp.AdoptedMaps()...),
		Applies: d.applies, LastApply: d.lastApply, LastError: d.lastError, Config: d.opts.ConfigPath,
		Decision: readJSON(d.opts.DecisionPath), Build: readJSON(d.opts.BuildReportPath),
		Enrolled: d.enrolledList(), Services: []ServiceStatus{}, NotApplied: []config.Note{}, SameNodeAccel: d.accelStatus()}
	if s.Config == "" {
		s.Config = "embedded default"
	}
	s.Node, s.XDSAddress = d.opts.Node, d.opts.XDSAddress
	if note := d.opts.xdsNote(); note != "" {
		s.Notes = append(s.Notes, note)
	}
	if d.opts.Mode == "enhanced" {
		s.Notes = append(s.Notes, "enhanced mode: kmesh.ko is loaded; this version runs the L4 programs only, the L7 programs that decide on a request's first bytes are not part of it, so routes that need the request stay not applied")
	}
	if m := d.applier.Current(); m != nil {
		s.ConfigVersion = m.Version
		s.NotApplied = append(s.NotApplied, m.Unsupported...)
		for _, k := range m.SortedServiceKeys() {
			id, _ := d.applier.ServiceID(k)
			svc := m.Services[k]
			s.Services = append(s.Services, ServiceStatus{Key: k.String(), Name: svc.Name, ID: id, Clusters: svc.Clusters})
		}
	}
	return s
}

// enrolledList merges the namespaces enrolled by this process with the
// cookies found in the (possibly adopted) map. Callers hold d.mu.
func (d *Daemon) enrolledList() []EnrolledNetns {
	out := []EnrolledNetns{}
	cookies, err := d.maps.EnrolledCookies()
	if err != nil {
		for c, ref := range d.enrolled {
			out = append(out, EnrolledNetns{Ref: ref, Cookie: c})
		}
	} else {
		for _, c := range cookies {
			out = append(out, EnrolledNetns{Ref: d.enrolled[c], Cookie: c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cookie < out[j].Cookie })
	return out
}

func readJSON(path string) json.RawMessage {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil || !json.Valid(b) {
		return nil
	}
	return json.RawMessage(strings.TrimSpace(string(b)))
}

// Uninstall removes kmesh's links, pins and mounts from the node.
func Uninstall(opts Options) error {
	if opts.Log == nil {
		opts.Log = logrus.New()
	}
	cfg := loader.Config{BPFFSPath: opts.BPFFSPath, Cgroup2Path: opts.Cgroup2Path, Log: opts.Log}
	accelOff(cfg, "uninstall", opts.Log.WithField("subsys", "daemon"))
	return loader.Uninstall(cfg)
}

// accelOff switches same-node acceleration off, before uninstall or at a
// start with --same-node-accel=false (phase says which): every send on an
// accelerated socket goes through TCP/IP from now on, after the
// bytes already redirected to its reader (which reads those first, so the
// order holds). Its sockets stay in km_socks until they close: the kernel
// would purge unread redirected bytes of a socket that left the map, so
// kmesh never removes them, and the kernel frees the map and sk_msg
// program once the last of them closes. Without acceleration pinned it
// does nothing.
func accelOff(cfg loader.Config, phase string, log logrus.FieldLogger) {
	ctl, err := ebpf.LoadPinnedMap(cfg.MapPinPath(maps.MapAccelCtl), nil)
	if err != nil {
		return
	}
	defer ctl.Close()
	if err := ctl.Put(uint32(0), maps.AccelCtlValue{Flags: maps.AccelPassAll}); err != nil {
		log.WithError(err).Warn("could not switch same-node acceleration to TCP/IP before uninstall; accelerated connections keep being redirected until they close")
		return
	}
	open := 0
	if socks, err := ebpf.LoadPinnedMap(cfg.MapPinPath(maps.MapSocks), nil); err == nil {
		open = countSocks(socks)
		socks.Close()
	}
	f := logrus.Fields{"phase": phase, "open_sockets": open}
	if open > 0 {
		log.WithFields(f).Info("same-node acceleration off: open accelerated connections carry on through TCP/IP; the kernel frees the socket map and sk_msg program when they close")
		return
	}
	log.WithFields(f).Info("same-node acceleration off")
}

func countSocks(m *ebpf.Map) int {
	var k maps.SockKey
	n := 0
	it := m.Iterate()
	var v uint64
	for it.Next(&k, &v) {
		n++
	}
	return n
}
