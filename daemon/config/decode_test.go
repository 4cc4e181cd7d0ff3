package config

import (
	"fmt"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"kmesh.dev/kmesh/daemon/config/configtest"
)

// checkSameAsWhole asserts that decodeJSON gives what protojson gives for
// the whole input: an equal message, or the same error text. It returns
// whether the split path decoded it.
func checkSameAsWhole(t *testing.T, data []byte, workers int) bool {
	t.Helper()
	r := decodeResults{entry: "decodeJSON", sameErrText: true, want: new(bootstrapv3.Bootstrap)}
	r.wantErr = protojson.Unmarshal(data, r.want)
	r.split, r.splitOK = decodeSplit(data, workers)
	r.got, r.gotErr = decodeJSON(data, workers)
	r.check(t)
	return r.splitOK
}

// decodeResults are one input's decodes: the reference (the whole input in
// one piece), the parallel path's and the entry point's.
type decodeResults struct {
	want        *bootstrapv3.Bootstrap
	wantErr     error
	split       *bootstrapv3.Bootstrap
	splitOK     bool
	got         *bootstrapv3.Bootstrap
	gotErr      error
	entry       string // the entry point, named in failures
	sameErrText bool   // the entry point must fail with the reference's error text
}

// check asserts that the parallel path accepts only what the reference
// accepts, into an equal message, and that the entry point agrees with the
// reference.
func (r decodeResults) check(t *testing.T) {
	t.Helper()
	if r.splitOK && r.wantErr != nil {
		t.Fatalf("parallel path accepted input the one-piece path rejects (%v)", r.wantErr)
	}
	if r.splitOK && !proto.Equal(r.split, r.want) {
		t.Fatalf("parallel path decoded a different message:\n got %v\nwant %v", r.split, r.want)
	}
	switch {
	case r.wantErr != nil && r.gotErr == nil:
		t.Fatalf("%s accepted input the one-piece path rejects (%v)", r.entry, r.wantErr)
	case r.wantErr == nil && r.gotErr != nil:
		t.Fatalf("%s: %v; the one-piece path accepts it", r.entry, r.gotErr)
	case r.sameErrText && r.wantErr != nil && r.gotErr.Error() != r.wantErr.Error():
		t.Fatalf("%s error %q, the one-piece path's %q", r.entry, r.gotErr, r.wantErr)
	case r.wantErr == nil && !proto.Equal(r.got, r.want):
		t.Fatalf("%s decoded a different message", r.entry)
	}
}

const (
	splitListener = `{"name":"l","address":{"socket_address":{"address":"10.96.0.10","port_value":80}},` +
		`"filter_chains":[{"filters":[{"name":"t","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy","stat_prefix":"s","cluster":"a"}}]}]}`
	splitCluster = `{"name":"a","load_assignment":{"cluster_name":"a","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"10.0.0.1","port_value":1}}}}]}]}}`
)

func TestDecodeSplit(t *testing.T) {
	l, c := splitListener, splitCluster
	for _, tc := range []struct {
		name  string
		in    string
		split bool // the parallel path decodes it
	}{
		{"both arrays", `{"static_resources":{"listeners":[` + l + `,` + l + `],"clusters":[` + c + `]}}`, true},
		{"clusters first, other fields around", `{"node":{"id":"n"},"static_resources":{"clusters":[` + c + `],"secrets":[],"listeners":[` + l + `]},"admin":{}}`, true},
		{"json names", `{"staticResources":{"listeners":[` + l + `],"clusters":[` + c + `]}}`, true},
		{"escaped names", `{"static\u005fresources":{"listener\u0073":[` + l + `]}}`, true},
		{"whitespace everywhere", " {\n \"static_resources\" :\n {\"listeners\" : [ \n" + l + " ,\n\t" + l + "\n ] } }\n", true},
		{"empty arrays", `{"static_resources":{"listeners":[],"clusters":[]}}`, true},
		{"listeners only", `{"static_resources":{"listeners":[` + l + `]}}`, true},
		{"no static_resources", `{"node":{"id":"n"}}`, true},
		{"empty object", `{}`, true},
		{"null arrays", `{"static_resources":{"listeners":null,"clusters":null}}`, false},
		{"null static_resources", `{"static_resources":null}`, false},
		{"null element", `{"static_resources":{"listeners":[null]}}`, false},
		{"array element", `{"static_resources":{"listeners":[[]]}}`, false},
		{"listeners twice", `{"static_resources":{"listeners":[` + l + `],"listeners":[` + l + `]}}`, false},
		{"proto and json name", `{"static_resources":{"clusters":[` + c + `]},"staticResources":{}}`, false},
		{"duplicate inside an element", `{"static_resources":{"clusters":[{"name":"a","name":"b"}]}}`, false},
		{"unknown field in an element", `{"static_resources":{"clusters":[` + c + `,{"name":"b","lb_polcy":"RANDOM"}]}}`, false},
		{"unknown field in the rest", `{"static_resources":{"clusters":[` + c + `]},"nod":{}}`, false},
		{"bad @type in an element", strings.Replace(`{"static_resources":{"listeners":[`+l+`]}}`, "v3.TcpProxy", "v3.TcpProxi", 1), false},
		{"missing comma", `{"static_resources":{"listeners":[` + l + l + `]}}`, false},
		{"trailing comma", `{"static_resources":{"listeners":[` + l + `,]}}`, false},
		{"trailing data", `{"static_resources":{"listeners":[` + l + `]}} {}`, false},
		{"truncated", `{"static_resources":{"listeners":[` + l, false},
		{"invalid UTF-8 in an element", `{"static_resources":{"clusters":[{"name":"` + "\xff" + `"}]}}`, false},
		{"not an object", `[]`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkSameAsWhole(t, []byte(tc.in), 2); got != tc.split {
				t.Errorf("split path taken: %v, want %v", got, tc.split)
			}
		})
	}
}

// TestDecodeSplitLarge decodes a bootstrap of many elements on 1, 2 and 7
// goroutines (7 does not divide the grabs evenly), and with an element that
// fails in the middle: the error is the one-piece decode's, with the line
// and column of the whole input.
func TestDecodeSplitLarge(t *testing.T) {
	data := []byte(configtest.Large(700, 3, 8080).JSON())
	for _, w := range []int{1, 2, 7} {
		if !checkSameAsWhole(t, data, w) {
			t.Fatalf("%d workers: split path not taken", w)
		}
	}
	b, err := decodeJSON(data, 2)
	if err != nil || len(b.GetStaticResources().GetListeners()) != 700 || len(b.GetStaticResources().GetClusters()) != 700 {
		t.Fatalf("decoded %d listeners, %d clusters, err %v", len(b.GetStaticResources().GetListeners()), len(b.GetStaticResources().GetClusters()), err)
	}
	if got := b.StaticResources.Clusters[699].GetName(); got != "svc-699" {
		t.Fatalf("last cluster %q, want svc-699 (elements out of order)", got)
	}
	bad := strings.Replace(string(data), `"name":"svc-400"`, `"name":"svc-400","lb_polcy":"RANDOM"`, 1)
	if bad == string(data) {
		t.Fatal("test input has no svc-400")
	}
	checkSameAsWhole(t, []byte(bad), 2)
	_, err = DecodeBootstrap([]byte(bad), FormatJSON)
	if err == nil || !strings.Contains(err.Error(), "lb_polcy") || !strings.Contains(err.Error(), "static_resources.listeners[400]") {
		t.Fatalf("error %v, want the unknown field with its path", err)
	}
}

// FuzzDecodeSplit: whatever the split path accepts, protojson accepts and
// decodes to an equal message; decodeJSON fails exactly when protojson does,
// with its message.
func FuzzDecodeSplit(f *testing.F) {
	f.Add([]byte(`{"static_resources":{"listeners":[` + splitListener + `],"clusters":[` + splitCluster + `]}}`))
	f.Add([]byte(`{"staticResources":{"clusters":[` + splitCluster + `]},"static_resources":{}}`))
	f.Add([]byte(`{"static_resources":{"listeners":[{"name":"x"},null]}}`))
	f.Add([]byte(`{"static_resources":{"clusters":[{"name":"\u00e9"}]}}  `))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameAsWhole(t, data, 2)
	})
}

// BenchmarkDecodeJSONSplit decodes the 10,000 services × 10 endpoints JSON
// bootstrap (13.6 MB) with decodeJSON on one goroutine and on GOMAXPROCS;
// baseline in the same run: protojson.Unmarshal of the whole input, the
// one-piece decode it replaces.
func BenchmarkDecodeJSONSplit(b *testing.B) {
	data := []byte(configtest.Large(10000, 10, 8080).JSON())
	b.Run("one-piece", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if err := protojson.Unmarshal(data, new(bootstrapv3.Bootstrap)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("split-tokenize-only", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if rs, ok := splitResources(data); !ok || len(rs.clusters) != 10000 {
				b.Fatal("not split")
			}
		}
	})
	for _, w := range []int{1, decodeWorkers()} {
		b.Run(fmt.Sprintf("split-workers-%d", w), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, ok := decodeSplit(data, w); !ok {
					b.Fatal("not split")
				}
			}
		})
	}
}
