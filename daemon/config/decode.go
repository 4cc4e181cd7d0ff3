package config

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// decodeJSON decodes a JSON bootstrap with protojson. Most of a large
// bootstrap is static_resources.listeners and .clusters, and protojson is
// single-threaded (~70 ms per MB), so those elements are decoded on up to
// workers goroutines and the rest of the document (with the two arrays
// emptied) on its own: the result is the message protojson.Unmarshal gives
// for the whole document. Whenever that split does not apply (a shape it
// does not take apart: the arrays null or spelled twice, an element not an
// object) or any part fails, the whole document is decoded in one piece, so
// an error is protojson's own for the whole input, with its line and column.
// The one difference: an element is decoded as a document of its own, so
// protojson's nesting limit (10,000 levels) is reached three levels deeper.
func decodeJSON(data []byte, workers int) (*bootstrapv3.Bootstrap, error) {
	if b, ok := decodeSplit(data, workers); ok {
		return b, nil
	}
	b := new(bootstrapv3.Bootstrap)
	if err := protojson.Unmarshal(data, b); err != nil {
		return nil, err
	}
	return b, nil
}

// span is a byte range [start, end) of the input.
type span struct{ start, end int }

// resourceSpans is where static_resources' listeners and clusters are in a
// JSON bootstrap.
type resourceSpans struct {
	listeners, clusters []span // each element, an object
	arrays              []span // the arrays themselves, in input order
}

// splitResources finds the elements of static_resources.listeners and
// .clusters. It reads the whole input with a JSON tokenizer (syntax, UTF-8
// and duplicate names are checked on the way); ok is false, leaving the
// input to the one-piece decode, for anything but one static_resources
// object holding each array at most once with only objects in it.
func splitResources(data []byte) (rs resourceSpans, ok bool) {
	d := jsontext.NewDecoder(bytes.NewBuffer(data))
	if t, err := d.ReadToken(); err != nil || t.Kind() != '{' {
		return rs, false
	}
	seenStatic := false
	for d.PeekKind() != '}' {
		name, err := d.ReadToken()
		if err != nil {
			return rs, false
		}
		// protojson takes a field's proto name and its JSON (lowerCamel)
		// name; the tokenizer has already unescaped the name.
		if n := name.String(); n != "static_resources" && n != "staticResources" {
			if err := d.SkipValue(); err != nil {
				return rs, false
			}
			continue
		}
		if seenStatic {
			return rs, false
		}
		seenStatic = true
		if t, err := d.ReadToken(); err != nil || t.Kind() != '{' {
			return rs, false
		}
		var seenL, seenC bool
		for d.PeekKind() != '}' {
			name, err := d.ReadToken()
			if err != nil {
				return rs, false
			}
			var dst *[]span
			switch name.String() {
			case "listeners":
				if seenL {
					return rs, false
				}
				seenL, dst = true, &rs.listeners
			case "clusters":
				if seenC {
					return rs, false
				}
				seenC, dst = true, &rs.clusters
			default:
				if err := d.SkipValue(); err != nil {
					return rs, false
				}
				continue
			}
			if t, err := d.ReadToken(); err != nil || t.Kind() != '[' {
				return rs, false
			}
			start := int(d.InputOffset()) - 1
			for d.PeekKind() != ']' {
				if d.PeekKind() != '{' {
					return rs, false
				}
				v, err := d.ReadValue()
				if err != nil {
					return rs, false
				}
				end := int(d.InputOffset())
				*dst = append(*dst, span{end - len(v), end})
			}
			if _, err := d.ReadToken(); err != nil {
				return rs, false
			}
			rs.arrays = append(rs.arrays, span{start, int(d.InputOffset())})
		}
		if _, err := d.ReadToken(); err != nil {
			return rs, false
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return rs, false
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return rs, false
	}
	return rs, true
}

// elementsPerGrab is how many elements a decoding goroutine takes at once:
// enough that the shared counter is not contended, few enough that the
// goroutines finish together.
const elementsPerGrab = 64

// decodeSplit is decodeJSON's parallel path; ok is false when it does not
// apply or a part did not decode.
func decodeSplit(data []byte, workers int) (*bootstrapv3.Bootstrap, bool) {
	rs, ok := splitResources(data)
	if !ok {
		return nil, false
	}
	// The rest: the input with each array replaced by [] (which keeps the
	// field present, so static_resources is set as it would be).
	rest := make([]byte, 0, len(data)-totalLen(rs.arrays)+2*len(rs.arrays))
	prev := 0
	for _, a := range rs.arrays {
		rest = append(rest, data[prev:a.start]...)
		rest = append(rest, "[]"...)
		prev = a.end
	}
	rest = append(rest, data[prev:]...)
	b := new(bootstrapv3.Bootstrap)
	if err := protojson.Unmarshal(rest, b); err != nil {
		return nil, false
	}
	if len(rs.arrays) == 0 {
		return b, true
	}

	listeners, clusters, err := decodeElements(len(rs.listeners), len(rs.clusters), workers,
		func(i int, m proto.Message, _ *[]byte) error {
			s := rs.listeners
			if i >= len(s) {
				i, s = i-len(s), rs.clusters
			}
			return protojson.Unmarshal(data[s[i].start:s[i].end], m)
		})
	if err != nil {
		return nil, false
	}
	if b.StaticResources == nil { // the rest had static_resources; not reached
		return nil, false
	}
	if len(listeners) > 0 { // an empty array decodes to nil
		b.StaticResources.Listeners = listeners
	}
	if len(clusters) > 0 {
		b.StaticResources.Clusters = clusters
	}
	return b, true
}

// decodeElements decodes nl listeners and nc clusters on up to workers
// goroutines: decode(i, m, scratch) decodes element i (listeners first, then
// clusters) into m, a new message of its type; scratch is the goroutine's
// own buffer, kept across its calls. The first error stops all goroutines
// and is returned.
func decodeElements(nl, nc, workers int, decode func(i int, m proto.Message, scratch *[]byte) error) ([]*listenerv3.Listener, []*clusterv3.Cluster, error) {
	listeners := make([]*listenerv3.Listener, nl)
	clusters := make([]*clusterv3.Cluster, nc)
	n := nl + nc
	msg := func(i int) proto.Message {
		if i < nl {
			listeners[i] = new(listenerv3.Listener)
			return listeners[i]
		}
		clusters[i-nl] = new(clusterv3.Cluster)
		return clusters[i-nl]
	}
	workers = min(max(workers, 1), (n+elementsPerGrab-1)/elementsPerGrab)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var scratch []byte
			for !failed.Load() {
				first := int(next.Add(elementsPerGrab)) - elementsPerGrab
				if first >= n {
					return
				}
				for i := first; i < min(first+elementsPerGrab, n); i++ {
					if err := decode(i, msg(i), &scratch); err != nil {
						errOnce.Do(func() { firstErr = fmt.Errorf("element %d: %w", i, err) })
						failed.Store(true)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		return nil, nil, firstErr
	}
	return listeners, clusters, nil
}

func totalLen(spans []span) int {
	n := 0
	for _, s := range spans {
		n += s.end - s.start
	}
	return n
}

// maxDecodeWorkers caps decodeJSON's goroutines: the daemon is a node agent
// next to the node's workloads, and beyond a few goroutines the serial part
// (the tokenizer, ~40-60 ms for 13.6 MB) dominates anyway.
const maxDecodeWorkers = 4

// decodeWorkers is the number of goroutines decodeJSON uses: one per CPU
// the process may run on (GOMAXPROCS follows the container's CPU limit), at
// most maxDecodeWorkers.
func decodeWorkers() int { return min(runtime.GOMAXPROCS(0), maxDecodeWorkers) }
