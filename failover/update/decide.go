package update

import (
	"fmt"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Rule is a conflict-resolution rule of RFC 8156 Figure 4 (§7.5.4).
type Rule uint8

// Rules.
const (
	// RuleNoLocal: the receiver has no binding for the lease; accept.
	RuleNoLocal Rule = iota
	// RuleAccept ("accept"): accept if the received time is later than the
	// local time, else OutdatedBindingInformation.
	RuleAccept
	// RuleTime1 ("time(1)"): accept if now is later than the local
	// state-expiration-time, else OutdatedBindingInformation.
	RuleTime1
	// RuleTime2 ("time(2)"): accept if the received OPTION_CLT_TIME is later
	// than the local start-time-of-state, else OutdatedBindingInformation.
	RuleTime2
	// RuleAccept3 ("accept(3)"): same client: accept; different clients:
	// accept if time(2) holds or the receiver is the secondary, else
	// AddressInUse.
	RuleAccept3
)

// String returns the Figure 4 name.
func (r Rule) String() string {
	switch r {
	case RuleNoLocal:
		return "no-local"
	case RuleAccept:
		return "accept"
	case RuleTime1:
		return "time(1)"
	case RuleTime2:
		return "time(2)"
	case RuleAccept3:
		return "accept(3)"
	}
	return fmt.Sprintf("Rule(%d)", uint8(r))
}

// tableStatus maps a status to its Figure 4 row or column: PENDING-FREE is
// not in the table and is treated as its destination, FREE or FREE-BACKUP,
// which share a row and a column.
func tableStatus(s fsm.Status) fsm.Status {
	switch s {
	case fsm.StatusPendingFree, fsm.StatusFreeBackup:
		return fsm.StatusFree
	}
	return s
}

// Cell returns the Figure 4 rule for a lease whose status is local in the
// receiver's database and received in the BNDUPD.
//
//	local \ received  ACTIVE     EXPIRED  RELEASED  FREE/FREE-BACKUP  RESET/ABANDONED
//	ACTIVE            accept(3)  time(1)  accept    time(1)           accept
//	RESET             time(2)    accept   accept    accept            accept
//	any other         accept     accept   accept    accept            accept
func Cell(local, received fsm.Status) Rule {
	l, r := tableStatus(local), tableStatus(received)
	switch {
	case l == fsm.StatusActive && r == fsm.StatusActive:
		return RuleAccept3
	case l == fsm.StatusActive && (r == fsm.StatusExpired || r == fsm.StatusFree):
		return RuleTime1
	case l == fsm.StatusReset && r == fsm.StatusActive:
		return RuleTime2
	}
	return RuleAccept
}

// ReceivedTime returns the time of a received lease that RFC 8156 §7.5.4
// compares: for ACTIVE, EXPIRED and RELEASED the OPTION_CLT_TIME if present,
// else the OPTION_F_PARTNER_RAW_CLT_TIME if present (ours, with LocalTime:
// docs/failover.md item 87), else the start-time-of-state; for the other
// statuses the later of OPTION_CLT_TIME and the start-time-of-state.
//
// Invariant: for ACTIVE, EXPIRED and RELEASED, the time a receiver gives a
// binding it received equals the time its sender gives it (LocalTime), so
// the two servers compare the same two times, one from each side, and
// crossing updates cannot both be accepted: the sender's BNDUPD carries
// OPTION_CLT_TIME exactly when it has a client-last-transaction-time, and
// its partner-raw-clt-time otherwise.
func ReceivedTime(rec *Record) int64 {
	switch rec.Status {
	case fsm.StatusActive, fsm.StatusExpired, fsm.StatusReleased:
		switch {
		case rec.CLTT != 0:
			return rec.CLTT
		case rec.PartnerRawCLTT != 0:
			return rec.PartnerRawCLTT
		}
		return rec.StartTimeOfState
	}
	return max64(rec.CLTT, rec.StartTimeOfState)
}

// LocalTime returns the time of a local binding that RFC 8156 §7.5.4
// compares: for ACTIVE, EXPIRED and RELEASED the client-last-transaction-
// time if there is one, else the partner-raw-clt-time (the client's last
// transaction as the partner reported it), else the start-time-of-state;
// for the other statuses the later of the client-last-transaction-time and
// the start-time-of-state.
//
// For those other statuses §7.5.4 says "client-last-transaction-time if one
// appears" on the local side but "the later of" the two on the received
// side; with the two rules, crossing updates whose times fall between a
// binding's last client transaction and its state change (a Decline, an
// operator reset) were both accepted and the servers swapped versions. We
// use the received side's rule on both (docs/failover.md item 87): the
// state change is the binding's latest news.
//
// The partner-raw-clt-time step is ours (docs/failover.md item 87): §7.5.4
// goes straight to the start-time-of-state, which for a lease this server
// only learnt from its partner and then expired itself is the time of its
// own expiry sweep. A renewal the partner granted alone during an outage
// (before that sweep) then looks older and is rejected, and the partner
// rejects our EXPIRED by time(1): both owe their update until the renewed
// lease runs out, and this server never learns of the renewal (a chaos run
// found dozens after an 8 s outage). ReceivedTime takes the same step for
// the same binding received, so both servers compare like with like.
func LocalTime(b *fsm.Binding) int64 {
	switch b.Status {
	case fsm.StatusActive, fsm.StatusExpired, fsm.StatusReleased:
		switch {
		case b.CLTT != 0:
			return b.CLTT
		case b.PartnerRawCLTT != 0:
			return b.PartnerRawCLTT
		}
		return b.StartTimeOfState
	}
	return max64(b.CLTT, b.StartTimeOfState)
}

// Verdict is the decision on one received lease.
type Verdict struct {
	Accept bool
	// Rule is the Figure 4 rule applied.
	Rule Rule
	// Code is the rejection status (OutdatedBindingInformation or
	// AddressInUse); StatusSuccess when accepted.
	Code wire.StatusCode
	// Reason explains the decision (for the BNDREPLY status message and logs).
	Reason string
}

func accept(r Rule, format string, args ...any) Verdict {
	return Verdict{Accept: true, Rule: r, Reason: fmt.Sprintf(format, args...)}
}

func refuse(r Rule, code wire.StatusCode, format string, args ...any) Verdict {
	return Verdict{Rule: r, Code: code, Reason: fmt.Sprintf(format, args...)}
}

// SameClient reports whether the received lease names the client of the
// local binding: the same DUID and the same IAID (RFC 8156 §5.6: an address
// bound to different IAIDs on the two servers is AddressInUse too). A lone
// prefix names no client and never matches.
func SameClient(local *fsm.Binding, rec *Record) bool {
	return !rec.Lone && local.DUID == rec.DUID && local.IAID == rec.IAID
}

// Decide applies RFC 8156 Figure 4 to a received lease: local is the
// receiver's binding for it (nil if none), role the receiver's role, now
// the receiver's clock. Times within ±Skew seconds are the same time
// (§7.5.1), so "later" means later by more than Skew seconds, in every rule:
//
//   - accept: ReceivedTime(rec) later than LocalTime(local); when the two
//     are essentially the same, tie breaks the tie so that at least one of
//     the two servers accepts the other's binding (exactly one, unless both
//     hold the same free binding); between two unbound bindings, before
//     any time, one held for a partner that lost its database (HeldUntil)
//     wins over one not held, or held less long;
//   - time(1): now later than local.StateExpirationTime (a local lease
//     without one never runs out: reject);
//   - time(2): the received OPTION_CLT_TIME present and later than
//     local.StartTimeOfState;
//   - accept(3): SameClient, or time(2), or role is Secondary; else
//     AddressInUse.
//
// It only decides; Accepted and AfterOutdated give the binding to store.
func Decide(local *fsm.Binding, rec *Record, role Role, now time.Time) Verdict {
	if local == nil {
		return accept(RuleNoLocal, "no local binding")
	}
	rule := Cell(local.Status, rec.Status)
	rt, lt := ReceivedTime(rec), LocalTime(local)
	time2 := func() bool { return rec.CLTT != 0 && CompareTimes(rec.CLTT, local.StartTimeOfState) > 0 }
	switch rule {
	case RuleTime1:
		if local.StateExpirationTime != 0 && CompareTimes(now.Unix(), local.StateExpirationTime) > 0 {
			return accept(rule, "local %v lease ran out at %d", local.Status, local.StateExpirationTime)
		}
		return refuse(rule, wire.StatusOutdatedBindingInformation, "local %v lease runs until %d", local.Status, local.StateExpirationTime)
	case RuleTime2:
		if time2() {
			return accept(rule, "client used the lease at %d, after the local %v at %d", rec.CLTT, local.Status, local.StartTimeOfState)
		}
		return refuse(rule, wire.StatusOutdatedBindingInformation, "no client transaction after the local %v at %d", local.Status, local.StartTimeOfState)
	case RuleAccept3:
		switch {
		case SameClient(local, rec):
			return accept(rule, "same client")
		case time2():
			return accept(rule, "other client used the lease at %d, after the local lease began at %d", rec.CLTT, local.StartTimeOfState)
		case role == Secondary:
			return accept(rule, "other client; the primary's binding wins")
		}
		return refuse(rule, wire.StatusAddressInUse, "leased here to another client since %d", local.StartTimeOfState)
	}
	if unbound(local.Status) && unbound(rec.Status) {
		// A lease held for a partner that lost its database (HeldUntil)
		// wins over one that is not, or less long, whatever the times:
		// the holding side knows what the other forgot (a node restored
		// from an older snapshot can send its own EXPIRED with the same
		// or a later time, and taking it would end the hold).
		lh, rh := heldEnd(local, now), heldEnd(&rec.Binding, now)
		switch {
		case lh > rh:
			return refuse(rule, wire.StatusOutdatedBindingInformation, "the local lease is held until %d for a partner that lost its database", lh)
		case rh > lh:
			return accept(rule, "the received lease is held until %d for a partner that lost its database", rh)
		}
	}
	switch CompareTimes(rt, lt) {
	case 1:
		return accept(rule, "received time %d later than local %d", rt, lt)
	case -1:
		return refuse(rule, wire.StatusOutdatedBindingInformation, "received time %d earlier than local %d", rt, lt)
	}
	return tie(rule, local, rec, rt, lt, role, now)
}

// tie decides an "accept" cell whose two times are essentially the same
// (within ±Skew, RFC 8156 §7.5.1). The RFC's rule alone ("accept if later,
// else reject") makes both servers reject each other's update: each keeps
// its own, owes it, and resends it at every scan, forever (a chaos run
// found pairs stuck in NORMAL with updates owed on both sides). §7.5.4 asks
// that "ultimately, the server with the most recent binding information
// should have its update accepted", so a tie is broken such that exactly
// one of the two servers accepts the other's binding (both, when the two
// bindings say the same):
//
//  1. a lease bound to a client wins over one that is not (received ACTIVE
//     over a local EXPIRED, RELEASED or free binding: accept; a local
//     ACTIVE over a received RELEASED: reject). Within the skew the order
//     is unknowable, and keeping the lease bound can only waste it until
//     it runs out, while freeing it could give it to a second client. An
//     ACTIVE lease whose state-expiration-time has passed is bound to no
//     one: a sender's ACTIVE update that crossed the receiver's own expiry
//     of the lease (simulation seed 18) must not bring it back, or the
//     receiver holds ACTIVE what its partner, accepting the receiver's
//     EXPIRED by time(1), holds EXPIRED;
//  2. otherwise the raw times decide (later wins);
//  3. equal times and the same free status (FREE or FREE-BACKUP): both
//     servers hold the same information, and both accept (the secondary's
//     FREE after a take-back, TakenBack, echoes what the primary stored on
//     the BNDREPLY; rejecting it would make the primary owe it back);
//  4. otherwise, equal times: the primary's binding wins (the secondary
//     accepts), as accept(3) decides between two clients.
//
// ACTIVE against RESET or ABANDONED goes by 2 and 4 (the RESET side
// decides by time(2), which has no tie-break).
func tie(rule Rule, local *fsm.Binding, rec *Record, rt, lt int64, role Role, now time.Time) Verdict {
	const why = "times %d and %d essentially the same (±%d s): %s"
	switch {
	case rec.Status == fsm.StatusActive && rec.StateExpirationTime > now.Unix() && unbound(local.Status):
		return accept(rule, why, rt, lt, Skew, "the bound lease wins")
	case local.Status == fsm.StatusActive && local.StateExpirationTime > now.Unix() && unbound(rec.Status):
		return refuse(rule, wire.StatusOutdatedBindingInformation, why, rt, lt, Skew, "the local bound lease wins")
	case rt > lt:
		return accept(rule, why, rt, lt, Skew, "the received one is later")
	case rt < lt:
		return refuse(rule, wire.StatusOutdatedBindingInformation, why, rt, lt, Skew, "the local one is later")
	case rec.Status == local.Status && (local.Status == fsm.StatusFree || local.Status == fsm.StatusFreeBackup):
		return accept(rule, why, rt, lt, Skew, "the same free binding")
	case role == Secondary:
		return accept(rule, why, rt, lt, Skew, "equal: the primary's binding wins")
	}
	return refuse(rule, wire.StatusOutdatedBindingInformation, why, rt, lt, Skew, "equal: the primary's binding wins")
}

// heldEnd returns the end of b's hold for a partner that lost its database
// (HeldUntil), or 0.
func heldEnd(b *fsm.Binding, now time.Time) int64 {
	if end, held := HeldUntil(b, now); held {
		return end
	}
	return 0
}

// unbound reports whether a lease in status s is bound to no client and not
// withheld by an operator or a Decline: EXPIRED, RELEASED, or free.
func unbound(s fsm.Status) bool {
	switch s {
	case fsm.StatusExpired, fsm.StatusReleased, fsm.StatusFree, fsm.StatusFreeBackup, fsm.StatusPendingFree:
		return true
	}
	return false
}
