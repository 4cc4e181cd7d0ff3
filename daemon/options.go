package daemon

import (
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon/loader"
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
	// (written by kmesh-start); empty or missing files are left out.
	DecisionPath    string
	BuildReportPath string
	Log             logrus.FieldLogger
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

func (o Options) loaderConfig() loader.Config {
	return loader.Config{ObjectDir: o.BPFDir, BPFFSPath: o.BPFFSPath, Cgroup2Path: o.Cgroup2Path, Log: o.Log}
}
