package config

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// This file writes a yaml.Node tree as JSON directly, without decoding it
// into map[string]any first. It writes the JSON that decoding the tree with
// yaml.v3 into `any` and marshalling that with encoding/json wrote (the same
// bytes: keys sorted, strings escaped alike), except that errors are located
// (line and column) and a few corner cases that were silently resolved
// before are now errors (see yamlEncoder.mapping).
//
// Scalars are resolved as yaml.v3 resolves them (YAML 1.1-compatible, as
// the former path did): quoted and !!str scalars are strings; plain ones are
// null (~, null, empty), booleans (true/false in three spellings), integers
// (decimal, 0x, 0o, 0b, legacy 0-prefixed octal, underscores ignored),
// floats (including 1e3; .nan and .inf have no JSON form and are rejected)
// or timestamps (2001-12-14, written as RFC 3339, like json.Marshal of a
// time.Time); anything else is a string. !!binary is base64-decoded; any
// other tag leaves the value as a string.

// nodeJSON appends the JSON form of the document doc to dst.
func nodeJSON(dst []byte, doc *yaml.Node) ([]byte, error) {
	e := yamlEncoder{out: dst}
	if err := e.encode(doc); err != nil {
		return nil, err
	}
	return e.out, nil
}

type yamlEncoder struct {
	out []byte
	// nodes and aliasNodes count the nodes visited, and those visited
	// through an alias, to refuse alias "bombs" as yaml.v3 does.
	nodes, aliasNodes, aliasDepth int
	// expanding holds the alias nodes being expanded (a cycle check);
	// allocated at the first alias.
	expanding map[*yaml.Node]bool
	// plain refuses anchors and aliases (errYAMLAnchor): the parallel
	// path's parts cannot see each other's.
	plain bool
}

// Thresholds of yaml.v3's excessive-aliasing check (decode.go).
const (
	aliasRatioRangeLow  = 400000
	aliasRatioRangeHigh = 4000000
)

func allowedAliasRatio(nodes int) float64 {
	switch {
	case nodes <= aliasRatioRangeLow:
		return 0.99
	case nodes >= aliasRatioRangeHigh:
		return 0.10
	}
	return 0.99 - 0.89*(float64(nodes-aliasRatioRangeLow)/float64(aliasRatioRangeHigh-aliasRatioRangeLow))
}

func nodeError(n *yaml.Node, format string, args ...any) *ParseError {
	return &ParseError{Line: n.Line, Column: n.Column, Msg: "invalid YAML: " + fmt.Sprintf(format, args...)}
}

// visit counts n and fails on excessive aliasing.
func (e *yamlEncoder) visit(n *yaml.Node) error {
	if e.plain && (n.Anchor != "" || n.Kind == yaml.AliasNode) {
		return errYAMLAnchor
	}
	e.nodes++
	if e.aliasDepth > 0 {
		e.aliasNodes++
	}
	if e.aliasNodes > 100 && e.nodes > 1000 && float64(e.aliasNodes)/float64(e.nodes) > allowedAliasRatio(e.nodes) {
		return nodeError(n, "document contains excessive aliasing")
	}
	return nil
}

// follow returns the node alias n stands for and marks n as being expanded;
// call e.unfollow(n) when done with it.
func (e *yamlEncoder) follow(n *yaml.Node) (*yaml.Node, error) {
	if n.Alias == nil {
		return nil, nodeError(n, "unknown anchor '%s' referenced", n.Value)
	}
	if e.expanding[n] {
		return nil, nodeError(n, "anchor '%s' value contains itself", n.Value)
	}
	if e.expanding == nil {
		e.expanding = make(map[*yaml.Node]bool)
	}
	e.expanding[n] = true
	e.aliasDepth++
	return n.Alias, nil
}

func (e *yamlEncoder) unfollow(n *yaml.Node) {
	delete(e.expanding, n)
	e.aliasDepth--
}

func (e *yamlEncoder) encode(n *yaml.Node) error {
	if err := e.visit(n); err != nil {
		return err
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			e.out = append(e.out, "null"...)
			return nil
		}
		return e.encode(n.Content[0])
	case yaml.AliasNode:
		target, err := e.follow(n)
		if err != nil {
			return err
		}
		err = e.encode(target)
		e.unfollow(n)
		return err
	case yaml.ScalarNode:
		return e.scalar(n)
	case yaml.SequenceNode:
		e.out = append(e.out, '[')
		for i, c := range n.Content {
			if i > 0 {
				e.out = append(e.out, ',')
			}
			if err := e.encode(c); err != nil {
				return err
			}
		}
		e.out = append(e.out, ']')
		return nil
	case yaml.MappingNode:
		return e.mapping(n)
	}
	return nodeError(n, "cannot decode node with unknown kind %d", n.Kind)
}

// mapping writes a JSON object, with the keys sorted as encoding/json sorts
// a map's (protojson reports the first problem in that order, and so did
// the former path). Merged keys (<<) never override the mapping's own;
// earlier merged mappings win over later ones (YAML's merge key semantics,
// as yaml.v3 applies them). Keys that are not strings are formatted as
// fmt.Sprint formats their value (1, true, <nil>), as before. Two keys of
// one mapping that end up as the same JSON key are an error (yaml.v3 rejects
// identical key text; this also rejects, e.g., 1 and 0x1, which the former
// path silently collapsed into one).
func (e *yamlEncoder) mapping(n *yaml.Node) error {
	if err := uniqueKeys(n); err != nil {
		return err
	}
	for i := 0; i < len(n.Content); i += 2 {
		if !isStringScalar(n.Content[i]) || isMerge(n.Content[i]) {
			return e.mergedMapping(n)
		}
	}
	// Only string keys, all distinct: sort them, then write.
	var small [16]int32
	order := small[:0]
	if len(n.Content)/2 > len(small) {
		order = make([]int32, 0, len(n.Content)/2)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		order = append(order, int32(i))
	}
	sortKeys(order, n.Content)
	e.out = append(e.out, '{')
	for j, i := range order {
		if j > 0 {
			e.out = append(e.out, ',')
		}
		if err := e.visit(n.Content[i]); err != nil {
			return err
		}
		e.out = appendJSONString(e.out, n.Content[i].Value)
		e.out = append(e.out, ':')
		if err := e.encode(n.Content[i+1]); err != nil {
			return err
		}
	}
	e.out = append(e.out, '}')
	return nil
}

// sortKeys sorts order, indexes of key nodes in content, by key text.
func sortKeys(order []int32, content []*yaml.Node) {
	if len(order) > 16 {
		slices.SortFunc(order, func(a, b int32) int { return strings.Compare(content[a].Value, content[b].Value) })
		return
	}
	for i := 1; i < len(order); i++ { // insertion sort: most mappings are small
		for j := i; j > 0 && content[order[j]].Value < content[order[j-1]].Value; j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
}

// member is one entry of a merged mapping: its key and where its value's
// JSON was written.
type member struct {
	key        string
	start, end int
}

// mergedMapping writes a mapping with merge keys or keys that are not plain
// strings. The values are written as the entries are met (with the aliases
// that led to them still marked, so that cycles through merges are caught),
// then the object is assembled in key order.
func (e *yamlEncoder) mergedMapping(n *yaml.Node) error {
	base := len(e.out)
	seen := make(map[string]struct{}, len(n.Content)/2)
	var ms []member
	if err := e.members(n, seen, &ms, false); err != nil {
		return err
	}
	values := append([]byte(nil), e.out[base:]...)
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
	e.out = append(e.out[:base], '{')
	for i, m := range ms {
		if i > 0 {
			e.out = append(e.out, ',')
		}
		e.out = appendJSONString(e.out, m.key)
		e.out = append(e.out, ':')
		e.out = append(e.out, values[m.start-base:m.end-base]...)
	}
	e.out = append(e.out, '}')
	return nil
}

// members writes the values of mapping n whose keys are not in seen, then
// those of the mappings it merges, and lists them in ms. A key already in
// seen is an error for an explicit key of the outer mapping (merged is
// false), and overridden for a merged one.
func (e *yamlEncoder) members(n *yaml.Node, seen map[string]struct{}, ms *[]member, merged bool) error {
	var merge *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			merge = v
			continue
		}
		ks, err := e.key(k)
		if err != nil {
			return err
		}
		if _, dup := seen[ks]; dup {
			if merged {
				continue
			}
			return nodeError(k, "mapping key %q appears twice", ks)
		}
		seen[ks] = struct{}{}
		start := len(e.out)
		if err := e.encode(v); err != nil {
			return err
		}
		*ms = append(*ms, member{key: ks, start: start, end: len(e.out)})
	}
	if merge == nil {
		return nil
	}
	if err := e.visit(merge); err != nil {
		return err
	}
	switch merge.Kind {
	case yaml.MappingNode, yaml.AliasNode:
		return e.mergeOne(merge, seen, ms)
	case yaml.SequenceNode:
		for _, m := range merge.Content {
			if err := e.visit(m); err != nil {
				return err
			}
			if err := e.mergeOne(m, seen, ms); err != nil {
				return err
			}
		}
		return nil
	}
	return nodeError(merge, "map merge requires map or sequence of maps as the value")
}

// mergeOne writes the entries of the mapping (or alias of one) m that are
// not overridden.
func (e *yamlEncoder) mergeOne(m *yaml.Node, seen map[string]struct{}, ms *[]member) error {
	if m.Kind == yaml.AliasNode {
		target, err := e.follow(m)
		if err != nil {
			return err
		}
		defer e.unfollow(m)
		m = target
	}
	if m.Kind != yaml.MappingNode {
		return nodeError(m, "map merge requires map or sequence of maps as the value")
	}
	if err := uniqueKeys(m); err != nil {
		return err
	}
	return e.members(m, seen, ms, true)
}

// key returns the JSON key for the YAML key node k.
func (e *yamlEncoder) key(k *yaml.Node) (string, error) {
	if err := e.visit(k); err != nil {
		return "", err
	}
	if k.Kind == yaml.AliasNode {
		target, err := e.follow(k)
		if err != nil {
			return "", err
		}
		defer e.unfollow(k)
		k = target
	}
	if k.Kind != yaml.ScalarNode {
		return "", nodeError(k, "invalid map key: a %s cannot be a mapping key", kindName(k.Kind))
	}
	if isStringScalar(k) {
		return k.Value, nil
	}
	s, err := resolveScalar(k)
	if err != nil {
		return "", err
	}
	switch s.kind {
	case scalarString:
		return s.s, nil
	case scalarNull:
		return "<nil>", nil // as fmt.Sprint(nil), the former path
	case scalarBool:
		return strconv.FormatBool(s.b), nil
	case scalarInt:
		return strconv.FormatInt(s.i, 10), nil
	case scalarUint:
		return strconv.FormatUint(s.u, 10), nil
	case scalarFloat:
		return fmt.Sprint(s.f), nil
	case scalarTime:
		return s.t.String(), nil
	}
	return "", nodeError(k, "unknown scalar kind %d", s.kind)
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	case yaml.DocumentNode:
		return "document"
	}
	return "node"
}

// uniqueKeys rejects a mapping with two keys of the same kind and text, as
// yaml.v3 does when decoding.
func uniqueKeys(n *yaml.Node) error {
	l := len(n.Content) / 2
	if l <= 16 {
		for j := 2; j+1 < len(n.Content); j += 2 {
			nj := n.Content[j]
			for i := 0; i < j; i += 2 {
				if ni := n.Content[i]; ni.Kind == nj.Kind && ni.Value == nj.Value {
					return duplicateKey(ni, nj)
				}
			}
		}
		return nil
	}
	type id struct {
		kind  yaml.Kind
		value string
	}
	first := make(map[id]*yaml.Node, l)
	for j := 0; j+1 < len(n.Content); j += 2 {
		nj := n.Content[j]
		if ni, dup := first[id{nj.Kind, nj.Value}]; dup {
			return duplicateKey(ni, nj)
		}
		first[id{nj.Kind, nj.Value}] = nj
	}
	return nil
}

func duplicateKey(first, again *yaml.Node) error {
	return nodeError(again, "mapping key %q already defined at line %d", again.Value, first.Line)
}

// isMerge reports whether k is the merge key << (yaml.v3's rule).
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || shortTag(k.Tag) == "!!merge")
}

// isStringScalar reports whether n is a scalar that is a string whatever
// its text: quoted, literal, folded or tagged !!str (yaml.v3's
// indicatedString, plus plain scalars the parser resolved to !!str).
func isStringScalar(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	tag := shortTag(n.Tag)
	return tag == "!!str" ||
		(n.Tag == "" || n.Tag == "!") && n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0
}

const longTagPrefix = "tag:yaml.org,2002:"

func shortTag(tag string) string {
	if rest, ok := strings.CutPrefix(tag, longTagPrefix); ok {
		return "!!" + rest
	}
	return tag
}

func (e *yamlEncoder) scalar(n *yaml.Node) error {
	if isStringScalar(n) {
		e.out = appendJSONString(e.out, n.Value)
		return nil
	}
	s, err := resolveScalar(n)
	if err != nil {
		return err
	}
	switch s.kind {
	case scalarString:
		e.out = appendJSONString(e.out, s.s)
	case scalarNull:
		e.out = append(e.out, "null"...)
	case scalarBool:
		e.out = strconv.AppendBool(e.out, s.b)
	case scalarInt:
		e.out = strconv.AppendInt(e.out, s.i, 10)
	case scalarUint:
		e.out = strconv.AppendUint(e.out, s.u, 10)
	case scalarFloat:
		if math.IsNaN(s.f) || math.IsInf(s.f, 0) {
			return &ParseError{Line: n.Line, Column: n.Column,
				Msg: "convert YAML to JSON: unsupported value: " + strconv.FormatFloat(s.f, 'g', -1, 64)}
		}
		e.out = appendJSONFloat(e.out, s.f)
	case scalarTime:
		e.out = append(e.out, '"')
		e.out = s.t.AppendFormat(e.out, time.RFC3339Nano)
		e.out = append(e.out, '"')
	default:
		return nodeError(n, "unknown scalar kind %d", s.kind)
	}
	return nil
}

type scalarKind uint8

const (
	scalarString scalarKind = iota
	scalarNull
	scalarBool
	scalarInt
	scalarUint
	scalarFloat
	scalarTime
)

// scalar is a resolved YAML scalar.
type scalar struct {
	kind scalarKind
	s    string
	b    bool
	i    int64
	u    uint64
	f    float64
	t    time.Time
}

// resolveScalar resolves a scalar node that is not a string by style as
// yaml.v3 does (resolve and decoder.scalar in its decode.go and resolve.go):
// by its tag and, for the tags a plain scalar can be resolved to, its text.
func resolveScalar(n *yaml.Node) (scalar, error) {
	tag := shortTag(n.Tag)
	switch tag {
	case "", "!!bool", "!!int", "!!float", "!!null", "!!timestamp":
	case "!!binary":
		b, err := base64.StdEncoding.DecodeString(n.Value)
		if err != nil {
			return scalar{}, nodeError(n, "!!binary value contains invalid base64 data")
		}
		return scalar{kind: scalarString, s: string(b)}, nil
	default: // !!str, !!merge, custom tags: the text as it is
		return scalar{kind: scalarString, s: n.Value}, nil
	}
	rtag, s := resolvePlain(tag, n.Value)
	switch {
	case tag == "" || tag == rtag:
		return s, nil
	case tag == "!!float" && rtag == "!!int" && s.kind == scalarInt:
		// yaml.v3 converts int and int64, not uint64
		return scalar{kind: scalarFloat, f: float64(s.i)}, nil
	}
	return scalar{}, nodeError(n, "cannot decode %s `%s` as a %s", rtag, n.Value, tag)
}

// resolvePlain is yaml.v3's resolve for the resolvable tags other than !!str.
func resolvePlain(tag, in string) (string, scalar) {
	str := scalar{kind: scalarString, s: in}
	var hint byte = 'N'
	if in != "" {
		switch c := in[0]; {
		case c == '+' || c == '-':
			hint = 'S'
		case c >= '0' && c <= '9':
			hint = 'D'
		case strings.IndexByte("yYnNtTfFoO~<", c) >= 0:
			hint = 'M'
		case c == '.':
			hint = '.'
		default:
			return "!!str", str
		}
	}
	switch in {
	case "true", "True", "TRUE":
		return "!!bool", scalar{kind: scalarBool, b: true}
	case "false", "False", "FALSE":
		return "!!bool", scalar{kind: scalarBool}
	case "", "~", "null", "Null", "NULL":
		return "!!null", scalar{kind: scalarNull}
	case ".nan", ".NaN", ".NAN":
		return "!!float", scalar{kind: scalarFloat, f: math.NaN()}
	case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF":
		return "!!float", scalar{kind: scalarFloat, f: math.Inf(1)}
	case "-.inf", "-.Inf", "-.INF":
		return "!!float", scalar{kind: scalarFloat, f: math.Inf(-1)}
	case "<<":
		return "!!merge", str
	}
	switch hint {
	case '.':
		if f, err := strconv.ParseFloat(in, 64); err == nil {
			return "!!float", scalar{kind: scalarFloat, f: f}
		}
	case 'D', 'S':
		if tag == "" || tag == "!!timestamp" {
			if t, ok := parseTimestamp(in); ok {
				return "!!timestamp", scalar{kind: scalarTime, t: t}
			}
		}
		plain := strings.ReplaceAll(in, "_", "")
		if i, err := strconv.ParseInt(plain, 0, 64); err == nil {
			return "!!int", scalar{kind: scalarInt, i: i}
		}
		if u, err := strconv.ParseUint(plain, 0, 64); err == nil {
			return "!!int", scalar{kind: scalarUint, u: u}
		}
		if isYAMLFloat(plain) {
			if f, err := strconv.ParseFloat(plain, 64); err == nil {
				return "!!float", scalar{kind: scalarFloat, f: f}
			}
		}
		// yaml.v3 also tries these prefixes with the rest parsed alone,
		// which accepts a few odd spellings such as 0b-1.
		for _, p := range []struct {
			prefix string
			base   int
		}{{"0b", 2}, {"0o", 8}} {
			if rest, ok := strings.CutPrefix(plain, p.prefix); ok {
				if i, err := strconv.ParseInt(rest, p.base, 64); err == nil {
					return "!!int", scalar{kind: scalarInt, i: i}
				}
				if u, err := strconv.ParseUint(rest, p.base, 64); err == nil {
					return "!!int", scalar{kind: scalarUint, u: u}
				}
			} else if rest, ok := strings.CutPrefix(plain, "-"+p.prefix); ok {
				if i, err := strconv.ParseInt("-"+rest, p.base, 64); err == nil {
					return "!!int", scalar{kind: scalarInt, i: i}
				}
			}
		}
	}
	return "!!str", str
}

// isYAMLFloat matches ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$
// (yaml.v3's yamlStyleFloat).
func isYAMLFloat(s string) bool {
	i := 0
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	} else {
		if digits() == 0 {
			return false
		}
		if i < len(s) && s[i] == '.' {
			i++
			digits()
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '-' || s[i] == '+') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// parseTimestamp is yaml.v3's parseTimestamp, with the formats it accepts.
func parseTimestamp(s string) (time.Time, bool) {
	formats := [...]string{
		"2006-1-2T15:4:5.999999999Z07:00",
		"2006-1-2t15:4:5.999999999Z07:00",
		"2006-1-2 15:4:5.999999999",
		"2006-1-2",
	}
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c < '0' || c > '9' {
			break
		}
	}
	if i != 4 || i == len(s) || s[i] != '-' {
		return time.Time{}, false
	}
	for _, f := range formats {
		if t, err := time.Parse(f, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// appendJSONFloat formats f as encoding/json does.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it (HTML-safe; invalid UTF-8 becomes U+FFFD, which protojson
// needs: it rejects invalid UTF-8).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
