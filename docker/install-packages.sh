#!/bin/sh
# Runs inside the image build (docker/kmesh.dockerfile): installs the given
# Debian packages, each pinned to the version the base's apt policy offers at
# build time (pkg=version, printed and recorded), without recommends (and
# without fsync per file: a failed build is thrown away anyway), then
# removes apt's lists and caches.
#
#   install-packages.sh PKG...          pin each to its candidate version
#   install-packages.sh PKG=VERSION...  install exactly these versions
set -eu
export DEBIAN_FRONTEND=noninteractive
record=/usr/share/kmesh/packages.txt

apt-get update -q
# security and point-release updates of what the base already has
apt-get -y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-unsafe-io upgrade

pins=""
for p in "$@"; do
	case "$p" in
	*=*) pins="$pins $p" ;;
	*)
		v=$(apt-cache policy "$p" | awk '$1 == "Candidate:" { print $2 }')
		if [ -z "$v" ] || [ "$v" = "(none)" ]; then
			echo "install-packages: no candidate version for $p" >&2
			exit 1
		fi
		pins="$pins $p=$v"
		;;
	esac
done
echo "install-packages: apt-get install$pins"
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-unsafe-io $pins

mkdir -p "${record%/*}"
{
	echo "# requested (pinned at build time)"
	for p in $pins; do echo "$p"; done
	echo "# installed"
	dpkg-query -W -f '${Package}=${Version}\n'
} >"$record"

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old \
	/var/log/apt /var/log/dpkg.log /var/log/alternatives.log
