// Command kmesh-daemon runs the kmesh data plane on this node.
//
//	kmesh-daemon --mode=compat --config FILE --bpf-dir DIR [--enroll-netns NAME|PATH ...]
//	             [--bpf-fs-path DIR] [--cgroup2-path DIR] [--admin-addr ADDR] [--metrics-addr ADDR]
//	kmesh-daemon uninstall [--bpf-fs-path DIR] [--cgroup2-path DIR]
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
