package update

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// TestPairSimulation drives two servers with this package's rules through
// random client traffic, expiries and lossy partner exchanges (both serving
// from their own pools, as in COMMUNICATIONS-INTERRUPTED, with the MCLT
// cap), and checks after every event that
//
//   - no address is allocated to a client while another client still holds
//     it (the client's view: the lifetime of the last reply it got);
//   - if either server's partner died now and it entered PARTNER-DOWN, it
//     would not give any held address to another client before that
//     client's lease ends (after its own reclamation of expired leases).
func TestPairSimulation(t *testing.T) {
	for seed := uint64(1); seed <= 100; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { simulate(t, seed) })
	}
}

type simServer struct {
	role   Role
	st     *store
	unsent map[fsm.Resource]bool
}

type holding struct {
	duid   string
	expiry int64
}

func simulate(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	const mclt = 600 * time.Second
	const desired = 3600 * time.Second
	res := []fsm.Resource{na("2001:db8::1"), na("2001:db8::2"), na("2001:db8::3"), na("2001:db8::4"),
		pd("2001:db8:1::/56"), pd("2001:db8:2::/56")}
	clients := []string{"\x00\x01c0", "\x00\x01c1", "\x00\x01c2", "\x00\x01c3"}
	srv := []*simServer{{role: Primary, st: newStore(t), unsent: map[fsm.Resource]bool{}},
		{role: Secondary, st: newStore(t), unsent: map[fsm.Resource]bool{}}}
	truth := map[fsm.Resource]holding{}
	now := t0.Unix()
	var log []func() string
	fail := func(format string, args ...any) {
		t.Helper()
		for _, l := range log[max(0, len(log)-40):] {
			t.Log(l())
		}
		t.Fatalf(format, args...)
	}
	note := func(format string, args ...any) {
		if len(log) > 64 {
			log = append(log[:0], log[len(log)-40:]...)
		}
		log = append(log, func() string { return fmt.Sprintf(format, args...) })
	}
	binding := func(s *simServer, r fsm.Resource) fsm.Binding {
		if b, ok := s.st.lookup(r); ok {
			return b
		}
		return Blank(r)
	}
	holds := func(c string, now int64) (fsm.Resource, bool) {
		for r, h := range truth {
			if h.duid == c && h.expiry > now {
				return r, true
			}
		}
		return fsm.Resource{}, false
	}
	commit := func(s *simServer, b fsm.Binding, rev uint64) {
		b.Rev = 0
		s.st.mustApply([]fsm.Op{{Resource: b.Resource, IfRev: rev, Binding: b}})
	}
	exchangeLossy := func(from, to *simServer) {
		ups, _ := Updates(SelectOwed(from.st.all()), time.Unix(now, 0))
		for _, u := range ups {
			for _, b := range u.Bindings {
				delete(from.unsent, b.Resource)
			}
			if rng.IntN(5) == 0 {
				note("%d %v->%v BNDUPD lost", now, from.role, to.role)
				continue
			}
			var r Result
			if u.ClientData != nil {
				r = ApplyBndUpd(to.st.lookup, u.ClientData, Params{Role: to.role}, time.Unix(now, 0))
			} else {
				r = ApplyBndUpdPrefix(to.st.lookup, u.Prefix, Params{Role: to.role}, time.Unix(now, 0))
			}
			to.st.mustApply(r.Ops)
			for _, o := range r.Outcomes {
				note("%d %v->%v %v accepted=%v %v", now, from.role, to.role, o.Resource, o.Accepted, o.Reject)
			}
			if rng.IntN(5) == 0 {
				note("%d %v->%v BNDREPLY lost", now, from.role, to.role)
				continue
			}
			var rr ReplyResult
			if u.ClientData != nil {
				rr = ApplyBndReply(from.st.lookup, u.Bindings, r.Reply, 0, time.Unix(now, 0))
			} else {
				rr = ApplyBndReplyPrefix(from.st.lookup, u.Bindings[0], r.ReplyPrefix, 0, time.Unix(now, 0))
			}
			from.st.mustApply(rr.Ops)
		}
	}

	for step := 0; step < 600; step++ {
		now += 1 + rng.Int64N(900)
		x := srv[rng.IntN(2)]
		c := clients[rng.IntN(len(clients))]
		tnow := time.Unix(now, 0)
		switch ev := rng.IntN(10); {
		case ev < 4: // request or renew at x
			if r, ok := holds(c, now); ok {
				b := binding(x, r)
				if b.Status != fsm.StatusActive || b.DUID != c {
					continue // x does not know the client's lease: no renewal
				}
				rev := b.Rev
				valid := Grant(tnow, &b, desired, GrantParams{MCLT: mclt})
				b.CLTT, b.StateExpirationTime, b.ValidLifetime = now, now+int64(valid/time.Second), uint32(valid/time.Second)
				commit(x, b, rev)
				truth[r] = holding{c, now + int64(valid/time.Second)}
				note("%d %v renews %v for %q until %d", now, x.role, r, c, truth[r].expiry)
				continue
			}
			cond := Conditions{Role: x.role, MCLT: mclt, Sent: func(b *fsm.Binding) bool { return !x.unsent[b.Resource] }}
			for _, r := range res {
				b := binding(x, r)
				if !Available(cond, &b, c, tnow) {
					continue
				}
				if h, ok := truth[r]; ok && h.expiry > now && h.duid != c {
					fail("%v gives %v to %q at %d while %q holds it until %d: %+v", x.role, r, c, now, h.duid, h.expiry, b)
				}
				rev := b.Rev
				if b.Status != fsm.StatusActive {
					b.StartTimeOfState, b.Flags = now, 0
				}
				b.Status, b.DUID, b.IAID = fsm.StatusActive, c, 1
				valid := Grant(tnow, &b, desired, GrantParams{MCLT: mclt})
				b.CLTT, b.StateExpirationTime, b.ValidLifetime = now, now+int64(valid/time.Second), uint32(valid/time.Second)
				commit(x, b, rev)
				truth[r] = holding{c, now + int64(valid/time.Second)}
				note("%d %v grants %v to %q until %d", now, x.role, r, c, truth[r].expiry)
				break
			}
		case ev < 5: // release at x
			r, ok := holds(c, now)
			if !ok {
				continue
			}
			b := binding(x, r)
			if b.Status != fsm.StatusActive || b.DUID != c {
				continue
			}
			rev := b.Rev
			Free(tnow, &b, true)
			b.CLTT = now
			commit(x, b, rev)
			x.unsent[r] = true
			delete(truth, r)
			note("%d %v: %q releases %v", now, x.role, c, r)
		case ev < 7: // reclamation at x
			for _, b := range x.st.all() {
				if b.Status == fsm.StatusActive && b.StateExpirationTime <= now {
					rev := b.Rev
					Free(tnow, &b, false)
					commit(x, b, rev)
					x.unsent[b.Resource] = true
					note("%d %v expires %v", now, x.role, b.Resource)
				}
			}
		default: // partner exchange, one direction
			exchangeLossy(x, srv[1-indexOf(srv, x)])
		}

		// PARTNER-DOWN check: each server, were its partner gone now.
		for _, y := range srv {
			cond := Conditions{Role: y.role, MCLT: mclt, PartnerDown: true, PartnerDownTime: now, OwnPrefixesExhausted: true}
			for r, h := range truth {
				if h.expiry <= now {
					continue
				}
				b := binding(y, r)
				if b.Status == fsm.StatusActive && b.StateExpirationTime < h.expiry {
					Free(time.Unix(b.StateExpirationTime, 0), &b, false) // its own reclamation in PARTNER-DOWN
				}
				for _, other := range clients {
					if other != h.duid && Available(cond, &b, other, time.Unix(h.expiry-1, 0)) {
						fail("%v in PARTNER-DOWN from %d would give %v to %q before %q's lease ends at %d: %+v",
							y.role, now, r, other, h.duid, h.expiry, b)
					}
				}
			}
		}
	}
}

func indexOf(s []*simServer, x *simServer) int {
	for i := range s {
		if s[i] == x {
			return i
		}
	}
	return -1
}
