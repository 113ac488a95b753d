package fsm

import (
	"bytes"
	"testing"
)

// mirror is an Observer that keeps its own copy of the binding table.
type mirror struct {
	t       *testing.T
	m       map[Resource]Binding
	resets  int
	changes int
}

func (o *mirror) Reset(v *View) {
	o.resets++
	o.m = map[Resource]Binding{}
	for _, b := range allBindings(v) {
		o.m[b.Resource] = b
	}
}

func (o *mirror) BindingChanged(old, nb *Binding) {
	o.changes++
	switch {
	case old == nil && nb == nil:
		o.t.Errorf("BindingChanged(nil, nil)")
	case nb == nil:
		if cur, ok := o.m[old.Resource]; !ok || cur != *old {
			o.t.Errorf("delete of %v: old %+v, mirror has %+v", old.Resource, *old, cur)
		}
		delete(o.m, old.Resource)
	default:
		cur, ok := o.m[nb.Resource]
		if (old == nil) == ok || (old != nil && (old.Resource != nb.Resource || cur != *old)) {
			o.t.Errorf("put of %v: old %v, mirror has %+v (%v)", nb.Resource, old, cur, ok)
		}
		o.m[nb.Resource] = *nb
	}
}

func (o *mirror) check(s *State) {
	o.t.Helper()
	all := allBindings(s.View())
	if len(all) != len(o.m) {
		o.t.Fatalf("mirror has %d bindings, state %d", len(o.m), len(all))
	}
	for _, b := range all {
		if o.m[b.Resource] != b {
			o.t.Fatalf("mirror %+v, state %+v", o.m[b.Resource], b)
		}
	}
}

func TestObserver(t *testing.T) {
	es := newGen(7).entries(propCommands)
	s := New()
	applyAll(s, es[:300])
	o := &mirror{t: t}
	remove := s.AddObserver(o) // starts with a Reset holding the current table
	if o.resets != 1 || len(o.m) != s.View().Len() {
		t.Fatalf("AddObserver: %d resets, %d bindings", o.resets, len(o.m))
	}
	o2 := &mirror{t: t}
	remove2 := s.AddObserver(o2) // a second observer sees the same changes
	applyAll(s, es[300:1500])
	o.check(s)
	o2.check(s)
	if o.changes == 0 || o2.changes != o.changes {
		t.Fatalf("changes observed: %d and %d", o.changes, o2.changes)
	}
	remove2()

	// Failed txns report nothing.
	before := o.changes
	b := active(na("2001:db8::1"), duidA, 1, 5)
	s.Apply(Entry{Index: 5000, Term: 9, Cmd: txn(putOp(active(na("2001:db8:ffff::1"), duidA, 1, 5)),
		Op{Resource: b.Resource, IfRev: 4999, Binding: b})})
	if o.changes != before {
		t.Fatalf("a failed txn reported %d changes", o.changes-before)
	}

	// Restore: a Reset with the restored table, and observation continues.
	other := New()
	applyAll(other, newGen(8).entries(400))
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, other.View(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if o.resets != 2 {
		t.Fatalf("Restore: %d resets", o.resets)
	}
	o.check(s)
	// A failed Restore is no Reset.
	if _, err := s.Restore(bytes.NewReader([]byte("junk"))); err == nil {
		t.Fatal("junk restored")
	}
	if o.resets != 2 {
		t.Fatalf("failed Restore reset the observer")
	}
	idx, _, _ := s.Applied()
	for i, e := range es[1500:] {
		e.Index = idx + uint64(i) + 1
		s.Apply(e)
	}
	o.check(s)

	// remove stops observation.
	remove()
	n, n2 := o.changes, o2.changes
	s.Apply(Entry{Index: 9999, Term: 9, Cmd: txn(putOp(active(na("2001:db8:ffff::2"), duidA, 1, 5)))})
	if o.changes != n || o2.changes != n2 {
		t.Fatal("observer called after it was removed")
	}
}

func TestParseResource(t *testing.T) {
	for _, r := range []Resource{na("2001:db8::1"), ta("fe80::1"), pd("2001:db8:8000::/56"), pd("::/0"), pd("2001:db8::1/128")} {
		got, err := ParseResource(r.String())
		if err != nil || got != r {
			t.Errorf("ParseResource(%q) = %v, %v", r.String(), got, err)
		}
	}
	if got, err := ParseResource("  PD 2001:db8:100::/56 "); err != nil || got != pd("2001:db8:100::/56") {
		t.Errorf("case/space: %v, %v", got, err)
	}
	for _, s := range []string{"", "na", "na 192.0.2.1", "pd 2001:db8::1/56", "pd 10.0.0.0/8", "xx 2001:db8::1",
		"na 2001:db8::/64", "pd 2001:db8::", "na 2001:db8::zz"} {
		if r, err := ParseResource(s); err == nil {
			t.Errorf("ParseResource(%q) = %v, want error", s, r)
		}
	}
}
