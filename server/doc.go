// Package server is Tandem's DHCPv6 server (RFC 8415): sockets, the packet
// path, the protocol (Solicit/Advertise/Request/Reply, Renew, Rebind,
// Release, Decline, Confirm, Information-Request, Rapid Commit, relayed
// traffic; IA_NA and IA_PD), address and prefix allocation, and lease
// expiry and reclamation.
//
// It owns: one UDP socket on [::]:547 with per-packet interface and
// destination information, the per-client and per-relay rate limits (token
// buckets in bounded LRU tables, checked on the reader goroutine before a
// packet is queued, from its option headers only: ratelimit.go), a bounded
// worker pool, the choice of subnet
// (ingress interface or the innermost relay's link-address), the pools and
// their allocators, and the rule that a Reply leaves only after the
// transaction's binding changes are committed to the store (one log entry
// per client transaction). A transaction the store refuses (a full disk)
// gets no reply at all and counts in store-failed; the first refusal of an
// outage is logged at Error with the store's remedy, the rest only counted,
// and the first commit that succeeds again logs the recovery. An Advertise
// commits nothing, so it still goes out during such an outage. For a failover partner it also counts and lists
// the delegable prefixes of each PD pool (PrefixPools, PrefixCandidates:
// bounded by the pool's records plus what is returned, never by its size),
// and, when Policy.PartnerPool allows it, falls back to the partner's
// prefixes in a PD pool with no own prefix left.
// Its counters (Kea statistic names, Metrics) and
// the pools' used slots and ACTIVE/ABANDONED counts (Pools, kept by the fsm
// observer) are atomics read by `tandem status` and package metrics; nothing
// on the packet path knows about Prometheus.
//
// It must never: import package failover (failover plugs in through the
// Policy interface defined here), send a Reply or commit a lease from an
// Advertise, read the wall clock directly (time comes from a clock.Clock),
// or let a malformed packet do more than bump pkt6-parse-failed.
//
// Operator changes (admin.go: AdminPut, AdminDelete, AdminImport, behind
// `tandem lease add|update|delete|import`) are transactions like a
// client's: one log entry (Origin admin) with IfRev preconditions, the
// Policy's partner bookkeeping, the pools following by the observer.
//
// Goroutines: Serve runs one reader goroutine and Config.Workers workers; the
// reclaimer runs in its own goroutine. Allocation state (pools) is shared and
// locked per pool; the store serialises commits.
package server
