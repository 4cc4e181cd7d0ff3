// Command ulptest checks kmesh.ko's "kmesh_defer" TCP ULP from inside a
// test VM (it needs the module loaded, root, and a loopback interface up).
//
// It prints one machine-readable line per check,
//
//	KMESH-VMTEST <check> PASS|FAIL|SKIP <detail>
//
// which the vmtest harness parses, and exits 1 if any check failed. Build it
// static (CGO_ENABLED=0); it is not meant to run on a host without the
// module.
package main
