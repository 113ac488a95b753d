package machine

import (
	"errors"
	"fmt"
	"time"

	"github.com/tandem-dhcp/tandem/failover/role"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Role is this server's role in the failover relationship (shared with
// the link and the binding-update rules).
type Role = role.Role

// Roles. The zero value is invalid, so a Config must say which.
const (
	Primary   = role.Primary
	Secondary = role.Secondary
)

// Defaults for the Config durations left zero.
const (
	// DefaultStartupTime is the STARTUP timer. RFC 8156 §8.3.2 gives no
	// value ("short, but long enough for a TCP connection to a heavily
	// loaded partner across a slow network"). 40 s is the failover link's
	// default connect-retry-max (30 s) plus its handshake timeout (10 s): a
	// restarting secondary then hears the primary's next connection attempt
	// before it resumes its previous state.
	DefaultStartupTime = 40 * time.Second
	// DefaultCheckpoint is how often LastOperating is persisted while the
	// server serves clients.
	DefaultCheckpoint = time.Minute
	// DefaultUpdateStall is how long an UPDREQ/UPDREQALL may go without any
	// message from the partner before the connection is dropped (§8.5.2).
	DefaultUpdateStall = 5 * time.Minute
)

// Config configures a Machine.
type Config struct {
	// Role is Primary or Secondary. Required.
	Role Role
	// MCLT is the maximum client lead time (both partners use the same).
	// Required, > 0.
	MCLT time.Duration
	// StartupTime is the STARTUP timer; 0 means DefaultStartupTime.
	StartupTime time.Duration
	// AutoPartnerDown: how long COMMUNICATIONS-INTERRUPTED may last, with
	// communications down, before the server enters PARTNER-DOWN by
	// itself (§8.9). 0 (the default) turns it off.
	AutoPartnerDown time.Duration
	// StartAlone (primary only): on a first start (nothing stored), enter
	// PARTNER-DOWN instead of RECOVER when the STARTUP timer expires without
	// contact (§8.2; §8.3.2 step 1 SHOULD; digest §4.2 reconciled reading).
	StartAlone bool
	// Checkpoint is how often LastOperating is persisted while the server
	// serves clients; 0 means DefaultCheckpoint. TIME-OF-FAILURE after a
	// restart is the stored LastOperating + Checkpoint.
	Checkpoint time.Duration
	// UpdateStall: drop the connection when an UPDREQ or UPDREQALL has
	// gone this long without any message from the partner (§8.5.2 SHOULD).
	// 0 means DefaultUpdateStall; negative turns it off.
	UpdateStall time.Duration
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Role != Primary && c.Role != Secondary:
		return c, fmt.Errorf("%w: role %v is neither primary nor secondary", ErrInvalidConfig, c.Role)
	case c.MCLT <= 0:
		return c, fmt.Errorf("%w: MCLT %v must be positive", ErrInvalidConfig, c.MCLT)
	case c.StartupTime < 0:
		return c, fmt.Errorf("%w: startup time %v is negative", ErrInvalidConfig, c.StartupTime)
	case c.AutoPartnerDown < 0:
		return c, fmt.Errorf("%w: auto-partner-down %v is negative (0 turns it off)", ErrInvalidConfig, c.AutoPartnerDown)
	case c.Checkpoint < 0:
		return c, fmt.Errorf("%w: checkpoint %v is negative", ErrInvalidConfig, c.Checkpoint)
	case c.StartAlone && c.Role != Primary:
		return c, fmt.Errorf("%w: start-alone applies to the primary only (RFC 8156 §8.2: a new secondary starts in RECOVER)", ErrInvalidConfig)
	}
	if c.StartupTime == 0 {
		c.StartupTime = DefaultStartupTime
	}
	if c.Checkpoint == 0 {
		c.Checkpoint = DefaultCheckpoint
	}
	if c.UpdateStall == 0 {
		c.UpdateStall = DefaultUpdateStall
	}
	return c, nil
}

// Sentinel errors; test them with errors.Is.
var (
	// ErrInvalidConfig: a Config field is missing or out of range.
	ErrInvalidConfig = errors.New("invalid failover state machine configuration")
	// ErrInvalidRecord: the stored EndpointState holds a state value that
	// is not an RFC 8156 state.
	ErrInvalidRecord = errors.New("invalid stored failover endpoint state")
	// ErrPartnerDownRefused: the operator's "partner is down" command is
	// not allowed in the current state; the text names the state.
	ErrPartnerDownRefused = errors.New("partner-down refused")
	// ErrNotHeld: the operator's "continue" (Release) was given to an
	// endpoint that is not held in STARTUP.
	ErrNotHeld = errors.New("not held in STARTUP")
)

// Short names for the states, used throughout the package.
const (
	stStartup   = wire.StateStartup
	stNormal    = wire.StateNormal
	stCommInt   = wire.StateCommInterrupted
	stPD        = wire.StatePartnerDown
	stPC        = wire.StatePotentialConflict
	stRecover   = wire.StateRecover
	stRecWait   = wire.StateRecoverWait
	stRecDone   = wire.StateRecoverDone
	stResInt    = wire.StateResolutionInterrupted
	stConflDone = wire.StateConflictDone
)

// Machine is one failover endpoint's RFC 8156 §8 state machine. It is not
// safe for concurrent use: the driver serialises every call (including the
// queries) and executes each returned batch before the next call.
type Machine struct {
	cfg Config

	// rec is the persistent record as it stands in memory; rec.State is
	// always state. LastContact and LastOperating move without a Persist
	// and ride along with the next one.
	rec   fsm.EndpointState
	state wire.ServerState
	since time.Time // entry into state (for PARTNER-DOWN resumed after STARTUP: the original entry)

	// STARTUP algorithm (§8.3.2).
	startedAt      time.Time        // New's now: "the time the server started"
	noRecord       bool             // nothing was stored: first start (or storage lost)
	prev           wire.ServerState // PREVIOUS-STATE after step 2
	carried        wire.ServerState // the state sent while in STARTUP
	carriedSince   time.Time        // its start time
	tof            time.Time        // TIME-OF-FAILURE; zero = unknown
	startupExpired bool

	// Communications.
	commOK      bool
	commSince   time.Time      // when commOK last changed
	partner     wire.StateInfo // the partner's most recent STATE
	partnerSeen bool           // a STATE has arrived on the current connection
	firstC      bool           // COMMUNICATED flag of the connection's first STATE
	lastFlags   wire.ServerFlags
	lastContact time.Time
	dropping    bool // DropConnection emitted: the connection counts as failed; waiting for CommDown

	// UPDREQ / UPDREQALL.
	reqSeq  uint64
	reqOut  uint64 // the request awaiting UPDDONE; 0 = none
	reqAt   time.Time
	reqSent bool // a request was sent in this state on this connection
	reqAll  bool // UPDREQALL was needed in this RECOVER episode (sticky)

	rwAt   time.Time // RECOVER-WAIT deadline
	pdTime time.Time // PARTNER-DOWN entry; zero outside PARTNER-DOWN

	timers [numTimers + 1]time.Time // armed deadlines by TimerKind; zero = not armed
}

// New starts the endpoint: it runs steps 1-3 of the STARTUP algorithm
// (§8.3.2) and enters STARTUP. rec is the stored record; nil, or a record
// whose State is 0, means nothing is stored (a first start, or lost
// storage). The returned actions persist the STARTUP record and arm the
// STARTUP timer; step 4 (dial or listen) is the link's. A record with
// HeldInStartup set keeps the endpoint in STARTUP until Release.
func New(cfg Config, rec *fsm.EndpointState, now time.Time) (*Machine, []Action, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	var r fsm.EndpointState
	if rec != nil {
		r = *rec
	}
	for _, f := range []struct {
		name string
		v    uint8
	}{{"state", r.State}, {"previous state", r.PreviousState}, {"partner state", r.PartnerState}} {
		if f.v != 0 && !wire.ServerState(f.v).Valid() {
			return nil, nil, fmt.Errorf("%w: %s %d", ErrInvalidRecord, f.name, f.v)
		}
	}
	m := &Machine{cfg: cfg, startedAt: now, commSince: now}

	// Step 1: PREVIOUS-STATE and TIME-OF-FAILURE. A record written while in
	// STARTUP (a crash during STARTUP) keeps the state before it in
	// PreviousState.
	stored, storedSince := wire.ServerState(r.State), r.StateSince
	if stored == stStartup {
		stored = wire.ServerState(r.PreviousState)
		if stored == stStartup {
			stored = 0
		}
	}
	m.noRecord = stored == 0
	if r.LastOperating != 0 {
		m.tof = time.Unix(r.LastOperating, 0).Add(cfg.Checkpoint)
	}
	if m.noRecord {
		m.prev, m.carried, m.carriedSince = stRecover, stRecover, now
	} else {
		// Step 2: states that need communications become their
		// communications-failed state.
		m.prev = stored
		switch {
		case stored == stNormal:
			m.prev = stCommInt
		case stored == stPC:
			m.prev = stResInt
		case stored == stConflDone && cfg.Role == Secondary:
			m.prev = stResInt // only a primary can be in CONFLICT-DONE
		}
		m.carried, m.carriedSince = stored, now
		if storedSince != 0 {
			m.carriedSince = time.Unix(storedSince, 0)
		}
		if stored == stPD && r.PartnerDownTime != 0 {
			m.carriedSince = time.Unix(r.PartnerDownTime, 0)
		}
	}

	// Enter STARTUP and record it.
	r.State, r.PreviousState, r.StateSince = uint8(stStartup), uint8(stored), now.Unix()
	if stored != stPD {
		r.PartnerDownTime = 0
	}
	m.rec, m.state, m.since = r, stStartup, now
	if t := r.LastContact; t != 0 {
		m.lastContact = time.Unix(t, 0)
	}

	b := m.begin(now)
	why := fmt.Sprintf("start: previous state %v", stored)
	if m.noRecord {
		why = "first start: nothing stored, previous state RECOVER"
	}
	b.acts = append(b.acts, Action{Kind: EnterState, From: 0, To: stStartup, Reason: why})
	b.dirty, b.hops = true, 0
	if r.HeldInStartup {
		b.alarms = append(b.alarms, Action{Kind: Alarm, Reason: "failover endpoint held in STARTUP (set by a snapshot restore): " +
			"check the partner's state, then release it to continue"})
	}
	return m, b.finish(), nil
}

// ---- events ----

// CommUp: communications are OK; p is the partner's first STATE on the new
// connection (link Handler.Up). In STARTUP (not held) this is step 5 of the
// STARTUP algorithm.
func (m *Machine) CommUp(now time.Time, p wire.StateInfo) []Action {
	if m.commOK {
		m.loseConnection(now) // a new connection without a Down: the old one is gone
	}
	b := m.begin(now)
	m.commOK, m.commSince, m.dropping = true, now, false
	m.firstC = p.Flags&wire.ServerFlagCommunicated != 0
	b.receive(p)
	if m.state == stStartup && !m.rec.HeldInStartup {
		b.step5()
	}
	return b.finish()
}

// ReceiveState: a later STATE from the partner. While communications are
// down it is ignored: it can only be a stale message of a lost connection
// (the link reports every new connection with Up first).
func (m *Machine) ReceiveState(now time.Time, p wire.StateInfo) []Action {
	if !m.commOK {
		return nil
	}
	b := m.begin(now)
	b.receive(p)
	if m.state == stStartup && !m.rec.HeldInStartup {
		b.step5()
	}
	return b.finish()
}

// CommDown: communications lost (keepalive expiry, TCP loss, DISCONNECT
// received or sent, time skew, protocol error). why is for the logs and the
// alarm text. A second CommDown is a no-op.
func (m *Machine) CommDown(now time.Time, why error) []Action {
	if !m.commOK {
		return nil
	}
	b := m.begin(now)
	m.loseConnection(now)
	text := "communications with the partner lost"
	if why != nil {
		text += ": " + why.Error()
	}
	switch m.state {
	case stNormal:
		b.enter(stCommInt, text)
	case stPC:
		b.enter(stResInt, text)
	}
	return b.finish()
}

// UpdDone: the UPDDONE answering the request identified by req (the Req
// of a SendUpdReq or SendUpdReqAll action) arrived. An UPDDONE for any
// other request (an earlier state or connection) is ignored.
func (m *Machine) UpdDone(now time.Time, req uint64) []Action {
	m.contact(now)
	if req == 0 || req != m.reqOut || !m.commOK {
		return nil
	}
	b := m.begin(now)
	m.reqOut = 0
	switch m.state {
	case stRecover:
		// §8.6.2 MAY: no wait when this server never ran failover, judged
		// from the partner's information: the partner had no record of
		// talking to us when this connection opened, and we have none either.
		never := !m.rec.Communicated && m.rec.LastOperating == 0 && !m.firstC
		m.rec.Communicated = true
		b.enter(stRecWait, "UPDDONE received: bindings refreshed from the partner")
		if never && m.state == stRecWait {
			b.enter(stRecDone, "neither partner has ever communicated: this server never ran failover, no MCLT wait (§8.6.2)")
		}
	case stPC:
		if m.cfg.Role == Primary {
			b.enter(stConflDone, "UPDDONE received: the secondary's updates are in")
		} else {
			b.enter(stNormal, "UPDDONE received: the primary's updates are in")
		}
	}
	return b.finish()
}

// Timer: timer t fired. A timer that is no longer armed is ignored; one
// that fires before its deadline is re-armed (the returned SetTimer).
func (m *Machine) Timer(now time.Time, t TimerKind) []Action {
	if t < 1 || int(t) > numTimers || m.timers[t].IsZero() {
		return nil
	}
	if at := m.timers[t]; now.Before(at) {
		return []Action{{Kind: SetTimer, Timer: t, At: at}}
	}
	m.timers[t] = time.Time{}
	b := m.begin(now)
	switch t {
	case TimerStartup:
		m.startupExpired = true
		if m.state == stStartup && !m.rec.HeldInStartup {
			b.step6()
		}
	case TimerRecoverWait:
		// finish moves RECOVER-WAIT to RECOVER-DONE once rwAt has passed.
	case TimerAutoPartnerDown:
		if m.state == stCommInt && !m.commOK {
			b.enter(stPD, fmt.Sprintf("auto-partner-down: communications down for %v", m.cfg.AutoPartnerDown))
			b.alarms = append(b.alarms, Action{Kind: Alarm, Reason: fmt.Sprintf(
				"entered PARTNER-DOWN automatically after %v in COMMUNICATIONS-INTERRUPTED without contact: the partner MUST NOT be operating", m.cfg.AutoPartnerDown)})
		}
	case TimerCheckpoint:
		b.dirty = true // LastOperating was advanced by begin
	case TimerUpdateStall:
		if m.reqOut != 0 && m.commOK && !m.stallDeadline().After(now) {
			m.dropping = true
			b.drop = fmt.Sprintf("no UPDDONE and no message from the partner for %v after UPDREQ (RFC 8156 §8.5.2)", m.cfg.UpdateStall)
		}
	}
	return b.finish()
}

// OperatorPartnerDown is the external command "the partner is down". It
// is allowed from NORMAL (§8.8.2), COMMUNICATIONS-INTERRUPTED (§8.9.2) and
// RESOLUTION-INTERRUPTED (§8.11.2); in PARTNER-DOWN it does nothing; from
// any other state it fails with ErrPartnerDownRefused.
//
// In NORMAL communications are OK by definition, so the operator is
// asserting what the link has not detected yet: the connection is dropped
// (DropConnection) and taken as failed at once, without a STATE.
// Otherwise §8.1's re-evaluation would see PARTNER-DOWN with a partner in
// NORMAL and move straight on to POTENTIAL-CONFLICT. If the partner is in
// fact alive it reconnects, and the PARTNER-DOWN rules apply to its STATE.
func (m *Machine) OperatorPartnerDown(now time.Time) ([]Action, error) {
	switch m.state {
	case stNormal, stCommInt, stResInt:
		b := m.begin(now)
		if m.state == stNormal && m.commOK {
			m.dropping = true
			b.drop = "operator declared the partner down"
		}
		b.enter(stPD, "operator: the partner is down")
		return b.finish(), nil
	case stPD:
		return nil, nil
	}
	why := fmt.Sprintf("the endpoint is in %v", m.state)
	if m.state == stStartup && m.rec.HeldInStartup {
		why += " (held: release it first)"
	}
	return nil, fmt.Errorf("%w: %s; RFC 8156 allows it only from NORMAL, COMMUNICATIONS-INTERRUPTED or RESOLUTION-INTERRUPTED", ErrPartnerDownRefused, why)
}

// Release is the operator's "continue" for an endpoint held in STARTUP
// (HeldInStartup, set by a snapshot restore). It clears the hold; then, if
// communications are OK, STARTUP ends as on CommUp (step 5); if the
// STARTUP timer already expired, as on its expiry (step 6); otherwise the
// STARTUP timer keeps running. Without a hold it changes nothing and fails
// with ErrNotHeld.
func (m *Machine) Release(now time.Time) ([]Action, error) {
	if !m.rec.HeldInStartup {
		return nil, fmt.Errorf("%w: the endpoint is in %v and was not held (only a snapshot restore holds it): nothing to continue", ErrNotHeld, m.state)
	}
	b := m.begin(now)
	m.rec.HeldInStartup = false
	b.dirty = true
	if m.state == stStartup {
		switch {
		case m.commOK:
			b.step5()
		case m.startupExpired:
			b.step6()
		}
	}
	return b.finish(), nil
}

// Restored is the endpoint record a snapshot restore installs in place of
// rec, the one the snapshot holds. The snapshot may lack bindings the
// partner sent and this server acknowledged after it was taken, so
// Communicated is cleared: in RECOVER the endpoint then asks for everything
// (UPDREQALL, as after lost storage) instead of only what the partner still
// owes. With hold, HeldInStartup is set (decision 24): the endpoint stays
// in STARTUP, unresponsive, until Release. Everything else is kept, so
// STARTUP step 5 still compares the partner's PARTNER-DOWN time with our
// last operation.
func Restored(rec fsm.EndpointState, hold bool) fsm.EndpointState {
	rec.Communicated = false
	rec.HeldInStartup = hold
	return rec
}

// Contact records that a message arrived from the partner: LastContact
// (and LastOperating, while serving) advance in memory and are persisted
// with the next Persist. Call it for every message the link delivers.
func (m *Machine) Contact(now time.Time) {
	m.contact(now)
	if serving(m.cfg.Role, m.state) {
		m.rec.LastOperating = now.Unix()
	}
}

// ---- queries ----

// State is the current state (STARTUP while starting).
func (m *Machine) State() wire.ServerState { return m.state }

// StateSince is when the current state was entered.
func (m *Machine) StateSince() time.Time { return m.since }

// Startup reports whether the endpoint is in STARTUP.
func (m *Machine) Startup() bool { return m.state == stStartup }

// Held reports whether the endpoint is held in STARTUP until Release.
func (m *Machine) Held() bool { return m.rec.HeldInStartup }

// Role is the configured role.
func (m *Machine) Role() Role { return m.cfg.Role }

// Config is the configuration with defaults applied.
func (m *Machine) Config() Config { return m.cfg }

// CommOK reports whether communications with the partner are OK.
func (m *Machine) CommOK() bool { return m.commOK }

// PartnerState is the partner's state as last reported (STARTUP when its
// STATE had the STARTUP flag) and whether it is known on the current
// connection.
func (m *Machine) PartnerState() (wire.ServerState, bool) {
	if !m.partnerSeen {
		return wire.ServerState(m.rec.PartnerState), false
	}
	if !m.partnerKnown() {
		return stStartup, true
	}
	return m.partner.State, true
}

// Record is the persistent record as it stands in memory.
func (m *Machine) Record() fsm.EndpointState { return m.rec }

// LocalState is the STATE this endpoint sends now: the link's
// Handler.LocalState. In STARTUP it carries the previously recorded state
// and the STARTUP flag (§8.3.1); COMMUNICATED is set once this endpoint has
// communicated with the partner (outside RECOVER); ACK_STARTUP when the
// partner's most recent flags had STARTUP.
func (m *Machine) LocalState() wire.StateInfo {
	var f wire.ServerFlags
	if m.rec.Communicated {
		f |= wire.ServerFlagCommunicated
	}
	if m.lastFlags&wire.ServerFlagStartup != 0 {
		f |= wire.ServerFlagAckStartup
	}
	if m.state == stStartup {
		return wire.StateInfo{State: m.carried, Flags: f | wire.ServerFlagStartup, StartTime: wire.ToFOTime(m.carriedSince)}
	}
	s := wire.StateInfo{State: m.state, Flags: f, StartTime: wire.ToFOTime(m.since)}
	if m.state == stPD {
		s.PartnerDownTime = wire.U32(wire.ToFOTime(m.pdTime))
	}
	return s
}

// Service is what the DHCP server may do now (digest §4.1).
func (m *Machine) Service() Service {
	s := serviceOf(m.cfg.Role, m.state)
	if m.state == stPD {
		s.PartnerDown = m.pdTime
		s.PartnerPoolAt = m.pdTime.Add(m.cfg.MCLT)
	}
	return s
}

// TimeOfFailure is TIME-OF-FAILURE from the STARTUP algorithm (the stored
// LastOperating + Checkpoint); ok is false when unknown (nothing stored, or
// this server never served clients).
func (m *Machine) TimeOfFailure() (t time.Time, ok bool) { return m.tof, !m.tof.IsZero() }

// ---- internals ----

func (m *Machine) contact(now time.Time) {
	m.lastContact = now
	m.rec.LastContact = now.Unix()
}

// loseConnection forgets everything that belongs to the connection.
func (m *Machine) loseConnection(now time.Time) {
	m.commOK, m.commSince = false, now
	m.partnerSeen, m.dropping = false, false
	m.reqOut, m.reqSent = 0, false
}

// partnerKnown reports whether the partner's state on this connection is
// one to act on: a STATE without the STARTUP flag carrying a valid state.
func (m *Machine) partnerKnown() bool {
	return m.partnerSeen && m.partner.Flags&wire.ServerFlagStartup == 0 &&
		m.partner.State.Valid() && m.partner.State != stStartup
}

func (m *Machine) stallDeadline() time.Time {
	t := m.reqAt
	if m.lastContact.After(t) {
		t = m.lastContact
	}
	return t.Add(m.cfg.UpdateStall)
}

// batch collects the actions of one event.
type batch struct {
	m      *Machine
	now    time.Time
	acts   []Action // EnterState actions
	alarms []Action
	hops   int
	dirty  bool // the record changed: Persist
	drop   string
}

func (m *Machine) begin(now time.Time) *batch {
	if serving(m.cfg.Role, m.state) {
		m.rec.LastOperating = now.Unix() // operating until now
	}
	return &batch{m: m, now: now}
}

// receive takes in a partner STATE.
func (b *batch) receive(p wire.StateInfo) {
	m := b.m
	m.contact(b.now)
	m.partner, m.partnerSeen, m.lastFlags = p, true, p.Flags
	if !m.partnerKnown() {
		// The partner is in STARTUP: remember that, act on nothing (§8.4.2
		// for PARTNER-DOWN; every state here), persist nothing.
		if m.rec.PartnerState != uint8(stStartup) {
			m.rec.PartnerState, m.rec.PartnerStateSince = uint8(stStartup), b.now.Unix()
		}
		return
	}
	since := wire.FromFOTimeNear(p.StartTime, b.now).Unix()
	if m.rec.PartnerState != uint8(p.State) || m.rec.PartnerStateSince != since {
		m.rec.PartnerState, m.rec.PartnerStateSince = uint8(p.State), since
		b.dirty = true // §6.4: SHOULD be written to stable storage
	}
}

// step5 ends STARTUP on communications OK (§8.3.2 step 5).
func (b *batch) step5() {
	m := b.m
	to, why := m.prev, fmt.Sprintf("communications OK: previous state %v", m.prev)
	if m.partnerKnown() && m.partner.State == stPD {
		ps := m.partner.StartTime
		switch {
		case m.tof.IsZero():
			to, why = stRecover, fmt.Sprintf("partner in PARTNER-DOWN since %v and this server has no recorded time of operation",
				wire.FromFOTimeNear(ps, b.now).Format(time.RFC3339))
		case wire.CompareFOTime(ps, wire.ToFOTime(m.tof)) > 0:
			to, why = stRecover, fmt.Sprintf("partner entered PARTNER-DOWN at %v, after this server last operated (%v)",
				wire.FromFOTimeNear(ps, b.now).Format(time.RFC3339), m.tof.UTC().Format(time.RFC3339))
		default:
			to, why = stPC, fmt.Sprintf("partner entered PARTNER-DOWN at %v, not after this server last operated (%v)",
				wire.FromFOTimeNear(ps, b.now).Format(time.RFC3339), m.tof.UTC().Format(time.RFC3339))
		}
	}
	b.enter(to, why)
}

// step6 ends STARTUP when its timer expires without contact (§8.3.2 step 6).
func (b *batch) step6() {
	m := b.m
	if m.noRecord && m.cfg.StartAlone {
		b.enter(stPD, "startup timer expired without contact on a first start: start-alone")
		return
	}
	b.enter(m.prev, fmt.Sprintf("startup timer expired without contact: previous state %v", m.prev))
}

// enter makes one hop to state to.
func (b *batch) enter(to wire.ServerState, why string) {
	m, now := b.m, b.now
	from := m.state
	b.hops++
	b.dirty = true
	if serving(m.cfg.Role, from) || serving(m.cfg.Role, to) {
		m.rec.LastOperating = now.Unix()
	}
	m.state, m.since = to, now
	m.reqOut, m.reqSent = 0, false
	if to != stRecover {
		m.reqAll = false
	}
	if from == stPD && to != stPD {
		m.pdTime, m.rec.PartnerDownTime = time.Time{}, 0
	}
	switch to {
	case stPD:
		m.pdTime = now
		if from == stStartup && m.rec.PartnerDownTime != 0 {
			// Resuming PARTNER-DOWN: the partner has been down since the
			// original entry, and START_TIME_OF_STATE must say so (the
			// partner's §8.3.2 step 5 compares it with its own operation).
			m.pdTime = time.Unix(m.rec.PartnerDownTime, 0)
			m.since = m.pdTime
		}
		m.rec.PartnerDownTime = m.pdTime.Unix()
	case stRecWait:
		base := m.startedAt
		if !m.tof.IsZero() {
			base = m.tof
		}
		m.rwAt = base.Add(m.cfg.MCLT)
	case stResInt:
		b.alarms = append(b.alarms, Action{Kind: Alarm, Reason: fmt.Sprintf(
			"conflict resolution with the partner interrupted (%v -> RESOLUTION-INTERRUPTED): %s", from, why)})
	case stCommInt:
		if from == stNormal {
			b.alarms = append(b.alarms, Action{Kind: Alarm, Reason: fmt.Sprintf(
				"failover communications interrupted (NORMAL -> COMMUNICATIONS-INTERRUPTED): %s", why)})
		}
	}
	m.rec.State, m.rec.PreviousState, m.rec.StateSince = uint8(to), uint8(from), m.since.Unix()
	b.acts = append(b.acts, Action{Kind: EnterState, From: from, To: to, Reason: why})
}

// maxHops bounds the transitions of one event; the transition graph has
// no cycle longer than 3, so hitting it is a bug.
const maxHops = 8

// finish runs the level-triggered transitions and assembles the batch:
// EnterState..., Persist, SendState, protocol messages, timers, alarms,
// DropConnection.
func (b *batch) finish() []Action {
	m := b.m
	for i := 0; ; i++ {
		to, why, ok := m.next(b.now)
		if !ok {
			break
		}
		if i == maxHops {
			panic(fmt.Sprintf("failover/machine: no fixed point after %d hops (state %v, partner %v)", maxHops, m.state, m.partner.State))
		}
		b.enter(to, why)
	}
	if m.commOK && m.state != stStartup && m.state != stRecover && !m.rec.Communicated {
		m.rec.Communicated = true
		b.dirty = true
	}
	out := b.acts
	if b.dirty {
		out = append(out, Action{Kind: Persist, Record: m.rec})
	}
	if b.hops > 0 && m.commOK && !m.dropping {
		out = append(out, Action{Kind: SendState, State: m.LocalState()})
		if m.state == stNormal {
			out = append(out, Action{Kind: FlushUpdates})
			if m.cfg.Role == Secondary {
				out = append(out, Action{Kind: SendPoolReq})
			}
		}
	}
	if all, ok := m.wantRequest(); ok {
		m.reqSeq++
		m.reqOut, m.reqAt, m.reqSent = m.reqSeq, b.now, true
		k := SendUpdReq
		if all {
			k = SendUpdReqAll
		}
		out = append(out, Action{Kind: k, Req: m.reqOut})
	}
	out = m.reconcileTimers(b.now, out)
	out = append(out, b.alarms...)
	if b.drop != "" {
		out = append(out, Action{Kind: DropConnection, Reason: b.drop})
	}
	return out
}

// next is the transition, if any, that own state, communications status
// and partner state call for (§8.1: evaluated whenever one changes).
func (m *Machine) next(now time.Time) (wire.ServerState, string, bool) {
	if m.state == stRecWait && !now.Before(m.rwAt) {
		return stRecDone, fmt.Sprintf("MCLT has passed since %v (RECOVER-WAIT timer)", m.rwAt.Add(-m.cfg.MCLT).UTC().Format(time.RFC3339)), true
	}
	if !m.commOK || m.dropping || !m.partnerKnown() {
		return 0, "", false
	}
	p := m.partner.State
	why := "partner in " + p.String()
	switch m.state {
	case stPD: // §8.4.2
		switch p {
		case stRecDone:
			return stNormal, why, true
		case stRecover, stRecWait:
		default:
			return stPC, why, true
		}
	case stRecover: // §8.5.2
		switch p {
		case stPC, stResInt, stConflDone:
			return stPC, why, true
		}
	case stRecDone: // §8.7.2
		switch p {
		case stNormal, stRecDone:
			return stNormal, why, true
		case stRecover, stRecWait:
			return stCommInt, why, true
		case stPC:
			return stPC, why, true
		}
	case stNormal: // §8.8.2: an unexpected partner state
		switch p {
		case stNormal, stCommInt, stRecDone:
		case stConflDone:
			if m.cfg.Role == Primary {
				return stCommInt, "partner changed to CONFLICT-DONE unexpectedly (only a primary can be in it)", true
			}
		default:
			return stCommInt, fmt.Sprintf("partner changed to %v unexpectedly", p), true
		}
	case stCommInt: // §8.9.2
		switch p {
		case stNormal, stCommInt, stRecDone:
			return stNormal, why, true
		case stPD, stPC, stConflDone, stResInt:
			return stPC, why, true
		}
		// RECOVER: stay. RECOVER-WAIT: not in the text; stay until
		// RECOVER-DONE (Figure 6, digest Appendix A item 11).
	case stResInt: // §8.11.2
		return stPC, "communications OK, partner in " + p.String(), true
	case stConflDone: // §8.12.2
		if p == stNormal {
			return stNormal, why, true
		}
	}
	return 0, "", false
}

// wantRequest reports whether an UPDREQ (all=false) or UPDREQALL should be
// sent now.
func (m *Machine) wantRequest() (all, ok bool) {
	if !m.commOK || m.reqSent || m.dropping {
		return false, false
	}
	switch m.state {
	case stRecover: // §8.5.2
		if !m.partnerKnown() {
			return false, false
		}
		switch m.partner.State {
		case stPC, stResInt, stConflDone:
			return false, false
		}
		// Lost storage: no record of talking to the partner, but the
		// partner had one when this connection opened.
		if !m.rec.Communicated && m.firstC {
			m.reqAll = true
		}
		return m.reqAll, true
	case stPC: // §8.10, §8.10.2
		if m.cfg.Role == Primary {
			return false, true
		}
		return false, m.partnerKnown() && m.partner.State == stConflDone
	}
	return false, false
}

// desiredTimer is the deadline timer t should have now (zero: disarmed).
func (m *Machine) desiredTimer(now time.Time, t TimerKind) time.Time {
	armed := m.timers[t] // kept while armed: these deadlines are set once
	switch t {
	case TimerStartup:
		if m.state == stStartup && !m.startupExpired {
			return m.startedAt.Add(m.cfg.StartupTime)
		}
	case TimerRecoverWait:
		if m.state == stRecWait {
			return m.rwAt
		}
	case TimerAutoPartnerDown:
		if m.state == stCommInt && !m.commOK && m.cfg.AutoPartnerDown > 0 {
			from := m.since
			if m.commSince.After(from) {
				from = m.commSince
			}
			return from.Add(m.cfg.AutoPartnerDown)
		}
	case TimerCheckpoint:
		if serving(m.cfg.Role, m.state) {
			if !armed.IsZero() {
				return armed
			}
			return now.Add(m.cfg.Checkpoint)
		}
	case TimerUpdateStall:
		if m.reqOut != 0 && m.commOK && !m.dropping && m.cfg.UpdateStall > 0 {
			if !armed.IsZero() {
				return armed
			}
			return m.stallDeadline()
		}
	}
	return time.Time{}
}

// reconcileTimers appends the SetTimer/CancelTimer actions that bring the
// armed timers to the desired ones, in TimerKind order.
func (m *Machine) reconcileTimers(now time.Time, out []Action) []Action {
	for t := TimerKind(1); int(t) <= numTimers; t++ {
		want, have := m.desiredTimer(now, t), m.timers[t]
		switch {
		case want.Equal(have):
		case want.IsZero():
			out = append(out, Action{Kind: CancelTimer, Timer: t})
		default:
			out = append(out, Action{Kind: SetTimer, Timer: t, At: want})
		}
		m.timers[t] = want
	}
	return out
}
