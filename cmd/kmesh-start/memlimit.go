package main

import (
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/probe"
)

// daemonEnv returns the environment kmesh-daemon runs with: env, plus
// GOMEMLIMIT at 75% of the container's memory limit when the decision found
// one (env.memory_limit) and env does not set GOMEMLIMIT itself. The Go
// runtime then collects garbage harder as the heap nears the limit, instead
// of letting a config parse's garbage (hundreds of MiB for a large YAML
// file) push the container into the OOM killer; the other 25% is for what
// the Go heap does not count (stacks, runtime, BPF map memory charged to the
// cgroup).
func daemonEnv(env []string, rec *probe.Record, log logrus.FieldLogger) []string {
	var limit uint64
	if rec != nil && rec.Inputs.Environment != nil {
		limit = rec.Inputs.Environment.MemoryLimit
	}
	out, set := withMemLimit(env, limit)
	switch {
	case set != "":
		log.WithFields(logrus.Fields{"phase": "start", "gomemlimit": set, "memory_limit_mib": limit >> 20}).
			Info("daemon soft memory limit set from the container's memory limit")
	case limit != 0:
		log.WithFields(logrus.Fields{"phase": "start", "gomemlimit": lookupEnv(env, "GOMEMLIMIT"), "memory_limit_mib": limit >> 20}).
			Info("daemon soft memory limit taken from GOMEMLIMIT")
	}
	return out
}

// withMemLimit returns env with GOMEMLIMIT=75% of limit (bytes; 0 means no
// limit) added, and the value set ("" when env is returned unchanged: no
// limit, or a non-empty GOMEMLIMIT already there).
func withMemLimit(env []string, limit uint64) ([]string, string) {
	if limit == 0 || lookupEnv(env, "GOMEMLIMIT") != "" {
		return env, ""
	}
	soft := limit / 4 * 3
	v := fmt.Sprintf("%dMiB", soft>>20)
	if soft < 1<<20 {
		v = fmt.Sprintf("%dB", soft)
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") { // an empty one: replaced
			out = append(out, kv)
		}
	}
	return append(out, "GOMEMLIMIT="+v), v
}

// lookupEnv returns the value of the last name=value entry of env ("" when
// there is none), as the daemon's runtime would see it.
func lookupEnv(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if val, ok := strings.CutPrefix(kv, name+"="); ok {
			v = val
		}
	}
	return v
}
