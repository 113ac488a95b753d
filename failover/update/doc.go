// Package update is the binding-update rules of RFC 8156 (DHCPv6 failover):
// pure, deterministic functions over fsm.Binding and the failover/wire
// types, with the current time passed in.
//
// It owns:
//   - the MCLT rules (§4.4): ActualValid, PartnerLifetime, and the lease
//     bookkeeping behind server.Policy's Grant, Free and Changed;
//   - BNDUPD content from bindings (§7.4): ClientDataFor, LonePrefixFor,
//     Updates, and the inverse, ParseClientData and ParseLonePrefix (Record);
//   - receiving a BNDUPD (§7.5): the Figure 4 decision (Decide, Cell,
//     ReceivedTime, LocalTime), what to store (Accepted, §7.5.5 / Figure 5),
//     the resend-flag rule (AfterOutdated), and a whole CLIENT_DATA or lone
//     IAPREFIX in, ops and a BNDREPLY out (ApplyBndUpd, ApplyBndUpdPrefix);
//   - receiving a BNDREPLY (§7.7): ApplyBndReply, ApplyBndReplyPrefix,
//     including PENDING-FREE resolution (Destination);
//   - allocation (§4.2): address parity (AddressOwner, MayAllocateAddress),
//     pool ownership (Owner, Blank), Available, the PARTNER-DOWN waits
//     (ReuseAt, PartnerPoolAt, DuePendingFree);
//   - proportional rebalancing (§4.2.2): Rebalance, GiveOp, TakeBack;
//   - UPDREQ / UPDREQALL selection (§5.3.5, §5.3.6): SelectOwed, SelectAll,
//     SelectEager; the holds before answering an UPDREQALL of a partner
//     that lost its database (HoldForLostPartner).
//
// It must never: start goroutines, do I/O, read a clock, keep state between
// calls, or import failover/link, raftstore or server.
//
// # What the endpoint does with the outputs
//
// Client transactions (server.Policy): Grant(now, b, desired, GrantParams)
// sets b's partner lifetime and owed flag and returns the lifetime to give;
// Free and Changed mark the update owed; Available, MayAllocateAddress and
// AddressParity answer the allocator. The server commits the bindings; the
// endpoint then sends them lazily (SelectEager on the changed bindings, or
// the owed index), each through Updates.
//
// Sending: Updates(bindings, now) gives BNDUPD contents with the bindings
// as they were (Update.Bindings, with Rev). Keep them with the transaction-id
// until the BNDREPLY, then pass them with the reply to ApplyBndReply (or
// ApplyBndReplyPrefix), commit ReplyResult.Ops as one fsm.CmdTxn and, on
// fsm.ErrConflict, call it again with fresh lookups. Delete DNS records of
// ReplyResult.Freed (§9.4), if DNS update is ever done. Rejected and
// Missing leases stay owed for the periodic scan. A lost connection loses
// nothing: the owed flags remain.
//
// Receiving a BNDUPD: ApplyBndUpd (or ApplyBndUpdPrefix) with the live
// lookup (fsm.State.Get); commit Result.Ops as ONE fsm.CmdTxn
// (OriginPartner), retrying from scratch on fsm.ErrConflict; only after the
// commit succeeds send Result.Message(xid, sentTime) with the BNDUPD's
// transaction-id (RFC 8156 §7.5.2, B8: never before the database update),
// even when Ops is empty; then it MAY send updates for Result.SendNow. If
// the commit fails otherwise, send no BNDREPLY (the partner resends). Log a
// warning when Result.DNSIgnored.
//
// UPDREQ: Updates(SelectOwed(all owed bindings)); UPDREQALL:
// Updates(SelectAll(every binding)); send them within the partner's window
// and UPDDONE once every one has been answered. Entering NORMAL: the same as
// UPDREQ; the secondary then sends POOLREQ. POOLREQ on the primary: per
// pool, Rebalance(free count, backup count, share, threshold); pick Give
// available prefixes and commit GiveOp for each, then send LonePrefixFor of
// the committed bindings; pick Take FREE-BACKUP prefixes and send TakeBack
// for each; POOLRESP at any point. The periodic scan sends SelectOwed,
// including the FlagResent ones that SelectEager holds back.
//
// PARTNER-DOWN: Grant with PartnerDown (no cap); Available with the
// partner-down time; a periodic DuePendingFree over the owed EXPIRED,
// RELEASED and RESET bindings (commit its ops).
//
// # Decisions where the RFC is silent, ambiguous or contradicts itself
//
//  1. PENDING-FREE destination (digest §5.2, Appendix A.1): the text
//     (events 5 and 6, §3 "Available", §4.2.1, §4.2.2), not Figure 3: a
//     delegable prefix goes back to the primary (FREE); an address goes to
//     its bit-127 owner (FREE if 1, FREE-BACKUP if 0). PENDING-FREE is never
//     stored: it is resolved at once (Destination); a received PENDING-FREE
//     is decided and stored as its destination.
//  2. ±5 s (§7.5.1 SHOULD, Appendix A.8): every comparison uses it.
//     "Later" means later by more than 5 s. In the accept rule two times
//     within 5 s of each other are a tie, which would make both sides
//     reject each other's update forever (a lease nobody uses again has no
//     next client transaction to settle it): tie breaks it so that exactly
//     one side accepts (the bound lease, else the later raw time, else the
//     primary's), or both when both hold the same free binding (same
//     FREE or FREE-BACKUP status and time: decision 28). time(1) needs now more than 5 s past the local
//     state-expiration-time (a lease about to run out is protected); time(2)
//     needs the received CLT_TIME more than 5 s after the local
//     start-time-of-state. Disputes these leave (both sides rejecting) end
//     by the next client transaction or by time(1) once the lease runs out,
//     and are safe: the MCLT bookkeeping never depends on an update being
//     accepted.
//  3. "Clients match" in accept(3) means the same DUID and the same IAID
//     (RFC 8156 §5.6 AddressInUse covers an address bound to different
//     IAIDs on the two servers).
//  4. accept(3) with the same client accepts whatever the times, as the RFC
//     says. A stale update (an older client transaction reported late)
//     could then shorten the local lease: the state-expiration-time of an
//     ACTIVE lease that stays ACTIVE with the same client is therefore the
//     later of the local and the received one (a deviation from Figure 5's
//     "always update", for safety), and this server's own pending update is
//     kept when the received time is not later than the local one.
//  5. The local time for Figure 4 is the client-last-transaction-time if
//     set, else the start-time-of-state (literal §7.5.4); OPTION_CLT_TIME is
//     made absolute as LQ_BASE_TIME - CLT_TIME (RFC 7653 §6.3.1).
//  6. OPTION_F_EXPIRATION_TIME replaces partner-lifetime "if later than the
//     current" (§7.5.5 f). fsm encodes "update owed" as PartnerLifetime != 0
//     and zeroes it on acknowledgement (§7.7), so "current" is the later of
//     the pending and the acknowledged partner lifetime; otherwise every
//     update from the partner would be echoed back.
//  7. expiration-time: §7.3 and §5.5.4 define it as the greatest lifetime
//     ever acknowledged to the partner, Figure 5 and §7.5.5 b say "always"
//     store the received PARTNER_LIFETIME. We keep the greatest while the
//     lease stays ACTIVE with the same client (it bounds the PARTNER-DOWN
//     wait) and start afresh otherwise.
//  8. acked-partner-lifetime (Appendix A.6): §7.3 "greatest", §7.7 "store",
//     §4.4 "most recently acknowledged". We keep the greatest while the
//     lease stays with the same client and clear it when the binding leaves
//     its client: resolved to FREE/FREE-BACKUP, or an accepted BNDUPD with
//     another client or a status other than ACTIVE. Grant relies on this
//     (server.Policy's Grant does not see the previous holder).
//  9. A received EXPIRED, RELEASED or RESET is stored as received (§7.5.5
//     a). Our BNDREPLY is what makes the sender move it to PENDING-FREE
//     (event 4), and the RFC never says how the receiver's copy becomes
//     free, so a stored EXPIRED, RELEASED or RESET with no update owed is
//     treated as its PENDING-FREE destination for allocation (Owner,
//     Available). One with an update owed is this server's own change,
//     waiting for the partner's acknowledgement.
//  10. Which statuses have a timeout (§7.2: implementation-defined): those
//     whose binding has a StateExpirationTime (HasTimeout). STATE_EXPIRATION_
//     TIME, PARTNER_LIFETIME and EXPIRATION_TIME are sent only then (§7.4
//     "MUST appear only if"); EXPIRATION_TIME only when set. The
//     PARTNER_LIFETIME sent is the pending one, else the acknowledged one,
//     else the state-expiration-time (PartnerLifetimeToSend).
//  11. Whether a BNDUPD about an EXPIRED or RELEASED lease was sent
//     (§4.2.2.1, §8.8.1: only then may it not go back to the same client)
//     cannot be known from the stored fields: sending commits nothing.
//     Conditions.Sent asks the endpoint, which knows what it put on the wire
//     since start; nil (e.g. after a restart) means "assume sent". This
//     same-client re-grant is allowed whatever the pool (it is not a new
//     allocation from a pool; the MCLT bounds it).
//  12. PARTNER-DOWN waits (Appendix A.4): reuseAt = MCLT + max(client
//     expiry, partner lifetime, acked partner lifetime, expiration time,
//     PD), the client expiry taken as the later of state-expiration-time and
//     start-time-of-state. Event 4 (EXPIRED, RELEASED, RESET to PENDING-FREE
//     without acknowledgement after the MCLT since entering the status) is
//     applied no earlier than reuseAt: the MCLT after the status change alone
//     could free a lease the partner renewed before it went down, which
//     §8.4.1 forbids for a different client. The freed binding keeps an
//     update owed so that the partner learns it.
//  13. The partner's addresses are never allocated, in any state (§4.2.1
//     MUST NOT, over §8.4.1's SHOULD NOT; Appendix A.3). The partner's
//     delegable prefixes in PARTNER-DOWN: from PD + MCLT and only when the
//     own pool is exhausted (Conditions.OwnPrefixesExhausted, which only the
//     allocator knows).
//  14. Infinite lifetimes are unsupported: desired lifetimes above
//     MaxLifetime (2^29 s), including 0xffffffff, are clamped to it, and the
//     MCLT cap applies as to any lifetime.
//  15. A lone IAPREFIX accepted also stores its start-time-of-state
//     (Figure 5, though §7.5.5's lone-prefix list omits it) and keeps the
//     local client fields as hints; a lone ACTIVE prefix, or an ACTIVE lease
//     without a state-expiration-time, is MissingBindingInformation.
//  16. OPTION_VSS: RFC 6607 is not supported, so no VPN is configured and
//     any OPTION_VSS rejects the whole record with ConfigurationConflict
//     (§7.5.4); none is ever sent (§7.4).
//  17. DNS update information is accepted and not stored (this server does
//     no DNS update); Result.DNSIgnored asks for the §9 warning. No
//     DNSUpdateNotSupported rejection (a MAY).
//  18. Resend flag (§7.5.4): OutdatedBindingInformation with the update
//     flag clear sets FlagUpdateOwed and lists the lease in SendNow; with it
//     already set, FlagResent is set, which holds the update back from
//     eager sending (SelectEager) until the periodic scan. FlagResent is
//     cleared by an acknowledgement and by any new local change (Grant,
//     Free, Changed). Other rejections change no flag.
//  19. An accepted update drops this server's pending update for the lease
//     (the partner's information is newer), except as in item 4.
//  20. A BNDREPLY acknowledgement is applied in full only if the binding
//     still says what was sent (same Rev, or the same status, client,
//     start-time-of-state, state-expiration-time, CLTT and partner
//     lifetime; a flag-only change does not matter). Otherwise only the
//     acknowledged partner lifetime of a lease still ACTIVE with the same
//     client is raised, and the newer information stays owed.
//  21. A lease freed on acknowledgement gets start-time-of-state now, no
//     state timeout (FREE: the configured hold, so that server reclamation
//     forgets it), and keeps its last client as a hint (RFC 8156 §7.2 FREE:
//     "client identification MAY appear ... as a hint").
//  22. T1 and T2 are not kept by the binding database and are sent as 0; a
//     lone IAPREFIX has preferred and valid lifetimes 0 (digest §3.4).
//  23. Lone IAPREFIX or CLIENT_DATA: a delegable prefix travels alone when
//     it is FREE or FREE-BACKUP or has no client DUID; everything else in
//     its client's CLIENT_DATA. An address without a client DUID cannot be
//     described (CLIENT_DATA needs OPTION_CLIENTID) and is skipped: its pool
//     follows from its parity.
//  24. A client's leases are split over several CLIENT_DATA every
//     MaxLeasesPerUpdate leases to respect the 65535-byte message limit.
//  25. No binding for a delegable prefix means FREE, the primary's (§4.2.2:
//     all start as the primary's); only FREE-BACKUP must be recorded.
//  26. Rebalancing (§4.2.2 "some threshold mechanism"): the secondary's
//     target is round(share × available), at most MaxBackup per pool (each
//     FREE-BACKUP prefix is a record in both databases); nothing moves while
//     its count is within threshold of the target, unless a side that should
//     hold some holds none; moves go all the way to the target (hysteresis).
//     Rebalance works on counts, so pools of 2^32 prefixes cost nothing to
//     decide; the caller picks which prefixes move. The
//     primary commits FREE-BACKUP before sending it (it MUST NOT allocate
//     the prefix once sent) but commits a take-back (FREE) only when the
//     secondary accepts it (decision 28).
//  27. Absolute times: fsm's 0 means unset and maps to an absent option;
//     received failover times are read as the instant nearest now (serial
//     arithmetic, FromFOTimeNear).
//  28. A take-back's outcome must survive a lost BNDREPLY (§4.2.2 says only
//     that an accepted take-back makes the prefix the primary's). The
//     primary commits nothing before the answer (the secondary may have
//     delegated the prefix), so the secondary, whose commit is the
//     decision, records it as owed: accepting a lone FREE over its
//     FREE-BACKUP prefix, or over a FREE whose news it still owes, it sets
//     FlagUpdateOwed (TakenBack) in the same commit, and sends the primary a
//     lone FREE like any owed update, again after every reconnect or
//     primary restart, before its POOLREQ. The primary accepts it over its
//     FREE-BACKUP (a later start-time-of-state) and, when the BNDREPLY did
//     arrive, over the FREE it stored from it: the two say the same, and a
//     tie between two equal free bindings is accepted on both sides
//     (decide.go tie), so the echo costs one BNDUPD and BNDREPLY and owes
//     nothing back. The alternative, a pending take-back persisted on the
//     primary, would need a new binding flag in the log and snapshot format
//     (refused by older builds) and count rules for prefixes in transit.
//  29. A partner that lost its database (UPDREQALL, §8.5.2) may have renewed
//     leases beyond what it told us, up to the MCLT past the later of our
//     expiration-time and the moment it renewed; its RECOVER-WAIT (§8.6)
//     stops it serving for one MCLT but does not stop us reusing those
//     leases. Before answering an UPDREQALL the endpoint commits
//     HoldForLostPartner for every binding: an ACTIVE lease ends no earlier
//     than max(expiration-time, now) + MCLT, and an EXPIRED or RELEASED one
//     still owed gets that as a state expiration time during which it goes
//     to nobody (Available) and which an acknowledgement does not cut short
//     (ApplyBndReply); the answer carries both to the partner. This departs
//     from §7.2 event (4) for held leases. Between two unbound bindings a
//     held one wins over one not held, or held less long, before any time
//     is compared (Decide), and a non-ACTIVE binding received takes no
//     partner times (Accepted).
//  30. Within the skew, a lease "bound to a client" for the tie-break is an
//     ACTIVE one whose state-expiration-time is still ahead: an ACTIVE
//     update that crossed the receiver's own expiry must not revive it.
//
// # RFC text versus the digest (/work/shared/spec/rfc8156-digest.md)
//
// The RFC wins; where the digest differs or is silent:
//
//  1. expiration-time: the digest (§1.3, §7.3) describes it as what the
//     partner sent in OPTION_F_PARTNER_LIFETIME, stored "always". RFC §7.3
//     and §5.5.4 define it as the *greatest* lifetime ever acknowledged to
//     the partner; the digest does not note the conflict with Figure 5.
//     See decision 7.
//  2. acked-partner-lifetime: the digest (Appendix A.6) cites §7.3 and
//     §7.7; RFC §4.4 gives a third definition, "most recently
//     acknowledged". See decision 8.
//  3. Event 4 in PARTNER-DOWN: the digest's §10 table lists "MCLT after
//     entering EXPIRED, RELEASED or RESET" as a separate, shorter path to
//     FREE; RFC §8.4.1 still forbids a different client before the reuse
//     time. See decision 12.
//  4. §7.4 asterisked options "MUST appear only if the value ... is
//     associated with a timeout; otherwise, it MUST NOT appear": the digest
//     reads "present if and only if" (B6). The RFC does not require
//     EXPIRATION_TIME when there is no value to send. See decision 10.
//  5. accept(3): the digest says "same client: accept" like the RFC but does
//     not define "client"; RFC §5.6 ties AddressInUse to the IAID as well.
//     See decision 3.
//  6. Lone IAPREFIX acceptance: the digest (§7.3) lists status, partner
//     lifetime, state-expiration-time and expiration-time, matching
//     §7.5.5; Figure 5 also carries START_TIME_OF_STATE. See decision 15.
//  7. Reuse of an EXPIRED or RELEASED lease by the same client: the digest
//     (§5.4) states it for leases in general; RFC §4.2.2.1 states it for
//     delegated prefixes and §8.8.1 for leases in NORMAL. Same rule, applied
//     to both.
//  8. The ±5 s tolerance is a SHOULD in RFC §7.5.1; the digest (§7.2)
//     states it as a rule. Applied everywhere (decision 2).
//
// The digest's Figure 4 table, the §6.3 worked example (3600 s and partner
// lifetime t + 261000, then 259200 s and (t + 1800) + 388800) and the MCLT
// formula match the RFC.
package update
