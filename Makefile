# kmesh — build, test and run. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

OUT        ?= $(CURDIR)/out
GO         ?= go
CLANG      ?= clang-19
GOFLAGS    ?=
export GOFLAGS

# Debian/Ubuntu packages the build, the tests and `make run` need.
DEB_PACKAGES := clang-19 llvm-19 libbpf-dev bpftool iproute2 make gcc gcc-12 libc6-dev \
	linux-headers-amd64 busybox-static qemu-system-x86 dwarves kmod xz-utils haproxy iptables
# `make deps` installs only what is missing; set DEPS_SKIP=1 to skip it.
DEPS_STAMP := $(OUT)/.deps-ok

# the image, base image and container e2e (docker/docker.mk: base-image, docker, e2e)
include docker/docker.mk

ADMIN_ADDR ?= 127.0.0.1:15200
# kmesh-start as make run and make bpf use it: sources from this tree, cache and state under out/
START_ARGS := --src-dir $(CURDIR) --cache-dir $(OUT)/cache --state-dir $(OUT)/run --clang $(CLANG)

.PHONY: help deps build bpf test test-unit fuzz vmtest run uninstall bench bench-traffic clean fmt vet

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install the toolchain from Debian/Ubuntu packages when missing
	@if [ "$(DEPS_SKIP)" = 1 ]; then exit 0; fi; \
	command -v $(GO) >/dev/null || { echo "deps: Go is required (https://go.dev/dl); not installable from here" >&2; exit 1; }; \
	missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "deps: need root to install: $$missing" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

build: ## build the binaries into out/ (kmeshctl, kmesh-start, kmesh-daemon)
	@mkdir -p $(OUT)
	$(GO) build -o $(OUT)/ ./cmd/...

bpf: build ## probe, build and verify the BPF objects for this host into out/bpf (a link into the cache, out/cache)
	$(OUT)/kmesh-start $(START_ARGS) --dry-run --objects-link $(OUT)/bpf

vet: ## go vet and gofmt check
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1; }

fmt: ## format Go and BPF C sources
	gofmt -w $$(git ls-files '*.go')

test-unit: build ## run the Go tests (privileged tests and the QEMU kernels included: run as root)
	$(GO) test -count=1 -timeout 35m ./...

vmtest: build ## boot Debian 5.10, 6.1 and 6.12 under QEMU: kmesh.ko, the ULP and the guest checks
	$(GO) test -count=1 -v -timeout 35m -run 'TestVM|TestKbuild' ./kmod/vmtest

# A count, not a duration: with a duration Go 1.26's fuzz coordinator can
# report "context deadline exceeded" as a failure at the deadline under load
# (golang/go#75804, fixed in Go 1.27). 200000 runs take ~10 s here.
FUZZTIME ?= 200000x
fuzz: ## run the fuzz targets briefly
	$(GO) test -run '^$$' -fuzz '^FuzzParseHelpers$$' -fuzztime $(FUZZTIME) ./probe

test: deps vet test-unit fuzz e2e ## everything CI runs
	@echo "make test: all passed"

run: deps build ## start kmesh on this node with the embedded default config (Ctrl-C stops; programs stay attached)
	$(OUT)/kmesh-start $(START_ARGS) --admin-addr $(ADMIN_ADDR)

uninstall: build ## remove what make run left on this node (links, pins, mounts)
	$(OUT)/kmesh-daemon uninstall

BENCH_PKGS ?= ./probe ./daemon/apply ./daemon/config ./cmd/kmesh-start
FORTIO_VERSION := v1.66.0
bench: deps build bench-traffic ## run all benchmarks (figures go to docs/benchmarks.md)
	@mkdir -p $(OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchtime 20x $(BENCH_PKGS) | tee $(OUT)/bench.txt
	set -o pipefail; $(GO) test -run '^$$' -bench ConnectHook -benchtime 5000x ./daemon/maps | tee -a $(OUT)/bench.txt

bench-traffic: deps build ## traffic benchmark: direct vs kmesh vs haproxy (run on an idle machine; ~7 min)
	@command -v fortio >/dev/null || $(GO) install fortio.org/fortio@$(FORTIO_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" $(GO) test -run '^$$' -bench Traffic -benchtime 1x -timeout 30m ./daemon/bench/

clean: ## remove build outputs
	rm -rf $(OUT)
