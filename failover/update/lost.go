package update

import (
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// HoldForLostPartner returns b held for what the partner may have promised
// before it lost its stable storage, and true; or false when b needs no
// hold. The endpoint applies it to every binding, and commits the result,
// before it answers the partner's UPDREQALL (RFC 8156 §8.5.2: the partner
// sends one when it has lost its database, or was restored from a
// snapshot).
//
// Before the loss the partner may have renewed a lease without telling us:
// by the MCLT invariant (§4.4) up to the MCLT past the later of its
// acked-partner-lifetime (our expiration-time, §7.3) and the moment it
// renewed, which was before now. So a client may hold the lease until
//
//	horizon = max(expiration-time, now) + MCLT
//
// while we know only the end the partner last reported, and expire the
// lease there or have already: after the partner's RECOVER-WAIT (§8.6),
// which waits one MCLT, the lease went to a second client while the first
// still held it (the simulation found this; docs/failover.md item 89).
// RECOVER-WAIT keeps the partner from serving, not us from reusing what it
// renewed. So:
//
//   - an ACTIVE lease ending before the horizon is made to end there, for
//     the same client: only that client can hold it from the partner (the
//     partner could not have given it to another without our
//     acknowledgement, outside PARTNER-DOWN);
//   - an EXPIRED or RELEASED lease whose news we still owe gets the horizon
//     as its state-expiration-time, during which nobody may have it
//     (Available), not even its last client, and which the partner's
//     acknowledgement does not cut short (ApplyBndReply): the partner may
//     have acknowledged it before the loss and given the lease to anyone
//     since (for at most the MCLT: it had acknowledged nothing for that
//     client), or renewed it for the last client before hearing of it.
//
// The UPDREQALL answer carries these times to the partner, which then
// holds the lease the same way. This is the PARTNER-DOWN reuse rule of
// §8.4.1 (MCLT past the later of the lease's times and the last moment the
// partner could have acted), applied to a partner known to have forgotten.
//
// Not held: EXPIRED or RELEASED received from the partner (not owed: its
// own news, acknowledged, after which anything it gave started from
// nothing acknowledged), free, abandoned or reset leases, lone prefixes.
func HoldForLostPartner(b *fsm.Binding, mclt time.Duration, now time.Time) (fsm.Binding, bool) {
	if b.DUID == "" {
		return *b, false
	}
	horizon := max64(b.ExpirationTime, now.Unix()) + seconds(mclt)
	switch b.Status {
	case fsm.StatusActive:
	case fsm.StatusExpired, fsm.StatusReleased:
		if !b.Owed() {
			return *b, false
		}
	default:
		return *b, false
	}
	if b.StateExpirationTime >= horizon {
		return *b, false
	}
	nb := *b
	nb.StateExpirationTime = horizon
	nb.Rev = 0
	return nb, true
}

// HeldUntil returns when a lease EXPIRED or RELEASED may be given to a
// client again, if that is later than now (HoldForLostPartner: its state
// expiration time), and whether it is held.
func HeldUntil(b *fsm.Binding, now time.Time) (int64, bool) {
	switch b.Status {
	case fsm.StatusExpired, fsm.StatusReleased:
		return b.StateExpirationTime, b.StateExpirationTime > now.Unix()
	}
	return 0, false
}
