package update

import (
	"net/netip"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// AddressOwner returns the server whose pool addr belongs to under
// independent allocation (RFC 8156 §4.2.1.1): the primary owns the addresses
// whose low-order bit (bit 127) is 1, the secondary those whose bit is 0.
func AddressOwner(addr netip.Addr) Role {
	if addr.As16()[15]&1 == 1 {
		return Primary
	}
	return Secondary
}

// AddressParity returns the bit-127 value of the addresses role may
// allocate: 1 for the primary, 0 for the secondary (server.Policy's
// AddressParity).
func AddressParity(role Role) int {
	if role == Primary {
		return 1
	}
	return 0
}

// MayAllocateAddress reports whether role may allocate addr to a new client
// (RFC 8156 §4.2.1.1, A1). It does not depend on the endpoint state: in
// PARTNER-DOWN too a server allocates only its own half, following the
// stricter §4.2.1 ("MUST NOT use its partner's pool") over §8.4.1 ("SHOULD
// NOT", or after PD + MCLT). Renewals of existing leases are not
// allocations and are not limited by this.
func MayAllocateAddress(role Role, addr netip.Addr) bool { return AddressOwner(addr) == role }

// Destination returns the status a PENDING-FREE lease on r resolves to at
// once (RFC 8156 §7.2 events 5 and 6, following the text rather than Figure
// 3): a delegated prefix (proportional allocation) always goes back to the
// primary, FREE; an address (independent allocation) goes to its owner's
// pool: FREE when bit 127 is 1, FREE-BACKUP when it is 0.
func Destination(r fsm.Resource) fsm.Status {
	if r.Type != fsm.IAPD && AddressOwner(r.Addr()) == Secondary {
		return fsm.StatusFreeBackup
	}
	return fsm.StatusFree
}

// Blank returns the binding implied for a resource that has no record: an
// address is free in its owner's pool, a delegable prefix belongs to the
// primary (RFC 8156 §4.2.2: all delegable prefixes start as the primary's;
// only FREE-BACKUP must be recorded).
func Blank(r fsm.Resource) fsm.Binding { return fsm.Binding{Resource: r, Status: Destination(r)} }

// freeLike reports whether b counts as available in some pool, and with
// which status: FREE, FREE-BACKUP, PENDING-FREE (its destination), and
// EXPIRED, RELEASED or RESET that this server stored from the partner and
// acknowledged (no update owed: the partner moved it to PENDING-FREE on our
// BNDREPLY, RFC 8156 §7.2 event 4, so we resolve it the same way).
func freeLike(b *fsm.Binding) (fsm.Status, bool) {
	switch b.Status {
	case fsm.StatusFree, fsm.StatusFreeBackup:
		return b.Status, true
	case fsm.StatusPendingFree:
		return Destination(b.Resource), true
	case fsm.StatusExpired, fsm.StatusReleased, fsm.StatusReset:
		if !b.Owed() {
			return Destination(b.Resource), true
		}
	}
	return 0, false
}

// Owner returns the server whose pool b is in, were it available: for an
// address, its bit-127 owner; for a delegable prefix, the primary when FREE
// (or anything that resolves to FREE) and the secondary when FREE-BACKUP
// (RFC 8156 §3 "Available", §4.2.2).
func Owner(b *fsm.Binding) Role {
	if b.Resource.Type != fsm.IAPD {
		return AddressOwner(b.Resource.Addr())
	}
	s, ok := freeLike(b)
	if ok && s == fsm.StatusFreeBackup {
		return Secondary
	}
	return Primary
}

// ReuseAt returns the earliest time (Unix seconds) at which a server in
// PARTNER-DOWN, entered at pdTime, may give b to a client other than the one
// it was bound to (RFC 8156 §8.4.1, §4.2.2.1):
//
//	reuseAt = MCLT + max(client expiry, partner-lifetime sent,
//	                     acked-partner-lifetime, expiration-time, PD)
//
// The client expiry is the later of b's StateExpirationTime and
// StartTimeOfState (an ACTIVE lease's end; for EXPIRED or RELEASED the
// moment it stopped). It is never earlier than pdTime + MCLT.
func ReuseAt(b *fsm.Binding, pdTime int64, mclt time.Duration) int64 {
	return max64(b.StateExpirationTime, b.StartTimeOfState, b.PartnerLifetime, b.AckedPartnerLifetime,
		b.ExpirationTime, pdTime) + seconds(mclt)
}

// PartnerPoolAt returns when a server in PARTNER-DOWN since pdTime may start
// allocating its partner's available delegable prefixes (RFC 8156 §8.4.1,
// §4.2.2.1: the MCLT after entering PARTNER-DOWN; and only once its own pool
// is used up).
func PartnerPoolAt(pdTime int64, mclt time.Duration) int64 { return pdTime + seconds(mclt) }

// Conditions are what Available needs to know about the endpoint.
type Conditions struct {
	Role Role
	MCLT time.Duration
	// PartnerDown is set in PARTNER-DOWN; PartnerDownTime (Unix seconds) is
	// when it was entered.
	PartnerDown     bool
	PartnerDownTime int64
	// OwnPrefixesExhausted reports that this server's own pool of available
	// delegable prefixes (of the pool being allocated from) is used up; only
	// then may a server in PARTNER-DOWN use its partner's (RFC 8156 §8.4.1
	// MUST). The allocator knows its pools; this package does not.
	OwnPrefixesExhausted bool
	// Sent reports whether a BNDUPD about b's current status (EXPIRED or
	// RELEASED) has been handed to the partner. The stored fields cannot
	// tell (sending commits nothing), so the endpoint answers from memory:
	// false only for an update it knows it has not sent since the status was
	// stored. nil means "assume sent" (after a restart, say).
	Sent func(b *fsm.Binding) bool
}

// Available reports whether b may be given now to client duid ("" for any
// new client), as server.Policy's Available. Whether the endpoint allocates
// at all in its state is Policy.MayAllocate's business, not this.
//
//   - ACTIVE: only to its own client (a renewal). ABANDONED: never.
//   - FREE, FREE-BACKUP, PENDING-FREE, and EXPIRED, RELEASED or RESET that
//     the partner reported (no update owed, see Owner): to anyone, from this
//     server's own pool (Owner == c.Role). The partner's pool only in
//     PARTNER-DOWN, only for delegable prefixes, and only from PartnerPoolAt
//     on with the own pool exhausted; the partner's addresses never (see
//     MayAllocateAddress).
//   - EXPIRED or RELEASED with an update owed (this server's change, not
//     yet acknowledged; RESET likewise): outside PARTNER-DOWN, never to a
//     different client; to the same client only if no BNDUPD about it was
//     sent (c.Sent; RFC 8156 §4.2.2.1, §8.8.1). In PARTNER-DOWN it moves to
//     PENDING-FREE without acknowledgement (event 4), no earlier than
//     ReuseAt, and is then treated as its destination.
//   - EXPIRED or RELEASED with a state expiration time ahead (HeldUntil:
//     held for a partner that lost its database): to nobody.
func Available(c Conditions, b *fsm.Binding, duid string, now time.Time) bool {
	switch b.Status {
	case fsm.StatusActive:
		return duid != "" && b.DUID == duid
	case fsm.StatusAbandoned:
		return false
	case fsm.StatusExpired, fsm.StatusReleased, fsm.StatusReset:
		if _, held := HeldUntil(b, now); held {
			return false // a lost partner's client may hold it (HoldForLostPartner)
		}
		if b.Owed() {
			if b.Status != fsm.StatusReset && duid != "" && b.DUID == duid && c.Sent != nil && !c.Sent(b) {
				return true
			}
			if !c.PartnerDown || now.Unix() < ReuseAt(b, c.PartnerDownTime, c.MCLT) {
				return false
			}
		}
	case fsm.StatusFree, fsm.StatusFreeBackup, fsm.StatusPendingFree:
	default:
		return false
	}
	if Owner(b) == c.Role {
		return true
	}
	if !c.PartnerDown || b.Resource.Type != fsm.IAPD {
		return false
	}
	return c.OwnPrefixesExhausted && now.Unix() >= PartnerPoolAt(c.PartnerDownTime, c.MCLT)
}

// freed returns b moved from EXPIRED, RELEASED, RESET or PENDING-FREE to its
// PENDING-FREE destination now: start-time-of-state now, the lease's client
// kept as a hint (DUID, IAID, CLTT), the partner times of that client
// cleared (they no longer bound anything: the partner acknowledged, or the
// PARTNER-DOWN wait is over), no update owed. FREE gets a state timeout of
// hold (when hold > 0) so that the server forgets it later.
func freed(b fsm.Binding, now time.Time, hold time.Duration) fsm.Binding {
	b.Status = Destination(b.Resource)
	b.StartTimeOfState = now.Unix()
	b.StateExpirationTime = 0
	if b.Status == fsm.StatusFree && hold > 0 {
		b.StateExpirationTime = now.Add(hold).Unix()
	}
	b.PartnerLifetime, b.AckedPartnerLifetime, b.ExpirationTime = 0, 0, 0
	b.Flags &^= fsm.FlagUpdateOwed | fsm.FlagResent
	return b
}

// DuePendingFree is the PARTNER-DOWN sweep of RFC 8156 §7.2 event 4: an
// EXPIRED, RELEASED or RESET lease whose update the partner never
// acknowledged moves to PENDING-FREE, and at once to its destination, once
// the MCLT has passed since it entered that status; this package waits until
// ReuseAt, which is never earlier (see the package documentation). It
// returns the op to commit and true when b is due now. The resulting binding
// keeps an update owed, so that the partner learns the lease is free when it
// returns.
func DuePendingFree(c Conditions, b *fsm.Binding, hold time.Duration, now time.Time) (fsm.Op, bool) {
	switch b.Status {
	case fsm.StatusExpired, fsm.StatusReleased, fsm.StatusReset:
	default:
		return fsm.Op{}, false
	}
	if !c.PartnerDown || !b.Owed() || now.Unix() < ReuseAt(b, c.PartnerDownTime, c.MCLT) {
		return fsm.Op{}, false
	}
	nb := freed(*b, now, hold)
	nb.Flags |= fsm.FlagUpdateOwed
	return fsm.Op{Resource: b.Resource, IfRev: b.Rev, Binding: nb}, true
}
