package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/sirupsen/logrus"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	// Registered so that typed_config (google.protobuf.Any) of these types
	// resolves while decoding; other @type values are rejected.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// MaxConfigBytes bounds the size of a bootstrap ParseBootstrap and LoadFile
// accept.
const MaxConfigBytes = 64 << 20

// Format is the encoding of a bootstrap.
type Format uint8

const (
	// FormatAuto treats input whose first non-space byte is '{' as JSON and
	// anything else as YAML.
	FormatAuto Format = iota
	FormatYAML
	FormatJSON
)

// String returns "auto", "yaml" or "json".
func (f Format) String() string {
	switch f {
	case FormatAuto:
		return "auto"
	case FormatYAML:
		return "yaml"
	case FormatJSON:
		return "json"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// FormatOf returns the format implied by a file name's extension: FormatJSON
// for .json, FormatYAML for .yaml and .yml, FormatAuto otherwise.
func FormatOf(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return FormatJSON
	case ".yaml", ".yml":
		return FormatYAML
	}
	return FormatAuto
}

// LoadFile reads and translates the Envoy v3 bootstrap at path (symlinks are
// followed). Errors name the file.
func LoadFile(path string) (*Model, error) {
	m, _, err := LoadFileContent(path)
	return m, err
}

// LoadFileContent is LoadFile that also returns the file's content, for
// WatchOptions.Applied. The content is returned when it was read but is
// invalid too (for WatchOptions.Rejected).
func LoadFileContent(path string) (*Model, []byte, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load config %s: %w", path, err)
	}
	m, err := ParseBootstrap(data, FormatOf(path))
	if err != nil {
		return nil, data, fmt.Errorf("load config %s: %w", path, err)
	}
	return m, data, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Sized from the file (as os.ReadFile does): io.ReadAll would allocate
	// twice the file, 30 MB of garbage for a 15 MB config.
	size := 0
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		if st.Size() > MaxConfigBytes {
			return nil, fmt.Errorf("read config: larger than %d bytes", MaxConfigBytes)
		}
		size = int(st.Size())
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxConfigBytes+1)); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("read config: larger than %d bytes", MaxConfigBytes)
	}
	return data, nil
}

// ParseBootstrap decodes an Envoy v3 bootstrap (YAML or JSON) and translates
// its static_resources. Unknown fields and unresolvable typed_config @type
// values are rejected with a *ParseError (ErrSyntax) giving line, column and
// field path; translation problems come back as a *ValidationError
// (ErrInvalid); input without a document returns ErrEmpty.
func ParseBootstrap(data []byte, format Format) (*Model, error) {
	b, serial, err := decodeBootstrap(data, format)
	if err != nil {
		return nil, err
	}
	sr := b.GetStaticResources()
	m, err := Translate(sr.GetListeners(), sr.GetClusters())
	if err != nil {
		return nil, err
	}
	if b.GetDynamicResources() != nil {
		m.Unsupported = append(m.Unsupported, Note{Kind: NotSupported, Object: "bootstrap dynamic_resources",
			Reason: "xDS sources are not used in local-file mode; only static_resources are applied"})
		sortNotes(m.Unsupported)
	}
	m.SerialDecode = serial
	return m, nil
}

// LargeConfigBytes is the size from which LogSerialDecode warns.
const LargeConfigBytes = 4 << 20

// LogSerialDecode warns when a config of size bytes, above
// LargeConfigBytes, was decoded serially (m.SerialDecode), naming why: such
// a config takes several times as long to apply and, in YAML, several
// times the memory. Smaller configs decode in milliseconds either way.
func LogSerialDecode(log logrus.FieldLogger, m *Model, size int) {
	if m == nil || m.SerialDecode == nil || size <= LargeConfigBytes {
		return
	}
	log.WithFields(logrus.Fields{"phase": "parse", "bytes": size, "reason": m.SerialDecode.Error()}).Warn(
		"large config decoded on one goroutine, several times slower than in parallel (in YAML, with several times the memory): " +
			"write static_resources' listeners and clusters as block sequences, without anchors, aliases, directives or tabs in indentation, or use JSON (docs/daemon.md)")
}

// DecodeBootstrap decodes an Envoy v3 bootstrap without translating it.
func DecodeBootstrap(data []byte, format Format) (*bootstrapv3.Bootstrap, error) {
	b, _, err := decodeBootstrap(data, format)
	return b, err
}

// errJSONShape is why a JSON bootstrap was decoded in one piece.
var errJSONShape = errors.New("static_resources is not one object of listeners and clusters arrays of objects, or an element did not decode")

// decodeBootstrap is DecodeBootstrap that also returns why static_resources'
// listeners and clusters were not parsed and decoded in parallel (serial is
// nil when they were).
func decodeBootstrap(data []byte, format Format) (b *bootstrapv3.Bootstrap, serial, err error) {
	if len(data) > MaxConfigBytes {
		return nil, nil, fmt.Errorf("parse bootstrap: input is %d bytes, more than %d", len(data), MaxConfigBytes)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	trimmed := bytes.TrimSpace(data)
	if format == FormatAuto {
		format = FormatYAML
		if len(trimmed) > 0 && trimmed[0] == '{' {
			format = FormatJSON
		}
	}
	workers := decodeWorkers()
	var yamlData []byte
	switch format {
	case FormatJSON:
		if len(trimmed) == 0 {
			return nil, nil, fmt.Errorf("parse bootstrap: %w", ErrEmpty)
		}
		if b, ok := decodeSplit(data, workers); ok {
			return b, nil, nil
		}
		serial = errJSONShape
		b = new(bootstrapv3.Bootstrap)
		err = protojson.Unmarshal(data, b)
	case FormatYAML:
		if b, serial = decodeYAMLSplit(data, workers); serial == nil {
			return b, nil, nil
		}
		// The node tree is not kept: it is several times the size of the
		// JSON (~240 MiB for a 15 MB file) and is needed again only to
		// locate an error, which is rare; then the YAML is parsed again.
		yamlData = data
		if data, err = yamlToJSON(data); err != nil {
			return nil, serial, fmt.Errorf("parse bootstrap: %w", err)
		}
		b, err = decodeJSON(data, workers)
	default:
		return nil, nil, fmt.Errorf("parse bootstrap: unknown format %v", format)
	}
	if err != nil {
		return nil, serial, fmt.Errorf("parse bootstrap: %w", locate(err, data, yamlData))
	}
	return b, serial, nil
}

// ---- YAML ----

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// yamlToJSON converts one YAML document to JSON.
func yamlToJSON(data []byte) (out []byte, err error) {
	defer func() {
		// The YAML library has panicked on hostile input before; a config
		// file must never take the daemon down.
		if r := recover(); r != nil {
			out, err = nil, &ParseError{Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	doc, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	// The JSON of a block-style YAML file is ~0.9 times its size.
	return nodeJSON(make([]byte, 0, len(data)+len(data)/8), doc)
}

// parseYAML parses data, which must hold one YAML document, into a node
// tree.
func parseYAML(data []byte) (doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, &ParseError{Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	doc = new(yaml.Node)
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrEmpty
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &ParseError{Line: extra.Line, Column: extra.Column, Msg: "more than one YAML document; a bootstrap is one document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null") {
		return nil, ErrEmpty
	}
	return doc, nil
}

func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	pe := &ParseError{Msg: "invalid YAML: " + msg}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		pe.Line, _ = strconv.Atoi(m[1])
	}
	return pe
}

// ---- error location ----

var protoPosRE = regexp.MustCompile(`\(line (\d+):(\d+)\): (.*)$`)
var resolveRE = regexp.MustCompile(`^unable to resolve "([^"]*)"`)

// locate turns a protojson error into a *ParseError with the field path and,
// for YAML input (yamlData not nil), the position in the YAML text, found by
// parsing it again.
func locate(err error, jsonData, yamlData []byte) error {
	msg := err.Error()
	pe := &ParseError{Msg: msg}
	m := protoPosRE.FindStringSubmatch(msg)
	if m == nil {
		// Not positioned (e.g. a wrong type inside an Any value); drop the
		// library prefix only.
		if i := strings.Index(msg, ":"); i >= 0 && strings.HasPrefix(msg, "proto") {
			pe.Msg = strings.TrimSpace(msg[i+1:])
		}
		return pe
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	pe.Msg = m[3]
	if r := resolveRE.FindStringSubmatch(pe.Msg); r != nil {
		pe.Msg = fmt.Sprintf("unknown @type %q: a config file may carry tcp_proxy, http_connection_manager and router configs, "+
			"and the filters and access loggers daemon/config/extensions.go lists (noted as not applied); "+
			"remove that entry (compat mode would not apply it: connections and requests pass it by)", r[1])
	}
	path := jsonPath(jsonData, offsetOf(jsonData, line, col))
	pe.Path = path.String()
	if yamlData == nil {
		pe.Line, pe.Column = line, col
		return pe
	}
	doc, derr := parseYAML(yamlData)
	if derr != nil { // it parsed a moment ago
		return pe
	}
	if n := path.find(doc); n != nil {
		pe.Line, pe.Column = n.Line, n.Column
	}
	return pe
}

// offsetOf converts protojson's 1-based line and rune column to a byte
// offset.
func offsetOf(b []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return len(b)
		}
		off += i + 1
	}
	for c := 1; c < col && off < len(b); c++ {
		_, size := utf8.DecodeRune(b[off:])
		off += size
	}
	return off
}

type pathSeg struct {
	key   string
	index int // -1 for a key segment
}

type fieldPath []pathSeg

func (p fieldPath) String() string {
	var b strings.Builder
	for _, s := range p {
		if s.index >= 0 {
			fmt.Fprintf(&b, "[%d]", s.index)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.key)
	}
	return b.String()
}

// jsonPath returns the path of the JSON element at byte offset off.
func jsonPath(data []byte, off int) fieldPath {
	type frame struct {
		obj       bool
		expectKey bool
		key       string
		index     int
	}
	var stack []frame
	current := func(withKey bool) fieldPath {
		var p fieldPath
		for i, f := range stack {
			switch {
			case f.obj && (i < len(stack)-1 || withKey) && f.key != "":
				p = append(p, pathSeg{key: f.key, index: -1})
			case !f.obj:
				p = append(p, pathSeg{index: f.index})
			}
		}
		return p
	}
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		top := &stack[len(stack)-1]
		if top.obj {
			top.expectKey = true
		} else {
			top.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return current(true)
		}
		isKey := len(stack) > 0 && stack[len(stack)-1].obj && stack[len(stack)-1].expectKey
		if _, isDelim := tok.(json.Delim); isKey && !isDelim {
			stack[len(stack)-1].key = tok.(string)
			stack[len(stack)-1].expectKey = false
			if dec.InputOffset() > int64(off) {
				return current(true)
			}
			continue
		}
		if dec.InputOffset() > int64(off) {
			return current(true)
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{obj: true, expectKey: true})
		case json.Delim('['):
			stack = append(stack, frame{index: 0})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// find returns the YAML node for the path: the key node for a key segment
// (where an unknown field is written), the element for an index.
func (p fieldPath) find(doc *yaml.Node) *yaml.Node {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	last := n
	for _, s := range p {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if s.index >= 0 {
			if n.Kind != yaml.SequenceNode || s.index >= len(n.Content) {
				return last
			}
			n = n.Content[s.index]
			last = n
			continue
		}
		k, v := mappingEntry(n, s.key, 0)
		if k == nil {
			return last
		}
		last, n = k, v
	}
	return last
}

func mappingEntry(n *yaml.Node, key string, depth int) (*yaml.Node, *yaml.Node) {
	for n.Kind == yaml.AliasNode && n.Alias != nil && depth < 100 {
		n = n.Alias
		depth++
	}
	if n.Kind != yaml.MappingNode || depth > 100 {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 { // merge keys
		if n.Content[i].Value == "<<" {
			if k, v := mappingEntry(n.Content[i+1], key, depth+1); k != nil {
				return k, v
			}
		}
	}
	return nil, nil
}
