package probe

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText writes the record as a readable table of checks followed by the
// decision and its reasons.
func (r *Record) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "CHECK\tSTATUS\tDETAIL\n")
	for _, c := range r.Checks {
		detail := c.Detail
		if c.Fix != "" && !c.OK() {
			detail += " [fix: " + c.Fix + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Status, detail)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write checks: %w", err)
	}
	mode := string(r.Mode)
	if mode == "" {
		mode = "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nkernel: %s (%s) %s, %s\n", r.Kernel.Release, r.Kernel.Version, r.Kernel.Arch, r.Kernel.Distro)
	fmt.Fprintf(&b, "mode: %s (requested %s)\n", mode, r.RequestedMode)
	for _, reason := range r.Reasons {
		fmt.Fprintf(&b, "  - %s\n", reason)
	}
	fmt.Fprintf(&b, "helpers: %d from %s; probe took %.1f ms\n", len(r.Features.Helpers), r.Features.HelperSource, r.ProbeDurationMS)
	_, err := io.WriteString(w, b.String())
	return err
}
