package raftstore

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Random command sequences through a real Store (tiny snapshot threshold, so
// raft snapshots and compacts all the time), with Close/reopen and forced
// snapshots at random points. The reference is an in-memory fsm.State that
// applies the same commands at the indexes the Store reported: after every
// command, every reopen and a final offline replay, the Store's state must
// dump identically, and every command's outcome (nil, ErrConflict,
// ErrInvalidCommand) must be the reference's.

// propGen makes random commands over a small set of resources, so that
// overwrites, deletes and precondition conflicts are frequent.
type propGen struct {
	rng   *rand.Rand
	res   []fsm.Resource
	duids []string
	ref   *fsm.State
	t0    int64
}

func newPropGen(rng *rand.Rand, ref *fsm.State) *propGen {
	g := &propGen{rng: rng, ref: ref, t0: base.UnixNano()}
	for i := 1; i <= 10; i++ {
		g.res = append(g.res, fsm.AddrResource(fsm.IANA, netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i))))
	}
	for i := 1; i <= 4; i++ {
		g.res = append(g.res, fsm.AddrResource(fsm.IATA, netip.MustParseAddr(fmt.Sprintf("2001:db8:7::%x", i))))
	}
	// Prefixes, including nested ones with the same address (distinct keys).
	for _, p := range []string{"2001:db8:100::/48", "2001:db8:100::/56", "2001:db8:100::/64",
		"2001:db8:100:100::/56", "2001:db8:200::/60", "2001:db8:300::/64"} {
		g.res = append(g.res, fsm.PrefixResource(netip.MustParsePrefix(p)))
	}
	for i := 0; i < 5; i++ {
		g.duids = append(g.duids, fmt.Sprintf("\x00\x03\x00\x01client-%d", i))
	}
	return g
}

func (g *propGen) binding(r fsm.Resource) fsm.Binding {
	rng := g.rng
	b := fsm.Binding{Resource: r, Status: fsm.Status(1 + rng.Intn(8)), Flags: fsm.Flags(rng.Intn(4)),
		IAID: uint32(rng.Intn(4)), PreferredLifetime: uint32(rng.Intn(7200)), ValidLifetime: uint32(rng.Intn(14400))}
	if b.Status == fsm.StatusActive || rng.Intn(3) > 0 {
		b.DUID = g.duids[rng.Intn(len(g.duids))]
	}
	t := func() int64 {
		switch rng.Intn(4) {
		case 0:
			return 0
		case 1:
			return -int64(rng.Intn(1000))
		}
		return 1_700_000_000 + int64(rng.Intn(100_000))
	}
	b.CLTT, b.StartTimeOfState, b.StateExpirationTime = t(), t(), t()
	b.PartnerLifetime, b.AckedPartnerLifetime, b.ExpirationTime, b.PartnerRawCLTT = t(), t(), t(), t()
	return b
}

// propCmd is one generated command and what the generator expects of it.
type propCmd struct {
	cmd *fsm.Command
	// conflict: a precondition was made to fail on purpose.
	conflict bool
	// unencodable: Encode refuses it, so Apply must fail with ErrNotStored.
	unencodable bool
}

func (g *propGen) next(n int) propCmd {
	rng := g.rng
	c := &fsm.Command{Type: fsm.CmdTxn, Time: g.t0 + int64(n)*int64(time.Second), Origin: fsm.Origin(rng.Intn(7)),
		Note: fmt.Sprintf("step %d", n)}
	switch p := rng.Intn(100); {
	case p < 4:
		c.Type, c.ServerDUID = fsm.CmdSetServerDUID, []byte(g.duids[rng.Intn(len(g.duids))])
		return propCmd{cmd: c}
	case p < 9:
		c.Type = fsm.CmdSetEndpoint
		c.Endpoint = &fsm.EndpointState{State: uint8(1 + rng.Intn(10)), PreviousState: uint8(rng.Intn(11)),
			StateSince: rng.Int63n(1 << 40), PartnerState: uint8(rng.Intn(11)), LastContact: rng.Int63n(1 << 40),
			Communicated: rng.Intn(2) == 0, HeldInStartup: rng.Intn(5) == 0}
		return propCmd{cmd: c}
	case p < 12:
		c.Type = fsm.CmdNoop
		return propCmd{cmd: c}
	case p < 14:
		// Not encodable: an ACTIVE binding without a DUID.
		r := g.res[rng.Intn(len(g.res))]
		b := g.binding(r)
		b.Status, b.DUID = fsm.StatusActive, ""
		c.Ops = []fsm.Op{{Resource: r, IfRev: fsm.AnyRev, Binding: b}}
		return propCmd{cmd: c, unencodable: true}
	case p < 16:
		// Encodable but invalid: one resource twice (stored, rejected by the fsm).
		r := g.res[rng.Intn(len(g.res))]
		c.Ops = []fsm.Op{{Resource: r, IfRev: fsm.AnyRev, Binding: g.binding(r)}, {Resource: r, IfRev: fsm.AnyRev, Delete: true}}
		return propCmd{cmd: c}
	}
	pc := propCmd{cmd: c}
	perm := rng.Perm(len(g.res))
	for _, i := range perm[:1+rng.Intn(4)] {
		r := g.res[i]
		op := fsm.Op{Resource: r, IfRev: fsm.AnyRev}
		cur, exists := g.ref.Get(r)
		switch p := rng.Intn(100); {
		case p < 45: // no precondition
		case p < 85: // the right precondition
			op.IfRev = 0
			if exists {
				op.IfRev = cur.Rev
			}
		case p < 93: // a stale revision
			pc.conflict = true
			op.IfRev = cur.Rev + 1 + uint64(rng.Intn(3))
		default: // "must not exist"
			op.IfRev = 0
			pc.conflict = pc.conflict || exists
		}
		if exists && rng.Intn(4) == 0 {
			op.Delete = true
		} else {
			op.Binding = g.binding(r)
		}
		c.Ops = append(c.Ops, op)
	}
	return pc
}

func propSeed(t *testing.T) int64 {
	seed := time.Now().UnixNano()
	if s := os.Getenv("TANDEM_PROPERTY_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("TANDEM_PROPERTY_SEED: %v", err)
		}
	}
	t.Logf("seed %d (TANDEM_PROPERTY_SEED=%d repeats this run)", seed, seed)
	return seed
}

func TestPropertyStoreMatchesModel(t *testing.T) {
	seed := propSeed(t)
	steps := 400
	if testing.Short() {
		steps = 100
	}
	for run := int64(0); run < 2; run++ {
		t.Run(fmt.Sprintf("seed=%d", seed+run), func(t *testing.T) { propRun(t, seed+run, steps) })
	}
}

func propRun(t *testing.T, seed int64, steps int) {
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	cfg := Config{DataDir: dir, SnapshotThreshold: 8, TrailingLogs: 4, SnapshotInterval: 10 * time.Millisecond, SnapshotRetain: 2}
	ref := fsm.New()
	gen := newPropGen(rng, ref)
	s := openT(t, cfg)
	defer func() { s.Close() }()

	var lastIndex uint64
	var applied, conflicts, invalid, notStored, reopens, snapshots int
	for n := 0; n < steps; n++ {
		pc := gen.next(n)
		before := dump(s.State())
		idx, err := s.Apply(pc.cmd)
		if pc.unencodable {
			if !errors.Is(err, ErrNotStored) || idx != 0 {
				t.Fatalf("step %d: unencodable command: (%d, %v), want ErrNotStored", n, idx, err)
			}
			if got := dump(s.State()); got != before {
				t.Fatalf("step %d: a command that was not stored changed the state", n)
			}
			notStored++
			continue
		}
		if idx <= lastIndex {
			t.Fatalf("step %d: index %d after %d (err %v)", n, idx, lastIndex, err)
		}
		lastIndex = idx
		res := ref.Apply(fsm.Entry{Index: idx, Term: 1, Cmd: pc.cmd})
		if (err == nil) != (res.Err == nil) || (err != nil && err.Error() != res.Err.Error()) {
			t.Fatalf("step %d (%v): store says %v, the reference %v", n, pc.cmd.Type, err, res.Err)
		}
		switch {
		case err == nil:
			applied++
		case errors.Is(err, fsm.ErrConflict):
			conflicts++
			if got := dump(s.State()); got != before {
				t.Fatalf("step %d: a conflicting txn changed the state", n)
			}
		case errors.Is(err, fsm.ErrInvalidCommand):
			invalid++
		default:
			t.Fatalf("step %d: unexpected error %v", n, err)
		}
		if pc.conflict && !errors.Is(err, fsm.ErrConflict) {
			t.Fatalf("step %d: stale precondition not rejected: err = %v", n, err)
		}
		if got, want := dump(s.State()), dump(ref); got != want {
			t.Fatalf("step %d: live state differs from the reference:\n got %s\nwant %s", n, got, want)
		}
		if rng.Intn(100) < 5 {
			if _, err := s.Snapshot(); err != nil {
				t.Fatalf("step %d: Snapshot: %v", n, err)
			}
			snapshots++
		}
		if rng.Intn(100) < 3 || n == steps-1 {
			if err := s.Close(); err != nil {
				t.Fatalf("step %d: Close: %v", n, err)
			}
			s = openT(t, cfg)
			reopens++
			if got, want := dump(s.State()), dump(ref); got != want {
				t.Fatalf("step %d: state after reopen differs from the reference:\n got %s\nwant %s", n, got, want)
			}
		}
	}
	info := s.Info()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d steps: %d applied, %d conflicts, %d invalid, %d not stored; %d reopens, %d forced snapshots; log %d..%d",
		steps, applied, conflicts, invalid, notStored, reopens, snapshots, info.FirstLogIndex, info.LastLogIndex)
	if conflicts == 0 || applied == 0 || reopens < 2 {
		t.Errorf("the run exercised too little: %d applied, %d conflicts, %d reopens", applied, conflicts, reopens)
	}
	if info.FirstLogIndex <= 1 {
		t.Errorf("the log was never compacted (first index %d)", info.FirstLogIndex)
	}

	lr, err := OpenLog(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	res, err := lr.Replay(ReplayTarget{})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if got, want := dump(res.State), dump(ref); got != want {
		t.Fatalf("offline replay differs from the reference:\n got %s\nwant %s", got, want)
	}
}
