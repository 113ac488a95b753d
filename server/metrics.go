package server

import (
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Counter names follow Kea's statistics where the meaning matches.
const (
	mPktReceived = iota
	mParseFailed
	mReceiveDrop
	mQueueFull
	mLimitExceeded
	mSolicit
	mRequest
	mRenew
	mRebind
	mRelease
	mDecline
	mConfirm
	mInfoRequest
	mUnknownType
	mAdvertiseSent
	mReplySent
	mSendFailed
	mAllocFail
	mDeclined
	mReclaimed
	mTxnConflicts
	mStoreFailed
	mHandlerPanics
	numCounters
)

var counterNames = [numCounters]string{
	mPktReceived:   "pkt6-received",
	mParseFailed:   "pkt6-parse-failed",
	mReceiveDrop:   "pkt6-receive-drop",
	mQueueFull:     "pkt6-queue-full",
	mLimitExceeded: "pkt6-limit-exceeded",
	mSolicit:       "pkt6-solicit-received",
	mRequest:       "pkt6-request-received",
	mRenew:         "pkt6-renew-received",
	mRebind:        "pkt6-rebind-received",
	mRelease:       "pkt6-release-received",
	mDecline:       "pkt6-decline-received",
	mConfirm:       "pkt6-confirm-received",
	mInfoRequest:   "pkt6-infrequest-received",
	mUnknownType:   "pkt6-unknown-received",
	mAdvertiseSent: "pkt6-advertise-sent",
	mReplySent:     "pkt6-reply-sent",
	mSendFailed:    "pkt6-send-fail",
	mAllocFail:     "v6-allocation-fail",
	mDeclined:      "declined-addresses",
	mReclaimed:     "reclaimed-leases",
	mTxnConflicts:  "txn-conflicts",
	mStoreFailed:   "store-failed",
	mHandlerPanics: "handler-panics",
}

// counterHelp says what each counter counts (the HELP text of its
// Prometheus metric).
var counterHelp = [numCounters]string{
	mPktReceived:   "DHCPv6 packets received",
	mParseFailed:   "packets dropped because they did not parse",
	mReceiveDrop:   "packets dropped unanswered (not on a served interface, not for this server, or not served in the failover state)",
	mQueueFull:     "packets dropped because the worker queue was full",
	mLimitExceeded: "packets dropped because their client or relay exceeded its rate limit",
	mSolicit:       "Solicit messages received",
	mRequest:       "Request messages received",
	mRenew:         "Renew messages received",
	mRebind:        "Rebind messages received",
	mRelease:       "Release messages received",
	mDecline:       "Decline messages received",
	mConfirm:       "Confirm messages received",
	mInfoRequest:   "Information-Request messages received",
	mUnknownType:   "messages of other types received",
	mAdvertiseSent: "Advertise messages sent",
	mReplySent:     "Reply messages sent",
	mSendFailed:    "replies that could not be sent",
	mAllocFail:     "IA options answered NoAddrsAvail or NoPrefixAvail",
	mDeclined:      "addresses clients declined",
	mReclaimed:     "expired leases reclaimed",
	mTxnConflicts:  "transactions retried because a concurrent one changed the same binding",
	mStoreFailed:   "transactions the lease log did not store (no reply was sent)",
	mHandlerPanics: "packets whose handler panicked (a bug)",
}

// Metrics are the server's counters. Safe for concurrent use.
type Metrics struct{ c [numCounters]atomic.Uint64 }

func newMetrics() *Metrics { return &Metrics{} }

func (m *Metrics) inc(i int)           { m.c[i].Add(1) }
func (m *Metrics) add(i int, n uint64) { m.c[i].Add(n) }
func (m *Metrics) get(i int) uint64    { return m.c[i].Load() }

func (m *Metrics) incType(t dhcpv6.MessageType) {
	switch t {
	case dhcpv6.MessageTypeSolicit:
		m.inc(mSolicit)
	case dhcpv6.MessageTypeRequest:
		m.inc(mRequest)
	case dhcpv6.MessageTypeRenew:
		m.inc(mRenew)
	case dhcpv6.MessageTypeRebind:
		m.inc(mRebind)
	case dhcpv6.MessageTypeRelease:
		m.inc(mRelease)
	case dhcpv6.MessageTypeDecline:
		m.inc(mDecline)
	case dhcpv6.MessageTypeConfirm:
		m.inc(mConfirm)
	case dhcpv6.MessageTypeInformationRequest:
		m.inc(mInfoRequest)
	default:
		m.inc(mUnknownType)
	}
}

// Snapshot returns every counter by its name.
func (m *Metrics) Snapshot() map[string]uint64 {
	out := make(map[string]uint64, numCounters)
	for i := range m.c {
		out[counterNames[i]] = m.c[i].Load()
	}
	return out
}

// Each calls fn for every counter, in a fixed order, with its Kea name and
// what it counts.
func (m *Metrics) Each(fn func(name, help string, v uint64)) {
	for i := range m.c {
		fn(counterNames[i], counterHelp[i], m.c[i].Load())
	}
}

// Get returns one counter by name (0 if unknown).
func (m *Metrics) Get(name string) uint64 {
	for i, n := range counterNames {
		if n == name {
			return m.c[i].Load()
		}
	}
	return 0
}
