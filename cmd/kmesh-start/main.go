// Command kmesh-start is the container's entry point: it probes the host,
// decides the mode, builds (or takes from the cache) what that mode needs
// for this kernel, verifies it, and execs kmesh-daemon with matching flags,
// so the daemon becomes PID 1 and receives the signals.
//
//	kmesh-start [--mode auto|enhanced|compat] [--cache-dir DIR] [--host-root DIR]
//	            [--bpf-header PATH] [--src-dir DIR] [--clang PATH] [--daemon PATH]
//	            [--state-dir DIR] [--dry-run] [--output text|json] [daemon flags ...]
//
// Every flag it does not know is passed to the daemon (--config,
// --admin-addr, --enroll-netns, ...), in order.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, syscall.Exec)
	stop()
	os.Exit(code)
}
