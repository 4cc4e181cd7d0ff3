package daemon

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the daemon's Prometheus metrics. Connection counters are read
// from the BPF per-CPU counters at scrape time.
type metrics struct {
	reg     *prometheus.Registry
	applies *prometheus.CounterVec
	log     promhttp.Logger
}

var (
	descSvcRedirected = prometheus.NewDesc("kmesh_service_connections_redirected_total",
		"Connections to a service VIP redirected to an endpoint.", []string{"service", "vip"}, nil)
	descSvcNoEndpoint = prometheus.NewDesc("kmesh_service_connections_no_endpoint_total",
		"Connections to a service VIP refused (connect fails with EPERM) because the chosen cluster had no endpoint.", []string{"service", "vip"}, nil)
	descClRedirected = prometheus.NewDesc("kmesh_cluster_connections_redirected_total",
		"Connections redirected to an endpoint of a cluster.", []string{"cluster"}, nil)
	descAccelSockets = prometheus.NewDesc("kmesh_accel_sockets_total",
		"Sockets of enrolled namespaces added to same-node acceleration's socket map.", nil, nil)
	descAccelSockErrors = prometheus.NewDesc("kmesh_accel_socket_errors_total",
		"Sockets same-node acceleration could not add to its socket map (map full).", nil, nil)
	descAccelNotLocal = prometheus.NewDesc("kmesh_accel_sockets_not_local_total",
		"Sockets of enrolled namespaces not accelerated: their peer is no address of an enrolled namespace on this node (yet).", nil, nil)
	descAccelMessages = prometheus.NewDesc("kmesh_accel_messages_total",
		"Sends on accelerated sockets: redirected to the peer socket, or passed through TCP/IP.", []string{"result"}, nil)
	descEntries = prometheus.NewDesc("kmesh_map_entries",
		"Entries of the applied config: services, clusters, endpoints, enrolled_netns, and slots (km_slots entries, the weighted endpoint tables; the map holds 262144).", []string{"map"}, nil)
)

func newMetrics(d *Daemon) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), log: d.log.WithField("subsys", "metrics"),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kmesh_config_applies_total",
			Help: "Configurations applied, rejected (invalid) or failed (kernel write errors)."}, []string{"result"})}
	for _, r := range []string{"applied", "rejected", "failed"} {
		m.applies.WithLabelValues(r)
	}
	m.reg.MustRegister(m.applies, &mapCollector{d: d}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves /metrics and /status/metric (the path the DaemonSet's
// prometheus.io/path annotation names).
func (m *metrics) handler() http.Handler {
	// A counter that cannot be read fails that series, not the scrape; the
	// reason is logged.
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: m.log})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /status/metric", h)
	return mux
}

type mapCollector struct{ d *Daemon }

func (c *mapCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSvcRedirected
	ch <- descSvcNoEndpoint
	ch <- descClRedirected
	ch <- descEntries
	ch <- descAccelSockets
	ch <- descAccelSockErrors
	ch <- descAccelNotLocal
	ch <- descAccelMessages
}

func (c *mapCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	v := d.current() // an immutable view: the kernel reads below hold no lock
	if v == nil {
		emit(ch, descEntries, prometheus.GaugeValue, float64(len(d.enrolledList())), "enrolled_netns")
		return
	}
	m := v.model
	// Look up only the IDs in use: walking both per-CPU arrays (32k entries
	// each) cost ~0.3 s of CPU per scrape even with one service.
	for key, id := range v.svcIDs {
		st, err := d.maps.ServiceStatsOf(id)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descSvcRedirected, fmt.Errorf("read counters of service %s: %w", key, err))
			continue
		}
		name := m.Services[key].Name
		emit(ch, descSvcRedirected, prometheus.CounterValue, float64(st.Redirected), name, key.String())
		emit(ch, descSvcNoEndpoint, prometheus.CounterValue, float64(st.NoEndpoint), name, key.String())
	}
	for id, name := range v.clusterNames {
		st, err := d.maps.ClusterStatsOf(id)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descClRedirected, fmt.Errorf("read counters of cluster %s: %w", name, err))
			continue
		}
		emit(ch, descClRedirected, prometheus.CounterValue, float64(st.Redirected), name)
	}
	slots := 0
	for _, cl := range m.Clusters {
		slots += len(cl.Endpoints)
	}
	emit(ch, descEntries, prometheus.GaugeValue, float64(len(m.Services)), "services")
	emit(ch, descEntries, prometheus.GaugeValue, float64(len(m.Clusters)), "clusters")
	emit(ch, descEntries, prometheus.GaugeValue, float64(slots), "endpoints")
	emit(ch, descEntries, prometheus.GaugeValue, float64(v.slots), "slots")
	emit(ch, descEntries, prometheus.GaugeValue, float64(len(d.enrolledList())), "enrolled_netns")
	if d.maps.Accelerates() {
		st, err := d.maps.AccelStatsOf()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descAccelSockets, fmt.Errorf("read same-node acceleration counters: %w", err))
			return
		}
		emit(ch, descAccelSockets, prometheus.CounterValue, float64(st.Sockets))
		emit(ch, descAccelSockErrors, prometheus.CounterValue, float64(st.SockErrors))
		emit(ch, descAccelNotLocal, prometheus.CounterValue, float64(st.NotLocal))
		emit(ch, descAccelMessages, prometheus.CounterValue, float64(st.Redirected), "redirected")
		emit(ch, descAccelMessages, prometheus.CounterValue, float64(st.Passed), "passed")
	}
}

// emit sends a metric, or the reason it cannot be made (a label that is not
// valid UTF-8, say) as an invalid metric: the scrape reports it, nothing
// panics.
func emit(ch chan<- prometheus.Metric, desc *prometheus.Desc, typ prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(desc, typ, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	ch <- m
}
