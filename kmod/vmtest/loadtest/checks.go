package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/builder"
	"kmesh.dev/kmesh/kmod/vmtest/guestcheck"
)

type config struct {
	a, b, foreign string
}

const ulpName = "kmesh_defer"

type runner struct {
	cfg config
	out io.Writer
	guestcheck.Reporter
	release string
	// srcversions of -a, -b, -foreign
	srcA, srcB, srcF string
}

func run(cfg config, out io.Writer) int {
	var u unix.Utsname
	_ = unix.Uname(&u)
	r := &runner{cfg: cfg, out: out, Reporter: guestcheck.Reporter{Out: out, Prefix: "load/"}, release: unix.ByteSliceToString(u.Release[:])}
	fmt.Fprintf(out, "loadtest: kernel %s\n", r.release)

	if !r.Check("modinfo", r.checkModInfo) {
		// nothing else can be interpreted without the srcversions
		return r.finish()
	}
	if !r.Check("precondition", r.checkNotLoaded) {
		return r.finish()
	}
	r.Check("foreign-refused", r.checkForeign)
	r.Check("first", r.checkFirst)
	r.Check("reuse", r.checkReuse)
	r.Check("replace", r.checkReplace)
	r.Check("busy", r.checkBusy)
	r.Check("unload-busy", r.checkUnloadBusy)
	r.Check("foreign-keeps-loaded", r.checkForeignKeepsLoaded)
	r.Check("unload", r.checkUnload)
	return r.finish()
}

func (r *runner) finish() int {
	// never leave the module behind for later commands
	if loaded, _, _ := loadedSrcversion(); loaded {
		waitRefcnt(0, 5*time.Second)
		_ = unix.DeleteModule(builder.ModuleName, unix.O_NONBLOCK)
	}
	if r.Failed > 0 {
		fmt.Fprintf(r.out, "loadtest: %d check(s) failed\n", r.Failed)
		return 1
	}
	fmt.Fprintln(r.out, "loadtest: all checks passed")
	return 0
}

// checkModInfo: builder.ModuleInfo reads what the kernel will compare.
func (r *runner) checkModInfo() (string, error) {
	var infos [3]map[string]string
	for i, p := range []string{r.cfg.a, r.cfg.b, r.cfg.foreign} {
		info, err := builder.ModuleInfo(p)
		if err != nil {
			return "", err
		}
		for _, k := range []string{"vermagic", "srcversion", "version", "name"} {
			if info[k] == "" {
				return "", fmt.Errorf("%s: modinfo has no %s", p, k)
			}
		}
		infos[i] = info
	}
	a, b, f := infos[0], infos[1], infos[2]
	r.srcA, r.srcB, r.srcF = a["srcversion"], b["srcversion"], f["srcversion"]
	if rel := firstField(a["vermagic"]); rel != r.release {
		return "", fmt.Errorf("-a vermagic %q names %s, running kernel is %s", a["vermagic"], rel, r.release)
	}
	if b["vermagic"] != a["vermagic"] {
		return "", fmt.Errorf("-b vermagic %q differs from -a's %q", b["vermagic"], a["vermagic"])
	}
	if r.srcA == r.srcB {
		return "", fmt.Errorf("-a and -b have the same srcversion %s: the variant build did not change the sources", r.srcA)
	}
	if rel := firstField(f["vermagic"]); rel == r.release {
		return "", fmt.Errorf("-foreign vermagic %q is for this kernel", f["vermagic"])
	}
	if a["name"] != builder.ModuleName || a["version"] != b["version"] {
		return "", fmt.Errorf("name %q version %q/%q", a["name"], a["version"], b["version"])
	}
	return fmt.Sprintf("a %s, b %s (version %s, vermagic %q); foreign %s (vermagic %q)",
		r.srcA, r.srcB, a["version"], a["vermagic"], r.srcF, f["vermagic"]), nil
}

func (r *runner) checkNotLoaded() (string, error) {
	if loaded, src, _ := loadedSrcversion(); loaded {
		return "", fmt.Errorf("kmesh already loaded (srcversion %s): run loadtest after ulptest's rmmod", src)
	}
	return "kmesh not loaded", nil
}

// checkForeign: a module for another kernel is refused by the kernel, with
// the errno and a reason, and nothing stays loaded.
func (r *runner) checkForeign() (string, error) {
	res, err := builder.LoadModule(r.cfg.foreign)
	if err == nil {
		return "", fmt.Errorf("module for another kernel loaded (%s)", res)
	}
	if !errors.Is(err, builder.ErrModuleRefused) {
		return "", fmt.Errorf("error %v does not wrap ErrModuleRefused", err)
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return "", fmt.Errorf("error %v carries no errno", err)
	}
	if errno != unix.ENOEXEC {
		return "", fmt.Errorf("errno %v (%d), want ENOEXEC (bad vermagic / symbol versions)", errno, errno)
	}
	if !strings.Contains(err.Error(), "vermagic") {
		return "", fmt.Errorf("error %q does not name the reason (vermagic)", err)
	}
	if loaded, _, _ := loadedSrcversion(); loaded {
		return "", errors.New("kmesh loaded after a refused load")
	}
	return "refused: " + err.Error() + dmesgTail("kmesh"), nil
}

// checkFirst: first load → ModuleLoaded, listed in /proc/modules with the
// file's srcversion.
func (r *runner) checkFirst() (string, error) {
	res, err := builder.LoadModule(r.cfg.a)
	if err != nil {
		return "", err
	}
	if res != builder.ModuleLoaded {
		return "", fmt.Errorf("result %q, want %q", res, builder.ModuleLoaded)
	}
	line, err := procModule()
	if err != nil {
		return "", err
	}
	if line == nil {
		return "", errors.New("kmesh not in /proc/modules after ModuleLoaded")
	}
	if err := r.wantLoaded(r.srcA); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; /proc/modules: %s", res, strings.Join(line, " ")), nil
}

// checkReuse: the same file again → ModuleReused, nothing reloaded.
func (r *runner) checkReuse() (string, error) {
	before, err := moduleAddr()
	if err != nil {
		return "", err
	}
	res, err := builder.LoadModule(r.cfg.a)
	if err != nil {
		return "", err
	}
	if res != builder.ModuleReused {
		return "", fmt.Errorf("result %q, want %q", res, builder.ModuleReused)
	}
	if err := r.wantLoaded(r.srcA); err != nil {
		return "", err
	}
	after, err := moduleAddr()
	if err != nil {
		return "", err
	}
	if before != after {
		return "", fmt.Errorf("module address changed %s -> %s: it was reloaded", before, after)
	}
	return fmt.Sprintf("%s; same module (srcversion %s, address %s)", res, r.srcA, after), nil
}

// checkReplace: another build, unused → ModuleReplaced, now loaded.
func (r *runner) checkReplace() (string, error) {
	res, err := builder.LoadModule(r.cfg.b)
	if err != nil {
		return "", err
	}
	if res != builder.ModuleReplaced {
		return "", fmt.Errorf("result %q, want %q", res, builder.ModuleReplaced)
	}
	if err := r.wantLoaded(r.srcB); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; srcversion %s -> %s", res, r.srcA, r.srcB), nil
}

// checkBusy: a socket holds the ULP of the loaded build → loading the
// other build fails with ErrModuleBusy and the loaded one stays.
func (r *runner) checkBusy() (string, error) {
	fd, err := ulpSocket()
	if err != nil {
		return "", err
	}
	defer closeAndIdle(fd)
	n, err := refcnt()
	if err != nil {
		return "", err
	}
	if n < 1 {
		return "", fmt.Errorf("refcnt %d with a ULP socket open, want >= 1", n)
	}
	res, err := builder.LoadModule(r.cfg.a)
	if err == nil {
		return "", fmt.Errorf("loading the other build succeeded (%s) while a socket holds the ULP", res)
	}
	if !errors.Is(err, builder.ErrModuleBusy) {
		return "", fmt.Errorf("error %v does not wrap ErrModuleBusy", err)
	}
	if err := r.wantLoaded(r.srcB); err != nil {
		return "", err
	}
	return fmt.Sprintf("refcnt %d: %v", n, err), nil
}

// checkUnloadBusy: UnloadModule with a ULP socket open → ErrModuleBusy.
func (r *runner) checkUnloadBusy() (string, error) {
	fd, err := ulpSocket()
	if err != nil {
		return "", err
	}
	defer closeAndIdle(fd)
	err = builder.UnloadModule(builder.ModuleName)
	if err == nil {
		return "", errors.New("UnloadModule succeeded while a socket holds the ULP")
	}
	if !errors.Is(err, builder.ErrModuleBusy) {
		return "", fmt.Errorf("error %v does not wrap ErrModuleBusy", err)
	}
	if err := r.wantLoaded(r.srcB); err != nil {
		return "", err
	}
	return err.Error(), nil
}

// checkForeignKeepsLoaded: a module the kernel will refuse must not cost
// the node the loaded, working one (LoadModule unloads an unused older
// build before finit_module).
func (r *runner) checkForeignKeepsLoaded() (string, error) {
	if err := waitRefcnt(0, 10*time.Second); err != nil {
		return "", err
	}
	_, err := builder.LoadModule(r.cfg.foreign)
	if !errors.Is(err, builder.ErrModuleRefused) {
		return "", fmt.Errorf("load of the foreign module: %v, want ErrModuleRefused", err)
	}
	loaded, src, _ := loadedSrcversion()
	if !loaded {
		return "", fmt.Errorf("the loaded build (srcversion %s) was unloaded before the foreign module was refused: the node has no kmesh.ko now", r.srcB)
	}
	if src != r.srcB {
		return "", fmt.Errorf("srcversion %s loaded, want %s", src, r.srcB)
	}
	return "refused, the loaded build " + r.srcB + " stays", nil
}

// checkUnload: UnloadModule removes it.
func (r *runner) checkUnload() (string, error) {
	if loaded, _, _ := loadedSrcversion(); !loaded {
		// keep the check meaningful after an earlier failure
		if _, err := builder.LoadModule(r.cfg.a); err != nil {
			return "", fmt.Errorf("reload before unload: %w", err)
		}
	}
	if err := waitRefcnt(0, 10*time.Second); err != nil {
		return "", err
	}
	if err := builder.UnloadModule(builder.ModuleName); err != nil {
		return "", err
	}
	if line, err := procModule(); err != nil || line != nil {
		return "", fmt.Errorf("kmesh still in /proc/modules (%v, %v)", line, err)
	}
	if _, err := os.Stat("/sys/module/kmesh"); !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("/sys/module/kmesh still present (%v)", err)
	}
	return "unloaded; gone from /proc/modules and /sys/module", nil
}

func (r *runner) wantLoaded(src string) error {
	loaded, got, err := loadedSrcversion()
	switch {
	case err != nil:
		return err
	case !loaded:
		return errors.New("kmesh not loaded")
	case got != src:
		return fmt.Errorf("/sys/module/kmesh/srcversion %s, want %s", got, src)
	}
	return nil
}

func loadedSrcversion() (bool, string, error) {
	b, err := os.ReadFile("/sys/module/kmesh/srcversion")
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat("/sys/module/kmesh"); errors.Is(serr, os.ErrNotExist) {
			return false, "", nil
		}
		return true, "", errors.New("/sys/module/kmesh has no srcversion")
	}
	if err != nil {
		return false, "", fmt.Errorf("read srcversion: %w", err)
	}
	return true, strings.TrimSpace(string(b)), nil
}

func refcnt() (int, error) {
	b, err := os.ReadFile("/sys/module/kmesh/refcnt")
	if err != nil {
		return 0, fmt.Errorf("read refcnt: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitRefcnt waits until the module's refcnt is n (sockets are released
// asynchronously after close).
func waitRefcnt(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := refcnt()
		if err == nil && got == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("refcnt %d (err %v) after %v, want %d", got, err, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// moduleAddr is the module's load address in /proc/modules (changes when
// it is reloaded; 0x0 without kallsyms permission, still comparable).
func moduleAddr() (string, error) {
	f, err := procModule()
	if err != nil {
		return "", err
	}
	if len(f) < 6 {
		return "", fmt.Errorf("/proc/modules line %v", f)
	}
	return f[5], nil
}

func procModule() ([]string, error) {
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		return nil, fmt.Errorf("read /proc/modules: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == builder.ModuleName {
			return f, nil
		}
	}
	return nil, nil
}

// ulpSocket is an unconnected TCP socket holding the kmesh_defer ULP (and
// so a reference on the module).
func ulpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("create socket: %w", err)
	}
	if err := unix.SetsockoptString(fd, unix.SOL_TCP, unix.TCP_ULP, ulpName); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set TCP_ULP %s: %w", ulpName, err)
	}
	return fd, nil
}

func closeAndIdle(fd int) {
	unix.Close(fd)
	_ = waitRefcnt(0, 10*time.Second)
}

// dmesgTail is the kernel's last message naming module, as " (kernel: ...)".
func dmesgTail(module string) string {
	buf := make([]byte, 1<<16)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil || n <= 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(buf[:n])), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], module) {
			l := lines[i]
			if j := strings.Index(l, "] "); j >= 0 {
				l = l[j+2:]
			}
			return " (kernel: " + strings.TrimSpace(l) + ")"
		}
	}
	return ""
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}
