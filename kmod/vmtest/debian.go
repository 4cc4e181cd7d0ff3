package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Kernel names one Debian kernel flavour the harness tests.
type Kernel struct {
	// Name is the short name used in test names and cache paths ("6.1").
	Name string
	// Suites are the apt suites that carry it, for example
	// {"bookworm", "bookworm-security"}; a "-security" suite is fetched from
	// the security mirror.
	Suites []string
	// VersionPrefix selects the linux-image-amd64 version ("6.1.").
	VersionPrefix string
}

// DefaultKernels are the kernels kmesh.ko supports: bullseye's 5.10,
// bookworm's 6.1 and bookworm-backports' 6.12 (built with bookworm's gcc-12,
// so its kbuild runs and compiles here; trixie's 6.12 needs gcc-14 and a
// newer glibc for its kbuild binaries).
func DefaultKernels() []Kernel {
	return []Kernel{
		{Name: "5.10", Suites: []string{"bullseye", "bullseye-security"}, VersionPrefix: "5.10."},
		{Name: "6.1", Suites: []string{"bookworm", "bookworm-security"}, VersionPrefix: "6.1."},
		{Name: "6.12", Suites: []string{"bookworm-backports"}, VersionPrefix: "6.12."},
	}
}

// KernelTree is a fetched and extracted kernel: image, modules, headers and
// kbuild under Root, as dpkg-deb -x laid them out.
type KernelTree struct {
	Name     string   `json:"name"`
	Release  string   `json:"release"`  // uname -r, e.g. 6.1.0-57-amd64
	Version  string   `json:"version"`  // Debian package version
	Packages []string `json:"packages"` // package=version fetched
	Root     string   `json:"root"`
}

// Vmlinuz is the kernel image to boot.
func (t *KernelTree) Vmlinuz() string {
	return filepath.Join(t.Root, "boot", "vmlinuz-"+t.Release)
}

// ModulesDir is lib/modules/<release> of the image package.
func (t *KernelTree) ModulesDir() string {
	return filepath.Join(t.Root, "lib", "modules", t.Release)
}

// HeadersDir is the kbuild directory to pass to make -C.
func (t *KernelTree) HeadersDir() string {
	return filepath.Join(t.Root, "usr", "src", "linux-headers-"+t.Release)
}

// Mirrors are the Debian archive base URLs.
type Mirrors struct {
	Debian   string // e.g. http://deb.debian.org/debian
	Security string // e.g. http://deb.debian.org/debian-security
}

// HostMirrors reads the mirrors from the machine's deb822 sources
// (/etc/apt/sources.list.d/debian.sources), falling back to deb.debian.org.
func HostMirrors() Mirrors {
	m := Mirrors{Debian: "http://deb.debian.org/debian", Security: "http://deb.debian.org/debian-security"}
	b, err := os.ReadFile("/etc/apt/sources.list.d/debian.sources")
	if err != nil {
		return m
	}
	for _, stanza := range strings.Split(string(b), "\n\n") {
		var uri, suites string
		for _, line := range strings.Split(stanza, "\n") {
			if v, ok := strings.CutPrefix(line, "URIs:"); ok {
				uri = strings.Fields(v)[0]
			}
			if v, ok := strings.CutPrefix(line, "Suites:"); ok {
				suites = v
			}
		}
		if uri == "" {
			continue
		}
		if strings.Contains(suites, "-security") {
			m.Security = uri
		} else {
			m.Debian = uri
		}
	}
	return m
}

// Fetcher downloads Debian kernel packages with apt-get into a cache,
// using a private apt state (its own sources list, lists and archives),
// so the machine's apt configuration is neither read for sources nor
// changed.
type Fetcher struct {
	Cache   string // cache root (see CacheDir)
	Mirrors Mirrors
	// Refresh re-resolves and re-downloads even when the cache is complete.
	Refresh bool
	Log     logrus.FieldLogger

	updateOnce sync.Once
	updateErr  error
}

// CacheDir is $KMESH_KERNEL_CACHE, else ~/.cache/kmesh/kernels.
func CacheDir() (string, error) {
	if d := os.Getenv("KMESH_KERNEL_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find user cache dir: %w", err)
	}
	return filepath.Join(base, "kmesh", "kernels"), nil
}

// NewFetcher returns a Fetcher for the default cache and host mirrors;
// $KMESH_KERNEL_REFRESH=1 forces a refresh.
func NewFetcher(log logrus.FieldLogger) (*Fetcher, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Fetcher{
		Cache:   cache,
		Mirrors: HostMirrors(),
		Refresh: os.Getenv("KMESH_KERNEL_REFRESH") == "1",
		Log:     log.WithField("subsys", "vmtest"),
	}, nil
}

func (f *Fetcher) aptDir() string { return filepath.Join(f.Cache, "apt") }

func (f *Fetcher) aptArgs() []string {
	d := f.aptDir()
	return []string{
		"-o", "Dir::Etc::sourcelist=" + filepath.Join(d, "sources.list"),
		"-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::State::Lists=" + filepath.Join(d, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(d, "cache"),
		"-o", "APT::Sandbox::User=root",
		"-o", "Acquire::Languages=none",
		"-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
	}
}

func (f *Fetcher) sourcesList() string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, k := range DefaultKernels() {
		for _, s := range k.Suites {
			if seen[s] {
				continue
			}
			seen[s] = true
			uri := f.Mirrors.Debian
			if strings.HasSuffix(s, "-security") {
				uri = f.Mirrors.Security
			}
			fmt.Fprintf(&b, "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n", uri, s)
		}
	}
	return b.String()
}

// update runs apt-get update on the private state once per Fetcher.
func (f *Fetcher) update(ctx context.Context) error {
	f.updateOnce.Do(func() {
		d := f.aptDir()
		for _, sub := range []string{"lists/partial", "cache/archives/partial"} {
			if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
				f.updateErr = fmt.Errorf("create apt dir: %w", err)
				return
			}
		}
		if err := os.WriteFile(filepath.Join(d, "sources.list"), []byte(f.sourcesList()), 0o644); err != nil {
			f.updateErr = fmt.Errorf("write sources.list: %w", err)
			return
		}
		start := time.Now()
		if _, err := runCmd(ctx, "", "apt-get", append(f.aptArgs(), "-q", "update")...); err != nil {
			f.updateErr = fmt.Errorf("apt-get update: %w", err)
			return
		}
		f.Log.WithFields(logrus.Fields{"phase": "fetch", "duration_ms": time.Since(start).Milliseconds()}).Info("apt lists updated")
	})
	return f.updateErr
}

// Fetch returns k's extracted tree, downloading and extracting it unless
// the cache already holds it (then it touches no network).
func (f *Fetcher) Fetch(ctx context.Context, k Kernel) (*KernelTree, error) {
	dir := filepath.Join(f.Cache, k.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cache dir: %w", err)
	}
	unlock, err := lockFile(filepath.Join(f.Cache, k.Name+".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	stamp := filepath.Join(dir, "kernel.json")
	if !f.Refresh {
		if t, err := readTree(stamp, filepath.Join(dir, "root")); err == nil {
			f.Log.WithFields(logrus.Fields{"phase": "fetch", "kernel": k.Name, "release": t.Release}).Debug("kernel cached")
			return t, nil
		}
	}
	start := time.Now()
	if err := f.update(ctx); err != nil {
		return nil, err
	}
	version, err := f.pickVersion(ctx, k)
	if err != nil {
		return nil, err
	}
	image, err := f.dependency(ctx, "linux-image-amd64", version, regexp.MustCompile(`^linux-image-[0-9].*-amd64$`))
	if err != nil {
		return nil, err
	}
	release := strings.TrimPrefix(image, "linux-image-")
	headers := "linux-headers-" + release
	common, err := f.dependency(ctx, headers, version, regexp.MustCompile(`^linux-headers-.*-common(-rt)?$`))
	if err != nil {
		return nil, err
	}
	kbuild, err := f.dependency(ctx, headers, version, regexp.MustCompile(`^linux-kbuild-`))
	if err != nil {
		return nil, err
	}
	pkgs := []string{image + "=" + version, headers + "=" + version, common + "=" + version, kbuild + "=" + version}

	debs := filepath.Join(dir, "debs")
	root := filepath.Join(dir, "root")
	for _, d := range []string{debs, root} {
		if err := os.RemoveAll(d); err != nil {
			return nil, fmt.Errorf("clean %s: %w", d, err)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if _, err := runCmd(ctx, debs, "apt-get", append(f.aptArgs(), append([]string{"-q", "download"}, pkgs...)...)...); err != nil {
		return nil, fmt.Errorf("apt-get download %s: %w", strings.Join(pkgs, " "), err)
	}
	files, err := filepath.Glob(filepath.Join(debs, "*.deb"))
	if err != nil || len(files) != len(pkgs) {
		return nil, fmt.Errorf("download %s: got %d .deb files, want %d", k.Name, len(files), len(pkgs))
	}
	for _, deb := range files {
		if _, err := runCmd(ctx, "", "dpkg-deb", "-x", deb, root); err != nil {
			return nil, fmt.Errorf("extract %s: %w", filepath.Base(deb), err)
		}
	}
	if err := os.RemoveAll(debs); err != nil {
		return nil, fmt.Errorf("remove downloaded packages: %w", err)
	}
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	t := &KernelTree{Name: k.Name, Release: release, Version: version, Packages: pkgs, Root: root}
	if err := fixupHeaders(t); err != nil {
		return nil, err
	}
	for _, p := range []string{t.Vmlinuz(), t.ModulesDir(), filepath.Join(t.HeadersDir(), "Makefile")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("check extracted %s: %w", k.Name, err)
		}
	}
	b, _ := json.MarshalIndent(t, "", "  ")
	if err := os.WriteFile(stamp, append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", stamp, err)
	}
	f.Log.WithFields(logrus.Fields{"phase": "fetch", "kernel": k.Name, "release": release, "version": version,
		"duration_ms": time.Since(start).Milliseconds()}).Info("kernel fetched")
	return t, nil
}

func readTree(stamp, root string) (*KernelTree, error) {
	b, err := os.ReadFile(stamp)
	if err != nil {
		return nil, err
	}
	var t KernelTree
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("parse %s: %w", stamp, err)
	}
	t.Root = root // the cache may have moved since
	if abs, err := filepath.Abs(root); err == nil {
		t.Root = abs
	}
	if err := fixupHeaders(&t); err != nil {
		return nil, err
	}
	if _, err := os.Stat(t.Vmlinuz()); err != nil {
		return nil, err
	}
	return &t, nil
}

// fixupHeaders makes the extracted header tree usable where it is. Debian's
// linux-headers-<rel> Makefile is one line, "include
// /usr/src/linux-headers-<abi>-common/Makefile": an absolute path, rewritten
// to "include ../linux-headers-<abi>-common/Makefile" (make -C runs in the
// headers directory, so this resolves wherever the cache lives). The
// scripts/ and tools/ symlinks are already relative
// (../../lib/linux-kbuild-<ver>/...) and resolve inside the same extraction
// root. Idempotent.
func fixupHeaders(t *KernelTree) error {
	mk := filepath.Join(t.HeadersDir(), "Makefile")
	b, err := os.ReadFile(mk)
	if err != nil {
		return fmt.Errorf("read headers Makefile: %w", err)
	}
	re := regexp.MustCompile(`(?m)^include (\S*?)([^/\s]+)/Makefile\s*$`)
	m := re.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("headers Makefile %s: no include line in %q", mk, b)
	}
	common := string(m[2])
	if _, err := os.Stat(filepath.Join(filepath.Dir(t.HeadersDir()), common, "Makefile")); err != nil {
		return fmt.Errorf("headers Makefile includes %s%s/Makefile: %w", m[1], common, err)
	}
	rel := "include ../" + common + "/Makefile"
	if strings.TrimSpace(string(m[0])) != rel {
		out := re.ReplaceAll(b, []byte(rel+"\n"))
		if err := os.WriteFile(mk, out, 0o644); err != nil {
			return fmt.Errorf("rewrite headers Makefile: %w", err)
		}
	}
	for _, l := range []string{"scripts", "tools"} {
		if _, err := os.Stat(filepath.Join(t.HeadersDir(), l)); err != nil {
			return fmt.Errorf("headers %s link does not resolve: %w", l, err)
		}
	}
	return nil
}

// pickVersion returns the newest linux-image-amd64 version of k.
func (f *Fetcher) pickVersion(ctx context.Context, k Kernel) (string, error) {
	out, err := runCmd(ctx, "", "apt-cache", append(f.aptArgs(), "madison", "linux-image-amd64")...)
	if err != nil {
		return "", fmt.Errorf("apt-cache madison linux-image-amd64: %w", err)
	}
	var best string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "|")
		if len(parts) < 3 {
			continue
		}
		v, src := strings.TrimSpace(parts[1]), parts[2]
		if !strings.HasPrefix(v, k.VersionPrefix) || !inSuites(src, k.Suites) {
			continue
		}
		if best == "" || debVersionGreater(ctx, v, best) {
			best = v
		}
	}
	if best == "" {
		return "", fmt.Errorf("no linux-image-amd64 %s* in %v", k.VersionPrefix, k.Suites)
	}
	return best, nil
}

func inSuites(src string, suites []string) bool {
	for _, f := range strings.Fields(src) {
		suite, _, _ := strings.Cut(f, "/")
		for _, s := range suites {
			if suite == s {
				return true
			}
		}
	}
	return false
}

func debVersionGreater(ctx context.Context, a, b string) bool {
	return exec.CommandContext(ctx, "dpkg", "--compare-versions", a, "gt", b).Run() == nil
}

// dependency returns the Depends of pkg=version matching re.
func (f *Fetcher) dependency(ctx context.Context, pkg, version string, re *regexp.Regexp) (string, error) {
	out, err := runCmd(ctx, "", "apt-cache", append(f.aptArgs(), "depends", pkg+"="+version)...)
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s=%s: %w", pkg, version, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "|"))
		if v, ok := strings.CutPrefix(line, "Depends: "); ok {
			if name := strings.TrimSpace(v); re.MatchString(name) {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("%s=%s has no dependency matching %s", pkg, version, re)
}

// lockFile takes an exclusive flock on path (other test processes share
// the cache).
func lockFile(path string) (func(), error) {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(fh.Fd()), unix.LOCK_EX); err != nil {
		fh.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		unix.Flock(int(fh.Fd()), unix.LOCK_UN)
		fh.Close()
	}, nil
}

// runCmd runs a command and returns its stdout; errors carry stderr's tail.
func runCmd(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", name, err, tail(stderr.String()+stdout.String(), 2000))
	}
	return stdout.Bytes(), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
