// Package link is the partner connection of one RFC 8156 failover
// relationship: it moves failover messages between the two servers and
// tells its consumer when communications are OK and when they are lost.
//
// It owns:
//   - connection set-up (RFC 8156 §6.1, RFC 7653 §8.2 and §9.1): the
//     primary dials the secondary and redials with backoff forever; the
//     secondary listens, drops connections from any other IP before reading
//     a byte, caps connections that have not completed CONNECT (evicting the
//     oldest that has not sent a whole message, else the oldest), refuses a
//     handshake message longer than 4096 bytes from its length field, and
//     bounds the handshake with HandshakeTimeout;
//   - optional TLS through STARTTLS, with mutual certificate authentication;
//   - CONNECT / CONNECTREPLY validation (version, MCLT, relationship name,
//     connect flags, time skew) and the STATE that follows;
//   - the per-connection timers FO_KEEPALIVE_TIMER and FO_SEND_TIMER (§6.6),
//     CONTACT, the sent-time skew check on every message (§7.5.1),
//     DISCONNECT on shutdown;
//   - transaction-ids for our requests (§5.4) and the partner's
//     OPTION_F_MAX_UNACKED_BNDUPD window for our BNDUPDs;
//   - counters (Stats), including every incoming connection the secondary
//     refused, by reason (Stats.Rejected, the Reject* constants), and the
//     rate-limited log of those refusals.
//
// It must never: interpret binding updates, run the endpoint state machine,
// resolve conflicts or touch the binding database (that is the Handler's
// job, in the failover endpoint); read the wall clock (every timer and time
// stamp comes from Config.Clock); sleep; block a Handler call; import fsm,
// raftstore or server.
//
// # Goroutines
//
// Run's goroutine owns the session: it starts and stops it, runs both
// timers, dispatches received messages and makes every Handler call, one
// at a time. Per session, one reader goroutine is the only reader of the
// net.Conn (it frames, decodes and time-stamps messages and hands them to
// Run's goroutine in order) and one writer goroutine is the only writer
// (it drains the send queue, stamps sent-time just before the Write, and
// writes the final DISCONNECT). Before that, the handshake owns the
// connection: on the primary it runs on Run's goroutine; on the secondary
// the accept goroutine checks the source and starts one goroutine per
// accepted connection, which hands the established session to Run's
// goroutine over a channel. Send, SendBndUpd, SendState, NewXID and Stats
// may be called from any goroutine; they take Link.mu briefly and never
// block, except SendBndUpd waiting for window room. Run returns only after
// every goroutine it started has ended.
//
// # Choices where the RFCs are silent, ambiguous, or where we are stricter
//
// STARTTLS and REPLY use the plain RFC 5460 header (msg-type and 24-bit
// transaction-id, no sent-time), as RFC 7653 defines them; RFC 8156 does
// not say (digest Appendix A item 9). Package wire encodes them so. The
// primary sends STARTTLS as the first message; a secondary with TLS answers
// REPLY without a status and both run the TLS handshake (TLS 1.2 or later,
// the secondary requiring and verifying a client certificate, the primary
// verifying the secondary's certificate against the partner's IP); a
// secondary without TLS answers REPLY with TLSConnectionRefused and keeps
// waiting for a cleartext CONNECT until HandshakeTimeout (RFC 7653 has the
// requestor close). With TLS configured, a partner that sends CONNECT in the
// clear gets a CONNECTREPLY rejecting it with ConfigurationConflict ("TLS
// is required") before the connection is closed, and a primary whose
// STARTTLS is refused closes the connection. No TLS is insecure mode:
// RFC 7653 §9.1 wants it to be an explicit choice; Run logs a warning.
//
// MCLT must match. RFC 8156 §6.1.2 lets the secondary adopt the primary's
// MCLT; we refuse a CONNECT whose MCLT differs from ours with
// ConfigurationConflict (the status text names both values), and a primary
// that receives a CONNECTREPLY with a different MCLT sends DISCONNECT
// (ConfigurationConflict) and drops the connection, as §6.1.3 says. Both
// servers must therefore be configured with the same MCLT; a silent change
// of the MCLT the lease code relies on is worse than a refused connection.
//
// Other CONNECT checks, in RFC 8156 §6.1.2's order: sent-time more than
// MaxSkew from our clock: ExcessiveTimeSkew; a protocol major version other
// than 1: NotSupported (any minor version is accepted); a relationship name
// that is not ours: ConfigurationConflict (the RFC names no status; a
// CONNECT without a name means "the only relationship between the two
// servers", §6.1.1, and is accepted); a keepalive time or MAX_UNACKED of 0:
// ConfigurationConflict (the link could not work); incompatible connect
// flags: ConfigurationConflict (no status is specified). Flags are
// incompatible when we set FIXED_PD_LENGTH (we delegate, and can process,
// fixed-length prefixes only) and the partner does not; unknown flag bits
// are ignored. The primary applies the same checks to CONNECTREPLY and
// answers a failure with DISCONNECT carrying the status.
//
// Timers (digest §2.6 [I] and Appendix A item 5). §6.1.2 and §6.1.3
// say to remember the partner's keepalive time "as FO_KEEPALIVE_TIME",
// which contradicts §5.5.12 and §6.5. We follow the digest's
// recommendation: FO_KEEPALIVE_TIMER uses our own KeepaliveTime (the value
// we advertise as "within which the sender must receive a message") and is
// reset by every received message; expiry means the connection is dead: it
// is closed and Handler.Down gets ErrKeepaliveExpired. FO_SEND_TIMER uses
// the partner's advertised keepalive time divided by ContactPerKeepalive
// and is reset by every transmitted message; expiry sends CONTACT. Both are
// clock.Timers checked lazily against the last receive/transmit time, so a
// reset costs nothing per message.
//
// Communications are OK only after the partner's STATE (§6.1): before it,
// the partner may send CONTACT; anything else is a protocol error. Every
// later message with a sent-time more than MaxSkew from our clock drops the
// connection with a DISCONNECT (ExcessiveTimeSkew) and a log line saying
// why (§7.5.1 says SHOULD drop and log). A message that does not decode
// drops the connection with DISCONNECT (UnspecFail): skipping it could
// leave a BNDUPD unanswered forever. A message of unknown type is logged,
// counted and skipped (it still resets the keepalive timer).
//
// A secondary that completes a handshake on a new connection from the
// partner while a session exists replaces the old session (Down with
// ErrSuperseded, then Up on the new one): the primary opens a new
// connection only when it believes the old one dead, so the old one is
// half-open.
//
// Hostile input on the secondary's port. Every incoming connection that
// does not become a session is counted once in Stats.Rejected under one
// reason and logged as "refused a failover connection" at most once per
// source IP and reason per Config.LogInterval (a minute); the first line
// after a quiet interval is followed by "suppressed similar refusals" with
// the count held back. The limiter's table is bounded (4096 keys; beyond,
// new sources share one entry). A stranger costs an accept and a close.
// A connection from the partner's IP costs a goroutine and a 4 KiB buffer
// until it completes CONNECT, is evicted (MaxPendingConns, default 64: the
// real partner's connection must outlive that many newer ones until its
// CONNECT is read) or reaches HandshakeTimeout, however slowly it trickles
// bytes. Handshake messages are at most 4096 bytes (a CONNECT with the
// longest relationship name is about 1100); the session's reader then takes
// any protocol size (64 KiB).
//
// Reconnecting (primary): the first attempt is immediate; after a failed
// attempt the wait doubles from RetryMin up to RetryMax; after a session
// ends the primary waits RetryMin; after a rejection (a CONNECTREPLY or
// REPLY with an error status, our own refusal of a CONNECTREPLY, or a
// DISCONNECT from the partner) it waits RetryMax (§6.1: SHOULD retry less
// often, MUST keep retrying). There is no jitter: there is one partner.
//
// Transaction-ids (§5.4): NewXID counts up, skipping 0 and every id of ours
// still outstanding (a BNDUPD until BNDREPLY, UPDREQ/UPDREQALL until
// UPDDONE, POOLREQ until POOLRESP), so a long-lived UPDREQALL's id is not
// reused after the 24-bit wrap. Outstanding ids are forgotten when the
// connection drops (the partner will not answer them on another
// connection). An answer whose id matches nothing outstanding is still
// delivered to the Handler and counted (Stats.UnmatchedReplies).
//
// Flow control: SendBndUpd waits while the partner's MAX_UNACKED_BNDUPD of
// our BNDUPDs await BNDREPLY; the window is reset, and the waiters fail
// with ErrNotConnected, when the connection drops.
//
// Time stamps (§7.1): the writer goroutine sets sent-time immediately
// before the Write; the reader goroutine takes the receive time
// immediately after the frame is read.
//
// Shutdown: when Run's context ends, queued messages are written, then
// DISCONNECT with ServerShuttingDown, then the connection is closed (the
// final write is bounded by HandshakeTimeout). A DISCONNECT given to Send
// likewise closes the connection after it is written.
package link
