package config

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// allRules returns every allow-list reachable from the rule set, once each.
func allRules(rs *ruleSet) []*fieldRules {
	var out []*fieldRules
	seen := map[*fieldRules]bool{}
	var visit func(r *fieldRules)
	visit = func(r *fieldRules) {
		if seen[r] {
			return
		}
		seen[r] = true
		out = append(out, r)
		for _, e := range r.edges {
			visit(e.sub)
		}
	}
	for _, r := range []*fieldRules{rs.cluster, rs.listener, rs.chain, rs.tcpProxy, rs.hcm, rs.router, rs.vhost, rs.route} {
		visit(r)
	}
	return out
}

// Every field of every message Translate walks is classified on purpose: a
// go-control-plane upgrade that adds fields fails here until they are.
func TestAllowListsClassifyEveryField(t *testing.T) {
	rules := allRules(newRuleSet())
	if len(rules) < 20 {
		t.Fatalf("only %d allow-lists reachable", len(rules))
	}
	for _, r := range rules {
		if len(r.defaulted) > 0 {
			t.Errorf("%s: fields %v are not classified (they get the default note)", r.desc.FullName(), r.defaulted)
		}
	}
}

// sample returns a value that makes fd set in m.
func sample(m protoreflect.Message, fd protoreflect.FieldDescriptor) protoreflect.Value {
	scalar := func() protoreflect.Value {
		switch fd.Kind() {
		case protoreflect.BoolKind:
			return protoreflect.ValueOfBool(true)
		case protoreflect.EnumKind:
			return protoreflect.ValueOfEnum(1)
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			return protoreflect.ValueOfInt32(1)
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			return protoreflect.ValueOfInt64(1)
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			return protoreflect.ValueOfUint32(1)
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			return protoreflect.ValueOfUint64(1)
		case protoreflect.FloatKind:
			return protoreflect.ValueOfFloat32(1)
		case protoreflect.DoubleKind:
			return protoreflect.ValueOfFloat64(1)
		case protoreflect.StringKind:
			return protoreflect.ValueOfString("x")
		case protoreflect.BytesKind:
			return protoreflect.ValueOfBytes([]byte{1})
		}
		panic("kind " + fd.Kind().String())
	}
	v := m.NewField(fd)
	switch {
	case fd.IsMap():
		key := protoreflect.ValueOfString("k").MapKey()
		if fd.MapKey().Kind() != protoreflect.StringKind {
			key = protoreflect.ValueOfInt64(1).MapKey()
		}
		mv := v.Map().NewValue()
		v.Map().Set(key, mv)
	case fd.IsList():
		if fd.Message() != nil {
			v.List().Append(v.List().NewElement())
		} else {
			v.List().Append(scalar())
		}
	case fd.Message() != nil:
	default:
		v = scalar()
	}
	return v
}

// The compiled checks agree with protobuf: setting any one field of a
// message makes exactly that leaf set, and a walked field's getter returns
// the message protoreflect holds there.
func TestAllowListPresenceMatchesProtoreflect(t *testing.T) {
	for _, r := range allRules(newRuleSet()) {
		fields := r.desc.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			msg := reflect.New(r.goType).Interface().(proto.Message)
			pm := msg.ProtoReflect()
			pm.Set(fd, sample(pm, fd))
			if !pm.Has(fd) {
				t.Fatalf("%s: could not set %s", r.desc.FullName(), fd.Name())
			}
			v := reflect.ValueOf(msg)
			for j := range r.leaves {
				c := &r.leaves[j]
				if got, want := set(v, v.UnsafePointer(), c), c.name == fd.Name(); got != want {
					t.Errorf("%s with only %s set: leaf %s set = %v, want %v", r.desc.FullName(), fd.Name(), c.name, got, want)
				}
			}
			for j := range r.edges {
				c := &r.edges[j]
				var got proto.Message
				if c.one != nil {
					if e, ok := c.one(msg); ok {
						got = e
					}
				} else if c.n(msg) > 0 {
					if c.n(msg) != 1 {
						t.Errorf("%s: edge %s has %d elements, want 1", r.desc.FullName(), c.name, c.n(msg))
					}
					if e, ok := c.at(msg, 0); ok {
						got = e
					}
				}
				if c.name != fd.Name() {
					if got != nil {
						t.Errorf("%s with only %s set: edge %s returns a message", r.desc.FullName(), fd.Name(), c.name)
					}
					continue
				}
				var want proto.Message
				if fd.IsList() {
					want = pm.Get(fd).List().Get(0).Message().Interface()
				} else {
					want = pm.Get(fd).Message().Interface()
				}
				if got != want {
					t.Errorf("%s: edge %s returns %p, protoreflect holds %p", r.desc.FullName(), c.name, got, want)
				}
			}
		}
	}
}

// The rule set is built for every Translate call: it must stay cheap.
func BenchmarkNewRuleSet(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		newRuleSet()
	}
}
