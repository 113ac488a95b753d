package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// Property tests: random command sequences against a simple reference model,
// snapshot/restore at a random cut, determinism, and encode/decode transparency.

const (
	propSeeds    = 6
	propCommands = 2500
)

// model is a deliberately naive reference implementation of the fsm semantics.
type model struct {
	bindings   map[Resource]Binding
	serverDUID []byte
	endpoint   EndpointState
}

func newModel() *model { return &model{bindings: map[Resource]Binding{}} }

// apply returns the error kind the entry must produce (nil, ErrConflict,
// ErrInvalidCommand or ErrCorruptEntry).
func (m *model) apply(e Entry) error {
	c := e.Cmd
	if c == nil {
		return ErrCorruptEntry
	}
	switch c.Type {
	case CmdTxn:
		seen := map[Resource]bool{}
		for _, op := range c.Ops {
			if seen[op.Resource] {
				return ErrInvalidCommand
			}
			seen[op.Resource] = true
			if op.IfRev != AnyRev {
				if m.bindings[op.Resource].Rev != op.IfRev { // absent reads as Rev 0
					return ErrConflict
				}
			}
		}
		for _, op := range c.Ops {
			if op.Delete {
				delete(m.bindings, op.Resource)
				continue
			}
			b := op.Binding
			b.Rev = e.Index
			m.bindings[op.Resource] = b
		}
	case CmdSetServerDUID:
		if m.serverDUID == nil {
			m.serverDUID = bytes.Clone(c.ServerDUID)
		}
	case CmdSetEndpoint:
		m.endpoint = *c.Endpoint
	}
	return nil
}

func (m *model) check(t *testing.T, s *State) {
	t.Helper()
	v := s.View()
	if v.Len() != len(m.bindings) {
		t.Fatalf("state has %d bindings, model %d", v.Len(), len(m.bindings))
	}
	for r, want := range m.bindings {
		if got, ok := v.Get(r); !ok || got != want {
			t.Fatalf("Get(%v) = %+v, %v; model %+v", r, got, ok, want)
		}
	}
	if !bytes.Equal(v.ServerDUID(), m.serverDUID) || v.Endpoint() != m.endpoint {
		t.Fatalf("metadata %x %+v; model %x %+v", v.ServerDUID(), v.Endpoint(), m.serverDUID, m.endpoint)
	}
}

// gen generates random, encodable command sequences over a small resource
// pool, so that replacements, deletes and precondition conflicts are common.
type gen struct {
	r     *rand.Rand
	res   []Resource
	duids []string
	m     *model // the generator's own model, for preconditions that hold
	now   int64  // Unix seconds
}

func newGen(seed uint64) *gen {
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), m: newModel(), now: 1_700_000_000}
	for i := 0; i < 40; i++ {
		g.res = append(g.res, na(fmt.Sprintf("2001:db8::%x", i+1)))
	}
	for i := 0; i < 10; i++ {
		g.res = append(g.res, ta(fmt.Sprintf("2001:db8:1::%x", i+1)))
	}
	for i := 0; i < 20; i++ {
		g.res = append(g.res, pd(fmt.Sprintf("2001:db8:%x::/%d", 0x100+i, 48+8*(i%3))))
	}
	for i := 0; i < 12; i++ {
		g.duids = append(g.duids, fmt.Sprintf("\x00\x01\x00\x01\x2c\x5e\x7f\x10\x00\x11\x22\x33\x44%c", 'a'+i))
	}
	return g
}

func (g *gen) binding(r Resource) Binding {
	st := Status(1 + g.r.IntN(int(maxStatus)))
	b := Binding{Resource: r, Status: st, IAID: uint32(g.r.IntN(4))}
	if st == StatusActive || g.r.IntN(3) > 0 {
		b.DUID = g.duids[g.r.IntN(len(g.duids))]
	}
	b.Flags = Flags(g.r.IntN(4))
	if g.r.IntN(3) == 0 {
		b.PartnerLifetime = g.now + int64(g.r.IntN(7200))
	}
	b.PreferredLifetime = uint32(g.r.IntN(3) * 1800)
	b.ValidLifetime = b.PreferredLifetime + uint32(g.r.IntN(2)*1800)
	b.CLTT = g.now - int64(g.r.IntN(100))
	b.StartTimeOfState = g.now
	if g.r.IntN(8) > 0 {
		b.StateExpirationTime = g.now + int64(g.r.IntN(50)) // many ties
	}
	b.AckedPartnerLifetime = int64(g.r.IntN(2)) * (g.now - 10)
	b.ExpirationTime = int64(g.r.IntN(2)) * (g.now + 3600)
	b.PartnerRawCLTT = int64(g.r.IntN(2)) * (g.now - 5)
	return b
}

// entries returns n entries. It applies them to its own model so that
// preconditions can be made to hold or to fail on purpose.
func (g *gen) entries(n int) []Entry {
	out := make([]Entry, 0, n)
	term := uint64(1)
	for i := 0; i < n; i++ {
		index := uint64(i + 1)
		g.now += int64(g.r.IntN(3))
		if g.r.IntN(200) == 0 {
			term++
		}
		e := Entry{Index: index, Term: term}
		c := &Command{Time: g.now*1e9 + int64(g.r.IntN(1e9)), Origin: Origin(g.r.IntN(7))}
		switch k := g.r.IntN(100); {
		case k < 85:
			c.Type = CmdTxn
			nops := 1 + g.r.IntN(4)
			used := map[Resource]bool{}
			for j := 0; j < nops; j++ {
				r := g.res[g.r.IntN(len(g.res))]
				if used[r] {
					continue
				}
				used[r] = true
				op := Op{Resource: r, IfRev: AnyRev}
				switch p := g.r.IntN(20); {
				case p < 7:
					op.IfRev = g.m.bindings[r].Rev // holds
				case p < 9:
					op.IfRev = 0 // holds if absent
				case p < 10:
					op.IfRev = uint64(g.r.IntN(int(index))) // probably fails
				}
				if g.r.IntN(4) == 0 {
					op.Delete = true
				} else {
					op.Binding = g.binding(r)
				}
				c.Ops = append(c.Ops, op)
			}
			if g.r.IntN(40) == 0 { // a duplicate resource: invalid txn
				dup := c.Ops[0]
				dup.IfRev = AnyRev
				c.Ops = append(c.Ops, dup)
			}
		case k < 88:
			c.Type = CmdSetServerDUID
			c.ServerDUID = []byte(g.duids[g.r.IntN(len(g.duids))])
		case k < 93:
			c.Type = CmdSetEndpoint
			c.Endpoint = &EndpointState{State: uint8(g.r.IntN(11)), PreviousState: uint8(g.r.IntN(11)),
				StateSince: g.now, PartnerState: uint8(g.r.IntN(11)), PartnerStateSince: g.now - 1,
				LastContact: g.now, LastOperating: g.now, PartnerDownTime: int64(g.r.IntN(2)) * g.now,
				Communicated: g.r.IntN(2) == 0, HeldInStartup: g.r.IntN(2) == 0}
		case k < 97:
			c.Type = CmdNoop
			c.Note = fmt.Sprintf("mark %d", i)
		default:
			c = nil
			e.DecodeErr = fmt.Errorf("%w: test damage", ErrCorruptEntry)
		}
		e.Cmd = c
		g.m.apply(e)
		out = append(out, e)
	}
	return out
}

func applyAll(s *State, es []Entry) []*Result {
	out := make([]*Result, 0, len(es))
	for i := 0; i < len(es); {
		// Mix Apply and ApplyBatch.
		if n := 1 + i%7; n > 1 && i+n <= len(es) {
			out = append(out, s.ApplyBatch(es[i:i+n])...)
			i += n
			continue
		}
		out = append(out, s.Apply(es[i]))
		i++
	}
	return out
}

func TestPropertyModel(t *testing.T) {
	for seed := uint64(1); seed <= propSeeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			es := newGen(seed).entries(propCommands)
			s := New()
			m := newModel()
			var kinds [4]int
			for i, e := range es {
				want := m.apply(e)
				got := s.Apply(e)
				if got.Index != e.Index {
					t.Fatalf("entry %d: result index %d", i, got.Index)
				}
				if (want == nil) != (got.Err == nil) || (want != nil && !errors.Is(got.Err, want)) {
					t.Fatalf("entry %d (%+v): error %v, model says %v", i, e.Cmd, got.Err, want)
				}
				switch want {
				case nil:
					kinds[0]++
				case ErrConflict:
					kinds[1]++
				case ErrInvalidCommand:
					kinds[2]++
				default:
					kinds[3]++
				}
				if i%500 == 499 {
					m.check(t, s)
					checkIndexes(t, s.View())
				}
			}
			m.check(t, s)
			checkIndexes(t, s.View())
			// The generator must actually exercise every outcome.
			for k, n := range kinds {
				if n < 10 {
					t.Fatalf("outcome %d seen only %d times (ok/conflict/invalid/undecodable = %v)", k, n, kinds)
				}
			}
			st := s.Stats()
			t.Logf("ok/conflict/invalid/undecodable = %v; %d bindings, %d owed", kinds, st.Bindings, st.Owed)
			if st.Bindings < 20 || st.Owed == 0 {
				t.Fatalf("generator too weak: %+v", st)
			}
		})
	}
}

func TestPropertySnapshotCut(t *testing.T) {
	for seed := uint64(1); seed <= propSeeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			es := newGen(seed).entries(propCommands)
			a := New()
			applyAll(a, es)
			r := rand.New(rand.NewPCG(seed, 42))
			cuts := []int{0, len(es), r.IntN(len(es) + 1), r.IntN(len(es) + 1)}
			for _, k := range cuts {
				b := New()
				applyAll(b, es[:k])
				data := snapshotBytes(t, b, int64(k))
				c := New()
				// Give C some unrelated prior content: Restore must replace it all.
				applyAll(c, newGen(seed+1000).entries(50))
				h, err := c.Restore(bytes.NewReader(data))
				if err != nil {
					t.Fatalf("cut %d: Restore: %v", k, err)
				}
				if h.Index != uint64(k) || h.Created != int64(k) {
					t.Fatalf("cut %d: header %+v", k, h)
				}
				if info := InspectSnapshot(bytes.NewReader(data)); info.Err != nil || info.Counts != b.Stats().Counts {
					t.Fatalf("cut %d: inspect %+v", k, info)
				}
				applyAll(c, es[k:])
				if dumpState(a) != dumpState(c) {
					t.Fatalf("cut %d: dumps differ:\nA %s\nC %s", k, dumpState(a), dumpState(c))
				}
				if a.Stats() != c.Stats() {
					t.Fatalf("cut %d: stats differ: %+v vs %+v", k, a.Stats(), c.Stats())
				}
				checkIndexes(t, c.View())
			}
		})
	}
}

func TestPropertyDeterminism(t *testing.T) {
	for seed := uint64(1); seed <= propSeeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			es := newGen(seed).entries(propCommands)
			es2 := newGen(seed).entries(propCommands)
			if !reflect.DeepEqual(es, es2) {
				t.Fatal("generator is not deterministic")
			}
			s1, s2, s3 := New(), New(), New()
			r1 := applyAll(s1, es)
			r2 := applyAll(s2, es2)
			// Through the codec, one entry at a time as raft would deliver them.
			r3 := make([]*Result, len(es))
			for i, e := range es {
				if e.Cmd != nil {
					enc, err := e.Cmd.Encode()
					if err != nil {
						t.Fatalf("entry %d: Encode: %v", i, err)
					}
					dec, err := DecodeCommand(enc)
					if err != nil {
						t.Fatalf("entry %d: Decode: %v", i, err)
					}
					if !reflect.DeepEqual(dec, e.Cmd) {
						t.Fatalf("entry %d: decoded %+v, want %+v", i, dec, e.Cmd)
					}
					e.Cmd = dec
				}
				r3[i] = s3.Apply(e)
			}
			d1 := dumpState(s1)
			if d1 != dumpState(s2) || d1 != dumpState(s3) {
				t.Fatal("same sequence gave different dumps")
			}
			if s1.Stats() != s2.Stats() || s1.Stats() != s3.Stats() {
				t.Fatalf("stats differ: %+v %+v %+v", s1.Stats(), s2.Stats(), s3.Stats())
			}
			for i := range r1 {
				if r1[i].Index != es[i].Index || r2[i].Index != es[i].Index || r3[i].Index != es[i].Index ||
					fmt.Sprint(r1[i].Err) != fmt.Sprint(r2[i].Err) || fmt.Sprint(r1[i].Err) != fmt.Sprint(r3[i].Err) {
					t.Fatalf("entry %d: results differ: %v / %v / %v", i, r1[i].Err, r2[i].Err, r3[i].Err)
				}
			}
			// And the snapshots are byte-identical.
			if !bytes.Equal(snapshotBytes(t, s1, 1), snapshotBytes(t, s3, 1)) {
				t.Fatal("snapshots of equal states differ")
			}
		})
	}
}
