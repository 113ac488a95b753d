package link

import (
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

// Stats is a snapshot of a Link's counters and state. Maps hold only
// non-zero entries; the caller owns the snapshot.
type Stats struct {
	// Connected: communications OK (handshake done and the partner's STATE
	// received; between Handler.Up and Handler.Down).
	Connected bool
	// Established: a session exists (handshake done), maybe not yet up.
	Established bool
	// TLS: the current session is TLS.
	TLS bool
	// PartnerAddr is the remote address of the current session ("" if none).
	PartnerAddr string

	// Sent counts messages written to the connection, by type (including
	// handshake messages); Received counts messages read, by type.
	Sent, Received map[wire.MsgType]uint64
	// RejectsSent counts connections we refused, by the status we sent
	// (in a CONNECTREPLY, a REPLY to STARTTLS, or a DISCONNECT answering a
	// CONNECTREPLY). RejectsReceived counts refusals by the partner.
	RejectsSent, RejectsReceived map[wire.StatusCode]uint64
	// Downs counts ended sessions that had been up, by reason
	// ("keepalive-expired", "partner-disconnect", "connection-lost",
	// "time-skew", "protocol-error", "shutdown", "superseded",
	// "local-disconnect").
	Downs map[string]uint64
	// HandshakeFailures counts connections that did not complete the
	// handshake, by reason ("rejected", "refused", "tls",
	// "handshake-timeout", "protocol-error", "connection-lost", ...).
	HandshakeFailures map[string]uint64

	// Rejected counts the secondary's incoming connections that did not
	// become a session, each once, by reason (the Reject* constants). It
	// includes what StrangersDropped, PendingEvicted and HandshakeFailures
	// count separately.
	Rejected map[string]uint64

	// ConnectAttempts counts the primary's dials.
	ConnectAttempts uint64
	// Sessions counts established sessions; Reconnects those after the first.
	Sessions, Reconnects uint64
	// StrangersDropped counts connections the secondary closed unread
	// because their source IP is not the partner's.
	StrangersDropped uint64
	// PendingEvicted counts not-yet-established connections closed to make
	// room for a newer one; Pending is how many are open now.
	PendingEvicted uint64
	Pending        int
	// UnknownMessages counts messages of unknown type (skipped);
	// UnmatchedReplies counts BNDREPLY, UPDDONE and POOLRESP whose
	// transaction-id matched no outstanding request of ours.
	UnknownMessages, UnmatchedReplies uint64

	// Unacked is how many of our BNDUPDs await a BNDREPLY;
	// PartnerMaxUnacked is the partner's limit (0 when not established);
	// WindowWaiters is how many SendBndUpd calls are blocked on it.
	Unacked           int
	PartnerMaxUnacked uint32
	WindowWaiters     int
	// ClockSkew is the partner's clock minus ours, measured from the
	// sent-time of the last message received (1 s resolution).
	ClockSkew time.Duration
	// NextAttempt is when the primary will dial next (zero when it is not
	// waiting to).
	NextAttempt time.Time
}

// counters are the Link's cumulative counters, guarded by Link.mu.
type counters struct {
	sent, received     [256]uint64
	rejectsSent        map[wire.StatusCode]uint64
	rejectsReceived    map[wire.StatusCode]uint64
	downs              map[string]uint64
	handshakeFailures  map[string]uint64
	rejected           map[string]uint64
	connectAttempts    uint64
	sessions           uint64
	strangers          uint64
	evicted            uint64
	unknown, unmatched uint64
	skew               time.Duration
}

func (c *counters) init() {
	c.rejectsSent = map[wire.StatusCode]uint64{}
	c.rejectsReceived = map[wire.StatusCode]uint64{}
	c.downs = map[string]uint64{}
	c.handshakeFailures = map[string]uint64{}
	c.rejected = map[string]uint64{}
}

// Stats returns a snapshot of the counters. Safe from any goroutine.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &l.stats
	s := Stats{
		Connected:         l.up,
		Established:       l.sess != nil,
		Sent:              map[wire.MsgType]uint64{},
		Received:          map[wire.MsgType]uint64{},
		RejectsSent:       copyMap(c.rejectsSent),
		RejectsReceived:   copyMap(c.rejectsReceived),
		Downs:             copyMap(c.downs),
		HandshakeFailures: copyMap(c.handshakeFailures),
		Rejected:          copyMap(c.rejected),
		ConnectAttempts:   c.connectAttempts,
		Sessions:          c.sessions,
		StrangersDropped:  c.strangers,
		PendingEvicted:    c.evicted,
		Pending:           len(l.pending),
		UnknownMessages:   c.unknown,
		UnmatchedReplies:  c.unmatched,
		Unacked:           l.xids.bndupds,
		WindowWaiters:     l.waiters,
		ClockSkew:         c.skew,
		NextAttempt:       l.nextAttempt,
	}
	if c.sessions > 1 {
		s.Reconnects = c.sessions - 1
	}
	for t, n := range c.sent {
		if n != 0 {
			s.Sent[wire.MsgType(t)] = n
		}
	}
	for t, n := range c.received {
		if n != 0 {
			s.Received[wire.MsgType(t)] = n
		}
	}
	if l.sess != nil {
		s.TLS = l.sess.tls
		s.PartnerAddr = l.sess.remote
		s.PartnerMaxUnacked = l.sess.partner.MaxUnackedBndUpd
	}
	return s
}

func copyMap[K comparable](m map[K]uint64) map[K]uint64 {
	o := make(map[K]uint64, len(m))
	for k, v := range m {
		if v != 0 {
			o[k] = v
		}
	}
	return o
}
