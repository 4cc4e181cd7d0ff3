package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/daemon"
	"kmesh.dev/kmesh/daemon/loader"
)

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// run parses flags strictly (an unknown flag is an error: a silently ignored
// setting is a lost setting) and runs the daemon or the uninstaller.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	log := logrus.New()
	log.SetOutput(stderr)
	if v := os.Getenv("KMESH_LOG_LEVEL"); v != "" {
		if lvl, err := logrus.ParseLevel(v); err == nil {
			log.SetLevel(lvl)
		} else { // not fatal: a pod must not crash-loop over its log level
			log.WithField("KMESH_LOG_LEVEL", v).Warn("unknown log level (want error, warn, info, debug or trace); logging at info")
		}
	}
	uninstall := len(args) > 0 && args[0] == "uninstall"
	if uninstall {
		args = args[1:]
	}
	fs := flag.NewFlagSet("kmesh-daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o daemon.Options
	var enroll multiFlag
	fs.StringVar(&o.BPFFSPath, "bpf-fs-path", loader.DefaultBPFFSPath, "bpffs mount point (mounted when absent)")
	fs.StringVar(&o.Cgroup2Path, "cgroup2-path", loader.DefaultCgroup2Path, "cgroup2 mount point; programs attach at its root")
	if !uninstall {
		fs.StringVar(&o.Mode, "mode", "", "data-plane mode: compat")
		fs.StringVar(&o.ConfigPath, "config", "", "Envoy v3 bootstrap (YAML or JSON), watched for changes; empty: the embedded default")
		fs.StringVar(&o.BPFDir, "bpf-dir", "", "directory of the compiled BPF objects")
		fs.Var(&enroll, "enroll-netns", "network namespace to enroll at start (name under /run/netns or a path); repeatable")
		fs.StringVar(&o.AdminAddr, "admin-addr", daemon.DefaultAdminAddr, "admin API address (/ready, /status, /config_dump, /enroll)")
		fs.StringVar(&o.MetricsAddr, "metrics-addr", daemon.DefaultMetricsAddr, "Prometheus metrics address (/metrics, /status/metric)")
		fs.StringVar(&o.DecisionPath, "decision", "", "decision record (JSON) to show in /status")
		fs.StringVar(&o.BuildReportPath, "build-report", "", "build report (JSON) to show in /status")
		fs.BoolFunc("same-node-accel", "same-node acceleration where the kernel has it (default true; false leaves it out)", func(v string) error {
			on, err := strconv.ParseBool(v)
			o.NoSameNodeAccel = !on
			return err
		})
		fs.DurationVar(&o.EnrollCheckInterval, "enroll-check-interval", daemon.DefaultEnrollCheckInterval,
			"how often enrolled namespaces are checked for being gone (their entries are released); negative: at start only")
		fs.StringVar(&o.XDSAddress, "xds-address", os.Getenv("XDS_ADDRESS"), "xDS control plane (default $XDS_ADDRESS); this version has no xDS client and says so in the log and /status")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // -h: the usage was asked for
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmesh-daemon: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	o.EnrollNetns = enroll
	o.Node = daemon.NodeFromEnv(os.Getenv)
	o.Log = log
	if uninstall {
		if err := daemon.Uninstall(o); err != nil {
			log.WithField("subsys", "daemon").WithError(err).Error("uninstall failed")
			return 1
		}
		return 0
	}
	if err := daemon.Run(ctx, o); err != nil {
		log.WithField("subsys", "daemon").WithError(err).Error("daemon failed")
		if errors.Is(err, daemon.ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}
