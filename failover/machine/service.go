package machine

import (
	"fmt"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

// Mode is how a server answers DHCP clients in a failover state
// (RFC 8156 §8.1: responsive, renew responsive, unresponsive).
type Mode uint8

// Modes.
const (
	// Unresponsive: answer no client at all.
	Unresponsive Mode = iota
	// RenewResponsive: answer only valid client messages directed to this
	// server by an OPTION_SERVERID holding its DUID (RFC 8156 §3), so never
	// SOLICIT or REBIND; allocate nothing, and change only the leases the
	// message names that this server already has a record of (§8.7.1).
	RenewResponsive
	// Responsive: answer every client.
	Responsive
)

// String returns "unresponsive", "renew-responsive" or "responsive".
func (m Mode) String() string {
	switch m {
	case Unresponsive:
		return "unresponsive"
	case RenewResponsive:
		return "renew-responsive"
	case Responsive:
		return "responsive"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Pool says where new leases may come from.
type Pool uint8

// Allocation pools.
const (
	// PoolNone: no new leases.
	PoolNone Pool = iota
	// PoolOwn: this server's own resources only: on the primary FREE
	// delegable prefixes, on the secondary FREE-BACKUP ones, and addresses
	// of this server's own parity (bit 127: primary 1, secondary 0).
	PoolOwn
	// PoolOwnThenPartner (PARTNER-DOWN): the own pool first, until it is
	// exhausted (MUST, §8.4.1); then the partner's available delegable
	// prefixes, but not before Service.PartnerPoolAt (entry + MCLT). The
	// partner's addresses SHOULD NOT be allocated (§8.4.1; §4.2.1 says
	// MUST NOT), so this value does not allow them.
	PoolOwnThenPartner
)

// String returns "none", "own" or "own-then-partner".
func (p Pool) String() string {
	switch p {
	case PoolNone:
		return "none"
	case PoolOwn:
		return "own"
	case PoolOwnThenPartner:
		return "own-then-partner"
	}
	return fmt.Sprintf("pool(%d)", uint8(p))
}

// Service is what the DHCP server may do in the current failover state
// (digest §4.1).
type Service struct {
	Mode     Mode
	Allocate Pool
	// CapMCLT: valid lifetimes must not exceed MCLT beyond the later of the
	// acknowledged partner lifetime and now. False in PARTNER-DOWN (§8.4.1)
	// and in the unresponsive states (nothing is granted there).
	CapMCLT bool
	// PartnerDown is when PARTNER-DOWN was entered (zero in other states):
	// the floor of every reuse wait (§8.4.1, §4.2.2.1).
	PartnerDown time.Time
	// PartnerPoolAt is PartnerDown + MCLT: the earliest time the partner's
	// delegable prefixes may be allocated (zero in other states).
	PartnerPoolAt time.Time
}

// serviceOf is the digest §4.1 table for role r in state s (without the
// PARTNER-DOWN times). A secondary is never in CONFLICT-DONE; if asked, it
// is unresponsive.
func serviceOf(r Role, s wire.ServerState) Service {
	switch s {
	case wire.StateNormal:
		if r == Primary {
			return Service{Mode: Responsive, Allocate: PoolOwn, CapMCLT: true}
		}
		return Service{Mode: RenewResponsive, Allocate: PoolNone, CapMCLT: true}
	case wire.StateCommInterrupted, wire.StateResolutionInterrupted:
		return Service{Mode: Responsive, Allocate: PoolOwn, CapMCLT: true}
	case wire.StatePartnerDown:
		return Service{Mode: Responsive, Allocate: PoolOwnThenPartner, CapMCLT: false}
	case wire.StateRecoverDone:
		return Service{Mode: RenewResponsive, Allocate: PoolNone, CapMCLT: true}
	case wire.StateConflictDone:
		if r == Primary {
			return Service{Mode: Responsive, Allocate: PoolOwn, CapMCLT: true}
		}
	}
	// STARTUP, POTENTIAL-CONFLICT, RECOVER, RECOVER-WAIT.
	return Service{Mode: Unresponsive, Allocate: PoolNone}
}

// serving reports whether a server in state s may grant or extend leases
// (so it counts as operating for TIME-OF-FAILURE).
func serving(r Role, s wire.ServerState) bool { return serviceOf(r, s).Mode != Unresponsive }
