// Command loadtest checks kmesh.dev/kmesh/builder's module functions
// (ModuleInfo, LoadModule, UnloadModule) against a real kernel from inside
// a test VM: first load, reuse of the same build, replacement of another
// build nobody uses, refusal to replace one a socket holds (kmesh_defer
// ULP), and the kernel's refusal of a module built for another kernel.
//
// It needs root, kmesh.ko not loaded at start, and three files: the build
// for this kernel (-a), a second build of the same sources with a different
// srcversion (-b), and a build for another kernel (-foreign). It prints one
// line per check,
//
//	KMESH-VMTEST load/<check> PASS|FAIL|SKIP <detail>
//
// and exits 1 if any check failed; it leaves the module unloaded.
// Build it static (CGO_ENABLED=0).
package main
