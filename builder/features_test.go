package builder

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kmesh.dev/kmesh/probe"
)

func TestFeatureHeader(t *testing.T) {
	rec := &probe.Record{Mode: probe.ModeCompat, Kernel: probe.Kernel{Release: "6.18.0"}, Features: probe.Features{
		NetnsCookie: true, SkStorage: true, IPv6: true,
		EnhancedHelpers: map[string]int32{"parse_header_msg": 212, "km_header_strnstr": 213},
	}}
	h := string(FeatureHeader(rec))
	for _, want := range []string{"#define KMESH_MODE_ENHANCED 0\n", "#define KMESH_HAVE_SK_STORAGE 1\n", "#define KMESH_HAVE_RINGBUF 0\n",
		"#define KMESH_HAVE_ENHANCED_HELPERS 0\n", "#define KMESH_HELPER_ID_PARSE_HEADER_MSG 212\n", "#define KMESH_HELPER_ID_KM_HEADER_STRNSTR 213\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("header lacks %q:\n%s", want, h)
		}
	}
	if !bytes.Equal(FeatureHeader(rec), FeatureHeader(rec)) {
		t.Error("header is not deterministic")
	}
	// it must be valid C for the BPF compiler: every macro usable in #if
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, FeatureHeaderName), []byte(h), 0o644)
	src := "#include \"kmesh_features.h\"\n"
	for _, m := range FeatureMacros(rec) {
		src += "#if " + m.Name + " < 0\n#error bad\n#endif\n"
	}
	src += "int x = KMESH_HELPER_ID_PARSE_HEADER_MSG;\n"
	os.WriteFile(filepath.Join(dir, "t.c"), []byte(src), 0o644)
	out, err := exec.Command("clang-19", "-target", "bpf", "-Wall", "-Werror", "-c", "-I", dir, "-o", filepath.Join(dir, "t.o"), filepath.Join(dir, "t.c")).CombinedOutput()
	if err != nil {
		t.Fatalf("clang-19 rejects the header: %v\n%s", err, out)
	}
}
