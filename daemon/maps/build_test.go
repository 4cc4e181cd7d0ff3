package maps

import (
	"os"
	"testing"

	"kmesh.dev/kmesh/daemon/internal/testnet"
)

// Test objects: built once per test binary with real clang (testnet.Objects),
// or taken from KMESH_BPF_DIR for the default variant.

type variant struct {
	skStorage bool
	noIPv6    bool // KMESH_HAVE_IPV6 0
}

func (v variant) String() string {
	s := "sk_storage=0"
	if v.skStorage {
		s = "sk_storage=1"
	}
	if v.noIPv6 {
		s += ",ipv6=0"
	}
	return s
}

func TestMain(m *testing.M) {
	code := m.Run()
	testnet.RemoveObjects()
	os.Exit(code)
}

// objDir returns a directory holding connect.o for v (built with real clang).
func objDir(t testing.TB, v variant) string {
	t.Helper()
	f := testnet.DefaultFeatures()
	f.SkStorage, f.IPv6 = v.skStorage, !v.noIPv6
	return testnet.Objects(t, f)
}
