package testnet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"kmesh.dev/kmesh/builder"
	"kmesh.dev/kmesh/probe"
)

// Objects builds the data-plane BPF objects with real clang (make -C bpf,
// CLANG overrides clang-19) for the given features and returns their
// directory. Builds are shared by the tests of one test binary; call
// RemoveObjects from TestMain. KMESH_BPF_DIR, when set, is returned instead
// for the default features (DefaultFeatures).
func Objects(t testing.TB, f probe.Features) string {
	t.Helper()
	header := builder.FeatureHeader(&probe.Record{Mode: probe.ModeCompat, Features: f})
	if dir := os.Getenv("KMESH_BPF_DIR"); dir != "" && string(header) == string(builder.FeatureHeader(&probe.Record{Mode: probe.ModeCompat, Features: DefaultFeatures()})) {
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

// DefaultFeatures are the features of a current kernel (this machine's).
func DefaultFeatures() probe.Features {
	return probe.Features{NetnsCookie: true, SkStorage: true, IPv6: true}
}

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
	clang := os.Getenv("CLANG")
	if clang == "" {
		clang = "clang-19"
	}
	if _, err := exec.LookPath(clang); err != nil {
		return "", fmt.Errorf("clang %q not found (make deps installs clang-19; or set CLANG, or KMESH_BPF_DIR): %w", clang, err)
	}
	if objRoot == "" {
		d, err := os.MkdirTemp("", "kmesh-test-bpf-")
		if err != nil {
			return "", err
		}
		objRoot = d
	}
	base := filepath.Join(objRoot, key)
	feat, out := filepath.Join(base, "gen"), filepath.Join(base, "bpf")
	if err := os.MkdirAll(feat, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(feat, builder.FeatureHeaderName), header, 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command("make", "-s", "-C", filepath.Join(repoRoot(), "bpf"), "OUT="+out, "FEATURES_DIR="+feat, "CLANG="+clang)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", cmd, err, b)
	}
	return out, nil
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}
