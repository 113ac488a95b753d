package failover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/failover/link"
	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/failover/update"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/server"
)

// Store is what the endpoint needs from the durable database
// (raftstore.Store implements it).
type Store interface {
	Apply(cmd *fsm.Command) (uint64, error)
	State() *fsm.State
}

// PrefixPools is what the endpoint needs from the DHCP server's
// delegated-prefix pools for proportional allocation (*server.Server
// implements it): per-pool counts, and the prefixes to move.
type PrefixPools interface {
	PrefixPools() []server.PrefixPool
	PrefixCandidates(pool, below netip.Prefix, n int, unrecorded bool, want func(*fsm.Binding) bool) []fsm.Resource
}

// DefaultPrefixShare is the fraction of the available delegable prefixes
// the primary hands to the secondary when Config.PrefixShare is nil: the
// same half as the address split (RFC 8156 fixes no value).
const DefaultPrefixShare = 0.5

// DefaultPrefixThreshold is Config.PrefixThreshold's default, in prefixes.
const DefaultPrefixThreshold = 8

// Config configures an Endpoint.
type Config struct {
	// Link is the partner connection's configuration (role, addresses,
	// MCLT, timers, TLS). Its Clock and Logger default to the endpoint's.
	Link link.Config
	// Machine is the state machine's (Role and MCLT are taken from Link).
	Machine machine.Config
	Store   Store
	// T1Fraction is the T1 the server gives as a fraction of the valid
	// lifetime (for the partner lifetime sent, RFC 8156 §4.4.1); default 0.5.
	T1Fraction float64
	// ExpiredHold keeps a freed lease for its last client (as the server's
	// expired-hold-time).
	ExpiredHold time.Duration
	// Covered reports whether a resource is in one of this endpoint's pools
	// (updates for others are refused with ConfigurationConflict).
	Covered func(fsm.Resource) bool
	// ScanInterval is how often owed updates are looked for besides the
	// wake-ups (default 5s).
	ScanInterval time.Duration
	// Pools are the server's delegated-prefix pools, which the primary
	// rebalances (RFC 8156 §4.2.2); nil: no proportional allocation.
	Pools PrefixPools
	// PrefixShare is the fraction of each pool's available delegable
	// prefixes the secondary should hold as FREE-BACKUP (clamped to [0, 1];
	// 0: none). nil means DefaultPrefixShare. Primary only.
	PrefixShare *float64
	// PrefixThreshold is the rebalancing hysteresis in prefixes: nothing
	// moves while the secondary's count is within it of the target
	// (default DefaultPrefixThreshold). Primary only.
	PrefixThreshold int
	// RebalanceInterval is how often the primary checks the balance in
	// NORMAL besides the secondary's POOLREQs (default 1m).
	RebalanceInterval time.Duration
	// SweepInterval is how often, in PARTNER-DOWN, unacknowledged EXPIRED,
	// RELEASED and RESET bindings whose wait is over are freed (RFC 8156
	// §7.2 event 4; default 10s).
	SweepInterval time.Duration
	Clock         clock.Clock
	Logger        *zap.Logger
}

// Endpoint is one RFC 8156 failover endpoint: it drives the state machine
// from the partner link and its timers, persists every transition before
// its STATE goes out, sends binding updates for the bindings that owe one,
// answers the partner's BNDUPD/UPDREQ/UPDREQALL, and implements
// server.Policy so the DHCP server behaves as the current state requires.
//
// Goroutines: Run owns the state machine; every link callback and timer is
// turned into a closure executed by Run's loop goroutine, one at a time.
// The sender goroutine sends owed updates (and the secondary's POOLREQ after
// them); the housekeeper goroutine rebalances delegable prefixes (primary)
// and runs the PARTNER-DOWN sweep; BNDUPDs and BNDREPLYs from the partner
// are handled by short-lived goroutines that hand their changes to a
// committer (commit.go), which groups those arriving together into one log
// entry; a BNDUPD's BNDREPLY goes out only after its commit. Policy
// methods may be called from any goroutine: they read an atomically
// published snapshot of the service the state allows.
type Endpoint struct {
	cfg   Config
	log   *zap.Logger
	clock clock.Clock
	link  *link.Link
	m     *machine.Machine // loop goroutine only
	state *fsm.State
	role  update.Role

	queueMu sync.Mutex
	queue   []func()
	kick    chan struct{}
	wake    chan struct{} // sender
	// handlers counts the goroutines handling the partner's BNDUPDs and
	// BNDREPLYs (Receive starts them; they commit, then reply). Run waits
	// for them after the link has stopped, so none outlives Run.
	handlers sync.WaitGroup
	// poolReqDue: the secondary owes a POOLREQ, sent by the sender after the
	// first pass that starts once it is set (after the owed updates).
	poolReqDue atomic.Bool
	// poolReqSeen: the secondary sent POOLREQ on this connection, so its
	// owed updates are in (§8.8): only then does the primary rebalance on
	// its own (entering NORMAL, periodic checks). Loop goroutine writes.
	poolReqSeen atomic.Bool
	// poolReq carries POOLREQ transaction-ids to the housekeeper;
	// rebalanceNow asks it for a balance check (the primary entered NORMAL).
	poolReq      chan uint32
	rebalanceNow chan struct{}

	svc   atomic.Pointer[machine.Service]
	local atomic.Pointer[wire.StateInfo]
	// told is the STATE the link last took for a handshake (LocalState):
	// Up compares it with the machine's, which may have moved since.
	told atomic.Pointer[wire.StateInfo]
	comm atomic.Bool
	// status is a snapshot for `tandem status` (loop goroutine writes).
	status atomic.Pointer[Status]

	timers map[machine.TimerKind]clock.Timer // loop goroutine only

	mu       sync.Mutex
	inflight map[uint32]*update.Update // BNDUPD xid -> what it described
	busy     map[fsm.Resource]struct{} // resources with an update in flight
	updReq   map[uint32]uint64         // our UPDREQ/UPDREQALL xid -> machine request id
	unsent   map[fsm.Resource]struct{} // EXPIRED/RELEASED not yet sent (same-client reuse)
	waiters  map[uint32]chan struct{}  // xid -> closed when its BNDREPLY arrived
	skew     atomic.Int64

	updates *committer // the partner's BNDUPDs (OriginPartner)
	replies *committer // the partner's BNDREPLYs to ours (OriginFailover)
	// lastContact is when the partner's last message arrived (Unix ns, 0:
	// never); written with every Contact, read by Status.
	lastContact atomic.Int64
	resync      resyncTracker // recovery transfers in progress (Status)

	dirtyMu   sync.Mutex
	dirty     []fsm.Resource // committed bindings that owe an update (sender)
	dirtyFull bool           // scan everything owed instead
	dnsWarned atomic.Bool    // the §9 warning was logged
}

// Status is the endpoint's state for operators.
type Status struct {
	Role             string `json:"role"`
	State            string `json:"state"`
	PartnerState     string `json:"partner_state"`
	StateSince       string `json:"state_since"`
	CommunicationsOK bool   `json:"communications_ok"`
	UnackedUpdates   int    `json:"unacked_updates"`
	OwedUpdates      int    `json:"owed_updates"`
	MCLT             string `json:"mclt"`
	ClockSkewSeconds int64  `json:"clock_skew_seconds"`
	LastContact      string `json:"last_contact,omitempty"`
	// StateCode and PartnerStateCode are the RFC 8156 server-state values
	// of State and PartnerState (0: the partner's state is unknown).
	StateCode        uint8 `json:"state_code"`
	PartnerStateCode uint8 `json:"partner_state_code"`
	// SecondsInState is how long this endpoint has been in State.
	SecondsInState int64 `json:"seconds_in_state"`
	// SecondsSinceContact is the time since the partner's last message;
	// nil if it never sent one.
	SecondsSinceContact *int64 `json:"seconds_since_last_contact,omitempty"`

	since time.Time // when State was entered (Status computes SecondsInState)
	// HeldInStartup: a snapshot restore holds the endpoint in STARTUP
	// (serving nobody) until `tandem failover continue`.
	HeldInStartup bool `json:"held_in_startup"`
	// ResyncSending is an UPDREQ/UPDREQALL of the partner this endpoint is
	// answering; ResyncReceiving one it sent and waits to see done (nil:
	// none).
	ResyncSending   *ResyncStatus `json:"resync_sending,omitempty"`
	ResyncReceiving *ResyncStatus `json:"resync_receiving,omitempty"`
	// RejectedConnections counts incoming failover connections refused
	// since start, by reason (link.Stats.Rejected; secondary only).
	RejectedConnections map[string]uint64 `json:"rejected_connections,omitempty"`
}

// New builds an endpoint from the record stored in cfg.Store (or none: first
// start). Nothing happens until Run.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.T1Fraction == 0 {
		cfg.T1Fraction = 0.5
	}
	if cfg.ScanInterval == 0 {
		cfg.ScanInterval = 5 * time.Second
	}
	if cfg.PrefixShare == nil {
		v := DefaultPrefixShare
		cfg.PrefixShare = &v
	}
	if cfg.PrefixThreshold == 0 {
		cfg.PrefixThreshold = DefaultPrefixThreshold
	}
	if cfg.RebalanceInterval == 0 {
		cfg.RebalanceInterval = time.Minute
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 10 * time.Second
	}
	if cfg.Link.Clock == nil {
		cfg.Link.Clock = cfg.Clock
	}
	if cfg.Link.Logger == nil {
		cfg.Link.Logger = cfg.Logger
	}
	cfg.Machine.Role = cfg.Link.Role
	cfg.Machine.MCLT = cfg.Link.MCLT
	e := &Endpoint{cfg: cfg, log: cfg.Logger.Named("failover"), clock: cfg.Clock, state: cfg.Store.State(),
		role: cfg.Link.Role, kick: make(chan struct{}, 1), wake: make(chan struct{}, 1), poolReq: make(chan uint32, 4), rebalanceNow: make(chan struct{}, 1),
		timers: map[machine.TimerKind]clock.Timer{}, inflight: map[uint32]*update.Update{},
		busy: map[fsm.Resource]struct{}{}, updReq: map[uint32]uint64{}, unsent: map[fsm.Resource]struct{}{},
		waiters: map[uint32]chan struct{}{}}
	e.updates = newCommitter(cfg.Store, cfg.Clock, fsm.OriginPartner, "BNDUPD")
	e.replies = newCommitter(cfg.Store, cfg.Clock, fsm.OriginFailover, "BNDREPLY")
	var rec *fsm.EndpointState
	if r := e.state.Endpoint(); r.State != 0 || r.HeldInStartup {
		rec = &r
	}
	m, acts, err := machine.New(cfg.Machine, rec, e.clock.Now())
	if err != nil {
		return nil, err
	}
	e.m = m
	l, err := link.New(cfg.Link, e)
	if err != nil {
		return nil, err
	}
	e.link = l
	e.publish()
	// The initial actions (enter STARTUP, persist, arm the startup timer)
	// run first thing in Run's loop.
	e.enqueue(func() { e.do(acts) })
	return e, nil
}

// Run runs the link, the loop and the sender until ctx is done.
func (e *Endpoint) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Wake the sender when a binding that owes the partner an update is
	// committed: Grant, Free and Changed run before the server's commit, so
	// their wake-ups alone find nothing owed yet and the update would wait
	// for the periodic scan.
	defer e.state.AddObserver(owedObserver{e})()
	var wg sync.WaitGroup
	linkErr := make(chan error, 1)
	wg.Add(3)
	go func() { defer wg.Done(); linkErr <- e.link.Run(ctx) }()
	go func() { defer wg.Done(); e.sender(ctx) }()
	go func() { defer wg.Done(); e.housekeeper(ctx) }()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			e.handlers.Wait() // the link is stopped: no Receive adds more
			for _, t := range e.timers {
				t.Stop()
			}
			e.releaseWaiters() // an UPDREQ answer in progress must not wait forever
			return nil
		case err := <-linkErr:
			if err != nil {
				cancel()
				wg.Wait()
				e.handlers.Wait()
				return fmt.Errorf("failover link: %w", err)
			}
		case <-e.kick:
			for {
				e.queueMu.Lock()
				q := e.queue
				e.queue = nil
				e.queueMu.Unlock()
				if len(q) == 0 {
					break
				}
				for _, f := range q {
					f()
				}
			}
		}
	}
}

// owedObserver tells the sender which committed bindings owe an update.
// It runs under the State's write lock: it only appends to a bounded list
// and does a non-blocking send.
type owedObserver struct{ e *Endpoint }

func (o owedObserver) BindingChanged(_, nb *fsm.Binding) {
	if nb != nil && nb.Owed() {
		o.e.markDirty(nb.Resource)
	}
}

func (o owedObserver) Reset(*fsm.View) { o.e.wakeSender() }

// maxDirty bounds the list of changed resources the sender is told about;
// beyond it the sender scans everything owed instead.
const maxDirty = 4096

// markDirty records that r now owes the partner an update and wakes the
// sender, which sends just those (a full scan of the owed index on every
// commit cost the primary 15% of its CPU at 3,000 leases/s).
func (e *Endpoint) markDirty(r fsm.Resource) {
	e.dirtyMu.Lock()
	if !e.dirtyFull {
		if len(e.dirty) < maxDirty {
			e.dirty = append(e.dirty, r)
		} else {
			e.dirty, e.dirtyFull = nil, true
		}
	}
	e.dirtyMu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// takeDirty returns the resources changed since the last call, or full
// when the sender must scan everything owed (a wake-up from anything but a
// commit, or too many changes).
func (e *Endpoint) takeDirty() (rs []fsm.Resource, full bool) {
	e.dirtyMu.Lock()
	defer e.dirtyMu.Unlock()
	rs, full = e.dirty, e.dirtyFull
	e.dirty, e.dirtyFull = nil, false
	return rs, full
}

// enqueue schedules f on the loop goroutine (never blocks).
func (e *Endpoint) enqueue(f func()) {
	e.queueMu.Lock()
	e.queue = append(e.queue, f)
	e.queueMu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// wakeSender makes the sender scan every owed binding (entering a state
// that sends, a new connection, a rejected update to resend, ...).
func (e *Endpoint) wakeSender() {
	e.dirtyMu.Lock()
	e.dirty, e.dirtyFull = nil, true
	e.dirtyMu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// publish refreshes the snapshots other goroutines read. Loop goroutine.
func (e *Endpoint) publish() {
	svc := e.m.Service()
	e.svc.Store(&svc)
	ls := e.m.LocalState()
	e.local.Store(&ls)
	e.comm.Store(e.m.CommOK())
	ps, ok := e.m.PartnerState()
	st := &Status{Role: e.cfg.Link.Role.String(), State: e.m.State().String(), StateSince: e.m.StateSince().UTC().Format(time.RFC3339),
		CommunicationsOK: e.m.CommOK(), MCLT: e.cfg.Link.MCLT.String(), StateCode: uint8(e.m.State()), since: e.m.StateSince(),
		HeldInStartup: e.m.Held()}
	if ok {
		st.PartnerState = ps.String()
		st.PartnerStateCode = uint8(ps)
	}
	if r := e.m.Record(); r.LastContact != 0 && e.lastContact.Load() == 0 {
		e.lastContact.Store(time.Unix(r.LastContact, 0).UnixNano()) // stored before a restart
	}
	e.status.Store(st)
}

// do executes a batch of machine actions in order. Loop goroutine.
//
// If a Persist fails the batch stops, the connection is dropped and the
// machine, now ahead of storage, is replaced by one restarted from the
// stored record (restart): nothing unstored is ever published or announced
// (S2). do reports whether the batch ran to the end.
func (e *Endpoint) do(acts []machine.Action) bool {
	normal, wake := false, false
	for _, a := range acts {
		switch a.Kind {
		case machine.EnterState:
			e.log.Info("failover state", zap.Stringer("from", a.From), zap.Stringer("to", a.To), zap.String("reason", a.Reason))
			normal = a.To == wire.StateNormal
		case machine.Persist:
			rec := a.Record
			if _, err := e.cfg.Store.Apply(&fsm.Command{Type: fsm.CmdSetEndpoint, Time: e.clock.Now().UnixNano(),
				Origin: fsm.OriginFailover, Note: "endpoint " + wire.ServerState(rec.State).String(), Endpoint: &rec}); err != nil {
				// S2: no STATE may announce what is not stored. Drop the
				// connection; the partner sees us gone, we retry on reconnect.
				e.log.Error("persist failover state failed: dropping the partner connection, restarting from the stored state", zap.Error(err))
				_ = e.link.Send(wire.NewDisconnect(e.link.NewXID(), 0, wire.Status{Code: wire.StatusUnspecFail, Message: "state not stored"}))
				e.restart()
				return false
			}
		case machine.SendState:
			if err := e.link.SendState(a.State); err != nil && !errors.Is(err, link.ErrNotConnected) {
				e.log.Warn("send STATE", zap.Error(err))
			}
		case machine.SendUpdReq, machine.SendUpdReqAll:
			xid := e.link.NewXID()
			msg := wire.NewUpdReq(xid, 0)
			if a.Kind == machine.SendUpdReqAll {
				msg = wire.NewUpdReqAll(xid, 0)
			}
			e.mu.Lock()
			e.updReq[xid] = a.Req
			e.mu.Unlock()
			e.resync.receiving.Store(&resyncProgress{kind: resyncKind(a.Kind == machine.SendUpdReqAll), started: e.clock.Now()})
			if err := e.link.Send(msg); err != nil {
				e.log.Warn("send update request", zap.Stringer("type", msg.Type), zap.Error(err))
			}
		case machine.FlushUpdates:
			wake = true // after publish: the sender sends only in the new state
		case machine.SendPoolReq:
			// After the owed updates of the FlushUpdates before it are
			// queued (§8.8): the sender's next pass sends it.
			e.poolReqDue.Store(true)
			wake = true
		case machine.SetTimer:
			if t := e.timers[a.Timer]; t != nil {
				t.Stop()
			}
			kind := a.Timer
			d := a.At.Sub(e.clock.Now())
			e.timers[kind] = e.clock.AfterFunc(d, func() {
				e.enqueue(func() { e.do(e.m.Timer(e.clock.Now(), kind)) })
			})
		case machine.CancelTimer:
			if t := e.timers[a.Timer]; t != nil {
				t.Stop()
				delete(e.timers, a.Timer)
			}
		case machine.Alarm:
			e.log.Error("ALARM: "+a.Reason, zap.Stringer("state", e.m.State()))
		case machine.DropConnection:
			_ = e.link.Send(wire.NewDisconnect(e.link.NewXID(), 0, wire.Status{Code: wire.StatusUnspecFail, Message: a.Reason}))
		}
	}
	e.publish()
	if wake {
		e.wakeSender()
	}
	if normal && e.role == update.Primary && e.poolReqSeen.Load() {
		// The secondary's POOLREQ came while we were not yet in NORMAL:
		// check the balance now rather than at the next interval.
		select {
		case e.rebalanceNow <- struct{}{}:
		default:
		}
	}
	return true
}

// restart replaces the state machine, ahead of storage after a failed
// Persist, by one started from the stored record, as package machine asks:
// STARTUP from what is stored is always a safe place to resume from. Its
// STARTUP record is not written (the store just failed, and a crash now
// resumes from the same stored record anyway); the STARTUP timer, or the
// partner's next connection, paces the next attempt. Loop goroutine.
func (e *Endpoint) restart() {
	for k, t := range e.timers {
		t.Stop()
		delete(e.timers, k)
	}
	var rec *fsm.EndpointState
	if r := e.state.Endpoint(); r.State != 0 || r.HeldInStartup {
		rec = &r
	}
	m, acts, err := machine.New(e.cfg.Machine, rec, e.clock.Now())
	if err != nil {
		e.log.Error("restart the failover endpoint from its stored state", zap.Error(err))
		return
	}
	e.m = m
	e.mu.Lock()
	e.updReq = map[uint32]uint64{} // the old machine's requests
	e.mu.Unlock()
	e.do(slices.DeleteFunc(acts, func(a machine.Action) bool { return a.Kind == machine.Persist }))
}

// contact tells the machine a message arrived from the partner at at.
// Loop goroutine.
func (e *Endpoint) contact(at time.Time) {
	e.m.Contact(at)
	e.lastContact.Store(at.UnixNano())
}

// LocalState implements link.Handler: the STATE the link sends right
// after a handshake (remembered, for Up).
func (e *Endpoint) LocalState() wire.StateInfo {
	ls := e.local.Load()
	e.told.Store(ls)
	return *ls
}

// Up implements link.Handler. The handshake's STATE was taken before this
// closure runs: if the machine's state moved in between while
// communications were down (the STARTUP timer expiring as the connection
// came up), the partner holds a stale STATE (still STARTUP, say) and would
// wait for a change that already happened; the current one is sent unless
// CommUp sends it anyway.
func (e *Endpoint) Up(p link.Partner) {
	e.skew.Store(int64(p.Skew / time.Second))
	e.enqueue(func() {
		e.contact(p.ReceivedAt)
		acts := e.m.CommUp(p.ReceivedAt, p.State)
		sends := false
		for _, a := range acts {
			sends = sends || a.Kind == machine.SendState
		}
		e.do(acts)
		if told, now := e.told.Load(), e.m.LocalState(); !sends && e.m.CommOK() && (told == nil || !sameState(*told, now)) {
			if err := e.link.SendState(now); err != nil && !errors.Is(err, link.ErrNotConnected) {
				e.log.Warn("send STATE", zap.Error(err))
			}
		}
		e.wakeSender()
	})
}

// sameState reports whether two STATEs say the same.
func sameState(a, b wire.StateInfo) bool {
	pd := func(p *uint32) int64 {
		if p == nil {
			return -1
		}
		return int64(*p)
	}
	return a.State == b.State && a.Flags == b.Flags && a.StartTime == b.StartTime && pd(a.PartnerDownTime) == pd(b.PartnerDownTime)
}

// Down implements link.Handler.
func (e *Endpoint) Down(err error) {
	e.enqueue(func() {
		e.releaseWaiters()
		e.poolReqDue.Store(false)
		e.poolReqSeen.Store(false)
		e.mu.Lock()
		e.updReq = map[uint32]uint64{}
		e.mu.Unlock()
		e.resync.receiving.Store(nil) // asked again on the next connection
		e.do(e.m.CommDown(e.clock.Now(), err))
	})
}

// releaseWaiters forgets every update in flight and wakes whoever waits
// for their BNDREPLYs (the connection is gone).
func (e *Endpoint) releaseWaiters() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inflight = map[uint32]*update.Update{}
	e.busy = map[fsm.Resource]struct{}{}
	for _, w := range e.waiters {
		close(w)
	}
	e.waiters = map[uint32]chan struct{}{}
}

// Receive implements link.Handler.
func (e *Endpoint) Receive(msg *wire.Message, at time.Time) {
	switch msg.Type {
	case wire.MsgBndUpd:
		e.handlers.Add(1)
		go func() { defer e.handlers.Done(); e.handleBndUpd(msg) }() // commits, then replies; never blocks the link
		e.enqueue(func() { e.contact(at) })
	case wire.MsgBndReply:
		e.handlers.Add(1)
		go func() { defer e.handlers.Done(); e.handleBndReply(msg) }()
		e.enqueue(func() { e.contact(at) })
	case wire.MsgState:
		e.enqueue(func() {
			e.contact(at)
			if si, err := msg.StateInfo(); err == nil {
				e.do(e.m.ReceiveState(at, si))
			}
		})
	case wire.MsgUpdDone:
		e.enqueue(func() {
			e.contact(at)
			e.mu.Lock()
			req, ok := e.updReq[msg.XID]
			delete(e.updReq, msg.XID)
			e.mu.Unlock()
			if ok {
				e.resync.receiving.Store(nil)
				e.do(e.m.UpdDone(at, req))
			}
		})
	case wire.MsgUpdReq, wire.MsgUpdReqAll:
		e.enqueue(func() { e.contact(at) })
		go e.answerUpdReq(msg.XID, msg.Type == wire.MsgUpdReqAll)
	case wire.MsgPoolReq:
		e.enqueue(func() { // after any Down of an earlier connection
			e.contact(at)
			e.poolReqSeen.Store(true)
			select {
			case e.poolReq <- msg.XID: // rebalance, then POOLRESP
			default: // a rebalance is already due: it covers this request too
				_ = e.link.Send(wire.NewPoolResp(msg.XID, 0))
			}
		})
	default:
		e.enqueue(func() { e.contact(at) })
	}
}

// lookup reads the live binding table.
func (e *Endpoint) lookup(r fsm.Resource) (fsm.Binding, bool) { return e.state.Get(r) }

// handleBndUpd processes one BNDUPD: decide, commit, and only then reply
// (B8). The commit may share its log entry with other BNDUPDs' (the
// updates committer, commit.go); the BNDREPLY is sent from its done
// callback, once this BNDUPD's ops are durable.
func (e *Endpoint) handleBndUpd(msg *wire.Message) {
	p := update.Params{Role: e.role, Covered: e.cfg.Covered}
	cd, lp := msg.ClientData(), msg.LonePrefix()
	if cd == nil && lp == nil {
		return
	}
	var res update.Result
	e.updates.submit(&commitJob{xid: msg.XID,
		plan: func(now time.Time) []fsm.Op {
			if cd != nil {
				res = update.ApplyBndUpd(e.lookup, cd, p, now)
			} else {
				res = update.ApplyBndUpdPrefix(e.lookup, lp, p, now)
			}
			return res.Ops
		},
		done: func(err error) {
			if err != nil {
				e.log.Warn("BNDUPD not stored: no BNDREPLY (the partner will resend)", zap.Error(err))
				return
			}
			var reply *wire.Message
			if res.Reply != nil {
				reply = wire.NewBndReply(msg.XID, 0, res.Reply)
			} else {
				reply = wire.NewBndReplyPrefix(msg.XID, 0, res.ReplyPrefix)
			}
			if p := e.resync.receiving.Load(); p != nil {
				p.bindings.Add(1)
			}
			if res.DNSIgnored && e.dnsWarned.CompareAndSwap(false, true) {
				// RFC 8156 §9: a server that does no DNS update SHOULD say so.
				e.log.Warn("the partner sends DNS update information in its binding updates; this server does no DNS update and ignores it (RFC 8156 §9); logged once")
			}
			if err := e.link.Send(reply); err != nil {
				e.log.Debug("send BNDREPLY", zap.Error(err))
			}
			if len(res.SendNow) > 0 {
				e.wakeSender()
			}
		}})
}

// handleBndReply applies the partner's answer to one of our BNDUPDs.
func (e *Endpoint) handleBndReply(msg *wire.Message) {
	e.mu.Lock()
	u := e.inflight[msg.XID]
	delete(e.inflight, msg.XID)
	w := e.waiters[msg.XID]
	delete(e.waiters, msg.XID)
	e.mu.Unlock()
	if u == nil {
		if w != nil {
			close(w)
		}
		return
	}
	cd, lp := msg.ClientData(), msg.LonePrefix()
	e.replies.submit(&commitJob{xid: msg.XID,
		plan: func(now time.Time) []fsm.Op {
			var res update.ReplyResult
			if cd != nil {
				res = update.ApplyBndReply(e.lookup, u.Bindings, cd, e.cfg.ExpiredHold, now)
			} else if lp != nil && len(u.Bindings) == 1 {
				res = update.ApplyBndReplyPrefix(e.lookup, u.Bindings[0], lp, e.cfg.ExpiredHold, now)
			}
			return res.Ops
		},
		done: func(err error) {
			if err != nil {
				e.log.Warn("BNDREPLY not stored: the update stays owed", zap.Error(err))
			}
			// The bindings stay busy until the acknowledgement is stored, so
			// the sender does not resend what is merely waiting to commit.
			e.mu.Lock()
			for _, b := range u.Bindings {
				delete(e.busy, b.Resource)
			}
			e.mu.Unlock()
			if w != nil {
				close(w) // after the commit: UPDDONE follows only stored acknowledgements
			}
		}})
}

// sendUpdate sends one BNDUPD (waiting for the partner's window) and
// returns a channel closed when its BNDREPLY arrived or the link dropped.
func (e *Endpoint) sendUpdate(ctx context.Context, u *update.Update) (<-chan struct{}, error) {
	xid := e.link.NewXID()
	done := make(chan struct{})
	e.mu.Lock()
	e.inflight[xid] = u
	e.waiters[xid] = done
	for _, b := range u.Bindings {
		e.busy[b.Resource] = struct{}{}
		delete(e.unsent, b.Resource)
	}
	e.mu.Unlock()
	if err := e.link.SendBndUpd(ctx, u.Message(xid, 0)); err != nil {
		e.mu.Lock()
		delete(e.inflight, xid)
		delete(e.waiters, xid)
		for _, b := range u.Bindings {
			delete(e.busy, b.Resource)
		}
		e.mu.Unlock()
		return nil, err
	}
	return done, nil
}

// sending reports whether owed updates go out in the current state.
func (e *Endpoint) sending() bool {
	if !e.comm.Load() {
		return false
	}
	switch wire.ServerState(e.local.Load().State) {
	case wire.StateNormal, wire.StateConflictDone, wire.StateRecoverDone:
		return true
	}
	return false
}

// sender sends the updates owed to the partner: on wake-ups (a commit that
// owes one, entering NORMAL) and every ScanInterval. Sender goroutine.
func (e *Endpoint) sender(ctx context.Context) {
	tick := e.clock.NewTimer(e.cfg.ScanInterval)
	defer tick.Stop()
	for {
		// A wake-up sends what changed (SelectEager: not the updates held back
		// after an OutdatedBindingInformation dispute); the periodic scan
		// sends everything owed (RFC 8156 §7.5.4).
		sel := update.SelectEager
		var dirty []fsm.Resource
		full := true
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
			dirty, full = e.takeDirty()
		case <-tick.C():
			tick.Reset(e.cfg.ScanInterval)
			sel = update.SelectOwed
			e.takeDirty() // the full scan covers them
		}
		if !e.sending() {
			continue
		}
		// A POOLREQ owed before this pass began goes out after it (§8.8).
		poolReq := e.poolReqDue.Swap(false)
		if !full && !poolReq {
			e.sendDirty(ctx, dirty)
			continue
		}
		var from fsm.Resource
		started := false
		for ctx.Err() == nil && e.sending() {
			owed := e.state.Owed(from, 512)
			if started && len(owed) > 0 && owed[0].Resource == from {
				owed = owed[1:] // Owed starts at from, which was sent last round
			}
			if len(owed) == 0 {
				break
			}
			from, started = owed[len(owed)-1].Resource, true
			e.sendBindings(ctx, owed, sel)
			if len(owed) < 511 {
				break
			}
		}
		if poolReq && e.sending() {
			if err := e.link.Send(wire.NewPoolReq(e.link.NewXID(), 0)); err != nil {
				e.log.Debug("send POOLREQ", zap.Error(err))
			}
		}
	}
}

// sendDirty sends the updates owed by the bindings of rs (the commits the
// owed observer reported), skipping those no longer owed or in flight.
// Sender goroutine.
func (e *Endpoint) sendDirty(ctx context.Context, rs []fsm.Resource) {
	if len(rs) == 0 {
		return
	}
	todo := make([]fsm.Binding, 0, len(rs))
	seen := make(map[fsm.Resource]struct{}, len(rs))
	for _, r := range rs {
		if _, dup := seen[r]; dup {
			continue
		}
		seen[r] = struct{}{}
		if b, ok := e.state.Get(r); ok && b.Owed() {
			todo = append(todo, b)
		}
	}
	e.sendBindings(ctx, todo, update.SelectEager)
}

// sendBindings sends the updates that sel picks from bs, less the bindings
// already in flight, and stops at the first send the link refuses. It
// overwrites bs's elements (its length stays). Sender goroutine.
func (e *Endpoint) sendBindings(ctx context.Context, bs []fsm.Binding, sel func([]fsm.Binding) []fsm.Binding) {
	e.mu.Lock()
	bs = slices.DeleteFunc(bs, func(b fsm.Binding) bool { _, inFlight := e.busy[b.Resource]; return inFlight })
	e.mu.Unlock()
	ups, skipped := update.Updates(sel(bs), e.clock.Now())
	for _, b := range skipped {
		e.log.Warn("binding cannot be described in a BNDUPD; not sent", zap.Stringer("resource", b.Resource))
	}
	for i := range ups {
		if _, err := e.sendUpdate(ctx, &ups[i]); err != nil {
			return
		}
	}
}

// answerUpdReq answers UPDREQ (owed updates) or UPDREQALL (everything):
// BNDUPDs under flow control, then UPDDONE once every one was acknowledged.
func (e *Endpoint) answerUpdReq(xid uint32, all bool) {
	if all {
		if err := e.holdForLostPartner(); err != nil {
			// Answering without the holds could free leases the partner's
			// clients still hold. Left unanswered, the request would stall
			// for good (our CONTACTs keep the partner's update-stall timer
			// from firing): drop the connection instead, so that the
			// partner, still in RECOVER, asks again on the next one.
			e.log.Error("UPDREQALL not answered: holding the partner's leases failed; dropping the connection", zap.Error(err))
			_ = e.link.Send(wire.NewDisconnect(e.link.NewXID(), 0, wire.Status{Code: wire.StatusUnspecFail,
				Message: "cannot store the holds an UPDREQALL needs"}))
			return
		}
	}
	// Stream from a consistent view in chunks, so a million bindings never
	// sit in memory as one list; the link's window bounds what is in flight,
	// and the done channels kept are only those not yet answered.
	v := e.state.View()
	prog := &resyncProgress{kind: resyncKind(all), started: e.clock.Now(), total: int64(v.Stats().Bindings)}
	e.resync.sending.Store(prog)
	defer e.resync.sending.CompareAndSwap(prog, nil)
	ctx := context.Background()
	var pending []<-chan struct{}
	send := func(chunk []fsm.Binding) bool {
		if all {
			chunk = update.SelectAll(chunk)
		} else {
			chunk = update.SelectOwed(chunk)
		}
		ups, _ := update.Updates(chunk, e.clock.Now())
		for i := range ups {
			d, err := e.sendUpdate(ctx, &ups[i])
			if err != nil {
				return false // connection gone: the partner asks again on reconnect
			}
			pending = append(pending, d)
			prog.bindings.Add(int64(len(ups[i].Bindings)))
			for len(pending) > 0 && closed(pending[0]) {
				pending = pending[1:]
			}
		}
		return true
	}
	chunk := make([]fsm.Binding, 0, answerChunk)
	ok := true
	v.Ascend(fsm.Resource{}, func(b *fsm.Binding) bool {
		chunk = append(chunk, *b)
		if len(chunk) == answerChunk {
			ok = send(chunk)
			chunk = chunk[:0]
		}
		return ok
	})
	if !ok || !send(chunk) {
		return
	}
	for _, d := range pending {
		<-d
	}
	// Not gated on e.comm: that is the loop goroutine's view, published
	// after it has processed Up, and a partner's UPDREQALL can arrive (and,
	// with nothing to send, be answered) before that; skipping UPDDONE then
	// left a fresh partner in RECOVER until the next connection. A link that
	// is down refuses the Send; a new connection's partner ignores the old
	// transaction-id.
	if err := e.link.Send(wire.NewUpdDone(xid, 0)); err != nil && !errors.Is(err, link.ErrNotConnected) {
		e.log.Debug("send UPDDONE", zap.Error(err))
	}
}

// holdForLostPartner commits update.HoldForLostPartner for every binding
// that needs it, in entries of holdChunk, before an UPDREQALL is answered:
// the partner lost its database and may have renewed leases beyond what it
// told us. A binding a client changed meanwhile is looked at again.
func (e *Endpoint) holdForLostPartner() error {
	held := 0
	var from fsm.Resource
	for {
		var cands []fsm.Resource
		now := e.clock.Now()
		v := e.state.View()
		v.Ascend(from, func(b *fsm.Binding) bool {
			if b.Resource == from {
				return true
			}
			if _, ok := update.HoldForLostPartner(b, e.cfg.Link.MCLT, now); ok {
				cands = append(cands, b.Resource)
			}
			from = b.Resource
			return len(cands) < holdChunk
		})
		if len(cands) == 0 {
			break
		}
		for tries := 0; ; tries++ {
			ops := make([]fsm.Op, 0, len(cands))
			for _, r := range cands {
				b, ok := e.lookup(r)
				if !ok {
					continue
				}
				if nb, hold := update.HoldForLostPartner(&b, e.cfg.Link.MCLT, now); hold {
					ops = append(ops, fsm.Op{Resource: r, IfRev: b.Rev, Binding: nb})
				}
			}
			if len(ops) == 0 {
				break
			}
			_, err := e.cfg.Store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginFailover,
				Note: fmt.Sprintf("partner lost its database (UPDREQALL): hold %d leases for the MCLT past what it may have promised", len(ops)), Ops: ops})
			if errors.Is(err, fsm.ErrConflict) && tries < holdRetries {
				continue // a client renewed one meanwhile: read them again
			}
			if err != nil {
				return fmt.Errorf("hold leases for the partner's clients: %w", err)
			}
			held += len(ops)
			break
		}
	}
	if held > 0 {
		e.log.Info("partner lost its database: leases it may have renewed are held until the MCLT past its acknowledged lifetime",
			zap.Int("held", held), zap.Duration("mclt", e.cfg.Link.MCLT))
	}
	return nil
}

// holdChunk is how many bindings one holdForLostPartner entry changes;
// holdRetries bounds the write races one entry may lose (each retry
// re-reads the bindings, so only a client changing one of them in every
// interval keeps it losing).
const (
	holdChunk   = 1024
	holdRetries = 100
)

// answerChunk is how many bindings answerUpdReq groups into updates at a time.
const answerChunk = 4096

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Status returns the endpoint's state for `tandem status`.
func (e *Endpoint) Status() Status {
	st := *e.status.Load()
	now := e.clock.Now()
	st.ClockSkewSeconds = e.skew.Load()
	st.SecondsInState = int64(now.Sub(st.since) / time.Second)
	if lc := e.lastContact.Load(); lc != 0 {
		t := time.Unix(0, lc)
		st.LastContact = t.UTC().Format(time.RFC3339)
		ago := max(int64(now.Sub(t)/time.Second), 0)
		st.SecondsSinceContact = &ago
	}
	e.mu.Lock()
	st.UnackedUpdates = len(e.inflight)
	e.mu.Unlock()
	st.OwedUpdates = e.state.Stats().Owed
	st.ResyncSending = e.resync.sending.Load().status()
	st.ResyncReceiving = e.resync.receiving.Load().status()
	if r := e.link.Stats().Rejected; len(r) > 0 {
		st.RejectedConnections = r
	}
	return st
}

// PartnerDown is the operator's "partner is down" command. It persists the
// decision before it returns.
func (e *Endpoint) PartnerDown() error {
	errc := make(chan error, 1)
	e.enqueue(func() {
		acts, err := e.m.OperatorPartnerDown(e.clock.Now())
		if err == nil && !e.do(acts) {
			err = errors.New("the partner-down decision could not be stored: the endpoint restarted from its stored state")
		}
		errc <- err
	})
	return <-errc
}

// Continue is the operator's "continue" for an endpoint held in STARTUP by
// a snapshot restore: it releases the hold (machine.Release) on the loop
// goroutine and returns once the released record is persisted. It fails
// with machine.ErrNotHeld when the endpoint is not held. Run must be running.
func (e *Endpoint) Continue() error {
	errc := make(chan error, 1)
	e.enqueue(func() {
		acts, err := e.m.Release(e.clock.Now())
		if err == nil && !e.do(acts) {
			err = errors.New("the release could not be stored: the endpoint restarted from its stored state, still held; check the disk and try again")
		}
		errc <- err
	})
	return <-errc
}

// --- server.Policy ---

// Serve: responsive answers all; renew-responsive only messages that carry
// our Server ID (RFC 8156 §3); unresponsive none.
func (e *Endpoint) Serve(t dhcpv6.MessageType, forUs bool) bool {
	switch e.svc.Load().Mode {
	case machine.Responsive:
		return true
	case machine.RenewResponsive:
		return forUs && (t == dhcpv6.MessageTypeRenew || t == dhcpv6.MessageTypeRelease || t == dhcpv6.MessageTypeDecline)
	}
	return false
}

// MayAllocate: only in states that allocate.
func (e *Endpoint) MayAllocate() bool { return e.svc.Load().Allocate != machine.PoolNone }

// AddressParity: bit 127, primary 1, secondary 0 (RFC 8156 §4.2.1).
func (e *Endpoint) AddressParity() int { return update.AddressParity(e.role) }

// conditions are the allocation rules' view of the endpoint now.
func (e *Endpoint) conditions() update.Conditions {
	svc := e.svc.Load()
	c := update.Conditions{Role: e.role, MCLT: e.cfg.Link.MCLT, PartnerDown: !svc.PartnerDown.IsZero(),
		Sent: func(b *fsm.Binding) bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			_, unsent := e.unsent[b.Resource]
			return !unsent
		}}
	if c.PartnerDown {
		// Rounded up: the waits counted from it (PartnerPoolAt, ReuseAt) are
		// whole seconds, and must never end before MCLT after the entry.
		c.PartnerDownTime = svc.PartnerDown.Unix()
		if svc.PartnerDown.Nanosecond() != 0 {
			c.PartnerDownTime++
		}
	}
	return c
}

// Available applies the RFC 8156 reuse rules.
func (e *Endpoint) Available(b *fsm.Binding, duid string) bool {
	return update.Available(e.conditions(), b, duid, e.clock.Now())
}

// PartnerPool: in PARTNER-DOWN from PD + MCLT on (RFC 8156 §8.4.1).
func (e *Endpoint) PartnerPool() bool {
	c := e.conditions()
	return c.PartnerDown && e.clock.Now().Unix() >= update.PartnerPoolAt(c.PartnerDownTime, c.MCLT)
}

// PartnerAvailable is Available with this server's own prefixes of b's
// pool used up (update.Conditions.OwnPrefixesExhausted: the server calls it
// only after its own pool had nothing left), for prefixes not bound to a
// client.
func (e *Endpoint) PartnerAvailable(b *fsm.Binding, duid string) bool {
	if b.Resource.Type != fsm.IAPD || b.Status == fsm.StatusActive {
		return false
	}
	c := e.conditions()
	c.OwnPrefixesExhausted = true
	return update.Available(c, b, duid, e.clock.Now())
}

// Grant caps the lifetime by the MCLT (except in PARTNER-DOWN) and owes the partner an update.
func (e *Endpoint) Grant(now time.Time, b *fsm.Binding, desired time.Duration) time.Duration {
	svc := e.svc.Load()
	v := update.Grant(now, b, desired, update.GrantParams{MCLT: e.cfg.Link.MCLT, T1Fraction: e.cfg.T1Fraction,
		PartnerDown: !svc.CapMCLT && !svc.PartnerDown.IsZero()})
	return v // the owed observer wakes the sender once the change is committed
}

// Free marks a released or expired lease RELEASED/EXPIRED with an update owed.
func (e *Endpoint) Free(now time.Time, b *fsm.Binding, released bool) {
	update.Free(now, b, released)
	e.mu.Lock()
	e.unsent[b.Resource] = struct{}{}
	e.mu.Unlock()
	// the owed observer wakes the sender once the change is committed
}

// UntrackedAvailable: an unrecorded address of our parity is ours; an
// unrecorded delegable prefix is FREE, the primary's (RFC 8156 §4.2.2): the
// secondary delegates only prefixes handed to it as FREE-BACKUP.
func (e *Endpoint) UntrackedAvailable(t fsm.IAType) bool {
	return t != fsm.IAPD || e.role == update.Primary
}

// Changed owes the partner an update for another status change.
func (e *Endpoint) Changed(now time.Time, b *fsm.Binding) {
	update.Changed(now, b) // the observer wakes the sender after the commit
}
