package loader

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/daemon/netns"
)

func uniq() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// compile builds testdata/probe_counter.c into dir/<name>.o with clang-19.
func compile(t *testing.T, dir, name string) { compileSrc(t, "testdata/probe_counter.c", dir, name) }

func compileSrc(t *testing.T, src, dir, name string) {
	t.Helper()
	out, err := exec.Command("clang-19", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I", multiarchInclude(),
		"-c", src, "-o", filepath.Join(dir, name+".o")).CombinedOutput()
	if err != nil {
		t.Fatalf("clang-19 (make deps installs it): %v\n%s", err, out)
	}
}

// testNetns creates a network namespace with lo up and returns its path.
func testNetns(t *testing.T) string {
	t.Helper()
	name := "kmesh-lt-" + uniq()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	p, err := netns.Path(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// connectIn opens (and closes) one TCP connection to a closed loopback port
// inside the namespace; the connect4 hook runs either way.
func connectIn(t *testing.T, ns string) {
	t.Helper()
	err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp4", "127.0.0.1:9", time.Second)
		if err == nil {
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func counter(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	var v uint64
	if err := m.Lookup(uint32(1), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLoadAttachAdoptUninstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	objDir := t.TempDir()
	compile(t, objDir, "a")
	compile(t, objDir, "b") // a second object sharing the map by name
	base := t.TempDir()
	cfg := Config{ObjectDir: objDir, BPFFSPath: filepath.Join(base, "bpffs"), Cgroup2Path: filepath.Join(base, "cgroup2")}
	t.Cleanup(func() { Uninstall(cfg) })
	ns := testNetns(t)
	cookie, err := netns.Cookie(ns)
	if err != nil {
		t.Fatal(err)
	}

	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, fs := range []struct{ dir, typ string }{{cfg.BPFFSPath, "bpf"}, {cfg.Cgroup2Path, "cgroup2"}} {
		if ok, _ := mountedAs(fs.dir, fs.typ); !ok {
			t.Fatalf("%s not mounted at %s", fs.typ, fs.dir)
		}
	}
	m := d.Maps["test_counter"]
	if m == nil || len(d.Maps) != 1 {
		t.Fatalf("maps = %v", d.Maps)
	}
	if err := m.Put(uint32(0), cookie); err != nil {
		t.Fatal(err)
	}
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	connectIn(t, ns)
	// two objects' programs, one shared map: each connect counts twice
	if got := counter(t, m); got != 2 {
		t.Fatalf("counter after one connect = %d, want 2 (both programs, shared map)", got)
	}
	if links := d.Links(); len(links) != 2 || links[0].Adopted || !strings.HasPrefix(links[0].Pin, cfg.pinRoot()) {
		t.Fatalf("links = %+v", links)
	}
	linkIDs := pinnedLinkIDs(t, cfg)

	// SIGTERM: the daemon closes everything, the pins keep the programs attached
	d.Close()
	connectIn(t, ns)
	held, err := ebpf.LoadPinnedMap(cfg.mapPin("test_counter"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if got := counter(t, held); got != 4 {
		t.Fatalf("counter after close + connect = %d, want 4 (pinned links keep working)", got)
	}

	// restart: maps adopted with their contents, links adopted (same link IDs)
	d2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := d2.AdoptedMaps(); len(got) != 1 || got[0] != "test_counter" {
		t.Fatalf("adopted maps = %v", got)
	}
	if got := counter(t, d2.Maps["test_counter"]); got != 4 {
		t.Fatalf("adopted counter = %d, want 4", got)
	}
	if err := d2.Attach(); err != nil {
		t.Fatal(err)
	}
	for _, l := range d2.Links() {
		if !l.Adopted {
			t.Errorf("link %s not adopted", l.Program)
		}
	}
	if got := pinnedLinkIDs(t, cfg); !equal(got, linkIDs) {
		t.Errorf("link IDs changed across restart: %v -> %v (detach/re-attach gap)", linkIDs, got)
	}
	connectIn(t, ns)
	if got := counter(t, held); got != 6 {
		t.Fatalf("counter after restart = %d, want 6", got)
	}
	d2.Close()

	// uninstall: nothing left, programs detached, mounts gone
	if err := Uninstall(cfg); err != nil {
		t.Fatal(err)
	}
	connectIn(t, ns)
	if got := counter(t, held); got != 6 {
		t.Errorf("counter after uninstall = %d, want 6 (programs must be detached)", got)
	}
	// Detached at once (the counter above); the kernel frees the link
	// objects after an RCU grace period, which takes a while under TCG.
	for _, id := range linkIDs {
		if !gone(func() bool {
			l, err := link.NewFromID(id)
			if err == nil {
				l.Close()
			}
			return err != nil
		}) {
			t.Errorf("link %d still exists 10 s after uninstall", id)
		}
	}
	ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(base))
	if len(ms) > 0 {
		t.Errorf("mounts left: %v", ms)
	}
	if err := Uninstall(cfg); err != nil {
		t.Errorf("second uninstall: %v", err)
	}
}

// TestMapAttachedAndStale: an sk_msg program is attached to its object's
// sockhash and pinned, replaced on restart, and detached with its object's
// cgroup link when a later version no longer has the object.
func TestMapAttachedAndStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	objDir := t.TempDir()
	compile(t, objDir, "a")
	compileSrc(t, "testdata/sock_pair.c", objDir, "pair")
	base := t.TempDir()
	cfg := Config{ObjectDir: objDir, BPFFSPath: filepath.Join(base, "bpffs"), Cgroup2Path: filepath.Join(base, "cgroup2")}
	t.Cleanup(func() { Uninstall(cfg) })

	verdictProg := func() ebpf.ProgramID {
		t.Helper()
		p, err := ebpf.LoadPinnedProgram(cfg.progPin("pair/test_verdict"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		info, _ := p.Info()
		id, _ := info.ID()
		return id
	}
	run := func(wantReplaced bool) {
		t.Helper()
		links := loadAttachClose(t, cfg)
		var onMap []LinkInfo
		for _, l := range links {
			if l.Map != "" {
				onMap = append(onMap, l)
			}
		}
		if len(links) != 3 || len(onMap) != 1 || onMap[0].Map != "test_socks" || onMap[0].Attach != ebpf.AttachSkMsgVerdict.String() ||
			onMap[0].Adopted != wantReplaced || onMap[0].Pin != cfg.progPin("pair/test_verdict") {
			t.Fatalf("links %+v", links)
		}
	}
	run(false)
	first := verdictProg()
	run(true)
	if second := verdictProg(); second == first {
		t.Errorf("restart kept program %d on the map, want the new load", first)
	}
	held, err := ebpf.LoadPinnedProgram(cfg.progPin("pair/test_verdict"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	sockopsLinks := pinnedLinkIDs(t, cfg)

	// a version without pair.o: its link and program go
	if err := os.Remove(filepath.Join(objDir, "pair.o")); err != nil {
		t.Fatal(err)
	}
	loadAttachClose(t, cfg)
	if _, err := os.Stat(cfg.progPin("pair/test_verdict")); !os.IsNotExist(err) {
		t.Errorf("stale program pin: %v", err)
	}
	if _, err := os.Stat(cfg.linkPin("pair/test_sockops")); !os.IsNotExist(err) {
		t.Errorf("stale link pin: %v", err)
	}
	if got := pinnedLinkIDs(t, cfg); len(got) != 1 || len(sockopsLinks) != 2 {
		t.Errorf("links before %v, after dropping pair.o %v: want only connect4's", sockopsLinks, got)
	}
	// the sockhash (still pinned: maps outlive their objects until
	// uninstall) no longer has the program: detaching it again fails
	m, err := ebpf.LoadPinnedMap(cfg.mapPin("test_socks"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: m.FD(), Program: held, Attach: ebpf.AttachSkMsgVerdict}); err == nil {
		t.Error("the dropped sk_msg program was still attached to its map")
	}
	if err := Uninstall(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.pinRoot()); !os.IsNotExist(err) {
		t.Errorf("pin root after uninstall: %v", err)
	}
}

// TestUninstallDetachesSkMsg: uninstall detaches the sk_msg program from
// its socket map, found among the pinned maps.
func TestUninstallDetachesSkMsg(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	objDir := t.TempDir()
	compileSrc(t, "testdata/sock_pair.c", objDir, "pair")
	base := t.TempDir()
	cfg := Config{ObjectDir: objDir, BPFFSPath: filepath.Join(base, "bpffs"), Cgroup2Path: filepath.Join(base, "cgroup2")}
	t.Cleanup(func() { Uninstall(cfg) })
	loadAttachClose(t, cfg)
	prog, err := ebpf.LoadPinnedProgram(cfg.progPin("pair/test_verdict"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	m, err := ebpf.LoadPinnedMap(cfg.mapPin("test_socks"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := Uninstall(cfg); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: m.FD(), Program: prog, Attach: ebpf.AttachSkMsgVerdict}); err == nil {
		t.Error("the sk_msg program was still attached to its map after uninstall")
	}
}

// loadAttachClose is one daemon run: load, attach, exit. It returns the
// run's links.
func loadAttachClose(t *testing.T, cfg Config) []LinkInfo {
	t.Helper()
	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	return d.Links()
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(Config{ObjectDir: t.TempDir(), BPFFSPath: t.TempDir(), Cgroup2Path: t.TempDir()})
	if !errors.Is(err, ErrNoObjects) || !strings.Contains(err.Error(), "make bpf") {
		t.Errorf("empty object dir: %v", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "garbage.o"), []byte("not an ELF"), 0o644)
	base := t.TempDir()
	cfg := Config{ObjectDir: dir, BPFFSPath: filepath.Join(base, "b"), Cgroup2Path: filepath.Join(base, "c")}
	t.Cleanup(func() { Uninstall(cfg) })
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), "garbage.o") {
		t.Errorf("garbage object: %v", err)
	}
	// a failed load leaves no mount behind
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(base)); len(ms) > 0 {
		t.Errorf("failed load left mounts: %v", ms)
	}
}

func pinnedLinkIDs(t *testing.T, cfg Config) []link.ID {
	t.Helper()
	pins, _ := filepath.Glob(filepath.Join(cfg.pinRoot(), "links", "*"))
	var ids []link.ID
	for _, p := range pins {
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
		l.Close()
	}
	return ids
}

func equal(a, b []link.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// multiarchInclude is where Debian keeps asm/types.h for the host's arch.
func multiarchInclude() string {
	if runtime.GOARCH == "arm64" {
		return "/usr/include/aarch64-linux-gnu"
	}
	return "/usr/include/x86_64-linux-gnu"
}

// gone polls cond for up to 10 s.
func gone(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestCgroup2RootNote: the hierarchy's root passes; a cgroup below it (what
// a private cgroup namespace roots cgroup2 at) gets a note naming the fix.
func TestCgroup2RootNote(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root")
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	if note := cgroup2RootNote(dir); note != "" {
		t.Errorf("root of a fresh cgroup2 mount: %q, want no note", note)
	}
	sub := filepath.Join(dir, "kmesh-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(sub) })
	if note := cgroup2RootNote(sub); !strings.Contains(note, "not the root of the cgroup2 hierarchy") || !strings.Contains(note, "cgroupns=host") {
		t.Errorf("a cgroup below the root: %q, want a note naming the fix", note)
	}
}
