package update

import (
	"errors"
	"testing"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// TestAcceptedFieldMapping checks RFC 8156 §7.5.5 / Figure 5 field by field.
func TestAcceptedFieldMapping(t *testing.T) {
	n := t0.Unix()
	r := na("2001:db8::3")
	local := fsm.Binding{Resource: r, Status: fsm.StatusActive, DUID: duidA, IAID: 1, Rev: 9,
		CLTT: n - 1000, StartTimeOfState: n - 5000, StateExpirationTime: n + 100,
		PartnerLifetime: 0, AckedPartnerLifetime: n + 4000, ExpirationTime: n + 2000, PartnerRawCLTT: n - 4000,
		PreferredLifetime: 1, ValidLifetime: 2}
	rec := Record{Binding: fsm.Binding{Resource: r, Status: fsm.StatusActive, DUID: duidA, IAID: 1,
		PreferredLifetime: 1800, ValidLifetime: 3600,
		StartTimeOfState: n - 5000, StateExpirationTime: n + 3000, CLTT: n - 10,
		PartnerLifetime: n + 9000, PartnerRawCLTT: n - 500, ExpirationTime: n + 7000}}

	got := Accepted(&local, &rec)
	want := fsm.Binding{Resource: r, Status: fsm.StatusActive, DUID: duidA, IAID: 1,
		PreferredLifetime: 1800, ValidLifetime: 3600,
		StartTimeOfState:     n - 5000, // START_TIME_OF_STATE
		StateExpirationTime:  n + 3000, // STATE_EXPIRATION_TIME
		ExpirationTime:       n + 9000, // PARTNER_LIFETIME -> expiration-time
		PartnerRawCLTT:       n - 10,   // CLT_TIME -> partner-raw-clt-time
		CLTT:                 n - 500,  // PARTNER_RAW_CLT_TIME -> CLTT, later than n-1000
		PartnerLifetime:      n + 7000, // EXPIRATION_TIME -> partner-lifetime, later than acked n+4000
		AckedPartnerLifetime: n + 4000, // kept: same client, still ACTIVE
	}
	if got != want {
		t.Fatalf("Accepted:\n got %+v\nwant %+v", got, want)
	}

	// "Only if later": an earlier PARTNER_RAW_CLT_TIME and an EXPIRATION_TIME
	// not later than the acknowledged partner lifetime change nothing; a
	// smaller PARTNER_LIFETIME does not lower expiration-time (greatest).
	rec2 := rec
	rec2.PartnerRawCLTT, rec2.ExpirationTime, rec2.PartnerLifetime = n-2000, n+4000, n+1000
	got = Accepted(&local, &rec2)
	if got.CLTT != n-1000 || got.PartnerLifetime != 0 || got.ExpirationTime != n+2000 {
		t.Fatalf("only-if-later: CLTT %+d partner-lifetime %d expiration %+d", got.CLTT-n, got.PartnerLifetime, got.ExpirationTime-n)
	}
	// Absent options leave the fields alone (CLT_TIME, PARTNER_RAW_CLT_TIME,
	// EXPIRATION_TIME) or clear them (STATE_EXPIRATION_TIME of a status
	// without timeout).
	rec3 := Record{Binding: fsm.Binding{Resource: r, Status: fsm.StatusReleased, DUID: duidA, IAID: 1, StartTimeOfState: n - 5}}
	got = Accepted(&local, &rec3)
	if got.Status != fsm.StatusReleased || got.StateExpirationTime != 0 || got.PartnerRawCLTT != n-4000 || got.CLTT != n-1000 ||
		got.StartTimeOfState != n-5 {
		t.Fatalf("released: %+v", got)
	}
	// Leaving the client (not ACTIVE any more): its partner times go.
	if got.AckedPartnerLifetime != 0 || got.ExpirationTime != 0 {
		t.Fatalf("released keeps acked %d / expiration %d of the old client", got.AckedPartnerLifetime, got.ExpirationTime)
	}

	// Another client: client fields and per-client times start afresh.
	rec4 := rec
	rec4.DUID, rec4.IAID, rec4.PartnerRawCLTT, rec4.ExpirationTime = duidB, 4, 0, 0
	got = Accepted(&local, &rec4)
	if got.DUID != duidB || got.IAID != 4 || got.AckedPartnerLifetime != 0 || got.ExpirationTime != n+9000 ||
		got.CLTT != 0 || got.PartnerRawCLTT != n-10 || got.StateExpirationTime != n+3000 {
		t.Fatalf("other client: %+v", got)
	}

	// A stale update from the same client (received time not later) does not
	// shorten the lease, and our pending update stays owed.
	mine := local
	mine.CLTT, mine.StateExpirationTime, mine.PartnerLifetime, mine.Flags = n-10, n+250000, n+400000, fsm.FlagUpdateOwed|fsm.FlagResent
	stale := rec
	stale.CLTT, stale.StateExpirationTime, stale.ExpirationTime = n-3000, n+600, 0
	got = Accepted(&mine, &stale)
	if got.StateExpirationTime != n+250000 || got.PartnerLifetime != n+400000 || got.Flags != mine.Flags {
		t.Fatalf("stale same-client update: %+v", got)
	}
	// A later one replaces our pending update.
	fresh := rec
	fresh.CLTT, fresh.ExpirationTime = n, 0
	got = Accepted(&mine, &fresh)
	if got.PartnerLifetime != 0 || got.Owed() {
		t.Fatalf("newer update kept our pending one: %+v", got)
	}

	// PENDING-FREE is stored as its destination.
	for _, c := range []struct {
		r    fsm.Resource
		want fsm.Status
	}{{na("2001:db8::3"), fsm.StatusFree}, {na("2001:db8::4"), fsm.StatusFreeBackup}, {pd("2001:db8:1::/56"), fsm.StatusFree}} {
		pf := Record{Binding: fsm.Binding{Resource: c.r, Status: fsm.StatusPendingFree, DUID: duidA, StartTimeOfState: n}}
		if got := Accepted(nil, &pf); got.Status != c.want {
			t.Errorf("PENDING-FREE %v stored as %v, want %v", c.r, got.Status, c.want)
		}
	}

	// A lone prefix keeps the local client as a hint and stores its start time.
	lp := pd("2001:db8:2::/56")
	lb := fsm.Binding{Resource: lp, Status: fsm.StatusExpired, DUID: duidA, IAID: 3, StartTimeOfState: n - 100,
		PreferredLifetime: 5, ValidLifetime: 6, AckedPartnerLifetime: n + 10}
	lrec := Record{Binding: fsm.Binding{Resource: lp, Status: fsm.StatusFreeBackup, StartTimeOfState: n}, Lone: true}
	got = Accepted(&lb, &lrec)
	if got.DUID != duidA || got.IAID != 3 || got.Status != fsm.StatusFreeBackup || got.StartTimeOfState != n ||
		got.ValidLifetime != 6 || got.AckedPartnerLifetime != 0 {
		t.Fatalf("lone prefix: %+v", got)
	}
}

func TestAfterOutdated(t *testing.T) {
	b := fsm.Binding{Status: fsm.StatusActive}
	nb, changed, now := AfterOutdated(b)
	if !changed || !now || nb.Flags != fsm.FlagUpdateOwed {
		t.Fatalf("flag clear: %v %v %v", nb.Flags.Names(), changed, now)
	}
	nb, changed, now = AfterOutdated(nb)
	if !changed || now || nb.Flags != fsm.FlagUpdateOwed|fsm.FlagResent {
		t.Fatalf("flag set: %v %v %v", nb.Flags.Names(), changed, now)
	}
	nb2, changed, now := AfterOutdated(nb)
	if changed || now || nb2 != nb {
		t.Fatalf("flag and resent set: %v %v %v", nb2.Flags.Names(), changed, now)
	}
	// A pending partner lifetime counts as the flag (RFC "partner needs update").
	b = fsm.Binding{Status: fsm.StatusActive, PartnerLifetime: 5}
	if nb, _, now := AfterOutdated(b); now || nb.Flags != fsm.FlagResent {
		t.Fatalf("pending partner lifetime: %v %v", nb.Flags.Names(), now)
	}
}

// bndupd builds a decoded BNDUPD CLIENT_DATA for bindings of one client.
func bndupd(t *testing.T, duid string, bs ...fsm.Binding) *wire.ClientData {
	t.Helper()
	cd, err := ClientDataFor(duid, bs, t0)
	if err != nil {
		t.Fatal(err)
	}
	return wireTrip(t, wire.NewBndUpd(1, wire.ToFOTime(t0), cd)).ClientData()
}

func TestApplyBndUpd(t *testing.T) {
	n := t0.Unix()
	st := newStore(t)
	a1, a2, a3 := na("2001:db8::11"), na("2001:db8::13"), na("2001:db8::15")
	// a1: ours, released recently (update already acknowledged, so no flag);
	// a2: ours for another client; a3: unknown here.
	rel := active(a1, duidA, 1, n-600, 3600)
	Free(at(-60), &rel, true)
	rel.CLTT, rel.Flags = n-60, 0
	st.put(rel)
	st.put(active(a2, duidB, 1, n-60, 3600))
	p := Params{Role: Primary, Covered: func(r fsm.Resource) bool { return r != na("2001:db8::99") }}

	partner := []fsm.Binding{
		active(a1, duidA, 1, n-3600, 3600), // older than ours: outdated
		active(a2, duidA, 1, n-3600, 3600), // other client, we are primary: AddressInUse
		active(a3, duidA, 1, n-10, 3600),   // new: accepted
		active(na("2001:db8::99"), duidA, 1, n-10, 3600),
	}
	partner[0].CLTT = n - 3600
	cd := bndupd(t, duidA, partner...)
	res := ApplyBndUpd(st.lookup, cd, p, t0)
	st.mustApply(res.Ops)
	rm := wireTrip(t, res.Message(1, wire.ToFOTime(t0)))
	want := map[fsm.Resource]wire.StatusCode{a1: wire.StatusOutdatedBindingInformation, a2: wire.StatusAddressInUse,
		a3: wire.StatusSuccess, na("2001:db8::99"): wire.StatusConfigurationConflict}
	for _, ia := range rm.ClientData().IAs {
		for _, l := range ia.Leases {
			r := fsm.AddrResource(fsm.IANA, l.Addr())
			code := wire.StatusSuccess
			if l.Status != nil {
				code = l.Status.Code
			}
			if code != want[r] {
				t.Errorf("%v: reply status %v, want %v", r, code, want[r])
			}
			if l.BindingStatus != wire.BindingActive || l.PartnerLifetimeSent == nil || l.StateExpirationTime == nil {
				t.Errorf("%v: reply lacks the echoes: %+v", r, l)
			}
		}
	}
	if res.Accepted() != 1 || len(res.SendNow) != 1 || res.SendNow[0] != a1 {
		t.Fatalf("accepted %d, send now %v", res.Accepted(), res.SendNow)
	}
	if b := st.get(a1); b.Flags != fsm.FlagUpdateOwed || b.Status != fsm.StatusReleased || b.StartTimeOfState != n-60 {
		t.Fatalf("outdated a1: %+v", b)
	}
	if b := st.get(a2); b.Flags != 0 || b.DUID != duidB {
		t.Fatalf("AddressInUse must not touch a2: %+v", b)
	}
	if b := st.get(a3); b.DUID != duidA || b.Status != fsm.StatusActive || b.Owed() {
		t.Fatalf("accepted a3: %+v", b)
	}

	// The same update again: a1 now has the flag: FlagResent, nothing to send.
	res = ApplyBndUpd(st.lookup, cd, p, t0)
	st.mustApply(res.Ops)
	if len(res.SendNow) != 0 || st.get(a1).Flags != fsm.FlagUpdateOwed|fsm.FlagResent {
		t.Fatalf("second rejection: send now %v, flags %v", res.SendNow, st.get(a1).Flags.Names())
	}
	// Third time: no change at all for a1.
	res = ApplyBndUpd(st.lookup, cd, p, t0)
	for _, op := range res.Ops {
		if op.Resource == a1 {
			t.Fatalf("third rejection changed a1: %+v", op)
		}
	}

	// A binding changed behind the processing: the txn fails on IfRev.
	res = ApplyBndUpd(st.lookup, bndupd(t, duidA, active(a3, duidA, 1, n, 3600)), p, t0)
	st.put(active(a3, duidA, 1, n-5, 3600))
	if err := st.apply(res.Ops); !errors.Is(err, fsm.ErrConflict) {
		t.Fatalf("stale ops applied: %v", err)
	}
}

func TestApplyBndUpdWholeRejections(t *testing.T) {
	st := newStore(t)
	cd := bndupd(t, duidA, active(na("2001:db8::1"), duidA, 1, t0.Unix(), 3600))
	vss := *cd
	vss.VSS = []byte{1, 'v', 'p', 'n'}
	noIA := *cd
	noIA.IAs = nil
	for _, c := range []struct {
		name string
		cd   *wire.ClientData
		code wire.StatusCode
	}{{"vss", &vss, wire.StatusConfigurationConflict}, {"no IA", &noIA, wire.StatusMissingBindingInformation}} {
		res := ApplyBndUpd(st.lookup, c.cd, Params{Role: Primary}, t0)
		if len(res.Ops) != 0 || res.Reply.Status == nil || res.Reply.Status.Code != c.code {
			t.Errorf("%s: ops %v, reply status %v", c.name, res.Ops, res.Reply.Status)
		}
		wireTrip(t, res.Message(3, 0))
	}
	// Missing per-lease information.
	bad := *cd
	bad.IAs = []wire.IA{{Type: wire.IANA, IAID: 1, Leases: []wire.Lease{cd.IAs[0].Leases[0], cd.IAs[0].Leases[0]}}}
	bad.IAs[0].Leases[0].StateExpirationTime = nil // ACTIVE without a timeout
	bad.IAs[0].Leases[1].Prefix = na("2001:db8::2").Prefix()
	bad.IAs[0].Leases[1].StartTimeOfState = nil
	res := ApplyBndUpd(st.lookup, &bad, Params{Role: Primary}, t0)
	for i, l := range res.Reply.IAs[0].Leases {
		if l.Status == nil || l.Status.Code != wire.StatusMissingBindingInformation {
			t.Errorf("lease %d: %v, want MissingBindingInformation", i, l.Status)
		}
	}
	if len(res.Ops) != 0 {
		t.Fatalf("ops for rejected leases: %v", res.Ops)
	}
}

func TestApplyBndUpdDNSAndPendingFree(t *testing.T) {
	st := newStore(t)
	b := fsm.Binding{Resource: na("2001:db8::2"), Status: fsm.StatusPendingFree, DUID: duidA, IAID: 1, StartTimeOfState: t0.Unix()}
	cd, err := ClientDataFor(duidA, []fsm.Binding{b}, t0)
	if err != nil {
		t.Fatal(err)
	}
	cd.IAs[0].Leases[0].FQDN = []byte{0, 1, 'a', 0}
	cd = wireTrip(t, wire.NewBndUpd(1, 0, cd)).ClientData()
	res := ApplyBndUpd(st.lookup, cd, Params{Role: Secondary}, t0)
	st.mustApply(res.Ops)
	if !res.DNSIgnored {
		t.Error("DNS information not reported")
	}
	if got := st.get(b.Resource); got.Status != fsm.StatusFreeBackup {
		t.Fatalf("PENDING-FREE even address stored as %v, want FREE-BACKUP", got.Status)
	}
}

func TestApplyBndUpdPrefix(t *testing.T) {
	st := newStore(t)
	n := t0.Unix()
	p1, p2 := pd("2001:db8:1::/56"), pd("2001:db8:2::/56")
	st.put(active(p2, duidA, 1, n-60, 3600)) // delegated here
	for _, c := range []struct {
		r      fsm.Resource
		status fsm.Status
		accept bool
	}{
		{p1, fsm.StatusFreeBackup, true}, // given to us
		{p2, fsm.StatusFree, false},      // taken back while delegated: MUST reject
	} {
		lp, err := LonePrefixFor(&fsm.Binding{Resource: c.r, Status: c.status, StartTimeOfState: n}, t0)
		if err != nil {
			t.Fatal(err)
		}
		m := wireTrip(t, wire.NewBndUpdPrefix(1, 0, lp))
		res := ApplyBndUpdPrefix(st.lookup, m.LonePrefix(), Params{Role: Secondary}, t0)
		st.mustApply(res.Ops)
		rm := wireTrip(t, res.Message(1, 0))
		rejected := rm.LonePrefix().Status != nil && rm.LonePrefix().Status.IsError()
		if rejected == c.accept {
			t.Errorf("%v %v: reply %v", c.r, c.status, rm.LonePrefix().Status)
		}
	}
	if b := st.get(p1); b.Status != fsm.StatusFreeBackup || b.DUID != "" {
		t.Fatalf("given prefix: %+v", b)
	}
	if b := st.get(p2); b.Status != fsm.StatusActive || !b.Owed() {
		t.Fatalf("delegated prefix: %+v", b)
	}
	// ACTIVE lone prefix: missing information.
	lp := &wire.LonePrefix{Lease: wire.Lease{Prefix: p1.Prefix(), BindingStatus: wire.BindingActive,
		StartTimeOfState: wire.U32(toFO(n)), StateExpirationTime: wire.U32(toFO(n + 10))}, BaseTime: wire.U32(toFO(n))}
	res := ApplyBndUpdPrefix(st.lookup, lp, Params{Role: Secondary}, t0)
	if res.ReplyPrefix.Status == nil || res.ReplyPrefix.Status.Code != wire.StatusMissingBindingInformation || len(res.Ops) != 0 {
		t.Fatalf("ACTIVE lone prefix: %v", res.ReplyPrefix.Status)
	}
}
