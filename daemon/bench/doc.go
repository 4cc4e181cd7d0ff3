// Package bench holds the data-plane traffic benchmark (BenchmarkTraffic).
// It has no library code: everything is in _test.go files.
//
// In one run and one topology (a client and a backend network namespace
// joined by a veth pair) it loads the backend from the client namespace
//
//   - direct: to the backend address (the baseline),
//   - kmesh: to a service VIP that is routable nowhere; the real daemon
//     (daemon.Run, in-process, on a config naming the VIP and the backend)
//     rewrites connect() to the backend once the client is enrolled,
//   - kmesh-accel: kmesh with the backend's namespace enrolled too, as for
//     two pods of one node: same-node acceleration (bpf/sockmap.c, loaded
//     by the daemon) hands each send straight to the peer socket,
//   - proxy-tcp / proxy-http: to the VIP, which an iptables REDIRECT (a
//     sidecar's traffic capture) sends to haproxy on 127.0.0.1 inside the
//     client namespace (a user-space sidecar stand-in, TCP or HTTP mode),
//   - sidecars-http: a sidecar mesh's path, through a client-side and a
//     backend-side haproxy (HTTP mode), one per pod as Istio deploys them,
//     each reached through its pod's capture,
//
// in two scenarios: a new TCP connection per request (connect(), so kmesh's
// hook, on every request) and keep-alive connections (the data path). The
// load generator and the backend are fortio (the tool of Kmesh's published
// benchmarks), each its own process; the proxy is haproxy. Each case runs
// at the maximum rate (throughput) and at a fixed rate every case sustains
// (latency at equal load). Cases are interleaved in rounds (ABBA order) and
// reported as ratios against direct in the same round.
//
// It also runs kmesh-daemon as a separate process (go build) on a config of
// 10,000 services x 10 endpoints, YAML and JSON, and records its RSS, its
// start time and the time from writing a changed config to the daemon
// applying it and /status reporting the new config_version.
//
// Run as root:
//
//	go test -run '^$' -bench Traffic -benchtime 1x ./daemon/bench/          # full, ~8 min
//	go test -short -run '^$' -bench Traffic -benchtime 1x ./daemon/bench/   # quick, ~1 min
//
// The markdown report is logged and written to $KMESH_BENCH_OUT (default
// out/bench-traffic.md under the repository root); docs/benchmarks-traffic.md
// explains it. Environment:
//
//	KMESH_BENCH_DURATION  duration of each load run (default 3s; -short 1s)
//	KMESH_BENCH_ROUNDS    rounds (default 6; -short 1)
//	KMESH_BENCH_CONC      connections of the load generator (default 4)
//	KMESH_BENCH_PAYLOAD   response body size in bytes (default 1024)
//	KMESH_BENCH_SERVICES  services x endpoints of the daemon config (default 10000x10)
//	KMESH_BENCH_RELOADS   config reloads timed per kind (default 3; -short 1, one kind, YAML only)
//	KMESH_BENCH_NICE      run fortio and haproxy under nice -n N (default 0: off), e.g. -5
//	                      on a machine other jobs load; the report says so
//	KMESH_BENCH_OUT       the report's path
//	KMESH_DAEMON_BIN      a built kmesh-daemon to use instead of go build
//	KMESH_BPF_DIR         compiled objects (e.g. make bpf's out/bpf) instead of building bpf/ here
//	FORTIO, HAPROXY,
//	IPTABLES              the tools' paths (default: $PATH; fortio also $(go env GOPATH)/bin)
//
// A missing tool fails the benchmark, naming what to install: fortio with
// `go install fortio.org/fortio@v1.66.0`, haproxy with `apt-get install
// haproxy` (make deps).
package bench
