package maps

import (
	"fmt"
	"kmesh.dev/kmesh/daemon/internal/testnet"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// mirror is a map's Go key and value mirror, with its size and type.
type mirror struct {
	key, value reflect.Type
	maxEntries uint32
	typ        ebpf.MapType
}

// checkMirror compares a map of an object with its Go mirror.
func checkMirror(t *testing.T, name string, ms *ebpf.MapSpec, want mirror) {
	t.Helper()
	if ms.Type != want.typ || ms.MaxEntries != want.maxEntries {
		t.Errorf("map %s: type %s max_entries %d, Go expects %s %d", name, ms.Type, ms.MaxEntries, want.typ, want.maxEntries)
	}
	if err := checkLayout(want.key, ms.Key, name+" key"); err != nil {
		t.Error(err)
	}
	if err := checkLayout(want.value, ms.Value, name+" value"); err != nil {
		t.Error(err)
	}
}

// mirrors names each map's Go key and value mirror.
var mirrors = map[string]mirror{
	MapEnrolled:     {reflect.TypeFor[uint64](), reflect.TypeFor[uint32](), MaxEnrolledNetns, ebpf.Hash},
	MapServices:     {reflect.TypeFor[Addr](), reflect.TypeFor[ServiceValue](), MaxServices, ebpf.Hash},
	MapClusters:     {reflect.TypeFor[uint32](), reflect.TypeFor[ClusterValue](), MaxClusterIDs, ebpf.Hash},
	MapSlots:        {reflect.TypeFor[SlotKey](), reflect.TypeFor[Addr](), MaxSlots, ebpf.Hash},
	MapSvcStats:     {reflect.TypeFor[uint32](), reflect.TypeFor[StatsValue](), MaxServices, ebpf.PerCPUArray},
	MapClusterStats: {reflect.TypeFor[uint32](), reflect.TypeFor[StatsValue](), MaxClusterIDs, ebpf.PerCPUArray},
	MapOrigDst:      {reflect.TypeFor[int32](), reflect.TypeFor[OrigDstValue](), 0, ebpf.SkStorage},
}

// TestLayout checks every Go mirror against the BTF of the compiled object:
// sizes, field names, field offsets, nested types, and the map sizes.
func TestLayout(t *testing.T) {
	for _, v := range []variant{{skStorage: true}, {skStorage: false}} {
		t.Run(v.String(), func(t *testing.T) {
			spec, err := LoadSpec(objDir(t, v))
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range mirrors {
				ms, ok := spec.Maps[name]
				if name == MapOrigDst && !v.skStorage {
					if ok {
						t.Errorf("%s present although KMESH_HAVE_SK_STORAGE is 0", name)
					}
					continue
				}
				if !ok {
					t.Errorf("map %s missing from the object", name)
					continue
				}
				checkMirror(t, name, ms, want)
			}
			if len(spec.Maps) != len(mirrors)-map[bool]int{true: 0, false: 1}[v.skStorage] {
				t.Errorf("object has %d maps, Go mirrors %d: add the new map to mirrors", len(spec.Maps), len(mirrors))
			}
		})
	}
}

// TestLayoutCheckerCatchesDrift makes sure checkLayout fails on one-sided changes.
func TestLayoutCheckerCatchesDrift(t *testing.T) {
	spec, err := LoadSpec(objDir(t, variant{skStorage: true}))
	if err != nil {
		t.Fatal(err)
	}
	cluster := spec.Maps[MapClusters].Value
	type reordered struct {
		SlotCount, Policy uint32
		Lock              SpinLock
		RRNext            uint32
	}
	type grown struct {
		Policy, SlotCount uint32
		Lock              SpinLock
		RRNext, Extra     uint32
	}
	type widened struct {
		Policy    uint64
		SlotCount uint32
		Lock      SpinLock
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[reordered](), reflect.TypeFor[grown](), reflect.TypeFor[widened]()} {
		if err := checkLayout(typ, cluster, "km_cluster"); err == nil {
			t.Errorf("checkLayout accepted %s for struct km_cluster", typ)
		}
	}
	type shortArray struct {
		ServiceID, ClusterCount, TotalWeight uint32
		Clusters                             [MaxClusters - 1]WeightedCluster
		Pad                                  [8]byte
	}
	if err := checkLayout(reflect.TypeFor[shortArray](), spec.Maps[MapServices].Value, "km_service"); err == nil {
		t.Error("checkLayout accepted a shorter clusters array of the same total size")
	}
	if err := checkLayout(reflect.TypeFor[ClusterValue](), cluster, "km_cluster"); err != nil {
		t.Errorf("checkLayout rejected the real mirror: %v", err)
	}
}

func normalize(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "_", ""))
}

// checkLayout compares a Go type with a BTF type. A Go byte array may stand
// for any C integer or integer array of the same size (raw network-order
// bytes); everything else must match kind by kind.
func checkLayout(g reflect.Type, c btf.Type, path string) error {
	c = btf.UnderlyingType(c)
	size, err := btf.Sizeof(c)
	if err != nil {
		return fmt.Errorf("%s: size of %s: %w", path, c, err)
	}
	if uintptr(size) != g.Size() {
		return fmt.Errorf("%s: C %s is %d bytes, Go %s is %d", path, c, size, g, g.Size())
	}
	if g.Kind() == reflect.Array && g.Elem().Kind() == reflect.Uint8 && isIntOrIntArray(c) {
		return nil
	}
	switch c := c.(type) {
	case *btf.Int:
		switch g.Kind() {
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			if c.Encoding&btf.Signed != 0 {
				return fmt.Errorf("%s: C %s is signed, Go %s unsigned", path, c, g)
			}
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if c.Encoding&btf.Signed == 0 {
				return fmt.Errorf("%s: C %s is unsigned, Go %s signed", path, c, g)
			}
		default:
			return fmt.Errorf("%s: C %s is an integer, Go %s is %s", path, c, g, g.Kind())
		}
	case *btf.Array:
		if g.Kind() != reflect.Array || uint32(g.Len()) != c.Nelems {
			return fmt.Errorf("%s: C array [%d], Go %s", path, c.Nelems, g)
		}
		return checkLayout(g.Elem(), c.Type, path+"[]")
	case *btf.Struct:
		if g.Kind() != reflect.Struct {
			return fmt.Errorf("%s: C struct %s, Go %s", path, c.Name, g)
		}
		if len(c.Members) != g.NumField() {
			return fmt.Errorf("%s: C struct %s has %d members, Go %s has %d fields", path, c.Name, len(c.Members), g, g.NumField())
		}
		for i, m := range c.Members {
			f := g.Field(i)
			p := path + "." + m.Name
			if m.BitfieldSize != 0 {
				return fmt.Errorf("%s: bitfields have no Go mirror", p)
			}
			if normalize(m.Name) != normalize(f.Name) {
				return fmt.Errorf("%s: Go field %d is %s", p, i, f.Name)
			}
			if uintptr(m.Offset.Bytes()) != f.Offset {
				return fmt.Errorf("%s: C offset %d, Go %s.%s offset %d", p, m.Offset.Bytes(), g, f.Name, f.Offset)
			}
			if err := checkLayout(f.Type, m.Type, p); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%s: no Go mirror rule for C %s", path, c)
	}
	return nil
}

func isIntOrIntArray(c btf.Type) bool {
	switch c := btf.UnderlyingType(c).(type) {
	case *btf.Int:
		return true
	case *btf.Array:
		return isIntOrIntArray(c.Type)
	}
	return false
}

// helpers510 are the helpers the compat programs may call: all exist for
// cgroup sock_addr programs on 5.10.
var helpers510 = map[asm.BuiltinFunc]bool{
	asm.FnMapLookupElem:   true,
	asm.FnGetPrandomU32:   true,
	asm.FnSpinLock:        true,
	asm.FnSpinUnlock:      true,
	asm.FnGetNetnsCookie:  true,
	asm.FnSkStorageGet:    true,
	asm.FnSkStorageDelete: true, // with sk_storage_get since 5.3 (sock_addr)
}

// TestCompat510 checks the instruction stream for what a 5.10 verifier
// would reject: helpers outside helpers510, kfuncs, fetching atomics
// (5.12), loops in the control-flow graph.
func TestCompat510(t *testing.T) {
	for _, v := range []variant{{skStorage: true}, {skStorage: false}} {
		t.Run(v.String(), func(t *testing.T) {
			spec, err := LoadSpec(objDir(t, v))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{ProgConnect4, ProgConnect6} {
				if spec.Programs[want] == nil {
					t.Fatalf("program %s missing", want)
				}
			}
			sawStorage := false
			for name, ps := range spec.Programs {
				for i, ins := range ps.Instructions {
					switch {
					case ins.IsKfuncCall():
						t.Errorf("%s insn %d: kfunc call %v", name, i, ins)
					case ins.IsBuiltinCall():
						fn := asm.BuiltinFunc(ins.Constant)
						if !helpers510[fn] {
							t.Errorf("%s insn %d: helper %s not in the 5.10 set", name, i, fn)
						}
						sawStorage = sawStorage || fn == asm.FnSkStorageGet
					case ins.IsFunctionCall():
						t.Errorf("%s insn %d: bpf-to-bpf call (keep helpers inlined)", name, i)
					case ins.OpCode.Class().IsStore() && ins.OpCode.Mode() == asm.AtomicMode:
						if op := ins.OpCode.AtomicOp(); op != asm.AddAtomic {
							t.Errorf("%s insn %d: atomic %s needs 5.12+", name, i, op)
						}
					}
				}
				if err := checkNoLoops(ps.Instructions); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
			if sawStorage != v.skStorage {
				t.Errorf("bpf_sk_storage_get used=%v with KMESH_HAVE_SK_STORAGE=%v", sawStorage, v.skStorage)
			}
		})
	}
}

// checkNoLoops fails if the control-flow graph has a cycle (the programs
// must not depend on the verifier's bounded-loop support).
func checkNoLoops(insns asm.Instructions) error {
	var offs []asm.RawInstructionOffset
	index := map[asm.RawInstructionOffset]int{}
	for it := insns.Iterate(); it.Next(); {
		index[it.Offset] = len(offs)
		offs = append(offs, it.Offset)
	}
	succ := func(i int) []int {
		ins := insns[i]
		next := offs[i] + asm.RawInstructionOffset(ins.Size()/asm.InstructionSize)
		var out []int
		add := func(o asm.RawInstructionOffset) {
			if j, ok := index[o]; ok {
				out = append(out, j)
			}
		}
		op := ins.OpCode
		if op.Class().IsJump() {
			switch op.JumpOp() {
			case asm.Exit:
				return nil
			case asm.Call:
				add(next)
				return out
			case asm.Ja:
				add(next + asm.RawInstructionOffset(ins.Offset))
				return out
			}
			add(next + asm.RawInstructionOffset(ins.Offset))
		}
		add(next)
		return out
	}
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(insns))
	var visit func(i int) error
	visit = func(i int) error {
		color[i] = grey
		for _, j := range succ(i) {
			switch color[j] {
			case grey:
				return fmt.Errorf("loop: insn %d jumps back to %d", i, j)
			case white:
				if err := visit(j); err != nil {
					return err
				}
			}
		}
		color[i] = black
		return nil
	}
	if len(insns) == 0 {
		return nil
	}
	return visit(0)
}

func TestCheckNoLoopsDetectsLoop(t *testing.T) {
	loop := asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.Add.Imm(asm.R0, 1),
		asm.JLT.Imm(asm.R0, 10, ""),
		asm.Return(),
	}
	loop[2].Offset = -2 // back to the add
	if err := checkNoLoops(loop); err == nil {
		t.Error("checkNoLoops accepted a loop")
	}
	loop[2].Offset = 0
	if err := checkNoLoops(loop); err != nil {
		t.Errorf("checkNoLoops rejected straight-line code: %v", err)
	}
}

// TestWithoutIPv6 builds and loads the KMESH_HAVE_IPV6=0 object: connect4 only.
func TestWithoutIPv6(t *testing.T) {
	testnet.RequireRoot(t)
	objs, err := Open(objDir(t, variant{skStorage: true, noIPv6: true}), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	if objs.Connect4 == nil || objs.Connect6 != nil {
		t.Errorf("connect4 %v, connect6 %v: want only connect4", objs.Connect4, objs.Connect6)
	}
}
