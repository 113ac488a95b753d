package update

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// TestParitySplit is digest conformance item 2: bit 127.
func TestParitySplit(t *testing.T) {
	for _, c := range []struct {
		addr  string
		owner Role
	}{
		{"2001:db8::1", Primary}, {"2001:db8::2", Secondary}, {"2001:db8::ffff", Primary},
		{"2001:db8::fffe", Secondary}, {"::", Secondary}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Primary},
		{"2001:db8::100", Secondary}, {"2001:db8::101", Primary},
	} {
		a := netip.MustParseAddr(c.addr)
		if got := AddressOwner(a); got != c.owner {
			t.Errorf("AddressOwner(%s) = %v, want %v", c.addr, got, c.owner)
		}
		if !MayAllocateAddress(c.owner, a) || MayAllocateAddress(c.owner.Partner(), a) {
			t.Errorf("MayAllocateAddress(%s) does not follow the owner %v", c.addr, c.owner)
		}
		want := map[Role]fsm.Status{Primary: fsm.StatusFree, Secondary: fsm.StatusFreeBackup}[c.owner]
		if got := Destination(na(c.addr)); got != want {
			t.Errorf("Destination(%s) = %v, want %v", c.addr, got, want)
		}
		if got := Blank(na(c.addr)); got.Status != want || Owner(&got) != c.owner {
			t.Errorf("Blank(%s) = %v owner %v", c.addr, got.Status, Owner(&got))
		}
	}
	// Exactly half of a range each.
	counts := map[Role]int{}
	base := netip.MustParseAddr("2001:db8::").As16()
	for i := 0; i < 256; i++ {
		a := base
		a[15] = byte(i)
		counts[AddressOwner(netip.AddrFrom16(a))]++
	}
	if counts[Primary] != 128 || counts[Secondary] != 128 {
		t.Fatalf("split %v", counts)
	}
	if AddressParity(Primary) != 1 || AddressParity(Secondary) != 0 {
		t.Fatal("AddressParity")
	}
	// Prefixes always go back to the primary, whatever their address.
	for _, p := range []string{"2001:db8:1::/56", "2001:db8:1:100::/56", "2001:db8::1/128"} {
		if got := Destination(pd(p)); got != fsm.StatusFree {
			t.Errorf("Destination(pd %s) = %v", p, got)
		}
	}
}

func TestAvailable(t *testing.T) {
	n := t0.Unix()
	mclt := time.Hour
	pdt := n - 600 // entered PARTNER-DOWN 10 minutes ago
	normal := func(r Role) Conditions { return Conditions{Role: r, MCLT: mclt} }
	down := func(r Role, exhausted bool) Conditions {
		return Conditions{Role: r, MCLT: mclt, PartnerDown: true, PartnerDownTime: pdt, OwnPrefixesExhausted: exhausted}
	}
	notSent := func(*fsm.Binding) bool { return false }
	sent := func(*fsm.Binding) bool { return true }
	owedExpired := func(r fsm.Resource) *fsm.Binding {
		b := active(r, duidA, 1, n-7200, 3600)
		b.AckedPartnerLifetime = n + 1000
		Free(at(-3600), &b, false)
		return &b
	}
	received := func(r fsm.Resource, s fsm.Status) *fsm.Binding {
		return &fsm.Binding{Resource: r, Status: s, DUID: duidA, StartTimeOfState: n - 100}
	}
	odd, even, pfx := na("2001:db8::1"), na("2001:db8::2"), pd("2001:db8:9::/56")
	for _, c := range []struct {
		name string
		c    Conditions
		b    *fsm.Binding
		duid string
		now  int64
		want bool
	}{
		{"own FREE address", normal(Primary), &fsm.Binding{Resource: odd, Status: fsm.StatusFree}, duidB, n, true},
		{"partner's address", normal(Primary), &fsm.Binding{Resource: even, Status: fsm.StatusFreeBackup}, duidB, n, false},
		{"partner's address marked FREE", normal(Primary), &fsm.Binding{Resource: even, Status: fsm.StatusFree}, duidB, n, false},
		{"secondary's own address", normal(Secondary), &fsm.Binding{Resource: even, Status: fsm.StatusFreeBackup}, duidB, n, true},
		{"FREE prefix on the primary", normal(Primary), &fsm.Binding{Resource: pfx, Status: fsm.StatusFree}, "", n, true},
		{"FREE prefix on the secondary", normal(Secondary), &fsm.Binding{Resource: pfx, Status: fsm.StatusFree}, "", n, false},
		{"FREE-BACKUP prefix on the primary (A4)", normal(Primary), &fsm.Binding{Resource: pfx, Status: fsm.StatusFreeBackup}, "", n, false},
		{"FREE-BACKUP prefix on the secondary", normal(Secondary), &fsm.Binding{Resource: pfx, Status: fsm.StatusFreeBackup}, "", n, true},
		{"ACTIVE, its client", normal(Primary), &fsm.Binding{Resource: odd, Status: fsm.StatusActive, DUID: duidA}, duidA, n, true},
		{"ACTIVE, other client", normal(Primary), &fsm.Binding{Resource: odd, Status: fsm.StatusActive, DUID: duidA}, duidB, n, false},
		{"ABANDONED", normal(Primary), &fsm.Binding{Resource: odd, Status: fsm.StatusAbandoned}, duidB, n, false},
		{"own EXPIRED unacked, other client", normal(Primary), owedExpired(odd), duidB, n, false},
		{"own EXPIRED unacked, same client, unsent", Conditions{Role: Primary, MCLT: mclt, Sent: notSent}, owedExpired(odd), duidA, n, true},
		{"own EXPIRED unacked, same client, sent", Conditions{Role: Primary, MCLT: mclt, Sent: sent}, owedExpired(odd), duidA, n, false},
		{"own EXPIRED unacked, same client, unknown", normal(Primary), owedExpired(odd), duidA, n, false},
		{"own EXPIRED unacked, any client", Conditions{Role: Primary, MCLT: mclt, Sent: notSent}, owedExpired(odd), "", n, false},
		{"received EXPIRED, own pool", normal(Primary), received(odd, fsm.StatusExpired), duidB, n, true},
		{"received RELEASED prefix on the secondary", normal(Secondary), received(pfx, fsm.StatusReleased), duidB, n, false},
		{"received RELEASED prefix on the primary", normal(Primary), received(pfx, fsm.StatusReleased), duidB, n, true},
		{"received RESET, partner's address", normal(Primary), received(even, fsm.StatusReset), duidB, n, false},
		// PARTNER-DOWN.
		{"PD: own FREE at once", down(Primary, false), &fsm.Binding{Resource: odd, Status: fsm.StatusFree}, duidB, n, true},
		{"PD: partner's address never", down(Primary, true), &fsm.Binding{Resource: even, Status: fsm.StatusFreeBackup}, duidB, n + 100*86400, false},
		{"PD: partner's prefix before PD+MCLT", down(Primary, true), &fsm.Binding{Resource: pfx, Status: fsm.StatusFreeBackup}, "", pdt + 3599, false},
		{"PD: partner's prefix at PD+MCLT", down(Primary, true), &fsm.Binding{Resource: pfx, Status: fsm.StatusFreeBackup}, "", pdt + 3600, true},
		{"PD: partner's prefix, own pool not exhausted", down(Primary, false), &fsm.Binding{Resource: pfx, Status: fsm.StatusFreeBackup}, "", pdt + 7200, false},
		{"PD: FREE prefix on the secondary after PD+MCLT", down(Secondary, true), &fsm.Binding{Resource: pfx, Status: fsm.StatusFree}, "", pdt + 3600, true},
		{"PD: own EXPIRED before reuse time", down(Primary, false), owedExpired(odd), duidB, n + 1000 + 3599, false},
		{"PD: own EXPIRED at reuse time", down(Primary, false), owedExpired(odd), duidB, n + 1000 + 3600, true},
		{"PD: own EXPIRED prefix at reuse time, secondary, own pool left", down(Secondary, false), owedExpired(pfx), duidB, n + 1000 + 3600, false},
		{"PD: own EXPIRED prefix at reuse time, secondary, own pool exhausted", down(Secondary, true), owedExpired(pfx), duidB, n + 1000 + 3600, true},
	} {
		if got := Available(c.c, c.b, c.duid, time.Unix(c.now, 0)); got != c.want {
			t.Errorf("%s: Available = %v, want %v", c.name, got, c.want)
		}
	}
}

// randBinding returns a binding with random status, flags and times around
// t0, for property tests.
func randBinding(rng *rand.Rand, r fsm.Resource) fsm.Binding {
	n := t0.Unix()
	tm := func() int64 {
		if rng.IntN(4) == 0 {
			return 0
		}
		return n + rng.Int64N(20*86400) - 10*86400
	}
	b := fsm.Binding{Resource: r, Status: allStatuses[rng.IntN(len(allStatuses))], DUID: []string{duidA, duidB, ""}[rng.IntN(3)],
		IAID: rng.Uint32N(4), Flags: fsm.Flags(rng.IntN(4)),
		CLTT: tm(), StartTimeOfState: tm(), StateExpirationTime: tm(), PartnerLifetime: tm(),
		AckedPartnerLifetime: tm(), ExpirationTime: tm(), PartnerRawCLTT: tm(),
		PreferredLifetime: rng.Uint32N(100000), ValidLifetime: rng.Uint32N(200000)}
	if b.Status == fsm.StatusActive && b.DUID == "" {
		b.DUID = duidA
	}
	return b
}

// TestPartnerDownReuseProperty is digest conformance item 7: in
// PARTNER-DOWN, nothing bound to a client, and nothing from the partner's
// pool, goes to a different client before PD + MCLT; bound leases not
// before MCLT past every time the partner may have relied on.
func TestPartnerDownReuseProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	res := []fsm.Resource{na("2001:db8::1"), na("2001:db8::2"), pd("2001:db8:1::/56")}
	for i := 0; i < 200000; i++ {
		b := randBinding(rng, res[rng.IntN(len(res))])
		mclt := time.Duration(rng.Int64N(3*86400)) * time.Second
		ms := int64(mclt / time.Second)
		c := Conditions{Role: []Role{Primary, Secondary}[rng.IntN(2)], MCLT: mclt, PartnerDown: true,
			PartnerDownTime: t0.Unix() + rng.Int64N(10*86400) - 5*86400, OwnPrefixesExhausted: rng.IntN(2) == 0}
		now := t0.Unix() + rng.Int64N(40*86400) - 20*86400
		floor := c.PartnerDownTime + ms
		if ra := ReuseAt(&b, c.PartnerDownTime, mclt); ra < floor ||
			ra < b.StateExpirationTime+ms || ra < b.PartnerLifetime+ms || ra < b.AckedPartnerLifetime+ms || ra < b.ExpirationTime+ms {
			t.Fatalf("ReuseAt %d below a bound (PD+MCLT %d): %+v", ra, floor, b)
		}
		other := []string{duidB, "\x00\x01other"}[rng.IntN(2)]
		if b.DUID == other {
			continue
		}
		ok := Available(c, &b, other, time.Unix(now, 0))
		if !ok {
			continue
		}
		_, freeLikeNow := freeLike(&b)
		bound := b.Status == fsm.StatusActive ||
			((b.Status == fsm.StatusExpired || b.Status == fsm.StatusReleased || b.Status == fsm.StatusReset) && b.Owed())
		switch {
		case b.Status == fsm.StatusActive || b.Status == fsm.StatusAbandoned:
			t.Fatalf("%v given to another client", b.Status)
		case bound && now < ReuseAt(&b, c.PartnerDownTime, mclt):
			t.Fatalf("bound lease reused at %d, before %d: %+v", now, ReuseAt(&b, c.PartnerDownTime, mclt), b)
		case bound && now < floor:
			t.Fatalf("bound lease reused before PD+MCLT: %+v", b)
		case Owner(&b) != c.Role && b.Resource.Type != fsm.IAPD:
			t.Fatalf("partner's address allocated: %+v", b)
		case Owner(&b) != c.Role && (now < floor || !c.OwnPrefixesExhausted):
			t.Fatalf("partner's prefix at %d (PD+MCLT %d, exhausted %v): %+v", now, floor, c.OwnPrefixesExhausted, b)
		case !bound && !freeLikeNow:
			t.Fatalf("unexpected: %+v", b)
		}
		// The PARTNER-DOWN sweep agrees and never frees early either.
		if op, due := DuePendingFree(c, &b, time.Hour, time.Unix(now, 0)); due {
			if !bound || now < floor || op.Binding.Status != Destination(b.Resource) || !op.Binding.Owed() {
				t.Fatalf("DuePendingFree at %d: %+v -> %+v", now, b, op.Binding)
			}
		}
	}
}

func TestDuePendingFree(t *testing.T) {
	st := newStore(t)
	n := t0.Unix()
	b := active(na("2001:db8::2"), duidA, 1, n-7200, 3600)
	b.ExpirationTime = n + 500
	Free(at(-3600), &b, true)
	b = st.put(b)
	c := Conditions{Role: Secondary, MCLT: time.Hour, PartnerDown: true, PartnerDownTime: n - 60}
	if _, due := DuePendingFree(c, &b, 0, at(500+3599)); due {
		t.Fatal("due before expiration-time + MCLT")
	}
	op, due := DuePendingFree(c, &b, 0, at(500+3600))
	if !due {
		t.Fatal("not due at expiration-time + MCLT")
	}
	st.mustApply([]fsm.Op{op})
	if got := st.get(b.Resource); got.Status != fsm.StatusFreeBackup || !got.Owed() || got.ExpirationTime != 0 {
		t.Fatalf("after the sweep: %+v", got)
	}
	c.PartnerDown = false
	if _, due := DuePendingFree(c, &b, 0, at(100000)); due {
		t.Fatal("due outside PARTNER-DOWN")
	}
}
