package server

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"

	"github.com/tandem-dhcp/tandem/fsm"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func na(s string) fsm.Resource { return fsm.AddrResource(fsm.IANA, addr(s)) }

func pd(s string) fsm.Resource { return fsm.PrefixResource(netip.MustParsePrefix(s)) }

// TestAddrPoolParity checks the slot <-> address mapping of address pools
// for every parity and both parities of first/last: only addresses of the
// pool's parity are slots, the range is inclusive at both ends, and
// resource/slotOf are inverse.
func TestAddrPoolParity(t *testing.T) {
	type tc struct {
		first, last string
		parity      int
		slots       uint64 // expected slot count
		lo, hi      string // expected first and last resource
	}
	cases := []tc{
		{"2001:db8:1::1000", "2001:db8:1::1fff", -1, 4096, "2001:db8:1::1000", "2001:db8:1::1fff"},
		{"2001:db8:1::1000", "2001:db8:1::1fff", 0, 2048, "2001:db8:1::1000", "2001:db8:1::1ffe"},
		{"2001:db8:1::1000", "2001:db8:1::1fff", 1, 2048, "2001:db8:1::1001", "2001:db8:1::1fff"},
		{"2001:db8:1::1001", "2001:db8:1::1ffe", -1, 4094, "2001:db8:1::1001", "2001:db8:1::1ffe"},
		{"2001:db8:1::1001", "2001:db8:1::1ffe", 0, 2047, "2001:db8:1::1002", "2001:db8:1::1ffe"},
		{"2001:db8:1::1001", "2001:db8:1::1ffe", 1, 2047, "2001:db8:1::1001", "2001:db8:1::1ffd"},
		{"2001:db8:1::7", "2001:db8:1::7", -1, 1, "2001:db8:1::7", "2001:db8:1::7"},
		{"2001:db8:1::7", "2001:db8:1::7", 1, 1, "2001:db8:1::7", "2001:db8:1::7"},
		{"2001:db8:1::7", "2001:db8:1::8", 0, 1, "2001:db8:1::8", "2001:db8:1::8"},
		// Crossing a 64-bit boundary of the address.
		{"2001:db8:1:0:ffff:ffff:ffff:fff0", "2001:db8:1:1::f", 0, 16, "2001:db8:1:0:ffff:ffff:ffff:fff0", "2001:db8:1:1::e"},
	}
	for _, c := range cases {
		p := newAddrPool(nil, addr(c.first), addr(c.last), c.parity)
		name := c.first + "-" + c.last
		if got := p.set.last + 1; got != c.slots {
			t.Errorf("%s parity %d: %d slots, want %d", name, c.parity, got, c.slots)
			continue
		}
		if got := p.resource(0); got != na(c.lo) {
			t.Errorf("%s parity %d: slot 0 = %v, want %s", name, c.parity, got, c.lo)
		}
		if got := p.resource(p.set.last); got != na(c.hi) {
			t.Errorf("%s parity %d: last slot = %v, want %s", name, c.parity, got, c.hi)
		}
		seen := 0
		for a := addr(c.first); ; a = a.Next() {
			r := na(a.String())
			slot, ok := p.slotOf(r)
			odd := a.As16()[15]&1 == 1
			wantOK := c.parity < 0 || odd == (c.parity == 1)
			if ok != wantOK {
				t.Fatalf("%s parity %d: slotOf(%v) ok=%v, want %v", name, c.parity, a, ok, wantOK)
			}
			if !p.contains(r) {
				t.Fatalf("%s: contains(%v) = false inside the range", name, a)
			}
			if ok {
				seen++
				if back := p.resource(slot); back != r {
					t.Fatalf("%s parity %d: resource(slotOf(%v)=%d) = %v", name, c.parity, a, slot, back)
				}
			}
			if a == addr(c.last) {
				break
			}
		}
		if uint64(seen) != c.slots {
			t.Errorf("%s parity %d: %d addresses map to slots, want %d", name, c.parity, seen, c.slots)
		}
		// Just outside the range: not a slot, not contained.
		for _, a := range []netip.Addr{addr(c.first).Prev(), addr(c.last).Next()} {
			if _, ok := p.slotOf(na(a.String())); ok || p.contains(na(a.String())) {
				t.Errorf("%s parity %d: %v outside the range is accepted", name, c.parity, a)
			}
		}
		// Other resource kinds never map.
		for _, r := range []fsm.Resource{
			{Type: fsm.IAPD, Len: 128, IP: addr(c.first).As16()},
			{Type: fsm.IANA, Len: 64, IP: addr(c.first).As16()},
		} {
			if _, ok := p.slotOf(r); ok {
				t.Errorf("%s: slotOf(%v) accepted a non-address resource", name, r)
			}
		}
		// Every picked address has the right parity and lies in the range.
		for {
			r, slot, ok := p.pick()
			if !ok {
				break
			}
			a := r.Addr()
			if a.Less(addr(c.first)) || addr(c.last).Less(a) {
				t.Fatalf("%s parity %d: picked %v outside the range", name, c.parity, a)
			}
			if c.parity >= 0 && int(a.As16()[15]&1) != c.parity {
				t.Fatalf("%s parity %d: picked %v of the other parity", name, c.parity, a)
			}
			p.mark(slot, true)
			p.unreserve(slot)
		}
		if used, total := p.usage(); used != c.slots || total != c.slots {
			t.Errorf("%s parity %d: usage %d/%d after picking everything, want %d/%d", name, c.parity, used, total, c.slots, c.slots)
		}
	}
}

// TestAddrPoolEmpty: a range with no address of the pool's parity (or
// first > last) yields nothing.
func TestAddrPoolEmpty(t *testing.T) {
	for _, c := range []struct {
		first, last string
		parity      int
	}{
		{"2001:db8:1::7", "2001:db8:1::7", 0},
		{"2001:db8:1::8", "2001:db8:1::8", 1},
		{"2001:db8:1::9", "2001:db8:1::8", -1},
	} {
		p := newAddrPool(nil, addr(c.first), addr(c.last), c.parity)
		if r, _, ok := p.pick(); ok {
			t.Errorf("%s-%s parity %d: empty pool picked %v", c.first, c.last, c.parity, r)
		}
		for _, a := range []string{c.first, c.last} {
			if slot, ok := p.slotOf(na(a)); ok {
				t.Errorf("%s-%s parity %d: slotOf(%s) = %d in an empty pool", c.first, c.last, c.parity, a, slot)
			}
		}
	}
}

// TestAddrPoolSlash64: a whole /64 is 2^64 slots (2^63 per parity) and
// works at both ends, including next-fit wrapping past the top.
func TestAddrPoolSlash64(t *testing.T) {
	first, last := addr("2001:db8:1::"), addr("2001:db8:1::ffff:ffff:ffff:ffff")
	p := newAddrPool(nil, first, last, -1)
	if p.set.last != math.MaxUint64 {
		t.Fatalf("/64 pool: last slot %d, want 2^64-1", p.set.last)
	}
	if used, total := p.usage(); used != 0 || total != math.MaxUint64 {
		t.Fatalf("/64 usage %d/%d", used, total)
	}
	checks := map[uint64]string{
		0:                  "2001:db8:1::",
		1:                  "2001:db8:1::1",
		1 << 32:            "2001:db8:1::1:0:0",
		1 << 63:            "2001:db8:1:0:8000::",
		math.MaxUint64 - 1: "2001:db8:1::ffff:ffff:ffff:fffe",
		math.MaxUint64:     "2001:db8:1::ffff:ffff:ffff:ffff",
	}
	for slot, a := range checks {
		if got := p.resource(slot); got != na(a) {
			t.Errorf("resource(%d) = %v, want %s", slot, got, a)
		}
		if got, ok := p.slotOf(na(a)); !ok || got != slot {
			t.Errorf("slotOf(%s) = %d,%v, want %d", a, got, ok, slot)
		}
	}
	if _, ok := p.slotOf(na("2001:db8:1:1::")); ok {
		t.Error("the next /64 maps into the pool")
	}
	// Next fit from the top slot: the top, then wrap to the bottom.
	p.cursor = math.MaxUint64
	r, top, ok := p.pick()
	if !ok || top != math.MaxUint64 || r != na(last.String()) {
		t.Fatalf("pick at the top = %v,%d,%v", r, top, ok)
	}
	r, slot, ok := p.pick()
	if !ok || slot != 0 || r != na(first.String()) {
		t.Fatalf("pick after the top = %v,%d,%v, want the first address", r, slot, ok)
	}
	// The top slot used (marked), a search from it wraps to the lowest free.
	p.mark(top, true)
	p.unreserve(top)
	p.cursor = math.MaxUint64
	if r, slot, ok := p.pick(); !ok || slot != 1 {
		t.Fatalf("pick from a used top slot = %v,%d,%v, want slot 1", r, slot, ok)
	}

	even := newAddrPool(nil, first, last, 0)
	odd := newAddrPool(nil, first, last, 1)
	if even.set.last != 1<<63-1 || odd.set.last != 1<<63-1 {
		t.Fatalf("/64 parity pools: %d and %d slots-1, want 2^63-1", even.set.last, odd.set.last)
	}
	if got := even.resource(1<<63 - 1); got != na("2001:db8:1::ffff:ffff:ffff:fffe") {
		t.Errorf("even top = %v", got)
	}
	if got := odd.resource(1<<63 - 1); got != na("2001:db8:1::ffff:ffff:ffff:ffff") {
		t.Errorf("odd top = %v", got)
	}
	if got := odd.resource(0); got != na("2001:db8:1::1") {
		t.Errorf("odd first = %v", got)
	}
}

// TestPDPool: a /40 delegating /56s has 65536 slots mapping to consecutive
// /56 prefixes; only /56 prefix resources inside the /40 map to slots.
func TestPDPool(t *testing.T) {
	p := newPDPool(nil, netip.MustParsePrefix("2001:db8:8000::/40"), 56)
	if p.set.last != 65535 {
		t.Fatalf("/40 by /56: last slot %d, want 65535", p.set.last)
	}
	for slot, want := range map[uint64]string{
		0:     "2001:db8:8000::/56",
		1:     "2001:db8:8000:100::/56",
		255:   "2001:db8:8000:ff00::/56",
		256:   "2001:db8:8001::/56",
		65535: "2001:db8:80ff:ff00::/56",
	} {
		if got := p.resource(slot); got != pd(want) {
			t.Errorf("resource(%d) = %v, want %s", slot, got, want)
		}
	}
	for slot := uint64(0); slot <= p.set.last; slot++ {
		r := p.resource(slot)
		if !r.Valid() || r.Type != fsm.IAPD || r.Len != 56 {
			t.Fatalf("resource(%d) = %v is not a valid /56", slot, r)
		}
		if got, ok := p.slotOf(r); !ok || got != slot {
			t.Fatalf("slotOf(resource(%d)) = %d,%v", slot, got, ok)
		}
	}
	for _, r := range []fsm.Resource{
		pd("2001:db8:8000::/48"),                      // other lengths
		pd("2001:db8:8000::/64"),                      //
		pd("2001:db8:8000::/40"),                      //
		pd("2001:db8:8100::/56"),                      // just after the pool
		pd("2001:db8:7fff:ff00::/56"),                 // just before
		na("2001:db8:8000::"),                         // an address
		{Type: fsm.IANA, Len: 56, IP: p.base.bytes()}, // right length, wrong type
	} {
		if slot, ok := p.slotOf(r); ok {
			t.Errorf("slotOf(%v) = %d, want rejected", r, slot)
		}
	}
	if p.contains(pd("2001:db8:8000::/48")) || !p.contains(pd("2001:db8:80ff:ff00::/56")) {
		t.Error("contains: wrong length accepted or last prefix rejected")
	}
	// A /32 delegating /96s: 2^64 slots.
	h := newPDPool(nil, netip.MustParsePrefix("2001:db8::/32"), 96)
	if h.set.last != math.MaxUint64 {
		t.Fatalf("/32 by /96: last slot %d, want 2^64-1", h.set.last)
	}
	if got := h.resource(math.MaxUint64); got != pd("2001:db8:ffff:ffff:ffff:ffff::/96") {
		t.Errorf("top /96 = %v", got)
	}
	if got, ok := h.slotOf(pd("2001:db8:0:1::/96")); !ok || got != 1<<32 {
		t.Errorf("slotOf(2001:db8:0:1::/96) = %d,%v, want 2^32", got, ok)
	}
	// Picks are /56s in order from the start.
	for i := uint64(0); i < 3; i++ {
		r, slot, ok := p.pick()
		if !ok || slot != i || r != p.resource(i) {
			t.Fatalf("pick %d = %v,%d,%v", i, r, slot, ok)
		}
	}
}

// TestPickNextFitAndReserve: pick is next-fit from a cursor, wraps once,
// skips used and reserved slots, and reserve refuses busy slots.
func TestPickNextFitAndReserve(t *testing.T) {
	p := newAddrPool(nil, addr("2001:db8:1::"), addr("2001:db8:1::9"), -1) // 10 slots
	pickSlot := func() uint64 {
		t.Helper()
		_, slot, ok := p.pick()
		if !ok {
			t.Fatal("pick failed")
		}
		return slot
	}
	p.mark(2, true)
	if got := []uint64{pickSlot(), pickSlot(), pickSlot()}; got[0] != 0 || got[1] != 1 || got[2] != 3 {
		t.Fatalf("first picks %v, want [0 1 3] (2 is used)", got)
	}
	// Releasing 0 does not make the cursor go back: next fit, not first fit.
	p.unreserve(0)
	if got := pickSlot(); got != 4 {
		t.Fatalf("after unreserving 0, pick = %d, want 4 (next fit)", got)
	}
	if p.reserve(5) != true || p.reserve(5) != false {
		t.Fatal("reserve(5) twice: want true then false")
	}
	if p.reserve(2) {
		t.Fatal("reserve of a used slot succeeded")
	}
	if p.reserve(1) {
		t.Fatal("reserve of a reserved (picked) slot succeeded")
	}
	// 5 is reserved: skipped.
	if got := []uint64{pickSlot(), pickSlot(), pickSlot(), pickSlot()}; got[0] != 6 || got[1] != 7 || got[2] != 8 || got[3] != 9 {
		t.Fatalf("picks %v, want [6 7 8 9]", got)
	}
	// Wrap: 0 is the only free, unreserved slot left.
	if got := pickSlot(); got != 0 {
		t.Fatalf("wrapped pick = %d, want 0", got)
	}
	if r, slot, ok := p.pick(); ok {
		t.Fatalf("exhausted pool picked %v (slot %d)", r, slot)
	}
	// A used slot freed by the observer becomes pickable.
	p.mark(2, false)
	if got := pickSlot(); got != 2 {
		t.Fatalf("after freeing 2, pick = %d", got)
	}
	if used, _ := p.usage(); used != 0 {
		t.Fatalf("usage counts %d used; reservations must not count", used)
	}
}

// TestPickConcurrent: 64 goroutines picking from a 1000-slot pool get 1000
// distinct slots between them, then nothing.
func TestPickConcurrent(t *testing.T) {
	p := newAddrPool(nil, addr("2001:db8:1::1000"), addr("2001:db8:1::13e7"), -1)
	if p.set.last != 999 {
		t.Fatalf("pool has %d slots, want 1000", p.set.last+1)
	}
	var (
		mu   sync.Mutex
		got  = map[uint64]fsm.Resource{}
		dups []uint64
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				r, slot, ok := p.pick()
				if !ok {
					return
				}
				mu.Lock()
				if _, dup := got[slot]; dup {
					dups = append(dups, slot)
				}
				got[slot] = r
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(dups) > 0 {
		t.Fatalf("slots handed out twice: %v", dups)
	}
	if len(got) != 1000 {
		t.Fatalf("%d distinct slots picked, want 1000", len(got))
	}
	addrs := map[fsm.Resource]bool{}
	for slot, r := range got {
		if p.resource(slot) != r || addrs[r] {
			t.Fatalf("slot %d: resource %v mismatched or duplicated", slot, r)
		}
		addrs[r] = true
	}
	if r, _, ok := p.pick(); ok {
		t.Fatalf("pick after exhaustion = %v", r)
	}
	// Half the transactions commit (mark) and all end (unreserve): exactly the
	// other half is pickable again.
	for slot := range got {
		if slot%2 == 0 {
			p.mark(slot, true)
		}
		p.unreserve(slot)
	}
	again := map[uint64]bool{}
	for {
		_, slot, ok := p.pick()
		if !ok {
			break
		}
		if slot%2 == 0 || again[slot] {
			t.Fatalf("re-picked slot %d (used or twice)", slot)
		}
		again[slot] = true
	}
	if len(again) != 500 {
		t.Fatalf("%d slots pickable after unreserve, want 500", len(again))
	}
}

// TestPoolIndexFind: find locates the pool of a resource among several NA
// and PD pools, and nothing between or outside them.
func TestPoolIndexFind(t *testing.T) {
	sn1, sn2 := &subnet{}, &subnet{}
	a := newAddrPool(sn1, addr("2001:db8:1::1000"), addr("2001:db8:1::1fff"), -1)
	b := newAddrPool(sn1, addr("2001:db8:1::3000"), addr("2001:db8:1::30ff"), -1)
	c := newAddrPool(sn2, addr("2001:db8:2::10"), addr("2001:db8:2::20"), -1)
	p1 := newPDPool(sn1, netip.MustParsePrefix("2001:db8:8000::/40"), 56)
	p2 := newPDPool(sn2, netip.MustParsePrefix("2001:db8:9000::/48"), 64)
	p3 := newPDPool(sn2, netip.MustParsePrefix("2001:db8:1::/48"), 60) // same addresses as NA pools, other type
	pools := []*pool{p2, c, p1, a, p3, b}                              // unsorted on purpose
	x := newPoolIndex(pools)
	for _, tc := range []struct {
		r    fsm.Resource
		want *pool
	}{
		{na("2001:db8:1::1000"), a},
		{na("2001:db8:1::1fff"), a},
		{na("2001:db8:1::1abc"), a},
		{na("2001:db8:1::fff"), nil},
		{na("2001:db8:1::2000"), nil},
		{na("2001:db8:1::3000"), b},
		{na("2001:db8:1::30ff"), b},
		{na("2001:db8:1::3100"), nil},
		{na("2001:db8:2::15"), c},
		{na("2001:db8:2::21"), nil},
		{na("::"), nil},
		{na("ffff::"), nil},
		{pd("2001:db8:8000::/56"), p1},
		{pd("2001:db8:80ff:ff00::/56"), p1},
		{pd("2001:db8:8000::/48"), nil}, // wrong length for p1
		{pd("2001:db8:9000:5::/64"), p2},
		{pd("2001:db8:9001::/64"), nil},
		{pd("2001:db8:1::/60"), p3},
		{pd("2001:db8:1:10::/60"), p3},
		{pd("2001:db8:1::1000/128"), nil},
		{pd("2001:db8:7000::/56"), nil},
		{na("2001:db8:8000::1"), nil}, // an address inside a PD pool's range
	} {
		if got := x.find(tc.r); got != tc.want {
			t.Errorf("find(%v) = %p, want %p", tc.r, got, tc.want)
		}
	}
	// Against a linear scan, on random resources near the pools.
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20000; i++ {
		p := pools[rng.IntN(len(pools))]
		off := u128{0, rng.Uint64N(1 << 20)}
		base := p.first.sub(u128{0, 1 << 19})
		ip := base.add(off.shl(p.shift))
		r := fsm.Resource{Type: p.typ, Len: p.plen, IP: ip.bytes()}
		if rng.IntN(4) == 0 {
			r.Type, r.Len = fsm.IANA, 128
		}
		if r.Type == fsm.IAPD {
			r = fsm.PrefixResource(r.Prefix())
		}
		var want *pool
		for _, q := range pools {
			if q.contains(r) {
				want = q
			}
		}
		if got := x.find(r); got != want {
			t.Fatalf("find(%v) = %p, linear scan %p", r, got, want)
		}
	}
}
