package update

import (
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// MaxLifetime is the longest valid lifetime, in seconds, this package hands
// out or reasons about. Longer desired lifetimes, including RFC 8415's
// "infinity" (0xffffffff), are clamped to it: an infinite lease could never
// satisfy the MCLT invariant (digest §6.1), and partner lifetimes must stay
// within 2^31 s of now for failover time serial arithmetic. 2^29 s is about
// 17 years.
const MaxLifetime = 1 << 29

// DefaultT1Fraction is the T1 fraction used when GrantParams.T1Fraction is
// out of range: RFC 8156 §4.4.1's example, and RFC 8415's usual T1 = 0.5.
const DefaultT1Fraction = 0.5

// clampLifetime returns d in whole seconds, at most MaxLifetime.
func clampLifetime(d time.Duration) int64 {
	s := seconds(d)
	if s > MaxLifetime {
		return MaxLifetime
	}
	return s
}

// ActualValid returns the valid lifetime a server bound by the MCLT may give
// a client now (RFC 8156 §4.4, §4.4.1): the desired lifetime, but never more
// than MCLT beyond the later of the acknowledged partner lifetime (Unix
// seconds, 0 = none) and now:
//
//	actual = min(desired, max(acked - now, 0) + MCLT)
//
// Lifetimes are whole seconds; desired is clamped to MaxLifetime.
func ActualValid(now time.Time, ackedPartnerLifetime int64, desired, mclt time.Duration) time.Duration {
	d := clampLifetime(desired)
	lim := max64(ackedPartnerLifetime-now.Unix(), 0) + seconds(mclt)
	if lim < d {
		d = lim
	}
	return time.Duration(d) * time.Second
}

// PartnerLifetime returns the partner lifetime (Unix seconds) to send in
// OPTION_F_PARTNER_LIFETIME for a lease given now with lifetime actual when
// the configured lifetime is desired, as RFC 8156 §4.4.1 does it: the time
// the client is expected to renew (now + T1 fraction of actual) plus a full
// desired lifetime, so that the next renewal can already get the desired
// lifetime. A t1Fraction outside (0, 1] means DefaultT1Fraction. Both
// lifetimes are clamped to MaxLifetime.
func PartnerLifetime(now time.Time, actual, desired time.Duration, t1Fraction float64) int64 {
	if !(t1Fraction > 0 && t1Fraction <= 1) {
		t1Fraction = DefaultT1Fraction
	}
	return now.Unix() + int64(float64(clampLifetime(actual))*t1Fraction) + clampLifetime(desired)
}

// GrantParams are the endpoint conditions Grant needs.
type GrantParams struct {
	// MCLT is the relationship's maximum client lead time.
	MCLT time.Duration
	// T1Fraction is T1 as a fraction of the valid lifetime (see
	// PartnerLifetime); 0 means DefaultT1Fraction.
	T1Fraction float64
	// PartnerDown is set while the endpoint is in PARTNER-DOWN, the only
	// state whose lifetimes the MCLT does not limit (RFC 8156 §8.4.1). In
	// every other state that grants or renews (NORMAL, COMMUNICATIONS-
	// INTERRUPTED, RESOLUTION-INTERRUPTED, CONFLICT-DONE, RECOVER-DONE) the
	// cap applies (§8.8.1, §8.9.1, §8.11.1).
	PartnerDown bool
}

// Grant does the failover bookkeeping of b, a lease being given or extended
// now with the desired valid lifetime, and returns the valid lifetime the
// client may be given. It is what the endpoint's server.Policy Grant calls.
//
// Unless p.PartnerDown, the result never exceeds
// max(b.AckedPartnerLifetime, now) + MCLT - now (RFC 8156 §4.4, the MCLT
// invariant); it never exceeds desired or MaxLifetime (infinite lifetimes
// are not supported). Grant sets b.PartnerLifetime to the value to send
// (PartnerLifetime, never 0), sets fsm.FlagUpdateOwed and clears
// fsm.FlagResent (new information: it may be sent at once).
//
// Grant relies on b.AckedPartnerLifetime belonging to b's current client.
// This package keeps it so: it clears it whenever a binding leaves its
// client (becomes free, or the partner reports it with another client or a
// non-ACTIVE status). The caller sets Status, DUID, IAID, CLTT,
// StartTimeOfState, StateExpirationTime and the lifetimes.
func Grant(now time.Time, b *fsm.Binding, desired time.Duration, p GrantParams) time.Duration {
	actual := time.Duration(clampLifetime(desired)) * time.Second
	if !p.PartnerDown {
		actual = ActualValid(now, b.AckedPartnerLifetime, desired, p.MCLT)
	}
	b.PartnerLifetime = PartnerLifetime(now, actual, desired, p.T1Fraction)
	b.Flags = (b.Flags | fsm.FlagUpdateOwed) &^ fsm.FlagResent
	return actual
}

// Free does the failover bookkeeping of a lease whose client released it
// (released) or whose valid lifetime ran out, now: status RELEASED or
// EXPIRED, start-time-of-state now, no state timeout, an update owed
// (RFC 8156 §8.8.1: a BNDUPD with RELEASED or EXPIRED must be sent, and
// acknowledged, before the lease may go to another client). The partner
// lifetime, acknowledged partner lifetime and expiration time are kept:
// until the partner acknowledges, they bound the PARTNER-DOWN reuse wait
// (ReuseAt). The caller sets CLTT (on a release: now; on expiry: unchanged,
// RFC 8156 §7.4 wants the last real client interaction).
func Free(now time.Time, b *fsm.Binding, released bool) {
	b.Status = fsm.StatusExpired
	if released {
		b.Status = fsm.StatusReleased
	}
	b.StartTimeOfState = now.Unix()
	b.StateExpirationTime = 0
	b.Flags = (b.Flags | fsm.FlagUpdateOwed) &^ fsm.FlagResent
}

// Changed does the failover bookkeeping of b, whose status the server
// changed now for another reason (a DECLINE made it ABANDONED, an operator
// made it RESET): an update is owed. The caller sets Status,
// StartTimeOfState and StateExpirationTime.
func Changed(_ time.Time, b *fsm.Binding) {
	b.Flags = (b.Flags | fsm.FlagUpdateOwed) &^ fsm.FlagResent
}
