package machine

import (
	"errors"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// TestService is digest §4.1 for every (role, state).
func TestService(t *testing.T) {
	un := Service{Mode: Unresponsive, Allocate: PoolNone}
	own := Service{Mode: Responsive, Allocate: PoolOwn, CapMCLT: true}
	renew := Service{Mode: RenewResponsive, Allocate: PoolNone, CapMCLT: true}
	pd := Service{Mode: Responsive, Allocate: PoolOwnThenPartner, CapMCLT: false, PartnerDown: t0, PartnerPoolAt: t0.Add(mclt)}
	want := map[wire.ServerState][2]Service{ // [primary, secondary]
		stStartup:   {un, un},
		stNormal:    {own, renew},
		stCommInt:   {own, own},
		stPD:        {pd, pd},
		stPC:        {un, un},
		stRecover:   {un, un},
		stRecWait:   {un, un},
		stRecDone:   {renew, renew},
		stResInt:    {own, own},
		stConflDone: {own, un}, // a secondary is never in CONFLICT-DONE
	}
	for _, s := range allStates {
		for i, role := range []Role{Primary, Secondary} {
			t.Run(s.String()+"/"+role.String(), func(t *testing.T) {
				m := forge(t, role, s, nil, forgeOpts{})
				if got := m.Service(); got != want[s][i] {
					t.Errorf("Service() = %+v, want %+v", got, want[s][i])
				}
			})
		}
	}
}

// TestCheckpoint: while serving, LastOperating is persisted every
// Checkpoint; not in unresponsive states.
func TestCheckpoint(t *testing.T) {
	m := forge(t, Primary, stCommInt, nil, forgeOpts{})
	at := m.timers[TimerCheckpoint]
	if !at.Equal(t0.Add(DefaultCheckpoint)) {
		t.Fatalf("checkpoint armed at %v", at)
	}
	acts := m.Timer(at, TimerCheckpoint)
	checkBatch(t, m, acts)
	if got, want := kinds(acts), seq(Pe(stCommInt), ST(ckpt)); got != want {
		t.Fatalf("actions %s, want %s", got, want)
	}
	if acts[0].Record.LastOperating != at.Unix() || !acts[1].At.Equal(at.Add(DefaultCheckpoint)) {
		t.Errorf("persisted LastOperating %d, next at %v", acts[0].Record.LastOperating, acts[1].At)
	}
	// Contact moves LastOperating in memory only.
	m.Contact(at.Add(10 * time.Second))
	if r := m.Record(); r.LastOperating != at.Add(10*time.Second).Unix() || r.LastContact != at.Add(10*time.Second).Unix() {
		t.Errorf("record %+v", r)
	}
	u := forge(t, Primary, stRecover, nil, forgeOpts{})
	if !u.timers[TimerCheckpoint].IsZero() {
		t.Errorf("checkpoint armed in RECOVER")
	}
	lo := u.Record().LastOperating
	u.Contact(evNow)
	if u.Record().LastOperating != lo {
		t.Errorf("LastOperating moved while unresponsive")
	}
}

// TestTimerEdges: stale and early timers, unknown kinds.
func TestTimerEdges(t *testing.T) {
	m := forge(t, Primary, stNormal, ptr(pst(stNormal, C)), forgeOpts{})
	for _, k := range []TimerKind{0, TimerStartup, TimerRecoverWait, TimerAutoPartnerDown, TimerUpdateStall, 99} {
		if acts := m.Timer(evNow, k); acts != nil {
			t.Errorf("timer %v not armed, yet %v", k, kinds(acts))
		}
	}
	at := m.timers[TimerCheckpoint]
	if acts := m.Timer(at.Add(-time.Millisecond), TimerCheckpoint); kinds(acts) != ST(ckpt) || !acts[0].At.Equal(at) {
		t.Errorf("early timer: %v", kinds(acts))
	}
}

// TestUpdateStall: progress (any message) postpones the drop.
func TestUpdateStall(t *testing.T) {
	m := forge(t, Primary, stRecover, ptr(pst(stPD, C)), forgeOpts{req: true})
	at := m.timers[TimerUpdateStall]
	if !at.Equal(t0.Add(DefaultUpdateStall)) {
		t.Fatalf("stall timer at %v", at)
	}
	m.Contact(t0.Add(4 * time.Minute)) // a BNDUPD
	acts := m.Timer(at, TimerUpdateStall)
	if kinds(acts) != ST(stall) || !acts[0].At.Equal(t0.Add(4*time.Minute+DefaultUpdateStall)) {
		t.Fatalf("after progress: %v", kinds(acts))
	}
	acts = m.Timer(acts[0].At, TimerUpdateStall)
	if kinds(acts) != DR {
		t.Fatalf("no progress: %v", kinds(acts))
	}
	// Until the link reports the loss, nothing more is asked.
	if acts := m.ReceiveState(acts[0].At, pst(stPC, C)); m.State() != stRecover || find(acts, SendUpdReq) != nil {
		t.Errorf("while dropping: %v %v", m.State(), kinds(acts))
	}
	m.CommDown(evNow, errors.New("DISCONNECT sent"))
	acts = m.CommUp(evNow.Add(time.Minute), pst(stPD, C))
	if find(acts, SendUpdReq) == nil || find(acts, SetTimer) == nil {
		t.Errorf("reconnect: %v", kinds(acts))
	}
	// Off.
	off := forge(t, Primary, stRecover, ptr(pst(stPD, C)), forgeOpts{req: true, cfg: func(c *Config) { c.UpdateStall = -1 }})
	if !off.timers[TimerUpdateStall].IsZero() {
		t.Errorf("stall timer armed while off")
	}
}

// TestCommUpTwice: an Up without a Down is a new connection: the request
// of the old one is reissued.
func TestCommUpTwice(t *testing.T) {
	m := forge(t, Secondary, stRecover, ptr(pst(stPD, C)), forgeOpts{req: true})
	acts := m.CommUp(evNow, pst(stPD, C))
	checkBatch(t, m, acts)
	r := find(acts, SendUpdReq)
	if r == nil || r.Req == 7 {
		t.Fatalf("no new request: %v", kinds(acts))
	}
	if acts := m.UpdDone(evNow, 7); acts != nil {
		t.Errorf("old UPDDONE accepted: %v", kinds(acts))
	}
	if acts := m.CommDown(evNow, nil); kinds(acts) != CT(stall) {
		t.Errorf("CommDown: %v", kinds(acts))
	}
	if acts := m.CommDown(evNow, nil); acts != nil {
		t.Errorf("second CommDown: %v", kinds(acts))
	}
	if acts := m.ReceiveState(evNow, pst(stPD, C)); acts != nil {
		t.Errorf("STATE while down: %v", kinds(acts))
	}
}

// TestDeterministic: the same events give the same actions.
func TestDeterministic(t *testing.T) {
	script := func() string {
		m, acts, err := New(cfgOf(Secondary), &fsm.EndpointState{State: uint8(stNormal), LastOperating: t0.Add(-time.Minute).Unix(), Communicated: true}, t0)
		if err != nil {
			t.Fatal(err)
		}
		out := kinds(acts)
		add := func(a []Action) {
			for _, x := range a {
				out += " | " + x.String() + x.At.String() + x.Reason
			}
		}
		add(m.CommUp(t0.Add(time.Second), pst(stPD, C)))
		add(m.ReceiveState(t0.Add(2*time.Second), pst(stConflDone, C)))
		add(m.UpdDone(t0.Add(3*time.Second), 1))
		add(m.CommDown(t0.Add(4*time.Second), errors.New("x")))
		return out
	}
	a, b := script(), script()
	if a != b {
		t.Errorf("two runs differ:\n%s\n%s", a, b)
	}
}
