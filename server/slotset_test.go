package server

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"testing"
)

// slotModel is the naive reference for a slotset: taken slots are kept in
// bitmaps over a few disjoint windows of the slot space; every slot outside
// the windows is free (so a 2^64 set can be modelled around chosen places).
type slotModel struct {
	last uint64
	wins []modelWin // sorted by start, disjoint
	used uint64
}

type modelWin struct {
	start, n uint64 // covers start .. start+n-1
	bits     []uint64
}

func newSlotModel(last uint64, windows ...[2]uint64) *slotModel {
	m := &slotModel{last: last}
	for _, w := range windows {
		if w[1] == 0 || w[0]+(w[1]-1) > last || w[0]+(w[1]-1) < w[0] {
			panic(fmt.Sprintf("bad model window %v", w))
		}
		m.wins = append(m.wins, modelWin{start: w[0], n: w[1], bits: make([]uint64, (w[1]+63)/64)})
	}
	sort.Slice(m.wins, func(i, j int) bool { return m.wins[i].start < m.wins[j].start })
	for i := 1; i < len(m.wins); i++ {
		p := m.wins[i-1]
		if p.start+p.n > m.wins[i].start {
			panic("overlapping model windows")
		}
	}
	return m
}

// win returns the window holding slot, or nil.
func (m *slotModel) win(slot uint64) *modelWin {
	i := sort.Search(len(m.wins), func(i int) bool { return m.wins[i].start+(m.wins[i].n-1) >= slot })
	if i < len(m.wins) && m.wins[i].start <= slot {
		return &m.wins[i]
	}
	return nil
}

func (m *slotModel) has(slot uint64) bool {
	w := m.win(slot)
	if w == nil {
		return false
	}
	o := slot - w.start
	return w.bits[o/64]&(1<<(o%64)) != 0
}

func (m *slotModel) set(slot uint64) bool {
	w := m.win(slot)
	if w == nil {
		panic("model: set outside the windows")
	}
	o := slot - w.start
	if w.bits[o/64]&(1<<(o%64)) != 0 {
		return false
	}
	w.bits[o/64] |= 1 << (o % 64)
	m.used++
	return true
}

func (m *slotModel) clear(slot uint64) bool {
	w := m.win(slot)
	if w == nil || w.bits[(slot-w.start)/64]&(1<<((slot-w.start)%64)) == 0 {
		return false
	}
	o := slot - w.start
	w.bits[o/64] &^= 1 << (o % 64)
	m.used--
	return true
}

// findFree is the lowest free slot >= from (and <= last).
func (m *slotModel) findFree(from uint64) (uint64, bool) {
	x := from
	for x <= m.last {
		w := m.win(x)
		if w == nil {
			return x, true
		}
		o := x - w.start
		for o < w.n {
			word := ^w.bits[o/64] >> (o % 64)
			if word != 0 {
				o += uint64(bits.TrailingZeros64(word))
				if o < w.n {
					return w.start + o, true
				}
				break
			}
			o = (o/64 + 1) * 64
		}
		end := w.start + w.n // first slot after the window
		if end == 0 {        // the window runs to 2^64-1
			return 0, false
		}
		x = end
	}
	return 0, false
}

// treeStats walks a slotset and checks its canonical form: no collapsible
// (entirely used) child is kept as a node, no entirely free child is kept,
// no kids array is all nil, nothing is marked beyond last. It returns the
// number of nodes and the number of used slots the tree encodes.
func treeStats(t testing.TB, s *slotset) (nodes int, used uint64) {
	t.Helper()
	var walk func(n *snode, l int, base uint64, root bool)
	walk = func(n *snode, l int, base uint64, root bool) {
		nodes++
		span := uint64(1) << (6 * uint(l))
		if l == 0 {
			if n.kids != nil {
				t.Fatalf("leaf at base %d has kids", base)
			}
			used += uint64(bits.OnesCount64(n.full))
			if !root && n.full == 0 {
				t.Fatalf("empty leaf kept at base %d", base)
			}
			if !root && n.full == allOnes {
				t.Fatalf("full leaf kept (not collapsed) at base %d", base)
			}
		} else {
			if n.kids != nil {
				empty := true
				for _, k := range n.kids {
					empty = empty && k == nil
				}
				if empty {
					t.Fatalf("all-nil kids array kept at level %d base %d", l, base)
				}
			}
			if !root && n.full == allOnes && n.kids == nil {
				t.Fatalf("full node kept (not collapsed) at level %d base %d", l, base)
			}
			if !root && n.full == 0 && n.kids == nil {
				t.Fatalf("empty node kept at level %d base %d", l, base)
			}
			for c := 0; c < 64; c++ {
				childBase := base + uint64(c)*span
				var kid *snode
				if n.kids != nil {
					kid = n.kids[c]
				}
				if n.full&(1<<c) != 0 {
					if kid != nil {
						t.Fatalf("level %d base %d child %d is both full and a node", l, base, c)
					}
					used += span
					continue
				}
				if kid != nil {
					walk(kid, l-1, childBase, false)
				}
			}
		}
	}
	walk(s.root, s.height, 0, true)
	return nodes, used
}

// checkAgainstModel compares counts, the encoded tree and Has/FindFree at
// the probe slots.
func checkAgainstModel(t *testing.T, s *slotset, m *slotModel, probes []uint64) {
	t.Helper()
	if s.Used() != m.used {
		t.Fatalf("Used() = %d, model %d", s.Used(), m.used)
	}
	_, enc := treeStats(t, s)
	if enc != m.used {
		t.Fatalf("tree encodes %d used slots, model %d", enc, m.used)
	}
	for _, p := range probes {
		if got, want := s.Has(p), m.has(p); got != want {
			t.Fatalf("Has(%d) = %v, model %v", p, got, want)
		}
		got, gok := s.FindFree(p)
		want, wok := m.findFree(p)
		if got != want || gok != wok {
			t.Fatalf("FindFree(%d) = %d,%v; model %d,%v", p, got, gok, want, wok)
		}
	}
}

type slotsetCase struct {
	name    string
	last    uint64
	windows [][2]uint64 // model windows; the random slots are drawn from them
	ops     int
}

func slotsetCases() []slotsetCase {
	const top = math.MaxUint64
	const w = 3 * 4096 // three level-2 subtrees wide
	cases := []slotsetCase{}
	for _, last := range []uint64{0, 1, 63, 64, 65, 4095, 4096} {
		cases = append(cases, slotsetCase{name: fmt.Sprintf("last=%d", last), last: last,
			windows: [][2]uint64{{0, last + 1}}, ops: 4000 + int(last)*4})
	}
	cases = append(cases,
		slotsetCase{name: "last=2^20-1", last: 1<<20 - 1, windows: [][2]uint64{{0, 1 << 20}}, ops: 60000},
		slotsetCase{name: "last=2^64-1", last: top, ops: 60000, windows: [][2]uint64{
			{0, w},                   // near 0
			{1<<63 - w/2, w},         // straddling 2^63: every digit rolls over
			{1<<62 + 1<<61 - 7, 200}, // a small unaligned cluster in the middle
			{top - w + 1, w},         // the very top, ending at 2^64-1
		}},
	)
	return cases
}

// TestSlotsetModel runs random Set/Clear/Has/FindFree sequences against the
// naive model, in phases that fill and empty the clusters so subtrees
// collapse and expand at every level.
func TestSlotsetModel(t *testing.T) {
	for ci, tc := range slotsetCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(ci)+1, 0x51075e7))
			s := newSlotset(tc.last)
			m := newSlotModel(tc.last, tc.windows...)
			// A hot zone (inside one window) concentrates operations, so even
			// a 2^20 set gets full leaves and full level-1 subtrees.
			hotW, hotStart, hotLen := 0, uint64(0), uint64(0)
			moveHot := func() {
				hotW = rng.IntN(len(m.wins))
				win := m.wins[hotW]
				hotLen = min(win.n, 8192)
				hotStart = win.start + rng.Uint64N(win.n-hotLen+1)
			}
			moveHot()
			randSlot := func() uint64 {
				if rng.IntN(10) < 8 {
					return hotStart + rng.Uint64N(hotLen)
				}
				win := m.wins[rng.IntN(len(m.wins))]
				return win.start + rng.Uint64N(win.n)
			}
			randFrom := func() uint64 {
				switch rng.IntN(8) {
				case 0: // anywhere at all
					if tc.last == math.MaxUint64 {
						return rng.Uint64()
					}
					return rng.Uint64N(tc.last + 1)
				case 1: // just before or after a window
					win := m.wins[rng.IntN(len(m.wins))]
					d := rng.Uint64N(70)
					if rng.IntN(2) == 0 {
						return win.start - min(d, win.start)
					}
					end := win.start + win.n - 1
					return end + min(d, tc.last-end)
				case 2:
					return tc.last
				}
				return randSlot()
			}
			var probes []uint64
			setBias := 9
			for i := 0; i < tc.ops; i++ {
				if i%3000 == 0 {
					setBias = []int{9, 8, 2, 5, 10, 1}[(i/3000)%6]
					moveHot()
				}
				slot := randSlot()
				switch op := rng.IntN(10); {
				case op < 7 && rng.IntN(10) < setBias:
					if got, want := s.Set(slot), m.set(slot); got != want {
						t.Fatalf("op %d: Set(%d) = %v, model %v", i, slot, got, want)
					}
				case op < 7:
					if got, want := s.Clear(slot), m.clear(slot); got != want {
						t.Fatalf("op %d: Clear(%d) = %v, model %v", i, slot, got, want)
					}
				case op < 8:
					if got, want := s.Has(slot), m.has(slot); got != want {
						t.Fatalf("op %d: Has(%d) = %v, model %v", i, slot, got, want)
					}
				default:
					from := randFrom()
					got, gok := s.FindFree(from)
					want, wok := m.findFree(from)
					if got != want || gok != wok {
						t.Fatalf("op %d: FindFree(%d) = %d,%v; model %d,%v (used %d)", i, from, got, gok, want, wok, m.used)
					}
					if gok && (got < from || got > tc.last) {
						t.Fatalf("op %d: FindFree(%d) = %d outside [from, last=%d]", i, from, got, tc.last)
					}
				}
				if len(probes) < 64 || rng.IntN(50) == 0 {
					probes = append(probes, randFrom())
					if len(probes) > 256 {
						probes = probes[1:]
					}
				}
				if i%997 == 0 {
					checkAgainstModel(t, s, m, probes)
				}
			}
			checkAgainstModel(t, s, m, probes)
			// Setting and clearing beyond last never works.
			if tc.last != math.MaxUint64 {
				for _, x := range []uint64{tc.last + 1, tc.last + 64, math.MaxUint64} {
					if s.Set(x) || s.Clear(x) {
						t.Fatalf("slot %d beyond last %d was accepted", x, tc.last)
					}
					if _, ok := s.FindFree(x); ok {
						t.Fatalf("FindFree(%d) beyond last %d found a slot", x, tc.last)
					}
				}
			}
			// Emptying everything returns the tree to a bare root.
			for _, win := range m.wins {
				for o := uint64(0); o < win.n; o++ {
					if m.has(win.start + o) {
						if !s.Clear(win.start + o) {
							t.Fatalf("Clear(%d) of a used slot failed", win.start+o)
						}
						m.clear(win.start + o)
					}
				}
			}
			if nodes, used := treeStats(t, s); nodes != 1 || used != 0 || s.Used() != 0 {
				t.Fatalf("after clearing everything: %d nodes, %d encoded used, Used() %d", nodes, used, s.Used())
			}
		})
	}
}

// TestSlotsetFillCompletely fills small sets in random order: FindFree then
// fails from everywhere, and finds exactly the one slot freed again.
func TestSlotsetFillCompletely(t *testing.T) {
	for _, last := range []uint64{0, 1, 2, 63, 64, 65, 127, 128, 4095, 4096, 4097, 64*64*64 - 1, 64 * 64 * 64} {
		rng := rand.New(rand.NewPCG(last, 7))
		s := newSlotset(last)
		perm := make([]uint64, last+1)
		for i := range perm {
			perm[i] = uint64(i)
		}
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		for i, x := range perm {
			if i == len(perm)-1 {
				// One slot left: it is the only free one.
				if got, ok := s.FindFree(0); !ok || got != x {
					t.Fatalf("last=%d: one free slot %d, FindFree(0) = %d,%v", last, x, got, ok)
				}
			}
			if !s.Set(x) {
				t.Fatalf("last=%d: Set(%d) of a free slot failed", last, x)
			}
			if s.Set(x) {
				t.Fatalf("last=%d: Set(%d) twice succeeded", last, x)
			}
		}
		if s.Used() != last+1 {
			t.Fatalf("last=%d: Used() = %d after filling", last, s.Used())
		}
		for _, from := range []uint64{0, last / 2, last, last + 1} {
			if got, ok := s.FindFree(from); ok {
				t.Fatalf("last=%d: full set, FindFree(%d) = %d", last, from, got)
			}
		}
		// A full set collapses: at most the partial rightmost path remains
		// (a set of exactly 64^k slots is its root alone).
		nodes, used := treeStats(t, s)
		if used != last+1 || nodes > s.height+1 || (bits.OnesCount64(last+1) == 1 && bits.TrailingZeros64(last+1)%6 == 0 && nodes != 1) {
			t.Fatalf("last=%d: full set has %d nodes encoding %d used", last, nodes, used)
		}
		hole := rng.Uint64N(last + 1)
		if !s.Clear(hole) || s.Has(hole) {
			t.Fatalf("last=%d: Clear(%d) failed", last, hole)
		}
		if got, ok := s.FindFree(0); !ok || got != hole {
			t.Fatalf("last=%d: hole %d, FindFree(0) = %d,%v", last, hole, got, ok)
		}
		if got, ok := s.FindFree(hole); !ok || got != hole {
			t.Fatalf("last=%d: hole %d, FindFree(hole) = %d,%v", last, hole, got, ok)
		}
		if got, ok := s.FindFree(hole + 1); ok {
			t.Fatalf("last=%d: hole %d, FindFree(hole+1) = %d", last, hole, got)
		}
		if s.Used() != last {
			t.Fatalf("last=%d: Used() = %d after one Clear", last, s.Used())
		}
	}
}

// TestSlotsetHugeEdges pins the corners of a 2^64 slot space: the topmost
// slot, the 2^63 boundary, and searches that run off the end.
func TestSlotsetHugeEdges(t *testing.T) {
	const top = math.MaxUint64
	s := newSlotset(top)
	if got, ok := s.FindFree(top); !ok || got != top {
		t.Fatalf("empty: FindFree(top) = %d,%v", got, ok)
	}
	if !s.Set(top) || !s.Has(top) || s.Has(top-1) || s.Has(0) {
		t.Fatal("Set(2^64-1) / Has")
	}
	// The only slot >= top is taken: there is nothing to find, and certainly
	// not a slot below from.
	if got, ok := s.FindFree(top); ok {
		t.Fatalf("FindFree(2^64-1) with 2^64-1 taken = %d, want none", got)
	}
	if got, ok := s.FindFree(top - 1); !ok || got != top-1 {
		t.Fatalf("FindFree(2^64-2) = %d,%v", got, ok)
	}
	// Fill the whole top level-3 subtree (2^18 slots): it collapses, and
	// no search starting inside it finds anything.
	const blk = 1 << 18
	for x := uint64(top - blk + 1); ; x++ {
		s.Set(x)
		if x == top {
			break
		}
	}
	if s.Used() != blk {
		t.Fatalf("Used() = %d, want %d", s.Used(), blk)
	}
	for _, from := range []uint64{top - blk + 1, top - blk/2, top - 63, top} {
		if got, ok := s.FindFree(from); ok {
			t.Fatalf("top block full: FindFree(%d) = %d, want none", from, got)
		}
	}
	if got, ok := s.FindFree(top - blk); !ok || got != top-blk {
		t.Fatalf("FindFree just below the full top block = %d,%v", got, ok)
	}
	if nodes, _ := treeStats(t, s); nodes > 12 {
		t.Fatalf("full top block kept %d nodes, want it collapsed", nodes)
	}
	// Straddle 2^63: a run of used slots across it is skipped.
	for x := uint64(1<<63 - 100); x < 1<<63+100; x++ {
		s.Set(x)
	}
	if got, ok := s.FindFree(1<<63 - 100); !ok || got != 1<<63+100 {
		t.Fatalf("FindFree across 2^63 = %d,%v, want %d", got, ok, uint64(1<<63+100))
	}
	if !s.Clear(1<<63) || s.Has(1<<63) {
		t.Fatal("Clear(2^63)")
	}
	if got, ok := s.FindFree(1<<63 - 100); !ok || got != 1<<63 {
		t.Fatalf("FindFree after clearing 2^63 = %d,%v", got, ok)
	}
	if !s.Clear(top) {
		t.Fatal("Clear(top)")
	}
	if got, ok := s.FindFree(top - blk + 1); !ok || got != top {
		t.Fatalf("after clearing the top slot, FindFree = %d,%v", got, ok)
	}
}

// TestSlotsetSequentialMemory: a million sequential allocations at the
// start of a 2^64 pool collapse into a handful of nodes.
func TestSlotsetSequentialMemory(t *testing.T) {
	const n = 1_000_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := newSlotset(math.MaxUint64)
	for x := uint64(0); x < n; x++ {
		if !s.Set(x) {
			t.Fatalf("Set(%d) failed", x)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	nodes, used := treeStats(t, s)
	t.Logf("1e6 sequential slots: %d nodes, heap growth %d bytes", nodes, growth)
	if used != n || s.Used() != n {
		t.Fatalf("encoded %d, Used() %d, want %d", used, s.Used(), n)
	}
	// Without collapse this would be ~15,600 leaves plus their parents
	// (several MB); with it, one partial node per level.
	if nodes > 3*(s.height+1) {
		t.Fatalf("%d nodes for a sequential run, want at most %d", nodes, 3*(s.height+1))
	}
	if growth > 1<<20 {
		t.Fatalf("heap grew by %d bytes for a sequential run, want < 1 MiB", growth)
	}
	if got, ok := s.FindFree(0); !ok || got != n {
		t.Fatalf("FindFree(0) = %d,%v, want %d", got, ok, n)
	}
	// Punch holes into the collapsed run (expanding it), find them in order,
	// then refill: it collapses again.
	rng := rand.New(rand.NewPCG(1, 2))
	holes := map[uint64]bool{}
	for len(holes) < 1000 {
		x := rng.Uint64N(n)
		if !holes[x] {
			holes[x] = true
			if !s.Clear(x) {
				t.Fatalf("Clear(%d) inside the run failed", x)
			}
		}
	}
	sorted := make([]uint64, 0, len(holes))
	for x := range holes {
		sorted = append(sorted, x)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	from := uint64(0)
	for _, want := range sorted {
		got, ok := s.FindFree(from)
		if !ok || got != want {
			t.Fatalf("FindFree(%d) = %d,%v, want hole %d", from, got, ok, want)
		}
		from = got + 1
	}
	if got, ok := s.FindFree(from); !ok || got != n {
		t.Fatalf("after the last hole FindFree = %d,%v, want %d", got, ok, n)
	}
	for _, x := range sorted {
		s.Set(x)
	}
	if again, _ := treeStats(t, s); again != nodes {
		t.Fatalf("refilled run has %d nodes, had %d before the holes", again, nodes)
	}
	runtime.KeepAlive(s)
}

var (
	denseOnce   sync.Once
	denseSet    *slotset
	denseStarts []uint64
)

// denseSlotset is a PD-like pool of 2^24 slots, 99% used with random holes
// (built once: FindFree does not change it).
func denseSlotset() (*slotset, []uint64) {
	denseOnce.Do(func() {
		const size = 1 << 24
		s := newSlotset(size - 1)
		for x := uint64(0); x < size; x++ {
			s.Set(x)
		}
		rng := rand.New(rand.NewPCG(3, 4))
		for s.Used() > size-size/100 {
			s.Clear(rng.Uint64N(size))
		}
		denseSet = s
		denseStarts = make([]uint64, 1<<16)
		for i := range denseStarts {
			denseStarts[i] = rng.Uint64N(size)
		}
	})
	return denseSet, denseStarts
}

// BenchmarkFindFreeDense: FindFree from random starts in a 2^24-slot pool
// that is 99% used.
func BenchmarkFindFreeDense(b *testing.B) {
	s, starts := denseSlotset()
	b.ReportAllocs()
	b.ResetTimer()
	var sink uint64
	for i := 0; i < b.N; i++ {
		from := starts[i&(len(starts)-1)]
		got, ok := s.FindFree(from)
		if !ok {
			got, ok = s.FindFree(0)
		}
		if !ok {
			b.Fatalf("FindFree(%d) found nothing in a 99%% used set", from)
		}
		sink += got
	}
	b.StopTimer()
	// The answers are right: free, and the lowest free slot >= from.
	for _, from := range starts[:256] {
		got, ok := s.FindFree(from)
		if !ok || s.Has(got) || got < from {
			b.Fatalf("FindFree(%d) = %d,%v", from, got, ok)
		}
		for x := from; x < got; x++ {
			if !s.Has(x) {
				b.Fatalf("FindFree(%d) = %d skipped free slot %d", from, got, x)
			}
		}
	}
	_ = sink
}

func TestSlotsetFull(t *testing.T) {
	for _, last := range []uint64{0, 63, 64, 4095, 1<<24 - 1, 1<<40 - 1} {
		s := newSlotsetFull(last)
		if _, ok := s.FindFree(0); ok || s.Used() != last+1 || !s.Has(last) {
			t.Fatalf("last=%d: a full set has a free slot or wrong count (%d)", last, s.Used())
		}
		mid := last / 2
		if !s.Clear(mid) {
			t.Fatalf("last=%d: Clear(%d) on a full set reported it free", last, mid)
		}
		if got, ok := s.FindFree(0); !ok || got != mid || s.Used() != last {
			t.Fatalf("last=%d: after Clear(%d): FindFree = %d,%v used %d", last, mid, got, ok, s.Used())
		}
		s.Set(mid)
		if _, ok := s.FindFree(0); ok {
			t.Fatalf("last=%d: full again but FindFree found a slot", last)
		}
	}
}
