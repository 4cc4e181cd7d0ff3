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
	GuestULPTest  = "/bin/ulptest"
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
	Boot          Boot // Kernel and Initrd are filled in by Run
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
}

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
		switch {
		case !c.Ran:
			errs = append(errs, fmt.Sprintf("command %s did not run", c.Name))
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
	return fmt.Errorf("vmtest %s (%s): %s\n--- console tail ---\n%s", r.Kernel, r.Release,
		strings.Join(errs, "; "), tail(r.Output, 6000))
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
		fmt.Fprintf(&b, "%-6s %-5s %-26s exit %d (want %d)\n", r.Kernel, "CMD", c.Name, c.Exit, c.Want)
	}
	fmt.Fprintf(&b, "%-6s %s: %d passed, %d failed, %d skipped in %v\n", r.Kernel, r.Release, pass, fail, skip, r.Took.Round(100*time.Millisecond))
	return b.String()
}

// Run builds the initramfs for cfg, boots it and parses the console.
// It returns an error only when the run could not be set up; guest
// failures are in Result.Err.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	log := cfg.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	log = log.WithFields(logrus.Fields{"subsys": "vmtest", "kernel": cfg.Tree.Name})
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
	mods, err := ResolveModules(ctx, cfg.Tree, cfg.KernelModules)
	if err != nil {
		return nil, err
	}
	cmds := allCommands(cfg, mods)
	initrd := filepath.Join(work, "initramfs-"+cfg.Tree.Name+".cpio")
	if err := buildInitramfs(cfg, mods, cmds, initrd); err != nil {
		return nil, err
	}
	st, _ := os.Stat(initrd)
	log.WithFields(logrus.Fields{"phase": "initramfs", "bytes": st.Size(), "duration_ms": time.Since(start).Milliseconds()}).Info("initramfs built")

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
	for _, c := range cmds {
		r := byName[c.Name]
		r.Name, r.Want = c.Name, c.WantExit
		res.Commands = append(res.Commands, r)
	}
	log.WithFields(logrus.Fields{"phase": "boot", "release": cfg.Tree.Release, "checks": len(res.Checks),
		"ok": res.Err() == nil, "duration_ms": res.Took.Milliseconds()}).Info("guest run finished")
	return res, nil
}

// allCommands is the image-module insmods followed by cfg.Commands.
func allCommands(cfg Config, mods []KernelModule) []Command {
	var cmds []Command
	for _, m := range mods {
		cmds = append(cmds, Command{Name: "insmod-" + m.Name, Args: []string{"insmod", guestKernelModule(cfg.Tree, m.Name)}})
	}
	return append(cmds, cfg.Commands...)
}

func guestKernelModule(t *KernelTree, name string) string {
	return "/lib/modules/" + t.Release + "/" + name + ".ko"
}

func buildInitramfs(cfg Config, mods []KernelModule, cmds []Command, out string) error {
	r := NewInitramfs()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "root", "sbin", "usr/bin", "usr/sbin"} {
		r.Dir(d)
	}
	busybox, err := staticBusybox()
	if err != nil {
		return err
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
	r.File("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost\n"))
	if cfg.ModuleKO != "" {
		if err := r.HostFile(GuestModuleKO, cfg.ModuleKO); err != nil {
			return err
		}
	}
	for _, m := range mods {
		r.File(guestKernelModule(cfg.Tree, m.Name), 0o644, m.Data)
	}
	for _, f := range cfg.Files {
		if f.Dynamic {
			err = r.Executable(f.Path, f.Host)
		} else {
			err = r.HostFile(f.Path, f.Host)
		}
		if err != nil {
			return err
		}
	}
	r.File("init", 0o755, []byte(initScript(cmds)))
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
func initScript(cmds []Command) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
echo "KMESH-VMTEST-BOOT $(uname -r)"
`)
	for _, c := range cmds {
		q := make([]string, len(c.Args))
		for i, a := range c.Args {
			q[i] = shQuote(a)
		}
		fmt.Fprintf(&b, "echo %s\n%s </dev/null\necho \"KMESH-VMTEST-CMD %s EXIT $?\"\n",
			shQuote("KMESH-VMTEST-CMD-START "+c.Name), strings.Join(q, " "), c.Name)
	}
	b.WriteString(`echo KMESH-VMTEST-DMESG-BEGIN
dmesg
echo KMESH-VMTEST-DMESG-END
echo KMESH-VMTEST-DONE
poweroff -f
`)
	return b.String()
}

// kernelLine is a kernel console message ("[   12.345678] ...").
var kernelLine = regexp.MustCompile(`^\s*\[\s*\d+\.\d+\]`)

var kernelProblem = regexp.MustCompile(`BUG:|WARNING:|Oops|general protection|Call Trace|refcount_t|KASAN|UBSAN|possible circular locking|kernel panic|Kernel panic`)

func parseConsole(console string) *Result {
	res := &Result{}
	inDmesg := false
	var out strings.Builder
	defer func() { res.Output = out.String() }()
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
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
			continue
		}
		f := strings.Fields(line[i:])
		switch {
		case len(f) >= 3 && f[0] == "KMESH-VMTEST":
			res.Checks = append(res.Checks, Check{Name: f[1], Status: f[2], Detail: strings.Join(f[3:], " ")})
		case len(f) == 4 && f[0] == "KMESH-VMTEST-CMD" && f[2] == "EXIT":
			code, err := strconv.Atoi(f[3])
			if err != nil {
				code = -1
			}
			res.Commands = append(res.Commands, CommandResult{Name: f[1], Exit: code, Ran: true})
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
		pass, fail := 0, 0
		for _, n := range names {
			switch status[r.Kernel][n] {
			case "PASS":
				pass++
			case "FAIL", "":
				fail++
			}
		}
		fmt.Fprintf(&b, "kernel %s (%s): %d passed, %d failed, boot+tests %v\n", r.Kernel, r.Release, pass, fail, r.Took.Round(100*time.Millisecond))
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
