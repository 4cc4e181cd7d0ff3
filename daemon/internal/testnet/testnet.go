package testnet

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/daemon/netns"
)

// RequireRoot fails (never skips) a test that is not run as root, and lifts
// RLIMIT_MEMLOCK as the daemon does (kernels before 5.11 charge BPF maps to
// it; the QEMU guests' 5.10 runs these tests).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (BPF, netns, cgroups); run go test as root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("lift RLIMIT_MEMLOCK: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("iproute2 (ip) not found: run make deps")
	}
}

// ID returns a short random identifier for unique names.
func ID(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Run runs a command and fails the test when it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Netns is a named network namespace created for a test.
type Netns struct {
	Name string
	Path string
}

// NewNetns creates a namespace with lo up; it is deleted at cleanup.
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	Run(t, "ip", "netns", "add", name)
	n := &Netns{Name: name, Path: filepath.Join(netns.RunDir, name)}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	n.IP(t, "link", "set", "lo", "up")
	return n
}

// IP runs `ip -n <ns> args...`.
func (n *Netns) IP(t testing.TB, args ...string) {
	t.Helper()
	Run(t, append([]string{"ip", "-n", n.Name}, args...)...)
}

// Do runs fn on an OS thread inside n; sockets fn creates belong to n.
func (n *Netns) Do(fn func() error) error { return netns.Do(n.Path, fn) }

// Cookie returns n's netns cookie.
func (n *Netns) Cookie(t testing.TB) uint64 {
	t.Helper()
	c, err := netns.Cookie(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Serve starts a TCP server in n on addr that answers every connection with
// reply (default: its listen address) and a newline, then closes it.
func (n *Netns) Serve(t testing.TB, network, addr, reply string) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	if reply == "" {
		reply = ln.Addr().String()
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, reply+"\n")
				c.Close()
			}()
		}
	}()
}

// Fetch opens count TCP connections to addr from n, one after the other,
// and returns each server's reply.
func (n *Netns) Fetch(addr string, count int) ([]string, error) {
	out := make([]string, 0, count)
	err := n.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		for i := 0; i < count; i++ {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return fmt.Errorf("connection %d to %s: %w", i, addr, err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				return fmt.Errorf("connection %d to %s: read: %w", i, addr, err)
			}
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
		return nil
	})
	return out, err
}

// Dial opens one connection from n and returns it open.
func (n *Netns) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).Dial(network, addr)
		return err
	})
	return c, err
}

// Cgroup is a child cgroup of a private cgroup2 mount (the machine's
// hierarchy) that the test process moves into for the test's duration, so
// programs attached to it see only this process's sockets.
type Cgroup struct {
	Path string
}

// NewCgroup creates the child cgroup, moves the test process into it and
// moves it back at cleanup.
func NewCgroup(t testing.TB, name string) *Cgroup {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("none", mnt, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2 on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	orig, err := cgroup2.PidGroupPath(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(mnt, name)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(cg); err != nil {
			t.Errorf("remove cgroup %s: %v", cg, err)
		}
	})
	pid := []byte(fmt.Sprint(os.Getpid()))
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), pid, 0); err != nil {
		t.Fatalf("move test process into %s: %v", cg, err)
	}
	t.Cleanup(func() {
		back := filepath.Join(mnt, orig, "cgroup.procs")
		if err := os.WriteFile(back, pid, 0); err != nil {
			t.Errorf("move test process back to %s: %v", orig, err)
		}
	})
	return &Cgroup{Path: cg}
}

// ServeEcho starts a TCP server in n on addr that keeps each connection open
// and answers every line with "<addr> <line>", so a test can tell which
// backend a long-lived connection reached and that it still works.
func (n *Netns) ServeEcho(t testing.TB, addr string) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := io.WriteString(c, addr+" "+sc.Text()+"\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// Echo sends line on c and returns the reply.
func Echo(c net.Conn, line string) (string, error) {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	r, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(r, "\n"), err
}

// Tally counts the replies of Fetch by value.
func Tally(replies []string) map[string]int {
	m := map[string]int{}
	for _, r := range replies {
		m[r]++
	}
	return m
}

// Within5Sigma fails t unless k successes of n trials lie within 5
// standard deviations of a binomial(n, p) mean (a false alarm about once
// in 1.7 million checks).
func Within5Sigma(t testing.TB, what string, k, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	if dev := math.Abs(float64(k) - mean); dev > 5*sigma {
		t.Errorf("%s: %d of %d, expected %.1f ± %.1f (5σ)", what, k, n, mean, 5*sigma)
	} else {
		t.Logf("%s: %d of %d (expected %.1f, %.1fσ off)", what, k, n, mean, dev/sigma)
	}
}
