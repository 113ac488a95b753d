package server

import "math/bits"

// slotset records which of the slots 0..last of a pool are taken, and finds
// a free one in O(log64 n) without scanning: it is a 64-ary tree of bit masks
// in which a fully used subtree collapses into one bit and a fully free one
// is absent. Memory is proportional to the fragmented part of the pool, so a
// pool of 2^64 addresses costs nothing until it is used, and a densely used
// one costs little.
//
// A slotset is not safe for concurrent use; the pool that owns it locks.
type slotset struct {
	last   uint64 // highest valid slot
	height int    // levels above the leaves; slots per root child = 64^height
	root   *snode
	used   uint64
}

// snode: at the leaf level (level 0) bit c of full is slot c. Above, bit c of
// full means child c is entirely used (and kids[c] is nil); kids[c] == nil
// with the bit clear means child c is entirely free.
type snode struct {
	full uint64
	kids *[64]*snode
}

const allOnes = ^uint64(0)

func newSlotset(last uint64) *slotset {
	h := 0
	for span := uint64(64); span != 0 && last >= span; span <<= 6 {
		h++
		if span > allOnes>>6 {
			break
		}
	}
	return &slotset{last: last, height: h, root: &snode{}}
}

// newSlotsetFull returns a slotset with every slot taken, in O(1) memory
// (the root's children are all collapsed full subtrees).
func newSlotsetFull(last uint64) *slotset {
	s := newSlotset(last)
	s.root.full = allOnes
	s.used = last + 1
	return s
}

// digit returns the child index of slot at level l.
func digit(slot uint64, l int) int { return int(slot>>(6*uint(l))) & 63 }

// Has reports whether slot is taken.
func (s *slotset) Has(slot uint64) bool {
	n := s.root
	for l := s.height; l >= 0; l-- {
		c := digit(slot, l)
		if n.full&(1<<c) != 0 {
			return true
		}
		if l == 0 || n.kids == nil || n.kids[c] == nil {
			return false
		}
		n = n.kids[c]
	}
	return false
}

// Set marks slot taken; it reports whether it was free.
func (s *slotset) Set(slot uint64) bool {
	if slot > s.last || s.Has(slot) {
		return false
	}
	var path [12]*snode
	var idx [12]int
	n := s.root
	for l := s.height; l > 0; l-- {
		c := digit(slot, l)
		if n.kids == nil {
			n.kids = new([64]*snode)
		}
		if n.kids[c] == nil {
			n.kids[c] = &snode{}
		}
		path[l], idx[l] = n, c
		n = n.kids[c]
	}
	n.full |= 1 << digit(slot, 0)
	// Collapse full children upwards.
	for l := 1; l <= s.height && n.full == allOnes && n.kids == nil; l++ {
		p, c := path[l], idx[l]
		p.kids[c] = nil
		p.full |= 1 << c
		if p.kids != nil && allNil(p.kids) {
			p.kids = nil
		}
		n = p
	}
	s.used++
	return true
}

// Clear marks slot free; it reports whether it was taken.
func (s *slotset) Clear(slot uint64) bool {
	if slot > s.last || !s.Has(slot) {
		return false
	}
	var path [12]*snode
	var idx [12]int
	n := s.root
	for l := s.height; l > 0; l-- {
		c := digit(slot, l)
		if n.full&(1<<c) != 0 {
			// Expand a collapsed full child: a node whose children are all full.
			n.full &^= 1 << c
			if n.kids == nil {
				n.kids = new([64]*snode)
			}
			n.kids[c] = &snode{full: allOnes}
		}
		path[l], idx[l] = n, c
		n = n.kids[c]
	}
	n.full &^= 1 << digit(slot, 0)
	// Parents lose their full bit (already cleared when expanding); drop empty children.
	for l := 1; l <= s.height && n.full == 0 && (n.kids == nil || allNil(n.kids)); l++ {
		p, c := path[l], idx[l]
		p.kids[c] = nil
		if allNil(p.kids) {
			p.kids = nil
		}
		n = p
	}
	s.used--
	return true
}

func allNil(k *[64]*snode) bool {
	for _, x := range k {
		if x != nil {
			return false
		}
	}
	return true
}

// FindFree returns the lowest free slot >= from, if any.
func (s *slotset) FindFree(from uint64) (uint64, bool) {
	if from > s.last {
		return 0, false
	}
	slot, ok := s.find(s.root, s.height, from)
	if !ok || slot > s.last {
		return 0, false
	}
	return slot, true
}

// find searches the subtree n at level l (whose first slot has the high
// digits of from) for the lowest free slot >= from.
func (s *slotset) find(n *snode, l int, from uint64) (uint64, bool) {
	c0 := digit(from, l)
	base := from &^ (uint64(1)<<(6*uint(l)+6) - 1)
	if 6*uint(l)+6 >= 64 {
		base = 0
	}
	span := uint64(1) << (6 * uint(l))
	for c := c0; c < 64; {
		free := ^n.full & (allOnes << uint(c))
		if free == 0 {
			return 0, false
		}
		c = bits.TrailingZeros64(free)
		if uint64(c) > (s.last-base)/span {
			// Child c starts beyond last (at the root of a 2^64 set its
			// base would wrap around to 0): there is nothing more to find.
			return 0, false
		}
		childBase := base + uint64(c)*span
		start := childBase
		if c == c0 {
			start = from
		}
		if l == 0 {
			return childBase, true
		}
		if n.kids == nil || n.kids[c] == nil {
			return start, true // entirely free
		}
		if slot, ok := s.find(n.kids[c], l-1, start); ok {
			return slot, true
		}
		c++
	}
	return 0, false
}

// Used returns the number of taken slots.
func (s *slotset) Used() uint64 { return s.used }
