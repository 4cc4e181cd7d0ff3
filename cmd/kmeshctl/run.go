package main

import (
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
)

const usage = `usage: kmeshctl <command> [flags]

commands:
  probe     probe this host and print the decision record (--output text|json)
  features  write the BPF feature header (kmesh_features.h) for this host or a record
  enroll    put a network namespace under kmesh (--netns NAME|PATH) on the running daemon
  unenroll  release a network namespace (--netns NAME|PATH, or --cookie N for one that is gone)
  status    print the running daemon's /status
`

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	log := logrus.New()
	log.SetOutput(stderr)
	if v := os.Getenv("KMESH_LOG_LEVEL"); v != "" {
		if lvl, err := logrus.ParseLevel(v); err == nil {
			log.SetLevel(lvl)
		} else {
			log.WithField("KMESH_LOG_LEVEL", v).Warn("unknown log level (want error, warn, info, debug or trace); logging at info")
		}
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "probe":
		return runProbe(args[1:], stdout, stderr, log)
	case "features":
		return runFeatures(args[1:], stdout, stderr, log)
	case "enroll", "unenroll", "status":
		return runAdmin(args[0], args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "kmeshctl: unknown command %q\n%s", args[0], usage)
		return 2
	}
}
