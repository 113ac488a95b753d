package update

import (
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Rejected is one lease the partner rejected in a BNDREPLY.
type Rejected struct {
	Resource fsm.Resource
	Status   wire.Status
}

// ReplyResult is the outcome of one received BNDREPLY.
type ReplyResult struct {
	// Ops are to be committed as one fsm.CmdTxn (OriginFailover). Each has
	// IfRev = the local binding's Rev; on fsm.ErrConflict, call again with
	// fresh lookups (the processing is idempotent).
	Ops []fsm.Op
	// Acked are the leases whose update is fully acknowledged: nothing more
	// owed.
	Acked []fsm.Resource
	// Freed are the Acked leases that were EXPIRED, RELEASED or RESET and
	// are now FREE or FREE-BACKUP (RFC 8156 §7.2 events 4-6). They may now go
	// to other clients; this server made them PENDING-FREE, so it is the one
	// to delete their DNS records (§9.4).
	Freed []fsm.Resource
	// Stale are accepted leases whose binding changed since the update was
	// built: the acknowledged partner lifetime was raised where it still
	// applies, but the newer information is still owed.
	Stale []fsm.Resource
	// Rejected leases keep their update owed (RFC 8156 §7.7: a rejection
	// needs no processing; the periodic scan sends them again).
	Rejected []Rejected
	// Missing are sent leases the BNDREPLY does not mention; they stay owed.
	Missing []fsm.Resource
}

// current reports whether local still says what was sent in the update
// built from sent.
func current(local, sent *fsm.Binding) bool {
	if local.Rev == sent.Rev {
		return true
	}
	return local.Status == sent.Status && local.DUID == sent.DUID && local.IAID == sent.IAID &&
		local.StartTimeOfState == sent.StartTimeOfState && local.StateExpirationTime == sent.StateExpirationTime &&
		local.CLTT == sent.CLTT && local.PartnerLifetime == sent.PartnerLifetime
}

// ack applies an accepted acknowledgement to local; it returns the binding
// to store, whether anything changed, and how the lease is classified.
func ack(local fsm.Binding, sent *fsm.Binding, status fsm.Status, stateExp *uint32, plSent int64, lone bool,
	hold time.Duration, now time.Time, out *ReplyResult) {
	rev := local.Rev
	nb := local
	nb.Rev = 0
	if !current(&local, sent) {
		// Only the acknowledged lifetime of an ACTIVE lease that is still
		// ACTIVE with the same client is still meaningful.
		if plSent > nb.AckedPartnerLifetime && local.Status == fsm.StatusActive && sent.Status == fsm.StatusActive &&
			local.DUID == sent.DUID && local.IAID == sent.IAID {
			nb.AckedPartnerLifetime = plSent
			out.Ops = append(out.Ops, fsm.Op{Resource: local.Resource, IfRev: rev, Binding: nb})
		}
		out.Stale = append(out.Stale, local.Resource)
		return
	}
	nb.PartnerLifetime = 0
	nb.Flags &^= fsm.FlagUpdateOwed | fsm.FlagResent
	if lone && status.Valid() && status != nb.Status {
		// A lone prefix stores the acknowledged binding-status (RFC 8156
		// §7.7): taking a prefix back from the secondary (FREE) is committed
		// only now.
		nb.Status = status
		nb.StartTimeOfState = sent.StartTimeOfState
	}
	switch nb.Status {
	case fsm.StatusActive:
		if plSent != 0 {
			nb.AckedPartnerLifetime = max64(nb.AckedPartnerLifetime, plSent)
		}
	case fsm.StatusFree, fsm.StatusFreeBackup:
		// A free lease has no client: the partner lifetime sent with it
		// (its state expiration time, PartnerLifetimeToSend) bounds no
		// client's lease, and Grant would take it as the next client's
		// acknowledged lifetime (beyond now + MCLT: the MCLT invariant).
		nb.AckedPartnerLifetime = 0
	}
	if lone && stateExp != nil {
		nb.StateExpirationTime = fromFO(*stateExp, now)
	}
	switch _, held := HeldUntil(&nb, now); {
	case held:
		// Held for a lost partner's clients (HoldForLostPartner): it stays
		// EXPIRED or RELEASED, nothing owed, until its state expiration
		// time; the reclaimer then clears the timer and it is free. The
		// old client's partner times go now, as freed does: they must not
		// cap or extend the next client's lease.
		nb.PartnerLifetime, nb.AckedPartnerLifetime, nb.ExpirationTime = 0, 0, 0
	case nb.Status == fsm.StatusExpired, nb.Status == fsm.StatusReleased, nb.Status == fsm.StatusReset,
		nb.Status == fsm.StatusPendingFree:
		nb = freed(nb, now, hold)
		out.Freed = append(out.Freed, local.Resource)
	}
	out.Acked = append(out.Acked, local.Resource)
	// nb's Rev is cleared: compare the rest, so an acknowledgement that
	// changes nothing (an UPDREQALL resend of an acknowledged lease) stores
	// nothing.
	if local.Rev = 0; nb != local {
		out.Ops = append(out.Ops, fsm.Op{Resource: local.Resource, IfRev: rev, Binding: nb})
	}
}

// ApplyBndReply processes a BNDREPLY answering a CLIENT_DATA BNDUPD built
// from sent (Update.Bindings) (RFC 8156 §7.7). A STATUS_CODE with an error
// on the CLIENT_DATA rejects everything, on an IA everything in it, on a
// lease that lease; a success status is informational. For every accepted
// lease whose local binding still says what was sent:
//
//	acked-partner-lifetime <- PARTNER_LIFETIME_SENT for an ACTIVE lease (the
//	                          greatest: it stays with the same client, which
//	                          current() checks); 0 for FREE or FREE-BACKUP
//	partner-lifetime       <- 0; FlagUpdateOwed, FlagResent cleared
//	EXPIRED, RELEASED, RESET -> PENDING-FREE -> Destination (FREE or
//	                          FREE-BACKUP, events 5/6), start-time-of-state
//	                          now, the old client's partner times cleared,
//	                          FREE with a state timeout of hold
//
// A binding that changed meanwhile keeps its update owed (see
// ReplyResult.Stale). Rejected and missing leases are reported, unchanged.
func ApplyBndReply(lookup Lookup, sent []fsm.Binding, reply *wire.ClientData, hold time.Duration, now time.Time) ReplyResult {
	var out ReplyResult
	bySent := make(map[fsm.Resource]*fsm.Binding, len(sent))
	for i := range sent {
		bySent[sent[i].Resource] = &sent[i]
	}
	seen := map[fsm.Resource]bool{}
	allRejected := reply.Status != nil && reply.Status.IsError()
	for i := range reply.IAs {
		ia := &reply.IAs[i]
		t := fsmIAType(ia.Type)
		iaRejected := allRejected || (ia.Status != nil && ia.Status.IsError())
		for j := range ia.Leases {
			l := &ia.Leases[j]
			r, ok := resourceOf(t, l.Prefix)
			if t == 0 || !ok {
				continue
			}
			s := bySent[r]
			if s == nil || seen[r] {
				continue // not ours to acknowledge
			}
			seen[r] = true
			switch {
			case l.Status != nil && l.Status.IsError():
				out.Rejected = append(out.Rejected, Rejected{Resource: r, Status: *l.Status})
				continue
			case iaRejected:
				st := reply.Status
				if !allRejected {
					st = ia.Status
				}
				out.Rejected = append(out.Rejected, Rejected{Resource: r, Status: *st})
				continue
			}
			local, ok := lookup(r)
			if !ok {
				continue
			}
			ack(local, s, 0, nil, fromFOp(l.PartnerLifetimeSent, now), false, hold, now, &out)
		}
	}
	for i := range sent {
		if r := sent[i].Resource; !seen[r] {
			if allRejected {
				out.Rejected = append(out.Rejected, Rejected{Resource: r, Status: *reply.Status})
			} else {
				out.Missing = append(out.Missing, r)
			}
		}
	}
	return out
}

// ApplyBndReplyPrefix processes a BNDREPLY answering a lone-IAPREFIX BNDUPD
// built from sent (RFC 8156 §7.7 second part): if accepted and the local
// binding still says what was sent, the acknowledged binding-status,
// state-expiration-time and PARTNER_LIFETIME_SENT are stored, the update is
// no longer owed, and an acknowledged EXPIRED, RELEASED or RESET resolves
// like in ApplyBndReply. For TakeBack, sent carries the status FREE that is
// committed only now.
func ApplyBndReplyPrefix(lookup Lookup, sent fsm.Binding, reply *wire.LonePrefix, hold time.Duration, now time.Time) ReplyResult {
	var out ReplyResult
	r, ok := resourceOf(fsm.IAPD, reply.Prefix)
	if !ok || r != sent.Resource {
		out.Missing = append(out.Missing, sent.Resource)
		return out
	}
	if reply.Status != nil && reply.Status.IsError() {
		out.Rejected = append(out.Rejected, Rejected{Resource: r, Status: *reply.Status})
		return out
	}
	local, ok := lookup(r)
	if !ok {
		return out
	}
	ack(local, &sent, fsm.Status(reply.BindingStatus), reply.StateExpirationTime,
		fromFOp(reply.PartnerLifetimeSent, now), true, hold, now, &out)
	return out
}
