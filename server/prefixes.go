package server

import (
	"net/netip"

	"github.com/tandem-dhcp/tandem/fsm"
)

// PrefixPool is one delegated-prefix pool's count of available prefixes,
// as the failover primary's proportional allocation needs it (RFC 8156
// §4.2.2).
type PrefixPool struct {
	// Prefix is the pd-pool; Length the delegated length.
	Prefix netip.Prefix
	Length int
	// Available counts the prefixes this server may delegate to a new
	// client now: recorded ones that Policy.Available(b, "") accepts, and
	// unrecorded ones when Policy.UntrackedAvailable(IAPD).
	Available uint64
	// FreeBackup counts the prefixes recorded FREE-BACKUP (a failover
	// secondary's). On a failover primary it is disjoint from Available.
	FreeBackup uint64
}

// PrefixPools counts every PD pool's available and FREE-BACKUP prefixes
// from one consistent view of the database. It enumerates no unrecorded
// prefix: the cost is one ordered walk over the pools' records (a prefix
// with no record is counted arithmetically), whatever the pool's size.
func (s *Server) PrefixPools() []PrefixPool {
	v := s.state.View()
	var out []PrefixPool
	for _, sn := range s.subnets {
		for _, p := range sn.pools {
			if p.typ != fsm.IAPD {
				continue
			}
			pp := PrefixPool{Prefix: p.pdPrefix, Length: int(p.plen)}
			var recorded uint64
			p.records(v, func(_ uint64, b *fsm.Binding) bool {
				recorded++
				if b.Status == fsm.StatusFreeBackup {
					pp.FreeBackup++
				}
				if s.policy.Available(b, "") {
					pp.Available++
				}
				return true
			})
			if p.untrackedFree {
				pp.Available += p.slots() - recorded
			}
			out = append(out, pp)
		}
	}
	return out
}

// MaxPrefixCandidates caps what one PrefixCandidates call returns.
const MaxPrefixCandidates = 4096

// PrefixCandidates returns up to n (at most MaxPrefixCandidates) prefixes
// of the PD pool whose prefix is prefix, highest-addressed first: the
// recorded ones for which want returns true, and, when unrecorded is true,
// prefixes with no record (want is not asked about those). Prefixes that a
// client transaction in flight has reserved are skipped. The cost is bounded
// by the pool's records plus n: unrecorded prefixes are enumerated only as
// far as they are returned, so a pool of 2^32 prefixes is never walked.
// The result is a snapshot: commit against it with IfRev and expect
// fsm.ErrConflict when a client got there first.
//
// below, when valid, resumes a walk: only prefixes lower than it are
// considered, so a caller taking many chunks (the primary giving its share)
// passes the last prefix of the previous chunk and the whole operation
// costs the records once, not once per chunk.
func (s *Server) PrefixCandidates(prefix, below netip.Prefix, n int, unrecorded bool, want func(*fsm.Binding) bool) []fsm.Resource {
	n = min(n, MaxPrefixCandidates)
	var p *pool
	for _, q := range s.pools.pools {
		if q.typ == fsm.IAPD && q.pdPrefix == prefix {
			p = q
		}
	}
	if p == nil || n <= 0 {
		return nil
	}
	start := p.set.last
	if below.IsValid() {
		slot, ok := p.slotOf(fsm.PrefixResource(below))
		if !ok || slot == 0 {
			return nil // below is not in this pool, or nothing lies under it
		}
		start = min(start, slot-1)
	}
	var out []fsm.Resource
	p.walkDownFrom(s.state.View(), start, unrecorded, func(slot uint64, b *fsm.Binding) bool {
		if (b == nil || want(b)) && !p.isReserved(slot) {
			out = append(out, p.resource(slot))
		}
		return len(out) < n
	})
	return out
}

// slots returns the number of slots (capped at 2^64-1).
func (p *pool) slots() uint64 {
	if p.set.last == allOnes {
		return allOnes
	}
	return p.set.last + 1
}

func (p *pool) isReserved(slot uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.reserved[slot]
	return ok
}

// reserveAny reserves slot whatever the slotset says (for a binding the
// caller has found available by other means); false if another transaction
// holds it.
func (p *pool) reserveAny(slot uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, busy := p.reserved[slot]; busy {
		return false
	}
	p.reserved[slot] = struct{}{}
	return true
}

// records calls fn for each record of v that is one of p's slots, in
// ascending order, until fn returns false.
func (p *pool) records(v *fsm.View, fn func(slot uint64, b *fsm.Binding) bool) {
	v.Ascend(fsm.Resource{Type: p.typ, IP: p.first.bytes()}, func(b *fsm.Binding) bool {
		if b.Resource.Type != p.typ || p.last.less(u128From(b.Resource.IP)) {
			return false
		}
		if slot, ok := p.slotOf(b.Resource); ok {
			return fn(slot, b)
		}
		return true
	})
}

// walkDown visits p's slots from the highest down, until visit returns
// false: each recorded one with its binding, and, when unrecorded is true,
// each one with no record with b nil. Without unrecorded, it costs the
// records of the pool; with it, also one step per unrecorded slot visited.
func (p *pool) walkDown(v *fsm.View, unrecorded bool, visit func(slot uint64, b *fsm.Binding) bool) {
	p.walkDownFrom(v, p.set.last, unrecorded, visit)
}

// walkDownFrom is walkDown starting at slot start (at most p.set.last).
func (p *pool) walkDownFrom(v *fsm.View, start uint64, unrecorded bool, visit func(slot uint64, b *fsm.Binding) bool) {
	next, more := start, true // highest slot not yet visited
	// gap visits the unrecorded slots next down to (excluding) stop, or to 0
	// when all is set; it reports whether to go on.
	gap := func(stop uint64, all bool) bool {
		if !unrecorded {
			return true
		}
		for s := next; more && (all || s > stop); s-- {
			if !visit(s, nil) {
				return false
			}
			if s == 0 {
				break
			}
		}
		return true
	}
	top := fsm.Resource{Type: p.typ, Len: 128, IP: p.last.bytes()}
	if start < p.set.last {
		top = p.resource(start)
		top.Len = 128 // at or below start's prefix, whatever its length
	}
	stopped := false
	v.Descend(top, func(b *fsm.Binding) bool {
		if b.Resource.Type != p.typ || u128From(b.Resource.IP).less(p.first) {
			return false
		}
		slot, ok := p.slotOf(b.Resource)
		if !ok || slot > next || !more {
			return more
		}
		if !gap(slot, false) || !visit(slot, b) {
			stopped = true
			return false
		}
		if slot == 0 {
			more = false
			return false
		}
		next = slot - 1
		return true
	})
	if !stopped && more {
		gap(0, true)
	}
}

// partnerSearch bounds the records pickPartner looks at per pool and call.
const partnerSearch = 1 << 16

// pickPartner reserves a prefix of p that Policy.PartnerAvailable accepts
// for duid (the pool's own prefixes being used up) and returns it with the
// revision to commit against (0 for a prefix with no record). It walks the
// pool from the top: unrecorded prefixes (FREE, the failover primary's)
// first where they are acceptable, else the records, at most partnerSearch
// of them.
func (s *Server) pickPartner(p *pool, duid string, plan *txnPlan) (fsm.Resource, uint64, uint64, bool) {
	blank := fsm.Binding{Resource: p.resource(0), Status: fsm.StatusFree}
	unrecorded := s.policy.PartnerAvailable(&blank, duid)
	var (
		found    fsm.Resource
		slot     uint64
		rev      uint64
		ok       bool
		searched int
	)
	p.walkDown(s.state.View(), unrecorded, func(sl uint64, b *fsm.Binding) bool {
		if searched++; searched > partnerSearch {
			return false
		}
		r := p.resource(sl)
		if plan.granted[r] || (b != nil && !s.policy.PartnerAvailable(b, duid)) || !p.reserveAny(sl) {
			return true
		}
		found, slot, ok = r, sl, true
		if b != nil {
			rev = b.Rev
		}
		return false
	})
	return found, slot, rev, ok
}
