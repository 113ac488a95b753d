package update

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Shared helpers for the update tests.

// t0 is a fixed "now" for the tests (no clock is read anywhere).
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int64) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func na(s string) fsm.Resource { return fsm.AddrResource(fsm.IANA, netip.MustParseAddr(s)) }
func ta(s string) fsm.Resource { return fsm.AddrResource(fsm.IATA, netip.MustParseAddr(s)) }
func pd(s string) fsm.Resource { return fsm.PrefixResource(netip.MustParsePrefix(s)) }

const (
	duidA = "\x00\x01client-a"
	duidB = "\x00\x01client-b"
)

// store is a real fsm.State that the tests commit ops to, so that every op
// this package produces is checked for validity and its IfRev precondition.
type store struct {
	t     testing.TB
	s     *fsm.State
	index uint64
}

func newStore(t testing.TB) *store { return &store{t: t, s: fsm.New()} }

// apply commits ops as one txn and returns the result error.
func (st *store) apply(ops []fsm.Op) error {
	if len(ops) == 0 {
		return nil
	}
	st.index++
	r := st.s.Apply(fsm.Entry{Index: st.index, Term: 1, Cmd: &fsm.Command{Type: fsm.CmdTxn, Time: t0.UnixNano(), Ops: ops}})
	return r.Err
}

func (st *store) mustApply(ops []fsm.Op) {
	if err := st.apply(ops); err != nil {
		st.t.Helper()
		st.t.Fatalf("commit: %v", err)
	}
}

// put stores b unconditionally and returns it with its Rev.
func (st *store) put(b fsm.Binding) fsm.Binding {
	st.t.Helper()
	st.mustApply([]fsm.Op{{Resource: b.Resource, IfRev: fsm.AnyRev, Binding: b}})
	return st.get(b.Resource)
}

func (st *store) get(r fsm.Resource) fsm.Binding {
	st.t.Helper()
	b, ok := st.s.Get(r)
	if !ok {
		st.t.Fatalf("no binding for %v", r)
	}
	return b
}

func (st *store) lookup(r fsm.Resource) (fsm.Binding, bool) { return st.s.Get(r) }

// all returns every binding in resource order.
func (st *store) all() []fsm.Binding {
	var out []fsm.Binding
	st.s.View().Ascend(fsm.Resource{}, func(b *fsm.Binding) bool {
		out = append(out, *b)
		return true
	})
	return out
}

// wireTrip encodes m and decodes it again, failing on either error: the
// message is valid on the wire.
func wireTrip(t testing.TB, m *wire.Message) *wire.Message {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatalf("encode %v: %v", m, err)
	}
	d, err := wire.DecodeMessage(b)
	if err != nil {
		t.Fatalf("decode %v: %v", m, err)
	}
	return d
}

// active returns an ACTIVE binding of r for client duid, granted at start
// for valid seconds.
func active(r fsm.Resource, duid string, iaid uint32, start, valid int64) fsm.Binding {
	return fsm.Binding{
		Resource: r, Status: fsm.StatusActive, DUID: duid, IAID: iaid,
		PreferredLifetime: uint32(valid / 2), ValidLifetime: uint32(valid),
		CLTT: start, StartTimeOfState: start, StateExpirationTime: start + valid,
	}
}

// exchange sends the owed updates of from to to through the wire, commits
// what to accepts, answers, and commits what from learns from the answers.
// It returns the receiver's results.
func exchange(t testing.TB, from, to *store, fromRole Role, now time.Time) []Result {
	t.Helper()
	ups, skipped := Updates(SelectOwed(from.all()), now)
	if len(skipped) > 0 {
		t.Fatalf("skipped %v", skipped)
	}
	var results []Result
	for i, u := range ups {
		m := wireTrip(t, u.Message(uint32(i+1), wire.ToFOTime(now)))
		var res Result
		if cd := m.ClientData(); cd != nil {
			res = ApplyBndUpd(to.lookup, cd, Params{Role: fromRole.Partner()}, now)
		} else {
			res = ApplyBndUpdPrefix(to.lookup, m.LonePrefix(), Params{Role: fromRole.Partner()}, now)
		}
		to.mustApply(res.Ops)
		results = append(results, res)
		rm := wireTrip(t, res.Message(m.XID, wire.ToFOTime(now)))
		var rr ReplyResult
		if cd := rm.ClientData(); cd != nil {
			rr = ApplyBndReply(from.lookup, u.Bindings, cd, 0, now)
		} else {
			rr = ApplyBndReplyPrefix(from.lookup, u.Bindings[0], rm.LonePrefix(), 0, now)
		}
		from.mustApply(rr.Ops)
	}
	return results
}
