package link

import (
	"errors"
	"fmt"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

// Sentinel errors. Callers test them with errors.Is; the wrapped text says
// what exactly happened (addresses, values, status codes).
var (
	// ErrInvalidConfig: a Config field is missing or out of range; the text
	// names the field.
	ErrInvalidConfig = errors.New("invalid failover link configuration")
	// ErrRunning: Run was called a second time.
	ErrRunning = errors.New("failover link already started")

	// ErrNotConnected: no established session with the partner (Send,
	// SendBndUpd, SendState), or the session a SendBndUpd waited on ended.
	ErrNotConnected = errors.New("failover partner not connected")
	// ErrSendQueueFull: the session's send queue (Config.SendQueueLen) is
	// full; the partner is not reading.
	ErrSendQueueFull = errors.New("failover send queue full")
	// ErrBadMessage: a message Send does not carry (handshake messages, a
	// BNDUPD outside SendBndUpd, a nil message, a transaction-id already
	// outstanding) or that does not encode.
	ErrBadMessage = errors.New("message not accepted for sending")

	// Why a session ended (Handler.Down, Stats.Downs, logs).

	// ErrKeepaliveExpired: nothing was received for Config.KeepaliveTime
	// (FO_KEEPALIVE_TIMER reached zero, RFC 8156 §6.6).
	ErrKeepaliveExpired = errors.New("keepalive expired: nothing received from the partner")
	// ErrConnectionLost: the TCP (or TLS) connection failed or was closed.
	ErrConnectionLost = errors.New("connection lost")
	// ErrPartnerDisconnect: the partner sent DISCONNECT; the error is a
	// *StatusError carrying its status (often ServerShuttingDown).
	ErrPartnerDisconnect = errors.New("partner sent DISCONNECT")
	// ErrTimeSkew: a message's sent-time differs from our clock by more
	// than Config.MaxSkew (RFC 8156 §7.5.1).
	ErrTimeSkew = errors.New("partner clock skew exceeds the limit")
	// ErrProtocol: the partner broke the connection protocol (malformed
	// message, a handshake message after the handshake, anything but STATE
	// or CONTACT before its STATE, a wrong transaction-id in the handshake).
	ErrProtocol = errors.New("failover protocol violation")
	// ErrShutdown: Run's context was cancelled; DISCONNECT was sent.
	ErrShutdown = errors.New("failover link shutting down")
	// ErrSuperseded: the partner completed a new handshake on another
	// connection, which replaced this one (secondary only).
	ErrSuperseded = errors.New("superseded by a new connection from the partner")
	// ErrLocalDisconnect: a DISCONNECT given to Send was written and the
	// connection closed.
	ErrLocalDisconnect = errors.New("DISCONNECT sent by this server")

	// Why a handshake failed (logs, Stats; never passed to Handler.Down,
	// which is only called after Up).

	// ErrRejected: the partner refused our CONNECT (a *StatusError with its
	// CONNECTREPLY status) or answered STARTTLS with TLSConnectionRefused.
	ErrRejected = errors.New("partner rejected the connection")
	// ErrRefused: we refused the partner's CONNECT or CONNECTREPLY (a
	// *StatusError with the status we sent).
	ErrRefused = errors.New("connection refused")
	// ErrTLS: the TLS handshake failed (certificate not trusted, no client
	// certificate, wrong address in the certificate, ...).
	ErrTLS = errors.New("TLS handshake failed")
	// ErrHandshakeTimeout: the handshake did not complete within
	// Config.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("handshake timed out")
)

// StatusError is a refusal or DISCONNECT with its OPTION_STATUS_CODE. Kind
// is ErrRejected, ErrRefused or ErrPartnerDisconnect; errors.Is matches it.
type StatusError struct {
	Kind   error
	Status wire.Status
}

func (e *StatusError) Error() string { return fmt.Sprintf("%v: %v", e.Kind, e.Status) }

// Unwrap returns Kind.
func (e *StatusError) Unwrap() error { return e.Kind }

// reasonLabel is the short name of why a session ended or a handshake
// failed, used as the key of Stats.Downs and in logs.
func reasonLabel(err error) string {
	for _, r := range []struct {
		err   error
		label string
	}{
		{ErrKeepaliveExpired, "keepalive-expired"},
		{ErrPartnerDisconnect, "partner-disconnect"},
		{ErrTimeSkew, "time-skew"},
		{ErrProtocol, "protocol-error"},
		{ErrShutdown, "shutdown"},
		{ErrSuperseded, "superseded"},
		{ErrLocalDisconnect, "local-disconnect"},
		{ErrRejected, "rejected"},
		{ErrRefused, "refused"},
		{ErrTLS, "tls"},
		{ErrHandshakeTimeout, "handshake-timeout"},
		{ErrConnectionLost, "connection-lost"},
	} {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return "other"
}

// Why the secondary refused an incoming connection: the keys of
// Stats.Rejected, the reason label of the metric
// tandem_failover_rejected_connections_total and of the log line.
const (
	// RejectNotPartner: the source IP is not the partner's; closed before
	// a byte was read.
	RejectNotPartner = "not-partner"
	// RejectEvicted: closed to make room (Config.MaxPendingConns).
	RejectEvicted = "evicted"
	// RejectHandshakeTimeout: no CONNECT within Config.HandshakeTimeout
	// (idle, or trickling bytes).
	RejectHandshakeTimeout = "handshake-timeout"
	// RejectFrameTooLarge: a handshake message longer than
	// maxHandshakeFrame, refused from its length field.
	RejectFrameTooLarge = "frame-too-large"
	// RejectProtocol: something other than STARTTLS or CONNECT, or bytes
	// that do not decode.
	RejectProtocol = "protocol-error"
	// RejectTLS: the TLS handshake failed (no or an untrusted client
	// certificate, not TLS at all).
	RejectTLS = "tls"
	// RejectTLSRequired: CONNECT in the clear to a secondary with TLS.
	RejectTLSRequired = "tls-required"
	// RejectRelationship: a relationship name that is not ours.
	RejectRelationship = "relationship"
	// RejectMCLT: an MCLT different from ours.
	RejectMCLT = "mclt"
	// RejectVersion: a protocol major version other than 1.
	RejectVersion = "version"
	// RejectTimeSkew: CONNECT's sent-time too far from our clock.
	RejectTimeSkew = "time-skew"
	// RejectConfig: other configuration conflicts (keepalive time 0,
	// max-unacked 0, incompatible connect flags).
	RejectConfig = "config"
	// RejectConnectionLost: the peer closed (or the network failed) during
	// the handshake.
	RejectConnectionLost = "connection-lost"
)

// rejection is a handshake failure with the reason the secondary counts it
// under (Stats.Rejected).
type rejection struct {
	reason string
	err    error
}

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

// rejectReason names why an incoming handshake failed.
func rejectReason(err error, timedOut bool) string {
	var r *rejection
	switch {
	case errors.As(err, &r):
		return r.reason
	case timedOut || errors.Is(err, ErrHandshakeTimeout):
		return RejectHandshakeTimeout
	case errors.Is(err, wire.ErrFrameTooLarge):
		return RejectFrameTooLarge
	case errors.Is(err, ErrTLS):
		return RejectTLS
	case errors.Is(err, ErrProtocol):
		return RejectProtocol
	}
	return RejectConnectionLost
}
