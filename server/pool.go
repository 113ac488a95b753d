package server

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/tandem-dhcp/tandem/fsm"
)

// u128 is an unsigned 128-bit integer (an IPv6 address as a number).
type u128 struct{ hi, lo uint64 }

func u128From(a [16]byte) u128 {
	return u128{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])}
}

func (x u128) bytes() [16]byte {
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], x.hi)
	binary.BigEndian.PutUint64(a[8:], x.lo)
	return a
}

func (x u128) add(y u128) u128 {
	lo := x.lo + y.lo
	c := uint64(0)
	if lo < x.lo {
		c = 1
	}
	return u128{x.hi + y.hi + c, lo}
}

func (x u128) sub(y u128) u128 {
	lo := x.lo - y.lo
	b := uint64(0)
	if x.lo < y.lo {
		b = 1
	}
	return u128{x.hi - y.hi - b, lo}
}

func (x u128) less(y u128) bool { return x.hi < y.hi || (x.hi == y.hi && x.lo < y.lo) }

func (x u128) shl(n uint) u128 {
	switch {
	case n == 0:
		return x
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{x.lo << (n - 64), 0}
	}
	return u128{x.hi<<n | x.lo>>(64-n), x.lo << n}
}

func (x u128) shr(n uint) u128 {
	switch {
	case n == 0:
		return x
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{0, x.hi >> (n - 64)}
	}
	return u128{x.hi >> n, x.lo>>n | x.hi<<(64-n)}
}

// pool is one address range or delegated-prefix pool. Slot i is the
// resource base + (i*step) << shift. Only slots this server may allocate are
// in the slot space (with address parity, every other address).
//
// The slotset marks slots that hold a binding not available for allocation;
// it is kept in step with the database by the server's fsm.Observer.
// reserved marks slots picked by transactions still in flight, so two
// concurrent allocations do not pick the same slot.
type pool struct {
	subnet *subnet
	typ    fsm.IAType
	plen   uint8 // resource prefix length: 128 for addresses
	base   u128  // first slot's address
	shift  uint  // 128 - plen
	step   uint64
	first  u128 // first and last address the pool covers (any parity)
	last   u128

	// pdPrefix is a PD pool's configured prefix (zero for address pools).
	pdPrefix netip.Prefix

	// untrackedFree: a slot with no binding is free for this server (else
	// only slots whose binding is available are, see Policy.UntrackedAvailable).
	untrackedFree bool

	// active and abandoned count the pool's ACTIVE and ABANDONED bindings
	// (any parity: the partner's too), kept by the fsm observer for metrics.
	active, abandoned atomic.Int64

	mu       sync.Mutex
	set      *slotset
	cursor   uint64
	reserved map[uint64]struct{}
}

// newAddrPool covers first..last; parity -1 allows every address, 0 even, 1 odd.
// More than 2^64 slots are capped at 2^64.
func newAddrPool(sn *subnet, first, last netip.Addr, parity int) *pool {
	p := &pool{subnet: sn, typ: fsm.IANA, plen: 128, step: 1,
		first: u128From(first.As16()), last: u128From(last.As16()), reserved: map[uint64]struct{}{}, untrackedFree: true}
	p.base = p.first
	if parity >= 0 {
		p.step = 2
		if int(p.base.lo&1) != parity {
			p.base = p.base.add(u128{0, 1})
		}
	}
	n := uint64(0)
	if !p.last.less(p.base) {
		span := p.last.sub(p.base) // inclusive span - 1
		if p.step == 2 {
			span = span.shr(1)
		}
		n = span.lo
		if span.hi != 0 {
			n = allOnes
		}
	} else {
		p.set = newSlotset(0)
		p.set.Set(0) // empty pool: the only slot is taken
		return p
	}
	p.set = newSlotset(n)
	return p
}

// newPDPool covers prefix, delegating prefixes of length dlen.
func newPDPool(sn *subnet, prefix netip.Prefix, dlen int) *pool {
	p := &pool{subnet: sn, typ: fsm.IAPD, plen: uint8(dlen), step: 1, shift: uint(128 - dlen),
		reserved: map[uint64]struct{}{}, pdPrefix: prefix.Masked()}
	p.base = u128From(prefix.Masked().Addr().As16())
	p.first = p.base
	p.last = u128From(lastAddr(prefix).As16())
	n := uint64(1)<<uint(dlen-prefix.Bits()) - 1
	p.set = newSlotset(n)
	p.untrackedFree = true
	return p
}

// emptySet returns the pool's slotset with no binding known: all free, or
// all taken when unrecorded slots are not this server's.
func (p *pool) emptySet() *slotset {
	if p.untrackedFree {
		return newSlotset(p.set.last)
	}
	return newSlotsetFull(p.set.last)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As16()
	for b := p.Bits(); b < 128; b++ {
		a[b/8] |= 0x80 >> (b % 8)
	}
	return netip.AddrFrom16(a)
}

// resource returns the resource at slot.
func (p *pool) resource(slot uint64) fsm.Resource {
	off := u128{0, slot}
	if p.step == 2 {
		off = off.shl(1)
	}
	a := p.base.add(off.shl(p.shift))
	return fsm.Resource{Type: p.typ, Len: p.plen, IP: a.bytes()}
}

// slotOf returns r's slot, if r is one of this pool's slots.
func (p *pool) slotOf(r fsm.Resource) (uint64, bool) {
	if r.Len != p.plen || (p.typ == fsm.IAPD) != (r.Type == fsm.IAPD) {
		return 0, false
	}
	a := u128From(r.IP)
	if a.less(p.base) || p.last.less(a) {
		return 0, false
	}
	off := a.sub(p.base).shr(p.shift)
	if p.step == 2 {
		if off.lo&1 != 0 {
			return 0, false
		}
		off = off.shr(1)
	}
	if off.hi != 0 || off.lo > p.set.last {
		return 0, false
	}
	return off.lo, true
}

// contains reports whether r lies in the pool's range (any parity).
func (p *pool) contains(r fsm.Resource) bool {
	if r.Len != p.plen || (p.typ == fsm.IAPD) != (r.Type == fsm.IAPD) {
		return false
	}
	a := u128From(r.IP)
	return !a.less(p.first) && !p.last.less(a)
}

// pick reserves a free slot (next fit from the cursor, wrapping once) and
// returns its resource. The caller must call unreserve when its transaction ends.
func (p *pool) pick() (fsm.Resource, uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, from := range [2]uint64{p.cursor, 0} {
		for slot, ok := p.set.FindFree(from); ok; slot, ok = p.set.FindFree(slot + 1) {
			if _, busy := p.reserved[slot]; busy {
				if slot == allOnes {
					break
				}
				continue
			}
			p.reserved[slot] = struct{}{}
			p.cursor = slot + 1
			return p.resource(slot), slot, true
		}
	}
	return fsm.Resource{}, 0, false
}

// reserve reserves a specific slot (a client's hint) if it is free.
func (p *pool) reserve(slot uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set.Has(slot) {
		return false
	}
	if _, busy := p.reserved[slot]; busy {
		return false
	}
	p.reserved[slot] = struct{}{}
	return true
}

func (p *pool) unreserve(slot uint64) {
	p.mu.Lock()
	delete(p.reserved, slot)
	p.mu.Unlock()
}

// mark records whether slot holds an unavailable binding. Called by the observer.
func (p *pool) mark(slot uint64, taken bool) {
	p.mu.Lock()
	if taken {
		p.set.Set(slot)
	} else {
		p.set.Clear(slot)
	}
	p.mu.Unlock()
}

// usage returns the number of unavailable slots and the slot count.
func (p *pool) usage() (used, total uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	total = p.set.last + 1
	if total == 0 {
		total = allOnes
	}
	return p.set.Used(), total
}

// poolIndex finds the pool of a resource.
type poolIndex struct {
	pools []*pool // sorted by (type is PD, first)
}

func newPoolIndex(pools []*pool) *poolIndex {
	ps := append([]*pool(nil), pools...)
	sort.Slice(ps, func(i, j int) bool {
		if (ps[i].typ == fsm.IAPD) != (ps[j].typ == fsm.IAPD) {
			return ps[j].typ == fsm.IAPD
		}
		return ps[i].first.less(ps[j].first)
	})
	return &poolIndex{pools: ps}
}

// find returns the pool whose range contains r (pools do not overlap).
func (x *poolIndex) find(r fsm.Resource) *pool {
	pd := r.Type == fsm.IAPD
	a := u128From(r.IP)
	i := sort.Search(len(x.pools), func(i int) bool {
		p := x.pools[i]
		if (p.typ == fsm.IAPD) != pd {
			return (p.typ == fsm.IAPD) && !pd
		}
		return a.less(p.first)
	})
	if i == 0 {
		return nil
	}
	if p := x.pools[i-1]; p.contains(r) {
		return p
	}
	return nil
}
