package testnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmesh.dev/kmesh/builder"
	"kmesh.dev/kmesh/probe"
)

// Objects builds the data-plane BPF objects with real clang through the
// builder (CLANG overrides clang-19) for the given features and returns their
// directory. Builds are shared by the tests of one test binary; call
// RemoveObjects from TestMain. KMESH_BPF_DIR, when set, is returned instead
// for the default features (DefaultFeatures).
func Objects(t testing.TB, f probe.Features) string {
	t.Helper()
	header := builder.FeatureHeader(record(f))
	if dir := os.Getenv("KMESH_BPF_DIR"); dir != "" && string(header) == string(builder.FeatureHeader(record(DefaultFeatures()))) {
		return dir
	}
	objMu.Lock()
	defer objMu.Unlock()
	sum := sha256.Sum256(header)
	key := hex.EncodeToString(sum[:8])
	if dir, ok := objBuilt[key]; ok {
		return dir
	}
	dir, err := buildObjects(header, key)
	if err != nil {
		t.Fatalf("build BPF objects: %v", err)
	}
	objBuilt[key] = dir
	return dir
}

// record is a compat record with features f, compiled against the system's
// linux/bpf.h (make deps installs it).
func record(f probe.Features) *probe.Record {
	return &probe.Record{Mode: probe.ModeCompat, Features: f, Inputs: probe.Inputs{BPFHeaderUsable: true}}
}

// DefaultFeatures are the features of a current kernel (this machine's),
// with same-node acceleration as the running kernel has it: it needs 5.15+
// and more, so 5.10's and 6.1's guests build sockmap.o without programs.
// That one feature is probed, once per test binary.
func DefaultFeatures() probe.Features {
	return probe.Features{NetnsCookie: true, SkStorage: true, IPv6: true, SameNodeAccel: KernelAccelerates()}
}

// KernelAccelerates reports whether the running kernel has what same-node
// acceleration needs (probe.Features.SameNodeAccel of a live probe).
func KernelAccelerates() bool {
	accelOnce.Do(func() {
		rec, _ := probe.Decide(probe.Probe(probe.Config{Live: true}), probe.ModeAuto, time.Now())
		accel = rec != nil && rec.Features.SameNodeAccel
	})
	return accel
}

// KernelAtLeast reports whether the running kernel's release is major.minor
// or newer; a release it cannot read counts as new (tests then expect the
// most).
func KernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return true
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}

var (
	accelOnce sync.Once
	accel     bool
)

// RemoveObjects deletes what Objects built.
func RemoveObjects() {
	objMu.Lock()
	defer objMu.Unlock()
	if objRoot != "" {
		os.RemoveAll(objRoot)
	}
}

var (
	objMu    sync.Mutex
	objRoot  string
	objBuilt = map[string]string{}
)

func buildObjects(header []byte, key string) (string, error) {
	if objRoot == "" {
		d, err := os.MkdirTemp("", "kmesh-test-bpf-")
		if err != nil {
			return "", err
		}
		objRoot = d
	}
	base := filepath.Join(objRoot, key)
	out := filepath.Join(base, "bpf")
	_, err := builder.CompileBPF(context.Background(), builder.BPFOptions{
		SrcDir: filepath.Join(repoRoot(), "bpf"), OutDir: out, GenDir: filepath.Join(base, "gen"),
		FeatureHeader: header, Clang: os.Getenv("CLANG"), Jobs: 2})
	return out, err
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}
