package failover

import (
	"errors"
	"fmt"
	"sync"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// Group commit of the partner's binding updates.
//
// Each BNDUPD's decision is its own set of ops, but committing each as its
// own raft entry costs one log entry (encoding, a bbolt put, a future and
// its hand-offs) per BNDUPD, a million of them during an UPDREQALL of a
// million bindings (docs/benchmarks.md). partnerCommits gathers the ops of
// the BNDUPDs waiting to be committed into one fsm.CmdTxn. Every caller
// still returns only once its own ops are committed (B8: the BNDREPLY
// follows the commit), and each caller's ops stay all-or-nothing: they are
// never split across entries.

const (
	// groupMaxOps bounds the ops gathered into one entry (fsm checks a
	// txn's resources for duplicates pairwise, and the entry stays small).
	groupMaxOps = 256
	// groupMaxInflight is how many gathered entries may be committing at
	// once: two let one be fsynced while the next is applied and answered.
	groupMaxInflight = 2
)

// partnerCommits commits the ops of concurrent BNDUPDs in shared entries.
// Safe for concurrent use; each batch is committed by a short-lived
// goroutine it starts (at most groupMaxInflight at a time).
type partnerCommits struct {
	store Store
	clock clock.Clock

	mu       sync.Mutex
	queue    []*partnerTxn // waiting, in arrival order
	inflight int           // committing goroutines
}

// partnerTxn is one BNDUPD's ops and where its outcome goes.
type partnerTxn struct {
	xid  uint32
	ops  []fsm.Op
	done chan error // buffered 1
}

// commit stores ops (one BNDUPD's, with transaction-id xid) and returns
// once they are committed, with the error Store.Apply would have given for
// them alone: an *fsm.ConflictError (errors.Is fsm.ErrConflict) when one of
// their own preconditions failed, nil when they are durable.
func (g *partnerCommits) commit(xid uint32, ops []fsm.Op) error {
	t := &partnerTxn{xid: xid, ops: ops, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, t)
	start := g.inflight < groupMaxInflight
	if start {
		g.inflight++
	}
	g.mu.Unlock()
	if start {
		go g.run()
	}
	return <-t.done
}

// run commits batches until the queue is empty.
func (g *partnerCommits) run() {
	for {
		g.mu.Lock()
		batch := g.take()
		if len(batch) == 0 {
			g.inflight--
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.apply(batch)
	}
}

// take removes from the queue the oldest transactions that fit in one
// entry and touch no resource twice (fsm refuses a txn that does); the
// others keep their place. Caller holds mu.
func (g *partnerCommits) take() []*partnerTxn {
	var batch []*partnerTxn
	seen := map[fsm.Resource]struct{}{}
	nops := 0
	rest := g.queue[:0]
	for _, t := range g.queue {
		if len(batch) > 0 && (nops+len(t.ops) > groupMaxOps || overlaps(seen, t.ops)) {
			rest = append(rest, t)
			continue
		}
		for _, op := range t.ops {
			seen[op.Resource] = struct{}{}
		}
		nops += len(t.ops)
		batch = append(batch, t)
	}
	clear(g.queue[len(rest):])
	g.queue = rest
	return batch
}

func overlaps(seen map[fsm.Resource]struct{}, ops []fsm.Op) bool {
	for _, op := range ops {
		if _, ok := seen[op.Resource]; ok {
			return true
		}
	}
	return false
}

// apply commits batch as one entry. On a conflict, the transaction owning
// the failed op gets the conflict and the others are committed again
// without it (the first failed precondition stops fsm's checks, so theirs
// are not known to hold).
func (g *partnerCommits) apply(batch []*partnerTxn) {
	for len(batch) > 0 {
		var ops []fsm.Op
		if len(batch) == 1 {
			ops = batch[0].ops
		} else {
			ops = make([]fsm.Op, 0, groupMaxOps)
			for _, t := range batch {
				ops = append(ops, t.ops...)
			}
		}
		note := fmt.Sprintf("BNDUPD xid=%#x", batch[0].xid)
		if len(batch) > 1 {
			note = fmt.Sprintf("%d BNDUPDs xid=%#x..", len(batch), batch[0].xid)
		}
		_, err := g.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: g.clock.Now().UnixNano(), Origin: fsm.OriginPartner,
			Note: note, Ops: ops})
		var ce *fsm.ConflictError
		if len(batch) == 1 || !errors.As(err, &ce) || ce.Op < 0 || ce.Op >= len(ops) {
			for _, t := range batch {
				t.done <- err
			}
			return
		}
		// Find the transaction holding op ce.Op; it alone conflicted.
		for i, n := 0, 0; i < len(batch); i++ {
			n += len(batch[i].ops)
			if ce.Op < n {
				batch[i].done <- err
				batch = append(batch[:i:i], batch[i+1:]...)
				break
			}
		}
	}
}

// newPartnerCommits returns the group committer of an endpoint's store.
func newPartnerCommits(store Store, c clock.Clock) *partnerCommits {
	if c == nil {
		c = clock.Real{}
	}
	return &partnerCommits{store: store, clock: c}
}
