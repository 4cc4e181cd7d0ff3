package guestcheck

import (
	"errors"
	"strings"
	"testing"
)

// The lines are what vmtest's console parser reads: prefix, name, status,
// detail on one line; failures counted.
func TestReporter(t *testing.T) {
	var b strings.Builder
	r := Reporter{Out: &b, Prefix: "load/"}
	if !r.Check("first", func() (string, error) { return "loaded", nil }) {
		t.Error("a passing check reported false")
	}
	if r.Check("reuse", func() (string, error) { return "srcversion X", errors.New("got\nreplaced") }) {
		t.Error("a failing check reported true")
	}
	r.Check("v6", func() (string, error) { return "no IPv6", ErrSkip })
	want := "KMESH-VMTEST load/first PASS loaded\n" +
		"KMESH-VMTEST load/reuse FAIL srcversion X: got replaced\n" +
		"KMESH-VMTEST load/v6 SKIP no IPv6\n"
	if b.String() != want || r.Failed != 1 {
		t.Errorf("got %q (failed %d), want %q", b.String(), r.Failed, want)
	}
}
