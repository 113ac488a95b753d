package update

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

const (
	hour = 3600
	day  = 86400
)

// TestWorkedExampleMCLT is RFC 8156 §4.4.1 / Figure 1 (digest §6.3):
// MCLT 1 h, desired 3 d, T1 = 1/2. The partner lifetimes travel through
// real BNDUPD/BNDREPLY messages and are committed on both servers.
func TestWorkedExampleMCLT(t *testing.T) {
	prim, sec := newStore(t), newStore(t)
	p := GrantParams{MCLT: time.Hour, T1Fraction: 0.5}
	desired := 3 * 24 * time.Hour
	r := na("2001:db8::1")
	tt := t0.Unix()

	grant := func(now time.Time) (time.Duration, fsm.Binding) {
		t.Helper()
		b, ok := prim.s.Get(r)
		rev := b.Rev
		if !ok {
			b = fsm.Binding{Resource: r, DUID: duidA, IAID: 1, StartTimeOfState: now.Unix()}
		}
		b.Status = fsm.StatusActive
		valid := Grant(now, &b, desired, p)
		b.ValidLifetime, b.PreferredLifetime = uint32(valid/time.Second), uint32(valid/time.Second/2)
		b.CLTT, b.StateExpirationTime = now.Unix(), now.Add(valid).Unix()
		b.Rev = 0
		prim.mustApply([]fsm.Op{{Resource: r, IfRev: rev, Binding: b}})
		return valid, prim.get(r)
	}

	// t: SOLICIT/REQUEST. acked 0: lease time = floor(3d, 0 + 1h) = 1h.
	valid, b := grant(t0)
	if valid != 3600*time.Second {
		t.Fatalf("first grant: %v, want 3600s", valid)
	}
	if want := tt + 261000; b.PartnerLifetime != want {
		t.Fatalf("first partner lifetime t%+d, want t+261000", b.PartnerLifetime-tt)
	}
	if !b.Owed() {
		t.Fatal("first grant: no update owed")
	}
	exchange(t, prim, sec, Primary, t0)
	b = prim.get(r)
	if b.AckedPartnerLifetime != tt+261000 || b.PartnerLifetime != 0 || b.Owed() {
		t.Fatalf("after BNDREPLY: acked t%+d, partner lifetime %d, owed %v; want acked t+261000, 0, false",
			b.AckedPartnerLifetime-tt, b.PartnerLifetime, b.Owed())
	}
	if s := sec.get(r); s.ExpirationTime != tt+261000 || s.Status != fsm.StatusActive || s.DUID != duidA {
		t.Fatalf("secondary: %+v; want ACTIVE for A with expiration-time t+261000", s)
	}

	// t+1/2h: RENEW. acked remaining 3d: floor(3d, 3d+1h) = 3d.
	valid, b = grant(at(1800))
	if valid != 259200*time.Second {
		t.Fatalf("renewal at t+1800: %v, want 259200s", valid)
	}
	if want := tt + 1800 + 388800; b.PartnerLifetime != want {
		t.Fatalf("renewal partner lifetime (t+1800)%+d, want (t+1800)+388800", b.PartnerLifetime-tt-1800)
	}
	exchange(t, prim, sec, Primary, at(1800))
	if b = prim.get(r); b.AckedPartnerLifetime != tt+1800+388800 {
		t.Fatalf("acked after renewal (t+1800)%+d, want +388800", b.AckedPartnerLifetime-tt-1800)
	}

	// t+1/2h+1.5d: RENEW again: acked remaining 3d again, so 3d.
	now := at(1800 + 129600)
	valid, b = grant(now)
	if valid != 259200*time.Second {
		t.Fatalf("second renewal: %v, want 259200s", valid)
	}
	if b.PartnerLifetime != now.Unix()+388800 {
		t.Fatalf("second renewal partner lifetime now%+d, want now+388800", b.PartnerLifetime-now.Unix())
	}
	exchange(t, prim, sec, Primary, now)
	if s := sec.get(r); s.ExpirationTime != now.Unix()+388800 {
		t.Fatalf("secondary expiration-time now%+d, want now+388800", s.ExpirationTime-now.Unix())
	}
}

func TestActualValidAndPartnerLifetime(t *testing.T) {
	now := t0
	n := now.Unix()
	for _, c := range []struct {
		acked   int64
		desired time.Duration
		mclt    time.Duration
		want    time.Duration
	}{
		{0, 72 * time.Hour, time.Hour, time.Hour},
		{n - 100, 72 * time.Hour, time.Hour, time.Hour}, // acked in the past counts as now
		{n + 3*day, 72 * time.Hour, time.Hour, 72 * time.Hour},
		{n + 10, 72 * time.Hour, time.Hour, time.Hour + 10*time.Second},
		{n + 3*day, 30 * time.Minute, time.Hour, 30 * time.Minute}, // never above desired
		{0, 0xffffffff * time.Second, time.Hour, time.Hour},        // infinite: capped
		{n + 100*365*day, 0xffffffff * time.Second, time.Hour, MaxLifetime * time.Second},
		{0, 1500 * time.Millisecond, time.Hour, time.Second}, // whole seconds
	} {
		if got := ActualValid(now, c.acked, c.desired, c.mclt); got != c.want {
			t.Errorf("ActualValid(acked now%+d, %v, %v) = %v, want %v", c.acked-n, c.desired, c.mclt, got, c.want)
		}
	}
	if got := PartnerLifetime(now, time.Hour, 72*time.Hour, 0.5); got != n+1800+259200 {
		t.Errorf("PartnerLifetime = now%+d", got-n)
	}
	if got := PartnerLifetime(now, time.Hour, 72*time.Hour, 0); got != n+1800+259200 {
		t.Errorf("PartnerLifetime with fraction 0 = now%+d, want the default 1/2", got-n)
	}
	if got := PartnerLifetime(now, time.Hour, 72*time.Hour, 0.8); got != n+2880+259200 {
		t.Errorf("PartnerLifetime with fraction 0.8 = now%+d", got-n)
	}
	if got := PartnerLifetime(now, 0xffffffff*time.Second, 0xffffffff*time.Second, 1); got-n >= 1<<31 {
		t.Errorf("infinite partner lifetime now%+d: beyond the 2^31 s serial window", got-n)
	}
}

// TestGrantCapProperty: with the cap, the lease never ends later than
// max(acked, now) + MCLT; in PARTNER-DOWN it is the desired lifetime.
func TestGrantCapProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		now := at(rng.Int64N(10 * day))
		b := fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusActive, DUID: duidA,
			AckedPartnerLifetime: []int64{0, t0.Unix() + rng.Int64N(20*day)}[rng.IntN(2)],
			Flags:                fsm.Flags(rng.IntN(4))}
		desired := time.Duration(rng.Int64N(10*day)) * time.Second
		if rng.IntN(20) == 0 {
			desired = 0xffffffff * time.Second
		}
		mclt := time.Duration(rng.Int64N(2*day)) * time.Second
		pdown := rng.IntN(4) == 0
		got := Grant(now, &b, desired, GrantParams{MCLT: mclt, PartnerDown: pdown})
		end := now.Unix() + int64(got/time.Second)
		limit := max64(b.AckedPartnerLifetime, now.Unix()) + int64(mclt/time.Second)
		switch {
		case got%time.Second != 0 || got < 0:
			t.Fatalf("lifetime %v not whole seconds", got)
		case got > desired || got > MaxLifetime*time.Second:
			t.Fatalf("lifetime %v above desired %v", got, desired)
		case !pdown && end > limit:
			t.Fatalf("lease ends at %d, beyond max(acked, now) + MCLT = %d", end, limit)
		case pdown && got != min(desired/time.Second*time.Second, MaxLifetime*time.Second):
			t.Fatalf("PARTNER-DOWN lifetime %v, want the desired %v", got, desired)
		case b.PartnerLifetime < end || !b.Owed() || b.Flags&fsm.FlagResent != 0:
			t.Fatalf("partner lifetime %d before the lease end %d, or flags %v", b.PartnerLifetime, end, b.Flags.Names())
		}
	}
}

func TestFreeAndChanged(t *testing.T) {
	b := active(na("2001:db8::1"), duidA, 1, t0.Unix()-100, 3600)
	b.PartnerLifetime, b.AckedPartnerLifetime, b.ExpirationTime = 10, 20, 30
	b.Flags = fsm.FlagResent
	Free(t0, &b, true)
	if b.Status != fsm.StatusReleased || b.StartTimeOfState != t0.Unix() || b.StateExpirationTime != 0 ||
		b.Flags != fsm.FlagUpdateOwed || b.PartnerLifetime != 10 || b.AckedPartnerLifetime != 20 || b.ExpirationTime != 30 {
		t.Fatalf("Free(released): %+v", b)
	}
	Free(t0, &b, false)
	if b.Status != fsm.StatusExpired {
		t.Fatalf("Free(expired): status %v", b.Status)
	}
	c := fsm.Binding{Status: fsm.StatusAbandoned, Flags: fsm.FlagResent}
	Changed(t0, &c)
	if c.Flags != fsm.FlagUpdateOwed {
		t.Fatalf("Changed: flags %v", c.Flags.Names())
	}
}
