package main

import (
	"context"
	"strings"
	"testing"
)

// TestRunRejectsBadUsage: a flag the daemon does not know, a value it cannot
// take or a missing required setting ends it with exit code 2 and a message
// naming the offender, before anything is mounted, loaded or attached
// (upstream ignored unknown flags, and users lost settings that way).
func TestRunRejectsBadUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"misspelled flag", []string{"--mode=compat", "--bpf-dir=/nonexistent", "--enrol-netns=client"},
			"flag provided but not defined: -enrol-netns"},
		{"upstream's flag", []string{"--mode=compat", "--bpf-dir=/nonexistent", "--enable-kmesh"},
			"flag provided but not defined: -enable-kmesh"},
		{"uninstall takes only the path flags", []string{"uninstall", "--config=/etc/kmesh.yaml"},
			"flag provided but not defined: -config"},
		{"positional argument", []string{"--mode=compat", "--bpf-dir=/nonexistent", "extra"},
			"unexpected arguments: [extra]"},
		{"boolean that is not one", []string{"--mode=compat", "--bpf-dir=/nonexistent", "--same-node-accel=maybe"},
			`invalid boolean value "maybe" for -same-node-accel`},
		{"duration that is not one", []string{"--mode=compat", "--bpf-dir=/nonexistent", "--enroll-check-interval=often"},
			`invalid value "often" for flag -enroll-check-interval`},
		{"flag without its value", []string{"--mode=compat", "--bpf-dir"},
			"flag needs an argument: -bpf-dir"},
		{"unknown mode", []string{"--mode=sidecar", "--bpf-dir=/nonexistent"},
			`mode \"sidecar\": want compat or enhanced`},
		{"no mode", []string{"--bpf-dir=/nonexistent"},
			`mode \"\": want compat or enhanced`},
		{"no objects", []string{"--mode=compat"},
			"--bpf-dir is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			code := run(context.Background(), tc.args, &stderr)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (usage)", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}

// TestRunHelp: -h prints every flag with its default and exits 0, as
// kmesh-start's does.
func TestRunHelp(t *testing.T) {
	var stderr strings.Builder
	if code := run(context.Background(), []string{"-h"}, &stderr); code != 0 {
		t.Errorf("-h: exit code %d, want 0", code)
	}
	for _, want := range []string{"-admin-addr", "127.0.0.1:15200", "-metrics-addr", ":15020", "-bpf-fs-path", "/sys/fs/bpf",
		"-cgroup2-path", "/mnt/kmesh_cgroup2", "-config", "-enroll-netns", "-same-node-accel", "-xds-address"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("help does not mention %q:\n%s", want, stderr.String())
		}
	}
}
