package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// Handler is what consumes the link: the failover endpoint (state machine,
// binding updates, conflict resolution).
//
// All four methods are called from the goroutine running Link.Run, one at a
// time, never concurrently. They must not block (the same goroutine runs the
// keepalive timers and reads the partner's messages) and they may call
// Send, SendState, NewXID and Stats, but never SendBndUpd (it can wait for
// a BNDREPLY that only this goroutine would deliver).
//
// Up and Down alternate, starting with Up: Down is called once for every
// Up, and only then. A connection that fails before the partner's STATE
// arrives is logged and counted (Stats) but not reported.
type Handler interface {
	// LocalState is the STATE to send right after every handshake.
	LocalState() wire.StateInfo
	// Up: communications OK. The handshake is done and the partner's first
	// STATE has been received.
	Up(p Partner)
	// Down: communications lost. errors.Is(err, ErrKeepaliveExpired,
	// ErrConnectionLost, ErrPartnerDisconnect, ErrTimeSkew, ErrProtocol,
	// ErrShutdown, ErrSuperseded or ErrLocalDisconnect) says why.
	Down(err error)
	// Receive is every later message from the partner, in order, except
	// CONTACT (the link consumes it) and DISCONNECT (Down). at is our clock
	// when the message was read.
	Receive(m *wire.Message, at time.Time)
}

// Partner describes the partner of an established session.
type Partner struct {
	// Addr is the partner's address as the transport reports it.
	Addr string
	// Connect is what the partner sent in CONNECT (if we are secondary) or
	// CONNECTREPLY (if we are primary): its keepalive time, MAX_UNACKED,
	// flags and protocol version.
	Connect wire.ConnectInfo
	// State is the partner's first STATE on this connection; ReceivedAt is
	// our clock when it arrived.
	State      wire.StateInfo
	ReceivedAt time.Time
	// Skew is the partner's clock minus ours, measured from the STATE's
	// sent-time (1 s resolution).
	Skew time.Duration
	// TLS reports whether the session runs over TLS.
	TLS bool
}

// Link is the connection to the partner of one failover relationship. It
// dials (primary) or listens (secondary), runs the handshake, keeps the
// connection alive, moves messages both ways and enforces the partner's
// BNDUPD window. It does not interpret binding updates or endpoint states.
//
// Goroutines: Run's goroutine owns the session (timers, message dispatch,
// every Handler call). Each session has a reader goroutine (the only reader
// of its net.Conn) and a writer goroutine (the only writer once the
// handshake is done); the handshake itself runs on Run's goroutine
// (primary) or on one goroutine per accepted connection (secondary), which
// owns the connection until it hands it to Run. Send, SendBndUpd,
// SendState, NewXID and Stats are safe from any goroutine.
type Link struct {
	cfg    resolved
	h      Handler
	log    *zap.Logger
	clk    clock.Clock
	peerIP netip.Addr

	rlog     *rateLog // rate limits what strangers can make us log
	started  atomic.Bool
	wg       sync.WaitGroup // every goroutine Run starts
	accepted chan *session  // secondary: handshaken connections, to Run

	mu          sync.Mutex
	sess        *session // established session (handshake done); nil if none
	up          bool     // the partner's STATE was received on sess
	gen         uint64   // incremented when a session ends
	xids        xids
	winCh       chan struct{} // closed and replaced when the window may have room
	waiters     int           // SendBndUpd calls waiting on winCh
	pending     []*pendingConn
	nextAttempt time.Time
	listenAddr  net.Addr
	stats       counters
}

// New checks cfg (see Config), loads the TLS files if any, and returns a
// Link that reports to h. Nothing happens until Run.
func New(cfg Config, h Handler) (*Link, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: Handler is nil", ErrInvalidConfig)
	}
	r, err := cfg.resolve(true)
	if err != nil {
		return nil, err
	}
	l := &Link{
		cfg:      *r,
		h:        h,
		clk:      r.Clock,
		peerIP:   r.peer.Addr().Unmap().WithZone(""),
		accepted: make(chan *session),
		winCh:    make(chan struct{}),
		rlog:     newRateLog(r.Clock, r.LogInterval),
	}
	l.log = r.Logger.With(zap.String("relationship", r.Relationship), zap.Stringer("role", r.Role),
		zap.Stringer("peer", r.peer))
	l.xids.init()
	l.stats.init()
	return l, nil
}

// Run runs the link until ctx is done: the primary dials the partner and
// redials with backoff forever; the secondary listens and accepts the
// partner. On return every goroutine it started has ended; if a session
// was established it sent DISCONNECT (ServerShuttingDown) first, and if it
// was up the Handler got Down(ErrShutdown). It returns nil after ctx is
// done, or an error if it could not start (listen failure, second call).
func (l *Link) Run(ctx context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer l.wg.Wait()
	if l.cfg.TLS == nil {
		l.log.Warn("failover link in insecure mode: no TLS configured (RFC 7653 §9.1 wants TLS unless the network is protected)")
	}
	if l.cfg.Role == Primary {
		l.runPrimary(ctx)
		return nil
	}
	return l.runSecondary(ctx)
}

// runPrimary dials, handshakes and serves, forever.
func (l *Link) runPrimary(ctx context.Context) {
	fails := 0
	var wait time.Duration // the first attempt is immediate
	for {
		if wait > 0 {
			at := l.clk.Now().Add(wait)
			t := l.clk.NewTimer(wait)
			l.mu.Lock()
			l.nextAttempt = at
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C():
			}
			l.mu.Lock()
			l.nextAttempt = time.Time{}
			l.mu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		s, err := l.dial(ctx)
		if ctx.Err() != nil {
			if s != nil {
				s.conn.Close()
			}
			return
		}
		if err != nil {
			fails++
			l.handshakeFailed(err)
			wait = l.backoff(fails)
			if isRejection(err) {
				wait = l.cfg.RetryMax
			}
			continue
		}
		reason, _ := l.serve(ctx, s)
		if ctx.Err() != nil {
			return
		}
		fails = 1
		wait = l.cfg.RetryMin
		if isRejection(reason) {
			wait = l.cfg.RetryMax
		}
	}
}

// isRejection: the partner (or we) refused the relationship, as opposed to
// a network failure; RFC 8156 §6.1 asks to retry less often.
func isRejection(err error) bool {
	return err != nil && (errors.Is(err, ErrRejected) || errors.Is(err, ErrRefused) || errors.Is(err, ErrPartnerDisconnect))
}

// backoff is the wait after the n-th consecutive failure: RetryMin doubled
// n-1 times, at most RetryMax.
func (l *Link) backoff(n int) time.Duration {
	d := l.cfg.RetryMin
	for i := 1; i < n && d < l.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, l.cfg.RetryMax)
}

// runSecondary listens and serves accepted sessions until ctx is done.
func (l *Link) runSecondary(ctx context.Context) error {
	ln, err := l.cfg.Transport.Listen(l.cfg.local.String())
	if err != nil {
		return fmt.Errorf("failover link: listen on %v: %w", l.cfg.local, err)
	}
	l.mu.Lock()
	l.listenAddr = ln.Addr()
	l.mu.Unlock()
	l.log.Info("listening for the failover partner", zap.Stringer("addr", ln.Addr()))
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	l.wg.Add(1)
	go l.acceptLoop(ctx, ln)

	var s *session
	for {
		if s == nil {
			select {
			case <-ctx.Done():
			case s = <-l.accepted:
			}
		}
		if ctx.Err() != nil {
			if s != nil {
				s.conn.Close()
			}
			break
		}
		_, s = l.serve(ctx, s)
	}
	ln.Close()
	l.mu.Lock()
	for _, p := range l.pending {
		p.conn.Close()
	}
	l.mu.Unlock()
	return nil
}

// ListenAddr returns the secondary's listening address once Run listens
// (nil before, and always for a primary).
func (l *Link) ListenAddr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listenAddr
}

// serve runs one established session on Run's goroutine until it ends. It
// returns why, and for a secondary the session that superseded it, if any.
func (l *Link) serve(ctx context.Context, s *session) (reason error, next *session) {
	now := l.clk.Now()
	s.lastRecv.Store(now.UnixNano())
	s.lastSent.Store(now.UnixNano())
	keepalive := l.clk.NewTimer(l.cfg.KeepaliveTime)
	defer keepalive.Stop()
	sendTimer := l.clk.NewTimer(s.sendEvery)
	defer sendTimer.Stop()

	l.mu.Lock()
	l.sess, l.up = s, false
	l.stats.sessions++
	l.mu.Unlock()
	l.log.Info("failover connection established", zap.String("remote", s.remote), zap.Bool("tls", s.tls),
		zap.Uint32("partner-keepalive", s.partner.KeepaliveTime), zap.Uint32("partner-max-unacked", s.partner.MaxUnackedBndUpd),
		zap.Duration("skew", s.skew))
	l.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()

	// RFC 8156 §6.1.2, §6.1.3: STATE is the first message after the handshake.
	if err := s.enqueue(wire.NewState(l.NewXID(), 0, l.h.LocalState())); err != nil {
		s.stop(fmt.Errorf("%w: cannot send STATE: %v", ErrProtocol, err), nil)
	}

	accepted := l.accepted
	if l.cfg.Role == Primary {
		accepted = nil
	}
	for {
		select {
		case <-ctx.Done():
			st := wire.Status{Code: wire.StatusServerShuttingDown, Message: "server shutting down"}
			s.stop(ErrShutdown, s.disconnect(st))
			return l.endSession(s), nil
		case <-s.done:
			return l.endSession(s), nil
		case ev := <-s.in:
			l.handle(s, ev)
		case <-keepalive.C():
			now := l.clk.Now()
			last := time.Unix(0, s.lastRecv.Load())
			if d := last.Add(l.cfg.KeepaliveTime).Sub(now); d > 0 {
				keepalive.Reset(d)
				continue
			}
			s.stop(fmt.Errorf("%w: last message %v ago (keepalive time %v)", ErrKeepaliveExpired, now.Sub(last), l.cfg.KeepaliveTime), nil)
		case <-sendTimer.C():
			now := l.clk.Now()
			last := time.Unix(0, s.lastSent.Load())
			if d := last.Add(s.sendEvery).Sub(now); d > 0 {
				sendTimer.Reset(d)
				continue
			}
			// Re-arm before queueing, so that anyone who sees the CONTACT
			// arrive also sees the timer armed.
			sendTimer.Reset(s.sendEvery)
			if err := s.enqueue(wire.NewContact(l.NewXID(), 0)); err != nil {
				l.log.Warn("cannot queue CONTACT", zap.Error(err))
			}
		case ns := <-accepted:
			s.stop(ErrSuperseded, nil)
			l.log.Info("new connection from the partner replaces the established one", zap.String("old", s.remote), zap.String("new", ns.remote))
			return l.endSession(s), ns
		}
	}
}

// endSession unregisters s after it stopped, resets the window and the
// outstanding transaction-ids, and calls Handler.Down if it was up.
func (l *Link) endSession(s *session) error {
	<-s.done
	reason := s.err
	l.mu.Lock()
	wasUp := false
	if l.sess == s {
		wasUp = l.up
		l.sess, l.up = nil, false
		l.gen++
		l.xids.reset()
		l.wakeWindowLocked()
	}
	if wasUp {
		l.stats.downs[reasonLabel(reason)]++
	}
	l.mu.Unlock()
	l.log.Info("failover connection closed", zap.String("remote", s.remote), zap.String("reason", reasonLabel(reason)),
		zap.Bool("was-up", wasUp), zap.Error(reason))
	if wasUp {
		l.h.Down(reason)
	}
	return reason
}

// handle processes one event from the session's reader, on Run's goroutine.
func (l *Link) handle(s *session, ev inbound) {
	select {
	case <-s.done:
		return // stopped: nothing more reaches the Handler
	default:
	}
	if ev.readErr != nil {
		s.stop(ev.readErr, nil)
		return
	}
	if ev.decodeErr != nil {
		if errors.Is(ev.decodeErr, wire.ErrUnknownMessageType) {
			l.mu.Lock()
			l.stats.unknown++
			l.mu.Unlock()
			l.log.Debug("skipping a message of unknown type", zap.Error(ev.decodeErr))
			return
		}
		l.drop(s, fmt.Errorf("%w: %v", ErrProtocol, ev.decodeErr), wire.StatusUnspecFail)
		return
	}
	m, at := ev.m, ev.at
	l.mu.Lock()
	l.stats.received[m.Type]++
	up := l.up
	l.mu.Unlock()
	if !m.Type.HasSentTime() {
		l.drop(s, fmt.Errorf("%w: %v after the handshake", ErrProtocol, m.Type), wire.StatusUnspecFail)
		return
	}
	skew := l.measureSkew(m.SentTime, at)
	if !l.skewOK(skew) {
		l.drop(s, fmt.Errorf("%w: %v sent-time is %v from our clock (limit %v)", ErrTimeSkew, m.Type, skew, l.cfg.MaxSkew),
			wire.StatusExcessiveTimeSkew)
		return
	}
	switch m.Type {
	case wire.MsgContact:
		return
	case wire.MsgConnect, wire.MsgConnectReply:
		l.drop(s, fmt.Errorf("%w: %v after the handshake", ErrProtocol, m.Type), wire.StatusUnspecFail)
		return
	case wire.MsgDisconnect:
		st, _ := m.Status()
		s.stop(&StatusError{Kind: ErrPartnerDisconnect, Status: st}, nil)
		return
	case wire.MsgState:
		if !up {
			si, err := m.StateInfo()
			if err != nil {
				l.drop(s, fmt.Errorf("%w: %v", ErrProtocol, err), wire.StatusUnspecFail)
				return
			}
			l.mu.Lock()
			l.up = true
			l.mu.Unlock()
			l.log.Info("failover communications OK", zap.Stringer("partner-state", si.State),
				zap.Stringer("partner-flags", si.Flags), zap.Duration("skew", skew))
			l.h.Up(Partner{Addr: s.remote, Connect: s.partner, State: si, ReceivedAt: at, Skew: skew, TLS: s.tls})
			return
		}
	default:
		if !up {
			l.drop(s, fmt.Errorf("%w: %v before the partner's STATE (RFC 8156 §6.1)", ErrProtocol, m.Type), wire.StatusUnspecFail)
			return
		}
		if requestFor(m.Type) != 0 {
			l.mu.Lock()
			if l.xids.answer(m.XID, m.Type) {
				if m.Type == wire.MsgBndReply {
					l.wakeWindowLocked()
				}
			} else {
				l.stats.unmatched++
			}
			l.mu.Unlock()
		}
	}
	l.h.Receive(m, at)
}

// drop ends s because of err, telling the partner with a DISCONNECT that
// carries code and err's text (RFC 8156 §7.5.1: drop and log why).
func (l *Link) drop(s *session, err error, code wire.StatusCode) {
	l.log.Warn("dropping the failover connection", zap.String("remote", s.remote), zap.Error(err))
	s.stop(err, s.disconnect(wire.Status{Code: code, Message: err.Error()}))
}

// measureSkew returns sent - at, the partner's clock minus ours, and
// records it for Stats.
func (l *Link) measureSkew(sent uint32, at time.Time) time.Duration {
	d := time.Duration(wire.FOTimeDiff(sent, wire.ToFOTime(at))) * time.Second
	l.mu.Lock()
	l.stats.skew = d
	l.mu.Unlock()
	return d
}

func (l *Link) skewOK(d time.Duration) bool { return d <= l.cfg.MaxSkew && d >= -l.cfg.MaxSkew }

// wakeWindowLocked wakes every SendBndUpd waiting for room. l.mu is held.
func (l *Link) wakeWindowLocked() {
	close(l.winCh)
	l.winCh = make(chan struct{})
}

// NewXID returns a transaction-id (1..2^24-1) that is not the id of any of
// our outstanding requests (RFC 8156 §5.4): a BNDUPD until its BNDREPLY, an
// UPDREQ or UPDREQALL until UPDDONE, a POOLREQ until POOLRESP, across the
// 24-bit wrap. Outstanding ids are forgotten when the connection drops.
func (l *Link) NewXID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.xids.alloc()
}

// Send queues m for the partner without blocking. The writer stamps its
// sent-time just before writing it (RFC 8156 §7.1); m is not modified or
// retained. UPDREQ, UPDREQALL and POOLREQ keep their transaction-id
// outstanding until the answer arrives. Sending a DISCONNECT closes the
// connection once it is written (Handler.Down gets ErrLocalDisconnect).
//
// Errors: ErrNotConnected unless communications are OK (between Up and
// Down); ErrBadMessage for handshake messages (STARTTLS, REPLY, CONNECT,
// CONNECTREPLY), a BNDUPD (use SendBndUpd), an id already outstanding, or
// a message that does not encode; ErrSendQueueFull.
func (l *Link) Send(m *wire.Message) error {
	if m == nil {
		return fmt.Errorf("%w: nil message", ErrBadMessage)
	}
	switch m.Type {
	case wire.MsgStartTLS, wire.MsgReply, wire.MsgConnect, wire.MsgConnectReply:
		return fmt.Errorf("%w: %v belongs to the handshake, which the link runs", ErrBadMessage, m.Type)
	case wire.MsgBndUpd:
		return fmt.Errorf("%w: BNDUPD goes through SendBndUpd (flow control)", ErrBadMessage)
	}
	f, err := frame(m)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.up {
		return ErrNotConnected
	}
	held := tracked(m.Type)
	if held && !l.xids.hold(m.XID, m.Type) {
		return fmt.Errorf("%w: transaction-id %#06x is outstanding", ErrBadMessage, m.XID)
	}
	select {
	case l.sess.out <- f:
		return nil
	default:
		if held {
			l.xids.release(m.XID)
		}
		return ErrSendQueueFull
	}
}

// SendBndUpd queues a BNDUPD, first waiting until fewer than the partner's
// OPTION_F_MAX_UNACKED_BNDUPD of our BNDUPDs await a BNDREPLY: the link
// never has more in flight than the partner advertised (RFC 8156 §6.1.2,
// §6.1.3). A BNDREPLY with the same transaction-id frees the slot. It
// returns ErrNotConnected if there is no session, or if the session ends
// while it waits (the window is then reset), and ctx.Err() if ctx ends
// first. Never call it from a Handler method.
func (l *Link) SendBndUpd(ctx context.Context, m *wire.Message) error {
	if m == nil || m.Type != wire.MsgBndUpd {
		return fmt.Errorf("%w: SendBndUpd takes a BNDUPD", ErrBadMessage)
	}
	f, err := frame(m)
	if err != nil {
		return err
	}
	l.mu.Lock()
	gen := l.gen
	for {
		if !l.up || l.gen != gen {
			l.mu.Unlock()
			return ErrNotConnected
		}
		if uint64(l.xids.bndupds) < uint64(l.sess.partner.MaxUnackedBndUpd) {
			if !l.xids.hold(m.XID, wire.MsgBndUpd) {
				l.mu.Unlock()
				return fmt.Errorf("%w: transaction-id %#06x is outstanding", ErrBadMessage, m.XID)
			}
			select {
			case l.sess.out <- f:
				l.mu.Unlock()
				return nil
			default:
				l.xids.release(m.XID)
				l.mu.Unlock()
				return ErrSendQueueFull
			}
		}
		ch := l.winCh
		l.waiters++
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			l.waiters--
			l.mu.Unlock()
			return ctx.Err()
		}
		l.mu.Lock()
		l.waiters--
	}
}

// SendState sends a STATE message with s (RFC 8156 §6.3) and a fresh
// transaction-id.
func (l *Link) SendState(s wire.StateInfo) error {
	return l.Send(wire.NewState(l.NewXID(), 0, s))
}

// handshakeFailed counts and logs a failed handshake.
func (l *Link) handshakeFailed(err error) {
	label := reasonLabel(err)
	l.mu.Lock()
	l.stats.handshakeFailures[label]++
	l.mu.Unlock()
	l.log.Warn("failover handshake failed", zap.String("reason", label), zap.Error(err))
}

// refused counts an incoming connection that did not become a session
// (Stats.Rejected) and logs it, at most once per source IP and reason per
// Config.LogInterval; the first line logged after a quiet spell is followed
// by one saying how many were suppressed. Any goroutine.
// why, if set, builds the error logged with it (only when logged: a flood
// is refused without formatting a message per connection).
func (l *Link) refused(remote net.Addr, src netip.Addr, reason string, why func() error) {
	ok, suppressed, key := l.rlog.allow(src.String() + " " + reason)
	if ok {
		fields := []zap.Field{zap.String("reason", reason), zap.Stringer("remote", remote)}
		if why != nil {
			fields = append(fields, zap.Error(why()))
		}
		if key == overflowKey {
			fields = append(fields, zap.Bool("rate-limit-table-full", true))
		}
		l.log.Warn("refused a failover connection", fields...)
		if suppressed > 0 {
			l.log.Warn("suppressed similar refusals", zap.String("reason", reason), zap.Stringer("source", src),
				zap.Uint64("suppressed", suppressed), zap.Duration("interval", l.cfg.LogInterval))
		}
	}
	l.mu.Lock()
	l.stats.rejected[reason]++ // after the log, so a reader of Stats sees both
	l.mu.Unlock()
}
