package failover

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// maxCommitBatch bounds how many jobs one committed CmdTxn carries.
const maxCommitBatch = 64

// maxCommitAttempts is how often a job is re-planned after its own
// precondition failed (another writer changed its binding first).
const maxCommitAttempts = 5

// commitJob is one partner message's change to the binding table: the
// bindings a BNDUPD carries (receiver) or the acknowledgement a BNDREPLY
// brings (sender).
type commitJob struct {
	// xid names the message in the command's note (forensics).
	xid uint32
	// plan decides the job's ops against the live table at now. It is
	// called again before every attempt (the table may have changed), always
	// from the goroutine that then calls done. No ops: nothing to store.
	plan func(now time.Time) []fsm.Op
	// done is called exactly once: with nil after the job's ops are committed
	// to the log (or when it had none), or with the error that stopped it.
	done func(err error)

	attempts int // conflicts on this job's own ops so far
}

// committer commits the endpoint's per-message transactions in groups: jobs
// submitted while a commit is in flight wait and then go out together as one
// CmdTxn (one raft entry), instead of one entry per BNDUPD or BNDREPLY. The
// raft log already shares an fsync among concurrent entries; what this saves is
// the per-entry cost (encoding, bbolt puts, apply dispatch), which is what the
// pair spent its CPU on beside the DHCP path.
//
// Invariants:
//   - a job's done(nil) runs only after an Apply that contained its ops
//     returned success, so a BNDREPLY built in done is never ahead of the log;
//   - jobs are independent: one job's precondition failure (fsm.ErrConflict,
//     attributed by ConflictError.Op) re-plans only that job (up to
//     maxCommitAttempts); the others are re-planned and committed without
//     counting an attempt. Any other error retries each job on its own, so a
//     malformed job cannot sink its neighbours;
//   - no resource appears twice in one command (fsm refuses that): a job
//     whose ops touch a resource already in the batch waits for the next.
//
// Goroutines: submit never blocks on other jobs' commits unless the caller
// becomes the flusher. The first submitter that finds the committer idle
// flushes (commits batch after batch) until the queue is empty; at most one
// Apply per committer is in flight. plan and done run on the flusher.
type committer struct {
	store  Store
	clock  clock.Clock
	origin fsm.Origin
	kind   string // "BNDUPD" or "BNDREPLY": the note's prefix

	mu       sync.Mutex
	queue    []*commitJob
	flushing bool
}

func newCommitter(store Store, clk clock.Clock, origin fsm.Origin, kind string) *committer {
	return &committer{store: store, clock: clk, origin: origin, kind: kind}
}

// submit queues j and, if no one is committing, commits until the queue is
// empty (on the caller's goroutine).
func (c *committer) submit(j *commitJob) {
	c.mu.Lock()
	c.queue = append(c.queue, j)
	if c.flushing {
		c.mu.Unlock()
		return
	}
	c.flushing = true
	c.mu.Unlock()
	c.flush()
}

// flush commits queued jobs, batch by batch, until none are left.
func (c *committer) flush() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.flushing = false
			c.mu.Unlock()
			return
		}
		n := min(len(c.queue), maxCommitBatch)
		batch := c.queue[:n:n]
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil // let the backing array go
		}
		c.mu.Unlock()
		if retry := c.commit(batch); len(retry) > 0 {
			c.mu.Lock()
			c.queue = append(retry, c.queue...)
			c.mu.Unlock()
		}
	}
}

// commit plans and commits one batch and returns the jobs to try again.
func (c *committer) commit(batch []*commitJob) (retry []*commitJob) {
	now := c.clock.Now()
	var (
		ops     []fsm.Op
		owner   []int // owner[i]: index in members of ops[i]
		members []*commitJob
		inBatch = make(map[fsm.Resource]struct{}, 2*len(batch))
	)
	for _, j := range batch {
		jops := j.plan(now)
		if len(jops) == 0 {
			j.done(nil)
			continue
		}
		if collides(jops, inBatch) {
			retry = append(retry, j)
			continue
		}
		for _, op := range jops {
			inBatch[op.Resource] = struct{}{}
			ops = append(ops, op)
			owner = append(owner, len(members))
		}
		members = append(members, j)
	}
	if len(members) == 0 {
		return retry
	}
	_, err := c.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: c.origin,
		Note: c.note(members), Ops: ops})
	var conflict *fsm.ConflictError
	switch {
	case err == nil:
		for _, j := range members {
			j.done(nil)
		}
	case errors.As(err, &conflict) && conflict.Op >= 0 && conflict.Op < len(owner):
		// Only the job owning the failed op lost a race; the batch is
		// otherwise sound. Everyone goes again, re-planned.
		bad := members[owner[conflict.Op]]
		bad.attempts++
		for _, j := range members {
			if j == bad && j.attempts >= maxCommitAttempts {
				j.done(fmt.Errorf("%s xid=%#x: %d attempts: %w", c.kind, j.xid, j.attempts, err))
				continue
			}
			retry = append(retry, j)
		}
	case len(members) == 1:
		members[0].done(err)
	default:
		// Not attributable to one job: try each on its own.
		for _, j := range members {
			retry = append(retry, c.commit([]*commitJob{j})...)
		}
	}
	return retry
}

// collides reports whether any of ops touches a resource in set.
func collides(ops []fsm.Op, set map[fsm.Resource]struct{}) bool {
	for _, op := range ops {
		if _, ok := set[op.Resource]; ok {
			return true
		}
	}
	return false
}

// note names the messages a command carries, within fsm.MaxNoteLen.
func (c *committer) note(members []*commitJob) string {
	var b strings.Builder
	b.WriteString(c.kind)
	b.WriteString(" xid=")
	for i, j := range members {
		if b.Len() > fsm.MaxNoteLen-40 {
			fmt.Fprintf(&b, " and %d more", len(members)-i)
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%#x", j.xid)
	}
	return b.String()
}
