package failover

import (
	"sync/atomic"
	"time"
)

// resyncProgress follows one recovery transfer for `tandem status`: an
// UPDREQ or UPDREQALL this endpoint answers (sending) or sent (receiving).
// Fields other than the counters are set before it is published and never
// change; the counters are atomics, updated by the goroutines doing the
// transfer and read by Status.
type resyncProgress struct {
	kind    string // "UPDREQ" or "UPDREQALL"
	started time.Time
	// total is, when sending, how many bindings the consistent view holds
	// (an upper bound on what is sent: UPDREQ selects the owed ones).
	total    int64
	bindings atomic.Int64 // sent, or received
}

// ResyncStatus is a recovery transfer in progress, for operators.
type ResyncStatus struct {
	// Kind is UPDREQ (what the partner owes) or UPDREQALL (everything).
	Kind    string `json:"kind"`
	Started string `json:"started"`
	// Bindings is how many bindings were sent (answering) or received and
	// committed (asking) so far.
	Bindings int64 `json:"bindings"`
	// Total (answering only) is how many bindings the sender's consistent
	// view holds: an upper bound of what it sends.
	Total int64 `json:"total,omitempty"`
}

func (p *resyncProgress) status() *ResyncStatus {
	if p == nil {
		return nil
	}
	return &ResyncStatus{Kind: p.kind, Started: p.started.UTC().Format(time.RFC3339), Bindings: p.bindings.Load(), Total: p.total}
}

func resyncKind(all bool) string {
	if all {
		return "UPDREQALL"
	}
	return "UPDREQ"
}

// resyncTracker holds the transfers in progress.
type resyncTracker struct {
	sending   atomic.Pointer[resyncProgress]
	receiving atomic.Pointer[resyncProgress]
}
