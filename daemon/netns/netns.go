package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// RunDir is where `ip netns` keeps named namespaces.
const RunDir = "/run/netns"

// ErrNotFound is returned for a namespace name or path that does not exist.
var ErrNotFound = errors.New("network namespace not found")

// ErrNotNetns is returned for a path that exists but is no network
// namespace (for example /run/netns/NAME after its bind mount went).
var ErrNotNetns = errors.New("not a network namespace")

// Path turns a namespace reference into a path: a name (no slash) is looked
// up under /run/netns, anything else is taken as a path.
func Path(ref string) (string, error) {
	if ref == "" {
		return "", fmt.Errorf("resolve network namespace: empty name: %w", ErrNotFound)
	}
	p := ref
	if !strings.Contains(ref, "/") {
		p = filepath.Join(RunDir, ref)
	}
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("resolve network namespace %q (%s): %w", ref, p, ErrNotFound)
		}
		return "", fmt.Errorf("resolve network namespace %q: %w", ref, err)
	}
	return p, nil
}

// Do runs f on an OS thread that has joined the network namespace at path.
// The thread returns to its namespace afterwards (or, if that fails, is
// discarded rather than reused).
func Do(path string, f func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			if errors.Is(err, unix.EINVAL) {
				err = fmt.Errorf("%w: %w", ErrNotNetns, err)
			}
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// keep the thread locked: it exits with the goroutine
			errc <- errors.Join(ferr, fmt.Errorf("return from network namespace %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Cookie returns the cookie of the network namespace at path: from
// SO_NETNS_COOKIE (Linux 5.14+), or on older kernels from a BPF program
// (CookieFromBPF), the value bpf_get_netns_cookie gives the connect
// programs either way.
func Cookie(path string) (uint64, error) {
	c, err := SockoptCookie(path)
	if errors.Is(err, ErrNoSockoptCookie) {
		c, berr := CookieFromBPF(path)
		if berr != nil {
			return 0, fmt.Errorf("%w; %w", err, berr)
		}
		return c, nil
	}
	return c, err
}

// SockoptCookie reads the cookie with SO_NETNS_COOKIE; ErrNoSockoptCookie
// before Linux 5.14.
func SockoptCookie(path string) (uint64, error) {
	var cookie uint64
	err := Do(path, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("create socket: %w", err)
		}
		defer unix.Close(fd)
		c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		if errors.Is(err, unix.ENOPROTOOPT) {
			return fmt.Errorf("read SO_NETNS_COOKIE: %w: %w", ErrNoSockoptCookie, err)
		}
		if err != nil {
			return fmt.Errorf("read SO_NETNS_COOKIE: %w", err)
		}
		cookie = c
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read cookie of network namespace %s: %w", path, err)
	}
	return cookie, nil
}

// Addrs returns the addresses of the namespace's interfaces, loopback
// addresses left out.
func Addrs(path string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := Do(path, func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil || pfx.Addr().IsLoopback() || pfx.Addr().IsLinkLocalUnicast() {
				continue
			}
			out = append(out, pfx.Addr().Unmap())
		}
		return nil
	})
	return out, err
}
