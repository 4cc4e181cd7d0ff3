// Package vmtest tests kmesh on real Debian kernels under QEMU.
//
// It fetches a kernel's image, headers and kbuild packages with apt-get
// download into a cache (Fetcher; ~/.cache/kmesh/kernels or
// $KMESH_KERNEL_CACHE; a second run touches no network), builds kmesh.ko
// against the extracted headers with the real kbuild (BuildModule,
// BuildModuleVariant), packs a busybox initramfs (Initramfs, a small newc
// writer) with the module, image modules such as veth with their
// dependencies and static Go binaries, and boots it with QEMU/TCG (Boot).
// The guest's /init runs a list of Commands, checking each exit status
// (and timing it), and every "KMESH-VMTEST <check> PASS|FAIL|SKIP <detail>"
// line a command prints becomes a Check in the Result; a command's
// standard output can be captured (Command.Capture), "--- FAIL: <test>"
// lines of Go test binaries are collected, dmesg is scanned for kernel
// bugs.
//
// With Config.HostUsr the guest runs the host's programs as they are: the
// host's /usr is shared read-only over virtio-9p (the 9p modules are loaded
// from the initramfs first) in Debian 12's merged-/usr layout, with
// busybox at /busybox. Config.KernelTree shares the kernel's extracted
// packages and makes /lib/modules/<release>/build and /boot resolve to
// them, as on a Debian system with linux-headers-<release> installed;
// Config.Shares adds more directories (the repository, a writable cache).
//
// TestVM runs, in one guest per kernel (5.10 bullseye, 6.1 bookworm, 6.12
// bookworm-backports; KMESH_VMTEST_KERNELS=6.1,6.12 selects a subset; up to
// KMESH_VMTEST_PARALLEL guests at once): ulptest (the ULP), loadtest
// (kmesh.dev/kmesh/builder's module loading), kmesh-start --dry-run (mode,
// reasons, verified objects, the cache) and the data-plane test binaries
// of daemon/maps, daemon and daemon/loader. TestKbuild builds kmesh.ko for
// every kernel. See kmod/README.md.
package vmtest
