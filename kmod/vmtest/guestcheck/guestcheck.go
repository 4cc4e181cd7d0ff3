// Package guestcheck prints the check lines the vmtest harness reads from a
// guest's console: "KMESH-VMTEST <name> PASS|FAIL|SKIP <detail>", one line
// each (kmod/vmtest parses them into Result.Checks).
package guestcheck

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrSkip marks a check that does not apply on this kernel.
var ErrSkip = errors.New("skip")

// Reporter counts failures while printing check lines to Out.
type Reporter struct {
	Out io.Writer
	// Prefix is put before every check name ("load/").
	Prefix string
	Failed int
}

// Check runs fn and prints its line: PASS with fn's detail, SKIP when fn
// returns ErrSkip, else FAIL with the detail and the error. It reports
// whether the check passed.
func (r *Reporter) Check(name string, fn func() (string, error)) bool {
	detail, err := fn()
	status := "PASS"
	switch {
	case errors.Is(err, ErrSkip):
		status = "SKIP"
	case err != nil:
		status = "FAIL"
		r.Failed++
		if detail != "" {
			detail += ": "
		}
		detail += err.Error()
	}
	fmt.Fprintf(r.Out, "KMESH-VMTEST %s%s %s %s\n", r.Prefix, name, status, strings.ReplaceAll(detail, "\n", " "))
	return err == nil
}
