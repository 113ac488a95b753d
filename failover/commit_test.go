package failover

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// gateStore applies commands to an in-memory fsm.State in order. While
// hold is set, each Apply waits until release is called, so a test can
// queue jobs behind a commit in flight. fail, if set, decides an error
// returned instead of applying.
type gateStore struct {
	st   *fsm.State
	mu   sync.Mutex
	idx  uint64
	cmds []*fsm.Command

	hold    chan struct{} // non-nil: Apply blocks on it
	entered chan struct{} // signalled when an Apply starts
	fail    func(*fsm.Command) error
}

func newGateStore() *gateStore {
	return &gateStore{st: fsm.New(), entered: make(chan struct{}, 100)}
}

func (g *gateStore) State() *fsm.State { return g.st }

func (g *gateStore) Apply(cmd *fsm.Command) (uint64, error) {
	g.mu.Lock()
	hold := g.hold
	g.mu.Unlock()
	g.entered <- struct{}{}
	if hold != nil {
		<-hold
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail != nil {
		if err := g.fail(cmd); err != nil {
			return 0, err
		}
	}
	g.idx++
	res := g.st.Apply(fsm.Entry{Index: g.idx, Cmd: cmd})
	if res.Err != nil {
		return 0, res.Err
	}
	g.cmds = append(g.cmds, cmd)
	return g.idx, nil
}

func (g *gateStore) commands() []*fsm.Command {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*fsm.Command(nil), g.cmds...)
}

func res(i int) fsm.Resource {
	return fsm.AddrResource(fsm.IANA, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
}

// activeOp writes an ACTIVE binding for resource i if its revision is still rev.
func activeOp(i int, rev uint64) fsm.Op {
	return fsm.Op{Resource: res(i), IfRev: rev, Binding: fsm.Binding{Resource: res(i), Status: fsm.StatusActive,
		DUID: "client-" + string(rune('a'+i)), ValidLifetime: 3600}}
}

// result records what done was called with.
type result struct {
	mu   sync.Mutex
	errs map[uint32]error
	n    int
	// stored holds, per xid, whether its binding was in the table when done ran.
	stored map[uint32]bool
}

func newResult() *result { return &result{errs: map[uint32]error{}, stored: map[uint32]bool{}} }

func (r *result) job(st *fsm.State, xid uint32, plan func(time.Time) []fsm.Op, check fsm.Resource) *commitJob {
	return &commitJob{xid: xid, plan: plan, done: func(err error) {
		_, ok := st.Get(check)
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, dup := r.errs[xid]; dup {
			panic("done called twice")
		}
		r.errs[xid] = err
		r.stored[xid] = ok
		r.n++
	}}
}

func (r *result) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Jobs submitted while a commit is in flight are committed together, in
// one command, and each learns of it only after the commit.
func TestCommitterGroupsJobsBehindACommitInFlight(t *testing.T) {
	g := newGateStore()
	gate := make(chan struct{})
	g.hold = gate
	c := newCommitter(g, clock.Real{}, fsm.OriginPartner, "BNDUPD")
	r := newResult()
	go c.submit(r.job(g.st, 1, func(time.Time) []fsm.Op { return []fsm.Op{activeOp(1, 0)} }, res(1)))
	<-g.entered // job 1 is being committed; the committer is busy
	var wg sync.WaitGroup
	for i := 2; i <= 11; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.submit(r.job(g.st, uint32(i), func(time.Time) []fsm.Op { return []fsm.Op{activeOp(i, 0)} }, res(i)))
		}()
	}
	wg.Wait() // every submit returned: queued behind the flusher
	if n := r.count(); n != 0 {
		t.Fatalf("%d jobs done before any commit returned", n)
	}
	g.mu.Lock()
	g.hold = nil // later commits go straight through
	g.mu.Unlock()
	close(gate)
	waitFor(t, "all jobs done", func() bool { return r.count() == 11 })
	cmds := g.commands()
	if len(cmds) != 2 {
		t.Fatalf("committed %d commands, want 2 (job 1, then the other 10 together)", len(cmds))
	}
	if len(cmds[1].Ops) != 10 || !strings.HasPrefix(cmds[1].Note, "BNDUPD xid=") || cmds[1].Origin != fsm.OriginPartner {
		t.Fatalf("second command: %d ops, note %q, origin %v", len(cmds[1].Ops), cmds[1].Note, cmds[1].Origin)
	}
	for xid, err := range r.errs {
		if err != nil || !r.stored[xid] {
			t.Errorf("job %d: err %v, stored when done ran: %v", xid, err, r.stored[xid])
		}
	}
}

// A conflict on one job's op re-plans only that job; the rest of the batch
// commits without it, and it succeeds once its plan reads the new revision.
func TestCommitterConflictRetriesOnlyTheLoser(t *testing.T) {
	g := newGateStore()
	c := newCommitter(g, clock.Real{}, fsm.OriginFailover, "BNDREPLY")
	// Resource 5 exists at some revision; the loser's first plan expects 0.
	if _, err := g.Apply(&fsm.Command{Type: fsm.CmdTxn, Ops: []fsm.Op{activeOp(5, 0)}}); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	r := newResult()
	var plans int
	jobs := []*commitJob{
		r.job(g.st, 1, func(time.Time) []fsm.Op { return []fsm.Op{activeOp(1, 0)} }, res(1)),
		r.job(g.st, 5, func(time.Time) []fsm.Op {
			plans++
			if plans == 1 {
				return []fsm.Op{activeOp(5, 0)} // stale: the binding has a revision now
			}
			b, _ := g.st.Get(res(5))
			return []fsm.Op{activeOp(5, b.Rev)}
		}, res(5)),
		r.job(g.st, 3, func(time.Time) []fsm.Op { return []fsm.Op{activeOp(3, 0)} }, res(3)),
	}
	retry := c.commit(jobs)
	if len(g.commands()) != 1 || len(retry) != 3 || jobs[1].attempts != 1 || jobs[0].attempts != 0 {
		t.Fatalf("after the conflict: %d commands, %d to retry, attempts %d/%d/%d",
			len(g.commands()), len(retry), jobs[0].attempts, jobs[1].attempts, jobs[2].attempts)
	}
	if r.count() != 0 {
		t.Fatal("a job was told done although its batch was refused")
	}
	for len(retry) > 0 {
		retry = c.commit(retry)
	}
	for _, xid := range []uint32{1, 3, 5} {
		if r.errs[xid] != nil || !r.stored[xid] {
			t.Errorf("job %d: err %v, stored %v", xid, r.errs[xid], r.stored[xid])
		}
	}
}

// A job that keeps losing is given up after maxCommitAttempts with the
// conflict error; the others are not held back by it.
func TestCommitterGivesUpOnAPersistentConflict(t *testing.T) {
	g := newGateStore()
	c := newCommitter(g, clock.Real{}, fsm.OriginPartner, "BNDUPD")
	if _, err := g.Apply(&fsm.Command{Type: fsm.CmdTxn, Ops: []fsm.Op{activeOp(7, 0)}}); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	r := newResult()
	c.submit(r.job(g.st, 7, func(time.Time) []fsm.Op { return []fsm.Op{activeOp(7, 12345)} }, res(7)))
	if err := r.errs[7]; !errors.Is(err, fsm.ErrConflict) {
		t.Fatalf("loser: %v, want ErrConflict", err)
	}
	c.submit(r.job(g.st, 8, func(time.Time) []fsm.Op { return []fsm.Op{activeOp(8, 0)} }, res(8)))
	if r.errs[8] != nil || !r.stored[8] {
		t.Fatalf("job after the loser: %v, stored %v", r.errs[8], r.stored[8])
	}
}

// Two jobs on one resource never share a command (fsm refuses duplicates);
// the second is re-planned against the first's result.
func TestCommitterSplitsJobsOnTheSameResource(t *testing.T) {
	g := newGateStore()
	c := newCommitter(g, clock.Real{}, fsm.OriginPartner, "BNDUPD")
	r := newResult()
	plan := func(time.Time) []fsm.Op {
		b, _ := g.st.Get(res(2))
		return []fsm.Op{activeOp(2, b.Rev)}
	}
	retry := c.commit([]*commitJob{r.job(g.st, 1, plan, res(2)), r.job(g.st, 2, plan, res(2))})
	if len(retry) != 1 || r.count() != 1 {
		t.Fatalf("first round: %d to retry, %d done; want 1 and 1", len(retry), r.count())
	}
	if retry = c.commit(retry); len(retry) != 0 || r.errs[2] != nil {
		t.Fatalf("second round: %d to retry, job 2: %v", len(retry), r.errs[2])
	}
	if n := len(g.commands()); n != 2 {
		t.Fatalf("%d commands, want 2", n)
	}
}

// An error not attributable to one job (here: a store that refuses any
// command naming xid 0x66) retries each job alone, so only the bad one fails.
func TestCommitterIsolatesAFailingJob(t *testing.T) {
	g := newGateStore()
	errBroken := errors.New("broken")
	g.fail = func(cmd *fsm.Command) error {
		if strings.Contains(cmd.Note, "0x66") {
			return errBroken
		}
		return nil
	}
	c := newCommitter(g, clock.Real{}, fsm.OriginPartner, "BNDUPD")
	r := newResult()
	var jobs []*commitJob
	for _, x := range []int{1, 0x66, 3} {
		jobs = append(jobs, r.job(g.st, uint32(x), func(time.Time) []fsm.Op { return []fsm.Op{activeOp(x, 0)} }, res(x)))
	}
	if retry := c.commit(jobs); len(retry) != 0 {
		t.Fatalf("%d to retry", len(retry))
	}
	if !errors.Is(r.errs[0x66], errBroken) || r.errs[1] != nil || r.errs[3] != nil || !r.stored[1] || !r.stored[3] {
		t.Fatalf("results %v stored %v", r.errs, r.stored)
	}
}

// A job with nothing to store is done at once, without a command.
func TestCommitterNothingToStore(t *testing.T) {
	g := newGateStore()
	c := newCommitter(g, clock.Real{}, fsm.OriginPartner, "BNDUPD")
	r := newResult()
	c.submit(r.job(g.st, 9, func(time.Time) []fsm.Op { return nil }, res(9)))
	if err, ok := r.errs[9]; !ok || err != nil || len(g.commands()) != 0 {
		t.Fatalf("done %v (called %v), %d commands", err, ok, len(g.commands()))
	}
}
