package update

import (
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// sendAll builds the updates for every owed binding of st and returns them
// with the partner's (decoded) replies, processed by a partner with no
// bindings (which accepts everything).
func sendAll(t *testing.T, st *store, now time.Time) ([]Update, []*wire.Message) {
	t.Helper()
	ups, skipped := Updates(SelectOwed(st.all()), now)
	if len(skipped) != 0 {
		t.Fatalf("skipped %v", skipped)
	}
	partner := newStore(t)
	var replies []*wire.Message
	for i, u := range ups {
		m := wireTrip(t, u.Message(uint32(i+1), 0))
		var res Result
		if m.ClientData() != nil {
			res = ApplyBndUpd(partner.lookup, m.ClientData(), Params{Role: Secondary}, now)
		} else {
			res = ApplyBndUpdPrefix(partner.lookup, m.LonePrefix(), Params{Role: Secondary}, now)
		}
		partner.mustApply(res.Ops)
		replies = append(replies, wireTrip(t, res.Message(m.XID, 0)))
	}
	return ups, replies
}

func TestApplyBndReplyResolvesPendingFree(t *testing.T) {
	st := newStore(t)
	n := t0.Unix()
	odd, even, pfx, reset := na("2001:db8::21"), na("2001:db8::22"), pd("2001:db8:5::/56"), ta("2001:db8::23")
	act := na("2001:db8::25")
	for _, c := range []struct {
		r        fsm.Resource
		released bool
	}{{odd, false}, {even, true}, {pfx, true}} {
		b := active(c.r, duidA, 1, n-7200, 3600)
		b.AckedPartnerLifetime, b.ExpirationTime, b.PartnerLifetime = n+100, n+200, n+300
		Free(at(-3600), &b, c.released)
		st.put(b)
	}
	rb := fsm.Binding{Resource: reset, Status: fsm.StatusReset, DUID: duidA, IAID: 2, StartTimeOfState: n - 50}
	Changed(t0, &rb)
	st.put(rb)
	ab := active(act, duidA, 1, n, 3600)
	Grant(t0, &ab, time.Hour, GrantParams{MCLT: time.Hour})
	st.put(ab)
	sentPL := ab.PartnerLifetime

	ups, replies := sendAll(t, st, t0)
	if len(ups) != 1 { // all five leases have client A: one CLIENT_DATA
		t.Fatalf("%d updates, want 1", len(ups))
	}
	now := at(10)
	hold := time.Hour
	var freed []fsm.Resource
	for i, u := range ups {
		var rr ReplyResult
		if cd := replies[i].ClientData(); cd != nil {
			rr = ApplyBndReply(st.lookup, u.Bindings, cd, hold, now)
		} else {
			rr = ApplyBndReplyPrefix(st.lookup, u.Bindings[0], replies[i].LonePrefix(), hold, now)
		}
		st.mustApply(rr.Ops)
		freed = append(freed, rr.Freed...)
		if len(rr.Rejected)+len(rr.Missing)+len(rr.Stale) != 0 {
			t.Fatalf("unexpected: %+v", rr)
		}
	}
	if len(freed) != 4 {
		t.Fatalf("freed %v, want 4 leases", freed)
	}
	for _, c := range []struct {
		r    fsm.Resource
		want fsm.Status
	}{{odd, fsm.StatusFree}, {even, fsm.StatusFreeBackup}, {pfx, fsm.StatusFree}, {reset, fsm.StatusFree}} {
		b := st.get(c.r)
		if b.Status != c.want {
			t.Errorf("%v acknowledged: %v, want %v", c.r, b.Status, c.want)
		}
		if b.Owed() || b.AckedPartnerLifetime != 0 || b.ExpirationTime != 0 || b.StartTimeOfState != now.Unix() || b.DUID != duidA {
			t.Errorf("%v: %+v", c.r, b)
		}
		if wantExp := map[bool]int64{true: now.Add(hold).Unix(), false: 0}[c.want == fsm.StatusFree]; b.StateExpirationTime != wantExp {
			t.Errorf("%v: state expiration %d, want %d", c.r, b.StateExpirationTime, wantExp)
		}
	}
	b := st.get(act)
	if b.Status != fsm.StatusActive || b.AckedPartnerLifetime != sentPL || b.PartnerLifetime != 0 || b.Owed() {
		t.Fatalf("acknowledged ACTIVE: %+v (sent partner lifetime %d)", b, sentPL)
	}
}

func TestApplyBndReplyRejections(t *testing.T) {
	n := t0.Unix()
	mk := func() (*store, []Update, *wire.ClientData) {
		st := newStore(t)
		for i, r := range []fsm.Resource{na("2001:db8::31"), na("2001:db8::33"), pd("2001:db8:7::/56")} {
			b := active(r, duidA, uint32(1+i/2), n-7200, 3600)
			Free(at(-3600), &b, false)
			st.put(b)
		}
		ups, replies := sendAll(t, st, t0)
		if len(ups) != 1 {
			t.Fatalf("%d updates", len(ups))
		}
		return st, ups, replies[0].ClientData()
	}
	bad := &wire.Status{Code: wire.StatusOutdatedBindingInformation, Message: "no"}
	for _, c := range []struct {
		name     string
		edit     func(cd *wire.ClientData)
		rejected int
	}{
		{"top level", func(cd *wire.ClientData) { cd.Status = bad }, 3},
		{"IA level", func(cd *wire.ClientData) { cd.IAs[0].Status = bad }, 2},
		{"lease level", func(cd *wire.ClientData) { cd.IAs[1].Leases[0].Status = bad }, 1},
		{"success with a message", func(cd *wire.ClientData) {
			cd.Status = &wire.Status{Code: wire.StatusSuccess, Message: "fine"}
			cd.IAs[0].Status = &wire.Status{Code: wire.StatusSuccess}
		}, 0},
	} {
		st, ups, cd := mk()
		c.edit(cd)
		cd = wireTrip(t, wire.NewBndReply(1, 0, cd)).ClientData()
		rr := ApplyBndReply(st.lookup, ups[0].Bindings, cd, 0, t0)
		st.mustApply(rr.Ops)
		if len(rr.Rejected) != c.rejected || len(rr.Acked) != 3-c.rejected {
			t.Errorf("%s: rejected %v acked %v", c.name, rr.Rejected, rr.Acked)
		}
		for _, rj := range rr.Rejected {
			if b := st.get(rj.Resource); b.Status != fsm.StatusExpired || !b.Owed() {
				t.Errorf("%s: rejected %v changed: %+v", c.name, rj.Resource, b)
			}
		}
		for _, r := range rr.Acked {
			if b := st.get(r); b.Status == fsm.StatusExpired || b.Owed() {
				t.Errorf("%s: acknowledged %v still %v owed=%v", c.name, r, b.Status, b.Owed())
			}
		}
	}
	// A lease missing from the reply stays owed.
	st, ups, cd := mk()
	cd.IAs = cd.IAs[:1]
	rr := ApplyBndReply(st.lookup, ups[0].Bindings, cd, 0, t0)
	if len(rr.Missing) != 1 || rr.Missing[0] != pd("2001:db8:7::/56") {
		t.Fatalf("missing %v", rr.Missing)
	}
}

func TestApplyBndReplyStale(t *testing.T) {
	n := t0.Unix()
	st := newStore(t)
	r, e := na("2001:db8::41"), na("2001:db8::43")
	ab := active(r, duidA, 1, n-100, 3600)
	Grant(at(-100), &ab, time.Hour, GrantParams{MCLT: time.Hour})
	st.put(ab)
	eb := active(e, duidA, 1, n-7200, 3600)
	Free(at(-3600), &eb, false)
	st.put(eb)
	ups, replies := sendAll(t, st, t0)
	firstPL := ab.PartnerLifetime

	// Meanwhile: the client renews r (a new partner lifetime is owed), and a
	// rejected partner update sets FlagResent on e (a flag-only change).
	nb := st.get(r)
	Grant(t0, &nb, 3*time.Hour, GrantParams{MCLT: time.Hour})
	nb.CLTT = n
	st.put(nb)
	eb2 := st.get(e)
	eb2, _, _ = AfterOutdated(eb2)
	st.put(eb2)

	rr := ApplyBndReply(st.lookup, ups[0].Bindings, replies[0].ClientData(), 0, t0)
	st.mustApply(rr.Ops)
	b := st.get(r)
	if b.AckedPartnerLifetime != firstPL || b.PartnerLifetime != nb.PartnerLifetime || !b.Owed() {
		t.Fatalf("renewed lease: acked %d (want %d), partner lifetime %d (want %d), owed %v",
			b.AckedPartnerLifetime, firstPL, b.PartnerLifetime, nb.PartnerLifetime, b.Owed())
	}
	if len(rr.Stale) != 1 || rr.Stale[0] != r {
		t.Fatalf("stale %v", rr.Stale)
	}
	if b := st.get(e); b.Status != fsm.StatusFree || b.Owed() {
		t.Fatalf("flag-only change must not block the acknowledgement: %+v", b)
	}

	// A lease re-granted to its client after EXPIRED was sent is not freed
	// by the late acknowledgement of EXPIRED.
	st2 := newStore(t)
	x := na("2001:db8::45")
	xb := active(x, duidA, 1, n-7200, 3600)
	Free(at(-3600), &xb, false)
	st2.put(xb)
	ups, replies = sendAll(t, st2, t0)
	back := st2.get(x)
	back.Status, back.StartTimeOfState = fsm.StatusActive, n
	Grant(t0, &back, time.Hour, GrantParams{MCLT: time.Hour})
	st2.put(back)
	rr = ApplyBndReply(st2.lookup, ups[0].Bindings, replies[0].ClientData(), 0, t0)
	st2.mustApply(rr.Ops)
	if b := st2.get(x); b.Status != fsm.StatusActive || !b.Owed() || len(rr.Freed) != 0 {
		t.Fatalf("re-granted lease after a late acknowledgement: %+v freed %v", b, rr.Freed)
	}
}

// TestApplyBndReplyAcknowledgedUnchanged: the BNDREPLY to an update of a
// lease whose acknowledgement is already stored (what UPDREQALL resends)
// stores nothing: a million-binding UPDREQALL must not cost the sender a
// million commits. The first acknowledgement of an owed lease does store.
func TestApplyBndReplyAcknowledgedUnchanged(t *testing.T) {
	st := newStore(t)
	n := t0.Unix()
	r := na("2001:db8::31")
	b := active(r, duidA, 1, n, 3600)
	Grant(t0, &b, time.Hour, GrantParams{MCLT: time.Hour})
	st.put(b)

	ups, replies := sendAll(t, st, t0)
	res := ApplyBndReply(st.lookup, ups[0].Bindings, replies[0].ClientData(), time.Hour, t0)
	if len(res.Ops) != 1 || len(res.Acked) != 1 {
		t.Fatalf("first acknowledgement: %d ops, acked %v; want 1 op and the lease acked", len(res.Ops), res.Acked)
	}
	st.mustApply(res.Ops)
	if acked := st.get(r); acked.Owed() {
		t.Fatalf("still owed after the acknowledgement: %+v", acked)
	}

	// UPDREQALL: the acknowledged lease again.
	ups, _ = Updates(SelectAll(st.all()), t0)
	partner := newStore(t)
	m := wireTrip(t, ups[0].Message(9, 0))
	pres := ApplyBndUpd(partner.lookup, m.ClientData(), Params{Role: Secondary}, t0)
	partner.mustApply(pres.Ops)
	reply := wireTrip(t, pres.Message(9, 0))
	res = ApplyBndReply(st.lookup, ups[0].Bindings, reply.ClientData(), time.Hour, t0)
	if len(res.Acked) != 1 || len(res.Ops) != 0 {
		t.Fatalf("resent acknowledged lease: %d ops (%+v), acked %v; want no op and the lease acked", len(res.Ops), res.Ops, res.Acked)
	}
}

// TestApplyBndReplyFreeNoAckedLifetime: acknowledging a FREE lease (one the
// PARTNER-DOWN sweep or a release freed while the partner was away, sent
// with its state expiration time as partner lifetime) leaves no
// acknowledged partner lifetime behind: Grant would give the next client
// that lifetime + MCLT instead of now + MCLT (found by the failover
// simulation, seed 20).
func TestApplyBndReplyFreeNoAckedLifetime(t *testing.T) {
	st := newStore(t)
	n := t0.Unix()
	r := na("2001:db8::41")
	b := active(r, duidA, 1, n-7200, 3600)
	Free(at(-3600), &b, false)
	b = freed(b, at(-60), 10*time.Minute) // FREE until now+9m, its hold
	b.Flags |= fsm.FlagUpdateOwed         // as DuePendingFree leaves it
	st.put(b)
	ups, replies := sendAll(t, st, t0)
	if pl := PartnerLifetimeToSend(&ups[0].Bindings[0]); pl == 0 {
		t.Fatalf("the FREE lease went with no partner lifetime: the test no longer covers the case")
	}
	rr := ApplyBndReply(st.lookup, ups[0].Bindings, replies[0].ClientData(), time.Hour, t0)
	st.mustApply(rr.Ops)
	got := st.get(r)
	if got.Status != fsm.StatusFree || got.Owed() || got.AckedPartnerLifetime != 0 {
		t.Fatalf("acknowledged FREE: %+v, want FREE, nothing owed, no acknowledged partner lifetime", got)
	}
	nb := got
	nb.Status, nb.DUID = fsm.StatusActive, duidA
	if lt := Grant(t0, &nb, time.Hour, GrantParams{MCLT: time.Minute}); lt > time.Minute {
		t.Fatalf("next grant of the acknowledged FREE lease: %v, beyond the MCLT (1m)", lt)
	}
}
