package failover

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// countingStore counts Applies, records their ops, and can hold the first
// Apply at a gate until released.
type countingStore struct {
	Store
	mu      sync.Mutex
	applies [][]fsm.Op
	gate    chan struct{} // closed: Applies proceed
	entered chan struct{} // gets a value when an Apply reaches the gate
}

func (c *countingStore) Apply(cmd *fsm.Command) (uint64, error) {
	c.mu.Lock()
	c.applies = append(c.applies, cmd.Ops)
	c.mu.Unlock()
	select {
	case c.entered <- struct{}{}:
	default:
	}
	<-c.gate
	return c.Store.Apply(cmd)
}

func (c *countingStore) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.applies)
}

func gcBinding(i int) fsm.Binding {
	b := resyncBinding(i, time.Now().Unix())
	b.ExpirationTime = 0
	return b
}

func newCountingStore(t *testing.T) *countingStore {
	st, err := raftstore.Open(raftstore.Config{DataDir: t.TempDir(), OpenTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &countingStore{Store: st, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
}

// TestPartnerCommitsShareEntries: BNDUPDs that arrive while a commit is in
// progress are committed together, each caller returns only once its own
// ops are in the state, and one whose precondition fails gets the conflict
// alone while the others of its entry are stored.
func TestPartnerCommitsShareEntries(t *testing.T) {
	cs := newCountingStore(t)
	g := newPartnerCommits(cs, nil)

	// The first commit holds the gate; groupMaxInflight-1 more start their
	// own entries; everything after waits in the queue.
	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := func(i int, ops []fsm.Op) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.commit(uint32(i), ops)
			if errs[i] == nil {
				for _, op := range ops {
					if _, ok := cs.State().Get(op.Resource); !ok {
						t.Errorf("commit %d returned before %v was in the state", i, op.Resource)
					}
				}
			}
		}()
	}
	start(0, []fsm.Op{{Resource: gcBinding(0).Resource, Binding: gcBinding(0)}})
	<-cs.entered
	// Commit 1 names a resource that does not exist with IfRev 1: it must
	// conflict. Commits 2 and 3 both write resource 2: they may not share
	// an entry.
	bad := gcBinding(1)
	start(1, []fsm.Op{{Resource: bad.Resource, IfRev: 1, Binding: bad}})
	for i := 2; i < n; i++ {
		r := i
		if i == 3 {
			r = 2
		}
		b := gcBinding(r)
		b.IAID = uint32(i)
		start(i, []fsm.Op{{Resource: b.Resource, IfRev: fsm.AnyRev, Binding: b}})
	}
	// Every commit is queued or in an entry held at the gate (one op each).
	waitFor(t, "the commits to queue", func() bool {
		cs.mu.Lock()
		held := 0
		for _, ops := range cs.applies {
			held += len(ops)
		}
		cs.mu.Unlock()
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.queue)+held == n
	})
	close(cs.gate)
	wg.Wait()

	for i, err := range errs {
		switch {
		case i == 1 && !errors.Is(err, fsm.ErrConflict):
			t.Errorf("commit 1 (stale precondition): %v, want a conflict", err)
		case i != 1 && err != nil:
			t.Errorf("commit %d: %v", i, err)
		}
	}
	if _, ok := cs.State().Get(bad.Resource); ok {
		t.Errorf("the conflicting commit's binding was stored")
	}
	if c := cs.count(); c >= n/2 {
		t.Errorf("%d Applies for %d commits: not shared", c, n)
	}
	for _, ops := range cs.applies {
		seen := map[fsm.Resource]bool{}
		for _, op := range ops {
			if seen[op.Resource] {
				t.Fatalf("an entry wrote %v twice", op.Resource)
			}
			seen[op.Resource] = true
		}
	}
	// Commit 3 came after commit 2 (both resource 2); whichever ran last
	// wrote, and both returned success: the binding is one of theirs.
	if b, ok := cs.State().Get(gcBinding(2).Resource); !ok || (b.IAID != 2 && b.IAID != 3) {
		t.Errorf("resource 2 is %+v", b)
	}
	waitFor(t, "the committing goroutines to end", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.inflight == 0 && len(g.queue) == 0
	})
}
