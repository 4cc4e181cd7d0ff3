#!/usr/bin/env bash
# Make the Debian base image of the kmesh image locally (no registry needed):
# debootstrap a minbase root file system from the Debian mirror this machine
# uses, trim it and import it as $BASE_IMAGE.
#
# The root file system is cached as a tarball keyed by the sha256 of its
# inputs (this script, suite, architecture, mirrors, debootstrap's version), so
# it is made once per machine and again only when an input changes.
#
# Environment:
#   DOCKER       container CLI, may carry options (default: docker; e.g. podman, "podman --root DIR")
#   BASE_IMAGE   tag to import as (default: localhost/kmesh-base:bookworm)
#   SUITE        Debian suite (default: bookworm)
#   MIRROR       Debian mirror (default: the first URIs of /etc/apt/sources.list.d/debian.sources
#                that serves $SUITE, else http://deb.debian.org/debian)
#   SECURITY_MIRROR  (default: the URIs there that serve $SUITE-security, else http://deb.debian.org/debian-security)
#   BASE_CACHE   where the tarball is cached (default: /var/cache/kmesh-base)
#   BASE_REFRESH=1  debootstrap again even when the cached tarball is there
#   BASE_TAR_ONLY=1 make (or find) the tarball, print its path, do not import
set -euo pipefail

DOCKER=${DOCKER:-docker}
BASE_IMAGE=${BASE_IMAGE:-localhost/kmesh-base:bookworm}
SUITE=${SUITE:-bookworm}
BASE_CACHE=${BASE_CACHE:-/var/cache/kmesh-base}
ARCH=${ARCH:-$(dpkg --print-architecture)}
SOURCES=/etc/apt/sources.list.d/debian.sources

log() { echo "base-image: $*" >&2; }
die() { log "$*"; exit 1; }

# urisFor SUITE: the URIs of the deb822 stanza in $SOURCES whose Suites list SUITE.
urisFor() {
	[ -r "$SOURCES" ] || return 0
	awk -v want="$1" '
		function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = "" }
		/^[ \t]*#/ { next }
		/^[ \t]*$/ { flush(); next }
		tolower($1) == "types:" { $1 = ""; types = $0 }
		tolower($1) == "suites:" { $1 = ""; suites = $0 }
		tolower($1) == "uris:" { $1 = ""; uris = $0 }
		END { if (!found) flush() }' "$SOURCES"
}

MIRROR=${MIRROR:-$(urisFor "$SUITE")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(urisFor "$SUITE-security")}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

command -v debootstrap >/dev/null || die "debootstrap is required (apt-get install debootstrap)"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || die "$KEYRING missing (apt-get install debian-archive-keyring)"

key=$( {
	cat "${BASH_SOURCE[0]}"
	echo "suite=$SUITE arch=$ARCH mirror=$MIRROR security=$SECURITY_MIRROR"
	dpkg-query -W -f='${Version}\n' debootstrap 2>/dev/null || debootstrap --version
} | sha256sum | cut -c1-16)
tarball=$BASE_CACHE/debian-$SUITE-$ARCH-$key.tar

make_rootfs() {
	[ "$(id -u)" = 0 ] || die "debootstrap needs root"
	mkdir -p "$BASE_CACHE"
	local work
	work=$(mktemp -d "$BASE_CACHE/.work.XXXXXX")
	local root=$work/rootfs
	# shellcheck disable=SC2064
	trap "cleanup_work '$work'" EXIT
	log "debootstrap --variant=minbase $SUITE from $MIRROR (about 40 s)"
	local t0=$SECONDS
	debootstrap --variant=minbase --arch="$ARCH" --keyring="$KEYRING" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	configure_rootfs "$root"
	tar --numeric-owner --sort=name -C "$root" -cf "$work/rootfs.tar" .
	mv "$work/rootfs.tar" "$tarball"
	# keep only this entry: an old key's tarball is never used again
	find "$BASE_CACHE" -maxdepth 1 -name "debian-$SUITE-$ARCH-*.tar" ! -name "${tarball##*/}" -delete
	log "made $tarball ($(du -m "$tarball" | cut -f1) MiB) in $((SECONDS - t0)) s"
}

# cleanup_work unmounts whatever debootstrap left mounted (on failure) and
# removes the work directory without crossing into a mount.
cleanup_work() {
	local work=$1 m
	if [ -d "$work" ]; then
		for m in $(awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
			umount -l "$m" || true
		done
		rm -rf --one-file-system "$work"
	fi
}

configure_rootfs() {
	local root=$1
	rm -f "$root/etc/apt/sources.list"
	cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	cat >"$root/etc/apt/apt.conf.d/90kmesh-minimal" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dpkg::Use-Pty "false";
EOF
	# packages installed later leave out documentation and translations
	# (copyright files stay: they are the licences)
	cat >"$root/etc/dpkg/dpkg.cfg.d/90kmesh-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/bug/*
path-exclude=/usr/lib/*/gconv/*.so
EOF
	# debootstrap installs $SUITE as released: take the point-release and
	# security updates now, so the image build does not carry a second copy
	# of every upgraded package in its own layer
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	chroot "$root" apt-get update -q >>"$root/../apt.log" 2>&1 &&
		chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confold upgrade >>"$root/../apt.log" 2>&1 ||
		{ tail -20 "$root/../apt.log" >&2; die "apt-get upgrade in the new root failed (log above)"; }
	chroot "$root" apt-get clean
	: >"$root/etc/resolv.conf"
	# and so do the ones debootstrap installed
	find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
	rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/* "$root"/usr/share/bug/*
	find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
	# glibc's iconv modules (8 MB): nothing kmesh runs converts between
	# character sets (UTF-8, ASCII, Latin-1, UTF-16/32 are built into glibc);
	# iconv_open of another charset fails cleanly
	find "$root/usr/lib" -path '*/gconv/*.so' -delete
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
		"$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*
	# a container gets its identity at run time
	: >"$root/etc/machine-id"
	rm -f "$root/etc/hostname" "$root/var/lib/dbus/machine-id"
}

if [ "${BASE_REFRESH:-0}" = 1 ] || [ ! -s "$tarball" ]; then
	make_rootfs
else
	log "cached: $tarball"
fi

if [ "${BASE_TAR_ONLY:-0}" = 1 ]; then
	echo "$tarball"
	exit 0
fi

# $DOCKER may carry options (podman --root ...): split on purpose
# shellcheck disable=SC2086
if [ "$($DOCKER image inspect --format '{{ index .Config.Labels "dev.kmesh.base.key" }}' "$BASE_IMAGE" 2>/dev/null)" = "$key" ]; then
	log "$BASE_IMAGE is up to date ($key)"
	exit 0
fi
log "importing $tarball as $BASE_IMAGE"
# shellcheck disable=SC2086
$DOCKER import \
	--change "LABEL dev.kmesh.base.key=$key" --change "LABEL dev.kmesh.base.suite=$SUITE" \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["/bin/bash"]' \
	"$tarball" "$BASE_IMAGE" >/dev/null
log "$BASE_IMAGE ready"
