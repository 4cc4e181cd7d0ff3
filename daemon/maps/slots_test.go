package maps

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
)

func counts(slots []int, n int) []int {
	c := make([]int, n)
	for _, s := range slots {
		c[s]++
	}
	return c
}

func TestExpandSlotsExact(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
		max     int
		want    []int
	}{
		{"equal", []uint32{1, 1, 1}, 256, []int{0, 1, 2}},
		{"gcd", []uint32{5, 5, 5}, 256, []int{0, 1, 2}},
		{"3:1 smooth", []uint32{3, 1}, 256, []int{0, 0, 1, 0}},
		{"300:100 reduced", []uint32{300, 100}, 256, []int{0, 0, 1, 0}},
		{"5:1:1 nginx", []uint32{5, 1, 1}, 256, []int{0, 0, 1, 0, 2, 0, 0}},
		{"zero weights skipped", []uint32{0, 2, 0, 2}, 256, []int{1, 3}},
		{"all zero", []uint32{0, 0}, 256, nil},
		{"none", nil, 256, nil},
		{"97:3 capped at 10", []uint32{97, 3}, 10, []int{0, 0, 0, 0, 0, 1, 0, 0, 0, 0}},
		{"1:1000 keeps the small one", []uint32{1, 1000}, 4, []int{1, 0, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ExpandSlots(tc.weights, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ExpandSlots(%v, %d) = %v, want %v", tc.weights, tc.max, got, tc.want)
			}
		})
	}
}

func TestExpandSlotsErrors(t *testing.T) {
	if _, err := ExpandSlots([]uint32{1, 1, 1}, 2); !errors.Is(err, ErrTooManyEndpoints) {
		t.Errorf("3 endpoints into 2 slots: err = %v, want ErrTooManyEndpoints", err)
	}
	if _, err := ExpandSlots([]uint32{1}, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("max 0: err = %v, want ErrInvalid", err)
	}
	if got, err := ExpandSlots([]uint32{0, 0, 0, 7}, 1); err != nil || !reflect.DeepEqual(got, []int{3}) {
		t.Errorf("zero weights do not count against the cap: %v %v", got, err)
	}
}

// TestExpandSlotsProperties checks, on random weights: every non-zero
// endpoint gets at least one slot; the table fits the cap; uncapped tables
// are exactly proportional; capped ones stay within one slot of the
// proportional share, plus one per endpoint lifted to the minimum; and the
// interleave is smooth: in every prefix of the table an endpoint's count
// stays within a bounded distance of its proportional share.
func TestExpandSlotsProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 2000; iter++ {
		n := 1 + r.IntN(12)
		max := n + r.IntN(300)
		w := make([]uint32, n)
		for i := range w {
			switch r.IntN(4) {
			case 0:
				w[i] = 0
			case 1:
				w[i] = uint32(1 + r.IntN(4))
			case 2:
				w[i] = uint32(1 + r.IntN(1000))
			default:
				w[i] = r.Uint32()
			}
		}
		slots, err := ExpandSlots(w, max)
		if err != nil {
			t.Fatalf("ExpandSlots(%v, %d): %v", w, max, err)
		}
		var W float64
		nonzero := 0
		for _, x := range w {
			W += float64(x)
			if x > 0 {
				nonzero++
			}
		}
		if nonzero == 0 {
			if len(slots) != 0 {
				t.Fatalf("all-zero weights gave %v", slots)
			}
			continue
		}
		T := len(slots)
		// Endpoints lifted to their minimum slot take one each from the largest shares.
		lifted := 0
		for _, x := range w {
			if x > 0 && float64(x)/W*float64(max) < 1 {
				lifted++
			}
		}
		if T > max || T < nonzero {
			t.Fatalf("ExpandSlots(%v, %d): %d slots", w, max, T)
		}
		c := counts(slots, n)
		var g uint64
		var reduced uint64
		for _, x := range w {
			g = gcd(g, uint64(x))
		}
		for _, x := range w {
			reduced += uint64(x) / g
		}
		if reduced <= uint64(max) {
			for i, x := range w {
				if uint64(c[i]) != uint64(x)/g {
					t.Fatalf("weights %v max %d: uncapped endpoint %d has %d slots, want %d", w, max, i, c[i], uint64(x)/g)
				}
			}
		}
		for i, x := range w {
			if x == 0 {
				if c[i] != 0 {
					t.Fatalf("weights %v: zero-weight endpoint %d got %d slots", w, i, c[i])
				}
				continue
			}
			if c[i] == 0 {
				t.Fatalf("weights %v max %d: endpoint %d got no slot", w, max, i)
			}
			// Capped tables use max slots before the gcd reduction; compare shares.
			share := float64(x) / W
			got := float64(c[i]) / float64(T)
			if math.Abs(got-share)*float64(T) > float64(1+lifted)+1e-9 && c[i] != 1 {
				t.Fatalf("weights %v max %d: endpoint %d has %d/%d slots, share %.4f", w, max, i, c[i], T, share)
			}
		}
		// Smoothness: prefix counts track k*c_i/T within n (SWRR bound).
		seen := make([]int, n)
		for k, s := range slots {
			seen[s]++
			for i := range w {
				exp := float64(k+1) * float64(c[i]) / float64(T)
				if math.Abs(float64(seen[i])-exp) > float64(nonzero) {
					t.Fatalf("weights %v: prefix %d endpoint %d count %d, expected ~%.1f", w, k+1, i, seen[i], exp)
				}
			}
		}
		again, _ := ExpandSlots(w, max)
		if !reflect.DeepEqual(again, slots) {
			t.Fatal("ExpandSlots is not deterministic")
		}
	}
}

func TestExpandSlotsTwoEndpointsSmooth(t *testing.T) {
	// With two endpoints the smooth interleave never drifts a whole slot.
	for a := uint32(1); a <= 20; a++ {
		for b := uint32(1); b <= 20; b++ {
			slots, err := ExpandSlots([]uint32{a, b}, 1024)
			if err != nil {
				t.Fatal(err)
			}
			T := float64(len(slots))
			seen := 0
			for k, s := range slots {
				if s == 0 {
					seen++
				}
				exp := float64(k+1) * float64(counts(slots, 2)[0]) / T
				if math.Abs(float64(seen)-exp) >= 1 {
					t.Fatalf("%d:%d: prefix %d has %d of endpoint 0, expected %.2f: %v", a, b, k+1, seen, exp, slots)
				}
			}
		}
	}
}

func TestSlotTable(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.1:80")
	b := netip.MustParseAddrPort("[fd00::2]:8080")
	slots, err := SlotTable([]WeightedEndpoint{{a, 3}, {b, 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := []Addr{MustAddr("10.0.0.1:80"), MustAddr("10.0.0.1:80"), MustAddr("[fd00::2]:8080"), MustAddr("10.0.0.1:80")}
	if !reflect.DeepEqual(slots, want) {
		t.Errorf("SlotTable = %v, want %v", slots, want)
	}
}

func TestAddrConversion(t *testing.T) {
	v4 := MustAddr("10.96.0.10:8080")
	if v4.Family != FamilyIPv4 || v4.Port != [2]byte{0x1f, 0x90} || v4.IP != [16]byte{10, 96, 0, 10} {
		t.Errorf("IPv4 layout: %+v", v4)
	}
	v6 := MustAddr("[fd00::1]:443")
	if v6.Family != FamilyIPv6 || v6.Port != [2]byte{0x01, 0xbb} || v6.IP[0] != 0xfd || v6.IP[15] != 1 {
		t.Errorf("IPv6 layout: %+v", v6)
	}
	for _, s := range []string{"10.96.0.10:8080", "[fd00::1]:443", "[::ffff:10.0.0.1]:80"} {
		ap := netip.MustParseAddrPort(s)
		a, err := AddrFrom(ap)
		if err != nil {
			t.Fatal(err)
		}
		back, ok := a.AddrPort()
		if !ok || back != ap {
			t.Errorf("round trip %s: %s", s, back)
		}
	}
	if w := WildcardAddr(FamilyIPv4, 80); w.IP != [16]byte{} || w.PortNumber() != 80 {
		t.Errorf("wildcard: %+v", w)
	}
	if _, err := AddrFrom(netip.AddrPort{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero AddrPort: %v", err)
	}
}

func TestServiceValue(t *testing.T) {
	v, err := Service{ID: 7, Clusters: []WeightedCluster{{1, 90}, {2, 10}}}.Value()
	if err != nil {
		t.Fatal(err)
	}
	if v.ServiceID != 7 || v.ClusterCount != 2 || v.TotalWeight != 100 || v.Clusters[1] != (WeightedCluster{2, 10}) {
		t.Errorf("value %+v", v)
	}
	if v, err := (Service{ID: 1, Clusters: []WeightedCluster{{3, 0}}}).Value(); err != nil || v.TotalWeight != 1 {
		t.Errorf("single cluster without weight: %+v %v", v, err)
	}
	for _, bad := range []Service{
		{ID: MaxServices},
		{ID: 1, Clusters: make([]WeightedCluster, MaxClusters+1)},
		{ID: 1, Clusters: []WeightedCluster{{1, 1}, {2, 0}}},
		{ID: 1, Clusters: []WeightedCluster{{MaxClusterIDs, 1}}},
		{ID: 1, Clusters: []WeightedCluster{{1, math.MaxUint32}, {2, 1}}},
	} {
		if _, err := bad.Value(); err == nil {
			t.Errorf("Value(%+v) accepted", bad)
		}
	}
}
