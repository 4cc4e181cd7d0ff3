package probe

import "testing"

// CONFIG_CC_VERSION_TEXT as Debian's kernels of 5.10, 6.1 and 6.12 and
// other distributions' write it.
func TestCCVersion(t *testing.T) {
	for _, c := range []struct{ text, family, major string }{
		{"gcc-10 (Debian 10.2.1-6) 10.2.1 20210110", "gcc", "10"},
		{"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", "gcc", "12"},
		{"x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0", "gcc", "14"},
		{"gcc (GCC) 11.4.1 20231218 (Red Hat 11.4.1-3)", "gcc", "11"},
		{"gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0", "gcc", "11"},
		{"Debian clang version 19.1.7 (3+b1)", "clang", "19"},
	} {
		f, m, ok := ccVersion(c.text)
		if !ok || f != c.family || m != c.major {
			t.Errorf("ccVersion(%q) = %q %q %v, want %s %s", c.text, f, m, ok, c.family, c.major)
		}
	}
	if _, _, ok := ccVersion("tcc 0.9.27"); ok {
		t.Error("an unknown compiler parsed")
	}
}
