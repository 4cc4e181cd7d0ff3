package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadLimited(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "b.yaml")
	want := bytes.Repeat([]byte("static_resources: {}\n"), 50000) // 1 MB
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readLimited(p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("readLimited: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	if cap(got) > len(want)+bytes.MinRead {
		t.Errorf("buffer of %d bytes for a %d-byte file: not sized from the file", cap(got), len(want))
	}

	// Files without a size (procfs) are read whole too.
	got, err = readLimited("/proc/self/status")
	if err != nil || !bytes.Contains(got, []byte("VmRSS:")) {
		t.Errorf("readLimited(/proc/self/status): %q, %v", got, err)
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxConfigBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readLimited(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("readLimited(%d bytes) = %v, want too large", MaxConfigBytes+1, err)
	}
	exact := filepath.Join(dir, "exact.yaml")
	if err := os.WriteFile(exact, make([]byte, MaxConfigBytes), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := readLimited(exact); err != nil || len(got) != MaxConfigBytes {
		t.Errorf("readLimited(%d bytes) = %d bytes, %v", MaxConfigBytes, len(got), err)
	}
}
