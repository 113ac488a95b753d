package machine

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// A pair of machines wired by a tiny in-test message shuttle: SendState
// actions are delivered as the other side's ReceiveState, UPDREQ and
// UPDREQALL are answered by the other side's "driver" with an UPDDONE one
// queue step later, timers fire in virtual time. Each node keeps its
// stable storage (the last Persist), so it can crash and restart.

type node struct {
	name   string
	cfg    Config
	m      *Machine // nil while crashed
	rec    *fsm.EndpointState
	timers [numTimers + 1]time.Time
	trace  []wire.ServerState // every EnterState
	log    []string           // UPDREQ, UPDREQALL, FLUSH, POOLREQ, ALARM, DROP
	peer   *node
}

type msgKind uint8

const (
	mState msgKind = iota + 1
	mUpdReq
	mUpdDone
)

type msg struct {
	to   *node
	kind msgKind
	st   wire.StateInfo
	req  uint64
}

type pair struct {
	t          *testing.T
	now        time.Time
	p, s       *node
	up         bool
	q          []msg
	drop       bool
	bothPDOK   bool // the flow puts both in PARTNER-DOWN on purpose
	connecting bool // between the two Up (or Down) calls of a handshake (or loss)
	rwDeadline map[string]time.Time
}

func newPair(t *testing.T, pcfg, scfg Config) *pair {
	pr := &pair{t: t, now: t0, rwDeadline: map[string]time.Time{}}
	pr.p = &node{name: "primary", cfg: pcfg}
	pr.s = &node{name: "secondary", cfg: scfg}
	pr.p.peer, pr.s.peer = pr.s, pr.p
	return pr
}

// start runs New on n with its stored record (none on the first start).
func (pr *pair) start(n *node) {
	pr.t.Helper()
	if n.m != nil {
		pr.t.Fatalf("%s already running", n.name)
	}
	m, acts, err := New(n.cfg, n.rec, pr.now)
	if err != nil {
		pr.t.Fatal(err)
	}
	n.m = m
	pr.do(n, acts)
}

// do executes a batch the way the driver would.
func (pr *pair) do(n *node, acts []Action) {
	pr.t.Helper()
	checkBatch(pr.t, n.m, acts)
	for _, a := range acts {
		switch a.Kind {
		case EnterState:
			n.trace = append(n.trace, a.To)
		case Persist:
			r := a.Record
			n.rec = &r
		case SendState:
			if !pr.up {
				pr.t.Fatalf("%s: SendState while disconnected", n.name)
			}
			pr.q = append(pr.q, msg{to: n.peer, kind: mState, st: a.State})
		case SendUpdReq, SendUpdReqAll:
			n.log = append(n.log, map[ActionKind]string{SendUpdReq: "UPDREQ", SendUpdReqAll: "UPDREQALL"}[a.Kind])
			pr.q = append(pr.q, msg{to: n.peer, kind: mUpdReq, req: a.Req})
		case FlushUpdates:
			n.log = append(n.log, "FLUSH")
		case SendPoolReq:
			n.log = append(n.log, "POOLREQ")
		case SetTimer:
			n.timers[a.Timer] = a.At
			if a.Timer == TimerRecoverWait {
				pr.rwDeadline[n.name] = a.At
			}
		case CancelTimer:
			n.timers[a.Timer] = time.Time{}
		case Alarm:
			n.log = append(n.log, "ALARM")
		case DropConnection:
			n.log = append(n.log, "DROP")
			pr.drop = true
		}
	}
	pr.invariants()
}

// invariants that must hold between any two steps.
func (pr *pair) invariants() {
	pr.t.Helper()
	for _, n := range []*node{pr.p, pr.s} {
		if n.m == nil {
			continue
		}
		if n.m.CommOK() != pr.up && !n.m.dropping && !pr.connecting {
			pr.t.Fatalf("%s: CommOK %v but link up %v", n.name, n.m.CommOK(), pr.up)
		}
		if n.rec == nil || n.rec.State != uint8(n.m.State()) || n.rec.StateSince != n.m.Record().StateSince {
			pr.t.Fatalf("%s: state %v not persisted", n.name, n.m.State())
		}
		if o := n.peer.m; !pr.bothPDOK && o != nil && n.m.State() == stPD && o.Service().Mode == Responsive {
			pr.t.Fatalf("%s in PARTNER-DOWN while %s is responsive in %v (S4)", n.name, n.peer.name, o.State())
		}
		if n.m.State() == stConflDone && n.m.Role() != Primary {
			pr.t.Fatalf("secondary in CONFLICT-DONE")
		}
	}
}

// step delivers one queued message; false when there is none.
func (pr *pair) step() bool {
	pr.t.Helper()
	if pr.drop {
		pr.drop = false
		pr.disconnect(errors.New("DISCONNECT sent"))
	}
	if len(pr.q) == 0 || !pr.up {
		return false
	}
	mm := pr.q[0]
	pr.q = pr.q[1:]
	n := mm.to
	switch mm.kind {
	case mState:
		pr.do(n, n.m.ReceiveState(pr.now, mm.st))
	case mUpdReq:
		// The driver sends BNDUPDs, collects BNDREPLYs, then UPDDONE.
		n.m.Contact(pr.now)
		pr.q = append(pr.q, msg{to: n.peer, kind: mUpdDone, req: mm.req})
	case mUpdDone:
		pr.do(n, n.m.UpdDone(pr.now, mm.req))
	}
	return true
}

func (pr *pair) run() {
	pr.t.Helper()
	for i := 0; pr.step(); i++ {
		if i > 1000 {
			pr.t.Fatal("messages never stop: a STATE ping-pong")
		}
	}
}

// runUntil delivers messages until cond holds.
func (pr *pair) runUntil(cond func() bool) {
	pr.t.Helper()
	for !cond() {
		if !pr.step() {
			pr.t.Fatal("queue empty before the condition held")
		}
	}
}

// connect: the handshake, then every message until the pair is quiet.
func (pr *pair) connect() {
	pr.t.Helper()
	if pr.up {
		pr.t.Fatal("already connected")
	}
	pr.handshake()
	pr.run()
}

// handshake: both send LocalState, then each gets Up with the other's.
func (pr *pair) handshake() {
	pr.t.Helper()
	pr.up, pr.connecting = true, true
	sp, ss := pr.p.m.LocalState(), pr.s.m.LocalState()
	pr.do(pr.p, pr.p.m.CommUp(pr.now, ss))
	pr.connecting = false
	pr.do(pr.s, pr.s.m.CommUp(pr.now, sp))
}

func (pr *pair) disconnect(why error) {
	pr.t.Helper()
	pr.up, pr.q, pr.connecting = false, nil, true
	for i, n := range []*node{pr.p, pr.s} {
		if i == 1 {
			pr.connecting = false
		}
		if n.m != nil {
			pr.do(n, n.m.CommDown(pr.now, why))
		}
	}
	pr.connecting = false
}

// crash stops n (it persists nothing more); its stable storage stays
// (unless lose). The partner sees the connection drop.
func (pr *pair) crash(n *node, lose bool) {
	pr.t.Helper()
	n.m, n.timers = nil, [numTimers + 1]time.Time{}
	if lose {
		n.rec = nil
	}
	if pr.up {
		pr.disconnect(errors.New("connection lost"))
	}
}

// advance moves virtual time forward by d, firing due timers in order.
func (pr *pair) advance(d time.Duration) {
	pr.t.Helper()
	end := pr.now.Add(d)
	for {
		var fn *node
		var fk TimerKind
		var at time.Time
		for _, n := range []*node{pr.p, pr.s} {
			if n.m == nil {
				continue
			}
			for k := TimerKind(1); int(k) <= numTimers; k++ {
				if t := n.timers[k]; !t.IsZero() && !t.After(end) && (fn == nil || t.Before(at)) {
					fn, fk, at = n, k, t
				}
			}
		}
		if fn == nil {
			break
		}
		pr.now = at
		fn.timers[fk] = time.Time{}
		pr.do(fn, fn.m.Timer(at, fk))
		pr.run()
	}
	pr.now = end
}

func (pr *pair) operatorPD(n *node) {
	pr.t.Helper()
	acts, err := n.m.OperatorPartnerDown(pr.now)
	if err != nil {
		pr.t.Fatal(err)
	}
	pr.do(n, acts)
	pr.run()
}

// reset clears the traces and logs, to assert one phase at a time.
func (pr *pair) reset() {
	for _, n := range []*node{pr.p, pr.s} {
		n.trace, n.log = nil, nil
	}
}

func wantTrace(t *testing.T, n *node, want ...wire.ServerState) {
	t.Helper()
	if !slices.Equal(n.trace, want) {
		t.Errorf("%s passed through\n got: %v\nwant: %v", n.name, n.trace, want)
	}
}

func wantLog(t *testing.T, n *node, want ...string) {
	t.Helper()
	if !slices.Equal(n.log, want) {
		t.Errorf("%s did\n got: %v\nwant: %v", n.name, n.log, want)
	}
}

// commissioned returns a pair started from nothing, connected, in NORMAL.
func commissioned(t *testing.T, pcfg, scfg Config) *pair {
	t.Helper()
	pr := newPair(t, pcfg, scfg)
	pr.start(pr.p)
	pr.start(pr.s)
	pr.advance(time.Second)
	pr.connect()
	if pr.p.m.State() != stNormal || pr.s.m.State() != stNormal {
		t.Fatalf("commissioning ended in %v / %v", pr.p.m.State(), pr.s.m.State())
	}
	pr.advance(10 * time.Minute)
	pr.reset()
	return pr
}

// TestPairCommissioning: two servers with nothing stored meet. Neither has
// ever communicated, so the RECOVER-WAIT is skipped (§8.6.2 MAY); the first
// to reach RECOVER-DONE sees its partner still in RECOVER and serves in
// COMMUNICATIONS-INTERRUPTED (§8.7.2) until the other is done.
func TestPairCommissioning(t *testing.T) {
	pr := newPair(t, cfgOf(Primary), cfgOf(Secondary))
	pr.start(pr.p)
	pr.start(pr.s)
	pr.advance(time.Second)
	pr.connect()
	for _, n := range []*node{pr.p, pr.s} {
		wantTrace(t, n, stStartup, stRecover, stRecWait, stRecDone, stCommInt, stNormal)
		if !n.m.Record().Communicated {
			t.Errorf("%s: COMMUNICATED not recorded", n.name)
		}
	}
	wantLog(t, pr.p, "UPDREQ", "FLUSH")
	wantLog(t, pr.s, "UPDREQ", "FLUSH", "POOLREQ")
}

// TestPairStartAlone: a primary commissioned alone (start-alone) serves in
// PARTNER-DOWN; its new secondary recovers from it without an MCLT wait.
func TestPairStartAlone(t *testing.T) {
	pcfg := cfgOf(Primary)
	pcfg.StartAlone = true
	pr := newPair(t, pcfg, cfgOf(Secondary))
	pr.start(pr.p)
	pr.advance(time.Hour)
	wantTrace(t, pr.p, stStartup, stPD)
	pr.start(pr.s)
	pr.advance(time.Second)
	pr.connect()
	wantTrace(t, pr.p, stStartup, stPD, stNormal)
	wantTrace(t, pr.s, stStartup, stRecover, stRecWait, stRecDone, stNormal)
	wantLog(t, pr.s, "UPDREQ", "FLUSH", "POOLREQ")
	wantLog(t, pr.p, "FLUSH")
}

// TestPairFig8: outage and reconnect (RFC 8156 Figure 8).
func TestPairFig8(t *testing.T) {
	pr := commissioned(t, cfgOf(Primary), cfgOf(Secondary))
	pr.disconnect(errors.New("TCP connection broken"))
	wantTrace(t, pr.p, stCommInt)
	wantTrace(t, pr.s, stCommInt)
	pr.advance(30 * time.Minute)
	pr.connect()
	wantTrace(t, pr.p, stCommInt, stNormal)
	wantTrace(t, pr.s, stCommInt, stNormal)
	wantLog(t, pr.p, "ALARM", "FLUSH")
	wantLog(t, pr.s, "ALARM", "FLUSH", "POOLREQ")
}

// TestPairFig7: server A (the primary) recovers while B is in
// PARTNER-DOWN (RFC 8156 Figure 7); B got there by operator command or by
// auto-partner-down.
func TestPairFig7(t *testing.T) {
	for _, auto := range []bool{false, true} {
		t.Run(fmt.Sprintf("auto=%v", auto), func(t *testing.T) {
			scfg := cfgOf(Secondary)
			if auto {
				scfg.AutoPartnerDown = 20 * time.Minute
			}
			pr := commissioned(t, cfgOf(Primary), scfg)
			pr.advance(30 * time.Second)
			pr.crash(pr.p, false)
			lastOp := time.Unix(pr.p.rec.LastOperating, 0)
			pr.advance(20 * time.Minute)
			if !auto {
				pr.operatorPD(pr.s)
			}
			if pr.s.m.State() != stPD {
				t.Fatalf("secondary in %v", pr.s.m.State())
			}
			pr.advance(10 * time.Minute) // down for 30 min: less than the MCLT
			pr.start(pr.p)
			pr.advance(time.Second)
			pr.connect()
			wantTrace(t, pr.p, stStartup, stRecover, stRecWait)
			wantLog(t, pr.p, "UPDREQ")
			// Wait MCLT from the last known time of failover operation.
			if want := lastOp.Add(DefaultCheckpoint + mclt); !pr.rwDeadline["primary"].Equal(want) {
				t.Errorf("RECOVER-WAIT until %v, want %v", pr.rwDeadline["primary"], want)
			}
			pr.advance(mclt)
			wantTrace(t, pr.p, stStartup, stRecover, stRecWait, stRecDone, stNormal)
			wantTrace(t, pr.s, stCommInt, stPD, stNormal)
			wantLog(t, pr.p, "UPDREQ", "FLUSH")
			if auto {
				wantLog(t, pr.s, "ALARM", "ALARM", "FLUSH", "POOLREQ")
			} else {
				wantLog(t, pr.s, "ALARM", "FLUSH", "POOLREQ")
			}
		})
	}
}

// TestPairFig9: both in PARTNER-DOWN (an operator error during a
// partition) meet in POTENTIAL-CONFLICT and resolve it (RFC 8156
// Figure 9).
func TestPairFig9(t *testing.T) {
	pr := commissioned(t, cfgOf(Primary), cfgOf(Secondary))
	pr.bothPDOK = true
	pr.disconnect(errors.New("partition"))
	pr.operatorPD(pr.p)
	pr.operatorPD(pr.s)
	pr.advance(2 * time.Hour)
	pr.connect()
	wantTrace(t, pr.p, stCommInt, stPD, stPC, stConflDone, stNormal)
	wantTrace(t, pr.s, stCommInt, stPD, stPC, stNormal)
	wantLog(t, pr.p, "ALARM", "UPDREQ", "FLUSH")
	wantLog(t, pr.s, "ALARM", "UPDREQ", "FLUSH", "POOLREQ")
}

// TestPairResolutionInterrupted: the connection breaks after the primary
// reached CONFLICT-DONE; the secondary goes to RESOLUTION-INTERRUPTED and
// both finish after the reconnect.
func TestPairResolutionInterrupted(t *testing.T) {
	pr := commissioned(t, cfgOf(Primary), cfgOf(Secondary))
	pr.bothPDOK = true
	pr.disconnect(errors.New("partition"))
	pr.operatorPD(pr.p)
	pr.operatorPD(pr.s)
	pr.advance(time.Hour)
	pr.handshake() // without draining the queue
	pr.runUntil(func() bool { return pr.p.m.State() == stConflDone })
	pr.disconnect(errors.New("connection lost"))
	pr.advance(10 * time.Minute)
	if pr.p.m.Service().Mode != Responsive || pr.s.m.Service().Mode != Responsive {
		t.Errorf("not both serving while interrupted: %v / %v", pr.p.m.State(), pr.s.m.State())
	}
	pr.connect()
	wantTrace(t, pr.p, stCommInt, stPD, stPC, stConflDone, stNormal)
	wantTrace(t, pr.s, stCommInt, stPD, stPC, stResInt, stPC, stNormal)
	wantLog(t, pr.s, "ALARM", "ALARM", "UPDREQ", "FLUSH", "POOLREQ")
}

// TestPairSecondaryLostDatabase: the secondary restarts with nothing
// stored while the primary remembers it: UPDREQALL, the full MCLT wait
// from its start time, then NORMAL.
func TestPairSecondaryLostDatabase(t *testing.T) {
	pr := commissioned(t, cfgOf(Primary), cfgOf(Secondary))
	pr.crash(pr.s, true)
	pr.advance(5 * time.Minute)
	restart := pr.now
	pr.start(pr.s)
	pr.advance(time.Second)
	pr.connect()
	wantTrace(t, pr.s, stStartup, stRecover, stRecWait)
	wantLog(t, pr.s, "UPDREQALL")
	if want := restart.Add(mclt); !pr.rwDeadline["secondary"].Equal(want) {
		t.Errorf("RECOVER-WAIT until %v, want %v", pr.rwDeadline["secondary"], want)
	}
	pr.advance(mclt)
	wantTrace(t, pr.s, stStartup, stRecover, stRecWait, stRecDone, stNormal)
	wantTrace(t, pr.p, stCommInt, stNormal)
	wantLog(t, pr.s, "UPDREQALL", "FLUSH", "POOLREQ")
	wantLog(t, pr.p, "ALARM", "FLUSH")
}

// TestPairRestartBothNormal: both restart at once (power failure); each
// sees the other's STARTUP STATE, resumes COMMUNICATIONS-INTERRUPTED and
// they meet in NORMAL without waiting for the STARTUP timer.
func TestPairRestartBothNormal(t *testing.T) {
	pr := commissioned(t, cfgOf(Primary), cfgOf(Secondary))
	pr.crash(pr.p, false)
	pr.crash(pr.s, false)
	pr.reset()
	pr.advance(time.Minute)
	pr.start(pr.p)
	pr.start(pr.s)
	pr.advance(time.Second)
	pr.connect()
	wantTrace(t, pr.p, stStartup, stCommInt, stNormal)
	wantTrace(t, pr.s, stStartup, stCommInt, stNormal)
}
