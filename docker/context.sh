#!/usr/bin/env bash
# Stage the build context of docker/kmesh.dockerfile in DIR:
#   DIR/build/   the Dockerfile's helpers, at the paths they are installed to
#   DIR/rootfs/  static binaries built here (-trimpath, no build ID: the same
#                tree gives the same bytes), the entry point, and the sources
#                kmesh-start compiles on the node
# Nothing else of the tree is sent to the builder.
#
#   docker/context.sh DIR        (GO selects the go command, default go)
set -euo pipefail
dir=${1:?usage: docker/context.sh DIR}
GO=${GO:-go}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

rm -rf "$dir"
build=$dir/build rootfs=$dir/rootfs
mkdir -p "$build/etc/dpkg/dpkg.cfg.d" "$build/usr/local/sbin" "$rootfs/usr/bin" "$rootfs/usr/share/kmesh/src"

cp "$repo/docker/dpkg-trim.cfg" "$build/etc/dpkg/dpkg.cfg.d/95kmesh-trim"
cp "$repo/docker/install-packages.sh" "$build/usr/local/sbin/kmesh-install-packages"
cp "$repo/docker/stub-libs.sh" "$build/usr/local/sbin/kmesh-stub-libs"

(cd "$repo" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w -buildid=' -o "$rootfs/usr/bin/" \
	./cmd/kmesh-start ./cmd/kmesh-daemon ./cmd/kmeshctl)
cp "$repo/start_kmesh.sh" "$rootfs/usr/bin/start_kmesh.sh"
# bpf/ whole (the cache key hashes every file under it); kmod/ without the
# QEMU harness (Go) and without kbuild artefacts of in-place builds
tar -C "$repo" -c --exclude='kmod/vmtest' --exclude='*.o' --exclude='*.ko' --exclude='*.mod' --exclude='*.mod.c' \
	--exclude='.*.cmd' --exclude='Module.symvers' --exclude='modules.order' --exclude='.tmp_versions' bpf kmod |
	tar -C "$rootfs/usr/share/kmesh/src" -x

chmod -R u=rwX,go=rX "$dir"
chmod 0755 "$build"/usr/local/sbin/* "$rootfs"/usr/bin/*
# the same tree gives the same context whichever client sends it (docker's
# CLI or podman): fixed times and owner
find "$dir" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
chown -R 0:0 "$dir" 2>/dev/null || true
echo "$dir"
