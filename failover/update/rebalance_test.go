package update

import (
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// TestRebalanceHysteresis walks a pool through POOLREQs: the initial
// allocation, drift within the threshold (nothing moves), drift beyond it
// (back to the target), and the primary running low (take back).
func TestRebalanceHysteresis(t *testing.T) {
	free, backup := uint64(100), uint64(0)
	const share, threshold = 0.3, 5
	move := func(step string, wantGive, wantTake uint64) {
		t.Helper()
		bal := Rebalance(free, backup, share, threshold)
		if bal.Give != wantGive || bal.Take != wantTake {
			t.Fatalf("%s: give %d take %d, want %d and %d (free %d, backup %d)", step, bal.Give, bal.Take,
				wantGive, wantTake, free, backup)
		}
		free, backup = free-bal.Give+bal.Take, backup+bal.Give-bal.Take
	}
	move("initial POOLREQ", 30, 0)
	move("balanced", 0, 0)
	backup = 26 // the secondary delegated 4: target round(0.3*96) = 29, 3 short
	move("3 short, within threshold", 0, 0)
	backup = 23 // 3 more: target round(0.3*93) = 28, 5 short
	move("5 short, at threshold", 0, 0)
	backup = 22 // target round(0.3*92) = 28, 6 short: top up to the target
	move("6 short", 6, 0)
	move("after top-up", 0, 0)
	free = 10 // the primary delegated most of its own: 10 + 28 = 38, target 11, 17 too many
	move("primary low", 0, 17)
	move("after take-back", 0, 0)

	// One side empty while it should hold some: moves whatever the threshold.
	if bal := Rebalance(10, 0, 0.3, 100); bal.Give != 3 {
		t.Fatalf("initial allocation with a large threshold: %+v", bal)
	}
	if bal := Rebalance(0, 10, 0.3, 100); bal.Take != 7 {
		t.Fatalf("primary with none left: %+v", bal)
	}
	if bal := Rebalance(10, 0, 0, 0); bal != (Balance{}) {
		t.Fatalf("share 0: %+v", bal)
	}
	if bal := Rebalance(0, 0, 0.5, 0); bal != (Balance{}) {
		t.Fatalf("empty pool: %+v", bal)
	}
	// A huge pool: the secondary's target is capped at MaxBackup.
	if bal := Rebalance(1<<32, 0, 0.5, 8); bal.Give != MaxBackup {
		t.Fatalf("2^32 prefixes: %+v, want Give = MaxBackup", bal)
	}
	if bal := Rebalance(1<<32, MaxBackup+100, 0.5, 8); bal.Take != 100 {
		t.Fatalf("above MaxBackup: %+v, want Take 100", bal)
	}
	if Target(7, 1.5) != 7 || Target(7, -1) != 0 || Target(10, 0.25) != 3 || Target(1<<40, 1) != MaxBackup {
		t.Fatal("Target clamping or rounding")
	}
}

// TestRebalanceMessages runs give and take-back through real messages
// between a primary and a secondary.
func TestRebalanceMessages(t *testing.T) {
	prim, sec := newStore(t), newStore(t)
	n := t0.Unix()
	p1, p2 := pd("2001:db8:1::/56"), pd("2001:db8:2::/56")

	// Give both (p2 has a FREE record with an old client hint).
	prim.put(fsm.Binding{Resource: p2, Status: fsm.StatusFree, DUID: duidA, StartTimeOfState: n - 100})
	for _, r := range []fsm.Resource{p1, p2} {
		var local *fsm.Binding
		if b, ok := prim.lookup(r); ok {
			local = &b
		}
		op, err := GiveOp(local, r, t0)
		if err != nil {
			t.Fatal(err)
		}
		prim.mustApply([]fsm.Op{op})
	}
	c := Conditions{Role: Primary}
	for _, r := range []fsm.Resource{p1, p2} {
		if b := prim.get(r); Available(c, &b, "", t0) || b.Status != fsm.StatusFreeBackup {
			t.Fatalf("primary may still allocate %v after giving it: %+v", r, b)
		}
	}
	exchange(t, prim, sec, Primary, t0)
	for _, r := range []fsm.Resource{p1, p2} {
		if b := prim.get(r); b.Owed() {
			t.Fatalf("give of %v not acknowledged: %+v", r, b)
		}
		if b := sec.get(r); b.Status != fsm.StatusFreeBackup || !Available(Conditions{Role: Secondary}, &b, duidB, t0) {
			t.Fatalf("secondary did not get %v: %+v", r, b)
		}
	}
	if _, err := GiveOp(ptr(prim.get(p1)), p1, t0); err == nil {
		t.Fatal("GiveOp of a FREE-BACKUP prefix")
	}
	p3 := pd("2001:db8:3::/56")
	rel := active(p3, duidA, 1, n-7200, 3600)
	Free(at(-60), &rel, true) // ours, not yet acknowledged: still bound
	if _, err := GiveOp(&rel, p3, t0); err == nil {
		t.Fatal("GiveOp of an unacknowledged RELEASED prefix")
	}
	rel.Flags = 0 // as received from the partner and acknowledged: free, the primary's
	if op, err := GiveOp(&rel, p3, t0); err != nil || op.Binding.Status != fsm.StatusFreeBackup || !op.Binding.Owed() {
		t.Fatalf("GiveOp of an acknowledged RELEASED prefix: %+v, %v", op, err)
	}
	if _, err := GiveOp(nil, na("2001:db8::1"), t0); err == nil {
		t.Fatal("GiveOp of an address")
	}

	// The secondary delegates p2; the primary takes both back.
	d := active(p2, duidB, 1, n+10, 3600)
	d.Rev = sec.get(p2).Rev
	Grant(at(10), &d, time.Hour, GrantParams{MCLT: time.Hour})
	sec.mustApply([]fsm.Op{{Resource: p2, IfRev: d.Rev, Binding: d}})
	now := at(20)
	for _, r := range []fsm.Resource{p1, p2} {
		u, err := TakeBack(prim.get(r), now)
		if err != nil {
			t.Fatal(err)
		}
		m := wireTrip(t, u.Message(1, 0))
		res := ApplyBndUpdPrefix(sec.lookup, m.LonePrefix(), Params{Role: Secondary}, now)
		sec.mustApply(res.Ops)
		rm := wireTrip(t, res.Message(1, 0))
		rr := ApplyBndReplyPrefix(prim.lookup, u.Bindings[0], rm.LonePrefix(), 0, now)
		prim.mustApply(rr.Ops)
	}
	if b := prim.get(p1); b.Status != fsm.StatusFree || b.StartTimeOfState != now.Unix() || !Available(c, &b, duidA, now) {
		t.Fatalf("taken-back p1 on the primary: %+v", b)
	}
	if b := sec.get(p1); b.Status != fsm.StatusFree || Available(Conditions{Role: Secondary}, &b, duidB, now) {
		t.Fatalf("taken-back p1 on the secondary: %+v", b)
	}
	if b := prim.get(p2); b.Status != fsm.StatusFreeBackup {
		t.Fatalf("p2 was delegated by the secondary, the take-back must fail: %+v", b)
	}
	if b := sec.get(p2); b.Status != fsm.StatusActive || b.DUID != duidB {
		t.Fatalf("secondary's delegated p2: %+v", b)
	}
	if _, err := TakeBack(prim.get(p1), now); err == nil {
		t.Fatal("TakeBack of a FREE prefix")
	}
}

// TestTakeBackOwedBySecondary: a take-back the secondary accepts leaves it
// owing the primary that FREE, so that a BNDREPLY lost with the connection
// (or with a primary that restarts) loses nothing: the secondary's own
// update moves the primary's FREE-BACKUP to FREE. When the BNDREPLY did
// arrive, the same update is accepted as the same free binding and nothing
// stays owed on either side.
func TestTakeBackOwedBySecondary(t *testing.T) {
	prim, sec := newStore(t), newStore(t)
	p1, p2, p3 := pd("2001:db8:1::/56"), pd("2001:db8:2::/56"), pd("2001:db8:3::/56")
	for _, r := range []fsm.Resource{p1, p2, p3} {
		op, err := GiveOp(nil, r, t0)
		if err != nil {
			t.Fatal(err)
		}
		prim.mustApply([]fsm.Op{op})
	}
	exchange(t, prim, sec, Primary, t0)
	// take sends the take-back and returns the secondary's BNDREPLY.
	take := func(r fsm.Resource, now time.Time) (Update, *wire.LonePrefix) {
		t.Helper()
		u, err := TakeBack(prim.get(r), now)
		if err != nil {
			t.Fatal(err)
		}
		m := wireTrip(t, u.Message(1, 0))
		res := ApplyBndUpdPrefix(sec.lookup, m.LonePrefix(), Params{Role: Secondary}, now)
		if res.Accepted() != 1 {
			t.Fatalf("take-back of %v rejected: %+v", r, res.Outcomes)
		}
		sec.mustApply(res.Ops)
		return u, wireTrip(t, res.Message(1, 0)).LonePrefix()
	}
	owed := func(s *store) (out []fsm.Resource) {
		for _, b := range s.all() {
			if b.Owed() {
				out = append(out, b.Resource)
			}
		}
		return out
	}

	// p1: the BNDREPLY is lost. p2: it arrives.
	now := at(600)
	take(p1, now)
	u2, reply2 := take(p2, now)
	prim.mustApply(ApplyBndReplyPrefix(prim.lookup, u2.Bindings[0], reply2, 0, now).Ops)
	if b := prim.get(p1); b.Status != fsm.StatusFreeBackup {
		t.Fatalf("primary's p1 with the answer lost: %+v, want still FREE-BACKUP", b)
	}
	if got := owed(sec); len(got) != 2 {
		t.Fatalf("secondary owes %v after accepting two take-backs, want both", got)
	}
	// p3: taken back twice, both answers lost (the primary asked again on a
	// stale count): the FREE stays owed.
	take(p3, now)
	take(p3, at(660))
	if b := sec.get(p3); b.Status != fsm.StatusFree || !b.Owed() {
		t.Fatalf("secondary's p3 after a second take-back: %+v, want FREE and still owed", b)
	}

	// The next connection: the secondary's owed updates.
	exchange(t, sec, prim, Secondary, at(700))
	c := Conditions{Role: Primary}
	for _, r := range []fsm.Resource{p1, p2, p3} {
		if b := prim.get(r); b.Status != fsm.StatusFree || !Available(c, &b, duidA, at(700)) {
			t.Errorf("primary's %v after the secondary's update: %+v, want FREE, its own", r, b)
		}
		if b := sec.get(r); b.Status != fsm.StatusFree || Available(Conditions{Role: Secondary}, &b, duidB, at(700)) {
			t.Errorf("secondary's %v: %+v, want FREE, not its own", r, b)
		}
	}
	if a, b := owed(prim), owed(sec); len(a)+len(b) != 0 {
		t.Fatalf("still owed: primary %v, secondary %v (an echo rejected, or accepted and echoed back)", a, b)
	}
	// A primary accepting a lone FREE owes nothing back; neither does a
	// secondary accepting a FREE over a FREE it does not owe.
	if TakenBack(Primary, ptr(prim.get(p1)), &Record{Binding: sec.get(p1), Lone: true}) {
		t.Error("TakenBack on the primary")
	}
	if TakenBack(Secondary, ptr(sec.get(p1)), &Record{Binding: prim.get(p1), Lone: true}) {
		t.Error("TakenBack over a FREE already acknowledged")
	}
}
