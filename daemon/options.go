package daemon

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon/loader"
	"kmesh.dev/kmesh/daemon/maps"
)

// Options configure the daemon. cmd/kmesh-daemon builds them from flags.
type Options struct {
	// Mode is the data-plane mode: compat, or enhanced (kmesh.ko loaded by
	// kmesh-start; this version runs the L4 programs in both).
	Mode string
	// ConfigPath is the Envoy bootstrap (YAML or JSON); "" uses the embedded default.
	ConfigPath string
	// BPFDir holds the compiled objects.
	BPFDir string
	// EnrollNetns are namespaces (names under /run/netns or paths) enrolled at start.
	EnrollNetns []string
	BPFFSPath   string
	Cgroup2Path string
	AdminAddr   string
	MetricsAddr string
	// DecisionPath and BuildReportPath are JSON documents shown in /status
	// (written by kmesh-start); one that cannot be read, or is not JSON, is
	// left out with a note saying why.
	DecisionPath    string
	BuildReportPath string
	// XDSAddress is the xDS control plane (the DaemonSet's XDS_ADDRESS).
	// This version has no xDS client: a set address is reported as such in
	// the log and /status, and the configuration comes from ConfigPath.
	XDSAddress string
	// NoSameNodeAccel leaves same-node acceleration (sockmap.o) out even
	// where the kernel has it (--same-node-accel=false): connections that
	// it accelerates switch to TCP/IP and its programs are detached.
	NoSameNodeAccel bool
	// EnrollCheckInterval is how often enrolled namespaces are checked for
	// being gone (their entries are then released); 0 means the default,
	// 30s; negative checks only at start.
	EnrollCheckInterval time.Duration
	// ConfigRetryBackoff is how long the watcher waits before it applies a
	// config that failed to apply (capacity, kernel write errors) once more;
	// it doubles with every failure up to 5 minutes. A change of the file is
	// applied at once. Zero means 1s.
	ConfigRetryBackoff time.Duration
	// Node is this daemon's identity (the DaemonSet's downward-API env),
	// shown in /status.
	Node Node
	Log  logrus.FieldLogger
}

// Node identifies the pod and node a daemon runs on.
type Node struct {
	PodName      string `json:"pod_name,omitempty"`
	PodNamespace string `json:"pod_namespace,omitempty"`
	NodeName     string `json:"node_name,omitempty"`
	InstanceIP   string `json:"instance_ip,omitempty"`
}

// NodeFromEnv reads POD_NAME, POD_NAMESPACE, NODE_NAME and INSTANCE_IP.
func NodeFromEnv(getenv func(string) string) Node {
	return Node{PodName: getenv("POD_NAME"), PodNamespace: getenv("POD_NAMESPACE"),
		NodeName: getenv("NODE_NAME"), InstanceIP: getenv("INSTANCE_IP")}
}

// xdsNote is what /status and the log say about a set XDSAddress.
func (o *Options) xdsNote() string {
	if o.XDSAddress == "" {
		return ""
	}
	src := o.ConfigPath
	if src == "" {
		src = "the embedded default"
	}
	return fmt.Sprintf("xDS address %s is set, but this version has no xDS client: the configuration comes from %s (--config)", o.XDSAddress, src)
}

// Defaults.
const (
	DefaultAdminAddr   = "127.0.0.1:15200"
	DefaultMetricsAddr = ":15020"
)

// ErrUsage marks invalid options.
var ErrUsage = errors.New("invalid options")

func (o *Options) validate() error {
	switch o.Mode {
	case "compat", "enhanced":
	default:
		return fmt.Errorf("mode %q: want compat or enhanced: %w", o.Mode, ErrUsage)
	}
	if o.BPFDir == "" {
		return fmt.Errorf("--bpf-dir is required: %w", ErrUsage)
	}
	if o.BPFFSPath == "" {
		o.BPFFSPath = loader.DefaultBPFFSPath
	}
	if o.Cgroup2Path == "" {
		o.Cgroup2Path = loader.DefaultCgroup2Path
	}
	if o.AdminAddr == "" {
		o.AdminAddr = DefaultAdminAddr
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = DefaultMetricsAddr
	}
	if o.Log == nil {
		o.Log = logrus.New()
	}
	return nil
}

func (o Options) enrollCheckInterval() time.Duration {
	if o.EnrollCheckInterval == 0 {
		return DefaultEnrollCheckInterval
	}
	return o.EnrollCheckInterval
}

// DefaultEnrollCheckInterval is Options.EnrollCheckInterval's default.
const DefaultEnrollCheckInterval = 30 * time.Second

func (o Options) loaderConfig() loader.Config {
	c := loader.Config{ObjectDir: o.BPFDir, BPFFSPath: o.BPFFSPath, Cgroup2Path: o.Cgroup2Path, Log: o.Log}
	if o.NoSameNodeAccel {
		c.SkipObjects = []string{strings.TrimSuffix(maps.ObjectSockmap, ".o")}
	}
	return c
}
