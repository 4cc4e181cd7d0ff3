package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"kmesh.dev/kmesh/builder"
)

// skmsg is the same-node acceleration experiment (testdata/skmsg/skmsg.c):
// sockops puts the established sockets of the client and backend
// namespaces into a sockhash, sk_msg redirects each send to the peer
// socket. It runs only in the case kmesh-skmsg, on top of kmesh's rewrite,
// to decide whether building it into bpf/ pays.
type skmsg struct {
	coll    *ebpf.Collection
	cookies []uint64
}

// startSkmsg compiles and loads the experiment and attaches it at the
// cgroup2 root cg (it acts only on namespaces enabled with on).
func startSkmsg(b *testing.B, cg string, cookies ...uint64) *skmsg {
	b.Helper()
	dir := b.TempDir()
	if _, err := builder.CompileBPF(context.Background(), builder.BPFOptions{SrcDir: filepath.Join("testdata", "skmsg"),
		OutDir: filepath.Join(dir, "obj"), GenDir: filepath.Join(dir, "gen"), FeatureHeader: []byte("/* no features */\n"), Jobs: 1}); err != nil {
		b.Fatal(err)
	}
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(dir, "obj", "skmsg.o"))
	if err != nil {
		b.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatalf("load the sockops/sk_msg experiment: %v", err)
	}
	b.Cleanup(coll.Close)
	socks := coll.Maps["km_bench_socks"]
	verdict := coll.Programs["km_bench_skmsg"]
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: socks.FD(), Program: verdict, Attach: ebpf.AttachSkMsgVerdict}); err != nil {
		b.Fatalf("attach sk_msg verdict: %v", err)
	}
	b.Cleanup(func() {
		_ = link.RawDetachProgram(link.RawDetachProgramOptions{Target: socks.FD(), Program: verdict, Attach: ebpf.AttachSkMsgVerdict})
	})
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupSockOps, Program: coll.Programs["km_bench_sockops"]})
	if err != nil {
		b.Fatalf("attach sockops at %s: %v", cg, err)
	}
	b.Cleanup(func() { l.Close() })
	return &skmsg{coll: coll, cookies: cookies}
}

// on makes the programs act on the namespaces (new connections only).
func (s *skmsg) on(b *testing.B, enable bool) {
	b.Helper()
	m := s.coll.Maps["km_bench_ns"]
	for _, c := range s.cookies {
		var err error
		if enable {
			err = m.Update(c, uint32(0), ebpf.UpdateAny)
		} else if err = m.Delete(c); errors.Is(err, ebpf.ErrKeyNotExist) {
			err = nil
		}
		if err != nil {
			b.Fatalf("experiment namespaces: %v", err)
		}
	}
}

// accelerated counts the sockets in the sockhash.
func (s *skmsg) accelerated() int {
	var k [16]byte
	var v uint64
	n := 0
	it := s.coll.Maps["km_bench_socks"].Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n
}

// checkSkmsg proves the experiment is in the path: with it on, an HTTP
// request to the VIP on one connection gets its answer while both ends of
// the connection are in the sockhash (the sends were redirected), and
// with it off no socket is added.
func (tp *topo) checkSkmsg(b *testing.B, s *skmsg) {
	b.Helper()
	tp.setEnrolled(b, true)
	defer tp.setEnrolled(b, false)
	for _, enable := range []bool{true, false} {
		s.on(b, enable)
		conn, err := tp.client.Dial("tcp", vipAddr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fmt.Fprintf(conn, "GET /echo?size=16 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			b.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			b.Fatalf("request through the experiment (on=%v): %q %v", enable, buf[:n], err)
		}
		got := s.accelerated()
		conn.Close()
		// closed sockets leave the sockhash (the backend's end when fortio
		// sees the close)
		for deadline := time.Now().Add(2 * time.Second); s.accelerated() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		switch {
		case enable && got != 2:
			b.Fatalf("sockops/sk_msg on: %d sockets in the sockhash during the connection, want 2 (both ends)", got)
		case !enable && got != 0:
			b.Fatalf("sockops/sk_msg off: %d sockets in the sockhash, want 0", got)
		}
	}
}
