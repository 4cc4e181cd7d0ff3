package netns

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// TestAddrs: a namespace's own addresses, IPv4 and IPv6, without loopback
// (lo is up) and without link-local ones.
func TestAddrs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (netns); run go test as root")
	}
	name := fmt.Sprintf("kmaddrs-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	for _, args := range [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", "a0", "type", "veth", "peer", "name", "a1"},
		{"-n", name, "addr", "add", "10.204.0.1/24", "dev", "a0"},
		{"-n", name, "addr", "add", "fd00:204::1/64", "dev", "a0", "nodad"},
		{"-n", name, "link", "set", "a0", "up"},
		{"-n", name, "link", "set", "a1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
		if args[0] == "netns" {
			t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		}
	}
	p, err := Path(name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Addrs(p)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	want := []netip.Addr{netip.MustParseAddr("10.204.0.1"), netip.MustParseAddr("fd00:204::1")}
	if !slices.Equal(got, want) {
		t.Errorf("Addrs = %v, want %v (no loopback, no link-local)", got, want)
	}
	if _, err := Addrs("/nonexistent/ns"); err == nil {
		t.Error("Addrs of a missing namespace: no error")
	}
}
