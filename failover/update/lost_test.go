package update

import (
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// TestHoldForLostPartner: which bindings are held when the partner asks for
// everything after losing its database, and until when.
func TestHoldForLostPartner(t *testing.T) {
	const mclt = 60 * time.Second
	u := func(s int64) int64 { return at(s).Unix() }
	now := at(1000)
	r := na("2001:db8::10")
	with := func(s fsm.Status, f func(*fsm.Binding)) fsm.Binding {
		b := fsm.Binding{Resource: r, Status: s, DUID: duidA, IAID: 1, StartTimeOfState: u(400), CLTT: u(400),
			StateExpirationTime: u(1100), ExpirationTime: u(1500), Rev: 7}
		if s != fsm.StatusActive {
			b.StateExpirationTime, b.StartTimeOfState = 0, u(950)
			b.Flags = fsm.FlagUpdateOwed // our news: the partner may never have had it
		}
		if f != nil {
			f(&b)
		}
		return b
	}
	for _, c := range []struct {
		name  string
		b     fsm.Binding
		held  bool
		until int64
	}{
		{"ACTIVE ending before expiration-time + MCLT", with(fsm.StatusActive, nil), true, u(1560)},
		{"ACTIVE ending at the horizon", with(fsm.StatusActive, func(b *fsm.Binding) { b.StateExpirationTime = u(1560) }), false, 0},
		{"ACTIVE, expiration-time passed: now + MCLT", with(fsm.StatusActive, func(b *fsm.Binding) {
			b.StateExpirationTime, b.ExpirationTime = u(1010), u(900)
		}), true, u(1060)},
		{"ACTIVE never acknowledged to the partner, ending within the MCLT", with(fsm.StatusActive, func(b *fsm.Binding) {
			b.StateExpirationTime, b.ExpirationTime = u(1010), 0
		}), true, u(1060)},
		{"ACTIVE never acknowledged, ending after the MCLT", with(fsm.StatusActive, func(b *fsm.Binding) { b.ExpirationTime = 0 }), false, 0},
		{"EXPIRED", with(fsm.StatusExpired, nil), true, u(1560)},
		{"EXPIRED, expiration-time long past", with(fsm.StatusExpired, func(b *fsm.Binding) { b.ExpirationTime = u(100) }), true, u(1060)},
		{"RELEASED", with(fsm.StatusReleased, nil), true, u(1560)},
		{"EXPIRED received from the partner (not owed)", with(fsm.StatusExpired, func(b *fsm.Binding) { b.Flags = 0 }), false, 0},
		{"RELEASED received from the partner (not owed)", with(fsm.StatusReleased, func(b *fsm.Binding) { b.Flags = 0 }), false, 0},
		{"ABANDONED", with(fsm.StatusAbandoned, nil), false, 0},
		{"RESET", with(fsm.StatusReset, nil), false, 0},
		{"FREE with a client hint", with(fsm.StatusFree, nil), false, 0},
		{"lone prefix (no client)", fsm.Binding{Resource: pd("2001:db8:80::/60"), Status: fsm.StatusFreeBackup, ExpirationTime: u(1500)}, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			nb, held := HoldForLostPartner(&c.b, mclt, now)
			if held != c.held {
				t.Fatalf("held = %v, want %v", held, c.held)
			}
			if !held {
				if nb != c.b {
					t.Fatalf("binding changed without a hold: %+v", nb)
				}
				return
			}
			if nb.Status != c.b.Status || nb.StateExpirationTime != c.until {
				t.Fatalf("got %v until %d, want %v until %d", nb.Status, nb.StateExpirationTime, c.b.Status, c.until)
			}
			if nb.DUID != c.b.DUID || nb.IAID != c.b.IAID || nb.CLTT != c.b.CLTT || nb.ExpirationTime != c.b.ExpirationTime ||
				nb.StartTimeOfState != c.b.StartTimeOfState || nb.Flags != c.b.Flags {
				t.Fatalf("more than the state expiration time changed: %+v", nb)
			}
			if nb.Rev != 0 {
				t.Fatalf("Rev %d: an op's binding carries none", nb.Rev)
			}
		})
	}
}

// TestHoldCoversEveryRenewal: whatever the partner renewed before losing
// its database, within the MCLT invariant, ends no later than the hold,
// whenever the UPDREQALL comes: the partner's renewal at s is capped by
// max(our acknowledgement (its acked-partner-lifetime, our expiration-
// time), s) + MCLT, and s is before the UPDREQALL.
func TestHoldCoversEveryRenewal(t *testing.T) {
	const mclt = 60 * time.Second
	m := int64(mclt / time.Second)
	desired := 10 * time.Minute
	// The partner granted at 0 with nothing acknowledged, and we
	// acknowledged its partner lifetime.
	grantEnd := ActualValid(at(0), 0, desired, mclt)
	acked := PartnerLifetime(at(0), grantEnd, desired, 0.5)
	ours := fsm.Binding{Resource: na("2001:db8::10"), Status: fsm.StatusActive, DUID: duidA, IAID: 1,
		StartTimeOfState: at(0).Unix(), StateExpirationTime: at(0).Add(grantEnd).Unix(), ExpirationTime: acked}
	worst := int64(0) // of the renewals before the acknowledged lifetime
	for s := int64(0); at(s).Unix() < acked+2*m; s += 7 {
		end := at(s).Add(ActualValid(at(s), acked, desired, mclt)).Unix()
		if at(s).Unix() <= acked {
			worst = max(worst, end)
		}
		for _, later := range []int64{1, m / 2, m - 1, 2 * m} {
			now := at(s + later)
			b := ours
			if now.Unix() > b.StateExpirationTime { // we expired it at the end we knew
				Free(now, &b, false)
			}
			nb, held := HoldForLostPartner(&b, mclt, now)
			if end > now.Unix() && (!held || nb.StateExpirationTime < end) {
				t.Fatalf("renewal at %d ends at %d, client still holds it at the UPDREQALL (%d); hold: %v until %d",
					s, end, now.Unix(), held, nb.StateExpirationTime)
			}
		}
	}
	if worst != acked+m {
		t.Fatalf("the worst renewal ends at %d, want acked + MCLT = %d (the bound is tight)", worst, acked+m)
	}
}

// TestHeldExpiredLease: an EXPIRED lease held for a lost partner goes to
// nobody until the hold ends, not even its last client before any update
// was sent; the partner's acknowledgement does not free it early; once the
// hold is over and the timer cleared it is free as usual.
func TestHeldExpiredLease(t *testing.T) {
	const mclt = 60 * time.Second
	st := newStore(t)
	r := na("2001:db8::11") // odd: the primary's
	b := active(r, duidA, 1, at(0).Unix(), 60)
	b.ExpirationTime = at(630).Unix()
	Free(at(61), &b, false)
	b = st.put(b)
	now := at(100)
	c := Conditions{Role: Primary, MCLT: mclt, Sent: func(*fsm.Binding) bool { return false }}
	if !Available(c, &b, duidA, now) {
		t.Fatalf("before the hold: the unsent EXPIRED lease should be its last client's again")
	}
	nb, held := HoldForLostPartner(&b, mclt, now)
	if !held || nb.StateExpirationTime != at(690).Unix() {
		t.Fatalf("hold: %v until %d, want until %d", held, nb.StateExpirationTime, at(690).Unix())
	}
	st.mustApply([]fsm.Op{{Resource: r, IfRev: b.Rev, Binding: nb}})
	b = st.get(r)
	for _, duid := range []string{duidA, duidB, ""} {
		if Available(c, &b, duid, now) {
			t.Fatalf("held lease available to %q", duid)
		}
	}
	// The partner acknowledges the EXPIRED (the UPDREQALL answer).
	cd, err := ClientDataFor(duidA, []fsm.Binding{b}, now)
	if err != nil {
		t.Fatal(err)
	}
	if cd.IAs[0].Leases[0].StateExpirationTime == nil {
		t.Fatalf("the held EXPIRED lease is sent without its state expiration time: the partner would not hold it")
	}
	res := ApplyBndReply(st.lookup, []fsm.Binding{b}, cd.ReplyEcho(), time.Hour, now)
	st.mustApply(res.Ops)
	b = st.get(r)
	if b.Status != fsm.StatusExpired || b.Owed() || b.StateExpirationTime != at(690).Unix() || len(res.Freed) != 0 {
		t.Fatalf("after the acknowledgement: %+v (freed %v), want EXPIRED, nothing owed, held until %d", b, res.Freed, at(690).Unix())
	}
	if b.AckedPartnerLifetime != 0 || b.ExpirationTime != 0 || b.PartnerLifetime != 0 {
		t.Fatalf("after the acknowledgement the old client's partner times remain: %+v (the next client's MCLT cap)", b)
	}
	if Available(c, &b, "", at(689)) {
		t.Fatalf("acknowledged held lease available before the hold ends")
	}
	if !Available(c, &b, "", at(691)) {
		t.Fatalf("held lease not available once the hold is over")
	}
}
