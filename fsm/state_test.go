package fsm

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

const (
	duidA = "\x00\x01\x00\x01\x2c\x5e\x7f\x10\x00\x00\x00\x00\x00\x0a"
	duidB = "\x00\x01\x00\x01\x2c\x5e\x7f\x10\x00\x00\x00\x00\x00\x0b"
	duidC = "\x00\x03\x00\x01\x00\x00\x00\x00\x00\x0c"
)

// allBindings returns every binding of v in resource order.
func allBindings(v *View) []Binding {
	var out []Binding
	v.Ascend(Resource{}, func(b *Binding) bool {
		out = append(out, *b)
		return true
	})
	return out
}

// checkIndexes verifies every index and counter of v against a brute-force
// scan of the binding table: no missing and no stale entries.
func checkIndexes(t testing.TB, v *View) {
	t.Helper()
	all := allBindings(v)
	if v.Len() != len(all) {
		t.Fatalf("Len() = %d, scan found %d", v.Len(), len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Resource.Compare(all[i].Resource) >= 0 {
			t.Fatalf("Ascend out of order: %v then %v", all[i-1].Resource, all[i].Resource)
		}
	}
	var counts Counts
	var owed, expiring []Binding
	byDUID := map[string][]Binding{}
	for _, b := range all {
		if got, ok := v.Get(b.Resource); !ok || got != b {
			t.Fatalf("Get(%v) = %+v, %v; scan has %+v", b.Resource, got, ok, b)
		}
		counts[b.Resource.Type][b.Status]++
		if b.Owed() {
			owed = append(owed, b)
		}
		if b.StateExpirationTime != 0 {
			expiring = append(expiring, b)
		}
		if b.DUID != "" {
			byDUID[b.DUID] = append(byDUID[b.DUID], b)
		}
	}
	st := v.Stats()
	if st.Bindings != len(all) || st.Owed != len(owed) || st.Counts != counts {
		t.Fatalf("Stats = %+v; scan: %d bindings, %d owed, counts %v", st, len(all), len(owed), counts)
	}
	if got := v.Owed(Resource{}, math.MaxInt); !equalBindings(got, owed) {
		t.Fatalf("Owed = %v\nscan %v", resources(got), resources(owed))
	}
	slices.SortStableFunc(expiring, func(a, b Binding) int {
		if a.StateExpirationTime != b.StateExpirationTime {
			if a.StateExpirationTime < b.StateExpirationTime {
				return -1
			}
			return 1
		}
		return a.Resource.Compare(b.Resource)
	})
	if got := v.Expiring(math.MaxInt64, math.MaxInt); !equalBindings(got, expiring) {
		t.Fatalf("Expiring = %v\nscan %v", resources(got), resources(expiring))
	}
	next, ok := v.NextExpiry()
	if ok != (len(expiring) > 0) || (ok && next != expiring[0].StateExpirationTime) {
		t.Fatalf("NextExpiry = %d, %v; scan has %d expiring", next, ok, len(expiring))
	}
	if got := v.ClientAll(""); len(got) != 0 {
		t.Fatalf("ClientAll(\"\") = %v", resources(got))
	}
	for duid, bs := range byDUID {
		slices.SortStableFunc(bs, func(a, b Binding) int {
			if a.Resource.Type != b.Resource.Type {
				return int(a.Resource.Type) - int(b.Resource.Type)
			}
			if a.IAID != b.IAID {
				if a.IAID < b.IAID {
					return -1
				}
				return 1
			}
			return a.Resource.Compare(b.Resource)
		})
		if got := v.ClientAll(duid); !equalBindings(got, bs) {
			t.Fatalf("ClientAll(%x) = %v\nscan %v", duid, resources(got), resources(bs))
		}
		for i := 0; i < len(bs); {
			j := i
			for j < len(bs) && bs[j].Resource.Type == bs[i].Resource.Type && bs[j].IAID == bs[i].IAID {
				j++
			}
			if got := v.Client(duid, bs[i].Resource.Type, bs[i].IAID); !equalBindings(got, bs[i:j]) {
				t.Fatalf("Client(%x, %v, %d) = %v\nscan %v", duid, bs[i].Resource.Type, bs[i].IAID, resources(got), resources(bs[i:j]))
			}
			i = j
		}
	}
}

func equalBindings(a, b []Binding) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func resources(bs []Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Resource.String()
	}
	return out
}

func TestEmptyState(t *testing.T) {
	s := New()
	if _, ok := s.Get(na("2001:db8::1")); ok {
		t.Fatal("Get on empty state found something")
	}
	if s.ServerDUID() != nil {
		t.Fatalf("ServerDUID = %x", s.ServerDUID())
	}
	if s.Endpoint() != (EndpointState{}) {
		t.Fatalf("Endpoint = %+v", s.Endpoint())
	}
	if i, tm, ct := s.Applied(); i != 0 || tm != 0 || ct != 0 {
		t.Fatalf("Applied = %d %d %d", i, tm, ct)
	}
	if _, ok := s.NextExpiry(); ok {
		t.Fatal("NextExpiry on empty state")
	}
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("Stats = %+v", st)
	}
	checkIndexes(t, s.View())
}

func TestTxnAtomicity(t *testing.T) {
	a := newApplier(t)
	b1 := active(na("2001:db8::1"), duidA, 1, 1000)
	b2 := active(na("2001:db8::2"), duidB, 1, 2000)
	a.mustApply(txn(putOp(b1)))
	a.mustApply(txn(putOp(b2)))
	before := dumpState(a.s)
	statsBefore := a.s.Stats()

	b3 := active(pd("2001:db8:100::/56"), duidA, 9, 3000)
	conflicts := []struct {
		name string
		op   Op
		have uint64
	}{
		{"wrong revision", Op{Resource: b2.Resource, IfRev: 1, Binding: b2}, 2},
		{"must not exist but does", Op{Resource: b2.Resource, IfRev: 0, Delete: true}, 2},
		{"must exist but does not", Op{Resource: b3.Resource, IfRev: 2, Binding: b3}, 0},
	}
	for _, tc := range conflicts {
		t.Run(tc.name, func(t *testing.T) {
			c := txn(
				Op{Resource: na("2001:db8::3"), IfRev: 0, Binding: active(na("2001:db8::3"), duidC, 3, 500)}, // would insert
				Op{Resource: b1.Resource, IfRev: 1, Delete: true},                                            // would delete
				tc.op, // fails
				putOp(active(na("2001:db8::4"), duidC, 3, 600)),
			)
			c.Time = 42_000
			err := a.apply(c)
			if err == nil {
				t.Fatal("txn with a failing precondition succeeded")
			}
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("error %q is not ErrConflict", err)
			}
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not *ConflictError", err)
			}
			want := ConflictError{Op: 2, Resource: tc.op.Resource, Want: tc.op.IfRev, Have: tc.have}
			if *ce != want {
				t.Fatalf("ConflictError = %+v, want %+v", *ce, want)
			}
			if !strings.Contains(err.Error(), "op 2") {
				t.Errorf("error text %q does not name the op", err)
			}
			if got := dumpState(a.s); got != before {
				t.Fatalf("failed txn changed the state:\nbefore %s\nafter  %s", before, got)
			}
			// The applied index and command time still advance.
			st := a.s.Stats()
			if st.LastIndex != a.index || st.LastTime != 42_000 {
				t.Fatalf("Stats after failed txn = %+v, want index %d time 42000", st, a.index)
			}
			st.LastIndex, st.LastTime = statsBefore.LastIndex, statsBefore.LastTime
			if st != statsBefore {
				t.Fatalf("failed txn changed stats: %+v -> %+v", statsBefore, st)
			}
		})
	}

	// Invalid ops in third position are rejected as a whole, too.
	invalid := map[string]Op{
		"bad resource":     delOp(Resource{Type: IANA, Len: 64}),
		"resource differs": {Resource: b3.Resource, IfRev: AnyRev, Binding: b1},
		"no DUID":          {Resource: b3.Resource, IfRev: AnyRev, Binding: Binding{Resource: b3.Resource, Status: StatusActive}},
		"bad status":       {Resource: b3.Resource, IfRev: AnyRev, Binding: Binding{Resource: b3.Resource}},
		"bad flags":        {Resource: b3.Resource, IfRev: AnyRev, Binding: Binding{Resource: b3.Resource, Status: StatusFree, Flags: 8}},
		"long DUID": {Resource: b3.Resource, IfRev: AnyRev, Binding: Binding{Resource: b3.Resource, Status: StatusFree,
			DUID: strings.Repeat("x", MaxDUIDLen+1)}},
	}
	for name, op := range invalid {
		t.Run(name, func(t *testing.T) {
			err := a.apply(txn(putOp(active(na("2001:db8::3"), duidC, 3, 500)), delOp(b1.Resource), op))
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error = %v, want ErrInvalidCommand", err)
			}
			if got := dumpState(a.s); got != before {
				t.Fatalf("invalid txn changed the state:\n%s", got)
			}
		})
	}

	// And with everything valid the same txn applies whole.
	idx := a.index + 1
	a.mustApply(txn(
		Op{Resource: na("2001:db8::3"), IfRev: 0, Binding: active(na("2001:db8::3"), duidC, 3, 500)},
		Op{Resource: b1.Resource, IfRev: 1, Delete: true},
		Op{Resource: b2.Resource, IfRev: 2, Delete: true},
		Op{Resource: b3.Resource, IfRev: 0, Binding: b3},
	))
	got := allBindings(a.s.View())
	if len(got) != 2 || got[0].Resource != na("2001:db8::3") || got[1].Resource != b3.Resource ||
		got[0].Rev != idx || got[1].Rev != idx {
		t.Fatalf("after txn: %+v", got)
	}
	checkIndexes(t, a.s.View())
}

// largeTxnWithDup is a txn bigger than dupScanMax (a set finds duplicates)
// whose last op repeats its first resource.
func largeTxnWithDup() *Command {
	var ops []Op
	for i := 0; i < 3*dupScanMax; i++ {
		ops = append(ops, delOp(na(fmt.Sprintf("2001:db8::1:%x", i))))
	}
	return txn(append(ops, delOp(na("2001:db8::1:0")))...)
}

func TestTxnDuplicateResource(t *testing.T) {
	a := newApplier(t)
	b := active(na("2001:db8::1"), duidA, 1, 1000)
	a.mustApply(txn(putOp(b)))
	before := dumpState(a.s)
	b2 := b
	b2.IAID = 2
	for name, c := range map[string]*Command{
		"put put":    txn(putOp(b), putOp(b2)),
		"put delete": txn(putOp(b2), delOp(b.Resource)),
		"third op":   txn(delOp(na("2001:db8::9")), putOp(active(na("2001:db8::8"), duidA, 1, 5)), delOp(na("2001:db8::9"))),
		"large txn":  largeTxnWithDup(),
	} {
		err := a.apply(c)
		if !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "twice") {
			t.Errorf("%s: error = %v, want ErrInvalidCommand (twice)", name, err)
		}
		if got := dumpState(a.s); got != before {
			t.Errorf("%s: changed the state:\n%s", name, got)
		}
	}
	// Same address in different IA types, or same prefix address with a
	// different length, are different resources.
	a.mustApply(txn(
		putOp(active(na("2001:db8::5"), duidA, 1, 5)),
		putOp(active(ta("2001:db8::5"), duidA, 1, 5)),
		putOp(active(pd("2001:db8::/48"), duidA, 1, 5)),
		putOp(active(pd("2001:db8::/56"), duidA, 1, 5)),
	))
	if n := a.s.View().Len(); n != 5 {
		t.Fatalf("Len = %d, want 5", n)
	}
}

func TestRevIsEntryIndex(t *testing.T) {
	s := New()
	b := active(na("2001:db8::1"), duidA, 1, 1000)
	b.Rev = 555 // ignored
	if r := s.Apply(Entry{Index: 17, Term: 3, Cmd: txn(Op{Resource: b.Resource, IfRev: 0, Binding: b})}); r.Err != nil || r.Index != 17 {
		t.Fatalf("Apply = %+v", r)
	}
	got, ok := s.Get(b.Resource)
	if !ok || got.Rev != 17 {
		t.Fatalf("Get = %+v, %v; want Rev 17", got, ok)
	}
	want := b
	want.Rev = 17
	if got != want {
		t.Fatalf("stored %+v, want %+v", got, want)
	}
	// The caller's command is not modified, and later changes to it do not
	// reach the stored binding.
	c := txn(Op{Resource: b.Resource, IfRev: 17, Binding: b})
	if r := s.Apply(Entry{Index: 40, Term: 4, Cmd: c}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if c.Ops[0].Binding.Rev != 555 {
		t.Fatalf("Apply modified the command's binding: Rev %d", c.Ops[0].Binding.Rev)
	}
	c.Ops[0].Binding.IAID = 999
	if got, _ := s.Get(b.Resource); got.Rev != 40 || got.IAID != 1 {
		t.Fatalf("after re-put: %+v", got)
	}
	// Get returns a copy.
	got, _ = s.Get(b.Resource)
	got.IAID = 12345
	if again, _ := s.Get(b.Resource); again.IAID != 1 {
		t.Fatalf("Get result aliases the stored binding")
	}
	// Stale precondition.
	err := s.Apply(Entry{Index: 41, Term: 4, Cmd: txn(Op{Resource: b.Resource, IfRev: 17, Delete: true})}).Err
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Have != 40 || ce.Want != 17 || ce.Op != 0 {
		t.Fatalf("stale delete: %v", err)
	}
	if i, term, _ := s.Applied(); i != 41 || term != 4 {
		t.Fatalf("Applied = %d, %d", i, term)
	}
	// Delete with the right revision, then IfRev 0 holds again.
	if err := s.Apply(Entry{Index: 42, Term: 4, Cmd: txn(Op{Resource: b.Resource, IfRev: 40, Delete: true})}).Err; err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(b.Resource); ok {
		t.Fatal("deleted binding still there")
	}
	if err := s.Apply(Entry{Index: 43, Term: 4, Cmd: txn(Op{Resource: b.Resource, IfRev: 0, Binding: b})}).Err; err != nil {
		t.Fatal(err)
	}
	// Deleting something absent unconditionally is a successful no-op.
	before := dumpState(s)
	if err := s.Apply(Entry{Index: 44, Term: 4, Cmd: txn(delOp(na("2001:db8::77")))}).Err; err != nil {
		t.Fatal(err)
	}
	if dumpState(s) != before {
		t.Fatal("deleting an absent binding changed the state")
	}
}

func TestIndexes(t *testing.T) {
	a := newApplier(t)
	r1, r2, r3, r4, r5 := na("2001:db8::1"), na("2001:db8::2"), pd("2001:db8:100::/56"), na("2001:db8::4"), na("2001:db8::5")
	b1 := active(r1, duidA, 1, 1000)
	b2 := active(r2, duidA, 1, 2000)
	b3 := active(r3, duidA, 1, 1000)
	b4 := active(r4, duidA, 2, 3000)
	b5 := active(r5, duidB, 1, 500)
	free := Binding{Resource: na("2001:db8::6"), Status: StatusFree} // no DUID, no expiry
	a.mustApply(txn(putOp(b4), putOp(b2), putOp(b5)))
	a.mustApply(txn(putOp(b1), putOp(b3), putOp(free)))
	checkIndexes(t, a.s.View())

	clientRes := func(bs []Binding) string { return strings.Join(resources(bs), ",") }
	expect := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Fatalf("%s = %s, want %s", what, got, want)
		}
	}
	expect("Client(A,na,1)", clientRes(a.s.Client(duidA, IANA, 1)), "na 2001:db8::1,na 2001:db8::2")
	expect("Client(A,na,2)", clientRes(a.s.Client(duidA, IANA, 2)), "na 2001:db8::4")
	expect("Client(A,pd,1)", clientRes(a.s.Client(duidA, IAPD, 1)), "pd 2001:db8:100::/56")
	expect("Client(A,ta,1)", clientRes(a.s.Client(duidA, IATA, 1)), "")
	expect("Client(A,na,3)", clientRes(a.s.Client(duidA, IANA, 3)), "")
	expect("Client(C,na,1)", clientRes(a.s.Client(duidC, IANA, 1)), "")
	expect("ClientAll(A)", clientRes(a.s.ClientAll(duidA)), "na 2001:db8::1,na 2001:db8::2,na 2001:db8::4,pd 2001:db8:100::/56")
	expect("ClientAll(B)", clientRes(a.s.ClientAll(duidB)), "na 2001:db8::5")
	// A DUID that is a prefix of another one is a different client.
	expect("ClientAll(A[:13])", clientRes(a.s.ClientAll(duidA[:13])), "")
	expect("Expiring(999)", clientRes(a.s.Expiring(999, 10)), "na 2001:db8::5")
	expect("Expiring(1000)", clientRes(a.s.Expiring(1000, 10)), "na 2001:db8::5,na 2001:db8::1,pd 2001:db8:100::/56")
	expect("Expiring(1000, 2)", clientRes(a.s.Expiring(1000, 2)), "na 2001:db8::5,na 2001:db8::1")
	expect("Expiring(all, 0)", clientRes(a.s.Expiring(math.MaxInt64, 0)), "")
	expect("Expiring(499)", clientRes(a.s.Expiring(499, 10)), "")
	if next, ok := a.s.NextExpiry(); !ok || next != 500 {
		t.Fatalf("NextExpiry = %d, %v", next, ok)
	}
	if got := a.s.Client(duidA, IANA, 1); got[0] != withRev(b1, 2) || got[1] != withRev(b2, 1) {
		t.Fatalf("Client returned %+v", got)
	}

	// Move b1 to client B (DUID change), b2 to IAID 7, change b5's expiry.
	b1.DUID = duidB
	b2.IAID = 7
	b5.StateExpirationTime = 4000
	a.mustApply(txn(putOp(b1), putOp(b2), putOp(b5)))
	checkIndexes(t, a.s.View())
	expect("Client(A,na,1) after", clientRes(a.s.Client(duidA, IANA, 1)), "")
	expect("Client(A,na,7) after", clientRes(a.s.Client(duidA, IANA, 7)), "na 2001:db8::2")
	expect("Client(B,na,1) after", clientRes(a.s.Client(duidB, IANA, 1)), "na 2001:db8::1,na 2001:db8::5")
	expect("ClientAll(A) after", clientRes(a.s.ClientAll(duidA)), "na 2001:db8::4,na 2001:db8::2,pd 2001:db8:100::/56")
	// The old expiry time of b5 no longer appears.
	expect("Expiring(999) after", clientRes(a.s.Expiring(999, 10)), "")
	expect("Expiring(all) after", clientRes(a.s.Expiring(math.MaxInt64, 10)),
		"na 2001:db8::1,pd 2001:db8:100::/56,na 2001:db8::2,na 2001:db8::4,na 2001:db8::5")
	if next, _ := a.s.NextExpiry(); next != 1000 {
		t.Fatalf("NextExpiry = %d, want 1000", next)
	}
	if got := a.s.Expiring(math.MaxInt64, 10); got[4].StateExpirationTime != 4000 {
		t.Fatalf("Expiring returned a stale binding: %+v", got[4])
	}

	// Clearing the expiry removes it from the index; ACTIVE -> EXPIRED keeps it.
	b3.StateExpirationTime = 0
	b4.Status = StatusExpired
	a.mustApply(txn(putOp(b3), putOp(b4)))
	checkIndexes(t, a.s.View())
	expect("Expiring(all) cleared", clientRes(a.s.Expiring(math.MaxInt64, 10)),
		"na 2001:db8::1,na 2001:db8::2,na 2001:db8::4,na 2001:db8::5")

	// Owed: PartnerLifetime or FlagUpdateOwed.
	expect("Owed none", clientRes(a.s.Owed(Resource{}, 10)), "")
	b1.PartnerLifetime = 5000
	b3.Flags = FlagUpdateOwed
	b5.Flags = FlagResent // not owed by itself
	free.Flags = FlagUpdateOwed | FlagResent
	a.mustApply(txn(putOp(b1), putOp(b3), putOp(b5), putOp(free)))
	checkIndexes(t, a.s.View())
	expect("Owed", clientRes(a.s.Owed(Resource{}, 10)), "na 2001:db8::1,na 2001:db8::6,pd 2001:db8:100::/56")
	expect("Owed limit", clientRes(a.s.Owed(Resource{}, 2)), "na 2001:db8::1,na 2001:db8::6")
	expect("Owed from ::2", clientRes(a.s.Owed(r2, 10)), "na 2001:db8::6,pd 2001:db8:100::/56")
	expect("Owed from ::6", clientRes(a.s.Owed(free.Resource, 1)), "na 2001:db8::6")
	expect("Owed from pd", clientRes(a.s.Owed(Resource{Type: IAPD}, 10)), "pd 2001:db8:100::/56")
	if st := a.s.Stats(); st.Owed != 3 {
		t.Fatalf("Stats.Owed = %d", st.Owed)
	}
	// Acknowledged: no longer owed.
	b1.PartnerLifetime = 0
	b1.AckedPartnerLifetime = 5000
	free.Flags = FlagResent
	a.mustApply(txn(putOp(b1), putOp(free)))
	checkIndexes(t, a.s.View())
	expect("Owed after ack", clientRes(a.s.Owed(Resource{}, 10)), "pd 2001:db8:100::/56")

	// Delete removes a binding from every index.
	a.mustApply(txn(delOp(r3), delOp(r5), delOp(na("2001:db8::99"))))
	checkIndexes(t, a.s.View())
	expect("Owed after delete", clientRes(a.s.Owed(Resource{}, 10)), "")
	expect("ClientAll(B) after delete", clientRes(a.s.ClientAll(duidB)), "na 2001:db8::1")
	expect("Expiring(all) after delete", clientRes(a.s.Expiring(math.MaxInt64, 10)), "na 2001:db8::1,na 2001:db8::2,na 2001:db8::4")
	a.mustApply(txn(delOp(r1), delOp(r2), delOp(r4), delOp(free.Resource)))
	checkIndexes(t, a.s.View())
	if st := a.s.Stats(); st.Bindings != 0 || st.Owed != 0 || st.Counts != (Counts{}) {
		t.Fatalf("Stats after deleting all = %+v", st)
	}
	if _, ok := a.s.NextExpiry(); ok {
		t.Fatal("NextExpiry after deleting all")
	}
}

func withRev(b Binding, rev uint64) Binding {
	b.Rev = rev
	return b
}

func TestExpiringTiesAndNegative(t *testing.T) {
	a := newApplier(t)
	var ops []Op
	for i := 9; i >= 0; i-- {
		b := active(na(fmt.Sprintf("2001:db8::%d", i)), duidA, 1, 100)
		if i == 9 {
			b.StateExpirationTime = -5 // before the epoch: still ordered first
		}
		ops = append(ops, putOp(b))
	}
	a.mustApply(txn(ops...))
	got := a.s.Expiring(100, 100)
	if len(got) != 10 || got[0].Resource != na("2001:db8::9") {
		t.Fatalf("Expiring = %v", resources(got))
	}
	for i := 1; i < 10; i++ {
		if got[i].Resource != na(fmt.Sprintf("2001:db8::%d", i-1)) {
			t.Fatalf("ties not in resource order: %v", resources(got))
		}
	}
	if next, _ := a.s.NextExpiry(); next != -5 {
		t.Fatalf("NextExpiry = %d", next)
	}
	if got := a.s.Expiring(-6, 10); len(got) != 0 {
		t.Fatalf("Expiring(-6) = %v", resources(got))
	}
}

func TestStatsCounts(t *testing.T) {
	a := newApplier(t)
	var ops []Op
	var want Counts
	n := 0
	for ty := IANA; ty <= IAPD; ty++ {
		for st := StatusActive; st <= maxStatus; st++ {
			for k := 0; k < int(ty)+int(st); k++ { // distinct count per cell
				var r Resource
				switch ty {
				case IAPD:
					r = pd(fmt.Sprintf("2001:db8:%x:%x00::/56", uint8(st), k))
				default:
					r = AddrResource(ty, na(fmt.Sprintf("2001:db8::%x:%x", uint8(st), k)).Addr())
				}
				b := active(r, duidA, uint32(k), 100)
				b.Status = st
				ops = append(ops, putOp(b))
				want[ty][st]++
				n++
			}
		}
	}
	a.mustApply(txn(ops...))
	st := a.s.Stats()
	if st.Counts != want || st.Bindings != n {
		t.Fatalf("Stats = %+v\nwant counts %v (%d)", st, want, n)
	}
	if st.LastIndex != 1 || st.LastTerm != 1 || st.LastTime != txn().Time {
		t.Fatalf("Stats metadata = %+v", st)
	}
	// Changing status moves a binding between cells; replacing keeps the total.
	b := ops[0].Binding
	b.Status = StatusReleased
	a.mustApply(txn(putOp(b)))
	want[b.Resource.Type][ops[0].Binding.Status]--
	want[b.Resource.Type][StatusReleased]++
	if got := a.s.Stats(); got.Counts != want || got.Bindings != n {
		t.Fatalf("after status change: %+v, want %v", got, want)
	}
	a.mustApply(txn(delOp(b.Resource)))
	want[b.Resource.Type][StatusReleased]--
	if got := a.s.Stats(); got.Counts != want || got.Bindings != n-1 {
		t.Fatalf("after delete: %+v, want %v", got, want)
	}
	checkIndexes(t, a.s.View())
}

func TestSetServerDUID(t *testing.T) {
	a := newApplier(t)
	first := []byte{0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	c := &Command{Type: CmdSetServerDUID, Time: 5, Origin: OriginServer, ServerDUID: first}
	a.mustApply(c)
	first[13] = 0xff // the state keeps its own copy
	want := []byte{0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if got := a.s.ServerDUID(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ServerDUID = %x, want %x", got, want)
	}
	got := a.s.ServerDUID()
	got[0] = 0xee // and returns a copy
	// Second writer loses, silently.
	a.mustApply(&Command{Type: CmdSetServerDUID, Time: 6, ServerDUID: []byte{9, 9, 9}})
	if got := a.s.ServerDUID(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ServerDUID after second set = %x, want %x", got, want)
	}
	if got := a.s.View().ServerDUID(); !reflect.DeepEqual(got, want) {
		t.Fatalf("View.ServerDUID = %x, want %x", got, want)
	}
	if !strings.Contains(dumpState(a.s), "server-duid=000100010102030405060708090a ") {
		t.Fatalf("dump does not show the server DUID: %s", dumpState(a.s))
	}
	if _, _, ct := a.s.Applied(); ct != 6 {
		t.Fatalf("Applied time = %d, want 6", ct)
	}
}

func TestSetEndpoint(t *testing.T) {
	a := newApplier(t)
	e1 := &EndpointState{State: 2, PreviousState: 1, StateSince: 100, PartnerState: 3, PartnerStateSince: 90,
		LastContact: 99, LastOperating: 98, PartnerDownTime: 0, Communicated: true}
	a.mustApply(&Command{Type: CmdSetEndpoint, Endpoint: e1})
	if got := a.s.Endpoint(); got != *e1 {
		t.Fatalf("Endpoint = %+v", got)
	}
	e1.State = 9 // the state keeps its own copy
	if got := a.s.Endpoint(); got.State != 2 {
		t.Fatalf("Endpoint aliases the command's record: %+v", got)
	}
	e2 := EndpointState{State: 4, HeldInStartup: true, PartnerDownTime: 5}
	a.mustApply(&Command{Type: CmdSetEndpoint, Endpoint: &e2})
	if got := a.s.Endpoint(); got != e2 {
		t.Fatalf("Endpoint after replace = %+v, want %+v (replaced whole, not merged)", got, e2)
	}
	if got := a.s.View().Endpoint(); got != e2 {
		t.Fatalf("View.Endpoint = %+v", got)
	}
	before := dumpState(a.s)
	if err := a.apply(&Command{Type: CmdSetEndpoint}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("set-endpoint without record: %v", err)
	}
	if got := dumpState(a.s); got != before || a.s.Endpoint() != e2 {
		t.Fatalf("invalid set-endpoint changed the state")
	}
}

func TestInvalidCommandTypes(t *testing.T) {
	a := newApplier(t)
	a.mustApply(txn(putOp(active(na("2001:db8::1"), duidA, 1, 5))))
	before := dumpState(a.s)
	for _, ty := range []CmdType{0, 5, 255} {
		if err := a.apply(&Command{Type: ty}); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("type %d: %v", ty, err)
		}
	}
	a.mustApply(&Command{Type: CmdNoop, Time: 77})
	a.mustApply(txn()) // an empty txn is fine
	if got := dumpState(a.s); got != before {
		t.Fatalf("state changed:\n%s", got)
	}
	if i, _, ct := a.s.Applied(); i != a.index || ct != txn().Time {
		t.Fatalf("Applied = %d, %d", i, ct)
	}
}

func TestDecodeErrEntry(t *testing.T) {
	s := New()
	s.Apply(Entry{Index: 1, Term: 1, Cmd: txn(putOp(active(na("2001:db8::1"), duidA, 1, 5)))})
	before := dumpState(s)
	_, _, tm := s.Applied()
	derr := fmt.Errorf("wrapped: %w", ErrCorruptEntry)
	r := s.Apply(Entry{Index: 2, Term: 5, DecodeErr: derr})
	if r.Index != 2 || r.Err != derr {
		t.Fatalf("Result = %+v, want the decode error", r)
	}
	if i, term, tm2 := s.Applied(); i != 2 || term != 5 || tm2 != tm {
		t.Fatalf("Applied = %d, %d, %d; want 2, 5, %d", i, term, tm2, tm)
	}
	if got := dumpState(s); got != before {
		t.Fatalf("undecodable entry changed the state")
	}
	// No command and no error: still refused, still advances.
	r = s.Apply(Entry{Index: 3, Term: 5})
	if !errors.Is(r.Err, ErrCorruptEntry) || r.Index != 3 {
		t.Fatalf("empty entry: %+v", r)
	}
	if i, _, _ := s.Applied(); i != 3 {
		t.Fatalf("Applied index = %d", i)
	}
	if got := dumpState(s); got != before {
		t.Fatalf("empty entry changed the state")
	}
	if st := s.Stats(); st.LastIndex != 3 || st.LastTerm != 5 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestApplyBatch(t *testing.T) {
	cmds := []*Command{
		txn(putOp(active(na("2001:db8::1"), duidA, 1, 5))),
		txn(Op{Resource: na("2001:db8::1"), IfRev: 0, Delete: true}), // conflict
		nil, // undecodable
		{Type: CmdSetServerDUID, ServerDUID: []byte{1}},
		txn(Op{Resource: na("2001:db8::1"), IfRev: 10, Binding: active(na("2001:db8::1"), duidB, 2, 6)}),
	}
	es := make([]Entry, len(cmds))
	for i, c := range cmds {
		es[i] = Entry{Index: uint64(10 + i), Term: 2, Cmd: c}
		if c == nil {
			es[i].DecodeErr = ErrCorruptEntry
		}
	}
	s1 := New()
	rs := s1.ApplyBatch(es)
	if len(rs) != len(es) {
		t.Fatalf("%d results", len(rs))
	}
	wantErr := []error{nil, ErrConflict, ErrCorruptEntry, nil, nil}
	for i, r := range rs {
		if r.Index != uint64(10+i) || !errors.Is(r.Err, wantErr[i]) || (wantErr[i] == nil) != (r.Err == nil) {
			t.Errorf("result %d = %+v, want error %v", i, r, wantErr[i])
		}
	}
	s2 := New()
	for _, e := range es {
		s2.Apply(e)
	}
	if dumpState(s1) != dumpState(s2) || s1.Stats() != s2.Stats() {
		t.Fatalf("ApplyBatch and Apply differ:\n%s\n%s", dumpState(s1), dumpState(s2))
	}
	if b, _ := s1.Get(na("2001:db8::1")); b.Rev != 14 || b.DUID != duidB {
		t.Fatalf("binding = %+v", b)
	}
	if rs := s1.ApplyBatch(nil); len(rs) != 0 {
		t.Fatalf("ApplyBatch(nil) = %v", rs)
	}
}

func TestViewIsolation(t *testing.T) {
	a := newApplier(t)
	// Enough bindings for a multi-level btree, so copy-on-write of inner nodes is exercised.
	const n = 3000
	ops := make([]Op, 0, n)
	for i := 0; i < n; i++ {
		b := active(na(fmt.Sprintf("2001:db8::%x", i+1)), fmt.Sprintf("duid-%d", i%100), uint32(i%7), int64(1000+i%50))
		if i%10 == 0 {
			b.PartnerLifetime = 10
		}
		ops = append(ops, putOp(b))
	}
	a.mustApply(txn(ops...))
	a.mustApply(&Command{Type: CmdSetEndpoint, Endpoint: &EndpointState{State: 1}})
	v := a.s.View()
	wantDump := dump(v)
	wantStats := v.Stats()
	wantClient := v.ClientAll("duid-3")
	wantExp := v.Expiring(1010, 1000)
	wantOwed := v.Owed(Resource{}, 1000)

	// Change everything: replace, delete, add, server DUID, endpoint.
	for i := 0; i < n; i += 3 {
		b := ops[i].Binding
		b.DUID = "moved"
		b.StateExpirationTime = 5
		b.PartnerLifetime = 0
		b.Status = StatusExpired
		a.mustApply(txn(putOp(b), delOp(ops[(i+1)%n].Resource), putOp(active(pd(fmt.Sprintf("2001:db8:%x::/48", i+1)), "new", 1, 1))))
	}
	a.mustApply(&Command{Type: CmdSetServerDUID, ServerDUID: []byte{1, 2}})
	a.mustApply(&Command{Type: CmdSetEndpoint, Endpoint: &EndpointState{State: 7}})
	v2 := a.s.View()
	if dump(v2) == wantDump {
		t.Fatal("test is broken: the state did not change")
	}
	if got := dump(v); got != wantDump {
		t.Fatal("View changed after later Applies")
	}
	if got := v.Stats(); got != wantStats {
		t.Fatalf("View stats changed: %+v -> %+v", wantStats, got)
	}
	if !equalBindings(v.ClientAll("duid-3"), wantClient) || !equalBindings(v.Expiring(1010, 1000), wantExp) ||
		!equalBindings(v.Owed(Resource{}, 1000), wantOwed) {
		t.Fatal("View index answers changed after later Applies")
	}
	if v.ServerDUID() != nil || v.Endpoint().State != 1 {
		t.Fatalf("View metadata changed: %x %+v", v.ServerDUID(), v.Endpoint())
	}
	checkIndexes(t, v)
	checkIndexes(t, v2)
	// Two views taken at the same time are independent of each other and of the state.
	v3 := a.s.View()
	a.mustApply(txn(delOp(ops[2].Resource)))
	if dump(v3) != dump(v2) {
		t.Fatal("views taken at the same point differ")
	}
	if dumpState(a.s) == dump(v3) {
		t.Fatal("delete after View not visible in the state")
	}
}

func TestAscendRange(t *testing.T) {
	a := newApplier(t)
	for i := 1; i <= 9; i++ {
		a.mustApply(txn(putOp(active(na(fmt.Sprintf("2001:db8::%d", i)), duidA, 1, 5))))
	}
	v := a.s.View()
	var got []string
	v.AscendRange(na("2001:db8::3"), na("2001:db8::6"), func(b *Binding) bool {
		got = append(got, b.Resource.Addr().String())
		return true
	})
	if strings.Join(got, ",") != "2001:db8::3,2001:db8::4,2001:db8::5" {
		t.Fatalf("AscendRange = %v", got)
	}
	got = nil
	v.Ascend(na("2001:db8::7"), func(b *Binding) bool {
		got = append(got, b.Resource.Addr().String())
		return len(got) < 2
	})
	if strings.Join(got, ",") != "2001:db8::7,2001:db8::8" {
		t.Fatalf("Ascend with stop = %v", got)
	}
	got = nil
	v.Descend(na("2001:db8::7"), func(b *Binding) bool {
		got = append(got, b.Resource.Addr().String())
		return len(got) < 3
	})
	if strings.Join(got, ",") != "2001:db8::7,2001:db8::6,2001:db8::5" {
		t.Fatalf("Descend with stop = %v", got)
	}
}

// TestConcurrentReaders runs readers and views against a live applier; run
// with -race it checks the locking and the copy-on-write views.
func TestConcurrentReaders(t *testing.T) {
	s := New()
	const writes = 400
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 4)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := s.View()
				d1 := dump(v)
				_ = s.ClientAll("c1")
				_ = s.Expiring(math.MaxInt64, 10)
				_, _ = s.Get(na("2001:db8::1"))
				_ = s.Stats()
				_ = s.Owed(Resource{}, 5)
				// Every binding written in one txn carries the same Rev; a
				// view never shows half a txn.
				revs := map[uint64]int{}
				v.Ascend(Resource{}, func(b *Binding) bool {
					revs[b.Rev]++
					return true
				})
				for rev, k := range revs {
					if k%2 != 0 {
						errs <- fmt.Sprintf("view shows %d bindings of rev %d (txns write pairs)", k, rev)
						return
					}
				}
				if dump(v) != d1 {
					errs <- "view changed while being read"
					return
				}
			}
		}()
	}
	for i := 1; i <= writes; i++ {
		s.Apply(Entry{Index: uint64(i), Term: 1, Cmd: txn(
			putOp(active(na(fmt.Sprintf("2001:db8::%x", i%50)), fmt.Sprintf("c%d", i%3), 1, int64(i))),
			putOp(active(pd(fmt.Sprintf("2001:db8:%x::/48", i%50)), fmt.Sprintf("c%d", i%3), 1, int64(i))),
		)})
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	checkIndexes(t, s.View())
}
