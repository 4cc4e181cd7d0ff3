package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"kmesh.dev/kmesh/daemon/config/configtest"
)

// TestYAMLToJSON checks the JSON written for every kind of scalar, anchors,
// merge keys, nested sequences and escapes, and that it is byte for byte
// what the former path (decode into any, encoding/json) wrote.
func TestYAMLToJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"strings", `{a: plain, b: "double", c: 'single', d: !!str 12, e: "12", f: 10.96.0.10, g: "", h: hello world}`,
			`{"a":"plain","b":"double","c":"single","d":"12","e":"12","f":"10.96.0.10","g":"","h":"hello world"}`},
		{"block scalars", "a: |\n  line1\n  line2\nb: >\n  folded\n  text\nc: |-\n  kept\n",
			`{"a":"line1\nline2\n","b":"folded text\n","c":"kept"}`},
		{"null", "a:\nb: ~\nc: null\nd: Null\ne: NULL\nf: !!null ''\n", `{"a":null,"b":null,"c":null,"d":null,"e":null,"f":null}`},
		{"bool", "[true, True, TRUE, false, False, FALSE, yes, no, on, off, y, n]",
			`[true,true,true,false,false,false,"yes","no","on","off","y","n"]`},
		{"decimal int", "[0, 1, -1, +5, 80, 1_000, 9223372036854775807, -9223372036854775808]",
			`[0,1,-1,5,80,1000,9223372036854775807,-9223372036854775808]`},
		{"non-decimal int", "[0x1F, 0X1f, -0x10, 0o17, -0o17, 0b101, -0b101, 0777, 0x_ff]",
			`[31,31,-16,15,-15,5,-5,511,255]`},
		{"big int", "[18446744073709551615, 18446744073709551616, 08]",
			`[18446744073709551615,18446744073709552000,8]`},
		{"float", "[1.5, -0.25, 1.0, 1e3, 2E-2, .5, -.5, +1.5, 1e21, 1e-7, 0.000001, 123456789.125, -0.0]",
			`[1.5,-0.25,1,1000,0.02,0.5,-0.5,1.5,1e+21,1e-7,0.000001,123456789.125,-0]`},
		{"tagged", "[!!float 3, !!int '7', !!bool true, !!str true, !!binary aGVsbG8=, !custom x, !!timestamp 2001-12-14]",
			`[3,7,true,"true","hello","x","2001-12-14T00:00:00Z"]`},
		{"timestamp", "[2001-12-14, 2001-12-14t21:59:43.10-05:00, 2001-12-14 21:59:43.10, 2001-12-14x]",
			`["2001-12-14T00:00:00Z","2001-12-14T21:59:43.1-05:00","2001-12-14T21:59:43.1Z","2001-12-14x"]`},
		{"non-string keys", "{1: a, true: b, ~: c, 1.5: d, 0x10: e, 2001-12-14: f}",
			`{"1":"a","1.5":"d","16":"e","2001-12-14 00:00:00 +0000 UTC":"f","\u003cnil\u003e":"c","true":"b"}`},
		{"sorted keys", "{zeta: 1, alpha: 2, Beta: 3, _x: 4, \"\": 5}", `{"":5,"Beta":3,"_x":4,"alpha":2,"zeta":1}`},
		{"many keys", "{k17: 1, k16: 1, k15: 1, k14: 1, k13: 1, k12: 1, k11: 1, k10: 1, k09: 1, k08: 1, k07: 1, k06: 1, k05: 1, k04: 1, k03: 1, k02: 1, k01: 1, k00: 1}",
			`{"k00":1,"k01":1,"k02":1,"k03":1,"k04":1,"k05":1,"k06":1,"k07":1,"k08":1,"k09":1,"k10":1,"k11":1,"k12":1,"k13":1,"k14":1,"k15":1,"k16":1,"k17":1}`},
		{"nested sequences", "- [1, [2, [3, []]]]\n- - a\n  - - b\n- []\n- {}\n", `[[1,[2,[3,[]]]],["a",["b"]],[],{}]`},
		{"anchors", "base: &b {x: 1, y: [&n 2, 3]}\ncopy: *b\nn: *n\nlist: &l [a, b]\nlists: [*l, *l]\n",
			`{"base":{"x":1,"y":[2,3]},"copy":{"x":1,"y":[2,3]},"list":["a","b"],"lists":[["a","b"],["a","b"]],"n":2}`},
		{"merge", "a: &a {x: 1, y: 2}\nb: &b {y: 3, z: 4}\nc:\n  <<: [*a, *b]\n  z: 5\n  w: 6\nd: {<<: *b, y: 0}\ne: {<<: {q: 1}}\n",
			`{"a":{"x":1,"y":2},"b":{"y":3,"z":4},"c":{"w":6,"x":1,"y":2,"z":5},"d":{"y":0,"z":4},"e":{"q":1}}`},
		{"nested merge", "a: &a {x: 1, y: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b, z: 3}\n",
			`{"a":{"x":1,"y":1},"b":{"x":1,"y":2},"c":{"x":1,"y":2,"z":3}}`},
		{"quoted merge key is a key", `{"<<": {a: 1}}`, `{"\u003c\u003c":{"a":1}}`},
		{"merge key value", "{a: <<}", `{"a":"\u003c\u003c"}`},
		{"alias key", "a: &k name\n*k : v\n", `{"a":"name","name":"v"}`},
		{"escapes", `{a: "tab\there", b: "nl\nq\"bs\\", c: "\x01\x1f\u007f", d: "\b\f\r", e: "<a&b>", f: "\u2028\u2029"}`,
			`{"a":"tab\there","b":"nl\nq\"bs\\","c":"\u0001\u001f` + "\x7f" + `","d":"\b\f\r","e":"\u003ca\u0026b\u003e","f":"\u2028\u2029"}`},
		{"unicode", "{é: café, k: \"\\u00e9\\U0001F600\", 名前: 値, emoji: 😀}",
			`{"emoji":"😀","k":"é😀","é":"café","名前":"値"}`},
		{"binary with invalid UTF-8", "a: !!binary /w==\n", `{"a":"\ufffd"}`},
		{"scalar document", "hello\n", `"hello"`},
		{"comments", "# c\na: 1 # x\n# d\nb: [1, # y\n 2]\n", `{"a":1,"b":[1,2]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := yamlToJSON([]byte(tc.in))
			if err != nil {
				t.Fatalf("yamlToJSON: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("JSON:\n got  %s\n want %s", got, tc.want)
			}
			ref, _, err := RefYAMLToJSON([]byte(tc.in))
			if err != nil {
				t.Fatalf("former path: %v", err)
			}
			if string(got) != string(ref) {
				t.Errorf("differs from the former path:\n new %s\n old %s", got, ref)
			}
		})
	}
}

func TestYAMLToJSONErrors(t *testing.T) {
	billion := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 'b'; i <= 'i'; i++ {
		billion += fmt.Sprintf("%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	tests := []struct {
		name, in  string
		msg       string // ParseError.Msg
		line, col int
		refFails  bool // the former path rejected it too
	}{
		{"nan", "a: 1\nb: .nan\n", "convert YAML to JSON: unsupported value: NaN", 2, 4, true},
		{"inf", "a: [-.inf]\n", "convert YAML to JSON: unsupported value: -Inf", 1, 5, true},
		{"bad int", "a:\n  b: !!int abc\n", "invalid YAML: cannot decode !!str `abc` as a !!int", 2, 6, true},
		{"uint as float", "a: !!float 18446744073709551615\n", "invalid YAML: cannot decode !!int `18446744073709551615` as a !!float", 1, 4, true},
		{"bad timestamp", "a: !!timestamp 12\n", "invalid YAML: cannot decode !!int `12` as a !!timestamp", 1, 4, true},
		{"bad base64", "a: !!binary '@@'\n", "invalid YAML: !!binary value contains invalid base64 data", 1, 4, true},
		{"alias cycle", "a: &a [*a]\n", "invalid YAML: anchor 'a' value contains itself", 1, 8, true},
		{"merge cycle", "x: &x {<<: *x}\n", "invalid YAML: anchor 'x' value contains itself", 1, 12, true},
		{"cycle through a merged value", "a: &a {b: {<<: *a}}\n", "invalid YAML: anchor 'a' value contains itself", 1, 16, true},
		{"merge of a scalar", "a: {<<: 1}\n", "invalid YAML: map merge requires map or sequence of maps as the value", 1, 9, true},
		{"merge of a sequence of scalars", "s: &s x\na: {<<: [*s]}\n", "invalid YAML: map merge requires map or sequence of maps as the value", 1, 4, true},
		{"duplicate key", "a: 1\nb: 2\na: 3\n", `invalid YAML: mapping key "a" already defined at line 1`, 3, 1, true},
		{"duplicate key, large mapping", strings.Repeat("x", 0) + manyKeys(40) + "k7: again\n", `invalid YAML: mapping key "k7" already defined at line 8`, 41, 1, true},
		{"duplicate quoted key", "a: 1\n'a': 2\n", `invalid YAML: mapping key "a" already defined at line 1`, 2, 1, true},
		{"duplicate merge key", "m: &m {a: 1}\nx: {<<: *m, <<: *m}\n", `invalid YAML: mapping key "<<" already defined at line 2`, 2, 13, true},
		{"same key after formatting", "{1: a, '1': b}", `invalid YAML: mapping key "1" already defined at line 1`, 1, 8, true},
		{"same formatted non-string key", "{0x1: a, 1: b}", `invalid YAML: mapping key "1" appears twice`, 1, 10, false},
		{"mapping as key", "? {a: 1}\n: x\n", "invalid YAML: invalid map key: a mapping cannot be a mapping key", 1, 3, true},
		{"excessive aliasing", billion, "invalid YAML: document contains excessive aliasing", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := yamlToJSON([]byte(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("yamlToJSON = %.80q, %v; want a *ParseError", out, err)
			}
			if pe.Msg != tc.msg {
				t.Errorf("message:\n got  %s\n want %s", pe.Msg, tc.msg)
			}
			if tc.line != 0 && (pe.Line != tc.line || pe.Column != tc.col) {
				t.Errorf("position %d:%d, want %d:%d", pe.Line, pe.Column, tc.line, tc.col)
			}
			if _, _, rerr := RefYAMLToJSON([]byte(tc.in)); (rerr != nil) != tc.refFails {
				t.Errorf("former path error %v, want failure %v", rerr, tc.refFails)
			}
			// and through DecodeBootstrap
			if _, err := DecodeBootstrap([]byte(tc.in), FormatYAML); !errors.Is(err, ErrSyntax) || !strings.HasPrefix(err.Error(), "parse bootstrap: ") {
				t.Errorf("DecodeBootstrap: %v", err)
			}
		})
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "k%d: %d\n", i, i)
	}
	return b.String()
}

// equivalenceInputs are bootstraps in YAML: the embedded default, the
// daemon benchmark's large config in small, and one using anchors, merge
// keys and flow and block styles across every supported filter.
func equivalenceInputs(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"default.yaml":  defaultYAML,
		"anchors.yaml":  []byte(anchorsBootstrap),
		"generated.yml": generatedBootstrap(200, 4),
	}
}

const anchorsBootstrap = `# every supported filter, with anchors and merge keys
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: "10.96.0.10", port_value: 80}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: "tcp <&> \u00e9"
          weighted_clusters:
            clusters:
            - {name: a, weight: 0x5A}
            - {name: b, weight: 1_0}
  - name: http
    address: {socket_address: {address: 0.0.0.0, port_value: 9080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            name: local
            virtual_hosts:
            - name: ratings
              domains: ["10.96.0.20", "10.96.0.20:9080"]
              routes:
              - name: admin
                match: {prefix: /admin}
                route: {cluster: b}
              - match: {prefix: /, case_sensitive: true}
                route: {cluster: a, timeout: 1.5s}
  clusters:
  - <<: &cluster {type: STATIC, lb_policy: RANDOM, connect_timeout: 0.25s}
    name: a
    load_assignment:
      cluster_name: a
      endpoints:
      - lb_endpoints:
        - endpoint: &ep {address: {socket_address: {address: 10.244.1.1, port_value: 9080}}}
          load_balancing_weight: 3
        - endpoint: {address: {socket_address: {address: 10.244.1.2, port_value: 9080}}}
  - <<: *cluster
    name: b
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: b
      endpoints: [{lb_endpoints: [{endpoint: *ep}]}]
`

// generatedBootstrap is the daemon benchmark's bootstrap (YAML).
func generatedBootstrap(n, eps int) []byte {
	return []byte(configtest.Large(n, eps, 8080).YAML())
}

// TestDecodeBootstrapEquivalent: the new YAML path decodes to the same
// bootstrap as the former one, from the same JSON bytes.
func TestDecodeBootstrapEquivalent(t *testing.T) {
	for name, in := range equivalenceInputs(t) {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeBootstrap(in, FormatYAML)
			if err != nil {
				t.Fatal(err)
			}
			want, err := RefDecodeBootstrap(in, FormatYAML)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("bootstraps differ:\n new %v\n old %v", got, want)
			}
			if len(got.GetStaticResources().GetListeners()) == 0 || len(got.GetStaticResources().GetClusters()) == 0 {
				t.Errorf("empty bootstrap %v", got)
			}
			j, err := yamlToJSON(in)
			if err != nil {
				t.Fatal(err)
			}
			ref, _, err := RefYAMLToJSON(in)
			if err != nil {
				t.Fatal(err)
			}
			if string(j) != string(ref) {
				t.Errorf("JSON differs from the former path's")
			}
			// the model too
			m, err := ParseBootstrap(in, FormatYAML)
			if err != nil {
				t.Fatal(err)
			}
			if m.Version == "" || len(m.Services) == 0 {
				t.Errorf("model %+v", m)
			}
		})
	}
}

// TestParseErrorLocatedAfterReparse: protojson errors are located in the
// YAML, which is parsed again for that (the first tree is gone by then),
// also through anchors and merge keys.
func TestParseErrorLocatedAfterReparse(t *testing.T) {
	in := strings.Replace(anchorsBootstrap, "connect_timeout: 0.25s}", "connect_timeout: 0.25s, colour: blue}", 1)
	_, err := DecodeBootstrap([]byte(in), FormatYAML)
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("DecodeBootstrap: %v", err)
	}
	want := `line 39, column 76: static_resources.clusters[0].colour: unknown field "colour"`
	if pe.Error() != want {
		t.Errorf("error:\n got  %s\n want %s", pe.Error(), want)
	}
	_, rerr := RefDecodeBootstrap([]byte(in), FormatYAML)
	if rerr == nil || rerr.Error() != err.Error() {
		t.Errorf("former path: %v, new: %v", rerr, err)
	}
}

// FuzzYAMLToJSON compares the new encoder with the former path on arbitrary
// input: where the former path wrote JSON, the new one writes the same bytes
// (or rejects keys that collapse into one); where it failed, so does the new
// one.
func FuzzYAMLToJSON(f *testing.F) {
	f.Add([]byte(anchorsBootstrap))
	f.Add(defaultYAML)
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("x: &x {<<: *x}\n"))
	f.Add([]byte("{1: a, 0x1: b, true: c, ~: d}"))
	f.Add([]byte("a: !!binary aGVsbG8=\nb: 2001-12-14\nc: [.5, 1e3, 0o17, -0b1]\n"))
	f.Add([]byte("m: &m {a: 1}\nx: {<<: [*m, {b: 2}], c: 3}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := yamlToJSON(data)
		ref, _, rerr := RefYAMLToJSON(data)
		switch {
		case err == nil && rerr == nil:
			if string(got) != string(ref) {
				t.Fatalf("JSON differs:\n new %s\n old %s", got, ref)
			}
		case err != nil && rerr == nil:
			if !strings.Contains(err.Error(), "appears twice") {
				t.Fatalf("new path fails (%v), the former wrote %s", err, ref)
			}
		case err == nil && rerr != nil:
			t.Fatalf("new path wrote %s, the former failed: %v", got, rerr)
		}
	})
}
