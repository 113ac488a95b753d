package machine

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// newM starts a machine at t0 and checks the start batch.
func newM(t *testing.T, cfg Config, rec *fsm.EndpointState) (*Machine, []Action) {
	t.Helper()
	m, acts, err := New(cfg, rec, t0)
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, m, acts)
	return m, acts
}

// hops lists the states entered in acts.
func hops(acts []Action) []wire.ServerState {
	var s []wire.ServerState
	for _, a := range acts {
		if a.Kind == EnterState {
			s = append(s, a.To)
		}
	}
	return s
}

func stored(st wire.ServerState) *fsm.EndpointState {
	r := &fsm.EndpointState{State: uint8(st), PreviousState: uint8(stNormal), StateSince: t0.Add(-time.Hour).Unix(),
		PartnerState: uint8(stCommInt), LastOperating: t0.Add(-2 * time.Minute).Unix(), Communicated: true}
	if st == stPD {
		r.PartnerDownTime = r.StateSince
	}
	return r
}

// TestStartupEveryStoredState: steps 1-3 and 6 of §8.3.2 for each of the
// ten states a record can hold (STARTUP itself: a crash during STARTUP,
// with the state before it in PreviousState).
func TestStartupEveryStoredState(t *testing.T) {
	tests := []struct {
		stored          wire.ServerState
		carried         wire.ServerState // in STATE while in STARTUP
		primary, second wire.ServerState // after the STARTUP timer
	}{
		{stStartup, stNormal, stCommInt, stCommInt}, // PreviousState NORMAL
		{stNormal, stNormal, stCommInt, stCommInt},
		{stCommInt, stCommInt, stCommInt, stCommInt},
		{stPD, stPD, stPD, stPD},
		{stPC, stPC, stResInt, stResInt},
		{stRecover, stRecover, stRecover, stRecover},
		{stRecWait, stRecWait, stRecWait, stRecWait},
		{stRecDone, stRecDone, stRecDone, stRecDone},
		{stResInt, stResInt, stResInt, stResInt},
		{stConflDone, stConflDone, stConflDone, stResInt}, // a secondary cannot be in CONFLICT-DONE
	}
	if len(tests) != len(allStates) {
		t.Fatalf("table has %d rows, want one per state", len(tests))
	}
	for _, tc := range tests {
		for _, role := range []Role{Primary, Secondary} {
			t.Run(tc.stored.String()+"/"+role.String(), func(t *testing.T) {
				rec := stored(tc.stored)
				m, acts := newM(t, cfgOf(role), rec)
				if got, want := kinds(acts), seq(E(stStartup), Pe(stStartup), ST(TimerStartup)); got != want {
					t.Fatalf("start actions %s, want %s", got, want)
				}
				p := find(acts, Persist).Record
				wantPrev := tc.stored
				if tc.stored == stStartup {
					wantPrev = stNormal
				}
				if p.State != uint8(stStartup) || p.PreviousState != uint8(wantPrev) || p.StateSince != t0.Unix() {
					t.Errorf("STARTUP record %+v", p)
				}
				if at := find(acts, SetTimer).At; !at.Equal(t0.Add(DefaultStartupTime)) {
					t.Errorf("startup timer at %v", at)
				}
				ls := m.LocalState()
				if ls.State != tc.carried || ls.Flags != wire.ServerFlagStartup|wire.ServerFlagCommunicated || ls.PartnerDownTime != nil {
					t.Errorf("STATE in STARTUP = %+v, want %v with STARTUP|COMMUNICATED", ls, tc.carried)
				}
				if m.Service().Mode != Unresponsive {
					t.Errorf("responsive in STARTUP")
				}
				// Step 6.
				acts = m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
				checkBatch(t, m, acts)
				want := tc.primary
				if role == Secondary {
					want = tc.second
				}
				if m.State() != want {
					t.Errorf("after the startup timer: %v, want %v", m.State(), want)
				}
				if find(acts, SendState) != nil {
					t.Errorf("STATE sent with communications down")
				}
				if want == stRecWait {
					// Resumed RECOVER-WAIT: TIME-OF-FAILURE + MCLT.
					at := find(acts, SetTimer)
					wantAt := time.Unix(rec.LastOperating, 0).Add(DefaultCheckpoint + mclt)
					if at == nil || at.Timer != TimerRecoverWait || !at.At.Equal(wantAt) {
						t.Errorf("recover-wait timer %v, want at %v", at, wantAt)
					}
				}
			})
		}
	}
}

// TestStartupCommOK: step 5 resumes the previous state, then takes the
// communications-OK transition from it, in one batch.
func TestStartupCommOK(t *testing.T) {
	m, _ := newM(t, cfgOf(Secondary), stored(stNormal))
	acts := m.CommUp(t0.Add(5*time.Second), pst(stCommInt, C))
	checkBatch(t, m, acts)
	want := seq(E(stCommInt), E(stNormal), Pe(stNormal), Se(stNormal), FL, PR, CT(TimerStartup), ST(ckpt))
	if got := kinds(acts); got != want {
		t.Errorf("actions\n got: %s\nwant: %s", got, want)
	}
	if r := m.Record(); r.PreviousState != uint8(stCommInt) || r.PartnerState != uint8(stCommInt) {
		t.Errorf("record %+v", r)
	}
	if m.LocalState().Flags&wire.ServerFlagStartup != 0 {
		t.Errorf("STARTUP flag still set")
	}
	// The startup timer, had it fired late, changes nothing.
	if acts := m.Timer(t0.Add(time.Minute), TimerStartup); len(acts) != 0 {
		t.Errorf("stale startup timer: %v", kinds(acts))
	}
}

// TestStartupPartnerDownSpecialCase: step 5 with the partner in
// PARTNER-DOWN compares its start time with our last time of operation.
func TestStartupPartnerDownSpecialCase(t *testing.T) {
	lastOp := t0.Add(-30 * time.Minute)
	tof := lastOp.Add(DefaultCheckpoint)
	pdAt := func(at time.Time) wire.StateInfo {
		return wire.StateInfo{State: stPD, Flags: C, StartTime: wire.ToFOTime(at), PartnerDownTime: wire.U32(wire.ToFOTime(at))}
	}
	tests := []struct {
		name string
		rec  *fsm.EndpointState
		p    wire.StateInfo
		want wire.ServerState
	}{
		{"partner went down after we stopped -> RECOVER", &fsm.EndpointState{State: uint8(stNormal), LastOperating: lastOp.Unix(), Communicated: true},
			pdAt(t0.Add(-10 * time.Minute)), stRecover},
		{"partner went down before we stopped -> POTENTIAL-CONFLICT", &fsm.EndpointState{State: uint8(stNormal), LastOperating: lastOp.Unix(), Communicated: true},
			pdAt(t0.Add(-50 * time.Minute)), stPC},
		{"partner went down between LastOperating and TIME-OF-FAILURE -> POTENTIAL-CONFLICT", &fsm.EndpointState{State: uint8(stCommInt), LastOperating: lastOp.Unix(), Communicated: true},
			pdAt(lastOp.Add(30 * time.Second)), stPC},
		{"within the 5 s skew of TIME-OF-FAILURE -> POTENTIAL-CONFLICT", &fsm.EndpointState{State: uint8(stCommInt), LastOperating: lastOp.Unix(), Communicated: true},
			pdAt(tof.Add(5 * time.Second)), stPC},
		{"6 s after TIME-OF-FAILURE -> RECOVER", &fsm.EndpointState{State: uint8(stCommInt), LastOperating: lastOp.Unix(), Communicated: true},
			pdAt(tof.Add(6 * time.Second)), stRecover},
		{"our previous state PARTNER-DOWN too, partner later -> RECOVER", &fsm.EndpointState{State: uint8(stPD), LastOperating: lastOp.Unix(), PartnerDownTime: t0.Add(-2 * time.Hour).Unix(), Communicated: true},
			pdAt(t0.Add(-10 * time.Minute)), stRecover},
		{"our previous state PARTNER-DOWN too, partner earlier -> POTENTIAL-CONFLICT", &fsm.EndpointState{State: uint8(stPD), LastOperating: lastOp.Unix(), PartnerDownTime: t0.Add(-2 * time.Hour).Unix(), Communicated: true},
			pdAt(t0.Add(-time.Hour)), stPC},
		{"never operated -> RECOVER", &fsm.EndpointState{State: uint8(stRecover), Communicated: true},
			pdAt(t0.Add(-time.Hour)), stRecover},
		{"nothing stored -> RECOVER", nil, pdAt(t0.Add(-time.Hour)), stRecover},
	}
	for _, tc := range tests {
		for _, role := range []Role{Primary, Secondary} {
			t.Run(tc.name+"/"+role.String(), func(t *testing.T) {
				m, _ := newM(t, cfgOf(role), tc.rec)
				acts := m.CommUp(t0.Add(3*time.Second), tc.p)
				checkBatch(t, m, acts)
				if m.State() != tc.want {
					t.Fatalf("state %v, want %v (%v)", m.State(), tc.want, kinds(acts))
				}
				if h := hops(acts); len(h) != 1 || h[0] != tc.want {
					t.Errorf("hops %v", h)
				}
				// RECOVER asks for the partner's updates at once; a primary
				// in POTENTIAL-CONFLICT too.
				wantReq := tc.want == stRecover || role == Primary
				if got := find(acts, SendUpdReq) != nil || find(acts, SendUpdReqAll) != nil; got != wantReq {
					t.Errorf("request sent = %v, want %v: %v", got, wantReq, kinds(acts))
				}
			})
		}
	}

	t.Run("partner in STARTUP carrying PARTNER-DOWN: no special case", func(t *testing.T) {
		m, _ := newM(t, cfgOf(Secondary), &fsm.EndpointState{State: uint8(stNormal), LastOperating: lastOp.Unix(), Communicated: true})
		p := pdAt(t0.Add(-10 * time.Minute))
		p.Flags |= SU
		acts := m.CommUp(t0.Add(time.Second), p)
		checkBatch(t, m, acts)
		if m.State() != stCommInt {
			t.Fatalf("state %v, want COMMUNICATIONS-INTERRUPTED (previous state; partner not yet known)", m.State())
		}
		if find(acts, SendState) == nil {
			t.Errorf("leaving STARTUP with communications OK must send STATE: %v", kinds(acts))
		}
		if m.LocalState().Flags&wire.ServerFlagAckStartup == 0 {
			t.Errorf("ACK_STARTUP not set after a STATE with STARTUP")
		}
		// The partner leaves STARTUP into PARTNER-DOWN.
		acts = m.ReceiveState(t0.Add(2*time.Second), pdAt(t0.Add(-10*time.Minute)))
		checkBatch(t, m, acts)
		if m.State() != stPC {
			t.Errorf("state %v, want POTENTIAL-CONFLICT", m.State())
		}
		if m.LocalState().Flags&wire.ServerFlagAckStartup != 0 {
			t.Errorf("ACK_STARTUP still set")
		}
	})
}

// TestStartupFirstStart: nothing stored.
func TestStartupFirstStart(t *testing.T) {
	for _, role := range []Role{Primary, Secondary} {
		t.Run("no start-alone/"+role.String(), func(t *testing.T) {
			m, acts := newM(t, cfgOf(role), nil)
			if p := find(acts, Persist).Record; p.State != uint8(stStartup) || p.PreviousState != 0 {
				t.Errorf("first STARTUP record %+v: previous state must be none", p)
			}
			ls := m.LocalState()
			if ls.State != stRecover || ls.Flags != wire.ServerFlagStartup {
				t.Errorf("first STATE %+v, want RECOVER with STARTUP only (not COMMUNICATED)", ls)
			}
			acts = m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
			checkBatch(t, m, acts)
			if m.State() != stRecover {
				t.Errorf("state %v, want RECOVER", m.State())
			}
			if _, ok := m.TimeOfFailure(); ok {
				t.Errorf("TIME-OF-FAILURE known on a first start")
			}
		})
	}
	t.Run("a record whose State is 0 is no record", func(t *testing.T) {
		m, _ := newM(t, Config{Role: Primary, MCLT: mclt, StartAlone: true}, &fsm.EndpointState{})
		m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
		if m.State() != stPD {
			t.Errorf("state %v, want PARTNER-DOWN", m.State())
		}
	})
	t.Run("start-alone primary -> PARTNER-DOWN", func(t *testing.T) {
		m, _ := newM(t, Config{Role: Primary, MCLT: mclt, StartAlone: true}, nil)
		at := t0.Add(DefaultStartupTime)
		acts := m.Timer(at, TimerStartup)
		checkBatch(t, m, acts)
		if got, want := kinds(acts), seq(E(stPD), Pe(stPD), ST(ckpt)); got != want {
			t.Errorf("actions %s, want %s", got, want)
		}
		svc := m.Service()
		if m.State() != stPD || svc.Mode != Responsive || svc.Allocate != PoolOwnThenPartner || svc.CapMCLT ||
			!svc.PartnerDown.Equal(at) || !svc.PartnerPoolAt.Equal(at.Add(mclt)) {
			t.Errorf("state %v, service %+v", m.State(), svc)
		}
		if r := m.Record(); r.PartnerDownTime != at.Unix() || r.Communicated {
			t.Errorf("record %+v", r)
		}
	})
	t.Run("start-alone primary with a record -> previous state", func(t *testing.T) {
		m, _ := newM(t, Config{Role: Primary, MCLT: mclt, StartAlone: true}, stored(stRecover))
		m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
		if m.State() != stRecover {
			t.Errorf("state %v, want RECOVER", m.State())
		}
	})
	t.Run("start-alone primary contacted during STARTUP -> RECOVER", func(t *testing.T) {
		m, _ := newM(t, Config{Role: Primary, MCLT: mclt, StartAlone: true}, nil)
		acts := m.CommUp(t0.Add(time.Second), pst(stRecover, 0))
		checkBatch(t, m, acts)
		if m.State() != stRecover || find(acts, SendUpdReq) == nil {
			t.Errorf("state %v, actions %v", m.State(), kinds(acts))
		}
	})
	t.Run("start-alone on a secondary is a config error", func(t *testing.T) {
		_, _, err := New(Config{Role: Secondary, MCLT: mclt, StartAlone: true}, nil, t0)
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("crash during a first STARTUP is still a first start", func(t *testing.T) {
		_, acts := newM(t, cfgOf(Primary), nil)
		rec := find(acts, Persist).Record
		m, _ := newM(t, Config{Role: Primary, MCLT: mclt, StartAlone: true}, &rec)
		m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
		if m.State() != stPD {
			t.Errorf("state %v, want PARTNER-DOWN (start-alone still applies)", m.State())
		}
	})
}

// TestStartupResumesPartnerDown: the original PARTNER-DOWN time survives a
// restart, also one that crashed during STARTUP.
func TestStartupResumesPartnerDown(t *testing.T) {
	pd := t0.Add(-3 * time.Hour)
	rec := &fsm.EndpointState{State: uint8(stPD), StateSince: pd.Unix(), PartnerDownTime: pd.Unix(),
		LastOperating: t0.Add(-time.Minute).Unix(), Communicated: true}
	_, acts := newM(t, cfgOf(Secondary), rec)
	startupRec := find(acts, Persist).Record // then crash in STARTUP
	m, _ := newM(t, cfgOf(Secondary), &startupRec)
	if ls := m.LocalState(); ls.State != stPD || ls.StartTime != wire.ToFOTime(pd) || ls.PartnerDownTime != nil {
		t.Errorf("STARTUP STATE %+v: want PARTNER-DOWN since %v, no PARTNER_DOWN_TIME (§6.3)", ls, pd)
	}
	m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
	ls := m.LocalState()
	if m.State() != stPD || ls.StartTime != wire.ToFOTime(pd) || ls.PartnerDownTime == nil || *ls.PartnerDownTime != wire.ToFOTime(pd) {
		t.Errorf("state %v STATE %+v: want PARTNER-DOWN since %v", m.State(), ls, pd)
	}
	if svc := m.Service(); !svc.PartnerPoolAt.Equal(pd.Add(mclt)) {
		t.Errorf("partner pool at %v, want %v", svc.PartnerPoolAt, pd.Add(mclt))
	}
	if r := m.Record(); r.PartnerDownTime != pd.Unix() || r.StateSince != pd.Unix() {
		t.Errorf("record %+v", r)
	}
}

// TestHeldInStartup: a record restored from a snapshot stays in STARTUP
// until the operator releases it, whatever the partner does.
func TestHeldInStartup(t *testing.T) {
	held := func() *fsm.EndpointState { r := stored(stNormal); r.HeldInStartup = true; return r }

	t.Run("partner connects, timer expires, then release", func(t *testing.T) {
		m, acts := newM(t, cfgOf(Primary), held())
		if a := find(acts, Alarm); a == nil || !strings.Contains(a.Reason, "release") {
			t.Errorf("no alarm for the hold: %v", kinds(acts))
		}
		acts = m.CommUp(t0.Add(time.Second), pst(stCommInt, C))
		checkBatch(t, m, acts)
		if m.State() != stStartup || kinds(acts) != Pe(stStartup) {
			t.Errorf("held: state %v, actions %v", m.State(), kinds(acts))
		}
		acts = m.ReceiveState(t0.Add(2*time.Second), pst(stNormal, C))
		checkBatch(t, m, acts)
		if m.State() != stStartup {
			t.Errorf("held: state %v", m.State())
		}
		if acts = m.Timer(t0.Add(DefaultStartupTime), TimerStartup); m.State() != stStartup || len(acts) != 0 {
			t.Errorf("held after the timer: state %v, actions %v", m.State(), kinds(acts))
		}
		if _, err := m.OperatorPartnerDown(t0.Add(time.Minute)); !errors.Is(err, ErrPartnerDownRefused) || !strings.Contains(err.Error(), "held") {
			t.Errorf("partner-down while held: %v", err)
		}
		if m.Service().Mode != Unresponsive {
			t.Errorf("responsive while held")
		}
		acts, err := m.Release(t0.Add(2 * time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		checkBatch(t, m, acts)
		// Previous NORMAL -> COMM-INT; the partner is in NORMAL: NORMAL.
		if m.State() != stNormal || m.Held() || m.Record().HeldInStartup {
			t.Errorf("after release: state %v held %v", m.State(), m.Held())
		}
		if h := hops(acts); len(h) != 2 || h[0] != stCommInt || h[1] != stNormal {
			t.Errorf("hops %v", h)
		}
		if acts, err := m.Release(t0.Add(3 * time.Minute)); acts != nil || !errors.Is(err, ErrNotHeld) {
			t.Errorf("second release: %v, %v", kinds(acts), err)
		}
	})
	t.Run("release before the timer, communications down", func(t *testing.T) {
		m, _ := newM(t, cfgOf(Secondary), held())
		acts, _ := m.Release(t0.Add(5 * time.Second))
		checkBatch(t, m, acts)
		if m.State() != stStartup || kinds(acts) != Pe(stStartup) || find(acts, Persist).Record.HeldInStartup {
			t.Errorf("state %v, actions %v", m.State(), kinds(acts))
		}
		m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
		if m.State() != stCommInt {
			t.Errorf("state %v, want COMMUNICATIONS-INTERRUPTED", m.State())
		}
	})
	t.Run("release after the timer, communications down", func(t *testing.T) {
		m, _ := newM(t, cfgOf(Secondary), held())
		m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
		acts, _ := m.Release(t0.Add(time.Hour))
		checkBatch(t, m, acts)
		if m.State() != stCommInt || find(acts, Persist).Record.HeldInStartup {
			t.Errorf("state %v, actions %v", m.State(), kinds(acts))
		}
	})
	t.Run("partner in STARTUP too: ACK_STARTUP", func(t *testing.T) {
		m, _ := newM(t, cfgOf(Primary), held())
		m.CommUp(t0.Add(time.Second), pst(stNormal, SU|C))
		ls := m.LocalState()
		if ls.Flags != wire.ServerFlagStartup|wire.ServerFlagCommunicated|wire.ServerFlagAckStartup || ls.State != stNormal {
			t.Errorf("STATE %+v", ls)
		}
	})
}

// TestCommunicatedFlag: COMMUNICATED is set once we talked to the partner
// outside RECOVER, and persisted.
func TestCommunicatedFlag(t *testing.T) {
	m, _ := newM(t, cfgOf(Primary), nil)
	m.CommUp(t0.Add(time.Second), pst(stRecover, 0))
	if m.State() != stRecover || m.LocalState().Flags&C != 0 {
		t.Fatalf("state %v flags %v: RECOVER must not claim COMMUNICATED before its UPDDONE", m.State(), m.LocalState().Flags)
	}
	acts := m.CommDown(t0.Add(2*time.Second), nil)
	if len(acts) != 1 || acts[0].Kind != CancelTimer {
		t.Errorf("comm fail in RECOVER: %v", kinds(acts))
	}
	m2, _ := newM(t, cfgOf(Secondary), stored(stCommInt))
	r := m2.Record()
	r.Communicated = false
	m3, _ := newM(t, cfgOf(Secondary), &r)
	acts = m3.CommUp(t0.Add(time.Second), pst(stRecover, 0))
	checkBatch(t, m3, acts)
	if p := find(acts, Persist); p == nil || !p.Record.Communicated || m3.LocalState().Flags&C == 0 {
		t.Errorf("COMMUNICATED not recorded: %v", kinds(acts))
	}
}

// TestRecoverWaitTimer is digest conformance item 6: RECOVER-WAIT waits
// MCLT from TIME-OF-FAILURE (stored LastOperating + Checkpoint), or from
// the start time when that is unknown.
func TestRecoverWaitTimer(t *testing.T) {
	lastOp := t0.Add(-20 * time.Minute)
	t.Run("TIME-OF-FAILURE known", func(t *testing.T) {
		cfg := Config{Role: Secondary, MCLT: mclt, Checkpoint: 30 * time.Second}
		m, _ := newM(t, cfg, &fsm.EndpointState{State: uint8(stCommInt), LastOperating: lastOp.Unix(), Communicated: true})
		tof, ok := m.TimeOfFailure()
		if !ok || !tof.Equal(lastOp.Add(30*time.Second)) {
			t.Fatalf("TIME-OF-FAILURE %v %v", tof, ok)
		}
		acts := m.CommUp(t0.Add(time.Second), wire.StateInfo{State: stPD, Flags: C,
			StartTime: wire.ToFOTime(t0.Add(-5 * time.Minute)), PartnerDownTime: wire.U32(wire.ToFOTime(t0.Add(-5 * time.Minute)))})
		req := find(acts, SendUpdReq)
		if m.State() != stRecover || req == nil {
			t.Fatalf("state %v, actions %v", m.State(), kinds(acts))
		}
		acts = m.UpdDone(t0.Add(10*time.Minute), req.Req)
		checkBatch(t, m, acts)
		at := find(acts, SetTimer)
		want := lastOp.Add(30*time.Second + mclt)
		if m.State() != stRecWait || at == nil || at.Timer != TimerRecoverWait || !at.At.Equal(want) {
			t.Fatalf("state %v, timer %+v, want recover-wait at %v", m.State(), at, want)
		}
		if m.Service().Mode != Unresponsive {
			t.Errorf("responsive in RECOVER-WAIT")
		}
		// Early firing re-arms; firing at the deadline moves on.
		if acts := m.Timer(want.Add(-time.Second), TimerRecoverWait); m.State() != stRecWait || kinds(acts) != ST(rwt) || !acts[0].At.Equal(want) {
			t.Errorf("early: state %v actions %v", m.State(), kinds(acts))
		}
		// Communications down: the timer still counts (§8.6.2).
		if acts := m.CommDown(want.Add(-time.Minute), nil); len(acts) != 0 {
			t.Errorf("comm fail in RECOVER-WAIT: %v", kinds(acts))
		}
		acts = m.Timer(want, TimerRecoverWait)
		checkBatch(t, m, acts)
		if m.State() != stRecDone || find(acts, SendState) != nil {
			t.Errorf("state %v, actions %v", m.State(), kinds(acts))
		}
	})
	t.Run("lost storage: start time + MCLT, UPDREQALL", func(t *testing.T) {
		m, _ := newM(t, cfgOf(Primary), nil)
		acts := m.CommUp(t0.Add(time.Second), pst(stCommInt, C))
		req := find(acts, SendUpdReqAll)
		if m.State() != stRecover || req == nil {
			t.Fatalf("state %v, actions %v", m.State(), kinds(acts))
		}
		// Interrupted: reissued (UPDREQALL again) with a new id; the old
		// UPDDONE is ignored.
		m.CommDown(t0.Add(time.Minute), nil)
		acts = m.CommUp(t0.Add(2*time.Minute), pst(stCommInt, C))
		req2 := find(acts, SendUpdReqAll)
		if req2 == nil || req2.Req == req.Req {
			t.Fatalf("reissue: %v", kinds(acts))
		}
		if acts := m.UpdDone(t0.Add(3*time.Minute), req.Req); acts != nil || m.State() != stRecover {
			t.Errorf("stale UPDDONE: state %v actions %v", m.State(), kinds(acts))
		}
		acts = m.UpdDone(t0.Add(4*time.Minute), req2.Req)
		checkBatch(t, m, acts)
		if at := find(acts, SetTimer); m.State() != stRecWait || at == nil || !at.At.Equal(t0.Add(mclt)) {
			t.Errorf("state %v timer %+v, want at %v", m.State(), at, t0.Add(mclt))
		}
	})
	t.Run("resumed with the deadline passed -> RECOVER-DONE at once", func(t *testing.T) {
		m, _ := newM(t, cfgOf(Primary), &fsm.EndpointState{State: uint8(stRecWait), LastOperating: t0.Add(-2 * mclt).Unix(), Communicated: true})
		acts := m.Timer(t0.Add(DefaultStartupTime), TimerStartup)
		checkBatch(t, m, acts)
		if h := hops(acts); m.State() != stRecDone || len(h) != 2 || h[0] != stRecWait {
			t.Errorf("state %v hops %v", m.State(), h)
		}
	})
}

// TestPartnerDownIgnoresStartup is digest conformance item 4 (S10).
func TestPartnerDownIgnoresStartup(t *testing.T) {
	for _, s := range allStates[1:] {
		t.Run(s.String(), func(t *testing.T) {
			m := forge(t, Primary, stPD, nil, forgeOpts{})
			acts := m.CommUp(evNow, pst(s, SU|C))
			checkBatch(t, m, acts)
			if m.State() != stPD || len(acts) != 0 {
				t.Fatalf("state %v actions %v", m.State(), kinds(acts))
			}
			acts = m.ReceiveState(evNow.Add(time.Second), pst(s, SU))
			if m.State() != stPD || len(acts) != 0 {
				t.Fatalf("state %v actions %v", m.State(), kinds(acts))
			}
			if ps, ok := m.PartnerState(); !ok || ps != stStartup {
				t.Errorf("partner state %v %v, want STARTUP", ps, ok)
			}
			// The same state without the bit is acted on.
			m.ReceiveState(evNow.Add(2*time.Second), pst(s, C))
			want := stPC
			switch s {
			case stRecover, stRecWait:
				want = stPD
			case stRecDone:
				want = stNormal
			}
			if m.State() != want {
				t.Errorf("without STARTUP: %v, want %v", m.State(), want)
			}
		})
	}
}

// TestPartnerDownRefused: the operator command outside NORMAL,
// COMMUNICATIONS-INTERRUPTED and RESOLUTION-INTERRUPTED.
func TestPartnerDownRefused(t *testing.T) {
	for _, s := range []wire.ServerState{stStartup, stPC, stRecover, stRecWait, stRecDone, stConflDone} {
		t.Run(s.String(), func(t *testing.T) {
			m := forge(t, Primary, s, ptr(pst(stPC, C)), forgeOpts{})
			acts, err := m.OperatorPartnerDown(evNow)
			if !errors.Is(err, ErrPartnerDownRefused) || !strings.Contains(err.Error(), s.String()) || acts != nil {
				t.Errorf("err %v acts %v", err, kinds(acts))
			}
			if m.State() != s {
				t.Errorf("state changed to %v", m.State())
			}
		})
	}
	t.Run("PARTNER-DOWN: no-op", func(t *testing.T) {
		m := forge(t, Secondary, stPD, nil, forgeOpts{})
		acts, err := m.OperatorPartnerDown(evNow)
		if err != nil || acts != nil || m.State() != stPD || !m.Service().PartnerDown.Equal(t0) {
			t.Errorf("err %v acts %v state %v", err, kinds(acts), m.State())
		}
	})
}

// TestConfigAndRecordErrors.
func TestConfigAndRecordErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no role":          {MCLT: mclt},
		"no MCLT":          {Role: Primary},
		"negative startup": {Role: Primary, MCLT: mclt, StartupTime: -1},
		"negative apd":     {Role: Primary, MCLT: mclt, AutoPartnerDown: -1},
		"negative ckpt":    {Role: Primary, MCLT: mclt, Checkpoint: -1},
	} {
		if _, _, err := New(cfg, nil, t0); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	for _, r := range []fsm.EndpointState{{State: 11}, {State: 2, PreviousState: 200}, {State: 2, PartnerState: 11}} {
		if _, _, err := New(cfgOf(Primary), &r, t0); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%+v: err %v", r, err)
		}
	}
	m, _ := newM(t, Config{Role: Primary, MCLT: mclt, UpdateStall: -1}, nil)
	if c := m.Config(); c.StartupTime != DefaultStartupTime || c.Checkpoint != DefaultCheckpoint || c.UpdateStall != -1 || c.AutoPartnerDown != 0 {
		t.Errorf("defaults %+v", c)
	}
}
