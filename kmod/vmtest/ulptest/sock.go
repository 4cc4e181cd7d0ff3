package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	ulpName = "kmesh_defer"
	// tcpSynSent is TCP_SYN_SENT in TCP_INFO's tcpi_state.
	tcpSynSent = 2
)

// family is one address family the checks run for.
type family struct {
	name    string // v4, v6
	domain  int
	loop    net.IP
	network string // tcp4, tcp6
}

func families() []family {
	return []family{
		{name: "v4", domain: unix.AF_INET, loop: net.ParseIP("127.0.0.1"), network: "tcp4"},
		{name: "v6", domain: unix.AF_INET6, loop: net.ParseIP("::1"), network: "tcp6"},
	}
}

func (f family) sockaddr(port int) unix.Sockaddr {
	if f.domain == unix.AF_INET {
		sa := &unix.SockaddrInet4{Port: port}
		copy(sa.Addr[:], f.loop.To4())
		return sa
	}
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], f.loop.To16())
	return sa
}

func (f family) hostport(port int) string {
	return net.JoinHostPort(f.loop.String(), strconv.Itoa(port))
}

// plainSocket makes a TCP socket of family f.
func plainSocket(f family, nonblock bool) (int, error) {
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(f.domain, typ, 0)
	if err != nil {
		return -1, fmt.Errorf("create socket: %w", err)
	}
	return fd, nil
}

// ulpSocket makes a TCP socket with the kmesh_defer ULP set.
func ulpSocket(f family, nonblock bool) (int, error) {
	fd, err := plainSocket(f, nonblock)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptString(fd, unix.SOL_TCP, unix.TCP_ULP, ulpName); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set TCP_ULP %s: %w", ulpName, err)
	}
	return fd, nil
}

// ulpConnect makes a blocking ULP socket and connects it to port; connect
// must succeed at once.
func ulpConnect(f family, port int, nonblock bool) (int, error) {
	fd, err := ulpSocket(f, nonblock)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, f.sockaddr(port)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect (deferred) returned %w, want success", err)
	}
	return fd, nil
}

// disconnect is connect(fd, AF_UNSPEC).
func disconnect(fd int) error {
	var sa [16]byte // sa_family = AF_UNSPEC
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if e != 0 {
		return fmt.Errorf("connect AF_UNSPEC: %w", e)
	}
	return nil
}

func listen(f family) (*net.TCPListener, int, error) {
	l, err := net.ListenTCP(f.network, &net.TCPAddr{IP: f.loop})
	if err != nil {
		return nil, 0, fmt.Errorf("listen %s: %w", f.network, err)
	}
	return l, l.Addr().(*net.TCPAddr).Port, nil
}

// closedPort returns a loopback port nothing listens on.
func closedPort(f family) (int, error) {
	l, port, err := listen(f)
	if err != nil {
		return 0, err
	}
	l.Close()
	return port, nil
}

var errAccepted = errors.New("listener accepted a connection before the first send")

// expectNoAccept asserts that no connection reaches l within d.
func expectNoAccept(l *net.TCPListener, d time.Duration) error {
	if err := l.SetDeadline(time.Now().Add(d)); err != nil {
		return fmt.Errorf("set accept deadline: %w", err)
	}
	defer l.SetDeadline(time.Time{})
	c, err := l.Accept()
	if err == nil {
		c.Close()
		return errAccepted
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return fmt.Errorf("accept: %w", err)
}

// acceptRead accepts one connection and reads exactly n bytes from it.
func acceptRead(l *net.TCPListener, n int, timeout time.Duration) (net.Conn, []byte, error) {
	if err := l.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, nil, fmt.Errorf("set accept deadline: %w", err)
	}
	defer l.SetDeadline(time.Time{})
	c, err := l.Accept()
	if err != nil {
		return nil, nil, fmt.Errorf("accept: %w", err)
	}
	buf, err := readN(c, n, timeout)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, buf, nil
}

func readN(c net.Conn, n int, timeout time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, fmt.Errorf("read %d bytes: %w", n, err)
	}
	return buf, nil
}

// pattern returns n deterministic bytes, distinct per seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func sameBytes(got, want []byte) error {
	if bytes.Equal(got, want) {
		return nil
	}
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			return fmt.Errorf("data differs at byte %d of %d", i, len(want))
		}
	}
	return fmt.Errorf("got %d bytes, want %d", len(got), len(want))
}

// writeAll writes b to a (possibly non-blocking) fd, waiting for POLLOUT on
// EAGAIN. It returns how many EAGAINs it saw.
func writeAll(fd int, b []byte, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	eagain := 0
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EAGAIN {
			eagain++
			if err := waitFD(fd, unix.POLLOUT, time.Until(deadline)); err != nil {
				return eagain, err
			}
			continue
		}
		if err != nil {
			return eagain, fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	return eagain, nil
}

// waitFD polls fd for events; it returns an error on timeout or when the
// socket reports POLLERR/POLLHUP instead.
func waitFD(fd int, events int16, timeout time.Duration) error {
	rev, err := pollFD(fd, events, timeout)
	if err != nil {
		return err
	}
	if rev&(unix.POLLERR|unix.POLLHUP) != 0 && rev&events == 0 {
		return fmt.Errorf("poll: revents %#x", rev)
	}
	return nil
}

func pollFD(fd int, events int16, timeout time.Duration) (int16, error) {
	if timeout <= 0 {
		return 0, errors.New("poll: timed out")
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		n, err := unix.Poll(pfd, int(timeout/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			return 0, errors.New("poll: timed out")
		}
		return pfd[0].Revents, nil
	}
}

func peerPort(fd int) (int, error) {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return 0, fmt.Errorf("getpeername: %w", err)
	}
	if p := sockaddrPort(sa); p != 0 {
		return p, nil
	}
	return 0, fmt.Errorf("getpeername: unexpected %T", sa)
}

func sockaddrPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}

// moduleDir is /sys/module/<name>.
func moduleDir(name string) string { return filepath.Join("/sys/module", name) }

func readCounter(module, name string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(moduleDir(module), "parameters", name))
	if err != nil {
		return 0, fmt.Errorf("read counter %s: %w", name, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse counter %s: %w", name, err)
	}
	return v, nil
}

func writeParam(module, name string, v int) error {
	p := filepath.Join(moduleDir(module), "parameters", name)
	if err := os.WriteFile(p, []byte(strconv.Itoa(v)), 0o644); err != nil {
		return fmt.Errorf("write parameter %s: %w", name, err)
	}
	return nil
}

// procModule returns the /proc/modules line fields of module, or nil.
func procModule(module string) ([]string, error) {
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		return nil, fmt.Errorf("read /proc/modules: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == module {
			return f, nil
		}
	}
	return nil, nil
}

// kernelVersion returns the running kernel's major and minor version.
func kernelVersion() (int, int, string) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0, 0, ""
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	fmt.Sscanf(rel, "%d.%d", &major, &minor)
	return major, minor, rel
}
