package machine

import (
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Shared helpers for the machine tests. Times are plain values: nothing
// here reads a clock or sleeps.

// t0 is the base time of every test.
var t0 = time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)

const mclt = time.Hour

// cfgOf is the test configuration for role r: MCLT 1h, defaults otherwise.
func cfgOf(r Role) Config { return Config{Role: r, MCLT: mclt} }

// allStates lists the ten RFC 8156 states in wire order.
var allStates = []wire.ServerState{stStartup, stNormal, stCommInt, stPD, stPC, stRecover, stRecWait, stRecDone, stResInt, stConflDone}

// pst is a partner STATE in state s with flags f, in s since an hour
// before t0 (and, in PARTNER-DOWN, down since then).
func pst(s wire.ServerState, f wire.ServerFlags) wire.StateInfo {
	start := wire.ToFOTime(t0.Add(-time.Hour))
	si := wire.StateInfo{State: s, Flags: f, StartTime: start}
	if s == stPD && f&wire.ServerFlagStartup == 0 {
		si.PartnerDownTime = wire.U32(start)
	}
	return si
}

// kinds renders actions in their short form, space-separated.
func kinds(acts []Action) string {
	s := make([]string, len(acts))
	for i, a := range acts {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}

// find returns the first action of kind k, or nil.
func find(acts []Action, k ActionKind) *Action {
	for i := range acts {
		if acts[i].Kind == k {
			return &acts[i]
		}
	}
	return nil
}

// checkBatch asserts the invariants every batch must hold, whatever the
// event: Persist (of the same state) before SendState, SendState only
// while communications are OK, at most one Persist and one SendState,
// STATE never carries STARTUP as a value, STARTUP flag exactly in STARTUP,
// PARTNER_DOWN_TIME exactly in PARTNER-DOWN, the persisted record matches
// the machine.
func checkBatch(t *testing.T, m *Machine, acts []Action) {
	t.Helper()
	persisted := -1
	var nPersist, nSend int
	for i, a := range acts {
		switch a.Kind {
		case Persist:
			nPersist++
			persisted = i
			if a.Record != m.Record() {
				t.Errorf("Persist record %+v differs from the machine's %+v", a.Record, m.Record())
			}
		case SendState:
			nSend++
			if !m.CommOK() || m.dropping {
				t.Errorf("SendState with communications down: %v", kinds(acts))
			}
			if persisted < 0 {
				t.Errorf("SendState before Persist: %v", kinds(acts))
			} else if st := wire.ServerState(acts[persisted].Record.State); st != a.State.State && st != stStartup {
				t.Errorf("SendState(%v) after Persist(%v)", a.State.State, st)
			}
			if a.State.State == stStartup || !a.State.State.Valid() {
				t.Errorf("STATE carries the value %v", a.State.State)
			}
			if (a.State.Flags&wire.ServerFlagStartup != 0) != (m.State() == stStartup) {
				t.Errorf("STATE flags %v in state %v", a.State.Flags, m.State())
			}
			if (a.State.PartnerDownTime != nil) != (a.State.State == stPD && a.State.Flags&wire.ServerFlagStartup == 0) {
				t.Errorf("STATE %v: PartnerDownTime present=%v", a.State.State, a.State.PartnerDownTime != nil)
			}
		case SetTimer:
			if a.At.IsZero() {
				t.Errorf("SetTimer(%v) without a deadline", a.Timer)
			}
		}
	}
	if nPersist > 1 || nSend > 1 {
		t.Errorf("%d Persist and %d SendState in one batch: %v", nPersist, nSend, kinds(acts))
	}
}

// forgeOpts adjusts a forged machine.
type forgeOpts struct {
	cfg          func(*Config)
	notCommunic  bool // rec.Communicated false
	neverOperate bool // rec.LastOperating 0
	req          bool // an UPDREQ (Req 7) is outstanding
}

// forge returns a machine of role r placed directly in state st at t0,
// with communications OK and partner p when p != nil. It sets the fields
// the real transitions would have set (this is an internal test), then
// arms the timers the state calls for.
func forge(t *testing.T, r Role, st wire.ServerState, p *wire.StateInfo, o forgeOpts) *Machine {
	t.Helper()
	cfg := cfgOf(r)
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	rec := &fsm.EndpointState{State: uint8(stCommInt), StateSince: t0.Add(-2 * time.Hour).Unix(),
		PartnerState: uint8(stCommInt), PartnerStateSince: t0.Add(-2 * time.Hour).Unix(),
		LastOperating: t0.Add(-10 * time.Minute).Unix(), Communicated: !o.notCommunic}
	if o.neverOperate {
		rec.LastOperating = 0
	}
	m, _, err := New(cfg, rec, t0.Add(-5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	m.startupExpired = true
	m.state, m.since = st, t0
	m.rec.State, m.rec.PreviousState, m.rec.StateSince = uint8(st), uint8(stStartup), t0.Unix()
	if serving(r, st) {
		m.rec.LastOperating = t0.Unix()
	}
	switch st {
	case stPD:
		m.pdTime = t0
		m.rec.PartnerDownTime = t0.Unix()
	case stRecWait:
		m.rwAt = t0.Add(30 * time.Minute) // the computation is tested in startup_test.go
	}
	if p != nil {
		m.commOK, m.commSince = true, t0
		m.partner, m.partnerSeen, m.lastFlags = *p, true, p.Flags
		m.firstC = p.Flags&wire.ServerFlagCommunicated != 0
		if m.partnerKnown() {
			m.rec.PartnerState = uint8(p.State)
			m.rec.PartnerStateSince = wire.FromFOTimeNear(p.StartTime, t0).Unix()
		}
		if o.req {
			m.reqSeq, m.reqOut, m.reqAt, m.reqSent = 7, 7, t0, true
		}
		m.lastContact = t0
	}
	for k := range m.timers {
		m.timers[k] = time.Time{}
	}
	m.reconcileTimers(t0, nil)
	return m
}
