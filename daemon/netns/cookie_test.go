package netns

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The BPF fallback (for kernels before 5.14) must give exactly what
// SO_NETNS_COOKIE gives, for the process's own namespace and for a fresh
// one (whose cookie neither path had read before), and leave no program
// attached.
func TestCookieFromBPFMatchesSockopt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (BPF, netns); run go test as root")
	}
	name := fmt.Sprintf("kmnetns-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	fresh, err := Path(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fresh, "/proc/self/ns/net"} {
		// fresh namespace: the BPF path reads first (5.10 assigns cookies lazily)
		viaBPF, err := CookieFromBPF(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		viaSockopt, err := SockoptCookie(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if viaBPF != viaSockopt || viaBPF == 0 {
			t.Errorf("%s: BPF says %d, SO_NETNS_COOKIE says %d", p, viaBPF, viaSockopt)
		}
		if c, err := Cookie(p); err != nil || c != viaSockopt {
			t.Errorf("%s: Cookie = %d, %v; want %d", p, c, err, viaSockopt)
		}
	}
	own, _ := SockoptCookie("/proc/self/ns/net")
	other, _ := SockoptCookie(fresh)
	if own == other {
		t.Errorf("two namespaces with cookie %d", own)
	}
	cg, cleanup, err := ownCgroup2()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	out, err := exec.Command("bpftool", "cgroup", "show", cg).CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool cgroup show %s: %v %s", cg, err, out)
	}
	if strings.Contains(string(out), "km_ns_probe") {
		t.Errorf("probe program still attached to %s:\n%s", cg, out)
	}
}
