package config

import (
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"kmesh.dev/kmesh/daemon/config/configtest"
)

// checkYAMLSameAsWhole asserts that the YAML decode gives what the one-piece
// path gives (the whole document converted to JSON, decoded by protojson):
// an equal message, or an error. It returns whether the parallel path
// decoded it.
func checkYAMLSameAsWhole(t *testing.T, data []byte, workers int) bool {
	t.Helper()
	r := decodeResults{entry: "DecodeBootstrap", want: new(bootstrapv3.Bootstrap)}
	j, err := yamlToJSON(data)
	if r.wantErr = err; err == nil {
		r.wantErr = protojson.Unmarshal(j, r.want)
	}
	var splitErr error
	r.split, splitErr = decodeYAMLSplit(data, workers)
	r.splitOK = splitErr == nil
	r.got, r.gotErr = DecodeBootstrap(data, FormatYAML)
	r.check(t)
	return r.splitOK
}

const (
	yl = "  - name: l\n" +
		"    address: {socket_address: {address: 10.96.0.10, port_value: 80}}\n" +
		"    filter_chains:\n" +
		"    - filters:\n" +
		"      - name: t\n" +
		"        typed_config:\n" +
		"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n" +
		"          stat_prefix: s\n" +
		"          cluster: a\n"
	yc = "  - name: a\n" +
		"    load_assignment:\n" +
		"      cluster_name: a\n" +
		"      endpoints:\n" +
		"      - lb_endpoints:\n" +
		"        - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 1}}}\n"
)

// indent shifts every line of s right by n spaces.
func indent(s string, n int) string {
	p := strings.Repeat(" ", n)
	return p + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+p) + "\n"
}

func TestDecodeYAMLSplit(t *testing.T) {
	sr := "static_resources:\n"
	both := sr + "  listeners:\n" + yl + yl + "  clusters:\n" + yc
	for _, tc := range []struct {
		name  string
		in    string
		split bool // the parallel path decodes it
	}{
		{"both sequences", both, true},
		{"clusters first, keys around", "node: {id: n}\n" + sr + "  clusters:\n" + yc + "  secrets: []\n  listeners:\n" + yl + "admin: {}\n", true},
		{"indented sequences", sr + "  listeners:\n" + indent(yl, 2) + indent(yl, 2) + "  clusters:\n" + indent(yc, 4), true},
		{"deeper mapping", "static_resources:\n    listeners:\n" + indent(yl, 2) + "    clusters:\n" + indent(yc, 2), true},
		{"comments and blank lines", "# top\n" + sr + "  # before\n  listeners: # the listeners\n\n# col 1\n" + yl + "\n# between\n   # odd\n" + yl + "  clusters:   \n" + yc + "# end\n", true},
		{"CRLF", strings.ReplaceAll(both, "\n", "\r\n"), true},
		{"no final line break", strings.TrimSuffix(both, "\n"), true},
		{"document start marker", "---\n" + both, true},
		{"item content on the next line", sr + "  clusters:\n  -\n    name: a\n  -\n    name: b\n", true},
		{"block scalar with item-like lines", sr + "  clusters:\n  - name: a\n    alt_stat_name: |\n      - x\n       - y\n\n      z\n  - name: b\n", true},
		{"merge key without alias", sr + "  clusters:\n  - <<: {name: a}\n    type: STATIC\n", true},
		{"null listeners", sr + "  listeners:\n  clusters:\n" + yc, true},
		{"flow listeners", sr + "  listeners: []\n  clusters:\n" + yc, true},
		{"no static_resources", "node: {id: n}\n", false},
		{"flow static_resources", "static_resources: {clusters: [{name: a}]}\n", false},
		{"quoted scalar across items", sr + "  clusters:\n  - name: \"a\n  - b\"\n  - name: c\n", false},
		{"single-quoted scalar across items", sr + "  clusters:\n  - name: 'a\n  - b'\n", false},
		{"flow mapping across items", sr + "  clusters:\n  - {name: a,\n  - b: c}\n", false},
		{"static_resources inside a scalar", "node: {id: \"a\nstatic_resources:\n  clusters:\n  - name: x\n b\"}\n", false},
		// valid either way, but the lines that look like keys are text
		{"static_resources inside a quoted scalar", "header_prefix: \"a\nstatic_resources:\n  clusters:\n  - name: x\n\"\n", false},
		{"listeners inside a quoted scalar", sr + "  secrets: [{name: \"x\n  listeners:\n  - name: l\n  \"}]\n", false},
		{"anchor and alias in items", sr + "  clusters:\n  - &c {name: a}\n  - {name: b, <<: *c}\n", false},
		{"alias of the rest in an item", "node: &n {id: x}\n" + sr + "  clusters:\n  - name: a\n    metadata: {filter_metadata: {x: *n}}\n", false},
		{"tag directive", "%TAG !e! tag:e.com,2000:\n---\n" + both, false},
		{"tab in indentation", sr + "  clusters:\n  - name: a\n\t  type: STATIC\n", false},
		{"NEL line break", sr + "  clusters:\n  - name: a\u0085  - name: b\n", false},
		{"lone carriage return", sr + "  clusters:\n  - name: a\r  - name: b\n", false},
		{"listeners twice", sr + "  listeners:\n" + yl + "  listeners:\n" + yl, false},
		{"static_resources twice", both + sr + "  clusters:\n" + yc, false},
		{"proto and JSON name", both + "staticResources: {}\n", false},
		{"quoted key too", both[:len(sr)] + "  \"clusters\": []\n" + both[len(sr):], false},
		{"item not a mapping", sr + "  clusters:\n  - a\n", false},
		{"listeners a mapping", sr + "  listeners:\n    name: l\n", false},
		{"line between key and items", sr + "  clusters:\n    - name: a\n   type: STATIC\n", false},
		{"line under the keys", sr + "    clusters:\n" + indent(yc, 2) + "  admin: {}\n", false},
		{"unknown field in an item", sr + "  clusters:\n" + yc + "  - name: b\n    lb_polcy: RANDOM\n", false},
		{"duplicate key in an item", sr + "  clusters:\n  - name: a\n    name: b\n", false},
		{"second document", both + "---\nnode: {}\n", false},
		{"invalid YAML in an item", sr + "  clusters:\n  - name: a\n    type: [STATIC\n", false},
		{"unknown field in the rest", both + "nod: {}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkYAMLSameAsWhole(t, []byte(tc.in), 2); got != tc.split {
				_, err := decodeYAMLSplit([]byte(tc.in), 2)
				t.Errorf("parallel path taken: %v, want %v (%v)", got, tc.split, err)
			}
		})
	}
}

// TestDecodeYAMLSplitLarge decodes configtest.Large's YAML on 1, 2 and 7
// goroutines, and with an item that fails in the middle: the error is the
// one-piece decode's, with the line in the YAML and the field path.
func TestDecodeYAMLSplitLarge(t *testing.T) {
	data := []byte(configtest.Large(700, 3, 8080).YAML())
	for _, w := range []int{1, 2, 7} {
		if !checkYAMLSameAsWhole(t, data, w) {
			_, err := decodeYAMLSplit(data, w)
			t.Fatalf("%d workers: parallel path not taken: %v", w, err)
		}
	}
	b, err := DecodeBootstrap(data, FormatYAML)
	if err != nil || len(b.GetStaticResources().GetListeners()) != 700 || len(b.GetStaticResources().GetClusters()) != 700 {
		t.Fatalf("decoded %d listeners, %d clusters, err %v", len(b.GetStaticResources().GetListeners()), len(b.GetStaticResources().GetClusters()), err)
	}
	if got := b.StaticResources.Clusters[699].GetName(); got != "svc-699" {
		t.Fatalf("last cluster %q, want svc-699 (items out of order)", got)
	}
	bad := strings.Replace(string(data), "  - name: svc-400\n    type: STATIC\n", "  - name: svc-400\n    lb_polcy: RANDOM\n    type: STATIC\n", 1)
	if bad == string(data) {
		t.Fatal("test input has no cluster svc-400")
	}
	line := strings.Count(bad[:strings.Index(bad, "lb_polcy")], "\n") + 1
	checkYAMLSameAsWhole(t, []byte(bad), 2)
	_, err = DecodeBootstrap([]byte(bad), FormatYAML)
	if err == nil || !strings.Contains(err.Error(), "lb_polcy") || !strings.Contains(err.Error(), "static_resources.clusters[400]") ||
		!strings.Contains(err.Error(), "line "+strconv.Itoa(line)) {
		t.Fatalf("error %v, want the unknown field at line %d with its path", err, line)
	}
}

// FuzzDecodeYAMLSplit: whatever the parallel path accepts, the one-piece
// path accepts and decodes to an equal message; DecodeBootstrap fails
// exactly when the one-piece path does.
func FuzzDecodeYAMLSplit(f *testing.F) {
	sr := "static_resources:\n"
	f.Add([]byte(sr + "  listeners:\n" + yl + "  clusters:\n" + yc))
	f.Add([]byte(sr + "  clusters:\n  - name: \"a\n  - b\"\n  - name: c\n"))
	f.Add([]byte("node: {id: \"a\nstatic_resources:\n  clusters:\n  - name: x\n b\"}\n"))
	f.Add([]byte(sr + "  clusters:\n  - name: a\n    alt_stat_name: |\n      - x\n  - {name: b,\n    type: STATIC}\n"))
	f.Add([]byte(sr + "  clusters:\n  - &c {name: a}\n  - <<: *c\n"))
	f.Add([]byte("# c\n---\n" + sr + "    clusters:\n      -\n        name: 'a''b'\n    listeners: # x\n    - name: l\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkYAMLSameAsWhole(t, data, 2)
	})
}
