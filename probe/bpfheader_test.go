package probe

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// ordinalHeader renders a pre-6.2 style helper list.
func ordinalHeader(names ...string) string {
	var b strings.Builder
	b.WriteString("/* test bpf.h */\n#define __BPF_FUNC_MAPPER(FN)\t\t\\\n")
	for i, n := range names {
		sep := "\t\\"
		if i == len(names)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "\tFN(%s),%s\n", n, sep)
	}
	b.WriteString("\n#define __BPF_ENUM_FN(x) BPF_FUNC_ ## x\nenum bpf_func_id {\n\t__BPF_FUNC_MAPPER(__BPF_ENUM_FN)\n\t__BPF_FUNC_MAX_ID,\n};\n")
	return b.String()
}

// explicitHeader renders the 6.2+ style helper list with explicit IDs.
func explicitHeader(ids map[string]int32, order ...string) string {
	var b strings.Builder
	b.WriteString("#define ___BPF_FUNC_MAPPER(FN, ctx...)\t\t\t\\\n")
	for i, n := range order {
		sep := "\t\\"
		if i == len(order)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "\tFN(%s, %d, ##ctx)%s\n", n, ids[n], sep)
	}
	b.WriteString("\n#define __BPF_FUNC_MAPPER(FN) ___BPF_FUNC_MAPPER(FN)\n\n#define __BPF_FUNC_MAPPER_APPLY(name, value, FN) FN(name),\n")
	return b.String()
}

func TestParseHelpersOrdinal(t *testing.T) {
	h, err := ParseHelpers([]byte(ordinalHeader("unspec", "map_lookup_elem", "map_update_elem", "parse_header_msg")))
	if err != nil {
		t.Fatal(err)
	}
	if h.Layout != LayoutOrdinal {
		t.Errorf("layout = %s, want ordinal", h.Layout)
	}
	want := map[string]int32{"unspec": 0, "map_lookup_elem": 1, "map_update_elem": 2, "parse_header_msg": 3}
	for n, id := range want {
		if h.IDs[n] != id {
			t.Errorf("%s = %d, want %d", n, h.IDs[n], id)
		}
	}
	if len(h.IDs) != len(want) {
		t.Errorf("got %d helpers, want %d", len(h.IDs), len(want))
	}
	if h.Enhanced["parse_header_msg"] != 3 || len(h.Enhanced) != 1 {
		t.Errorf("enhanced = %v, want parse_header_msg=3", h.Enhanced)
	}
}

func TestParseHelpersExplicit(t *testing.T) {
	ids := map[string]int32{"unspec": 0, "map_lookup_elem": 1, "get_netns_cookie": 122, "km_header_strnstr": 300, "km_header_strncmp": 301, "parse_header_msg": 299}
	h, err := ParseHelpers([]byte(explicitHeader(ids, "unspec", "map_lookup_elem", "get_netns_cookie", "parse_header_msg", "km_header_strnstr", "km_header_strncmp")))
	if err != nil {
		t.Fatal(err)
	}
	if h.Layout != LayoutExplicit {
		t.Errorf("layout = %s, want explicit", h.Layout)
	}
	for n, id := range ids {
		if h.IDs[n] != id {
			t.Errorf("%s = %d, want %d", n, h.IDs[n], id)
		}
	}
	if len(h.Enhanced) != 3 || h.Enhanced["km_header_strncmp"] != 301 {
		t.Errorf("enhanced = %v", h.Enhanced)
	}
}

// The machine's own linux-libc-dev header (6.1 on Debian 12, ordinal layout)
// must parse with the IDs the kernel ABI fixes.
func TestParseHelpersSystemHeader(t *testing.T) {
	data, err := os.ReadFile("/usr/include/linux/bpf.h")
	if err != nil {
		t.Fatalf("read the system bpf.h (make deps installs linux-libc-dev): %v", err)
	}
	h, err := ParseHelpers(data)
	if err != nil {
		t.Fatal(err)
	}
	for n, id := range map[string]int32{"map_lookup_elem": 1, "get_prandom_u32": 7, "setsockopt": 49, "sock_hash_update": 70, "msg_redirect_hash": 71, "sk_storage_get": 107, "get_netns_cookie": 122} {
		if got, ok := h.IDs[n]; !ok || got != id {
			t.Errorf("%s = %d (present %v), want %d", n, got, ok, id)
		}
	}
	if len(h.IDs) < 150 {
		t.Errorf("only %d helpers parsed", len(h.IDs))
	}
}

func TestParseHelpersBadInput(t *testing.T) {
	full := ordinalHeader("unspec", "map_lookup_elem", "map_update_elem")
	cutAtLine := full[:strings.Index(full, "FN(map_update_elem)")-1]
	cutMidEntry := full[:strings.Index(full, "FN(map_update_elem)")+len("FN(map_upd")]
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrNoHelperList},
		{"garbage", "\x00\x01\x02 not a header \xff\xfe", ErrNoHelperList},
		{"other header", "#include <linux/types.h>\nstruct foo { int a; };\n", ErrNoHelperList},
		{"truncated after a continuation", cutAtLine, ErrTruncated},
		{"truncated inside an entry", cutMidEntry, ErrTruncated},
		{"garbled entry", ordinalHeader("unspec", "9bad", "a"), ErrMalformed},
		{"no entries", "#define __BPF_FUNC_MAPPER(FN) \\\n\tnothing here\n", ErrMalformed},
		{"duplicate name", ordinalHeader("unspec", "a", "a"), ErrMalformed},
		{"mixed layouts", "#define ___BPF_FUNC_MAPPER(FN, ctx...) \\\n FN(unspec, 0, ##ctx) \\\n FN(a)\n", ErrMalformed},
		{"duplicate id", explicitHeader(map[string]int32{"unspec": 0, "a": 1, "b": 1}, "unspec", "a", "b"), ErrMalformed},
		{"unspec not first", ordinalHeader("a", "unspec"), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHelpers([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDiffHelpers(t *testing.T) {
	kernel := map[string]int32{"unspec": 0, "a": 1, "b": 2, "c": 3}
	if d := DiffHelpers(kernel, kernel); !d.Match() || !d.Compatible() {
		t.Errorf("identical: %+v", d)
	}
	older := DiffHelpers(map[string]int32{"unspec": 0, "a": 1, "b": 2}, kernel)
	if older.Match() || !older.Compatible() || len(older.KernelOnly) != 1 || older.KernelOnly[0] != "c" {
		t.Errorf("older header: %+v", older)
	}
	other := DiffHelpers(map[string]int32{"unspec": 0, "a": 1, "c": 2, "x": 9}, kernel)
	if other.Compatible() || len(other.Conflicts) != 1 || len(other.HeaderOnly) != 1 {
		t.Errorf("other kernel's header: %+v", other)
	}
	if s := other.String(); !strings.Contains(s, "c (header 2, kernel 3)") || !strings.Contains(s, "only in header 1: x") {
		t.Errorf("diff text = %q", s)
	}
}

func FuzzParseHelpers(f *testing.F) {
	f.Add([]byte(ordinalHeader("unspec", "map_lookup_elem")))
	f.Add([]byte(explicitHeader(map[string]int32{"unspec": 0, "x": 5}, "unspec", "x")))
	f.Add([]byte("#define __BPF_FUNC_MAPPER(FN) \\\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHelpers(data)
		if err != nil {
			if !errors.Is(err, ErrNoHelperList) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if h.IDs["unspec"] != 0 {
			t.Fatalf("unspec = %d", h.IDs["unspec"])
		}
		seen := map[int32]bool{}
		for _, id := range h.IDs {
			if seen[id] {
				t.Fatalf("duplicate id %d", id)
			}
			seen[id] = true
		}
		for n, id := range h.Enhanced {
			if h.IDs[n] != id {
				t.Fatalf("enhanced %s=%d not in IDs", n, id)
			}
		}
	})
}
