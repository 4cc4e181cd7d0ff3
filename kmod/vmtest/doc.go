// Package vmtest tests kmesh.ko on real Debian kernels under QEMU.
//
// It fetches a kernel's image, headers and kbuild packages with apt-get
// download into a cache (Fetcher; ~/.cache/kmesh/kernels or
// $KMESH_KERNEL_CACHE; a second run touches no network), builds kmesh.ko
// against the extracted headers with the real kbuild (BuildModule), packs a
// busybox initramfs (Initramfs, a small newc writer) with the module, image
// modules such as veth with their dependencies, the host's ip with its
// libraries and static Go binaries, and boots it with QEMU/TCG (Boot). The
// guest's /init runs a list of Commands, checking each exit status, and
// every "KMESH-VMTEST <check> PASS|FAIL|SKIP <detail>" line a command prints
// becomes a Check in the Result; dmesg is scanned for kernel bugs.
//
// The tests here (TestVM, TestKbuild) run 5.10 (bullseye), 6.1 (bookworm)
// and 6.12 (bookworm-backports); KMESH_VMTEST_KERNELS=6.1,6.12 selects a
// subset. See kmod/README.md.
package vmtest
