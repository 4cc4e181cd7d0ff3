# The kmesh runtime image: kmesh-start probes the node, compiles the BPF
# objects (and kmesh.ko) for its kernel with the toolchain below, and execs
# kmesh-daemon. No Go toolchain: the binaries are built on the build host
# (static, -trimpath) and copied in.
#
# Build context: the directory docker/context.sh stages (`make docker` does):
#   build/   the helpers of the RUN below, laid out as they are installed
#   rootfs/  usr/bin/{kmesh-start,kmesh-daemon,kmeshctl,start_kmesh.sh}, usr/share/kmesh/src/{bpf,kmod}
#
# BASE_IMAGE is a Debian bookworm image; `make base-image` makes one locally
# with debootstrap (docker/base-image.sh), no registry needed.
#
# Few steps, and the metadata first: every step after the large RUN would be
# another full copy of the root file system with storage drivers such as vfs.
ARG BASE_IMAGE=localhost/kmesh-base:bookworm
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=dev
LABEL org.opencontainers.image.title="kmesh" \
      org.opencontainers.image.description="kmesh data plane: probes the node, builds its BPF objects for the running kernel, runs kmesh-daemon" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
WORKDIR /
# Arguments to the container go to kmesh-start and, past its own flags, to
# kmesh-daemon (docs/build.md).
ENTRYPOINT ["/usr/bin/start_kmesh.sh"]
CMD []

# /etc/dpkg/dpkg.cfg.d/95kmesh-trim (docker/dpkg-trim.cfg): the files kmesh
# does not use are never unpacked; /usr/local/sbin/kmesh-install-packages
# pins each package to the version apt offers at build time and records the
# result in /usr/share/kmesh/packages.txt; kmesh-stub-libs replaces libz3 and
# ICU's data, which libLLVM links but clang -target bpf never calls.
#
# The host's header trees link into /usr/lib/linux-kbuild-<ver> (Debian) with
# relative links (../../lib/...). Here /usr/src is a link to /host/usr/src,
# where the host's /usr/src is mounted, with the host's /usr/lib at
# /host/usr/lib: /lib/modules/<release>/build -> /usr/src/linux-headers-...
# then resolves into the host's tree and its relative links into the host's
# /usr/lib, never into the image's own. (`-v /usr/src:/usr/src` lands there
# too: the runtime follows the link.)
ARG PACKAGES="clang-19 bpftool libbpf-dev linux-libc-dev make gcc-12 libc6-dev libelf1"
COPY build/ /
RUN rmdir /usr/src && mkdir -p /host/usr/src /host/usr/lib && ln -s /host/usr/src /usr/src && \
    /usr/local/sbin/kmesh-install-packages ${PACKAGES} && \
    /usr/local/sbin/kmesh-stub-libs

COPY rootfs/ /
