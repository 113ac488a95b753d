package update

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// expectRecord is what a Record parsed from the BNDUPD built from b at now
// must hold (the fields a BNDUPD carries, RFC 8156 §7.4).
func expectRecord(b fsm.Binding, now time.Time, lone bool) fsm.Binding {
	e := fsm.Binding{Resource: b.Resource, Status: b.Status, StartTimeOfState: b.StartTimeOfState}
	if !lone {
		e.DUID, e.IAID = b.DUID, b.IAID
		e.PreferredLifetime, e.ValidLifetime = b.PreferredLifetime, b.ValidLifetime
		if b.CLTT != 0 {
			e.CLTT = min(b.CLTT, now.Unix()) // CLT_TIME is relative and never negative
		}
		e.PartnerRawCLTT = b.PartnerRawCLTT
	}
	if b.StateExpirationTime != 0 {
		e.StateExpirationTime = b.StateExpirationTime
		e.PartnerLifetime = PartnerLifetimeToSend(&b)
		e.ExpirationTime = b.ExpirationTime
	}
	return e
}

func randResource(rng *rand.Rand) fsm.Resource {
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	a[14], a[15] = byte(rng.IntN(256)), byte(rng.IntN(256))
	switch rng.IntN(3) {
	case 0:
		return fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a))
	case 1:
		return fsm.AddrResource(fsm.IATA, netip.AddrFrom16(a))
	}
	a[14], a[15] = 0, 0
	a[6] = byte(rng.IntN(256))
	return fsm.PrefixResource(netip.PrefixFrom(netip.AddrFrom16(a), 56))
}

// TestClientDataRoundTrip: random bindings of one client -> ClientDataFor
// -> BNDUPD -> Encode -> DecodeMessage -> ParseClientData gives back every
// carried field; and the BNDREPLY built from it is valid on the wire too.
func TestClientDataRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 2000; iter++ {
		now := at(rng.Int64N(86400))
		duid := string([]byte{0, 2, byte(iter), byte(iter >> 8), byte(rng.IntN(256))})
		var bs []fsm.Binding
		seen := map[fsm.Resource]bool{}
		for k := 1 + rng.IntN(12); k > 0; k-- {
			r := randResource(rng)
			if seen[r] {
				continue
			}
			seen[r] = true
			b := randBinding(rng, r)
			b.DUID = duid
			if b.StartTimeOfState == 0 {
				b.StartTimeOfState = now.Unix() - 1
			}
			if b.Status == fsm.StatusActive && b.StateExpirationTime == 0 {
				b.StateExpirationTime = now.Unix() + 1
			}
			bs = append(bs, b)
		}
		cd, err := ClientDataFor(duid, bs, now)
		if err != nil {
			t.Fatal(err)
		}
		m := wireTrip(t, wire.NewBndUpd(uint32(iter), wire.ToFOTime(now), cd))
		recs, err := ParseClientData(m.ClientData(), now)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if len(recs) != len(bs) {
			t.Fatalf("%d records for %d bindings", len(recs), len(bs))
		}
		byRes := map[fsm.Resource]fsm.Binding{}
		for _, b := range bs {
			byRes[b.Resource] = b
		}
		for _, rec := range recs {
			b, ok := byRes[rec.Resource]
			if !ok {
				t.Fatalf("record for unknown %v", rec.Resource)
			}
			if want := expectRecord(b, now, false); rec.Binding != want || rec.Lone {
				t.Fatalf("round trip of\n %+v\ngave\n %+v\nwant\n %+v", b, rec.Binding, want)
			}
		}
		// The reply to it, whatever the decisions, is valid on the wire.
		st := newStore(t)
		for _, b := range bs {
			if rng.IntN(2) == 0 {
				st.put(randBinding(rng, b.Resource))
			}
		}
		res := ApplyBndUpd(st.lookup, m.ClientData(), Params{Role: Primary}, now)
		st.mustApply(res.Ops)
		if len(res.Outcomes) != len(bs) {
			t.Fatalf("%d outcomes for %d leases", len(res.Outcomes), len(bs))
		}
		wireTrip(t, res.Message(m.XID, 0))
	}
}

func TestLonePrefixRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for iter := 0; iter < 1000; iter++ {
		now := at(rng.Int64N(86400))
		b := randBinding(rng, pd("2001:db8:40::/56"))
		if b.Status == fsm.StatusActive {
			b.Status = fsm.StatusFreeBackup
		}
		if b.StartTimeOfState == 0 {
			b.StartTimeOfState = now.Unix()
		}
		lp, err := LonePrefixFor(&b, now)
		if err != nil {
			t.Fatal(err)
		}
		m := wireTrip(t, wire.NewBndUpdPrefix(1, 0, lp))
		rec, err := ParseLonePrefix(m.LonePrefix(), now)
		if err != nil {
			t.Fatal(err)
		}
		if want := expectRecord(b, now, true); rec.Binding != want || !rec.Lone {
			t.Fatalf("lone round trip of %+v gave %+v, want %+v", b, rec.Binding, want)
		}
	}
	if _, err := LonePrefixFor(&fsm.Binding{Resource: pd("2001:db8:40::/56"), Status: fsm.StatusActive, DUID: duidA}, t0); !errors.Is(err, ErrUnrepresentable) {
		t.Fatalf("ACTIVE lone prefix: %v", err)
	}
	if _, err := LonePrefixFor(&fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusFree}, t0); !errors.Is(err, ErrUnrepresentable) {
		t.Fatalf("lone address: %v", err)
	}
}

func TestClientDataLayout(t *testing.T) {
	n := t0.Unix()
	bs := []fsm.Binding{
		active(pd("2001:db8:1::/56"), duidA, 9, n-100, 3600),
		active(na("2001:db8::3"), duidA, 2, n-100, 3600),
		active(na("2001:db8::1"), duidA, 2, n-100, 3600),
		{Resource: na("2001:db8::5"), Status: fsm.StatusReleased, DUID: duidA, IAID: 1, StartTimeOfState: n - 5, CLTT: n - 5},
	}
	bs[0].PartnerLifetime, bs[0].ExpirationTime, bs[0].PartnerRawCLTT = n+9, n+8, n-7
	cd, err := ClientDataFor(duidA, bs, t0)
	if err != nil {
		t.Fatal(err)
	}
	if string(cd.ClientID) != duidA || cd.BaseTime == nil || *cd.BaseTime != wire.ToFOTime(t0) || cd.VSS != nil {
		t.Fatalf("client data header: %+v", cd)
	}
	if len(cd.IAs) != 3 || cd.IAs[0].IAID != 1 || cd.IAs[1].IAID != 2 || len(cd.IAs[1].Leases) != 2 ||
		cd.IAs[2].Type != wire.IAPD || cd.IAs[1].Leases[0].Prefix != na("2001:db8::1").Prefix() {
		t.Fatalf("IA grouping: %+v", cd.IAs)
	}
	rel := cd.IAs[0].Leases[0]
	if rel.StateExpirationTime != nil || rel.PartnerLifetime != nil || rel.ExpirationTime != nil {
		t.Fatalf("RELEASED without a timeout carries timeout options: %+v", rel)
	}
	if rel.CLTTime == nil || *rel.CLTTime != 5 {
		t.Fatalf("CLT_TIME %v, want 5 s before the base time", rel.CLTTime)
	}
	p := cd.IAs[2].Leases[0]
	if *p.PartnerLifetime != toFO(n+9) || *p.ExpirationTime != toFO(n+8) || *p.PartnerRawCLTTime != toFO(n-7) ||
		*p.StateExpirationTime != toFO(n+3500) || *p.StartTimeOfState != toFO(n-100) || p.BindingStatus != wire.BindingActive {
		t.Fatalf("prefix lease: %+v", p)
	}
	if _, err := ClientDataFor(duidB, bs, t0); !errors.Is(err, ErrUnrepresentable) {
		t.Fatalf("another client's bindings: %v", err)
	}
	if _, err := ClientDataFor("ab", bs[:1], t0); !errors.Is(err, ErrUnrepresentable) {
		t.Fatalf("short DUID: %v", err)
	}
}

func TestSelectAndUpdates(t *testing.T) {
	n := t0.Unix()
	owedA := active(na("2001:db8::1"), duidA, 1, n, 3600)
	owedA.Flags = fsm.FlagUpdateOwed
	quietA := active(na("2001:db8::3"), duidA, 1, n, 3600)
	owedB := active(na("2001:db8::5"), duidB, 1, n, 3600)
	owedB.PartnerLifetime = n + 5000
	resent := active(na("2001:db8::7"), duidB, 2, n, 3600)
	resent.Flags = fsm.FlagUpdateOwed | fsm.FlagResent
	fb := fsm.Binding{Resource: pd("2001:db8:1::/56"), Status: fsm.StatusFreeBackup, StartTimeOfState: n, Flags: fsm.FlagUpdateOwed}
	freeHint := fsm.Binding{Resource: pd("2001:db8:2::/56"), Status: fsm.StatusFree, DUID: duidA, StartTimeOfState: n}
	freeAddr := fsm.Binding{Resource: na("2001:db8::9"), Status: fsm.StatusFree, StartTimeOfState: n} // no client: cannot travel
	all := []fsm.Binding{freeAddr, owedA, quietA, fb, owedB, resent, freeHint}

	owed := SelectOwed(all)
	if len(owed) != 4 {
		t.Fatalf("SelectOwed: %d", len(owed))
	}
	if eager := SelectEager(all); len(eager) != 3 {
		t.Fatalf("SelectEager: %d, want 3 (not the FlagResent one)", len(eager))
	}
	ups, skipped := Updates(owed, t0)
	if len(skipped) != 0 || len(ups) != 3 {
		t.Fatalf("UPDREQ: %d updates, skipped %v", len(ups), skipped)
	}
	if string(ups[0].ClientData.ClientID) != duidA || len(ups[0].Bindings) != 1 ||
		string(ups[1].ClientData.ClientID) != duidB || len(ups[1].Bindings) != 2 || ups[2].Prefix == nil {
		t.Fatalf("UPDREQ grouping: %+v", ups)
	}
	ups, skipped = Updates(SelectAll(all), t0)
	if len(skipped) != 1 || skipped[0].Resource != freeAddr.Resource {
		t.Fatalf("UPDREQALL skipped %v", skipped)
	}
	var lone int
	for _, u := range ups {
		if u.Prefix != nil {
			lone++
		}
		wireTrip(t, u.Message(1, 0))
	}
	if len(ups) != 4 || lone != 2 || len(ups[0].Bindings) != 2 {
		t.Fatalf("UPDREQALL: %d updates, %d lone", len(ups), lone)
	}

	// A client with very many leases is split, and each BNDUPD fits.
	var many []fsm.Binding
	base := netip.MustParseAddr("2001:db8::").As16()
	for i := 0; i < 2*MaxLeasesPerUpdate+3; i++ {
		a := base
		a[13], a[14], a[15] = byte(i>>16), byte(i>>8), byte(i)
		b := active(fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a)), duidA, 1, n, 3600)
		b.PartnerLifetime, b.ExpirationTime, b.PartnerRawCLTT, b.AckedPartnerLifetime = n+1, n+2, n+3, n+4
		many = append(many, b)
	}
	ups, _ = Updates(many, t0)
	if len(ups) != 3 {
		t.Fatalf("%d updates for %d leases", len(ups), len(many))
	}
	for _, u := range ups {
		b, err := u.Message(1, 0).Encode()
		if err != nil || len(b) > wire.MaxMessageSize {
			t.Fatalf("split update: %d bytes, %v", len(b), err)
		}
	}
}
