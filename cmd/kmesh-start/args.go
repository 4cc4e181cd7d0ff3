package main

import (
	"fmt"
	"strings"
)

// options are kmesh-start's own flags; everything else goes to the daemon.
type options struct {
	mode, cacheDir, hostRoot, bpfHeader, srcDir, clang, daemon, stateDir, output string
	// objectsLink, when set, is a symlink pointed at the built objects
	// (make bpf: out/bpf).
	objectsLink string
	dryRun      bool
	// passed on to the daemon, and read here: where to mount
	bpffsPath, cgroup2Path string
	daemonArgs             []string
}

func defaults() options {
	return options{mode: "auto", cacheDir: "/var/lib/kmesh/cache", hostRoot: "/", bpfHeader: "/usr/include/linux/bpf.h",
		srcDir: "/usr/share/kmesh/src", clang: "clang-19", stateDir: "/run/kmesh", output: "text",
		bpffsPath: "/sys/fs/bpf", cgroup2Path: "/mnt/kmesh_cgroup2"}
}

const usage = `usage: kmesh-start [flags] [daemon flags]

flags:
  --mode auto|enhanced|compat   mode to run (default auto: enhanced when possible)
  --cache-dir DIR               build cache (default /var/lib/kmesh/cache)
  --host-root DIR               where the host's files are seen (default /)
  --bpf-header PATH             the host's linux/bpf.h (default /usr/include/linux/bpf.h)
  --src-dir DIR                 kmesh sources (bpf/, kmod/) (default /usr/share/kmesh/src)
  --clang PATH                  BPF compiler (default clang-19)
  --daemon PATH                 kmesh-daemon (default: next to kmesh-start, else PATH)
  --state-dir DIR               where the decision record is written (default /run/kmesh)
  --dry-run                     probe, build and verify, print the result, exit
  --output text|json            dry-run output (json: {"decision": ..., "build": ...})
  --objects-link PATH           point the symlink PATH at the built objects (make bpf: out/bpf)

every other flag is passed to kmesh-daemon (e.g. --config, --admin-addr, --enroll-netns);
--bpf-fs-path and --cgroup2-path are read here too (mounts) and passed on.
`

// parseArgs splits kmesh-start's flags from the daemon's. It accepts
// --flag value and --flag=value, with one or two dashes.
func parseArgs(args []string) (options, error) {
	o := defaults()
	own := map[string]*string{"mode": &o.mode, "cache-dir": &o.cacheDir, "host-root": &o.hostRoot, "bpf-header": &o.bpfHeader,
		"src-dir": &o.srcDir, "clang": &o.clang, "daemon": &o.daemon, "state-dir": &o.stateDir, "output": &o.output,
		"objects-link": &o.objectsLink}
	shared := map[string]*string{"bpf-fs-path": &o.bpffsPath, "cgroup2-path": &o.cgroup2Path}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			o.daemonArgs = append(o.daemonArgs, a)
			continue
		}
		if a == "--" {
			o.daemonArgs = append(o.daemonArgs, args[i+1:]...)
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "dry-run":
			if hasVal && val != "true" && val != "false" {
				return o, fmt.Errorf("--dry-run=%s: want true or false", val)
			}
			o.dryRun = !hasVal || val == "true"
			continue
		case "h", "help":
			return o, errHelp
		}
		dst, mine := own[name]
		sh, isShared := shared[name]
		if !mine && !isShared {
			o.daemonArgs = append(o.daemonArgs, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val = args[i]
		}
		if mine {
			*dst = val
			continue
		}
		*sh = val
		o.daemonArgs = append(o.daemonArgs, "--"+name+"="+val)
	}
	if o.output != "text" && o.output != "json" {
		return o, fmt.Errorf("--output %q: want text or json", o.output)
	}
	for _, a := range o.daemonArgs {
		if n := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-"); n == "mode" || n == "bpf-dir" || n == "decision" || n == "build-report" {
			return o, fmt.Errorf("--%s is set by kmesh-start from the decision and the build; do not pass it", n)
		}
	}
	return o, nil
}

var errHelp = fmt.Errorf("help requested")
