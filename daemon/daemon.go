package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
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
)

// Daemon is a running data plane.
type Daemon struct {
	opts    Options
	log     logrus.FieldLogger
	dp      *loader.Dataplane
	maps    *maps.Maps
	metrics *metrics

	// applyMu serialises applies; the Applier is used under it only.
	applyMu sync.Mutex
	applier *apply.Applier
	// enrollMu serialises enrolments and their bookkeeping (refs).
	enrollMu sync.Mutex
	refs     *enrollRefs

	// mu guards the fields below; it is held only to read or publish them,
	// never across an apply or a kernel call, so /ready, /status and
	// scrapes answer at once while a large config is being applied.
	mu       sync.Mutex
	view     *appliedView
	ready    bool
	enrolled map[uint64]string // cookie -> the reference it was enrolled by
	// loadedSum and rejectedSum are the SHA-256 of the config file as
	// applied, or found invalid, at start, so the watcher does not parse it
	// a second time (the bytes are not kept) nor report it twice.
	loadedSum, rejectedSum *[sha256.Size]byte
	// failedSum is the config file's SHA-256 when applying it at start
	// failed: the watcher retries it after a backoff.
	failedSum *[sha256.Size]byte
	lastError string
	lastApply *apply.Result
	applies   int
	started   time.Time
}

// appliedView is what readers (/status, /config_dump, metrics) see of the
// applied config; immutable once published.
type appliedView struct {
	model        *config.Model
	svcIDs       map[config.ServiceKey]uint32
	clusterNames map[uint32]string
	slots        int // endpoint slots in use
}

func newView(a *apply.Applier) *appliedView {
	m := a.Current()
	v := &appliedView{model: m, svcIDs: make(map[config.ServiceKey]uint32, len(m.Services)), clusterNames: a.ClusterNames(), slots: a.SlotsUsed()}
	for k := range m.Services {
		if id, ok := a.ServiceID(k); ok {
			v.svcIDs[k] = id
		}
	}
	return v
}

// current returns the published view (nil before a config was applied).
func (d *Daemon) current() *appliedView {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.view
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
	defer adminLn.Close() // Serve closes it too; a second close is harmless
	metricsLn, err := net.Listen("tcp", opts.MetricsAddr)
	if err != nil {
		return fmt.Errorf("listen on metrics address %s: %w", opts.MetricsAddr, err)
	}
	defer metricsLn.Close()

	model, cfgErr := d.loadConfig()
	dp, err := loader.Load(opts.loaderConfig())
	if err != nil {
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

	if d.refs, err = openEnrollRefs(opts.loaderConfig(), d.maps, log); err != nil {
		return err
	}
	defer d.refs.close()
	if d.enrolled, err = d.refs.all(); err != nil {
		return err
	}

	// Fill the maps before the programs see traffic (or, when adopting, before
	// the new programs replace the old ones). A config that cannot be
	// applied does not stop the daemon: what the maps hold (adopted from the
	// previous daemon, or nothing) keeps serving, /ready says why it is not
	// ready, and the watcher applies the file once it is fixed.
	ok := false
	if cfgErr != nil {
		d.setError(cfgErr)
	} else if err := d.applyModel(model); err != nil {
		d.mu.Lock()
		d.loadedSum, d.failedSum = nil, d.loadedSum // retried by the watcher
		d.mu.Unlock()
	} else {
		ok = true
	}
	// Enrol before the programs are attached: a namespace named on the
	// command line is served from its first connection.
	for _, ref := range opts.EnrollNetns {
		if _, err := d.Enroll(ref); err != nil {
			return err
		}
	}
	if err := dp.Attach(); err != nil {
		return fmt.Errorf("attach programs: %w", err)
	}
	d.mu.Lock()
	d.ready = ok
	d.mu.Unlock()
	f := logrus.Fields{"mode": opts.Mode, "admin": adminLn.Addr().String(), "metrics": metricsLn.Addr().String(),
		"enrolled": len(opts.EnrollNetns), "startup_ms": time.Since(d.started).Milliseconds()}
	if ok {
		log.WithFields(f).Info("data plane ready")
	} else {
		log.WithFields(f).Warn("data plane attached, not ready: no config applied (/ready and /status last_error say why)")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	admin, mets := httpServer(d.adminHandler()), httpServer(d.metrics.handler())
	go func() { errc <- serve(admin, adminLn, "admin") }()
	go func() { errc <- serve(mets, metricsLn, "metrics") }()
	var workers sync.WaitGroup // what writes the maps: joined before they close
	if opts.ConfigPath != "" {
		d.mu.Lock()
		wo := config.WatchOptions{Log: opts.Log, Applied: d.loadedSum, Rejected: d.rejectedSum,
			Failed: d.failedSum, RetryBackoff: opts.ConfigRetryBackoff, Restored: d.clearError}
		d.mu.Unlock()
		workers.Go(func() {
			err := config.Watch(ctx, opts.ConfigPath, wo, d.applyModel, d.setError)
			if err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("watch config: %w", err)
			}
		})
	}
	workers.Go(func() { d.pruneEnrolledEvery(ctx, opts.enrollCheckInterval()) })
	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	cancel()
	workers.Wait()
	shut, done := context.WithTimeout(context.Background(), 2*time.Second)
	defer done()
	for name, s := range map[string]*http.Server{"admin": admin, "metrics": mets} {
		if serr := s.Shutdown(shut); serr != nil {
			log.WithField("server", name).WithError(serr).Warn("server did not shut down cleanly")
		}
	}
	log.WithField("reason", reasonOf(err)).Info("stopping; programs stay attached through their pinned links")
	return err
}

// httpServer bounds what one client can hold: a slow or stuck client must
// not pin the daemon's memory or goroutines.
func httpServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
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
		if content != nil {
			d.rejectedSum = config.AppliedSum(content)
		}
		return nil, fmt.Errorf("load config: %w", err)
	}
	d.loadedSum = config.AppliedSum(content)
	d.log.WithFields(logrus.Fields{"config": d.opts.ConfigPath, "version": m.Version}).Info("config loaded")
	config.LogSerialDecode(d.log.WithField("config", d.opts.ConfigPath), m, len(content))
	return m, nil
}

// applyModel writes a new model into the maps (applies are serialised) and
// publishes it. A model equal to the current one writes nothing but is
// published all the same: its notes (what is not applied) may differ.
func (d *Daemon) applyModel(m *config.Model) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	r, err := d.applier.Apply(m)
	if err != nil {
		d.metrics.applies.WithLabelValues("failed").Inc()
		d.mu.Lock()
		d.lastError = err.Error()
		d.mu.Unlock()
		d.log.WithError(err).Error("config apply failed; what the maps held before keeps serving")
		return reportedError{err}
	}
	d.metrics.applies.WithLabelValues("applied").Inc()
	view := newView(d.applier)
	d.mu.Lock()
	d.view = view
	d.applies++
	d.lastApply = &r
	d.lastError = ""
	d.ready = true
	d.mu.Unlock()
	for _, n := range m.Unsupported {
		d.log.WithField("note", n.String()).Warn("not applied in compat mode")
	}
	// Parsing a large config leaves hundreds of MiB of garbage (10k services
	// in YAML: ~750 MiB); hand it back now rather than keep it as RSS.
	debug.FreeOSMemory()
	return nil
}

// clearError is WatchOptions.Restored: the file is back at the applied
// version, so the failure reported since no longer holds.
func (d *Daemon) clearError() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastError = ""
}

// reportedError marks a failure applyModel already counted and logged; it
// adds nothing to the message.
type reportedError struct{ error }

func (e reportedError) Unwrap() error { return e.error }

// setError records a rejected config; the last good one keeps running.
func (d *Daemon) setError(err error) {
	if errors.As(err, new(reportedError)) {
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
	// Passthrough: a VIP a listener claims that compat mode cannot serve;
	// its connections keep their original destination (not_applied says
	// why), rather than matching the port's wildcard service.
	Passthrough bool `json:"passthrough,omitempty"`
}

func (d *Daemon) status() Status {
	// kernel reads first, without d.mu
	accel, enrolled := d.accelStatus(), d.enrolledList()
	s := Status{Mode: d.opts.Mode, Uptime: time.Since(d.started).Round(time.Second).String(),
		Objects: d.dp.Objects(), Links: d.dp.Links(), AdoptedMaps: append([]string{}, d.dp.AdoptedMaps()...),
		Config: d.opts.ConfigPath, Enrolled: enrolled, Services: []ServiceStatus{}, NotApplied: []config.Note{}, SameNodeAccel: accel}
	var err error
	if s.Decision, err = readJSON(d.opts.DecisionPath); err != nil {
		s.Notes = append(s.Notes, "decision record left out: "+err.Error())
	}
	if s.Build, err = readJSON(d.opts.BuildReportPath); err != nil {
		s.Notes = append(s.Notes, "build report left out: "+err.Error())
	}
	if s.Config == "" {
		s.Config = "embedded default"
	}
	s.Node, s.XDSAddress = d.opts.Node, d.opts.XDSAddress
	if note := d.opts.xdsNote(); note != "" {
		s.Notes = append(s.Notes, note)
	}
	s.Notes = append(s.Notes, d.dp.Notes()...)
	if d.opts.Mode == "enhanced" {
		s.Notes = append(s.Notes, "enhanced mode: kmesh.ko is loaded; this version runs the L4 programs only, the L7 programs that decide on a request's first bytes are not part of it, so routes that need the request stay not applied")
	}
	d.mu.Lock()
	s.Ready, s.Applies, s.LastApply, s.LastError = d.ready, d.applies, d.lastApply, d.lastError
	v := d.view
	d.mu.Unlock()
	if v != nil {
		m := v.model
		s.ConfigVersion = m.Version
		s.NotApplied = append(s.NotApplied, m.Unsupported...)
		for _, k := range m.SortedServiceKeys() {
			svc := m.Services[k]
			s.Services = append(s.Services, ServiceStatus{Key: k.String(), Name: svc.Name, ID: v.svcIDs[k],
				Clusters: append([]config.WeightedCluster{}, svc.Clusters...), Passthrough: svc.Passthrough()})
		}
	}
	return s
}

// readJSON reads a JSON document for /status; no path is none.
func readJSON(path string) (json.RawMessage, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("read %s: not valid JSON", path)
	}
	return json.RawMessage(strings.TrimSpace(string(b))), nil
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
