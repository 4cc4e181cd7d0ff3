package main

import (
	"bytes"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"kmesh.dev/kmesh/probe"
)

func TestDaemonEnvMemLimit(t *testing.T) {
	base := []string{"PATH=/usr/bin", "KMESH_LOG_LEVEL=info"}
	withEnv := func(extra ...string) []string { return append(slices.Clone(base), extra...) }
	tests := []struct {
		name   string
		env    []string
		limit  uint64 // 0: none found
		nilEnv bool   // the record has no environment
		want   []string
		log    string // in the log line ("" for none)
	}{
		{name: "no limit", env: withEnv(), want: withEnv()},
		{name: "no environment in the record", env: withEnv(), nilEnv: true, want: withEnv()},
		{name: "limit", env: withEnv(), limit: 800 << 20, want: withEnv("GOMEMLIMIT=600MiB"), log: "gomemlimit=600MiB memory_limit_mib=800"},
		{name: "limit not a MiB multiple", env: withEnv(), limit: 1000 * 1000 * 1000, want: withEnv("GOMEMLIMIT=715MiB"), log: "gomemlimit=715MiB"},
		{name: "tiny limit", env: withEnv(), limit: 1 << 20, want: withEnv("GOMEMLIMIT=786432B"), log: "gomemlimit=786432B"},
		{name: "already set", env: withEnv("GOMEMLIMIT=1GiB"), limit: 800 << 20, want: withEnv("GOMEMLIMIT=1GiB"), log: "gomemlimit=1GiB"},
		{name: "already set to off", env: withEnv("GOMEMLIMIT=off"), limit: 800 << 20, want: withEnv("GOMEMLIMIT=off"), log: "taken from GOMEMLIMIT"},
		{name: "already set, no limit", env: withEnv("GOMEMLIMIT=1GiB"), want: withEnv("GOMEMLIMIT=1GiB")},
		{name: "set but empty", env: []string{"GOMEMLIMIT=", "PATH=/usr/bin", "KMESH_LOG_LEVEL=info"}, limit: 800 << 20,
			want: withEnv("GOMEMLIMIT=600MiB"), log: "gomemlimit=600MiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &probe.Record{}
			if !tc.nilEnv {
				rec.Inputs.Environment = &probe.Environment{MemoryLimit: tc.limit}
			}
			var logs bytes.Buffer
			log := logrus.New()
			log.SetOutput(&logs)
			in := slices.Clone(tc.env)
			got := daemonEnv(in, rec, log)
			if !slices.Equal(got, tc.want) {
				t.Errorf("env = %q, want %q", got, tc.want)
			}
			if !slices.Equal(in, tc.env) {
				t.Errorf("the input env was modified: %q", in)
			}
			switch {
			case tc.log == "" && logs.Len() != 0:
				t.Errorf("logged %q", logs.String())
			case tc.log != "" && (!strings.Contains(logs.String(), tc.log) || strings.Count(logs.String(), "\n") != 1):
				t.Errorf("log %q, want one line with %q", logs.String(), tc.log)
			}
		})
	}
	if got := daemonEnv(base, nil, logrus.New()); !slices.Equal(got, base) {
		t.Errorf("nil record: %q", got)
	}
}

// The value set is one the Go runtime accepts: a child process started with
// that environment reports it as its memory limit.
func TestDaemonEnvMemLimitAccepted(t *testing.T) {
	if os.Getenv("KMESH_TEST_PRINT_MEMLIMIT") == "1" {
		os.Stdout.WriteString(strconv.FormatInt(debug.SetMemoryLimit(-1), 10) + "\n")
		return
	}
	for _, limit := range []uint64{800 << 20, 1 << 20, 3 << 30} {
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMEMLIMIT=") })
		env, v := withMemLimit(append(env, "KMESH_TEST_PRINT_MEMLIMIT=1"), limit)
		if v == "" {
			t.Fatalf("limit %d: GOMEMLIMIT not set", limit)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestDaemonEnvMemLimitAccepted$")
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOMEMLIMIT=%s: child: %v %s", v, err, out)
		}
		got, err := strconv.ParseUint(strings.Fields(string(out))[0], 10, 64)
		want := limit / 4 * 3
		if v != strconv.FormatUint(want, 10)+"B" {
			want = want >> 20 << 20 // rounded down to MiB
		}
		if err != nil || got != want {
			t.Errorf("GOMEMLIMIT=%s: the runtime's limit is %d (%v), want %d", v, got, err, want)
		}
	}
}
