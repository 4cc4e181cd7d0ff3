package daemon

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/moby/sys/mountinfo"

	"kmesh.dev/kmesh/daemon/config"
	"kmesh.dev/kmesh/daemon/config/configtest"
	tn "kmesh.dev/kmesh/daemon/internal/testnet"
	"kmesh.dev/kmesh/daemon/maps"
)

const (
	echoA = "10.201.1.2:8100"
	echoB = "10.201.2.2:8100"
	vipL  = "10.96.0.30:80" // the long-lived connections' service
)

func baseConfig(longCluster string) string {
	type wc = configtest.WeightedCluster
	return configtest.Config{
		Services: []configtest.Service{
			{Name: "web", VIP: tn.VIP, Clusters: []wc{{Name: "a", Weight: 90}, {Name: "b", Weight: 10}}},
			{Name: "web6", VIP: tn.VIPv6, Clusters: []wc{{Name: "v6", Weight: 1}}},
			{Name: "long", VIP: vipL, Clusters: []wc{{Name: longCluster, Weight: 1}}},
		},
		Clusters: []configtest.Cluster{
			{Name: "a", Endpoints: []string{tn.A1, tn.A2}},
			{Name: "b", Endpoints: []string{tn.B1}},
			{Name: "v6", Endpoints: []string{tn.A1v6, tn.B1v6}},
			{Name: "echo-a", Endpoints: []string{echoA}},
			{Name: "echo-b", Endpoints: []string{echoB}},
		},
	}.YAML()
}

func newTopo(t *testing.T) *tn.Topology {
	tn.RequireRoot(t)
	tp := tn.NewTopology(t, "kd"+tn.ID(t))
	tp.A.ServeEcho(t, echoA)
	tp.B.ServeEcho(t, echoB)
	return tp
}

// wantLinks is the entries of /status's links: connect4 and connect6, and
// with same-node acceleration sockops and sk_msg (on its map).
func wantLinks() int {
	if tn.KernelAccelerates() {
		return 4
	}
	return 2
}

// attached returns the IDs of the pinned links and of every attached
// program in st.
func attached(t *testing.T, st Status) ([]link.ID, []ebpf.ProgramID) {
	t.Helper()
	var ids []link.ID
	var progs []ebpf.ProgramID
	for _, l := range st.Links {
		if l.Map != "" {
			p, err := ebpf.LoadPinnedProgram(l.Pin, nil)
			if err != nil {
				t.Fatal(err)
			}
			info, _ := p.Info()
			id, _ := info.ID()
			progs = append(progs, id)
			p.Close()
			continue
		}
		pl, err := link.LoadPinnedLink(l.Pin, nil)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := pl.Info()
		ids = append(ids, info.ID)
		progs = append(progs, info.Program)
		pl.Close()
	}
	return ids, progs
}

func (e *env) status() Status {
	e.t.Helper()
	code, body := e.get("/status")
	var s Status
	if code != http.StatusOK {
		e.t.Fatalf("/status: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		e.t.Fatalf("/status: decode: %v\n%s", err, body)
	}
	return s
}

// TestDaemonTrafficConfigAndEnrollment drives the daemon as a user would:
// a config file, an enrolled namespace, the admin API and metrics.
func TestDaemonTrafficConfigAndEnrollment(t *testing.T) {
	tp := newTopo(t)
	e := newEnv(t, baseConfig("echo-a"), tp.Client.Path)
	// as the DaemonSet sets them (there is no xDS client yet: that must be said, not ignored)
	e.opts.XDSAddress = "istiod.istio-system.svc:15012"
	env := map[string]string{"POD_NAME": "kmesh-x1", "NODE_NAME": "node-1", "INSTANCE_IP": "10.0.0.5"}
	e.opts.Node = NodeFromEnv(func(k string) string { return env[k] })
	e.start()

	// 90/10 weighted clusters over 1000 new connections, round robin inside "a"
	got, err := tp.Client.Fetch(tn.VIP, 1000)
	if err != nil {
		t.Fatal(err)
	}
	c := tn.Tally(got)
	nb := c[tn.B1]
	if c[tn.A1]+c[tn.A2]+nb != 1000 {
		t.Errorf("split = %v, want only a's and b's endpoints", c)
	}
	tn.Within5Sigma(t, "cluster b of 90/10", nb, 1000, 0.1)
	if d := c[tn.A1] - c[tn.A2]; d < -1 || d > 1 {
		t.Errorf("round robin inside a: %d vs %d", c[tn.A1], c[tn.A2])
	}
	// IPv6 the same way: exact round robin
	got6, err := tp.Client.Fetch(tn.VIPv6, 20)
	if err != nil {
		t.Fatal(err)
	}
	if c6 := tn.Tally(got6); c6[tn.A1v6] != 10 || c6[tn.B1v6] != 10 {
		t.Errorf("IPv6 round robin: %v", c6)
	}
	// a namespace that is not enrolled is untouched
	if o, err := tp.Other.Fetch(tn.VIP, 3); err != nil || tn.Tally(o)[tn.Unrewritten] != 3 {
		t.Errorf("non-enrolled namespace: %v %v", o, err)
	}
	m := e.metrics()
	if v := metricValue(m, `kmesh_service_connections_redirected_total{service="web",vip="10.96.0.10:80"}`); v != 1000 {
		t.Errorf("redirected metric for web = %v, want 1000", v)
	}
	if v := metricValue(m, `kmesh_map_entries{map="slots"}`); v != 7 {
		t.Errorf("slots in use = %v, want 7 (tables of 2, 1, 2, 1 and 1 endpoints of equal weight)", v)
	}
	if v := metricValue(m, `kmesh_cluster_connections_redirected_total{cluster="b"}`); v != float64(nb) {
		t.Errorf("cluster b metric = %v, want %d", v, nb)
	}
	for series, want := range map[string]float64{
		`kmesh_config_applies_total{result="applied"}`:  1, // the config at start
		`kmesh_config_applies_total{result="rejected"}`: 0,
		`kmesh_map_entries{map="services"}`:             3,
		`kmesh_map_entries{map="clusters"}`:             5,
		`kmesh_map_entries{map="endpoints"}`:            7,
		`kmesh_map_entries{map="enrolled_netns"}`:       1,
	} {
		if v := metricValue(m, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	// /status/metric (the DaemonSet's scrape path) serves the same registry
	if code, body := e.do(http.MethodGet, "http://"+e.opts.MetricsAddr+"/status/metric"); code != http.StatusOK ||
		metricValue(body, `kmesh_service_connections_redirected_total{service="web",vip="10.96.0.10:80"}`) != 1000 ||
		metricValue(body, `kmesh_map_entries{map="services"}`) != 3 {
		t.Errorf("/status/metric: %d, web redirected %v\n%.2000s", code,
			metricValue(body, `kmesh_service_connections_redirected_total{service="web",vip="10.96.0.10:80"}`), body)
	}
	st := e.status()
	objs := map[string][]string{}
	for _, o := range st.Objects {
		objs[o.Name] = o.Programs
	}
	if p := objs["connect"]; !slices.Contains(p, "kmesh_connect4") || !slices.Contains(p, "kmesh_connect6") {
		t.Errorf("/status objects: connect programs %v, want kmesh_connect4 and kmesh_connect6 (objects %+v)", p, st.Objects)
	}
	if p := objs["sockmap"]; tn.KernelAccelerates() && !slices.Contains(p, "kmesh_sockops") {
		t.Errorf("/status objects: sockmap programs %v, want kmesh_sockops (objects %+v)", p, st.Objects)
	}
	if len(st.Enrolled) != 1 || st.Enrolled[0].Ref != tp.Client.Path || len(st.Services) != 3 || st.ConfigVersion == "" {
		t.Errorf("status: enrolled %+v services %d version %q", st.Enrolled, len(st.Services), st.ConfigVersion)
	}
	if st.Node.PodName != "kmesh-x1" || st.Node.NodeName != "node-1" || st.Node.InstanceIP != "10.0.0.5" || st.XDSAddress == "" ||
		len(st.Notes) == 0 || !strings.Contains(st.Notes[0], "no xDS client") || !strings.Contains(st.Notes[0], e.cfg) {
		t.Errorf("status: node %+v xds %q notes %q", st.Node, st.XDSAddress, st.Notes)
	}
	if !strings.Contains(e.log.String(), "no xDS client") {
		t.Errorf("the log does not say that the xDS address is not used")
	}
	if code, body := e.get("/config_dump"); code != 200 || !strings.Contains(body, "echo-a") {
		t.Errorf("/config_dump: %d %s", code, body)
	}

	// a long-lived connection, then a config change that moves the service
	conn, err := tp.Client.Dial("tcp", vipL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r, err := tn.Echo(conn, "1"); err != nil || r != echoA+" 1" {
		t.Fatalf("long-lived connection: %q %v", r, err)
	}
	writeFileAtomic(t, e.cfg, baseConfig("echo-b"))
	waitFor(t, "new connections to follow the new config", func() bool {
		c, err := tp.Client.Dial("tcp", vipL)
		if err != nil {
			return false
		}
		defer c.Close()
		r, _ := tn.Echo(c, "x")
		return strings.HasPrefix(r, echoB)
	})
	if r, err := tn.Echo(conn, "2"); err != nil || r != echoA+" 2" {
		t.Errorf("established connection after reload: %q %v (must be untouched)", r, err)
	}
	if st := e.status(); st.LastApply == nil || st.LastApply.Full || st.LastApply.ServicesChanged != 1 || st.LastApply.ClustersChanged != 0 {
		t.Errorf("incremental apply: %+v", st.LastApply)
	}

	// an invalid config is rejected; the last good one keeps serving
	writeFileAtomic(t, e.cfg, "static_resources:\n  listeners:\n  - name: broken\n    bogus_field: 1\n")
	waitFor(t, "the invalid config to be rejected", func() bool { return e.status().LastError != "" })
	if st := e.status(); !strings.Contains(st.LastError, "bogus_field") {
		t.Errorf("last_error does not name the bad field: %q", st.LastError)
	}
	if v := metricValue(e.metrics(), `kmesh_config_applies_total{result="rejected"}`); v < 1 {
		t.Errorf("rejected metric = %v", v)
	}
	if code, _ := e.get("/ready"); code != http.StatusOK {
		t.Errorf("/ready after a rejected config = %d, want 200 (the last good config runs)", code)
	}
	c2, err := tp.Client.Dial("tcp", vipL)
	if err != nil {
		t.Fatalf("service after rejected config: %v", err)
	}
	if r, _ := tn.Echo(c2, "y"); !strings.HasPrefix(r, echoB) {
		t.Errorf("after rejected config, new connection reached %q, want the last good config's %s", r, echoB)
	}
	c2.Close()

	// unenroll / enroll at run time through the admin API
	if code, body := e.post("/unenroll?netns=" + tp.Client.Name); code != 200 {
		t.Fatalf("unenroll: %d %s", code, body)
	}
	if _, err := tp.Client.Fetch(tn.VIP, 1); err == nil {
		t.Error("unenrolled namespace still reaches a backend through the VIP")
	}
	if code, body := e.post("/enroll?netns=" + tp.Client.Name); code != 200 {
		t.Fatalf("enroll: %d %s", code, body)
	}
	if _, err := tp.Client.Fetch(tn.VIP, 1); err != nil {
		t.Errorf("re-enrolled namespace: %v", err)
	}
	if code, body := e.post("/enroll?netns=kmesh-no-such-netns"); code != http.StatusNotFound || !strings.Contains(body, "not found") {
		t.Errorf("enroll of a missing namespace: %d %s", code, body)
	}
}

// TestDaemonRestartZeroFailures restarts the daemon while a client opens
// connections without pause: the pinned links keep the programs attached,
// the new daemon adopts maps and links, and not one connection fails.
func TestDaemonRestartZeroFailures(t *testing.T) {
	tp := newTopo(t)
	e := newEnv(t, baseConfig("echo-a"), tp.Client.Path)
	e.start()
	// enrolled through the API: after the restart it is still enrolled,
	// under its name
	if code, body := e.post("/enroll?netns=" + tp.Other.Name); code != http.StatusOK {
		t.Fatalf("enroll: %d %s", code, body)
	}
	otherCookie := tp.Other.Cookie(t)
	long, err := tp.Client.Dial("tcp", vipL)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(halt) // also when the test fails half way
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := tp.Client.Fetch(tn.VIP, 1); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
		}
	}()
	// Counts, not sleeps: the QEMU guests run this under TCG on a loaded
	// machine, where one connection can take longer than a fixed pause.
	atLeast := func(n int64) func() bool { return func() bool { return ok.Load() >= n } }
	waitFor(t, "20 connections before the restart", atLeast(20))
	e.stop()
	during := ok.Load()
	// no daemon at all: the pinned links serve
	waitFor(t, "20 connections while the daemon is down", atLeast(during+20))
	e.start()
	waitFor(t, "20 connections after the restart", atLeast(ok.Load()+20))
	halt()
	if failed.Load() != 0 {
		t.Fatalf("across the restart: %d ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	if r, err := tn.Echo(long, "still"); err != nil || r != echoA+" still" {
		t.Errorf("long-lived connection across restart: %q %v", r, err)
	}
	st := e.status()
	adopted := 0
	for _, l := range st.Links {
		if l.Adopted {
			adopted++
		}
	}
	if len(st.AdoptedMaps) == 0 || len(st.Links) != wantLinks() || adopted != len(st.Links) {
		t.Errorf("restart did not adopt: maps %v links %+v", st.AdoptedMaps, st.Links)
	}
	// the same config: every entry taken over, nothing written
	if r := st.LastApply; r == nil || !r.Full || r.ServicesAdopted != 3 || r.ClustersAdopted != 5 ||
		r.ServicesAdded+r.ServicesChanged+r.ServicesRemoved+r.ClustersAdded+r.ClustersRemoved != 0 {
		t.Errorf("first apply after restart: %+v, want 3 services and 5 clusters kept, nothing written", st.LastApply)
	}
	if ref, ok := enrolledRef(st, otherCookie); !ok || ref != tp.Other.Name {
		t.Errorf("namespace enrolled through the API before the restart: listed %v as %q, want %q", ok, ref, tp.Other.Name)
	}

	t.Logf("%d connections across the restart, none failed", ok.Load())
}

// TestUninstallLeavesNothing: no link, pin, program or mount remains. Run
// twice: with the mounts kmesh made (unmounting them alone would free the
// pins), and with a bpffs mounted before kmesh started, which uninstall
// must leave mounted: there only detaching and unpinning free the programs.
func TestUninstallLeavesNothing(t *testing.T) {
	for _, premounted := range []bool{false, true} {
		t.Run(map[bool]string{false: "kmesh_mounts", true: "bpffs_mounted_before"}[premounted], func(t *testing.T) {
			testUninstall(t, premounted)
		})
	}
}

func testUninstall(t *testing.T, premounted bool) {
	tp := newTopo(t)
	e := newEnv(t, baseConfig("echo-a"), tp.Client.Path)
	if premounted {
		if err := os.MkdirAll(e.opts.BPFFSPath, 0o755); err != nil {
			t.Fatal(err)
		}
		tn.Run(t, "mount", "-t", "bpf", "bpf", e.opts.BPFFSPath)
		t.Cleanup(func() { exec.Command("umount", e.opts.BPFFSPath).Run() })
	}
	e.start()
	ids, progs := attached(t, e.status())
	if len(ids) != wantLinks()-map[bool]int{true: 1}[tn.KernelAccelerates()] || len(progs) != wantLinks() {
		t.Fatalf("links %v programs %v", ids, progs)
	}
	e.stop()
	if err := Uninstall(e.opts); err != nil {
		t.Fatal(err)
	}
	// The kernel frees detached links and their programs after an RCU
	// grace period (slow under TCG): wait for them to go.
	for _, id := range ids {
		waitFor(t, fmt.Sprintf("link %d to be freed after uninstall", id), func() bool {
			l, err := link.NewFromID(id)
			if err == nil {
				l.Close()
			}
			return err != nil
		})
	}
	for _, id := range progs {
		waitFor(t, fmt.Sprintf("program %d to be freed after uninstall", id), func() bool {
			p, err := ebpf.NewProgramFromID(id)
			if err == nil {
				p.Close()
			}
			return err != nil
		})
	}
	if _, err := os.Stat(filepath.Join(e.opts.BPFFSPath, "kmesh")); !os.IsNotExist(err) {
		t.Errorf("pin directory survived: %v", err)
	}
	for _, dir := range []string{e.opts.BPFFSPath, e.opts.Cgroup2Path} {
		ms, _ := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
		if theirs := premounted && dir == e.opts.BPFFSPath; theirs && len(ms) != 1 {
			t.Errorf("the bpffs mounted before kmesh is gone (%d mounts at %s): uninstall unmounts only its own", len(ms), dir)
		} else if !theirs && len(ms) > 0 {
			t.Errorf("mount survived: %s", dir)
		}
	}
	if _, err := tp.Client.Fetch(tn.VIP, 1); err == nil {
		t.Error("VIP still rewritten after uninstall")
	}
}

// TestLargeConfigSerialHint: a config above config.LargeConfigBytes that is
// decoded serially gets a warning naming why (here a YAML anchor); the same
// config decoded in parallel, in YAML or JSON, does not.
func TestLargeConfigSerialHint(t *testing.T) {
	tn.RequireRoot(t)
	big := configtest.Large(8000, 2, 80)
	for _, c := range []struct {
		name, file, content string
		reason              string // logged, "" for no warning
	}{
		{"yaml", "kmesh.yaml", big.YAML(), ""},
		{"json", "kmesh.json", big.JSON(), ""},
		{"yaml with an anchor", "kmesh.yaml", "node: &n {id: kmesh}\n" + big.YAML(), "an anchor or alias"},
		{"json in a .yaml file", "kmesh.yaml", big.JSON(), "name the file .json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if len(c.content) <= config.LargeConfigBytes {
				t.Fatalf("test config is %d bytes, not above %d", len(c.content), config.LargeConfigBytes)
			}
			e := newEnv(t, c.content)
			// 8 MB parsed before /ready: 20-60 s in a QEMU guest
			// (KMESH_VMTEST_FULL=1 runs it there), about a second on the host
			e.readyWithin = 5 * time.Minute
			e.cfg = filepath.Join(filepath.Dir(e.cfg), c.file)
			e.opts.ConfigPath = e.cfg
			writeFileAtomic(t, e.cfg, c.content)
			e.start()
			log := e.log.String()
			warned := strings.Contains(log, "large config decoded on one goroutine")
			if warned != (c.reason != "") || !strings.Contains(log, c.reason) {
				t.Errorf("%s config of %d bytes: warning logged %v, want reason %q; log:\n%s", c.name, len(c.content), warned, c.reason, log)
			}
		})
	}
}

// TestDaemonStartApplyFailure: a config that parses but does not fit the
// maps (more endpoint slots than they hold) at start does not stop the
// daemon and writes nothing: the previous daemon's config keeps serving,
// /ready says why, the failure is counted once (the watcher's first pass
// does not try the same content again), and a fixed file is applied at once,
// whatever the retry backoff.
func TestDaemonStartApplyFailure(t *testing.T) {
	tp := newTopo(t)
	e := newEnv(t, baseConfig("echo-a"), tp.Client.Path)
	e.start()
	wantBackend := func(when, want string) {
		t.Helper()
		for range 3 { // new connections, each asking who answers
			c, err := tp.Client.Dial("tcp", vipL)
			if err != nil {
				t.Fatalf("%s: connect %s: %v", when, vipL, err)
			}
			r, err := tn.Echo(c, "who")
			c.Close()
			if err != nil || r != want+" who" {
				t.Fatalf("%s: %s answered %q (%v), want %s", when, vipL, r, err, want)
			}
		}
	}
	wantBackend("first daemon", echoA)
	e.stop()

	// one cluster of 1024 slots (weights 1 and 1023) more than the maps hold
	type wc = configtest.WeightedCluster
	var huge configtest.Config
	for i := range maps.MaxSlots/maps.MaxSlotsPerCluster + 1 {
		name := fmt.Sprintf("heavy-%d", i)
		huge.Services = append(huge.Services, configtest.Service{Name: name, VIP: fmt.Sprintf("10.97.%d.%d:80", i/256, i%256), Clusters: []wc{{Name: name}}})
		huge.Clusters = append(huge.Clusters, configtest.Cluster{Name: name, Endpoints: []string{echoA, echoB}, Weights: []uint32{1, 1023}})
	}
	writeFileAtomic(t, e.cfg, huge.YAML())
	e.opts.ConfigRetryBackoff = time.Hour                 // no retry of the same content within the test
	e.startWith(func(code int) bool { return code != 0 }) // answering, ready or not
	if code, body := e.get("/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "capacity") {
		t.Errorf("/ready with a config over capacity at start: %d %s", code, body)
	}
	if st := e.status(); !strings.Contains(st.LastError, "slots") {
		t.Errorf("/status last_error = %q, want the slots that do not fit", st.LastError)
	}
	wantBackend("over-capacity config at start", echoA) // the maps were not touched
	time.Sleep(300 * time.Millisecond)                  // the watcher's first pass is done
	if v := metricValue(e.metrics(), `kmesh_config_applies_total{result="failed"}`); v != 1 {
		t.Errorf("failed applies = %v, want 1: at start, not again on the watcher's first pass", v)
	}
	if v := metricValue(e.metrics(), `kmesh_config_applies_total{result="rejected"}`); v != 0 {
		t.Errorf("rejected count = %v, want 0 (the file is valid, it does not fit)", v)
	}

	writeFileAtomic(t, e.cfg, baseConfig("echo-b"))
	waitFor(t, "ready once the file fits", func() bool { code, _ := e.get("/ready"); return code == http.StatusOK })
	wantBackend("fixed config", echoB)
	if st := e.status(); st.LastError != "" {
		t.Errorf("last_error after the fix: %q", st.LastError)
	}
}
