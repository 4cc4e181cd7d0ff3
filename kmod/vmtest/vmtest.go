package vmtest

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Guest paths.
const (
	GuestModuleKO = "/kmesh/kmesh.ko"
	GuestULPTest  = "/kmesh/bin/ulptest"
	// GuestIP is the host's iproute2 ip (busybox's ip has no netns). Call
	// it by this path: the guest's busybox sh runs its own applet for a
	// bare "ip".
	GuestIP = "/sbin/ip"
)

// Command is one step /init runs in the guest, in order. The harness
// checks its exit status.
type Command struct {
	Name     string   // reported name
	Args     []string // argv; Args[0] is a guest path, or a busybox applet name (a bare name always runs busybox's applet when there is one)
	WantExit int      // expected exit status
	// Dir is the working directory (default /); a Go test binary that
	// reads testdata/ wants its package directory (see Config.Shares).
	Dir string
	// Env are extra KEY=VALUE variables.
	Env []string
	// Timeout kills the command (SIGKILL) after this long and reports
	// exit 137 (0: no limit but the boot timeout).
	Timeout time.Duration
	// Capture collects the command's standard output into
	// CommandResult.Stdout instead of the console (standard error still
	// goes to the console), e.g. for JSON the test parses.
	Capture bool
}

// GuestFile is a host file put into the initramfs.
type GuestFile struct {
	Path string // guest path
	Host string // host path
	// Dynamic: a dynamically linked host executable; its loader and
	// shared libraries are copied too. Static Go binaries
	// (CGO_ENABLED=0) need nothing.
	Dynamic bool
}

// Config is one guest run.
type Config struct {
	Tree *KernelTree
	// ModuleKO is kmesh.ko built for Tree, installed at GuestModuleKO
	// (insmod is one of Commands, see DefaultCommands).
	ModuleKO string
	// KernelModules are image modules (with dependencies) loaded before
	// Commands, e.g. "veth" (a module in Debian's 6.1 and 6.12 images).
	KernelModules []string
	Files         []GuestFile
	Commands      []Command
	// HostUsr boots the guest with the host's /usr (read-only,
	// virtio-9p) mounted at /usr and Debian 12's merged-/usr layout
	// around it: /bin, /sbin, /lib64 link into /usr, /lib holds a link to
	// each /usr/lib entry (and a modules/ directory of its own). Host
	// programs then run in the guest as they are (clang-19, bpftool, gcc,
	// ip) without copying them into the initramfs. busybox stays at
	// /busybox/busybox with its applets in /busybox/bin. The 9p modules
	// (virtio_pci, 9pnet_virtio, 9p and dependencies) are loaded from the
	// initramfs first.
	HostUsr bool
	// KernelTree (with HostUsr) also shares Tree.Root (image, modules,
	// headers and kbuild, as extracted) read-only at GuestKernelRoot, and
	// makes /lib/modules/<release> look like a Debian system's with
	// linux-headers-<release> installed: build -> the headers, kernel/ and
	// modules.* -> the image's, /boot -> the image's /boot
	// (config-<release>).
	KernelTree bool
	// Shares are more host directories mounted in the guest (with
	// HostUsr, after /usr).
	Shares []Share
	Boot   Boot // Kernel, Initrd and Shares are filled in by Run
	// WorkDir holds the initramfs and console log (default: a temp dir).
	WorkDir string
	Log     logrus.FieldLogger
}

// DefaultCommands loads kmesh.ko and runs ulptest (which ends by unloading
// the module: put commands that need the module before it, or pass
// "-rmmod=false").
func DefaultCommands(version string) []Command {
	return []Command{
		{Name: "insmod-kmesh", Args: []string{"insmod", GuestModuleKO}},
		{Name: "ulptest", Args: []string{GuestULPTest, "-version", version}},
	}
}

// Check is one KMESH-VMTEST line printed in the guest.
type Check struct {
	Name   string
	Status string // PASS, FAIL, SKIP
	Detail string
}

// CommandResult is the exit status of one Command ("ran" false if the guest
// never reported it).
type CommandResult struct {
	Name string
	Exit int
	Want int
	Ran  bool
	// Output is what the command printed on the console (stdout and
	// stderr; without stdout when captured).
	Output string
	// Stdout is the captured standard output (Command.Capture).
	Stdout string
	// Took is how long it ran (guest clock).
	Took time.Duration
	// FailedTests are the Go tests reported as "--- FAIL: <name>" in
	// Output (subtests as parent/sub), in order.
	FailedTests []string
}

// OK reports whether the command ran and exited as wanted.
func (c CommandResult) OK() bool { return c.Ran && c.Exit == c.Want }

// Result of one guest run.
type Result struct {
	Kernel   string
	Release  string
	Checks   []Check
	Commands []CommandResult
	// KernelProblems are dmesg lines that show a kernel bug (BUG, WARNING,
	// Oops, lockdep, refcount, KASAN/UBSAN).
	KernelProblems []string
	Done           bool // /init reached its end
	// Output is the console without the final dmesg dump: boot messages
	// and the commands' output.
	Output     string
	Console    string
	ConsoleLog string // file with the full console
	Took       time.Duration
	BootErr    error
}

// Err is nil when the guest finished, every command exited as wanted,
// no check failed and dmesg shows no kernel problem.
func (r *Result) Err() error {
	var errs []string
	if r.BootErr != nil {
		errs = append(errs, r.BootErr.Error())
	}
	if !r.Done {
		errs = append(errs, "guest did not reach the end of /init")
	}
	for _, c := range r.Commands {
		running := ""
		if c.Exit != c.Want && len(c.FailedTests) == 0 {
			running = runningTest(c.Output)
		}
		switch {
		case !c.Ran:
			errs = append(errs, fmt.Sprintf("command %s did not run", c.Name))
		case c.Exit != c.Want && len(c.FailedTests) > 0:
			errs = append(errs, fmt.Sprintf("command %s exited %d, want %d; failed tests: %s", c.Name, c.Exit, c.Want, strings.Join(c.FailedTests, " ")))
		case c.Exit != c.Want && running != "":
			// killed (its timeout) or crashed inside a Go test
			errs = append(errs, fmt.Sprintf("command %s exited %d, want %d, while test %s ran", c.Name, c.Exit, c.Want, running))
		case c.Exit != c.Want:
			errs = append(errs, fmt.Sprintf("command %s exited %d, want %d", c.Name, c.Exit, c.Want))
		}
	}
	for _, c := range r.Checks {
		if c.Status == "FAIL" {
			errs = append(errs, fmt.Sprintf("check %s failed: %s", c.Name, c.Detail))
		}
	}
	if len(r.KernelProblems) > 0 {
		errs = append(errs, "kernel log: "+strings.Join(r.KernelProblems, " | "))
	}
	if len(errs) == 0 {
		return nil
	}
	// The console tail shows the last commands; a failed Go test's own
	// lines (its t.Log and t.Error output) are picked out of its command's
	// output, which the tail has usually scrolled past. They come after the
	// tail and the reasons are repeated last: a CI log cut short keeps its
	// end, and the end then says what failed.
	var logs strings.Builder
	for _, c := range r.Commands {
		if c.Exit != c.Want {
			for _, name := range leafTests(c.FailedTests) {
				fmt.Fprintf(&logs, "--- %s: %s ---\n%s\n", c.Name, name, testLog(c.Output, name, 60))
			}
		}
	}
	reasons := strings.Join(errs, "; ")
	return fmt.Errorf("vmtest %s (%s): %s\n--- console tail ---\n%s\n%s--- vmtest %s failed: %s", r.Kernel, r.Release,
		reasons, tail(r.Output, 6000), logs.String(), r.Kernel, reasons)
}

// runningTest is the last test `go test -v` output started and did not
// finish ("=== RUN" without "--- PASS/FAIL/SKIP"), "" if none.
func runningTest(output string) string {
	var started []string
	done := map[string]bool{}
	for _, l := range strings.Split(output, "\n") {
		t := strings.TrimSpace(l)
		if name, ok := strings.CutPrefix(t, "=== RUN   "); ok {
			started = append(started, name)
			continue
		}
		for _, p := range []string{"--- PASS: ", "--- FAIL: ", "--- SKIP: "} {
			if rest, ok := strings.CutPrefix(t, p); ok {
				done[strings.Fields(rest)[0]] = true
			}
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		if !done[started[i]] {
			return started[i]
		}
	}
	return ""
}

// leafTests drops from names those that are a parent of another (a failed
// subtest fails its parents too).
func leafTests(names []string) []string {
	var out []string
	for _, n := range names {
		parent := false
		for _, m := range names {
			if strings.HasPrefix(m, n+"/") {
				parent = true
				break
			}
		}
		if !parent {
			out = append(out, n)
		}
	}
	return out
}

// testLog returns up to max lines that `go test -v` printed while test
// name ran: from its "=== RUN" line to the next "=== " or "--- " line; of
// a longer log, its first quarter and its end.
func testLog(output, name string, max int) string {
	var lines []string
	in := false
	for _, l := range strings.Split(output, "\n") {
		l = strings.TrimRight(l, "\r")
		t := strings.TrimLeft(l, " ")
		switch {
		case strings.TrimSpace(t) == "=== RUN   "+name:
			in = true
			continue
		case in && (strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ")):
			in = false
		}
		if !in {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return "(no output of its own)"
	}
	if len(lines) > max {
		// the first lines say what the test set up, the last ones how it
		// ended (a t.Fatal is its last line)
		head := max / 4
		cut := len(lines) - max
		lines = append(append(lines[:head:head], fmt.Sprintf("... %d lines left out ...", cut)), lines[head+cut:]...)
	}
	return strings.Join(lines, "\n")
}

// Summary is a per-check report, one line each.
func (r *Result) Summary() string {
	var b strings.Builder
	pass, fail, skip := 0, 0, 0
	for _, c := range r.Checks {
		switch c.Status {
		case "PASS":
			pass++
		case "FAIL":
			fail++
		default:
			skip++
		}
		fmt.Fprintf(&b, "%-6s %-5s %-26s %s\n", r.Kernel, c.Status, c.Name, c.Detail)
	}
	for _, c := range r.Commands {
		if !c.Ran { // the guest ended before it (a panic, a timeout)
			fmt.Fprintf(&b, "%-6s %-5s %-26s did not run (want exit %d)\n", r.Kernel, "CMD", c.Name, c.Want)
			continue
		}
		fmt.Fprintf(&b, "%-6s %-5s %-26s exit %d (want %d) %v", r.Kernel, "CMD", c.Name, c.Exit, c.Want, c.Took.Round(100*time.Millisecond))
		if len(c.FailedTests) > 0 {
			fmt.Fprintf(&b, " failed: %s", strings.Join(c.FailedTests, " "))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%-6s %s: %d passed, %d failed, %d skipped in %v\n", r.Kernel, r.Release, pass, fail, skip, r.Took.Round(100*time.Millisecond))
	return b.String()
}

// Guest layout with Config.HostUsr.
const (
	// GuestBusybox is busybox's own path when /bin is the host's.
	GuestBusybox = "/busybox/busybox"
	// GuestKernelRoot is where Config.KernelTree mounts Tree.Root.
	GuestKernelRoot = "/kernel"
	// guestModules holds the image modules the initramfs carries.
	guestModules = "/kmesh/modules"
)

// shareModules are what a Debian kernel needs to mount a virtio-9p share
// (dependencies such as netfs and fscache come with them; modules built
// into a kernel are skipped).
var shareModules = []string{"virtio_pci", "9pnet_virtio", "9p"}

// Run builds the initramfs for cfg, boots it and parses the console.
// It returns an error only when the run could not be set up; guest
// failures are in Result.Err.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	log := cfg.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	log = log.WithFields(logrus.Fields{"subsys": "vmtest", "kernel": cfg.Tree.Name})
	if cfg.KernelTree && !cfg.HostUsr {
		return nil, errors.New("vmtest config: KernelTree needs HostUsr")
	}
	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "kmesh-vmtest-")
		if err != nil {
			return nil, fmt.Errorf("create work dir: %w", err)
		}
		defer os.RemoveAll(d)
		work = d
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	start := time.Now()
	g, err := planGuest(ctx, cfg)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(work, "initramfs-"+cfg.Tree.Name+".cpio")
	if err := buildInitramfs(cfg, g, initrd); err != nil {
		return nil, err
	}
	st, _ := os.Stat(initrd)
	log.WithFields(logrus.Fields{"phase": "initramfs", "bytes": st.Size(), "shares": len(g.shares),
		"duration_ms": time.Since(start).Milliseconds()}).Info("initramfs built")

	consoleLog := filepath.Join(work, "console-"+cfg.Tree.Name+".log")
	fh, err := os.Create(consoleLog)
	if err != nil {
		return nil, fmt.Errorf("create console log: %w", err)
	}
	defer fh.Close()
	boot := cfg.Boot
	boot.Kernel = cfg.Tree.Vmlinuz()
	boot.Initrd = initrd
	boot.Console = fh
	boot.Shares = g.shares
	bootStart := time.Now()
	console, bootErr := boot.Run(ctx)
	res := parseConsole(console)
	res.Kernel, res.Release = cfg.Tree.Name, cfg.Tree.Release
	res.Console, res.ConsoleLog = console, consoleLog
	res.Took = time.Since(bootStart)
	res.BootErr = bootErr
	// Every configured command must be reported.
	byName := map[string]CommandResult{}
	for _, c := range res.Commands {
		byName[c.Name] = c
	}
	res.Commands = res.Commands[:0]
	for _, c := range g.commands() {
		r := byName[c.Name]
		r.Name, r.Want = c.Name, c.WantExit
		res.Commands = append(res.Commands, r)
	}
	log.WithFields(logrus.Fields{"phase": "boot", "release": cfg.Tree.Release, "checks": len(res.Checks),
		"ok": res.Err() == nil, "duration_ms": res.Took.Milliseconds()}).Info("guest run finished")
	return res, nil
}

// guestPlan is what goes into the initramfs and /init.
type guestPlan struct {
	mods   []KernelModule // all image modules in the initramfs, load order
	early  []Command      // before the shares are mounted (9p modules)
	setup  []Command      // mounts and the merged-/usr layout
	cmds   []Command      // image-module insmods, then Config.Commands
	shares []Share
}

func (g *guestPlan) commands() []Command {
	return append(append(append([]Command(nil), g.early...), g.setup...), g.cmds...)
}

func planGuest(ctx context.Context, cfg Config) (*guestPlan, error) {
	g := &guestPlan{}
	insmod := func(m KernelModule) Command {
		return Command{Name: "insmod-" + m.Name, Args: []string{"insmod", guestModules + "/" + m.Name + ".ko"}}
	}
	seen := map[string]bool{}
	if cfg.HostUsr {
		g.shares = append(g.shares, Share{Tag: "hostusr", Host: "/usr", Guest: "/usr"})
	}
	if cfg.KernelTree {
		g.shares = append(g.shares, Share{Tag: "kernel", Host: cfg.Tree.Root, Guest: GuestKernelRoot})
	}
	for _, sh := range cfg.Shares {
		if sh.Guest == "/" || sh.Guest == "/usr" || strings.HasPrefix(sh.Guest, "/usr/") || !strings.HasPrefix(sh.Guest, "/") {
			return nil, fmt.Errorf("vmtest config: share %s: guest path %q not allowed", sh.Tag, sh.Guest)
		}
		g.shares = append(g.shares, sh)
	}
	if len(g.shares) > 0 {
		// The 9p modules are loaded before the shares are mounted.
		early, err := ResolveModules(ctx, cfg.Tree, shareModules)
		if err != nil {
			return nil, fmt.Errorf("modules for virtio-9p: %w", err)
		}
		for _, m := range early {
			seen[m.Name] = true
			g.mods = append(g.mods, m)
			g.early = append(g.early, insmod(m))
		}
	}
	tags := map[string]bool{}
	for _, sh := range g.shares {
		if tags[sh.Tag] || len(sh.Tag) > 31 || sh.Tag == "" {
			return nil, fmt.Errorf("vmtest config: share tag %q empty, too long or used twice", sh.Tag)
		}
		tags[sh.Tag] = true
		opts := "trans=virtio,version=9p2000.L,msize=262144"
		if !sh.Writable {
			// read-only and unchanging while the guest runs: cache freely
			opts += ",ro,cache=loose"
		}
		// the mount point is made at run time: it may be below /tmp
		g.setup = append(g.setup, Command{Name: "mount-" + sh.Tag,
			Args: []string{"sh", "-c", `mkdir -p "$2" && exec mount -t 9p -o "$1" "$3" "$2"`, "mount", opts, sh.Guest, sh.Tag}})
	}
	if cfg.HostUsr {
		g.setup = append(g.setup, Command{Name: "merged-usr", Args: []string{"sh", "-c", mergedUsrScript}})
		rel := cfg.Tree.Release
		script := "mkdir -p /lib/modules/" + rel
		if cfg.KernelTree {
			script = fmt.Sprintf(kernelTreeScript, rel, GuestKernelRoot)
		}
		g.setup = append(g.setup, Command{Name: "lib-modules", Args: []string{"sh", "-c", script}})
	}
	mods, err := ResolveModules(ctx, cfg.Tree, cfg.KernelModules)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		g.mods = append(g.mods, m)
		g.cmds = append(g.cmds, insmod(m))
	}
	g.cmds = append(g.cmds, cfg.Commands...)
	names := map[string]bool{}
	for _, c := range g.commands() {
		if names[c.Name] || strings.ContainsAny(c.Name, " \t\n'\"/") || c.Name == "" {
			return nil, fmt.Errorf("vmtest config: command name %q empty, not one word or used twice", c.Name)
		}
		names[c.Name] = true
	}
	return g, nil
}

// mergedUsrScript makes Debian 12's merged-/usr layout around the host's
// /usr. /lib is a directory of links (not a link to usr/lib) so that
// /lib/modules can be the guest kernel's own.
const mergedUsrScript = `set -e
ln -s usr/bin /bin
ln -s usr/sbin /sbin
ln -s usr/lib64 /lib64
mkdir /lib
for e in /usr/lib/* /usr/lib/.[!.]*; do
	[ -e "$e" ] || [ -L "$e" ] || continue
	[ "${e##*/}" = modules ] || ln -s "$e" /lib/
done
mkdir /lib/modules
/usr/bin/true
`

// kernelTreeScript (release, kernel root): /lib/modules/<release> as
// linux-image-<release> + linux-headers-<release> make it, pointing into
// the shared tree (the packages' own build/source links are absolute
// /usr/src paths, which are the host's here), and /boot.
const kernelTreeScript = `set -e
d=/lib/modules/%[1]s k=%[2]s
mkdir -p $d
for e in $k/lib/modules/%[1]s/*; do
	case "${e##*/}" in build|source) ;; *) ln -s "$e" $d/ ;; esac
done
ln -s $k/usr/src/linux-headers-%[1]s $d/build
[ ! -d $k/usr/src/linux-headers-%[1]s ] || test -e $d/build/Makefile
ln -s $k/boot /boot
test -e /boot/config-%[1]s
`

func buildInitramfs(cfg Config, g *guestPlan, out string) error {
	r := NewInitramfs()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "root", "kmesh", ".vmtest"} {
		r.Dir(d)
	}
	r.Symlink("var/run", "/run")
	busybox, err := staticBusybox()
	if err != nil {
		return err
	}
	if cfg.HostUsr {
		// /bin, /sbin, /lib, /lib64 are made by /init once /usr is mounted.
		if err := r.HostFile(GuestBusybox, busybox); err != nil {
			return err
		}
		r.Symlink("busybox/sh", "busybox")
		r.Dir("busybox/bin") // --install -s puts the applet links here
		r.Dir("usr")
		// The loader finds libraries outside its built-in directories
		// through the cache (Debian's ld.so.conf.d entries).
		if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
			if err := r.HostFile("etc/ld.so.cache", "/etc/ld.so.cache"); err != nil {
				return err
			}
		}
	} else {
		for _, d := range []string{"sbin", "usr/bin", "usr/sbin"} {
			r.Dir(d)
		}
		if err := r.HostFile("bin/busybox", busybox); err != nil {
			return err
		}
		r.Symlink("bin/sh", "busybox")
		ip, err := exec.LookPath("ip")
		if err != nil {
			return fmt.Errorf("find the host's ip (iproute2): %w", err)
		}
		if err := r.Executable(GuestIP, ip); err != nil {
			return err
		}
	}
	for _, sh := range g.shares {
		if sh.Guest != "/usr" {
			r.Dir(sh.Guest)
		}
	}
	r.File("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost\n"))
	if cfg.ModuleKO != "" {
		if err := r.HostFile(GuestModuleKO, cfg.ModuleKO); err != nil {
			return err
		}
	}
	for _, m := range g.mods {
		r.File(guestModules+"/"+m.Name+".ko", 0o644, m.Data)
	}
	for _, f := range cfg.Files {
		if cfg.HostUsr && (f.Path == "/usr" || strings.HasPrefix(f.Path, "/usr/") || strings.HasPrefix(f.Path, "/bin/") ||
			strings.HasPrefix(f.Path, "/sbin/") || strings.HasPrefix(f.Path, "/lib")) {
			return fmt.Errorf("vmtest config: file %s: with HostUsr /usr, /bin, /sbin and /lib are the host's (use e.g. /kmesh/bin)", f.Path)
		}
		if f.Dynamic && !cfg.HostUsr {
			err = r.Executable(f.Path, f.Host)
		} else {
			err = r.HostFile(f.Path, f.Host)
		}
		if err != nil {
			return err
		}
	}
	r.File("init", 0o755, []byte(initScript(cfg, g)))
	fh, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	if _, err := r.WriteTo(fh); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}

// staticBusybox finds a statically linked busybox (package busybox-static).
func staticBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p, nil
		}
	}
	return "", errors.New("no static busybox (/bin/busybox from busybox-static)")
}

func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// initScript is the guest's /init: mounts, loopback up, then each command
// with its exit status reported, the kernel log, and poweroff.
func initScript(cfg Config, g *guestPlan) string {
	var b strings.Builder
	if cfg.HostUsr {
		b.WriteString(`#!/busybox/sh
/busybox/busybox --install -s /busybox/bin
export PATH=/busybox/bin HOME=/root
`)
	} else {
		b.WriteString(`#!/bin/sh
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
`)
	}
	// /tmp and /run first: a share may be mounted below them (the
	// repository of a checkout in /tmp).
	b.WriteString(`mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
`)
	b.WriteString(crngCheck)
	for _, c := range g.early {
		writeCommand(&b, c)
	}
	for _, c := range g.setup {
		writeCommand(&b, c)
	}
	if cfg.HostUsr {
		// host programs first: Go's exec.LookPath("ip") must find iproute2
		b.WriteString("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/busybox/bin\n")
	}
	b.WriteString(`export TMPDIR=/tmp
mkdir -p /run/netns
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
ip link set lo up
echo "KMESH-VMTEST-BOOT $(uname -r)"
`)
	for _, c := range g.cmds {
		writeCommand(&b, c)
	}
	b.WriteString(`echo KMESH-VMTEST-DMESG-BEGIN
dmesg
echo KMESH-VMTEST-DMESG-END
echo KMESH-VMTEST-DONE
poweroff -f
`)
	return b.String()
}

// crngCheck reports whether the kernel's CRNG was ready when /init started
// (5.10: "crng done (trusting CPU's manufacturer)", later "crng init done").
// A CRNG that gets ready during the tests patches kernel text under running
// code, which multi-threaded TCG has turned into a panic (qemu.go).
const crngCheck = `if dmesg | grep -Eq 'random: crng (init )?done'; then
echo "KMESH-VMTEST boot/crng-ready PASS $(dmesg | grep -E 'random: crng (init )?done' | head -n 1)"
else
echo "KMESH-VMTEST boot/crng-ready FAIL the CRNG was not ready when /init started (no RDRAND: qemu -cpu lacks +rdrand?)"
fi
`

// commandLine is the shell command line of c (without redirections).
func commandLine(c Command) string {
	var argv []string
	if len(c.Env) > 0 {
		argv = append(argv, "env")
		for _, e := range c.Env {
			argv = append(argv, shQuote(e))
		}
	}
	if c.Timeout > 0 {
		secs := int((c.Timeout + time.Second - 1) / time.Second)
		argv = append(argv, "timeout", "-s", "KILL", strconv.Itoa(secs))
	}
	for _, a := range c.Args {
		argv = append(argv, shQuote(a))
	}
	line := strings.Join(argv, " ")
	if c.Dir != "" {
		line = fmt.Sprintf("(cd %s && exec %s)", shQuote(c.Dir), line)
	}
	return line
}

func writeCommand(b *strings.Builder, c Command) {
	out := ""
	if c.Capture {
		out = " >/.vmtest/" + c.Name + ".out"
	}
	fmt.Fprintf(b, "echo %s\nread t0 _ </proc/uptime\n%s </dev/null%s\nrc=$?\nread t1 _ </proc/uptime\n", shQuote("KMESH-VMTEST-CMD-START "+c.Name), commandLine(c), out)
	writeCaptured(b, c)
	fmt.Fprintf(b, "echo \"KMESH-VMTEST-CMD %s EXIT $rc TIME $t0 $t1\"\n", c.Name)
}

func writeCaptured(b *strings.Builder, c Command) {
	if c.Capture {
		fmt.Fprintf(b, "echo 'KMESH-VMTEST-OUT-BEGIN %s'\ncat /.vmtest/%s.out\necho\necho 'KMESH-VMTEST-OUT-END %s'\n", c.Name, c.Name, c.Name)
	}
}

// kernelLine is a kernel console message ("[   12.345678] ...").
var kernelLine = regexp.MustCompile(`^\s*\[\s*\d+\.\d+\]`)

var kernelProblem = regexp.MustCompile(`BUG:|WARNING:|Oops|general protection|Call Trace|refcount_t|KASAN|UBSAN|possible circular locking|kernel panic|Kernel panic`)

// goTestFail is a failed test in `go test -v` output.
var goTestFail = regexp.MustCompile(`^\s*--- FAIL: (\S+)`)

func parseConsole(console string) *Result {
	res := &Result{}
	inDmesg := false
	var out strings.Builder
	defer func() { res.Output = out.String() }()
	current := "" // command running
	capture := "" // command whose stdout is being printed
	var cmdOut, cmdStdout strings.Builder
	var failed []string
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
		if capture != "" {
			if strings.Contains(line, "KMESH-VMTEST-OUT-END "+capture) {
				capture = ""
				continue
			}
			if !kernelLine.MatchString(line) {
				cmdStdout.WriteString(line + "\n")
				continue
			}
		}
		if !inDmesg && !strings.Contains(line, "KMESH-VMTEST-DMESG-BEGIN") {
			out.WriteString(line + "\n")
		}
		switch {
		case strings.Contains(line, "KMESH-VMTEST-DMESG-BEGIN"):
			inDmesg = true
			continue
		case strings.Contains(line, "KMESH-VMTEST-DMESG-END"):
			inDmesg = false
			continue
		case strings.Contains(line, "KMESH-VMTEST-DONE"):
			res.Done = true
			continue
		}
		if (inDmesg || kernelLine.MatchString(line)) && kernelProblem.MatchString(line) {
			res.KernelProblems = append(res.KernelProblems, strings.TrimSpace(line))
			continue
		}
		if inDmesg {
			continue
		}
		i := strings.Index(line, "KMESH-VMTEST")
		if i < 0 {
			if current != "" {
				cmdOut.WriteString(line + "\n")
				if m := goTestFail.FindStringSubmatch(line); m != nil {
					failed = append(failed, m[1])
				}
			}
			continue
		}
		f := strings.Fields(line[i:])
		switch {
		case len(f) >= 3 && f[0] == "KMESH-VMTEST":
			res.Checks = append(res.Checks, Check{Name: f[1], Status: f[2], Detail: strings.Join(f[3:], " ")})
			if current != "" {
				cmdOut.WriteString(line + "\n")
			}
		case len(f) == 2 && f[0] == "KMESH-VMTEST-CMD-START":
			current = f[1]
			cmdOut.Reset()
			cmdStdout.Reset()
			failed = nil
		case len(f) == 2 && f[0] == "KMESH-VMTEST-OUT-BEGIN":
			capture = f[1]
		case len(f) >= 4 && f[0] == "KMESH-VMTEST-CMD" && f[2] == "EXIT":
			code, err := strconv.Atoi(f[3])
			if err != nil {
				code = -1
			}
			cr := CommandResult{Name: f[1], Exit: code, Ran: true}
			if len(f) == 7 && f[4] == "TIME" {
				// guest uptimes (seconds, two decimals) before and after
				t0, err0 := strconv.ParseFloat(f[5], 64)
				t1, err1 := strconv.ParseFloat(f[6], 64)
				if err0 == nil && err1 == nil && t1 >= t0 {
					cr.Took = time.Duration((t1 - t0) * float64(time.Second))
				}
			}
			if f[1] == current {
				cr.Output = cmdOut.String()
				cr.Stdout = strings.TrimSuffix(cmdStdout.String(), "\n")
				cr.FailedTests = failed
			}
			res.Commands = append(res.Commands, cr)
			current, failed = "", nil
		}
	}
	return res
}

// GoBinary builds a static Go binary for the guest: `go build` of a main
// package, or `go test -c` of a test package when test is set (run it in
// the guest as "<path> -test.v ..."). dir is the module directory.
func GoBinary(ctx context.Context, dir, pkg, out string, test bool) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("find go: %w", err)
	}
	args := []string{"build", "-o", out, pkg}
	if test {
		args = []string{"test", "-c", "-o", out, pkg}
	}
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// Matrix is a check-by-kernel table of several results, with a closing
// "N passed, N failed" line per kernel.
func Matrix(results []*Result) string {
	var names []string
	status := map[string]map[string]string{}
	for _, r := range results {
		status[r.Kernel] = map[string]string{}
		for _, c := range r.Checks {
			if _, ok := status[r.Kernel][c.Name]; !ok && !containsStr(names, c.Name) {
				names = append(names, c.Name)
			}
			status[r.Kernel][c.Name] = c.Status
		}
		for _, c := range r.Commands {
			name := "cmd:" + c.Name
			if !containsStr(names, name) {
				names = append(names, name)
			}
			st := "PASS"
			if !c.Ran || c.Exit != c.Want {
				st = "FAIL"
			}
			status[r.Kernel][name] = st
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-26s", "check")
	for _, r := range results {
		fmt.Fprintf(&b, " %-6s", r.Kernel)
	}
	b.WriteString("\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%-26s", n)
		for _, r := range results {
			st := status[r.Kernel][n]
			if st == "" {
				st = "-"
			}
			fmt.Fprintf(&b, " %-6s", st)
		}
		b.WriteString("\n")
	}
	for _, r := range results {
		pass, fail, absent := 0, 0, 0
		for _, n := range names {
			switch status[r.Kernel][n] {
			case "PASS":
				pass++
			case "FAIL":
				fail++
			case "": // another kernel's step (its guest loads other modules): Err reports what is missing
				absent++
			}
		}
		fmt.Fprintf(&b, "kernel %s (%s): %d passed, %d failed, %d not on this kernel, boot+tests %v\n", r.Kernel, r.Release, pass, fail, absent, r.Took.Round(100*time.Millisecond))
	}
	return b.String()
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
