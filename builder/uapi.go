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
const uapiDerivation = "btf-subset-2"

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
		"bpf_sock_ops", "sk_msg_md", "sk_action", "__sk_buff", "bpf_attach_type", "bpf_prog_type",
	}
	return required, optional
}

// uapiFlags are the constants bpf/ uses that linux/bpf.h defines in
// anonymous enums. They are not in the subset (finding an anonymous enum
// means decoding every type of the kernel's BTF: ~50 MiB of heap, more
// than clang needs for the compile) and are written after it instead. They
// are UAPI: their values cannot change; TestUAPIFlagsMatchKernel checks
// them against the running kernel's BTF.
func uapiFlags() []struct {
	Name  string
	Value uint64
} {
	return []struct {
		Name  string
		Value uint64
	}{
		{"BPF_ANY", 0}, {"BPF_NOEXIST", 1}, {"BPF_EXIST", 2}, {"BPF_F_LOCK", 4},
		{"BPF_F_NO_PREALLOC", 1},
		{"BPF_SK_STORAGE_GET_F_CREATE", 1},
		{"BPF_F_INGRESS", 1},
		{"BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB", 4}, {"BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB", 5},
	}
}

func uapiFlagsC() string {
	var b strings.Builder
	b.WriteString("\n/* UAPI flags of linux/bpf.h's anonymous enums (builder/uapi.go: uapiFlags) */\n" +
		"#ifndef KMESH_UAPI_FLAGS\n#define KMESH_UAPI_FLAGS\nenum {\n")
	for _, f := range uapiFlags() {
		fmt.Fprintf(&b, "\t%s = %d,\n", f.Name, f.Value)
	}
	b.WriteString("};\n#endif\n")
	return b.String()
}

// errUAPIType: the kernel's BTF lacks a type bpf/ needs.
var errUAPIType = errors.New("type missing from the kernel's BTF")

// deriveUAPIHeader writes the UAPI types bpf/ uses, taken from the BTF at
// btfPath, as C into out: the types of uapiTypes, with everything they
// reference, are marshalled into a small BTF blob that bpftool prints as C;
// uapiFlags follow.
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
	stdout.WriteString(uapiFlagsC())
	if err := os.WriteFile(out, stdout.Bytes(), 0o644); err != nil {
		return 0, fmt.Errorf("write %s: %w", UAPIHeaderName, err)
	}
	return len(roots), nil
}
