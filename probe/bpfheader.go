package probe

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Errors of the bpf.h helper-list parser. Callers branch on them to tell a
// header that is not a bpf.h from one that was cut short.
var (
	ErrNoHelperList = errors.New("no __BPF_FUNC_MAPPER helper list")
	ErrTruncated    = errors.New("helper list is truncated")
	ErrMalformed    = errors.New("helper list is malformed")
)

// Layout names the two known forms of the helper list in bpf.h.
type Layout string

const (
	// LayoutOrdinal is the pre-6.2 form: one FN(name) per line, IDs by position.
	LayoutOrdinal Layout = "ordinal"
	// LayoutExplicit is the 6.2+ form: FN(name, id, ##ctx).
	LayoutExplicit Layout = "explicit"
)

// EnhancedHelpers are the out-of-tree helpers of kmesh's kernel patches
// (openEuler "enhanced kernel"); finding them in bpf.h means the host kernel
// may carry the patches.
var enhancedHelperNames = []string{"parse_header_msg", "km_header_strnstr", "km_header_strncmp"}

// EnhancedHelperNames returns the names of the enhanced-kernel helpers.
func EnhancedHelperNames() []string { return append([]string(nil), enhancedHelperNames...) }

// HeaderHelpers is the helper list parsed from a bpf.h.
type HeaderHelpers struct {
	Layout Layout
	// IDs maps helper name (without the BPF_FUNC_ prefix) to its ID.
	IDs map[string]int32
	// Enhanced holds the enhanced-kernel helpers found, with their IDs.
	Enhanced map[string]int32
}

var (
	// a use of FN inside the mapper: FN(name) or FN(name, 12, ##ctx)
	fnRe = regexp.MustCompile(`FN\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:,\s*([0-9]+)\s*)?(?:,\s*##\s*ctx\s*)?\)`)
	// the mapper definitions: ___BPF_FUNC_MAPPER(FN, ctx...) (6.2+) or __BPF_FUNC_MAPPER(FN)
	mapperDefRe = regexp.MustCompile(`^\s*#\s*define\s+(_{2,3}BPF_FUNC_MAPPER)\s*\(([^)]*)\)(.*)$`)
)

// ParseHelpers extracts the BPF helper list with IDs from the text of a
// linux/bpf.h. It accepts both layouts and fails with ErrNoHelperList,
// ErrTruncated or ErrMalformed (wrapped with detail) for anything else.
func ParseHelpers(src []byte) (*HeaderHelpers, error) {
	bodies, err := mapperBodies(src)
	if err != nil {
		return nil, err
	}
	// 6.2+ defines the list in ___BPF_FUNC_MAPPER and makes __BPF_FUNC_MAPPER
	// an alias; older headers have only __BPF_FUNC_MAPPER.
	body, ok := bodies["___BPF_FUNC_MAPPER"]
	if !ok {
		body, ok = bodies["__BPF_FUNC_MAPPER"]
	}
	if !ok {
		return nil, ErrNoHelperList
	}
	matches := fnRe.FindAllStringSubmatch(body, -1)
	if len(matches) == 0 {
		return nil, fmt.Errorf("parse helper list: no FN() entries: %w", ErrMalformed)
	}
	if n := strings.Count(body, "FN("); n != len(matches) {
		// an entry the pattern does not take: cut off at the end, or garbled
		tail := strings.TrimRight(body, " \t\n")
		if !strings.HasSuffix(tail, ")") && !strings.HasSuffix(tail, "),") {
			return nil, fmt.Errorf("parse helper list: last entry %q is incomplete: %w", lastLine(tail), ErrTruncated)
		}
		return nil, fmt.Errorf("parse helper list: %d of %d FN() entries unreadable: %w", n-len(matches), n, ErrMalformed)
	}
	h := &HeaderHelpers{IDs: make(map[string]int32, len(matches)), Enhanced: map[string]int32{}}
	explicit := matches[0][2] != ""
	h.Layout = LayoutOrdinal
	if explicit {
		h.Layout = LayoutExplicit
	}
	seenID := make(map[int32]string, len(matches))
	for i, m := range matches {
		name := m[1]
		if (m[2] != "") != explicit {
			return nil, fmt.Errorf("parse helper list: entry %q mixes the ordinal and explicit layouts: %w", name, ErrMalformed)
		}
		id := int32(i)
		if explicit {
			v, err := strconv.ParseInt(m[2], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parse helper list: id of %q: %w", name, ErrMalformed)
			}
			id = int32(v)
		}
		if _, dup := h.IDs[name]; dup {
			return nil, fmt.Errorf("parse helper list: %q listed twice: %w", name, ErrMalformed)
		}
		if other, dup := seenID[id]; dup {
			return nil, fmt.Errorf("parse helper list: id %d used by %q and %q: %w", id, other, name, ErrMalformed)
		}
		h.IDs[name] = id
		seenID[id] = name
	}
	if id, ok := h.IDs["unspec"]; !ok || id != 0 {
		return nil, fmt.Errorf("parse helper list: first entry must be unspec with id 0: %w", ErrMalformed)
	}
	for _, n := range enhancedHelperNames {
		if id, ok := h.IDs[n]; ok {
			h.Enhanced[n] = id
		}
	}
	return h, nil
}

// mapperBodies returns the bodies (continuation lines joined) of the
// *_BPF_FUNC_MAPPER macro definitions in src.
func mapperBodies(src []byte) (map[string]string, error) {
	bodies := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		m := mapperDefRe.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name, rest := m[1], m[3]
		var b strings.Builder
		for {
			cont := strings.HasSuffix(strings.TrimRight(rest, " \t"), `\`)
			b.WriteString(strings.TrimSuffix(strings.TrimRight(rest, " \t"), `\`))
			b.WriteByte('\n')
			if !cont {
				break
			}
			if !sc.Scan() {
				if err := sc.Err(); err != nil {
					return nil, fmt.Errorf("read %s: %w", name, err)
				}
				return nil, fmt.Errorf("read %s: header ends inside the macro: %w", name, ErrTruncated)
			}
			rest = sc.Text()
		}
		bodies[name] = b.String()
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read bpf.h: %w", err)
	}
	return bodies, nil
}

// HelperDiff compares a header's helper list with the running kernel's.
type HelperDiff struct {
	// Conflicts are helpers whose IDs differ between header and kernel.
	Conflicts []string
	// HeaderOnly are helpers the header lists and the kernel does not have.
	HeaderOnly []string
	// KernelOnly are helpers the kernel has and the header does not list.
	KernelOnly []string
}

// Match reports whether the header describes exactly the running kernel.
func (d HelperDiff) Match() bool {
	return len(d.Conflicts) == 0 && len(d.HeaderOnly) == 0 && len(d.KernelOnly) == 0
}

// Compatible reports whether every helper ID the header names is right for
// the running kernel (the header may be older).
func (d HelperDiff) Compatible() bool { return len(d.Conflicts) == 0 && len(d.HeaderOnly) == 0 }

// DiffHelpers compares header helper IDs with kernel helper IDs.
func DiffHelpers(header, kernel map[string]int32) HelperDiff {
	var d HelperDiff
	for n, id := range header {
		kid, ok := kernel[n]
		switch {
		case !ok:
			d.HeaderOnly = append(d.HeaderOnly, n)
		case kid != id:
			d.Conflicts = append(d.Conflicts, fmt.Sprintf("%s (header %d, kernel %d)", n, id, kid))
		}
	}
	for n := range kernel {
		if _, ok := header[n]; !ok {
			d.KernelOnly = append(d.KernelOnly, n)
		}
	}
	sort.Strings(d.Conflicts)
	sort.Strings(d.HeaderOnly)
	sort.Strings(d.KernelOnly)
	return d
}

func (d HelperDiff) String() string {
	var parts []string
	add := func(what string, l []string) {
		if len(l) == 0 {
			return
		}
		s := strings.Join(first(l, 5), ", ")
		if len(l) > 5 {
			s += fmt.Sprintf(", … (%d more)", len(l)-5)
		}
		parts = append(parts, fmt.Sprintf("%s %d: %s", what, len(l), s))
	}
	add("conflicting ids", d.Conflicts)
	add("only in header", d.HeaderOnly)
	add("only in kernel", d.KernelOnly)
	return strings.Join(parts, "; ")
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

func first(l []string, n int) []string {
	if len(l) > n {
		return l[:n]
	}
	return l
}
