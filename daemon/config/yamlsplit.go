package config

import (
	"bytes"
	"errors"
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// This file is the parallel path of the YAML decode. yaml.v3 builds a node
// tree of the whole document before anything can be decoded (1.5 M nodes,
// ~240 MiB live, 0.7 s for 10,000 services), so for the usual block-style
// bootstrap the items of static_resources.listeners and .clusters are cut
// out of the text by their lines and each is parsed, written as JSON and
// decoded by protojson on its own, on several goroutines; the rest of the
// document is parsed with the two sequences replaced by []. Nothing of the
// size of the document is ever built but the input and the result.
//
// Why an item parsed alone is the item parsed in the document: an item
// starts at a line "- " at the sequence's indentation m and takes every
// following line up to the next non-blank, non-comment line indented m or
// less. The scanner reads those bytes alike in both cases (it is in block
// context at the start of a line, indentation m in effect, nothing open).
// Block scalars and plain scalars end at a line indented m or less, so they
// cannot reach past an item. What can (a quoted scalar or a flow
// collection spanning such a line) leaves the item's own text open at its
// end, which does not parse: then, and on any other failure, the whole
// document is decoded in one piece, as it always is for shapes this file
// does not take apart. Where the text is cut is checked against the parsed
// rest: static_resources must be a key of the root mapping at the line
// found, each emptied sequence a key of it at its line and column (this
// catches text that only looks like those keys, inside a multi-line
// scalar). Left to the one-piece decode: anchors and aliases (an alias
// cannot reach across the cut), directives (%TAG changes what a tag in an
// item means), tabs in indentation, and line breaks other than \n and
// \r\n (YAML 1.1 also breaks lines at NEL, LS and PS).

// yamlSplit is a block-style YAML bootstrap taken apart.
type yamlSplit struct {
	listeners, clusters []span // each item: its lines, from its "- "
	// rest is the document with each sequence's key line replaced by
	// "<key>: []" and its items removed.
	rest []byte
	// staticLine is the line of "static_resources:" (1-based; the same in
	// the input and the rest), keys where each emptied key is in the rest.
	staticLine int
	keys       []restKey
}

// restKey is where a key whose sequence was emptied is in the rest.
type restKey struct {
	name         string
	line, column int // 1-based, as yaml.Node's
}

// yamlLine is one line of the input: [start, end) without the line break,
// next the start of the following line.
type yamlLine struct {
	start, end, next int
	indent           int  // leading spaces
	content          bool // not blank and not a comment
}

// lineAt returns the line starting at i. A tab ending the indentation is an
// error: YAML's rules for tabs there are not the ones this file relies on.
func lineAt(data []byte, i int) (yamlLine, error) {
	l := yamlLine{start: i, end: len(data), next: len(data)}
	if j := bytes.IndexByte(data[i:], '\n'); j >= 0 {
		l.end, l.next = i+j, i+j+1
	}
	if l.end > l.start && data[l.end-1] == '\r' {
		l.end--
	}
	for l.start+l.indent < l.end && data[l.start+l.indent] == ' ' {
		l.indent++
	}
	if p := l.start + l.indent; p < l.end {
		switch data[p] {
		case '\t':
			return l, errors.New("a tab in indentation")
		case '#':
		default:
			l.content = true
		}
	}
	return l, nil
}

// text is the line without its indentation.
func (l yamlLine) text(data []byte) []byte { return data[l.start+l.indent : l.end] }

// isItem reports whether the line starts a block sequence item ("- " or a
// lone "-").
func (l yamlLine) isItem(data []byte) bool {
	t := l.text(data)
	return len(t) > 0 && t[0] == '-' && (len(t) == 1 || t[1] == ' ')
}

// keyLine reports whether the line's text is exactly "name:", optionally
// followed by spaces and a comment: a key whose value is on the lines below.
func keyLine(t []byte, name string) bool {
	if !bytes.HasPrefix(t, []byte(name)) || len(t) <= len(name) || t[len(name)] != ':' {
		return false
	}
	t = t[len(name)+1:]
	if len(t) == 0 {
		return true
	}
	if t[0] != ' ' { // "listeners:x" is a scalar, "listeners:#x" too
		return false
	}
	t = bytes.TrimLeft(t, " ")
	return len(t) == 0 || t[0] == '#'
}

// lineNo returns the 1-based line number of byte offset off, counting from
// (from, fromLine).
func lineNo(data []byte, from, fromLine, off int) int {
	return fromLine + bytes.Count(data[from:off], []byte{'\n'})
}

// splitYAML takes a block-style bootstrap apart; the error says why it does
// not apply (for the log: the one-piece decode is used then).
func splitYAML(data []byte) (ys yamlSplit, err error) {
	if len(data) >= 2 && (data[0] == 0xfe && data[1] == 0xff || data[0] == 0xff && data[1] == 0xfe) {
		return ys, errors.New("UTF-16 input")
	}
	for i := bytes.IndexByte(data, '\r'); i >= 0; {
		if i+1 >= len(data) || data[i+1] != '\n' {
			return ys, errors.New("a carriage return not followed by a line feed")
		}
		j := bytes.IndexByte(data[i+1:], '\r')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	for _, b := range []string{"\u0085", "\u2028", "\u2029"} {
		if bytes.Contains(data, []byte(b)) {
			return ys, errors.New("a NEL, LS or PS line break")
		}
	}
	if len(data) > 0 && data[0] == '%' || bytes.Contains(data, []byte("\n%")) {
		return ys, errors.New("a directive")
	}

	// static_resources: the first line that is exactly that key.
	var l yamlLine
	found := false
	for i := 0; i < len(data); i = l.next {
		if l, err = lineAt(data, i); err != nil {
			l.indent = -1 // only lines of static_resources must be clean
		}
		if l.indent == 0 && keyLine(l.text(data), "static_resources") {
			found = true
			break
		}
	}
	if !found {
		if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
			return ys, errors.New("a flow-style (JSON) document read as YAML: name the file .json to decode it as JSON")
		}
		return ys, errors.New(`no line "static_resources:" (a block mapping key at column 1)`)
	}
	ys.staticLine = lineNo(data, 0, 1, l.start)

	// Its mapping: keys at indentation k, listeners and clusters among them.
	var rest []byte
	restFrom, restLine := 0, 1 // input copied to the rest up to restFrom
	k := 0
	seen := map[string]bool{}
	i := l.next
	for i < len(data) {
		if l, err = lineAt(data, i); err != nil {
			return ys, fmt.Errorf("line %d: %w", lineNo(data, 0, 1, i), err)
		}
		if !l.content {
			i = l.next
			continue
		}
		if l.indent == 0 {
			break // the next key of the root mapping
		}
		if k == 0 {
			k = l.indent
		}
		if l.indent < k {
			return ys, fmt.Errorf("line %d: indented less than static_resources' keys", lineNo(data, 0, 1, l.start))
		}
		var name string
		var dst *[]span
		switch t := l.text(data); {
		case l.indent > k:
		case keyLine(t, "listeners"):
			name, dst = "listeners", &ys.listeners
		case keyLine(t, "clusters"):
			name, dst = "clusters", &ys.clusters
		}
		if dst == nil {
			i = l.next
			continue
		}
		if seen[name] {
			return ys, fmt.Errorf("static_resources.%s given twice", name)
		}
		seen[name] = true
		key := l
		// The first content line below the key: a sequence item, or the
		// value is null (left as it is).
		var first yamlLine
		for j := key.next; j < len(data); j = first.next {
			if first, err = lineAt(data, j); err != nil {
				return ys, fmt.Errorf("line %d: %w", lineNo(data, 0, 1, j), err)
			}
			if first.content {
				break
			}
		}
		if !first.content || first.indent < k || (first.indent == k && !first.isItem(data)) {
			i = key.next
			continue
		}
		if !first.isItem(data) {
			return ys, fmt.Errorf("static_resources.%s is not a block sequence", name)
		}
		m := first.indent
		item := first.start
		end := len(data)
		for j := first.next; j < len(data); {
			c, err := lineAt(data, j)
			if err != nil {
				return ys, fmt.Errorf("line %d: %w", lineNo(data, 0, 1, j), err)
			}
			if !c.content || c.indent > m {
				j = c.next
				continue
			}
			if c.indent == m && c.isItem(data) {
				*dst = append(*dst, span{item, c.start})
				item, j = c.start, c.next
				continue
			}
			if c.indent > k && c.indent <= m { // m > k: between the key and its items
				return ys, fmt.Errorf("line %d: indented between static_resources.%s and its items", lineNo(data, 0, 1, c.start), name)
			}
			end = c.start
			break
		}
		*dst = append(*dst, span{item, end})
		// The rest: up to the key, then "<key>: []".
		rest = append(rest, data[restFrom:key.start]...)
		restLine = lineNo(data, restFrom, restLine, key.start)
		ys.keys = append(ys.keys, restKey{name: name, line: restLine, column: k + 1})
		rest = append(rest, data[key.start:key.start+k+len(name)+1]...)
		rest = append(rest, " []\n"...)
		restLine++
		restFrom = end
		i = end
	}
	ys.rest = append(rest, data[restFrom:]...)
	return ys, nil
}

// errYAMLAnchor stops the parallel path at an anchor or alias.
var errYAMLAnchor = errors.New("an anchor or alias")

// decodeYAMLSplit is the parallel YAML decode; the error says why it did
// not apply or which part failed (the one-piece decode is used then, for
// its result or its error).
func decodeYAMLSplit(data []byte, workers int) (*bootstrapv3.Bootstrap, error) {
	ys, err := splitYAML(data)
	if err != nil {
		return nil, err
	}
	b, err := decodeYAMLRest(ys)
	if err != nil {
		return nil, err
	}
	if len(ys.keys) == 0 {
		return b, nil
	}
	listeners, clusters, err := decodeElements(len(ys.listeners), len(ys.clusters), workers,
		func(i int, m proto.Message, scratch *[]byte) error {
			s := ys.listeners
			if i >= len(s) {
				i, s = i-len(s), ys.clusters
			}
			item, err := parseYAMLItem(data[s[i].start:s[i].end])
			if err != nil {
				return err
			}
			e := yamlEncoder{out: (*scratch)[:0], plain: true}
			if err := e.encode(item); err != nil {
				return err
			}
			*scratch = e.out
			return protojson.Unmarshal(e.out, m)
		})
	if err != nil {
		return nil, err
	}
	if b.StaticResources == nil { // the rest has static_resources; not reached
		return nil, errors.New("no static_resources in the rest")
	}
	if len(listeners) > 0 {
		b.StaticResources.Listeners = listeners
	}
	if len(clusters) > 0 {
		b.StaticResources.Clusters = clusters
	}
	return b, nil
}

// decodeYAMLRest parses and decodes the rest of a split document, after
// checking that the cut was where the keys are.
func decodeYAMLRest(ys yamlSplit) (*bootstrapv3.Bootstrap, error) {
	doc, err := parseYAML(ys.rest)
	if err != nil {
		return nil, fmt.Errorf("parse the rest: %w", err)
	}
	root := doc.Content[0]
	sr := keyAt(root, "static_resources", ys.staticLine, 1)
	if sr == nil || sr.Kind != yaml.MappingNode {
		return nil, errors.New("static_resources is not where it was found")
	}
	for _, k := range ys.keys {
		v := keyAt(sr, k.name, k.line, k.column)
		if v == nil || v.Kind != yaml.SequenceNode || v.Style&yaml.FlowStyle == 0 || len(v.Content) != 0 || v.Line != k.line {
			return nil, fmt.Errorf("static_resources.%s is not where it was found", k.name)
		}
	}
	e := yamlEncoder{out: make([]byte, 0, len(ys.rest)), plain: true}
	if err := e.encode(doc); err != nil {
		return nil, err
	}
	b := new(bootstrapv3.Bootstrap)
	if err := protojson.Unmarshal(e.out, b); err != nil {
		return nil, err
	}
	return b, nil
}

// keyAt returns the value of mapping n's plain key name at line and column,
// or nil.
func keyAt(n *yaml.Node, name string, line, column int) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Style == 0 && k.Value == name && k.Line == line && k.Column == column {
			return n.Content[i+1]
		}
	}
	return nil
}

// parseYAMLItem parses the text of one sequence item and returns the item,
// which must be a mapping.
func parseYAMLItem(text []byte) (item *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			item, err = nil, fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("an item is not one document")
	}
	seq := doc.Content[0]
	if seq.Kind != yaml.SequenceNode || seq.Style != 0 || len(seq.Content) != 1 || seq.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("an item is not one mapping")
	}
	return seq.Content[0], nil
}
