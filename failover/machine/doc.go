// Package machine is the RFC 8156 §8 failover endpoint state machine as a
// pure, deterministic object: events in (each carrying the current time),
// actions out.
//
// It owns:
//   - the ten endpoint states and every transition of RFC 8156 §8, driven
//     by the own state, the communications status and the partner's state
//     (§8.1), including the STARTUP algorithm of §8.3.2, run by New on
//     every start;
//   - what goes into the persistent record (fsm.EndpointState, §8.2) and
//     when it must be stored; what goes into each STATE we send (§6.3,
//     §8.3.1) and when to send it;
//   - when to send UPDREQ / UPDREQALL, flush owed updates, send POOLREQ,
//     raise an alarm or drop the connection, and which timers run;
//   - the service table: how a server in each state answers clients, where
//     it allocates from, and whether the MCLT caps lifetimes (Service).
//
// It must never: start goroutines, do I/O, read a clock (time arrives with
// each call), sleep, import failover/link or raftstore, touch the binding
// database, or let map iteration order reach its output. The same calls
// with the same times give the same actions. A Machine is not safe for
// concurrent use: its driver serialises every call, queries included, and
// executes each returned batch before making the next call.
//
// # Events and queries
//
// New(cfg, rec, now) runs steps 1-3 of the STARTUP algorithm and enters
// STARTUP. Then, from the driver:
//
//	CommUp(now, partnerState)    link Handler.Up: the partner's first STATE on a connection
//	ReceiveState(now, state)     every later STATE
//	CommDown(now, err)           link Handler.Down (keepalive, TCP loss, DISCONNECT, skew, ...)
//	UpdDone(now, req)            the UPDDONE answering SendUpdReq/SendUpdReqAll req
//	Timer(now, kind)             a timer armed by SetTimer fired
//	Contact(now)                 any message from the partner (no actions)
//	OperatorPartnerDown(now)     "the partner is down" (may fail: ErrPartnerDownRefused)
//	Release(now)                 "continue" for an endpoint held in STARTUP (error: ErrNotHeld)
//
// Queries: State, StateSince, Startup, Held, CommOK, PartnerState, Record,
// LocalState (the link's Handler.LocalState), Service, TimeOfFailure, Role,
// Config.
//
// # What the driver does with each action
//
// A batch is ordered: EnterState..., Persist, SendState, protocol messages
// (SendUpdReq/SendUpdReqAll, FlushUpdates, SendPoolReq), SetTimer and
// CancelTimer, Alarm, DropConnection. Execute it in order.
//
//   - EnterState: log (and count) the hop From -> To with Reason. One event
//     may make several hops (STARTUP -> COMMUNICATIONS-INTERRUPTED -> NORMAL);
//     only the last state is persisted and announced.
//   - Persist: commit Record (fsm.CmdSetEndpoint) to the raft log and wait
//     for it before executing the next action (S2, §6.3). If the commit
//     fails, do not execute the rest of the batch: the machine is ahead of
//     storage. Drop the connection and restart the endpoint from what is
//     stored (New), which is always a safe place to resume from.
//   - SendState: send STATE with State (link.SendState). It only appears
//     while communications are OK, and always after the Persist of the same
//     batch. The link's Handler.LocalState should return LocalState() as of
//     the last executed batch (a STATE must never announce an unstored state).
//   - SendUpdReq / SendUpdReqAll: send UPDREQ / UPDREQALL with a fresh
//     transaction-id, remember xid -> Req, and deliver the matching UPDDONE
//     as UpdDone(now, Req). UPDDONEs for anything else are ignored anyway.
//   - FlushUpdates: send a BNDUPD for every binding with an update owed to
//     the partner (§8.8, entering NORMAL).
//   - SendPoolReq: send POOLREQ once the BNDUPDs of the FlushUpdates before
//     it have been queued (§8.8: "when the above process is complete").
//   - SetTimer: (re)arm timer Timer at At, replacing its previous deadline;
//     on expiry call Timer(now, Timer). Firing late is fine; an early or stale
//     firing is harmless (re-armed or ignored).
//   - CancelTimer: disarm timer Timer.
//   - Alarm: raise an operator alarm with text Reason (log at error level,
//     metrics, status).
//   - DropConnection: close the connection (DISCONNECT with a status and
//     Reason). From then on the machine treats communications as failed;
//     deliver the link's Down as CommDown as usual.
//
// Also: call Contact for every message the link delivers (it feeds
// LastContact, LastOperating and the update-stall timer); deliver
// Handler.Up as CommUp and Handler.Down as CommDown; answer the partner's
// UPDREQ/UPDREQALL/POOLREQ in any state (the machine does not see them);
// consult Service() before answering a client and when choosing a pool or a
// lifetime. The machine never asks to drop a connection for unacknowledged
// BNDUPDs (§8.8.2 MAY); a driver that does so just reports the loss.
//
// # Persistent record and time
//
// The record is fsm.EndpointState (Unix seconds). State is the current
// state, STARTUP included; PreviousState the state before it (in STARTUP:
// the state restored from storage, 0 on a first start); StateSince its
// entry; PartnerState and PartnerStateSince our view of the partner
// (STARTUP while its STATE carries the STARTUP flag); LastContact the last
// message from the partner; LastOperating the last time this server served
// clients (any state whose Service mode is not Unresponsive);
// PartnerDownTime the entry into PARTNER-DOWN (0 outside it); Communicated
// whether this endpoint has talked to its partner (the COMMUNICATED flag);
// HeldInStartup the snapshot-restore hold.
//
// Persist is emitted on every transition (§8.1 MUST), on every change of
// the partner's state or its start time (§6.4 SHOULD), when Communicated
// or HeldInStartup change, and every Config.Checkpoint while the server
// serves clients. LastContact and LastOperating move in memory and ride
// along with the next Persist. The checkpoint bounds TIME-OF-FAILURE: a
// server that stored LastOperating = L cannot have served after
// L + Checkpoint, so TIME-OF-FAILURE = L + Checkpoint. Without the
// checkpoint, L would be the last transition, possibly weeks old, and both
// uses of TIME-OF-FAILURE (the step 5 comparison and the RECOVER-WAIT
// timer) would err on the unsafe side.
//
// # Decisions where RFC 8156 is silent or ambiguous
//
//  1. First start (nothing stored: rec nil or State 0): PREVIOUS-STATE is
//     RECOVER for both roles (§8.3.2 step 1, which contradicts §8.2's
//     "primary: PARTNER-DOWN"; digest §4.2 and Appendix A item 2). With
//     Config.StartAlone (primary only; a config error on a secondary) the
//     primary enters PARTNER-DOWN when the STARTUP timer expires without
//     contact (§8.2, and the §8.3.2 step 1 SHOULD for a server commissioned
//     while its partner is absent). StartAlone does nothing when a record
//     exists. The STARTUP record of a first start has PreviousState 0, so a
//     crash during that STARTUP is still a first start.
//  2. STARTUP is recorded like any state (§8.1), with the state it resumes in
//     PreviousState; a restart from a STARTUP record restarts from that.
//  3. While in STARTUP, STATE carries the state recorded in storage as it is,
//     not mapped by step 2 ("the previously recorded failover state",
//     §8.3.1), RECOVER on a first start, and that state's start time. It never
//     carries PARTNER_DOWN_TIME: §6.3 includes it only when the sender is in
//     PARTNER-DOWN, and in STARTUP it is not.
//  4. Step 2 mapping: NORMAL -> COMMUNICATIONS-INTERRUPTED, POTENTIAL-CONFLICT
//     -> RESOLUTION-INTERRUPTED (the states marked "+" in Figure 6); every
//     other state is kept. CONFLICT-DONE stored by a secondary (which cannot
//     be in it) becomes RESOLUTION-INTERRUPTED.
//  5. Step 5 runs on the first STATE of a connection, even one with the
//     STARTUP flag: communications are OK once the partner's STATE arrives
//     (§6.1). But a STATE with the STARTUP flag is never acted on, in any
//     state: it carries the partner's previously recorded state, not a state
//     it is in. §8.4.2 says so for PARTNER-DOWN; we apply it everywhere, and
//     the step 5 special case then does not apply either (the partner is not
//     "in PARTNER-DOWN" yet). So two servers restarting together both leave
//     STARTUP at once into their previous states and meet there, and a
//     partner held in STARTUP (unresponsive) cannot pull us into NORMAL or
//     POTENTIAL-CONFLICT (unresponsive) and leave no one serving.
//  6. Step 5 special case: the partner's START_TIME_OF_STATE is compared with
//     TIME-OF-FAILURE. RECOVER only if the partner went down clearly later
//     (more than the ±5 s of wire.CompareFOTime); earlier or "the same time"
//     goes to POTENTIAL-CONFLICT, the safe side. With no recorded time of
//     operation (first start, never served) the partner's time is later:
//     RECOVER.
//  7. TIME-OF-FAILURE is the stored LastOperating + Checkpoint. It is
//     unknown (zero) when nothing is stored or LastOperating is 0; the
//     RECOVER-WAIT timer then runs from the start time (§8.6.2; Step 1's
//     "TIME-OF-FAILURE = 0" is read as "unknown", not as 1 January 2000).
//     A RECOVER-WAIT whose deadline has already passed moves on to
//     RECOVER-DONE in the same batch.
//  8. RECOVER-WAIT skip (§8.6.2 MAY): taken when the partner's first STATE on
//     this connection had COMMUNICATED clear and our record has neither
//     Communicated nor LastOperating. This is "judged from the partner's
//     information", since our storage may be lost. It is the complement of
//     the UPDREQALL rule: a pair commissioned from nothing has nothing to
//     wait out, and a server whose partner remembers it waits the MCLT.
//  9. UPDREQALL (§8.5.2 MUST) iff our record has Communicated false and the
//     partner's first STATE on this connection had COMMUNICATED set. Once
//     chosen, it stays chosen for the RECOVER episode. Communicated is
//     only set with communications OK outside STARTUP and RECOVER, or when
//     RECOVER's UPDDONE arrives, so a restart in the middle of an
//     UPDREQALL asks for everything again.
//  10. Evaluation is level-triggered, as §8.1 describes: after every event,
//     while communications are OK and the partner's state is known, the
//     transition the (own state, partner state) pair calls for is taken,
//     repeatedly, until none applies. Where the text says "enters" or "when
//     communications are restored", this acts on the same inputs, and also
//     when the condition already held at our own transition. One consequence: a server reaching RECOVER-DONE while its
//     partner is still in RECOVER goes to COMMUNICATIONS-INTERRUPTED
//     (§8.7.2) and serves while the partner finishes. This happens with two
//     servers commissioned together. Several hops in one event produce
//     one Persist and one STATE for the final state, because a STATE for
//     an intermediate state would make the partner react to a state already
//     left. Each hop still gets its EnterState and its alarm.
//  11. The partner's state is acted on only while communications are OK;
//     the last state seen on an earlier connection is history, not input.
//     A STATE delivered while communications are down is ignored (stale).
//  12. NORMAL, §8.8.2 "unexpected" partner states. These are expected:
//     NORMAL, COMMUNICATIONS-INTERRUPTED and RECOVER-DONE (a partner on its
//     way to NORMAL), and CONFLICT-DONE for a secondary (the primary follows
//     it to NORMAL). Any other state moves us to COMMUNICATIONS-INTERRUPTED
//     (with the alarm), and the transition from there is taken at once.
//  13. COMMUNICATIONS-INTERRUPTED with the partner in RECOVER-WAIT: stay until
//     it reaches RECOVER-DONE (Figure 6; digest Appendix A item 11).
//  14. Operator partner-down is allowed from NORMAL (§8.8.2, Figure 6),
//     COMMUNICATIONS-INTERRUPTED (§8.9.2) and RESOLUTION-INTERRUPTED
//     (§8.11.2). It does nothing in PARTNER-DOWN. Anywhere else it fails with
//     ErrPartnerDownRefused, which names the state. In NORMAL communications
//     are OK by definition, so the command also drops the connection and
//     counts it as failed without sending a STATE. Otherwise §8.1's
//     re-evaluation would find PARTNER-DOWN with a partner in NORMAL and go
//     straight on to POTENTIAL-CONFLICT. A partner that is in fact alive
//     reconnects in COMMUNICATIONS-INTERRUPTED, and both meet in
//     POTENTIAL-CONFLICT.
//  15. The auto-partner-down timer (off by default) runs only while
//     communications are down in COMMUNICATIONS-INTERRUPTED. It is armed at
//     the later of the entry and the loss of communications, plus the
//     period. It is suspended while a recovering partner is connected: that
//     partner is evidently not down. Entering PARTNER-DOWN this way raises an
//     alarm.
//  16. PARTNER-DOWN resumed after STARTUP keeps its original entry time, as
//     both the partner-down time and START_TIME_OF_STATE: the partner's own
//     step 5 compares that time with its last operation, and a restart
//     must not make it look later. PARTNER_DOWN_TIME is the entry into
//     PARTNER-DOWN (§6.3; §5.5.9 says "most recently lost communications",
//     digest Appendix A item 14).
//  17. UPDREQ/UPDREQALL: at most one per state per connection, identified by
//     Req. A request left unanswered by a lost connection is sent again
//     on the next (§8.5.2). A secondary in POTENTIAL-CONFLICT sends UPDREQ
//     whenever it sees the primary in CONFLICT-DONE, including a primary
//     already there when the secondary entered (§8.10.2 SHOULD).
//  18. Update stall (§8.5.2 SHOULD drop): with an UPDREQ or UPDREQALL
//     outstanding and no message from the partner for Config.UpdateStall
//     (default 5 min; Contact counts as progress), DropConnection. We apply
//     it in POTENTIAL-CONFLICT too: a stalled resolution otherwise keeps
//     both servers unresponsive, while a drop moves them to the responsive
//     RESOLUTION-INTERRUPTED.
//  19. ACK_STARTUP is set in our STATE when the partner's most recent flags
//     had STARTUP; no extra STATE is sent just to report it.
//  20. A STARTUP-flagged partner STATE is recorded in memory (PartnerState
//     STARTUP) but causes no Persist of its own.
//  21. Service (digest §4.1): RECOVER-DONE is renew-responsive (the §8.7.1
//     text; Figure 6 labels it unresponsive, and the text is authoritative).
//     CONFLICT-DONE serves like a primary in NORMAL; §8.12 says so, and
//     §8.12.1's "similar to COMMUNICATIONS-INTERRUPTED" gives the same for a
//     primary. A secondary in NORMAL is renew-responsive and allocates
//     nothing. PARTNER-DOWN: responsive, no MCLT cap, own pool first, then
//     the partner's delegable prefixes from PartnerPoolAt = entry + MCLT,
//     never the partner's addresses (§8.4.1 SHOULD NOT; §4.2.1 MUST NOT).
//     The MCLT cap also holds in RECOVER-DONE and CONFLICT-DONE.
//  22. Alarms: NORMAL -> COMMUNICATIONS-INTERRUPTED (§8.9 SHOULD), entering
//     RESOLUTION-INTERRUPTED (§8.11 SHOULD), auto-partner-down, and an
//     endpoint held in STARTUP.
//  23. The STARTUP timer defaults to 40 s (DefaultStartupTime): the link's
//     default connect-retry-max plus its handshake timeout. A restarting
//     secondary then hears the primary's next attempt before resuming its
//     previous state. This matters because resuming a responsive state while
//     the partner is in PARTNER-DOWN breaks S4 until they meet.
//  24. HeldInStartup (set by a snapshot restore, see Restored) keeps the
//     endpoint in STARTUP, unresponsive, whatever the partner or the STARTUP
//     timer do, until Release (refused with ErrNotHeld when not held).
//     Release ends STARTUP as step 5 would if communications are OK, or as
//     step 6 would if the timer has already expired. Otherwise the timer
//     keeps running. Restored also clears Communicated, so a restored
//     endpoint asks for every binding (UPDREQALL) in RECOVER.
//
// # RFC 8156 text vs the digest (the RFC wins)
//
// No rule of the digest's §4, §10 and §12 contradicts the RFC text. The
// differences found are these:
//   - Digest §4.1 calls CONFLICT-DONE service "like NORMAL primary"; §8.12.1
//     says "similar to the situation in COMMUNICATIONS-INTERRUPTED" and §8.12
//     says "no operational difference between CONFLICT-DONE and NORMAL". The
//     RFC contradicts itself, but for a primary both give the same service
//     (own pool, MCLT cap). Followed: the RFC's §8.12.
//   - Digest §4.3 step 6 lets any server "instead go to PARTNER-DOWN if
//     configured as in step 1". In the RFC, step 6 says only "SHOULD
//     transition to PREVIOUS-STATE"; the PARTNER-DOWN option is in step 1,
//     in the no-record branch, for a newly commissioned server. Followed: the
//     RFC (StartAlone applies to a first start only).
//   - Digest §4.3 step 2 gives "NORMAL becomes COMMUNICATIONS-INTERRUPTED,
//     POTENTIAL-CONFLICT becomes RESOLUTION-INTERRUPTED" as examples. The RFC
//     gives no examples, only the rule (take the communications-failed
//     transition). The examples follow from §8.8.2 and §8.10.2 and are what
//     we do.
//   - Digest §4.4 states NORMAL -> COMMUNICATIONS-INTERRUPTED on a comm
//     failure or DISCONNECT without qualification; the RFC says "should". We
//     always do it.
//   - Digest §4.4 PARTNER-DOWN lists the partner-state rules for a
//     reconnection; §8.4.2 applies them "immediately after establishing
//     communications or at any time later when a new state is received". We
//     do (decision 10).
//   - Digest §4.5 and §10 start the auto-partner-down timer on entry to
//     COMMUNICATIONS-INTERRUPTED, as §8.9 does. Suspending it while
//     connected (decision 15) is our addition, not a reading of either text.
//
// Figure 6 vs the text (the text wins, §8.1): RECOVER-DONE is
// renew-responsive, not "(unresponsive)". Operator partner-down from NORMAL
// is in both. The COMMUNICATIONS-INTERRUPTED + RECOVER-WAIT gap is filled
// from the figure because the text is silent.
package machine
