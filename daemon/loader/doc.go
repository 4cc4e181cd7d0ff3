// Package loader loads the data-plane BPF objects, pins their maps and links
// under bpffs and attaches the programs at the cgroup2 root.
//
// It is generic over the objects in the object directory: every map is pinned
// by name (maps of the same name are shared between objects), every cgroup
// program is attached with a pinned link. A restarted daemon adopts what is
// pinned: it reuses the pinned maps (so state survives) and swaps the new
// programs into the pinned links atomically, so traffic never flows without a
// program. Closing the loader leaves the pins in place; Uninstall removes
// links, pins and the mounts the loader made.
//
// Mounting bpffs and cgroup2 when absent is race-safe: mount(2) stacks a
// second mount on a mount point instead of refusing it, so kmesh mounters
// take turns (a flock on the parent directory), and against other agents the
// loader makes its mount detached (its ID known) and removes it again when it
// finds it stacked over another agent's; only a mount it keeps is recorded as
// its own.
package loader
