package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/kmod/vmtest/guestcheck"
)

type config struct {
	module      string
	wantVersion string
	rmmod       bool
}

const (
	noAcceptWait = 300 * time.Millisecond
	ioTimeout    = 10 * time.Second
)

type runner struct {
	cfg config
	out io.Writer
	guestcheck.Reporter
	major int
	minor int
}

func run(cfg config, out io.Writer) int {
	major, minor, rel := kernelVersion()
	r := &runner{cfg: cfg, out: out, Reporter: guestcheck.Reporter{Out: out}, major: major, minor: minor}
	fmt.Fprintf(out, "ulptest: kernel %s\n", rel)

	r.Check("module/loaded", r.checkLoaded)
	for _, f := range families() {
		f := f
		for _, c := range []struct {
			name string
			fn   func(family) (string, error)
		}{
			{"ulp-name", r.checkULPName},
			{"defer", r.checkDefer},
			{"writev", r.checkWritev},
			{"write", r.checkWrite},
			{"send", r.checkSend},
			{"refused", r.checkRefused},
			{"nonblock", r.checkNonblock},
			{"nonblock-refused", r.checkNonblockRefused},
			{"close-before-send", r.checkCloseBeforeSend},
			{"recv-first", r.checkRecvFirst},
			{"reconnect", r.checkReconnect},
			{"rewrite", r.checkRewrite},
			{"go-dial", r.checkGoDial},
			{"listen-refused", r.checkListenRefused},
			{"many", r.checkMany},
		} {
			c := c
			r.Check(c.name+"/"+f.name, func() (string, error) { return c.fn(f) })
		}
	}
	r.Check("no-leak", r.checkNoLeak)
	if cfg.rmmod {
		r.Check("rmmod-busy", r.checkRmmodBusy)
		r.Check("rmmod", r.checkRmmod)
		r.Check("ulp-gone", r.checkULPGone)
	}
	if r.Failed > 0 {
		fmt.Fprintf(out, "ulptest: %d check(s) failed\n", r.Failed)
		return 1
	}
	fmt.Fprintln(out, "ulptest: all checks passed")
	return 0
}

func (r *runner) atLeast(major, minor int) bool {
	return r.major > major || (r.major == major && r.minor >= minor)
}

// counterDelta runs fn and returns how much counter name grew.
func (r *runner) counterDelta(name string, fn func() error) (int64, error) {
	before, err := readCounter(r.cfg.module, name)
	if err != nil {
		return 0, err
	}
	if err := fn(); err != nil {
		return 0, err
	}
	after, err := readCounter(r.cfg.module, name)
	if err != nil {
		return 0, err
	}
	return after - before, nil
}

func (r *runner) checkLoaded() (string, error) {
	f, err := procModule(r.cfg.module)
	if err != nil {
		return "", err
	}
	if f == nil {
		return "", fmt.Errorf("%s not in /proc/modules", r.cfg.module)
	}
	b, err := os.ReadFile(moduleDir(r.cfg.module) + "/version")
	if err != nil {
		return "", fmt.Errorf("read version: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if r.cfg.wantVersion != "" && v != r.cfg.wantVersion {
		return "", fmt.Errorf("version %q, want %q", v, r.cfg.wantVersion)
	}
	return "version " + v, nil
}

func (r *runner) checkULPName(f family) (string, error) {
	fd, err := ulpSocket(f, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	name, err := unix.GetsockoptString(fd, unix.SOL_TCP, unix.TCP_ULP)
	if err != nil {
		return "", fmt.Errorf("get TCP_ULP: %w", err)
	}
	if name != ulpName {
		return "", fmt.Errorf("TCP_ULP is %q, want %q", name, ulpName)
	}
	err = unix.SetsockoptString(fd, unix.SOL_TCP, unix.TCP_ULP, ulpName)
	if !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("setting the ULP twice: %v, want EEXIST", err)
	}
	return "TCP_ULP=" + name, nil
}

func (r *runner) checkDefer(f family) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	var fd int
	n, err := r.counterDelta("deferred", func() error {
		var err error
		fd, err = ulpConnect(f, port, false)
		return err
	})
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if n != 1 {
		return "", fmt.Errorf("deferred counter grew by %d, want 1", n)
	}
	ti, err := unix.GetsockoptTCPInfo(fd, unix.SOL_TCP, unix.TCP_INFO)
	if err != nil {
		return "", fmt.Errorf("get TCP_INFO: %w", err)
	}
	if ti.State != tcpSynSent || ti.Segs_out != 0 {
		return "", fmt.Errorf("after connect: tcpi_state %d, segs_out %d; want %d (deferred) and 0", ti.State, ti.Segs_out, tcpSynSent)
	}
	if err := expectNoAccept(l, noAcceptWait); err != nil {
		return "", err
	}
	if _, err := unix.Getpeername(fd); !errors.Is(err, unix.ENOTCONN) {
		return "", fmt.Errorf("getpeername before first send: %v, want ENOTCONN", err)
	}
	rev, err := pollFD(fd, unix.POLLOUT|unix.POLLIN, time.Second)
	if err != nil {
		return "", err
	}
	if rev != unix.POLLOUT {
		return "", fmt.Errorf("poll before first send: revents %#x, want POLLOUT only", rev)
	}
	return fmt.Sprintf("connect ok; tcpi_state SYN_SENT, 0 segments out; no accept in %v; poll=POLLOUT", noAcceptWait), nil
}

// firstSend connects a deferred socket to a listener, performs the first
// send with send, and checks the bytes arrive. It returns which iterator
// counter moved.
func (r *runner) firstSend(f family, want []byte, bind bool, send func(fd int) (int, error)) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	fd, err := ulpSocket(f, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	localPort := 0
	if bind {
		if err := unix.Bind(fd, f.sockaddr(0)); err != nil {
			return "", fmt.Errorf("bind before connect: %w", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return "", fmt.Errorf("getsockname: %w", err)
		}
		localPort = sockaddrPort(sa)
	}
	if err := unix.Connect(fd, f.sockaddr(port)); err != nil {
		return "", fmt.Errorf("connect (deferred) returned %w, want success", err)
	}
	if err := expectNoAccept(l, noAcceptWait); err != nil {
		return "", err
	}
	iov0, _ := readCounter(r.cfg.module, "iter_iovec")
	ubuf0, _ := readCounter(r.cfg.module, "iter_ubuf")
	n, err := send(fd)
	if err != nil {
		return "", fmt.Errorf("first send: %w", err)
	}
	if n != len(want) {
		return "", fmt.Errorf("first send wrote %d bytes, want %d", n, len(want))
	}
	c, got, err := acceptRead(l, len(want), ioTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := sameBytes(got, want); err != nil {
		return "", err
	}
	if p, err := peerPort(fd); err != nil || p != port {
		return "", fmt.Errorf("peer after first send: port %d (%v), want %d", p, err, port)
	}
	if remote := c.RemoteAddr().(*net.TCPAddr).Port; bind && remote != localPort {
		return "", fmt.Errorf("connection came from port %d, socket was bound to %d", remote, localPort)
	}
	// The connection is a plain TCP connection from now on.
	more := pattern(4096, 99)
	if _, err := writeAll(fd, more, ioTimeout); err != nil {
		return "", fmt.Errorf("second send: %w", err)
	}
	got, err = readN(c, len(more), ioTimeout)
	if err != nil {
		return "", err
	}
	if err := sameBytes(got, more); err != nil {
		return "", fmt.Errorf("second send: %w", err)
	}
	echo := []byte("pong")
	if _, err := c.Write(echo); err != nil {
		return "", fmt.Errorf("server write: %w", err)
	}
	back := make([]byte, len(echo))
	if _, err := unix.Read(fd, back); err != nil || string(back) != string(echo) {
		return "", fmt.Errorf("client read %q: %v", back, err)
	}
	iov1, _ := readCounter(r.cfg.module, "iter_iovec")
	ubuf1, _ := readCounter(r.cfg.module, "iter_ubuf")
	switch {
	case iov1-iov0 == 1 && ubuf1 == ubuf0:
		return "iovec", nil
	case ubuf1-ubuf0 == 1 && iov1 == iov0:
		return "ubuf", nil
	}
	return "", fmt.Errorf("iterator counters moved iovec +%d ubuf +%d, want exactly one +1", iov1-iov0, ubuf1-ubuf0)
}

func (r *runner) checkWritev(f family) (string, error) {
	bufs := [][]byte{pattern(1000, 1), pattern(3000, 2), pattern(2500, 3)}
	var want []byte
	for _, b := range bufs {
		want = append(want, b...)
	}
	iter, err := r.firstSend(f, want, false, func(fd int) (int, error) { return unix.Writev(fd, bufs) })
	if err != nil {
		return "", err
	}
	if iter != "iovec" {
		return "", fmt.Errorf("writev of 3 segments went by %s, want iovec", iter)
	}
	return fmt.Sprintf("writev 3 segments, %d bytes intact; iter=%s; second write + reply ok", len(want), iter), nil
}

func (r *runner) checkWrite(f family) (string, error) {
	want := pattern(8192, 4)
	iter, err := r.firstSend(f, want, false, func(fd int) (int, error) { return unix.Write(fd, want) })
	if err != nil {
		return "", err
	}
	wantIter := "iovec"
	if r.atLeast(6, 0) {
		wantIter = "ubuf"
	}
	if iter != wantIter {
		return "", fmt.Errorf("write(2) went by %s, want %s on this kernel", iter, wantIter)
	}
	return fmt.Sprintf("write %d bytes intact; iter=%s", len(want), iter), nil
}

func (r *runner) checkSend(f family) (string, error) {
	want := pattern(3000, 5)
	iter, err := r.firstSend(f, want, true, func(fd int) (int, error) {
		if err := unix.Sendto(fd, want, 0, nil); err != nil {
			return 0, err
		}
		return len(want), nil
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("bind, connect, send %d bytes intact from the bound port; iter=%s", len(want), iter), nil
}

func (r *runner) checkRefused(f family) (string, error) {
	port, err := closedPort(f)
	if err != nil {
		return "", err
	}
	fd, err := ulpConnect(f, port, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("hello"))
	if !errors.Is(err, unix.ECONNREFUSED) {
		return "", fmt.Errorf("first write to a closed port: %v, want ECONNREFUSED", err)
	}
	_, err = unix.Write(fd, []byte("again"))
	if err == nil {
		return "", errors.New("second write after a refused connect succeeded")
	}
	return fmt.Sprintf("connect ok, first write: %v, second write: %v", unix.ECONNREFUSED, err), nil
}

func (r *runner) checkNonblock(f family) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	fd, err := ulpConnect(f, port, true)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	rev, err := pollFD(fd, unix.POLLOUT, time.Second)
	if err != nil {
		return "", err
	}
	if rev != unix.POLLOUT {
		return "", fmt.Errorf("poll after deferred connect: revents %#x, want POLLOUT", rev)
	}
	if err := expectNoAccept(l, noAcceptWait); err != nil {
		return "", err
	}
	want := pattern(100000, 6)
	type result struct {
		c   net.Conn
		got []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, got, err := acceptRead(l, len(want), ioTimeout)
		done <- result{c, got, err}
	}()
	eagain, err := writeAll(fd, want, ioTimeout)
	if err != nil {
		return "", err
	}
	res := <-done
	if res.err != nil {
		return "", res.err
	}
	defer res.c.Close()
	if err := sameBytes(res.got, want); err != nil {
		return "", err
	}
	return fmt.Sprintf("non-blocking connect ok, POLLOUT, %d bytes intact after %d EAGAIN", len(want), eagain), nil
}

func (r *runner) checkNonblockRefused(f family) (string, error) {
	port, err := closedPort(f)
	if err != nil {
		return "", err
	}
	fd, err := ulpConnect(f, port, true)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("hello"))
	switch {
	case errors.Is(err, unix.ECONNREFUSED):
		return "first write: ECONNREFUSED", nil
	case errors.Is(err, unix.EAGAIN):
	default:
		return "", fmt.Errorf("first write to a closed port: %v, want EAGAIN or ECONNREFUSED", err)
	}
	rev, err := pollFD(fd, unix.POLLOUT, 5*time.Second)
	if err != nil {
		return "", err
	}
	if rev&unix.POLLERR == 0 {
		return "", fmt.Errorf("poll after refused connect: revents %#x, want POLLERR", rev)
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return "", fmt.Errorf("get SO_ERROR: %w", err)
	}
	if syscall.Errno(soerr) != unix.ECONNREFUSED {
		return "", fmt.Errorf("SO_ERROR %v, want ECONNREFUSED", syscall.Errno(soerr))
	}
	return fmt.Sprintf("first write: EAGAIN; poll revents %#x; SO_ERROR: %v", rev, syscall.Errno(soerr)), nil
}

func (r *runner) checkCloseBeforeSend(f family) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	// Plain close, close with zero linger, shutdown then close, never connected.
	for i, how := range []string{"close", "linger0", "shutdown", "unconnected"} {
		fd, err := ulpSocket(f, i%2 == 1)
		if err != nil {
			return "", err
		}
		if how != "unconnected" {
			if err := unix.Connect(fd, f.sockaddr(port)); err != nil {
				unix.Close(fd)
				return "", fmt.Errorf("%s: connect: %w", how, err)
			}
		}
		switch how {
		case "linger0":
			if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
				unix.Close(fd)
				return "", fmt.Errorf("set SO_LINGER: %w", err)
			}
		case "shutdown":
			if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
				unix.Close(fd)
				return "", fmt.Errorf("shutdown before first send: %w", err)
			}
		}
		if err := unix.Close(fd); err != nil {
			return "", fmt.Errorf("%s: close: %w", how, err)
		}
	}
	if err := expectNoAccept(l, noAcceptWait); err != nil {
		return "", err
	}
	return "close / linger0 close / shutdown+close / unconnected close: nothing reached the listener", nil
}

func (r *runner) checkRecvFirst(f family) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	banner := "220 kmesh-vmtest ready\r\n"
	served := make(chan error, 1)
	go func() {
		l.SetDeadline(time.Now().Add(ioTimeout))
		c, err := l.Accept()
		if err != nil {
			served <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.Close()
		_, err = c.Write([]byte(banner))
		served <- err
	}()
	fd, err := ulpConnect(f, port, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		return "", fmt.Errorf("set SO_RCVTIMEO: %w", err)
	}
	var n int64
	var got []byte
	n, err = r.counterDelta("recv_trigger", func() error {
		buf := make([]byte, len(banner))
		k, err := unix.Read(fd, buf)
		// With SO_RCVTIMEO a read is not restarted after a signal handler
		// (signal(7)); the Go runtime signals threads to preempt goroutines.
		for errors.Is(err, unix.EINTR) {
			k, err = unix.Read(fd, buf)
		}
		if err != nil {
			return fmt.Errorf("read before any send: %w", err)
		}
		got = buf[:k]
		return nil
	})
	if err != nil {
		return "", err
	}
	if err := <-served; err != nil {
		return "", fmt.Errorf("server: %w", err)
	}
	if string(got) != banner {
		return "", fmt.Errorf("read %q, want %q", got, banner)
	}
	if n != 1 {
		return "", fmt.Errorf("recv_trigger grew by %d, want 1", n)
	}
	return "read before send connected and got the server banner", nil
}

func (r *runner) checkReconnect(f family) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	closed, err := closedPort(f)
	if err != nil {
		return "", err
	}
	fd, err := ulpConnect(f, closed, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if err := disconnect(fd); err != nil {
		return "", err
	}
	if soerr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); soerr != 0 {
		return "", fmt.Errorf("SO_ERROR %v after disconnecting a deferred socket, want none", syscall.Errno(soerr))
	}
	if err := unix.Connect(fd, f.sockaddr(port)); err != nil {
		return "", fmt.Errorf("second connect: %w", err)
	}
	if err := expectNoAccept(l, noAcceptWait); err != nil {
		return "", err
	}
	want := pattern(2000, 7)
	if _, err := writeAll(fd, want, ioTimeout); err != nil {
		return "", err
	}
	c, got, err := acceptRead(l, len(want), ioTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := sameBytes(got, want); err != nil {
		return "", err
	}
	return "connect(closed port), connect(AF_UNSPEC), connect(listener) deferred again, data intact", nil
}

func (r *runner) checkRewrite(f family) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	closed, err := closedPort(f)
	if err != nil {
		return "", err
	}
	if err := writeParam(r.cfg.module, "test_dport_to", port); err != nil {
		return "", err
	}
	defer writeParam(r.cfg.module, "test_dport_to", 0)
	if err := writeParam(r.cfg.module, "test_dport_from", closed); err != nil {
		return "", err
	}
	defer writeParam(r.cfg.module, "test_dport_from", 0)
	fd, err := ulpConnect(f, closed, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	want := pattern(1500, 8)
	n, err := r.counterDelta("rewrites", func() error {
		_, err := writeAll(fd, want, ioTimeout)
		return err
	})
	if err != nil {
		return "", err
	}
	c, got, err := acceptRead(l, len(want), ioTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := sameBytes(got, want); err != nil {
		return "", err
	}
	if p, err := peerPort(fd); err != nil || p != port {
		return "", fmt.Errorf("peer after rewrite: port %d (%v), want %d", p, err, port)
	}
	if n != 1 {
		return "", fmt.Errorf("rewrites grew by %d, want 1", n)
	}
	return fmt.Sprintf("connect to :%d, hook sent the first send to :%d; data intact", closed, port), nil
}

func (r *runner) checkGoDial(f family) (string, error) {
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	d := net.Dialer{
		Timeout: ioTimeout,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_TCP, unix.TCP_ULP, ulpName)
			}); err != nil {
				return err
			}
			return serr
		},
	}
	start := time.Now()
	conn, err := d.Dial(f.network, f.hostport(port))
	if err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	dialTook := time.Since(start)
	if err := expectNoAccept(l, noAcceptWait); err != nil {
		return "", err
	}
	req := "GET / HTTP/1.1\r\nHost: kmesh.test\r\n\r\n"
	served := make(chan error, 1)
	go func() {
		l.SetDeadline(time.Now().Add(ioTimeout))
		c, err := l.Accept()
		if err != nil {
			served <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || line != "GET / HTTP/1.1\r\n" {
			served <- fmt.Errorf("server read request line %q: %v", line, err)
			return
		}
		_, err = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		served <- err
	}()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := conn.Write([]byte(req)); err != nil {
		return "", fmt.Errorf("write request: %w", err)
	}
	resp, err := io.ReadAll(io.LimitReader(conn, 40))
	if err != nil {
		return "", fmt.Errorf("read response: %w", err)
	}
	if err := <-served; err != nil {
		return "", fmt.Errorf("server: %w", err)
	}
	if !strings.HasPrefix(string(resp), "HTTP/1.1 200 OK") || !strings.HasSuffix(string(resp), "ok") {
		return "", fmt.Errorf("response %q", resp)
	}
	return fmt.Sprintf("net.Dialer (non-blocking + epoll) dial took %v, request/response ok", dialTook.Round(time.Millisecond)), nil
}

func (r *runner) checkListenRefused(f family) (string, error) {
	fd, err := ulpSocket(f, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, f.sockaddr(0)); err != nil {
		return "", fmt.Errorf("bind: %w", err)
	}
	err = unix.Listen(fd, 8)
	if err == nil {
		return "", errors.New("listen() allowed on a socket with the ULP (children would inherit it without a module reference)")
	}
	return fmt.Sprintf("listen: %v", err), nil
}

func (r *runner) checkMany(f family) (string, error) {
	const conns = 32
	l, port, err := listen(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	fds := make([]int, 0, conns)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for i := 0; i < conns; i++ {
		fd, err := ulpConnect(f, port, false)
		if err != nil {
			return "", fmt.Errorf("socket %d: %w", i, err)
		}
		fds = append(fds, fd)
	}
	for i, fd := range fds {
		if _, err := unix.Write(fd, []byte{byte(i)}); err != nil {
			return "", fmt.Errorf("socket %d: first write: %w", i, err)
		}
	}
	seen := make(map[byte]bool)
	for i := 0; i < conns; i++ {
		c, got, err := acceptRead(l, 1, ioTimeout)
		if err != nil {
			return "", fmt.Errorf("connection %d: %w", i, err)
		}
		c.Close()
		seen[got[0]] = true
	}
	if len(seen) != conns {
		return "", fmt.Errorf("got %d distinct connections, want %d", len(seen), conns)
	}
	return fmt.Sprintf("%d deferred sockets, all connected at first write", conns), nil
}

// waitIdle waits until no socket holds the ULP and the module's reference
// count is 0 (sockets are destroyed asynchronously after close).
func (r *runner) waitIdle(timeout time.Duration) (int64, string, error) {
	deadline := time.Now().Add(timeout)
	for {
		active, err := readCounter(r.cfg.module, "active")
		if err != nil {
			return 0, "", err
		}
		f, err := procModule(r.cfg.module)
		if err != nil {
			return 0, "", err
		}
		if f == nil {
			return 0, "", fmt.Errorf("%s vanished from /proc/modules", r.cfg.module)
		}
		if active == 0 && f[2] == "0" {
			return active, f[2], nil
		}
		if time.Now().After(deadline) {
			return active, f[2], fmt.Errorf("after %v: %d sockets hold the ULP, module refcount %s", timeout, active, f[2])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *runner) checkNoLeak() (string, error) {
	if _, _, err := r.waitIdle(15 * time.Second); err != nil {
		return "", err
	}
	deferred, _ := readCounter(r.cfg.module, "deferred")
	connected, _ := readCounter(r.cfg.module, "connected")
	return fmt.Sprintf("all sockets closed: active 0, refcount 0 (deferred %d, connected %d)", deferred, connected), nil
}

func (r *runner) checkRmmodBusy() (string, error) {
	fd, err := ulpConnect(families()[0], 9, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	f, err := procModule(r.cfg.module)
	if err != nil || f == nil {
		return "", fmt.Errorf("%s not in /proc/modules: %v", r.cfg.module, err)
	}
	err = unix.DeleteModule(r.cfg.module, unix.O_NONBLOCK)
	if err == nil {
		return "", errors.New("rmmod succeeded while a socket holds the ULP")
	}
	if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EAGAIN) {
		return "", fmt.Errorf("rmmod while in use: %v, want EBUSY/EAGAIN", err)
	}
	if f2, _ := procModule(r.cfg.module); f2 == nil {
		return "", errors.New("module gone after refused rmmod")
	}
	return fmt.Sprintf("rmmod with a ULP socket open: %v (refcount %s)", err, f[2]), nil
}

func (r *runner) checkRmmod() (string, error) {
	if _, _, err := r.waitIdle(15 * time.Second); err != nil {
		return "", err
	}
	if err := unix.DeleteModule(r.cfg.module, unix.O_NONBLOCK); err != nil {
		return "", fmt.Errorf("rmmod after closing all sockets: %w", err)
	}
	f, err := procModule(r.cfg.module)
	if err != nil {
		return "", err
	}
	if f != nil {
		return "", fmt.Errorf("%s still in /proc/modules: %v", r.cfg.module, f)
	}
	if _, err := os.Stat(moduleDir(r.cfg.module)); !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s still present (%v)", moduleDir(r.cfg.module), err)
	}
	return "rmmod ok; gone from /proc/modules and /sys/module", nil
}

func (r *runner) checkULPGone() (string, error) {
	fd, err := plainSocket(families()[0], false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	err = unix.SetsockoptString(fd, unix.SOL_TCP, unix.TCP_ULP, ulpName)
	if err == nil {
		return "", errors.New("TCP_ULP kmesh_defer still accepted after rmmod")
	}
	return fmt.Sprintf("TCP_ULP %s after rmmod: %v", ulpName, err), nil
}
