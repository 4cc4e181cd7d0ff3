package builder

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/probe"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("privileged test: run as root (verifier loads)")
	}
}

func quiet() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// hostRecord probes this machine for real.
func hostRecord(t *testing.T) *probe.Record {
	t.Helper()
	rec, err := probe.Decide(probe.Probe(probe.Config{Live: true}), probe.ModeAuto, time.Now())
	if err != nil {
		t.Fatalf("probe this host: %v", err)
	}
	return rec
}

// srcTree copies the repository's bpf/ and kmod/ sources into a temp source
// dir, plus extra files in bpf/.
func srcTree(t *testing.T, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("sh", "-c", "cp -r ../bpf "+dir+"/bpf && mkdir "+dir+"/kmod && cp ../kmod/Kbuild ../kmod/*.[ch] "+dir+"/kmod").CombinedOutput(); err != nil {
		t.Fatalf("copy sources: %v %s", err, out)
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dir, "bpf", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuildMissThenHit(t *testing.T) {
	requireRoot(t)
	rec := hostRecord(t)
	cfg := Config{Record: rec, SrcDir: "..", CacheDir: t.TempDir(), Log: quiet()}
	r1, err := Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r1.CacheHit || len(r1.Objects) == 0 || len(r1.Verify) == 0 || !r1.Verify[0].OK || r1.PeakRSSBytes == 0 || r1.Jobs < 1 {
		t.Fatalf("first build: %+v", r1)
	}
	if _, err := os.Stat(filepath.Join(r1.ObjectsDir, "connect.o")); err != nil {
		t.Fatal(err)
	}
	var onDisk Report
	b, err := os.ReadFile(filepath.Join(filepath.Dir(r1.ObjectsDir), ReportName))
	if err != nil || json.Unmarshal(b, &onDisk) != nil || onDisk.CacheKey != r1.CacheKey {
		t.Fatalf("build report next to the objects: %v %s", err, b)
	}
	// a hit compiles nothing: only clang's --version (part of the key) may
	// run, so give an absolute clang and no PATH for anything else
	cfg.Clang = mustLookPath(t, "clang-19")
	t.Setenv("PATH", "/nonexistent")
	r2, err := Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.CacheHit || r2.ObjectsDir != r1.ObjectsDir || len(r2.Objects) != 0 || r2.CacheKey != r1.CacheKey {
		t.Fatalf("second build: %+v", r2)
	}
	// another feature set is another entry
	rec2 := *rec
	rec2.Features.SkStorage = !rec.Features.SkStorage
	cfg.Record = &rec2
	r3, err := Build(context.Background(), cfg)
	if err != nil || r3.CacheHit || r3.CacheKey == r1.CacheKey {
		t.Fatalf("other features: hit %v key %s err %v", r3.CacheHit, r3.CacheKey, err)
	}
}

func mustLookPath(t *testing.T, n string) string {
	p, err := exec.LookPath(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCorruptEntriesAreRebuilt(t *testing.T) {
	requireRoot(t)
	rec := hostRecord(t)
	for name, spoil := range map[string]func(entry string){
		"object flipped": func(e string) {
			p := filepath.Join(e, "bpf", "connect.o")
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0xff
			os.WriteFile(p, b, 0o644)
		},
		"object removed": func(e string) { os.Remove(filepath.Join(e, "bpf", "connect.o")) },
		"extra file":     func(e string) { os.WriteFile(filepath.Join(e, "bpf", "evil.o"), []byte("x"), 0o644) },
		"manifest edited": func(e string) {
			p := filepath.Join(e, manifestName)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"format": "1"`, `"format": "2"`, 1)), 0o644)
		},
		"manifest garbage": func(e string) { os.WriteFile(filepath.Join(e, manifestName), []byte("{"), 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := Config{Record: rec, SrcDir: "..", CacheDir: t.TempDir(), Log: quiet()}
			r1, err := Build(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			spoil(filepath.Dir(r1.ObjectsDir))
			r2, err := Build(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r2.CacheHit || !strings.Contains(r2.CacheNote, "corrupt") || len(r2.Objects) == 0 {
				t.Fatalf("spoiled entry was used: hit %v note %q", r2.CacheHit, r2.CacheNote)
			}
			if r3, err := Build(context.Background(), cfg); err != nil || !r3.CacheHit {
				t.Fatalf("rebuilt entry not a hit: %+v %v", r3, err)
			}
		})
	}
}

// With the host's bpf.h unusable, the UAPI types come from the kernel's BTF.
func TestBuildFromBTFHeaders(t *testing.T) {
	requireRoot(t)
	rec := hostRecord(t)
	rec.Inputs.BPFHeaderUsable = false
	r, err := Build(context.Background(), Config{Record: rec, SrcDir: "..", CacheDir: t.TempDir(), Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	gen := filepath.Join(filepath.Dir(r.ObjectsDir), "gen")
	h, err := os.ReadFile(filepath.Join(gen, FeatureHeaderName))
	if err != nil || !strings.Contains(string(h), "#define KMESH_USE_VMLINUX_H 1") {
		t.Fatalf("feature header: %v\n%s", err, h)
	}
	// only the types bpf/ uses: a few dozen KB, not the whole kernel's 2.8 MB
	vh, err := os.ReadFile(filepath.Join(gen, UAPIHeaderName))
	if err != nil || len(vh) > 256<<10 {
		t.Fatalf("%s: %d bytes, %v", UAPIHeaderName, len(vh), err)
	}
	for _, want := range []string{"struct bpf_sock_addr {", "struct bpf_sock {", "BPF_MAP_TYPE_SK_STORAGE", "BPF_F_NO_PREALLOC", "BPF_SK_STORAGE_GET_F_CREATE", "typedef __u32"} {
		if !strings.Contains(string(vh), want) {
			t.Errorf("%s lacks %q", UAPIHeaderName, want)
		}
	}
	if strings.Count(string(vh), "BPF_F_NO_PREALLOC") != 1 || !strings.Contains(string(vh), "#ifndef KMESH_UAPI_FLAGS") {
		t.Errorf("%s: the UAPI flags are not there once, guarded", UAPIHeaderName)
	}
	if strings.Contains(string(vh), "struct task_struct {") {
		t.Errorf("%s holds kernel-internal types (struct task_struct)", UAPIHeaderName)
	}
	if !r.Verify[0].OK {
		t.Fatalf("verify: %+v", r.Verify)
	}
}

func TestBuildErrors(t *testing.T) {
	requireRoot(t)
	rec := hostRecord(t)
	_, err := Build(context.Background(), Config{Record: rec, SrcDir: "..", CacheDir: t.TempDir(), Clang: "clang-404", Log: quiet()})
	if !errors.Is(err, ErrNoCompiler) || !strings.Contains(err.Error(), "--clang") {
		t.Errorf("no compiler: %v", err)
	}
	src := srcTree(t, map[string]string{"broken.c": "int x = ;\n"})
	_, err = Build(context.Background(), Config{Record: rec, SrcDir: src, CacheDir: t.TempDir(), Log: quiet()})
	if !errors.Is(err, ErrCompile) || !strings.Contains(err.Error(), "broken.c") || !strings.Contains(err.Error(), "error: expected expression") {
		t.Errorf("compile error: %v", err)
	}
	_, err = Build(context.Background(), Config{Record: rec, SrcDir: t.TempDir(), CacheDir: t.TempDir(), Log: quiet()})
	if err == nil || !strings.Contains(err.Error(), "hash sources") && !errors.Is(err, ErrNoSources) {
		t.Errorf("no sources: %v", err)
	}
}

// An enhanced object the verifier rejects makes the build compat, with the
// verifier's lines in the report.
func TestEnhancedVerifierFallback(t *testing.T) {
	requireRoot(t)
	rec := enhancedRecord(t)
	bad := `#include "kmesh_uapi.h"
#include <bpf/bpf_helpers.h>
SEC("cgroup/connect4")
int bad(struct bpf_sock_addr *ctx)
{
	return *(int *)((char *)ctx + 4000); /* out of the context: rejected */
}
char _license[] SEC("license") = "GPL";
`
	src := srcTree(t, map[string]string{"enhanced_bad.c": bad})
	r, err := Build(context.Background(), Config{Record: rec, SrcDir: src, CacheDir: t.TempDir(), Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != probe.ModeCompat || len(r.Fallbacks) != 1 || !strings.Contains(r.Fallbacks[0], "enhanced_bad") {
		t.Fatalf("mode %s fallbacks %q", r.Mode, r.Fallbacks)
	}
	if _, err := os.Stat(filepath.Join(r.ObjectsDir, "enhanced_bad.o")); err == nil {
		t.Error("the compat build contains the enhanced object")
	}
	if !strings.Contains(r.Fallbacks[0], "invalid bpf_context access") && !strings.Contains(r.Fallbacks[0], "verifier") {
		t.Errorf("fallback reason lacks the verifier's word: %q", r.Fallbacks[0])
	}
}

func TestReadOnlyCacheBuildsUncached(t *testing.T) {
	requireRoot(t)
	rec := hostRecord(t)
	ro := t.TempDir()
	if err := unix.Mount(ro, ro, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
	if err := unix.Mount("", ro, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	r, err := Build(context.Background(), Config{Record: rec, SrcDir: "..", CacheDir: filepath.Join(ro, "cache"), WorkDir: t.TempDir(), Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if r.CacheHit || !strings.Contains(r.CacheNote, "not writable") || !strings.Contains(r.CacheNote, "read-only") || !r.Verify[0].OK {
		t.Fatalf("read-only cache: %+v", r)
	}
}

func TestPruneKeepsMostRecent(t *testing.T) {
	c := &Cache{Dir: t.TempDir(), Keep: 2}
	var keys []string
	for i := 0; i < 4; i++ {
		k := strings.Repeat(string(rune('a'+i)), 64)
		if _, err := c.Store(k, nil, func(dir string) error { return os.WriteFile(filepath.Join(dir, "f"), []byte{byte(i)}, 0o644) }); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(time.Duration(i-10) * time.Minute)
		os.Chtimes(filepath.Join(c.Dir, k, manifestName), old, old)
		keys = append(keys, k)
	}
	if _, err := c.Lookup(keys[0]); err != nil { // using the oldest makes it recent
		t.Fatal(err)
	}
	removed, err := c.Prune()
	if err != nil || len(removed) != 2 {
		t.Fatalf("pruned %v %v", removed, err)
	}
	for _, k := range []string{keys[0], keys[3]} {
		if _, err := c.Lookup(k); err != nil {
			t.Errorf("kept entry %s: %v", k[:4], err)
		}
	}
	if _, err := c.Lookup(keys[1]); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("pruned entry: %v", err)
	}
}

func TestJobs(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		ncpu  int
		want  int
	}{{0, 2, 2}, {800 << 20, 2, 2}, {800 << 20, 8, 3}, {256 << 20, 4, 1}, {64 << 20, 4, 1}, {4 << 30, 0, 1}} {
		if got := Jobs(tc.limit, tc.ncpu, BPFJobBytes); got != tc.want {
			t.Errorf("Jobs(%d MiB, %d) = %d, want %d", tc.limit>>20, tc.ncpu, got, tc.want)
		}
	}
}
