#!/bin/sh
# Runs inside the image build (docker/kmesh.dockerfile), after the packages.
#
# libLLVM links two libraries that `clang -target bpf -c` never calls:
#   - libz3 (22 MB): the static analyzer's optional Z3 constraint solver;
#   - libicudata (30 MB), through libxml2 -> libicuuc: ICU's conversion
#     tables, used by libxml2 only for documents in non-built-in encodings
#     (LLVM uses libxml2 only in llvm-mt and lld's COFF manifests).
# dpkg leaves their files out (docker/dpkg-trim.cfg); this builds small
# stand-ins with the same sonames so the dynamic linker is satisfied:
#   - libz3.so.4 defines every Z3_* function libLLVM imports (read from
#     libLLVM itself) as a function that says what happened and aborts;
#   - libicudata.so.NN is ICU's own "stub data" (an empty data package, as
#     ICU's stubdata/ library builds it): ICU then reports missing data
#     instead of crashing.
# At the end clang compiles and links nothing but is checked: every library
# resolves, and a BPF program compiles.
set -eu
lib=/usr/lib/x86_64-linux-gnu
cc=gcc-12
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

llvm=$(ls "$lib"/libLLVM.so.* | head -1)

# --- libz3.so.4 ------------------------------------------------------------
{
	echo '#include <stdio.h>'
	echo '#include <stdlib.h>'
	printf '%s\n' 'static void gone(const char *f) { fprintf(stderr, "%s: Z3 is not part of the kmesh image (clang -analyzer-constraints=z3 is unsupported here)\n", f); abort(); }'
	nm -D --undefined-only "$llvm" | awk '$1 == "U" && $2 ~ /^Z3_/ { print $2 }' | sort -u |
		while read -r f; do echo "void $f(void) { gone(\"$f\"); }"; done
} >"$work/z3.c"
n=$(grep -c '^void Z3_' "$work/z3.c" || true)
[ "$n" -gt 0 ] || { echo "stub-libs: libLLVM imports no Z3_ symbol: nothing to stub?" >&2; exit 1; }
$cc -O2 -shared -fPIC -Wl,-soname,libz3.so.4 -o "$lib/libz3.so.4" "$work/z3.c"

# --- libicudata.so.NN --------------------------------------------------------
icuuc=$(ls "$lib"/libicuuc.so.[0-9][0-9] | head -1)
ver=${icuuc##*.so.}
sym=$(nm -D --undefined-only "$icuuc" | awk '$1 == "U" && $2 ~ /^icudt[0-9]+_dat$/ { print $2 }')
[ "$sym" = "icudt${ver}_dat" ] || { echo "stub-libs: $icuuc imports '$sym', expected icudt${ver}_dat" >&2; exit 1; }
cat >"$work/icudata.c" <<EOF
#include <stdint.h>
/* ICU's stubdata.cpp: a data header with a table of contents of 0 entries. */
struct ICU_Data_Header {
	uint16_t headerSize;
	uint8_t magic1, magic2;
	struct {
		uint16_t size, reservedWord;
		uint8_t isBigEndian, charsetFamily, sizeofUChar, reservedByte;
		uint8_t dataFormat[4], formatVersion[4], dataVersion[4];
	} info;
	char padding[8];
	uint32_t count, reserved;
	struct { uint32_t nameOffset, dataOffset; } toc[1];
};
__attribute__((visibility("default"), aligned(16))) const struct ICU_Data_Header $sym = {
	32, 0xda, 0x27,
	{ 20, 0, 0 /* little endian */, 0 /* ASCII family */, 2, 0,
	  { 0x54, 0x6f, 0x43, 0x50 } /* "ToCP" */, { 1, 0, 0, 0 }, { 0, 0, 0, 0 } },
	{ 0 }, 0, 0, { { 0, 0 } }
};
EOF
$cc -O2 -shared -fPIC -Wl,-soname,"libicudata.so.$ver" -o "$lib/libicudata.so.$ver.stub" "$work/icudata.c"
mv "$lib/libicudata.so.$ver.stub" "$lib/libicudata.so.$ver"
ldconfig

# --- check -------------------------------------------------------------------
for b in /usr/lib/llvm-19/bin/clang /usr/sbin/bpftool /usr/lib/gcc/x86_64-linux-gnu/12/cc1 /usr/bin/make /usr/bin/x86_64-linux-gnu-ld.bfd; do
	if ldd "$b" | grep -q 'not found'; then
		ldd "$b" >&2
		echo "stub-libs: $b has unresolved libraries" >&2
		exit 1
	fi
done
cat >"$work/t.c" <<'EOF'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("cgroup/connect4")
int t(struct bpf_sock_addr *ctx) { return bpf_get_netns_cookie(ctx) ? 1 : 1; }
char _license[] SEC("license") = "GPL";
EOF
clang-19 -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I/usr/include/x86_64-linux-gnu -c "$work/t.c" -o "$work/t.o"
echo "stub-libs: libz3.so.4 ($n functions) and libicudata.so.$ver stubbed; clang-19 compiles BPF"
