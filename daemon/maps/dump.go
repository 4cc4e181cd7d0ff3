package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// dumpBatch is the number of entries one batch lookup asks for.
const dumpBatch = 4096

// Clusters returns every clusters-map entry (for example ones adopted from a
// previous daemon).
func (m *Maps) Clusters() (map[uint32]ClusterValue, error) {
	return dumpAll[uint32, ClusterValue](m, m.clusters)
}

// Slots returns every slots-map entry, those of no published slot table
// included (a write that failed part way leaves such entries behind).
func (m *Maps) Slots() (map[SlotKey]Addr, error) {
	return dumpAll[SlotKey, Addr](m, m.slots)
}

// DeleteSlots removes slot entries; absent ones are not an error. Only
// entries outside every published slot table may be deleted this way (see
// PutClusters for the order that keeps a table whole).
func (m *Maps) DeleteSlots(keys []SlotKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := deleteAll(m, m.slots, keys); err != nil {
		return fmt.Errorf("delete %d slots: %w", len(keys), err)
	}
	return nil
}

// dumpAll reads a whole hash map, in batches where the kernel has batch
// operations, one element at a time otherwise.
func dumpAll[K comparable, V any](m *Maps, mp *ebpf.Map) (map[K]V, error) {
	out := map[K]V{}
	if !m.noBatch {
		var (
			cursor ebpf.MapBatchCursor
			keys   = make([]K, dumpBatch)
			vals   = make([]V, dumpBatch)
		)
		for first := true; ; first = false {
			n, err := mp.BatchLookup(&cursor, keys, vals, nil)
			for i := range n {
				out[keys[i]] = vals[i]
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return out, nil
			}
			if err == nil {
				continue
			}
			if first && errors.Is(err, ebpf.ErrNotSupported) {
				break
			}
			return nil, fmt.Errorf("read %s: %w", mp, err)
		}
	}
	var (
		k K
		v V
	)
	it := mp.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", mp, err)
	}
	return out, nil
}
