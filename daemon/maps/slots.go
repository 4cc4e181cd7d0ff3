package maps

import (
	"fmt"
	"net/netip"
)

// maxSlotLimit bounds the maxSlots argument so weight arithmetic fits in uint64.
const maxSlotLimit = 1 << 20

// ExpandSlots turns endpoint weights into a slot table: the returned slice
// holds, per slot, the index (into weights) of the endpoint occupying it.
//
//   - Endpoints with weight 0 get no slot; all-zero (or no) weights give an
//     empty table.
//   - Weights are reduced by their greatest common divisor, so 3:1 and 300:100
//     both give four slots.
//   - If the reduced weights sum to more than maxSlots, they are scaled to
//     maxSlots slots by the largest-remainder method, every endpoint keeping
//     at least one slot (then reduced by the gcd again). More non-zero
//     endpoints than maxSlots is ErrTooManyEndpoints.
//   - Slots are interleaved smoothly (nginx's smooth weighted round robin,
//     ties to the lower index): round robin over the table sends an
//     endpoint of weight w at most about every total/w connections rather
//     than w in a row.
//
// The result is deterministic.
func ExpandSlots(weights []uint32, maxSlots int) ([]int, error) {
	if maxSlots < 1 || maxSlots > maxSlotLimit {
		return nil, fmt.Errorf("expand slots: max slots %d not in [1, %d]: %w", maxSlots, maxSlotLimit, ErrInvalid)
	}
	var idx []int
	var w []uint64
	for i, x := range weights {
		if x > 0 {
			idx = append(idx, i)
			w = append(w, uint64(x))
		}
	}
	if len(w) == 0 {
		return nil, nil
	}
	if len(w) > maxSlots {
		return nil, fmt.Errorf("expand slots: %d endpoints, at most %d: %w", len(w), maxSlots, ErrTooManyEndpoints)
	}
	reduceGCD(w)
	if sum(w) > uint64(maxSlots) {
		w = scale(w, uint64(maxSlots))
		reduceGCD(w)
	}

	total := int64(sum(w))
	cur := make([]int64, len(w))
	out := make([]int, 0, total)
	for range total {
		best := 0
		for i := range w {
			cur[i] += int64(w[i])
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, idx[best])
	}
	return out, nil
}

// WeightedEndpoint is an endpoint with its load-balancing weight.
type WeightedEndpoint struct {
	Addr   netip.AddrPort
	Weight uint32
}

// SlotTable expands endpoints (ExpandSlots with MaxSlotsPerCluster) into the
// slot values PutCluster takes.
func SlotTable(eps []WeightedEndpoint) ([]Addr, error) {
	weights := make([]uint32, len(eps))
	addrs := make([]Addr, len(eps))
	for i, ep := range eps {
		a, err := AddrFrom(ep.Addr)
		if err != nil {
			return nil, fmt.Errorf("build slot table: %w", err)
		}
		addrs[i], weights[i] = a, ep.Weight
	}
	order, err := ExpandSlots(weights, MaxSlotsPerCluster)
	if err != nil {
		return nil, fmt.Errorf("build slot table: %w", err)
	}
	slots := make([]Addr, len(order))
	for i, j := range order {
		slots[i] = addrs[j]
	}
	return slots, nil
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func reduceGCD(w []uint64) {
	g := w[0]
	for _, x := range w[1:] {
		g = gcd(g, x)
	}
	for i := range w {
		w[i] /= g
	}
}

func sum(w []uint64) uint64 {
	var s uint64
	for _, x := range w {
		s += x
	}
	return s
}

// scale maps weights onto exactly n slots (largest remainder, minimum 1);
// requires len(w) <= n < sum(w), and n, w small enough not to overflow
// (n <= maxSlotLimit, w < 2^32, len(w) <= n).
func scale(w []uint64, n uint64) []uint64 {
	total := sum(w)
	s := make([]uint64, len(w))
	rem := make([]uint64, len(w))
	var used uint64
	for i, x := range w {
		s[i] = x * n / total
		rem[i] = x * n % total
		used += s[i]
	}
	// Hand out the leftover slots to the largest remainders.
	for ; used < n; used++ {
		best := -1
		for i := range w {
			if best < 0 || rem[i] > rem[best] {
				best = i
			}
		}
		s[best]++
		rem[best] = 0
	}
	// Every endpoint keeps a slot; take them from the largest shares.
	for i := range s {
		if s[i] != 0 {
			continue
		}
		big := 0
		for j := range s {
			if s[j] > s[big] {
				big = j
			}
		}
		s[big]--
		s[i] = 1
	}
	return s
}
