package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// guard bounds a handshake: when the clock reaches the deadline it cancels
// the handshake's context and closes the connection, which makes every
// blocked read or write fail. disarm stops it for good.
type guard struct {
	t      clock.Timer
	cancel context.CancelFunc

	mu       sync.Mutex
	conn     net.Conn
	fired    bool
	disarmed bool
}

func newGuard(clk clock.Clock, d time.Duration, cancel context.CancelFunc) *guard {
	g := &guard{cancel: cancel}
	g.t = clk.AfterFunc(d, g.fire)
	return g
}

func (g *guard) fire() {
	g.mu.Lock()
	if g.disarmed {
		g.mu.Unlock()
		return
	}
	g.fired = true
	c := g.conn
	g.mu.Unlock()
	if g.cancel != nil {
		g.cancel()
	}
	if c != nil {
		c.Close()
	}
}

// setConn gives the guard the connection to close (at once if it fired).
func (g *guard) setConn(c net.Conn) {
	g.mu.Lock()
	g.conn = c
	fired := g.fired
	g.mu.Unlock()
	if fired {
		c.Close()
	}
}

// disarm stops the guard; false if it already fired.
func (g *guard) disarm() bool {
	g.t.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.disarmed = true
	return !g.fired
}

func (g *guard) timedOut() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fired
}

// handshake is one connection before it becomes a session. The goroutine
// running the handshake owns conn.
type handshake struct {
	l    *Link
	conn net.Conn
	rd   *wire.Reader
	w    *wire.Writer
	tls  bool
	p    *pendingConn // secondary: the connection's place in Link.pending
}

// maxHandshakeFrame bounds every message read before the session exists
// (STARTTLS, CONNECT, CONNECTREPLY, REPLY): a CONNECT with the longest
// relationship name we accept is about 1100 bytes. A longer message-size is
// refused from the 2-byte length field, before its body is read or a buffer
// for it allocated. Sessions take up to wire.MaxMessageSize.
const maxHandshakeFrame = 4096

func (l *Link) newHandshake(c net.Conn) *handshake {
	h := &handshake{l: l, conn: c, rd: wire.NewReader(c), w: wire.NewWriter(c)}
	h.rd.SetMaxFrameSize(maxHandshakeFrame)
	return h
}

// established turns the handshake into the session: the reader (which may
// hold buffered bytes) takes messages of any protocol size from now on.
func (h *handshake) established(ci wire.ConnectInfo, skew time.Duration) *session {
	h.rd.SetMaxFrameSize(wire.MaxMessageSize)
	return h.l.newSession(h.conn, h.rd, ci, h.tls, skew)
}

// startTLS switches the handshake to TLS over the same TCP connection.
func (h *handshake) startTLS(ctx context.Context, c *tls.Conn) error {
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("%w with %v: %v", ErrTLS, h.conn.RemoteAddr(), err)
	}
	h.conn, h.rd, h.w, h.tls = c, wire.NewReader(c), wire.NewWriter(c), true
	h.rd.SetMaxFrameSize(maxHandshakeFrame)
	return nil
}

// write stamps the sent-time of failover messages and writes m.
func (h *handshake) write(m *wire.Message) error {
	if m.Type.HasSentTime() {
		m.SentTime = wire.ToFOTime(h.l.clk.Now())
	}
	if err := h.w.WriteMessage(m); err != nil {
		return fmt.Errorf("%w: writing %v: %v", ErrConnectionLost, m.Type, err)
	}
	h.l.mu.Lock()
	h.l.stats.sent[m.Type]++
	h.l.mu.Unlock()
	return nil
}

// read reads and decodes the next message.
func (h *handshake) read() (*wire.Message, time.Time, error) {
	b, err := h.rd.ReadFrame()
	at := h.l.clk.Now()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, at, fmt.Errorf("%w: closed by the partner during the handshake", ErrConnectionLost)
		}
		if errors.Is(err, wire.ErrFrameTooLarge) {
			return nil, at, fmt.Errorf("%w: during the handshake: %w", ErrProtocol, err)
		}
		return nil, at, fmt.Errorf("%w: %v", ErrConnectionLost, err)
	}
	if h.p != nil {
		h.p.progressed.Store(true)
	}
	m, err := wire.DecodeMessage(b)
	if err != nil {
		return nil, at, fmt.Errorf("%w: during the handshake: %v", ErrProtocol, err)
	}
	h.l.mu.Lock()
	h.l.stats.received[m.Type]++
	h.l.mu.Unlock()
	return m, at, nil
}

// refuse tells the partner why we end the handshake (a rejecting
// CONNECTREPLY on the secondary, a DISCONNECT on the primary), counts it
// and returns the error.
func (h *handshake) refuse(m *wire.Message, st wire.Status) error {
	h.l.mu.Lock()
	h.l.stats.rejectsSent[st.Code]++
	h.l.mu.Unlock()
	_ = h.write(m)
	return &StatusError{Kind: ErrRefused, Status: st}
}

// dial is the primary's side of connection set-up (RFC 8156 §6.1, RFC 7653
// §8.2), on Run's goroutine: TCP connect, optional STARTTLS and TLS,
// CONNECT, CONNECTREPLY. It returns the established session or why not;
// the connection is closed on failure.
func (l *Link) dial(ctx context.Context) (*session, error) {
	l.mu.Lock()
	l.stats.connectAttempts++
	l.mu.Unlock()
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g := newGuard(l.clk, l.cfg.HandshakeTimeout, cancel)
	defer g.disarm()
	conn, err := l.cfg.Transport.Dial(hctx, l.cfg.local.String(), l.cfg.peer.String())
	if err != nil {
		if g.timedOut() {
			return nil, fmt.Errorf("%w: dialing %v", ErrHandshakeTimeout, l.cfg.peer)
		}
		return nil, fmt.Errorf("%w: dial %v: %v", ErrConnectionLost, l.cfg.peer, err)
	}
	g.setConn(conn)
	stopClose := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopClose()
	s, err := l.dialHandshake(hctx, l.newHandshake(conn))
	if err == nil && !g.disarm() {
		err = ErrHandshakeTimeout
	}
	if err != nil {
		conn.Close()
		if g.timedOut() && !errors.Is(err, ErrHandshakeTimeout) {
			err = fmt.Errorf("%w: %v", ErrHandshakeTimeout, err)
		}
		return nil, err
	}
	return s, nil
}

func (l *Link) dialHandshake(ctx context.Context, h *handshake) (*session, error) {
	if l.cfg.clientTLS != nil {
		xid := l.NewXID()
		if err := h.write(wire.NewStartTLS(xid)); err != nil {
			return nil, err
		}
		m, _, err := h.read()
		if err != nil {
			return nil, err
		}
		if m.Type != wire.MsgReply || m.XID != xid {
			return nil, fmt.Errorf("%w: answer to STARTTLS is %v, want REPLY with xid %#06x", ErrProtocol, m, xid)
		}
		if st, ok := m.Status(); ok && st.IsError() {
			l.mu.Lock()
			l.stats.rejectsReceived[st.Code]++
			l.mu.Unlock()
			return nil, &StatusError{Kind: ErrRejected, Status: st}
		}
		if err := h.startTLS(ctx, tls.Client(h.conn, l.cfg.clientTLS)); err != nil {
			return nil, err
		}
	}
	xid := l.NewXID()
	if err := h.write(wire.NewConnect(xid, 0, l.cfg.connectInfo(true))); err != nil {
		return nil, err
	}
	m, at, err := h.read()
	if err != nil {
		return nil, err
	}
	if m.Type == wire.MsgDisconnect {
		st, _ := m.Status()
		l.mu.Lock()
		l.stats.rejectsReceived[st.Code]++
		l.mu.Unlock()
		return nil, &StatusError{Kind: ErrRejected, Status: st}
	}
	if m.Type != wire.MsgConnectReply || m.XID != xid {
		return nil, fmt.Errorf("%w: answer to CONNECT is %v, want CONNECTREPLY with xid %#06x", ErrProtocol, m, xid)
	}
	if st, ok := m.Status(); ok && st.IsError() {
		l.mu.Lock()
		l.stats.rejectsReceived[st.Code]++
		l.mu.Unlock()
		return nil, &StatusError{Kind: ErrRejected, Status: st}
	}
	ci, err := m.ConnectInfo()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	skew := l.measureSkew(m.SentTime, at)
	// RFC 8156 §6.1.3: an unsupported version or a different MCLT: send
	// DISCONNECT and drop the connection.
	if st, _ := l.checkPartner(ci, skew, "CONNECTREPLY"); st != nil {
		return nil, h.refuse(wire.NewDisconnect(l.NewXID(), 0, *st), *st)
	}
	return h.established(ci, skew), nil
}

// checkPartner checks the partner's CONNECT (secondary) or CONNECTREPLY
// (primary) against our configuration, in the order of RFC 8156 §6.1.2,
// and returns the refusal status and its Reject* reason, or nil to accept.
func (l *Link) checkPartner(ci wire.ConnectInfo, skew time.Duration, what string) (*wire.Status, string) {
	var reason string
	refuse := func(code wire.StatusCode, format string, args ...any) *wire.Status {
		return &wire.Status{Code: code, Message: fmt.Sprintf(format, args...)}
	}
	ours := l.cfg.connectInfo(true)
	var st *wire.Status
	switch {
	case !l.skewOK(skew):
		reason = RejectTimeSkew
		st = refuse(wire.StatusExcessiveTimeSkew, "%s sent-time is %v from the receiver's clock (limit %v)", what, skew, l.cfg.MaxSkew)
	case ci.Version.Major != wire.Version1.Major:
		reason = RejectVersion
		st = refuse(wire.StatusNotSupported, "protocol version %v is not supported (this server speaks %v)", ci.Version, wire.Version1)
	case ci.RelationshipName != "" && ci.RelationshipName != ours.RelationshipName:
		reason = RejectRelationship
		st = refuse(wire.StatusConfigurationConflict, "relationship %q is not configured here (this server's is %q)", ci.RelationshipName, ours.RelationshipName)
	case ci.MCLT != ours.MCLT:
		reason = RejectMCLT
		st = refuse(wire.StatusConfigurationConflict, "MCLT mismatch: %s has %ds, this server is configured with %ds", what, ci.MCLT, ours.MCLT)
	case ci.KeepaliveTime == 0:
		reason = RejectConfig
		st = refuse(wire.StatusConfigurationConflict, "keepalive time 0 in %s", what)
	case ci.MaxUnackedBndUpd == 0:
		reason = RejectConfig
		st = refuse(wire.StatusConfigurationConflict, "max-unacked-bndupd 0 in %s: no binding update could ever be sent", what)
	case !flagsCompatible(ours.Flags, ci.Flags):
		reason = RejectConfig
		st = refuse(wire.StatusConfigurationConflict, "connect flags %v incompatible with this server's %v: it cannot process variable-length prefix delegation", ci.Flags, ours.Flags)
	}
	return st, reason
}

// flagsCompatible: a server that sets FIXED_PD_LENGTH cannot process a
// partner that delegates variable-length prefixes from one delegable prefix
// (RFC 8156 §6.1.2). Unknown bits are ignored.
func flagsCompatible(ours, theirs wire.ConnectFlags) bool {
	return ours&wire.ConnectFlagFixedPDLength == 0 || theirs&wire.ConnectFlagFixedPDLength != 0
}

// pendingConn is an accepted connection that has not completed CONNECT.
type pendingConn struct {
	conn net.Conn
	at   time.Time
	g    *guard // armed before the connection is counted as pending
	// evicted is set (under Link.mu) when the connection was closed to make
	// room; it is counted in Stats.PendingEvicted, not as a failure.
	evicted bool
	// progressed is set by the handshake once a whole message has arrived:
	// eviction spares such connections while any idle or trickling one is
	// left, so that the real partner, which sends CONNECT at once, is not
	// pushed out by a flood from its own address.
	progressed atomic.Bool
}

// acceptLoop is the secondary's accept goroutine. A connection from any IP
// but the partner's is closed before anything is read from it (RFC 8156
// §6.1); the partner's connections are capped at MaxPendingConns until
// they complete CONNECT, the oldest evicted first, and each gets its own
// handshake goroutine.
func (l *Link) acceptLoop(ctx context.Context, ln net.Listener) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("accept failed", zap.Error(err))
			t := l.clk.NewTimer(100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
			continue
		}
		ip, ok := remoteIP(c)
		if !ok || ip != l.peerIP {
			c.Close()
			l.refused(c.RemoteAddr(), ip, RejectNotPartner, func() error {
				return fmt.Errorf("the source address is not the failover partner's %v", l.peerIP)
			})
			l.mu.Lock()
			l.stats.strangers++ // after the log, so a reader of Stats sees both
			l.mu.Unlock()
			continue
		}
		p := &pendingConn{conn: c, at: l.clk.Now(), g: newGuard(l.clk, l.cfg.HandshakeTimeout, nil)}
		p.g.setConn(c)
		var evict *pendingConn
		l.mu.Lock()
		if len(l.pending) >= l.cfg.MaxPendingConns {
			i := 0 // the oldest that has not sent a whole message, else the oldest
			for j, q := range l.pending {
				if !q.progressed.Load() {
					i = j
					break
				}
			}
			evict = l.pending[i]
			evict.evicted = true
			l.pending = append(l.pending[:i], l.pending[i+1:]...)
			l.stats.evicted++
		}
		l.pending = append(l.pending, p)
		l.mu.Unlock()
		if evict != nil {
			evict.g.disarm()
			evict.conn.Close()
			l.refused(evict.conn.RemoteAddr(), ip, RejectEvicted, func() error {
				return fmt.Errorf("more than %d connections from the partner's address waiting for CONNECT: closed one after %v",
					l.cfg.MaxPendingConns, p.at.Sub(evict.at))
			})
		}
		l.wg.Add(1)
		go l.serveIncoming(ctx, p)
	}
}

// serveIncoming runs the secondary's handshake on one accepted connection
// (its own goroutine) and hands the session to Run's goroutine.
func (l *Link) serveIncoming(ctx context.Context, p *pendingConn) {
	defer l.wg.Done()
	g := p.g
	h := l.newHandshake(p.conn)
	h.p = p
	s, err := l.acceptHandshake(ctx, h, g)
	g.disarm()
	l.mu.Lock()
	for i, q := range l.pending {
		if q == p {
			l.pending = append(l.pending[:i], l.pending[i+1:]...)
			break
		}
	}
	evicted := p.evicted
	l.mu.Unlock()
	if err != nil {
		p.conn.Close()
		if evicted {
			return // counted and logged by acceptLoop
		}
		reason := rejectReason(err, g.timedOut())
		if g.timedOut() && !errors.Is(err, ErrHandshakeTimeout) {
			err = fmt.Errorf("%w: %v", ErrHandshakeTimeout, err)
		}
		l.mu.Lock()
		l.stats.handshakeFailures[reasonLabel(err)]++
		l.mu.Unlock()
		ip, _ := remoteIP(p.conn)
		l.refused(p.conn.RemoteAddr(), ip, reason, func() error { return err })
		return
	}
	select {
	case l.accepted <- s:
	case <-ctx.Done():
		s.conn.Close()
	}
}

// acceptHandshake is the secondary's side of connection set-up (RFC 8156
// §6.1, §6.1.2; RFC 7653 §9.1): optional STARTTLS and TLS, then CONNECT,
// answered by CONNECTREPLY.
func (l *Link) acceptHandshake(ctx context.Context, h *handshake, g *guard) (*session, error) {
	refusedTLS := false
	var m *wire.Message
	var at time.Time
	for {
		var err error
		if m, at, err = h.read(); err != nil {
			return nil, err
		}
		if m.Type != wire.MsgStartTLS {
			break
		}
		switch {
		case h.tls || refusedTLS:
			return nil, fmt.Errorf("%w: STARTTLS repeated", ErrProtocol)
		case l.cfg.serverTLS == nil:
			// RFC 7653 §9.1: a server in insecure mode answers STARTTLS with
			// TLSConnectionRefused; the requestor then closes.
			st := wire.Status{Code: wire.StatusTLSConnectionRefused, Message: "TLS is not configured on this server"}
			_ = h.refuse(wire.NewReply(m.XID, &st), st)
			refusedTLS = true
		default:
			if err := h.write(wire.NewReply(m.XID, nil)); err != nil {
				return nil, err
			}
			if err := h.startTLS(ctx, tls.Server(h.conn, l.cfg.serverTLS)); err != nil {
				return nil, err
			}
		}
	}
	if m.Type != wire.MsgConnect {
		return nil, fmt.Errorf("%w: first message is %v, want CONNECT or STARTTLS", ErrProtocol, m.Type)
	}
	if l.cfg.serverTLS != nil && !h.tls {
		st := wire.Status{Code: wire.StatusConfigurationConflict, Message: "TLS is required: send STARTTLS before CONNECT (RFC 7653 §8.2)"}
		return nil, &rejection{RejectTLSRequired, h.refuse(wire.NewConnectReject(m.XID, 0, st), st)}
	}
	ci, err := m.ConnectInfo()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	skew := l.measureSkew(m.SentTime, at)
	if st, reason := l.checkPartner(ci, skew, "CONNECT"); st != nil {
		return nil, &rejection{reason, h.refuse(wire.NewConnectReject(m.XID, 0, *st), *st)}
	}
	if !g.disarm() {
		return nil, ErrHandshakeTimeout
	}
	if err := h.write(wire.NewConnectReply(m.XID, 0, l.cfg.connectInfo(false))); err != nil {
		return nil, err
	}
	return h.established(ci, skew), nil
}
