package probe

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// BTFInfo is what the kernel's BTF tells about BPF support.
type BTFInfo struct {
	// Path is the host path of the vmlinux BTF, Hash its sha256.
	Path string `json:"path"`
	Hash string `json:"hash,omitempty"`
	// Helpers maps helper name (no BPF_FUNC_ prefix) to ID, from enum bpf_func_id.
	Helpers map[string]int32 `json:"-"`
	// Kfuncs lists the kfuncs kmesh looks for that the kernel has.
	Kfuncs []string `json:"kfuncs,omitempty"`
	// ModuleBTF is true when the kernel exposes BTF for modules.
	ModuleBTF bool `json:"module_btf"`
	// spec is the parsed BTF, for live probes that reference kernel types.
	spec *btf.Spec
}

// wantedKfuncs are the vmlinux kfuncs whose presence matters to kmesh:
// bpf_sock_addr_set_sun_path is registered for cgroup sock_addr programs, so
// its presence shows that the kernel has the kfunc hook those programs need
// to call kmesh.ko's kfuncs (6.7+); bpf_cast_to_kern_ctx is needed to pass
// the kernel context to them.
var wantedKfuncs = []string{"bpf_sock_addr_set_sun_path", "bpf_cast_to_kern_ctx"}

// ctxFields are the context structs and fields the BPF programs use.
var ctxFields = map[string][]string{
	"bpf_sock_addr": {"user_family", "user_ip4", "user_ip6", "user_port", "family", "type", "protocol", "sk"},
	"bpf_sock_ops":  {"op", "family", "remote_ip4", "remote_ip6", "remote_port", "local_ip4", "local_ip6", "local_port", "sk"},
	"sk_msg_md":     {"family", "remote_ip4", "remote_ip6", "remote_port", "local_ip4", "local_ip6", "local_port", "size"},
	"bpf_sock":      {"family", "type", "protocol", "dst_ip4", "dst_ip6", "dst_port", "src_ip4", "src_port"},
}

const vmlinuxBTF = "/sys/kernel/btf/vmlinux"

func probeBTF(h Host, kc *KConfig) (*BTFInfo, []Check) {
	info := &BTFInfo{Path: vmlinuxBTF}
	path, err := h.Resolve(vmlinuxBTF)
	var data []byte
	if err == nil {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		c := fromErr("btf.vmlinux", fmt.Errorf("read %s: %w", vmlinuxBTF, err), "")
		if errors.Is(err, os.ErrNotExist) {
			c = unsupported("btf.vmlinux", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the builder then derives headers from the host's bpf.h only)",
				"%s does not exist", vmlinuxBTF)
		}
		return info, []Check{c}
	}
	sum := sha256.Sum256(data)
	info.Hash = hex.EncodeToString(sum[:])
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(data))
	if err != nil {
		return info, []Check{inconclusive("btf.vmlinux", fmt.Errorf("parse %s: %w", vmlinuxBTF, err))}
	}
	info.spec = spec
	checks := []Check{supported("btf.vmlinux", "%s (%d bytes)", vmlinuxBTF, len(data))}

	// helper IDs
	var enum *btf.Enum
	if err := spec.TypeByName("bpf_func_id", &enum); err != nil {
		checks = append(checks, inconclusive("btf.helpers", fmt.Errorf("find enum bpf_func_id: %w", err)))
	} else {
		info.Helpers = make(map[string]int32, len(enum.Values))
		for _, v := range enum.Values {
			if name, ok := strings.CutPrefix(v.Name, "BPF_FUNC_"); ok && name != "" && !strings.HasPrefix(v.Name, "__") {
				info.Helpers[name] = int32(v.Value)
			}
		}
		checks = append(checks, supported("btf.helpers", "%d helpers in enum bpf_func_id", len(info.Helpers)))
	}

	// kfuncs kmesh cares about, looked up by name (iterating all ~100k types
	// would cost ~250 ms)
	for _, name := range wantedKfuncs {
		typs, err := spec.AnyTypesByName(name)
		if err != nil && !errors.Is(err, btf.ErrNotFound) {
			checks = append(checks, inconclusive("btf.kfuncs", fmt.Errorf("look up %s: %w", name, err)))
			break
		}
		for _, t := range typs {
			if fn, ok := t.(*btf.Func); ok && slices.Contains(fn.Tags, "bpf_kfunc") {
				info.Kfuncs = append(info.Kfuncs, name)
				break
			}
		}
	}
	if len(info.Kfuncs) > 0 {
		checks = append(checks, supported("btf.kfuncs", "tagged bpf_kfunc: %s", strings.Join(info.Kfuncs, ", ")))
	} else {
		checks = append(checks, unsupported("btf.kfuncs", "", "none of %s tagged bpf_kfunc (kernel older than 6.2 or BTF without decl tags)", strings.Join(wantedKfuncs, ", ")))
	}
	if slices.Contains(info.Kfuncs, "bpf_sock_addr_set_sun_path") {
		checks = append(checks, supported("btf.kfunc_hook_sock_addr", "kernel registers kfuncs for cgroup sock_addr programs (bpf_sock_addr_set_sun_path present)"))
	} else {
		checks = append(checks, unsupported("btf.kfunc_hook_sock_addr", "kmesh.ko's kfuncs need Linux 6.7 or newer for cgroup connect programs",
			"no kfunc registered for cgroup sock_addr programs (bpf_sock_addr_set_sun_path absent)"))
	}

	// context structs
	for _, name := range sortedKeys(ctxFields) {
		checks = append(checks, ctxCheck(spec, name, ctxFields[name]))
	}

	// module BTF
	checks = append(checks, moduleBTFCheck(h, kc, info))
	return info, checks
}

func ctxCheck(spec *btf.Spec, name string, fields []string) Check {
	cname := "btf.ctx." + name
	var st *btf.Struct
	if err := spec.TypeByName(name, &st); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return unsupported(cname, "", "struct %s not in kernel BTF", name)
		}
		return inconclusive(cname, fmt.Errorf("find struct %s: %w", name, err))
	}
	have := map[string]bool{}
	collectMembers(st.Members, have)
	var missing []string
	for _, f := range fields {
		if !have[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return unsupported(cname, "", "struct %s lacks %s", name, strings.Join(missing, ", "))
	}
	return supported(cname, "struct %s has %s", name, strings.Join(fields, ", "))
}

// collectMembers records member names, descending into anonymous unions and
// structs (bpf_sock_addr wraps sk in __bpf_md_ptr, an anonymous union).
func collectMembers(ms []btf.Member, have map[string]bool) {
	for _, m := range ms {
		if m.Name != "" {
			have[m.Name] = true
			continue
		}
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Union:
			collectMembers(t.Members, have)
		case *btf.Struct:
			collectMembers(t.Members, have)
		}
	}
}

func moduleBTFCheck(h Host, kc *KConfig, info *BTFInfo) Check {
	const name = "btf.modules"
	if kc != nil && kc.Values != nil {
		if kc.Enabled("CONFIG_DEBUG_INFO_BTF_MODULES") {
			info.ModuleBTF = true
			return supported(name, "CONFIG_DEBUG_INFO_BTF_MODULES=y (%s)", kc.Source)
		}
		return unsupported(name, "kmesh.ko's kfuncs need a kernel with CONFIG_DEBUG_INFO_BTF_MODULES=y",
			"CONFIG_DEBUG_INFO_BTF_MODULES is not set (%s)", kc.Source)
	}
	// No config: other entries in /sys/kernel/btf are module BTF.
	dir, err := h.Resolve("/sys/kernel/btf")
	if err == nil {
		var ents []os.DirEntry
		if ents, err = os.ReadDir(dir); err == nil {
			for _, e := range ents {
				if e.Name() != "vmlinux" {
					info.ModuleBTF = true
					return supported(name, "module BTF present (/sys/kernel/btf/%s)", e.Name())
				}
			}
			return inconclusive(name, fmt.Errorf("no module BTF loaded and no kernel config to tell whether the kernel supports it"))
		}
	}
	return inconclusive(name, fmt.Errorf("list /sys/kernel/btf: %w", err))
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
