package update

import (
	"slices"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Lookup returns the local binding of a resource (fsm.State.Get and
// fsm.View.Get have this signature).
type Lookup func(fsm.Resource) (fsm.Binding, bool)

// Accepted returns the binding to store when rec, received in a BNDUPD, was
// accepted over local (nil if none): RFC 8156 §7.5.5 and Figure 5.
//
//	binding-status         <- BINDING_STATUS (PENDING-FREE: its Destination)
//	start-time-of-state    <- START_TIME_OF_STATE
//	state-expiration-time  <- STATE_EXPIRATION_TIME (0 if absent), but an
//	                          ACTIVE lease that stays ACTIVE with the same
//	                          client keeps the later of the two
//	expiration-time        <- PARTNER_LIFETIME, the greatest while the lease
//	                          stays ACTIVE with the same client
//	partner-raw-clt-time   <- CLT_TIME (made absolute), when present
//	client-last-transaction-time <- PARTNER_RAW_CLT_TIME, if later
//	partner-lifetime       <- EXPIRATION_TIME, if later than the current
//	                          partner lifetime (pending, or acknowledged)
//
// A CLIENT_DATA record also sets the client (DUID, IAID) and the lifetimes
// the client was given; a lone prefix keeps the local ones. When the lease
// leaves its client here (another DUID or IAID, or any status but ACTIVE)
// the per-client partner times are cleared first: acked-partner-lifetime
// and expiration-time (and, for another client, CLTT and
// partner-raw-clt-time), so that they never cap or delay another client.
//
// The update this server owed the partner is dropped (PartnerLifetime 0,
// FlagUpdateOwed and FlagResent clear), the partner's information being
// newer, except when an ACTIVE lease stays ACTIVE with the same client and
// the received time is not later than ours (accept(3) accepts those
// whatever the times): then our update still goes out.
func Accepted(local *fsm.Binding, rec *Record) fsm.Binding {
	nb := fsm.Binding{Resource: rec.Resource}
	if local != nil {
		nb = *local
		nb.Rev = 0
	}
	holder := local != nil && (rec.Lone || SameClient(local, rec))
	status := rec.Status
	if status == fsm.StatusPendingFree {
		status = Destination(rec.Resource)
	}
	stillActive := holder && !rec.Lone && local.Status == fsm.StatusActive && status == fsm.StatusActive
	var cur int64 // the current partner lifetime, for EXPIRATION_TIME
	if holder {
		cur = max64(local.PartnerLifetime, local.AckedPartnerLifetime)
	}
	if !(stillActive && CompareTimes(ReceivedTime(rec), LocalTime(local)) <= 0) {
		nb.PartnerLifetime = 0
		nb.Flags &^= fsm.FlagUpdateOwed | fsm.FlagResent
	}
	if !holder {
		nb.CLTT, nb.PartnerRawCLTT = 0, 0
	}
	if !stillActive {
		nb.AckedPartnerLifetime, nb.ExpirationTime = 0, 0
	}
	if !rec.Lone {
		nb.DUID, nb.IAID = rec.DUID, rec.IAID
		nb.PreferredLifetime, nb.ValidLifetime = rec.PreferredLifetime, rec.ValidLifetime
	}
	nb.Status = status
	nb.StartTimeOfState = rec.StartTimeOfState
	nb.StateExpirationTime = rec.StateExpirationTime
	if stillActive && local.StateExpirationTime > nb.StateExpirationTime {
		nb.StateExpirationTime = local.StateExpirationTime
	}
	// The partner times belong to a client's lease: a lease that is not
	// ACTIVE here takes none (a held EXPIRED lease carries its old client's,
	// HoldForLostPartner), so that they never cap or extend the next
	// client's lease.
	bound := status == fsm.StatusActive
	if bound && rec.PartnerLifetime != 0 {
		nb.ExpirationTime = max64(nb.ExpirationTime, rec.PartnerLifetime)
	}
	if rec.CLTT != 0 {
		nb.PartnerRawCLTT = rec.CLTT
	}
	if rec.PartnerRawCLTT > nb.CLTT {
		nb.CLTT = rec.PartnerRawCLTT
	}
	if bound && rec.ExpirationTime > cur && rec.ExpirationTime > nb.PartnerLifetime {
		nb.PartnerLifetime = rec.ExpirationTime
	}
	return nb
}

// AfterOutdated applies the resend-flag rule of RFC 8156 §7.5.4 to local,
// whose update from the partner was just rejected with
// OutdatedBindingInformation. If no update was owed, one now is
// (FlagUpdateOwed) and sendNow is true: the endpoint MAY send it right after
// the BNDREPLY. If one was already owed, it must not be sent at once again:
// FlagResent is set, which holds it back for the periodic scan (see
// SelectEager). changed says whether nb differs from local (an op to
// commit).
func AfterOutdated(local fsm.Binding) (nb fsm.Binding, changed, sendNow bool) {
	nb = local
	switch {
	case !local.Owed():
		nb.Flags = (nb.Flags | fsm.FlagUpdateOwed) &^ fsm.FlagResent
		return nb, true, true
	case local.Flags&fsm.FlagResent == 0:
		nb.Flags |= fsm.FlagResent
		return nb, true, false
	}
	return nb, false, false
}

// TakenBack reports whether accepting rec over local is the secondary giving
// a delegable prefix back to the primary (RFC 8156 §4.2.2: a lone IAPREFIX
// with status FREE over a FREE-BACKUP prefix, or over a FREE one whose
// news is still owed from an earlier take-back). The secondary then owes
// the primary an update for it (FlagUpdateOwed, committed with the accept):
// the primary stores FREE only when the BNDREPLY arrives, and a BNDREPLY
// lost with the connection, or with a primary that restarts, would leave
// the prefix FREE-BACKUP there and FREE here, owed by neither side and
// delegable by neither server, for ever. The owed FREE goes out like any
// other update (at once, and again after every reconnect, before POOLREQ);
// the primary accepts it (decision 28 in the package documentation).
func TakenBack(role Role, local *fsm.Binding, rec *Record) bool {
	if role != Secondary || local == nil || !rec.Lone || rec.Resource.Type != fsm.IAPD || rec.Status != fsm.StatusFree {
		return false
	}
	return local.Status == fsm.StatusFreeBackup || (local.Status == fsm.StatusFree && local.Owed())
}

// Params are what BNDUPD processing needs to know about the endpoint.
type Params struct {
	Role Role
	// Covered reports whether a resource belongs to this failover endpoint
	// (its configured pools); leases that do not are rejected with
	// ConfigurationConflict (RFC 8156 §7.5.4). nil: every resource.
	Covered func(fsm.Resource) bool
}

// Outcome is what happened to one received lease.
type Outcome struct {
	Resource fsm.Resource
	// Accepted is true when the lease was accepted; else Reject says why.
	Accepted bool
	Reject   *Reject
	// Verdict is the Figure 4 decision (zero when a check before it failed).
	Verdict Verdict
}

// Result is the outcome of one received BNDUPD.
type Result struct {
	// Ops are to be committed as one fsm.CmdTxn (OriginPartner) before the
	// reply is sent. Each has IfRev = the local binding's Rev (0 if none): if
	// the txn fails with fsm.ErrConflict, call ApplyBndUpd again with fresh
	// lookups. Empty: nothing to store (send the reply at once).
	Ops []fsm.Op
	// Reply is the BNDREPLY content for a CLIENT_DATA BNDUPD, ReplyPrefix for
	// a lone IAPREFIX: RFC 8156 §7.6 echoes with a STATUS_CODE on every
	// rejected part.
	Reply       *wire.ClientData
	ReplyPrefix *wire.LonePrefix
	// SendNow are the resources whose own update the endpoint MAY send right
	// after the BNDREPLY (§7.5.4: OutdatedBindingInformation with the flag
	// previously clear).
	SendNow []fsm.Resource
	// Outcomes has one entry per received lease, in message order.
	Outcomes []Outcome
	// DNSIgnored is set when the BNDUPD carried DNS update information: this
	// server does no DNS update and carries on (RFC 8156 §9: it SHOULD warn).
	DNSIgnored bool
}

// Message returns the BNDREPLY for r, with the BNDUPD's transaction-id.
func (r *Result) Message(xid, sentTime uint32) *wire.Message {
	if r.ReplyPrefix != nil {
		return wire.NewBndReplyPrefix(xid, sentTime, r.ReplyPrefix)
	}
	return wire.NewBndReply(xid, sentTime, r.Reply)
}

// Accepted counts the accepted leases.
func (r *Result) Accepted() int {
	n := 0
	for _, o := range r.Outcomes {
		if o.Accepted {
			n++
		}
	}
	return n
}

// processor holds the state of one BNDUPD's processing.
type processor struct {
	lookup Lookup
	p      Params
	now    time.Time
	res    Result
	// touched are the resources accepted so far: a slice, as a BNDUPD has
	// few (at most MaxLeasesPerUpdate when we built it), and a map per
	// BNDUPD was a tenth of the receiver's CPU in an UPDREQALL.
	touched []fsm.Resource
}

// lease processes one received lease; it returns the status to put in the
// reply lease (nil when accepted).
func (pr *processor) lease(rec Record, rj *Reject) *wire.Status {
	out := Outcome{Resource: rec.Resource}
	defer func() { pr.res.Outcomes = append(pr.res.Outcomes, out) }()
	if rj == nil && slices.Contains(pr.touched, rec.Resource) {
		rj = reject(wire.StatusConfigurationConflict, "%v appears twice in the BNDUPD", rec.Resource)
	}
	if rj == nil && pr.p.Covered != nil && !pr.p.Covered(rec.Resource) {
		rj = reject(wire.StatusConfigurationConflict, "%v is not served by this failover endpoint", rec.Resource)
	}
	if rj != nil {
		out.Reject = rj
		return rj.Status()
	}
	pr.touched = append(pr.touched, rec.Resource)
	pr.res.DNSIgnored = pr.res.DNSIgnored || rec.DNS
	var local *fsm.Binding
	var rev uint64
	if b, ok := pr.lookup(rec.Resource); ok {
		local, rev = &b, b.Rev
	}
	v := Decide(local, &rec, pr.p.Role, pr.now)
	out.Verdict = v
	if v.Accept {
		out.Accepted = true
		nb := Accepted(local, &rec)
		if TakenBack(pr.p.Role, local, &rec) {
			nb.Flags |= fsm.FlagUpdateOwed
		}
		pr.res.Ops = append(pr.res.Ops, fsm.Op{Resource: rec.Resource, IfRev: rev, Binding: nb})
		return nil
	}
	out.Reject = &Reject{Code: v.Code, Message: v.Reason}
	if v.Code == wire.StatusOutdatedBindingInformation {
		nb, changed, sendNow := AfterOutdated(*local)
		if changed {
			nb.Rev = 0
			pr.res.Ops = append(pr.res.Ops, fsm.Op{Resource: rec.Resource, IfRev: rev, Binding: nb})
		}
		if sendNow {
			pr.res.SendNow = append(pr.res.SendNow, rec.Resource)
		}
	}
	return out.Reject.Status()
}

// ApplyBndUpd processes the CLIENT_DATA of a received BNDUPD (RFC 8156
// §7.5): it checks the record (OPTION_VSS: this server supports no VPN, so
// any is ConfigurationConflict for the whole record; a client DUID and at
// least one IA, else MissingBindingInformation), then each lease: that it
// can be processed (MissingBindingInformation), that it is covered
// (ConfigurationConflict), Decide against lookup's binding, and the binding
// to store (Accepted) or the flag to set (AfterOutdated). now is the
// receiver's clock; cd (from a decoded BNDUPD) must not be nil.
//
// The endpoint commits Result.Ops, and only once they are committed sends
// Result.Message (RFC 8156 §7.5.2: a BNDREPLY MUST NOT precede the database
// update), then may send updates for Result.SendNow.
func ApplyBndUpd(lookup Lookup, cd *wire.ClientData, p Params, now time.Time) Result {
	pr := &processor{lookup: lookup, p: p, now: now}
	pr.res.Reply = cd.ReplyEcho()
	var whole *Reject
	switch {
	case cd.VSS != nil:
		whole = reject(wire.StatusConfigurationConflict, "OPTION_VSS: no VPN is configured here (RFC 6607 is not supported)")
	case !duidOK(string(cd.ClientID)):
		whole = reject(wire.StatusMissingBindingInformation, "client DUID of %d bytes", len(cd.ClientID))
	case len(cd.IAs) == 0:
		whole = reject(wire.StatusMissingBindingInformation, "no IA_NA, IA_TA or IA_PD")
	}
	if whole != nil {
		pr.res.Reply.Status = whole.Status()
		return pr.res
	}
	for i := range cd.IAs {
		ia := &cd.IAs[i]
		t := fsmIAType(ia.Type)
		for j := range ia.Leases {
			var rec Record
			var rj *Reject
			if t == 0 {
				rj = reject(wire.StatusMissingBindingInformation, "unknown IA type %v", ia.Type)
			} else {
				rec, rj = parseLease(t, string(cd.ClientID), ia, cd.BaseTime, &ia.Leases[j], false, now)
			}
			pr.res.Reply.IAs[i].Leases[j].Status = pr.lease(rec, rj)
		}
	}
	return pr.res
}

// ApplyBndUpdPrefix is ApplyBndUpd for a BNDUPD carrying a lone IAPREFIX
// (RFC 8156 §7.5.5 second list): proportional-allocation moves (FREE-BACKUP
// to give the prefix to the secondary, FREE to take it back; the secondary
// rejects taking back a prefix it delegated, by time(1), §4.2.2) and
// UPDREQALL. An ACTIVE lone prefix is MissingBindingInformation.
func ApplyBndUpdPrefix(lookup Lookup, lp *wire.LonePrefix, p Params, now time.Time) Result {
	pr := &processor{lookup: lookup, p: p, now: now}
	pr.res.ReplyPrefix = lp.ReplyEcho()
	if lp.VSS != nil {
		rj := reject(wire.StatusConfigurationConflict, "OPTION_VSS: no VPN is configured here (RFC 6607 is not supported)")
		pr.res.ReplyPrefix.Status = rj.Status()
		if r, ok := resourceOf(fsm.IAPD, lp.Prefix); ok {
			pr.res.Outcomes = append(pr.res.Outcomes, Outcome{Resource: r, Reject: rj})
		}
		return pr.res
	}
	rec, rj := parseLease(fsm.IAPD, "", nil, lp.BaseTime, &lp.Lease, true, now)
	pr.res.ReplyPrefix.Status = pr.lease(rec, rj)
	return pr.res
}
