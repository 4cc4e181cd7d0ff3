package builder

import (
	"os"
	"syscall"
)

// Memory estimates per concurrent job, measured on this project's sources
// (docs/benchmarks.md): clang-19 peaks near 100 MiB on connect.c (136 MiB
// with a 2.8 MB vmlinux.h); kbuild of kmesh.ko near 130 MiB. The budget keeps
// a margin above them.
const (
	BPFJobBytes     = 192 << 20
	KbuildJobBytes  = 256 << 20
	reservedForSelf = 96 << 20 // kmesh-start itself and the verifier loads
)

// Jobs returns how many jobs of jobBytes each may run at once within a
// memory limit (0 = unlimited) on ncpu CPUs: at least 1, at most ncpu.
func Jobs(memLimit uint64, ncpu int, jobBytes uint64) int {
	if ncpu < 1 {
		ncpu = 1
	}
	if memLimit == 0 {
		return ncpu
	}
	if memLimit <= reservedForSelf+jobBytes {
		return 1
	}
	n := int((memLimit - reservedForSelf) / jobBytes)
	if n > ncpu {
		n = ncpu
	}
	if n < 1 {
		n = 1
	}
	return n
}

func peakRSS(ps *os.ProcessState) uint64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return uint64(ru.Maxrss) << 10 // KiB on Linux
	}
	return 0
}
