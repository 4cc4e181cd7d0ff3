package probe

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// Host reads the host's files under a root directory: "/" on the host itself,
// or the directory where a container sees the host (fixture trees in tests).
// Symlinks are resolved as the host would see them: absolute targets are
// re-rooted at Root, and nothing resolves outside Root.
type Host struct {
	Root string
}

// Resolve returns the path under Root that the host path p names, following
// symlinks inside Root.
func (h Host) Resolve(p string) (string, error) {
	r, err := securejoin.SecureJoin(h.root(), p)
	if err != nil {
		return "", fmt.Errorf("resolve %s under %s: %w", p, h.root(), err)
	}
	return r, nil
}

func (h Host) root() string {
	if h.Root == "" {
		return "/"
	}
	return h.Root
}

// hostPath turns a path under Root back into the host's name for it.
func (h Host) hostPath(p string) string {
	rel, err := filepath.Rel(h.root(), p)
	if err != nil || strings.HasPrefix(rel, "..") {
		return p
	}
	return filepath.Join("/", rel)
}

// IsRealRoot reports whether the host root is this machine's own "/".
func (h Host) IsRealRoot() bool { return filepath.Clean(h.root()) == "/" }

// ReadFile reads a host file (path as the host names it).
func (h Host) ReadFile(p string) ([]byte, error) {
	r, err := h.Resolve(p)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(r)
}

// readTrim reads a small host file and trims white space.
func (h Host) readTrim(p string) (string, error) {
	b, err := h.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Kernel identifies the running kernel.
type Kernel struct {
	Release string `json:"release"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	Distro  string `json:"distro,omitempty"`
	// DistroID and DistroVersion are os-release's ID and VERSION_ID.
	DistroID      string `json:"distro_id,omitempty"`
	DistroVersion string `json:"distro_version,omitempty"`
}

func probeKernel(h Host) (Kernel, []Check) {
	var k Kernel
	var checks []Check
	var uts unix.Utsname
	utsErr := unix.Uname(&uts)
	if utsErr == nil {
		k.Arch = unix.ByteSliceToString(uts.Machine[:])
	}

	rel, err := h.readTrim("/proc/sys/kernel/osrelease")
	switch {
	case err == nil && rel != "":
		k.Release = rel
		checks = append(checks, supported("kernel.release", "%s", rel))
	case utsErr == nil:
		k.Release = unix.ByteSliceToString(uts.Release[:])
		checks = append(checks, supported("kernel.release", "%s (from uname(2): %s/proc/sys/kernel/osrelease unreadable)", k.Release, h.Root))
	default:
		checks = append(checks, inconclusive("kernel.release", fmt.Errorf("read kernel release: %w", err)))
	}
	ver, err := h.readTrim("/proc/sys/kernel/version")
	switch {
	case err == nil && ver != "":
		k.Version = ver
		checks = append(checks, supported("kernel.version", "%s", ver))
	case utsErr == nil:
		k.Version = unix.ByteSliceToString(uts.Version[:])
		checks = append(checks, supported("kernel.version", "%s (from uname(2))", k.Version))
	default:
		checks = append(checks, inconclusive("kernel.version", fmt.Errorf("read kernel version: %w", err)))
	}
	if k.Arch != "" {
		checks = append(checks, supported("kernel.arch", "%s", k.Arch))
	} else {
		checks = append(checks, inconclusive("kernel.arch", fmt.Errorf("uname: %w", utsErr)))
	}

	// The host's os-release: under the host root, or through the host's PID 1
	// when only /proc of the host is mapped (containers).
	var osrel []byte
	var src string
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release", "/proc/1/root/etc/os-release"} {
		if b, err := h.ReadFile(p); err == nil {
			osrel, src = b, p
			break
		}
	}
	if osrel == nil {
		checks = append(checks, Check{Name: "kernel.distro", Status: Inconclusive, Detail: "no os-release under the host root"})
		return k, checks
	}
	kv := parseOSRelease(osrel)
	k.Distro, k.DistroID, k.DistroVersion = kv["PRETTY_NAME"], kv["ID"], kv["VERSION_ID"]
	if k.Distro == "" {
		k.Distro = strings.TrimSpace(kv["NAME"] + " " + kv["VERSION_ID"])
	}
	checks = append(checks, supported("kernel.distro", "%s (%s)", k.Distro, src))
	return k, checks
}

func parseOSRelease(b []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		kv[k] = strings.Trim(v, `"'`)
	}
	return kv
}

// KConfig is a parsed kernel configuration.
type KConfig struct {
	// Source is the host path it was read from.
	Source string
	// Values maps CONFIG_X to "y", "m", a string or number; options that are
	// "not set" map to "n".
	Values map[string]string
}

// Get returns an option's value ("n" when not set or absent).
func (c *KConfig) Get(opt string) string {
	if v, ok := c.Values[opt]; ok {
		return v
	}
	return "n"
}

// Enabled reports whether an option is y or m.
func (c *KConfig) Enabled(opt string) bool {
	v := c.Get(opt)
	return v == "y" || v == "m"
}

// Hash is a stable digest of the set options (order-independent, comments
// ignored), suitable for a cache key.
func (c *KConfig) Hash() string {
	keys := make([]string, 0, len(c.Values))
	for k, v := range c.Values {
		if v != "n" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	hs := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(hs, "%s=%s\n", k, c.Values[k])
	}
	return hex.EncodeToString(hs.Sum(nil))
}

// ParseKConfig parses the text of a kernel .config.
func ParseKConfig(r io.Reader) (map[string]string, error) {
	vals := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "# CONFIG_") && strings.HasSuffix(line, " is not set") {
			vals[strings.TrimSuffix(strings.TrimPrefix(line, "# "), " is not set")] = "n"
			continue
		}
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if uq, err := unquote(v); err == nil {
			v = uq
		}
		vals[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kernel config: %w", err)
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("read kernel config: no CONFIG_ options: %w", ErrMalformed)
	}
	return vals, nil
}

func unquote(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`), nil
	}
	return "", fmt.Errorf("not quoted")
}

// loadKConfig reads the running kernel's config from the first source that
// exists: /proc/config.gz, /boot/config-<release>, /lib/modules/<release>/config.
func loadKConfig(h Host, release string) (*KConfig, Check) {
	sources := []string{"/proc/config.gz", "/boot/config-" + release, "/lib/modules/" + release + "/config"}
	var tried []string
	for _, src := range sources {
		b, err := h.ReadFile(src)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", src, shortErr(err)))
			continue
		}
		var r io.Reader = bytes.NewReader(b)
		if strings.HasSuffix(src, ".gz") {
			zr, err := gzip.NewReader(r)
			if err != nil {
				tried = append(tried, fmt.Sprintf("%s: %v", src, err))
				continue
			}
			r = zr
		}
		vals, err := ParseKConfig(r)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", src, err))
			continue
		}
		return &KConfig{Source: src, Values: vals}, supported("kconfig.source", "%s (%d options)", src, len(vals))
	}
	c := Check{Name: "kconfig.source", Status: Inconclusive,
		Detail: "no readable kernel config: " + strings.Join(tried, "; "),
		Fix:    "map the host's /boot (config-" + release + ") or enable CONFIG_IKCONFIG_PROC"}
	c.Err = fmt.Errorf("load kernel config: %s", c.Detail)
	return nil, c
}

// shortErr drops the path prefix of *PathError for compact details.
func shortErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
