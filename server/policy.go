package server

import (
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Policy decides what the server may do, moment by moment. Standalone is the
// trivial policy; the failover endpoint implements it with RFC 8156's rules
// (responsive / renew-responsive / unresponsive, own-pool allocation, the
// MCLT cap on lifetimes). Methods are called concurrently from the workers.
type Policy interface {
	// Serve says whether to answer a client message of type t now. forUs
	// is true when the message carries this server's Server Identifier.
	Serve(t dhcpv6.MessageType, forUs bool) bool
	// MayAllocate says whether new leases may be allocated now.
	MayAllocate() bool
	// AddressParity is the bit-127 value of the addresses this server may
	// allocate: 0 or 1, or -1 for any. It must not change while serving.
	AddressParity() int
	// Available reports whether an existing binding may be given to a new
	// client by this server (e.g. FREE, or FREE-BACKUP on a secondary).
	// duid is the client asking, or "" for "any new client".
	Available(b *fsm.Binding, duid string) bool
	// Grant sets the failover fields of b, a lease being given or extended
	// now with the desired valid lifetime, and returns the valid lifetime the
	// client may be given (at most desired).
	Grant(now time.Time, b *fsm.Binding, desired time.Duration) time.Duration
	// Free sets b's status and timers for a lease that was released or
	// expired now (to FREE for a standalone server; to RELEASED or EXPIRED
	// with an update owed to the partner under failover).
	Free(now time.Time, b *fsm.Binding, released bool)
	// Changed sets the partner bookkeeping of b, whose status the server
	// changed now for another reason (e.g. Decline made it ABANDONED).
	Changed(now time.Time, b *fsm.Binding)
	// UntrackedAvailable reports whether this server may allocate a
	// resource of type t that has no binding at all. Under failover an
	// unrecorded delegable prefix is FREE, the primary's (RFC 8156 §4.2.2):
	// a secondary allocates only prefixes handed to it (FREE-BACKUP). It
	// must not change while serving.
	UntrackedAvailable(t fsm.IAType) bool
	// PartnerPool reports whether, right now, a delegated-prefix pool in
	// which this server has no available prefix left may still give out
	// some of its partner's (RFC 8156 §8.4.1: in PARTNER-DOWN, from PD +
	// MCLT on). It is cheap: when false the server does not search.
	PartnerPool() bool
	// PartnerAvailable reports whether prefix binding b, in a pool in which
	// this server has no available prefix left, may be given to client
	// duid because the partner's prefixes may now be used. A prefix with no
	// record is passed as FREE with no client.
	PartnerAvailable(b *fsm.Binding, duid string) bool
}

// Standalone is the policy of a server without a partner: it answers every
// valid message, allocates from every address, and frees at once.
type Standalone struct {
	// Hold is how long a freed lease keeps its last client's identity, so the
	// client gets it back if it returns (and reclamation then forgets it).
	Hold time.Duration
}

// Serve always answers.
func (Standalone) Serve(dhcpv6.MessageType, bool) bool { return true }

// MayAllocate is always true.
func (Standalone) MayAllocate() bool { return true }

// AddressParity is -1: every address.
func (Standalone) AddressParity() int { return -1 }

// Available: FREE bindings (a standalone server never has FREE-BACKUP ones
// unless it was a failover partner before; those are free too).
func (Standalone) Available(b *fsm.Binding, _ string) bool {
	return b.Status == fsm.StatusFree || b.Status == fsm.StatusFreeBackup
}

// Grant gives the desired lifetime and owes no partner anything.
func (Standalone) Grant(_ time.Time, b *fsm.Binding, desired time.Duration) time.Duration {
	b.PartnerLifetime = 0
	b.Flags &^= fsm.FlagUpdateOwed
	return desired
}

// Free marks b FREE, kept for its client for Hold.
func (p Standalone) Free(now time.Time, b *fsm.Binding, _ bool) {
	b.Status = fsm.StatusFree
	b.StartTimeOfState = now.Unix()
	b.StateExpirationTime = now.Add(p.Hold).Unix()
	b.PartnerLifetime = 0
	b.Flags &^= fsm.FlagUpdateOwed
}

// UntrackedAvailable is true: every unrecorded resource is free.
func (Standalone) UntrackedAvailable(fsm.IAType) bool { return true }

// PartnerPool is false: a standalone server has no partner.
func (Standalone) PartnerPool() bool { return false }

// PartnerAvailable is false: a standalone server has no partner.
func (Standalone) PartnerAvailable(*fsm.Binding, string) bool { return false }

// Changed owes no partner anything.
func (Standalone) Changed(_ time.Time, b *fsm.Binding) {
	b.PartnerLifetime = 0
	b.Flags &^= fsm.FlagUpdateOwed
}
