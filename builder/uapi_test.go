package builder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// A BTF without the types bpf/ needs, and a file that is not BTF, fail
// with the header, the file and the missing type named.
func TestDeriveUAPIHeaderBadBTF(t *testing.T) {
	dir := t.TempDir()
	u32 := &btf.Typedef{Name: "__u32", Type: &btf.Int{Name: "unsigned int", Size: 4}}
	b, err := btf.NewBuilder([]btf.Type{u32}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small.btf")
	if err := os.WriteFile(small, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, UAPIHeaderName)
	_, err = deriveUAPIHeader(context.Background(), "bpftool", small, out)
	if !errors.Is(err, errUAPIType) || !strings.Contains(err.Error(), "__u8") {
		t.Errorf("BTF without the UAPI types: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.btf")
	if err := os.WriteFile(garbage, []byte("not BTF at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := deriveUAPIHeader(context.Background(), "bpftool", garbage, out); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("garbage BTF: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed derivation left %s behind (%v)", out, err)
	}
	if _, err := deriveUAPIHeader(context.Background(), "bpftool-404", small, out); err == nil || !strings.Contains(err.Error(), "bpftool-404") {
		t.Errorf("no bpftool: %v", err)
	}
}

// The flags written after the BTF subset have the running kernel's values
// (decoding every type of its BTF, which the builder avoids at run time).
func TestUAPIFlagsMatchKernel(t *testing.T) {
	spec, err := btf.LoadSpec("/sys/kernel/btf/vmlinux")
	if err != nil {
		t.Fatal(err)
	}
	kernel := map[string]uint64{}
	for typ, err := range spec.All() {
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := typ.(*btf.Enum); ok {
			for _, v := range e.Values {
				kernel[v.Name] = v.Value
			}
		}
	}
	for _, f := range uapiFlags() {
		v, ok := kernel[f.Name]
		if !ok || v != f.Value {
			t.Errorf("%s = %d here, the kernel's BTF has %d (present %v)", f.Name, f.Value, v, ok)
		}
	}
}
