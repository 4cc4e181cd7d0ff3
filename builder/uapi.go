package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// UAPIHeaderName is the header CompileBPF derives from the kernel's BTF when
// the host's linux/bpf.h is unusable (bpf/include/kmesh_uapi.h includes it
// under KMESH_USE_VMLINUX_H).
const UAPIHeaderName = "vmlinux.h"

// uapiDerivation names how the header is made; it is part of the cache key,
// so a change here rebuilds the entries that used it.
const uapiDerivation = "btf-subset-1"

// uapiTypes are the kernel types bpf/ and libbpf's bpf_helpers.h use, by
// name. The header holds these and what they reference, nothing else: the
// whole kernel dumped as C (~2.8 MB) costs clang ~35 MiB more and 3x the
// compile time. A source using a kernel type not listed here fails to
// compile with headers from BTF (TestBuildFromBTFHeaders): add it here.
func uapiTypes() (required, optional []string) {
	required = []string{
		"__u8", "__u16", "__u32", "__u64", "__s8", "__s16", "__s32", "__s64", "__be16", "__be32",
		"bpf_sock_addr", "bpf_sock", "bpf_spin_lock", "bpf_map_type", "bpf_func_id",
	}
	optional = []string{
		"__be64", "__le16", "__le32", "__le64", "__wsum", "__sum16",
		"bpf_sock_ops", "sk_msg_md", "__sk_buff", "bpf_attach_type", "bpf_prog_type",
	}
	return required, optional
}

// errUAPIType: the kernel's BTF lacks a type bpf/ needs.
var errUAPIType = errors.New("type missing from the kernel's BTF")

// deriveUAPIHeader writes the UAPI types bpf/ uses, taken from the BTF at
// btfPath, as C into out: the types of uapiTypes and the anonymous enums
// of BPF_ constants (flags such as BPF_F_NO_PREALLOC), with everything they
// reference, are marshalled into a small BTF blob that bpftool prints as C.
func deriveUAPIHeader(ctx context.Context, bpftool, btfPath, out string) (int, error) {
	tool, err := exec.LookPath(bpftool)
	if err != nil {
		return 0, fmt.Errorf("find %s to derive headers from BTF: %w", bpftool, err)
	}
	spec, err := btf.LoadSpec(btfPath)
	if err != nil {
		return 0, fmt.Errorf("derive %s: load BTF %s: %w", UAPIHeaderName, btfPath, err)
	}
	required, optional := uapiTypes()
	var roots []btf.Type
	for i, name := range append(required, optional...) {
		ts, err := spec.AnyTypesByName(name)
		if errors.Is(err, btf.ErrNotFound) && i >= len(required) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("derive %s: %s: %w: %w", UAPIHeaderName, name, errUAPIType, err)
		}
		roots = append(roots, ts...)
	}
	for typ, err := range spec.All() {
		if err != nil {
			return 0, fmt.Errorf("derive %s: read BTF %s: %w", UAPIHeaderName, btfPath, err)
		}
		if e, ok := typ.(*btf.Enum); ok && e.Name == "" && len(e.Values) > 0 && strings.HasPrefix(e.Values[0].Name, "BPF_") {
			roots = append(roots, e)
		}
	}
	b, err := btf.NewBuilder(roots, nil)
	if err != nil {
		return 0, fmt.Errorf("derive %s: collect types: %w", UAPIHeaderName, err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		return 0, fmt.Errorf("derive %s: marshal BTF: %w", UAPIHeaderName, err)
	}
	subset := filepath.Join(filepath.Dir(out), ".uapi.btf")
	if err := os.WriteFile(subset, raw, 0o644); err != nil {
		return 0, fmt.Errorf("derive %s: write BTF subset: %w", UAPIHeaderName, err)
	}
	defer os.Remove(subset)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "btf", "dump", "file", subset, "format", "c")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("derive %s from %s: %s: %w: %s", UAPIHeaderName, btfPath, bpftool, err, tail(stderr.String(), 5))
	}
	if err := os.WriteFile(out, stdout.Bytes(), 0o644); err != nil {
		return 0, fmt.Errorf("write %s: %w", UAPIHeaderName, err)
	}
	return len(roots), nil
}
