package machine

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Builders for the expected action lists.
func E(s wire.ServerState) string  { return "EnterState(" + s.String() + ")" }
func Pe(s wire.ServerState) string { return "Persist(" + s.String() + ")" }
func Se(s wire.ServerState) string { return "SendState(" + s.String() + ")" }
func ST(k TimerKind) string        { return "SetTimer(" + k.String() + ")" }
func CT(k TimerKind) string        { return "CancelTimer(" + k.String() + ")" }

// trio is a transition with communications OK: EnterState, Persist, SendState.
func trio(s wire.ServerState) string { return seq(E(s), Pe(s), Se(s)) }

func seq(parts ...string) string { return strings.Join(parts, " ") }

const (
	UR  = "SendUpdReq"
	URA = "SendUpdReqAll"
	FL  = "FlushUpdates"
	PR  = "SendPoolReq"
	AL  = "Alarm"
	DR  = "DropConnection"

	C  = wire.ServerFlagCommunicated
	SU = wire.ServerFlagStartup

	P = Primary
	S = Secondary
)

var (
	ckpt  = TimerCheckpoint
	stall = TimerUpdateStall
	apd   = TimerAutoPartnerDown
	rwt   = TimerRecoverWait
)

// Events of the conformance table.
type evKind uint8

const (
	evCommUp evKind = iota + 1
	evState
	evCommDown
	evUpdDone
	evTimer
	evOperPD
)

type ev struct {
	k     evKind
	p     wire.StateInfo
	req   uint64
	timer TimerKind
}

func commUp(s wire.ServerState, f wire.ServerFlags) ev { return ev{k: evCommUp, p: pst(s, f)} }
func state(s wire.ServerState, f wire.ServerFlags) ev  { return ev{k: evState, p: pst(s, f)} }
func commDown() ev                                     { return ev{k: evCommDown} }
func updDone(req uint64) ev                            { return ev{k: evUpdDone, req: req} }
func timer(k TimerKind) ev                             { return ev{k: evTimer, timer: k} }
func operPD() ev                                       { return ev{k: evOperPD} }

// evNow is when table events happen (timer events happen at the deadline).
var evNow = t0.Add(10 * time.Minute)

// apply delivers e to m and returns the actions.
func apply(t *testing.T, m *Machine, e ev) []Action {
	t.Helper()
	var acts []Action
	switch e.k {
	case evCommUp:
		acts = m.CommUp(evNow, e.p)
	case evState:
		acts = m.ReceiveState(evNow, e.p)
	case evCommDown:
		acts = m.CommDown(evNow, errors.New("keepalive expired"))
	case evUpdDone:
		acts = m.UpdDone(evNow, e.req)
	case evTimer:
		at := m.timers[e.timer]
		if at.IsZero() {
			t.Fatalf("timer %v is not armed", e.timer)
		}
		acts = m.Timer(at, e.timer)
	case evOperPD:
		var err error
		if acts, err = m.OperatorPartnerDown(evNow); err != nil {
			t.Fatalf("OperatorPartnerDown: %v", err)
		}
	}
	checkBatch(t, m, acts)
	return acts
}

func ptr(s wire.StateInfo) *wire.StateInfo { return &s }

// TestTransitions is the conformance table: one row per transition (or
// non-transition) of RFC 8156 §8 / digest §4.4, with the exact actions.
func TestTransitions(t *testing.T) {
	apdOn := func(c *Config) { c.AutoPartnerDown = 2 * time.Hour }
	tests := []struct {
		name    string
		role    Role
		from    wire.ServerState
		partner *wire.StateInfo // nil: communications down
		o       forgeOpts
		ev      ev
		want    wire.ServerState
		acts    string
		check   func(t *testing.T, m *Machine, acts []Action)
	}{
		// PARTNER-DOWN, §8.4.2.
		{name: "PD: STATE with STARTUP bit on reconnect is ignored", role: P, from: stPD,
			ev: commUp(stNormal, SU|C), want: stPD, acts: ""},
		{name: "PD: later STATE with STARTUP bit is ignored", role: P, from: stPD, partner: ptr(pst(stRecover, C)),
			ev: state(stPD, SU|C), want: stPD, acts: ""},
		{name: "PD: partner NORMAL -> POTENTIAL-CONFLICT (primary sends UPDREQ)", role: P, from: stPD,
			ev: commUp(stNormal, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "PD: partner COMM-INT -> POTENTIAL-CONFLICT (secondary waits)", role: S, from: stPD,
			ev: commUp(stCommInt, C), want: stPC, acts: seq(trio(stPC), CT(ckpt))},
		{name: "PD: partner PARTNER-DOWN -> POTENTIAL-CONFLICT", role: P, from: stPD,
			ev: commUp(stPD, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "PD: partner POTENTIAL-CONFLICT -> POTENTIAL-CONFLICT", role: S, from: stPD,
			ev: commUp(stPC, C), want: stPC, acts: seq(trio(stPC), CT(ckpt))},
		{name: "PD: partner RESOLUTION-INTERRUPTED -> POTENTIAL-CONFLICT", role: P, from: stPD,
			ev: commUp(stResInt, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "PD: partner CONFLICT-DONE -> POTENTIAL-CONFLICT (secondary then sends UPDREQ)", role: S, from: stPD,
			ev: commUp(stConflDone, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "PD: partner RECOVER -> stay", role: P, from: stPD,
			ev: commUp(stRecover, C), want: stPD, acts: Pe(stPD)},
		{name: "PD: partner RECOVER-WAIT -> stay", role: S, from: stPD, partner: ptr(pst(stRecover, C)),
			ev: state(stRecWait, C), want: stPD, acts: Pe(stPD)},
		{name: "PD: partner RECOVER-DONE -> NORMAL (primary)", role: P, from: stPD, partner: ptr(pst(stRecWait, C)),
			ev: state(stRecDone, C), want: stNormal, acts: seq(trio(stNormal), FL)},
		{name: "PD: partner RECOVER-DONE -> NORMAL (secondary sends POOLREQ)", role: S, from: stPD,
			ev: commUp(stRecDone, C), want: stNormal, acts: seq(trio(stNormal), FL, PR)},
		{name: "PD: comm fail -> stay", role: P, from: stPD, partner: ptr(pst(stRecover, C)),
			ev: commDown(), want: stPD, acts: ""},

		// RECOVER, §8.5.2.
		{name: "RECOVER: partner POTENTIAL-CONFLICT -> POTENTIAL-CONFLICT", role: P, from: stRecover,
			ev: commUp(stPC, C), want: stPC, acts: seq(trio(stPC), UR, ST(stall))},
		{name: "RECOVER: partner RESOLUTION-INTERRUPTED -> POTENTIAL-CONFLICT", role: S, from: stRecover,
			ev: commUp(stResInt, C), want: stPC, acts: trio(stPC)},
		{name: "RECOVER: partner CONFLICT-DONE -> POTENTIAL-CONFLICT (+UPDREQ)", role: S, from: stRecover,
			ev: commUp(stConflDone, C), want: stPC, acts: seq(trio(stPC), UR, ST(stall))},
		{name: "RECOVER: partner PARTNER-DOWN -> UPDREQ", role: P, from: stRecover,
			ev: commUp(stPD, C), want: stRecover, acts: seq(Pe(stRecover), UR, ST(stall))},
		{name: "RECOVER: partner NORMAL -> UPDREQ", role: S, from: stRecover,
			ev: commUp(stNormal, C), want: stRecover, acts: seq(Pe(stRecover), UR, ST(stall))},
		{name: "RECOVER: partner COMM-INT -> UPDREQ", role: S, from: stRecover,
			ev: commUp(stCommInt, C), want: stRecover, acts: seq(Pe(stRecover), UR, ST(stall))},
		{name: "RECOVER: partner RECOVER -> UPDREQ", role: P, from: stRecover,
			ev: commUp(stRecover, C), want: stRecover, acts: seq(Pe(stRecover), UR, ST(stall))},
		{name: "RECOVER: partner RECOVER-WAIT -> UPDREQ", role: P, from: stRecover,
			ev: commUp(stRecWait, C), want: stRecover, acts: seq(Pe(stRecover), UR, ST(stall))},
		{name: "RECOVER: partner RECOVER-DONE -> UPDREQ", role: P, from: stRecover,
			ev: commUp(stRecDone, C), want: stRecover, acts: seq(Pe(stRecover), UR, ST(stall))},
		{name: "RECOVER: lost storage (we never communicated, partner did) -> UPDREQALL", role: S, from: stRecover,
			o: forgeOpts{notCommunic: true}, ev: commUp(stPD, C), want: stRecover, acts: seq(Pe(stRecover), URA, ST(stall))},
		{name: "RECOVER: neither ever communicated -> UPDREQ", role: S, from: stRecover,
			o: forgeOpts{notCommunic: true}, ev: commUp(stPD, 0), want: stRecover, acts: seq(Pe(stRecover), UR, ST(stall))},
		{name: "RECOVER: partner STARTUP -> wait for its real state", role: P, from: stRecover,
			ev: commUp(stPD, SU|C), want: stRecover, acts: ""},
		{name: "RECOVER: UPDDONE -> RECOVER-WAIT", role: P, from: stRecover, partner: ptr(pst(stPD, C)), o: forgeOpts{req: true},
			ev: updDone(7), want: stRecWait, acts: seq(trio(stRecWait), ST(rwt), CT(stall))},
		{name: "RECOVER: UPDDONE for another request is ignored", role: P, from: stRecover, partner: ptr(pst(stPD, C)), o: forgeOpts{req: true},
			ev: updDone(6), want: stRecover, acts: ""},
		{name: "RECOVER: UPDDONE, never ran failover -> RECOVER-WAIT -> RECOVER-DONE at once", role: S, from: stRecover,
			partner: ptr(pst(stPD, 0)), o: forgeOpts{req: true, notCommunic: true, neverOperate: true},
			ev: updDone(7), want: stRecDone, acts: seq(E(stRecWait), E(stRecDone), Pe(stRecDone), Se(stRecDone), ST(ckpt), CT(stall))},
		{name: "RECOVER: UPDDONE, never ran failover, partner still in RECOVER -> RECOVER-DONE -> COMM-INT (§8.7.2)", role: P, from: stRecover,
			partner: ptr(pst(stRecover, 0)), o: forgeOpts{req: true, notCommunic: true, neverOperate: true},
			ev: updDone(7), want: stCommInt, acts: seq(E(stRecWait), E(stRecDone), E(stCommInt), Pe(stCommInt), Se(stCommInt), ST(ckpt), CT(stall))},
		{name: "RECOVER: UPDDONE, partner had talked to us -> wait", role: S, from: stRecover,
			partner: ptr(pst(stPD, C)), o: forgeOpts{req: true, notCommunic: true, neverOperate: true},
			ev: updDone(7), want: stRecWait, acts: seq(trio(stRecWait), ST(rwt), CT(stall))},
		{name: "RECOVER: comm fail mid-update -> stay", role: P, from: stRecover, partner: ptr(pst(stPD, C)), o: forgeOpts{req: true},
			ev: commDown(), want: stRecover, acts: CT(stall)},
		{name: "RECOVER: no UPDDONE and nothing received -> drop the connection", role: P, from: stRecover, partner: ptr(pst(stPD, C)), o: forgeOpts{req: true},
			ev: timer(stall), want: stRecover, acts: DR},

		// RECOVER-WAIT, §8.6.2.
		{name: "RECOVER-WAIT: timer -> RECOVER-DONE", role: P, from: stRecWait, partner: ptr(pst(stPD, C)),
			ev: timer(rwt), want: stRecDone, acts: seq(trio(stRecDone), ST(ckpt))},
		{name: "RECOVER-WAIT: timer with comm down -> RECOVER-DONE, no STATE", role: S, from: stRecWait,
			ev: timer(rwt), want: stRecDone, acts: seq(E(stRecDone), Pe(stRecDone), ST(ckpt))},
		{name: "RECOVER-WAIT: comm fail -> stay, keep timing", role: P, from: stRecWait, partner: ptr(pst(stPD, C)),
			ev: commDown(), want: stRecWait, acts: ""},
		{name: "RECOVER-WAIT: partner state change -> stay", role: P, from: stRecWait, partner: ptr(pst(stPD, C)),
			ev: state(stPC, C), want: stRecWait, acts: Pe(stRecWait)},

		// RECOVER-DONE, §8.7.2.
		{name: "RECOVER-DONE: partner NORMAL -> NORMAL", role: P, from: stRecDone, partner: ptr(pst(stPD, C)),
			ev: state(stNormal, C), want: stNormal, acts: seq(trio(stNormal), FL)},
		{name: "RECOVER-DONE: partner RECOVER-DONE -> NORMAL (+POOLREQ)", role: S, from: stRecDone, partner: ptr(pst(stRecWait, C)),
			ev: state(stRecDone, C), want: stNormal, acts: seq(trio(stNormal), FL, PR)},
		{name: "RECOVER-DONE: partner RECOVER -> COMM-INT", role: P, from: stRecDone, partner: ptr(pst(stPD, C)),
			ev: state(stRecover, C), want: stCommInt, acts: trio(stCommInt)},
		{name: "RECOVER-DONE: partner RECOVER-WAIT -> COMM-INT", role: S, from: stRecDone,
			ev: commUp(stRecWait, C), want: stCommInt, acts: trio(stCommInt)},
		{name: "RECOVER-DONE: partner POTENTIAL-CONFLICT -> POTENTIAL-CONFLICT", role: P, from: stRecDone, partner: ptr(pst(stPD, C)),
			ev: state(stPC, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "RECOVER-DONE: comm fail -> stay", role: P, from: stRecDone, partner: ptr(pst(stPD, C)),
			ev: commDown(), want: stRecDone, acts: ""},
		{name: "RECOVER-DONE: partner COMM-INT -> stay", role: P, from: stRecDone, partner: ptr(pst(stPD, C)),
			ev: state(stCommInt, C), want: stRecDone, acts: Pe(stRecDone)},

		// NORMAL, §8.8.2.
		{name: "NORMAL: comm fail -> COMM-INT with alarm", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: commDown(), want: stCommInt, acts: seq(E(stCommInt), Pe(stCommInt), AL),
			check: func(t *testing.T, m *Machine, acts []Action) {
				if a := find(acts, Alarm); !strings.Contains(a.Reason, "keepalive expired") {
					t.Errorf("alarm %q does not say why", a.Reason)
				}
			}},
		{name: "NORMAL: comm fail with auto-partner-down -> COMM-INT, timer armed", role: S, from: stNormal, partner: ptr(pst(stNormal, C)),
			o: forgeOpts{cfg: apdOn}, ev: commDown(), want: stCommInt, acts: seq(E(stCommInt), Pe(stCommInt), ST(apd), AL),
			check: func(t *testing.T, m *Machine, acts []Action) {
				if a := find(acts, SetTimer); !a.At.Equal(evNow.Add(2 * time.Hour)) {
					t.Errorf("auto-partner-down at %v, want %v", a.At, evNow.Add(2*time.Hour))
				}
			}},
		{name: "NORMAL: operator partner-down -> PARTNER-DOWN, connection dropped", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: operPD(), want: stPD, acts: seq(E(stPD), Pe(stPD), DR),
			check: func(t *testing.T, m *Machine, acts []Action) {
				s := m.LocalState()
				if s.PartnerDownTime == nil || *s.PartnerDownTime != wire.ToFOTime(evNow) || s.StartTime != wire.ToFOTime(evNow) {
					t.Errorf("STATE %+v: want start and partner-down time %d", s, wire.ToFOTime(evNow))
				}
				if m.Record().PartnerDownTime != evNow.Unix() {
					t.Errorf("record partner-down time %d, want %d", m.Record().PartnerDownTime, evNow.Unix())
				}
				// A STATE still in flight on the dying connection changes nothing.
				if acts := m.ReceiveState(evNow, pst(stNormal, C)); m.State() != stPD || find(acts, SendState) != nil {
					t.Errorf("after the drop: state %v, actions %v", m.State(), kinds(acts))
				}
				if acts := m.CommDown(evNow, nil); len(acts) != 0 || m.State() != stPD {
					t.Errorf("CommDown after the drop: state %v, actions %v", m.State(), kinds(acts))
				}
				// The partner was alive after all: it reconnects in COMM-INT.
				acts = m.CommUp(evNow.Add(time.Minute), pst(stCommInt, C))
				checkBatch(t, m, acts)
				if m.State() != stPC {
					t.Errorf("reconnect with partner COMM-INT: state %v, want POTENTIAL-CONFLICT", m.State())
				}
			}},
		{name: "COMM-INT (partner recovering): operator partner-down -> PARTNER-DOWN, STATE sent", role: P, from: stCommInt, partner: ptr(pst(stRecover, C)),
			ev: operPD(), want: stPD, acts: trio(stPD)},
		{name: "NORMAL: partner NORMAL -> POTENTIAL-CONFLICT is unexpected: COMM-INT, then POTENTIAL-CONFLICT", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stPC, C), want: stPC, acts: seq(E(stCommInt), E(stPC), Pe(stPC), Se(stPC), UR, CT(ckpt), ST(stall), AL)},
		{name: "NORMAL: partner PARTNER-DOWN -> COMM-INT -> POTENTIAL-CONFLICT", role: S, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stPD, C), want: stPC, acts: seq(E(stCommInt), E(stPC), Pe(stPC), Se(stPC), CT(ckpt), AL)},
		{name: "NORMAL: partner RESOLUTION-INTERRUPTED -> COMM-INT -> POTENTIAL-CONFLICT", role: S, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stResInt, C), want: stPC, acts: seq(E(stCommInt), E(stPC), Pe(stPC), Se(stPC), CT(ckpt), AL)},
		{name: "NORMAL: partner RECOVER -> COMM-INT", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stRecover, C), want: stCommInt, acts: seq(trio(stCommInt), AL)},
		{name: "NORMAL: partner RECOVER-WAIT -> COMM-INT", role: S, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stRecWait, C), want: stCommInt, acts: seq(trio(stCommInt), AL)},
		{name: "NORMAL (primary): partner CONFLICT-DONE is impossible -> COMM-INT -> POTENTIAL-CONFLICT", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stConflDone, C), want: stPC, acts: seq(E(stCommInt), E(stPC), Pe(stPC), Se(stPC), UR, CT(ckpt), ST(stall), AL)},
		{name: "NORMAL (secondary): partner CONFLICT-DONE is expected -> stay", role: S, from: stNormal, partner: ptr(pst(stPC, C)),
			ev: state(stConflDone, C), want: stNormal, acts: Pe(stNormal)},
		{name: "NORMAL: partner COMM-INT (catching up) -> stay", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stCommInt, C), want: stNormal, acts: Pe(stNormal)},
		{name: "NORMAL: partner RECOVER-DONE -> stay", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stRecDone, C), want: stNormal, acts: Pe(stNormal)},
		{name: "NORMAL: partner STARTUP -> ignored", role: P, from: stNormal, partner: ptr(pst(stNormal, C)),
			ev: state(stNormal, SU|C), want: stNormal, acts: ""},

		// COMMUNICATIONS-INTERRUPTED, §8.9.2.
		{name: "COMM-INT: auto-partner-down timer -> PARTNER-DOWN with alarm", role: P, from: stCommInt, o: forgeOpts{cfg: apdOn},
			ev: timer(apd), want: stPD, acts: seq(E(stPD), Pe(stPD), AL)},
		{name: "COMM-INT: operator partner-down -> PARTNER-DOWN", role: S, from: stCommInt, o: forgeOpts{cfg: apdOn},
			ev: operPD(), want: stPD, acts: seq(E(stPD), Pe(stPD), CT(apd))},
		{name: "COMM-INT: partner NORMAL -> NORMAL", role: P, from: stCommInt,
			ev: commUp(stNormal, C), want: stNormal, acts: seq(trio(stNormal), FL)},
		{name: "COMM-INT: partner COMM-INT -> NORMAL (+POOLREQ)", role: S, from: stCommInt,
			ev: commUp(stCommInt, C), want: stNormal, acts: seq(trio(stNormal), FL, PR)},
		{name: "COMM-INT: partner RECOVER-DONE -> NORMAL", role: P, from: stCommInt, o: forgeOpts{cfg: apdOn},
			ev: commUp(stRecDone, C), want: stNormal, acts: seq(trio(stNormal), FL, CT(apd))},
		{name: "COMM-INT: partner RECOVER -> stay (auto-partner-down suspended)", role: P, from: stCommInt, o: forgeOpts{cfg: apdOn},
			ev: commUp(stRecover, C), want: stCommInt, acts: seq(Pe(stCommInt), CT(apd))},
		{name: "COMM-INT: partner RECOVER-WAIT -> stay (Appendix A item 11)", role: S, from: stCommInt,
			ev: commUp(stRecWait, C), want: stCommInt, acts: Pe(stCommInt)},
		{name: "COMM-INT: partner PARTNER-DOWN -> POTENTIAL-CONFLICT", role: P, from: stCommInt,
			ev: commUp(stPD, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "COMM-INT: partner POTENTIAL-CONFLICT -> POTENTIAL-CONFLICT", role: S, from: stCommInt,
			ev: commUp(stPC, C), want: stPC, acts: seq(trio(stPC), CT(ckpt))},
		{name: "COMM-INT: partner CONFLICT-DONE -> POTENTIAL-CONFLICT (+UPDREQ)", role: S, from: stCommInt,
			ev: commUp(stConflDone, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "COMM-INT: partner RESOLUTION-INTERRUPTED -> POTENTIAL-CONFLICT", role: P, from: stCommInt,
			ev: commUp(stResInt, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "COMM-INT: partner STARTUP -> ignored", role: P, from: stCommInt, o: forgeOpts{cfg: apdOn},
			ev: commUp(stNormal, SU|C), want: stCommInt, acts: CT(apd)},
		{name: "COMM-INT: comm fail again -> stay, auto-partner-down re-armed", role: P, from: stCommInt, partner: ptr(pst(stRecover, C)),
			o: forgeOpts{cfg: apdOn}, ev: commDown(), want: stCommInt, acts: ST(apd),
			check: func(t *testing.T, m *Machine, acts []Action) {
				if a := find(acts, SetTimer); !a.At.Equal(evNow.Add(2 * time.Hour)) {
					t.Errorf("auto-partner-down at %v, want %v", a.At, evNow.Add(2*time.Hour))
				}
			}},

		// POTENTIAL-CONFLICT, §8.10.
		{name: "PC: comm fail -> RESOLUTION-INTERRUPTED with alarm (primary)", role: P, from: stPC, partner: ptr(pst(stPC, C)), o: forgeOpts{req: true},
			ev: commDown(), want: stResInt, acts: seq(E(stResInt), Pe(stResInt), ST(ckpt), CT(stall), AL)},
		{name: "PC: comm fail -> RESOLUTION-INTERRUPTED with alarm (secondary)", role: S, from: stPC, partner: ptr(pst(stPC, C)),
			ev: commDown(), want: stResInt, acts: seq(E(stResInt), Pe(stResInt), ST(ckpt), AL)},
		{name: "PC: UPDDONE -> CONFLICT-DONE (primary)", role: P, from: stPC, partner: ptr(pst(stPC, C)), o: forgeOpts{req: true},
			ev: updDone(7), want: stConflDone, acts: seq(trio(stConflDone), ST(ckpt), CT(stall))},
		{name: "PC: UPDDONE -> NORMAL (secondary)", role: S, from: stPC, partner: ptr(pst(stConflDone, C)), o: forgeOpts{req: true},
			ev: updDone(7), want: stNormal, acts: seq(trio(stNormal), FL, PR, ST(ckpt), CT(stall))},
		{name: "PC: secondary sees the primary enter CONFLICT-DONE -> UPDREQ", role: S, from: stPC, partner: ptr(pst(stPC, C)),
			ev: state(stConflDone, C), want: stPC, acts: seq(Pe(stPC), UR, ST(stall))},
		{name: "PC: unsolicited UPDDONE is ignored", role: S, from: stPC, partner: ptr(pst(stPC, C)),
			ev: updDone(7), want: stPC, acts: ""},
		{name: "PC: other partner state -> stay", role: P, from: stPC, partner: ptr(pst(stPC, C)), o: forgeOpts{req: true},
			ev: state(stNormal, C), want: stPC, acts: Pe(stPC)},

		// RESOLUTION-INTERRUPTED, §8.11.2.
		{name: "RI: operator partner-down -> PARTNER-DOWN", role: P, from: stResInt,
			ev: operPD(), want: stPD, acts: seq(E(stPD), Pe(stPD))},
		{name: "RI: comm OK (partner POTENTIAL-CONFLICT) -> POTENTIAL-CONFLICT", role: P, from: stResInt,
			ev: commUp(stPC, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "RI: comm OK (partner RESOLUTION-INTERRUPTED) -> POTENTIAL-CONFLICT", role: S, from: stResInt,
			ev: commUp(stResInt, C), want: stPC, acts: seq(trio(stPC), CT(ckpt))},
		{name: "RI: comm OK (partner CONFLICT-DONE) -> POTENTIAL-CONFLICT (+UPDREQ)", role: S, from: stResInt,
			ev: commUp(stConflDone, C), want: stPC, acts: seq(trio(stPC), UR, CT(ckpt), ST(stall))},
		{name: "RI: partner in STARTUP -> stay responsive", role: S, from: stResInt,
			ev: commUp(stPC, SU|C), want: stResInt, acts: ""},

		// CONFLICT-DONE, §8.12.2.
		{name: "CD: secondary NORMAL -> NORMAL", role: P, from: stConflDone, partner: ptr(pst(stPC, C)),
			ev: state(stNormal, C), want: stNormal, acts: seq(trio(stNormal), FL)},
		{name: "CD: comm fail -> stay", role: P, from: stConflDone, partner: ptr(pst(stPC, C)),
			ev: commDown(), want: stConflDone, acts: ""},
		{name: "CD: secondary RESOLUTION-INTERRUPTED -> stay", role: P, from: stConflDone,
			ev: commUp(stResInt, C), want: stConflDone, acts: Pe(stConflDone)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := forge(t, tc.role, tc.from, tc.partner, tc.o)
			acts := apply(t, m, tc.ev)
			if got := m.State(); got != tc.want {
				t.Errorf("state %v, want %v", got, tc.want)
			}
			if got := kinds(acts); got != tc.acts {
				t.Errorf("actions\n got: %s\nwant: %s", got, tc.acts)
			}
			if tc.check != nil {
				tc.check(t, m, acts)
			}
		})
	}
}

// TestReleaseTransitions is the conformance table of the operator's
// "continue" (Release) for an endpoint held in STARTUP by a snapshot
// restore (decision 24): the exact actions, by what is stored, whether the
// partner is connected, and whether the STARTUP timer has expired.
func TestReleaseTransitions(t *testing.T) {
	heldRec := func(st wire.ServerState) *fsm.EndpointState {
		r := &fsm.EndpointState{HeldInStartup: true}
		if st != 0 {
			r = stored(st)
			r.HeldInStartup = true
		}
		return r
	}
	// As `tandem snapshot restore` leaves it: held, not Communicated (the
	// snapshot may lack updates the partner sent and we acknowledged), and
	// last operating before the partner declared us down.
	restored := func(st wire.ServerState) *fsm.EndpointState {
		r := heldRec(st)
		r.Communicated, r.LastOperating = false, t0.Add(-2*time.Hour).Unix()
		return r
	}
	tests := []struct {
		name    string
		role    Role
		rec     *fsm.EndpointState
		partner *wire.StateInfo // nil: communications down
		expired bool            // the STARTUP timer fired while held
		want    wire.ServerState
		acts    string
		err     error
	}{
		{name: "held NORMAL, partner NORMAL: COMM-INT then NORMAL", role: P, rec: heldRec(stNormal), partner: ptr(pst(stNormal, C)),
			want: stNormal, acts: seq(E(stCommInt), E(stNormal), Pe(stNormal), Se(stNormal), FL, CT(TimerStartup), ST(ckpt))},
		{name: "held NORMAL, partner PARTNER-DOWN since before our last operation: POTENTIAL-CONFLICT (step 5)", role: S,
			rec: heldRec(stNormal), partner: ptr(pst(stPD, C)),
			want: stPC, acts: seq(trio(stPC), CT(TimerStartup))},
		{name: "restored NORMAL, partner PARTNER-DOWN since after our last operation: RECOVER, UPDREQALL (step 5)", role: S,
			rec: restored(stNormal), partner: ptr(pst(stPD, C)),
			want: stRecover, acts: seq(trio(stRecover), URA, CT(TimerStartup), ST(stall))},
		{name: "held, nothing stored, partner PARTNER-DOWN: RECOVER, UPDREQALL", role: S, rec: heldRec(0), partner: ptr(pst(stPD, C)),
			want: stRecover, acts: seq(trio(stRecover), URA, CT(TimerStartup), ST(stall))},
		{name: "held PARTNER-DOWN, alone, timer expired: PARTNER-DOWN", role: P, rec: heldRec(stPD), expired: true,
			want: stPD, acts: seq(E(stPD), Pe(stPD), ST(ckpt))},
		{name: "held NORMAL, alone, timer running: STARTUP, hold cleared", role: P, rec: heldRec(stNormal),
			want: stStartup, acts: Pe(stStartup)},
		{name: "not held: refused", role: P, rec: stored(stNormal), partner: ptr(pst(stNormal, C)),
			want: stNormal, err: ErrNotHeld},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newM(t, cfgOf(tc.role), tc.rec)
			if tc.partner != nil {
				checkBatch(t, m, m.CommUp(t0.Add(time.Second), *tc.partner))
			}
			if tc.expired {
				checkBatch(t, m, m.Timer(t0.Add(DefaultStartupTime), TimerStartup))
			}
			acts, err := m.Release(t0.Add(2 * DefaultStartupTime))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			checkBatch(t, m, acts)
			if m.State() != tc.want || kinds(acts) != tc.acts {
				t.Fatalf("state %v, actions %q; want %v, %q", m.State(), kinds(acts), tc.want, tc.acts)
			}
			if m.Held() || m.Record().HeldInStartup {
				t.Fatalf("still held after release")
			}
			if p := find(acts, Persist); tc.err == nil && (p == nil || p.Record.HeldInStartup) {
				t.Fatalf("the released record is not persisted: %v", kinds(acts))
			}
		})
	}
}
