package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Operator changes to the binding table (tandem lease add, update, delete
// and import). Each change is an fsm.CmdTxn with Origin fsm.OriginAdmin
// committed through the same store as DHCP traffic, guarded by IfRev
// preconditions (a client transaction that wins the race makes the admin
// change re-read and retry, or fail with a reason). The partner bookkeeping
// comes from the Policy as for a client transaction, so under failover an
// operator's change is owed to the partner and sent by the endpoint's
// sender like any other. The pools' slotsets follow through the pool
// observer when the change is applied: nothing here touches them.

// Admin errors; the wrapped text says what exactly is wrong.
var (
	// ErrNoBinding: there is no binding for the resource.
	ErrNoBinding = errors.New("no such lease")
	// ErrLeaseExists: an add found an ACTIVE binding.
	ErrLeaseExists = errors.New("lease exists")
	// ErrNotInPool: the resource is in none of the configured pools.
	ErrNotInPool = errors.New("not in any configured pool")
	// ErrNotOurs: failover forbids this server to allocate the resource now
	// (the partner's address or prefix, or a state that does not allocate).
	ErrNotOurs = errors.New("not this server's to allocate")
	// ErrBadChange: the change itself is not acceptable.
	ErrBadChange = errors.New("invalid lease change")
	// ErrBusy: DHCP traffic kept changing the binding; nothing was changed.
	ErrBusy = errors.New("lease kept changing under DHCP traffic")
	// ErrImportRefused: the import was checked and refused; nothing was changed.
	ErrImportRefused = errors.New("import refused")
)

// adminRetries bounds the attempts of one admin change that loses races
// with client transactions (fsm.ErrConflict).
const adminRetries = 8

// AdminChange is an operator's add or update of one binding. Nil fields
// keep what the binding has.
type AdminChange struct {
	Resource fsm.Resource
	// Create makes this an add: refused when the resource has an ACTIVE
	// binding (it may have a free one). Without it the binding must exist.
	Create bool
	DUID   *string // raw bytes
	IAID   *uint32
	// Status is the new status: fsm.StatusActive (grant or extend now),
	// fsm.StatusReleased (as if the client released it) or
	// fsm.StatusAbandoned (as if declined); 0 keeps it (ACTIVE for an add).
	Status fsm.Status
	// Preferred and Valid are the desired lifetimes of an ACTIVE lease; the
	// defaults are the subnet's (an update without them keeps the time left).
	Preferred, Valid *time.Duration
	// Force skips the failover allocation checks (the partner's half of a
	// pool, a state that does not allocate): for an operator who knows the
	// partner does not use the resource.
	Force bool
	// Note is the log entry's note ("admin: " is prefixed).
	Note string
}

// AdminResult is the outcome of an admin change.
type AdminResult struct {
	// Binding is the binding as stored (Rev is the log index), or, when
	// Deleted, as it was before.
	Binding  fsm.Binding
	Deleted  bool
	Released bool // a delete under failover became a release (see AdminDelete)
}

// failover reports whether a partner shares the pools (the policy splits
// addresses by parity: RFC 8156 independent allocation).
func (s *Server) failover() bool { return s.policy.AddressParity() >= 0 }

// AdminPut adds or updates one binding (see AdminChange) and returns it as
// stored. An ACTIVE result went through Policy.Grant: under failover its
// valid lifetime may be shorter than asked (the MCLT cap); the stored one
// is returned.
func (s *Server) AdminPut(ctx context.Context, c AdminChange) (AdminResult, error) {
	r := c.Resource
	if !r.Valid() {
		return AdminResult{}, fmt.Errorf("%w: bad resource %v", ErrBadChange, r)
	}
	p := s.pools.find(r)
	if p == nil {
		return AdminResult{}, fmt.Errorf("%v: %w (see the pools and pd-pools of the configuration)", r, ErrNotInPool)
	}
	switch c.Status {
	case 0, fsm.StatusActive, fsm.StatusReleased, fsm.StatusAbandoned:
	default:
		return AdminResult{}, fmt.Errorf("%w: state %v cannot be set by an operator (ACTIVE, RELEASED or ABANDONED)", ErrBadChange, c.Status)
	}
	if c.DUID != nil && (len(*c.DUID) == 0 || len(*c.DUID) > fsm.MaxDUIDLen) {
		return AdminResult{}, fmt.Errorf("%w: a DUID is 1 to %d bytes", ErrBadChange, fsm.MaxDUIDLen)
	}
	for _, d := range []*time.Duration{c.Preferred, c.Valid} {
		if d != nil && (*d < 0 || *d > time.Duration(^uint32(0))*time.Second) {
			return AdminResult{}, fmt.Errorf("%w: lifetime %v out of range", ErrBadChange, *d)
		}
	}
	if c.Valid != nil && *c.Valid < time.Second {
		return AdminResult{}, fmt.Errorf("%w: a valid lifetime of at least 1s", ErrBadChange)
	}
	for attempt := 0; attempt < adminRetries; attempt++ {
		if err := ctx.Err(); err != nil {
			return AdminResult{}, err
		}
		now := s.clock.Now()
		cur, exists := s.state.Get(r)
		nb, err := s.adminBuild(now, p, c, cur, exists)
		if err != nil {
			return AdminResult{}, err
		}
		idx, err := s.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginAdmin,
			Note: adminNote(c.Note), Ops: []fsm.Op{{Resource: r, IfRev: cur.Rev, Binding: nb}}})
		if errors.Is(err, fsm.ErrConflict) {
			continue
		}
		if err != nil {
			return AdminResult{}, fmt.Errorf("lease change not stored: %w", err)
		}
		nb.Rev = idx
		return AdminResult{Binding: nb}, nil
	}
	return AdminResult{}, fmt.Errorf("%v: %w (%d attempts)", r, ErrBusy, adminRetries)
}

// adminBuild returns the binding c makes of cur (exists false: no binding).
func (s *Server) adminBuild(now time.Time, p *pool, c AdminChange, cur fsm.Binding, exists bool) (fsm.Binding, error) {
	r := c.Resource
	switch {
	case c.Create && exists && cur.Status == fsm.StatusActive:
		return fsm.Binding{}, fmt.Errorf("%v: %w: ACTIVE for client %s IAID %d (use lease update)", r, ErrLeaseExists, cur.DUIDHex(), cur.IAID)
	case !c.Create && !exists:
		return fsm.Binding{}, fmt.Errorf("%v: %w (use lease add)", r, ErrNoBinding)
	}
	nb := cur
	if !exists {
		nb = fsm.Binding{Resource: r}
	}
	if c.DUID != nil {
		nb.DUID = *c.DUID
	}
	if c.IAID != nil {
		nb.IAID = *c.IAID
	}
	target := c.Status
	if target == 0 {
		target = nb.Status
		if c.Create || !exists {
			target = fsm.StatusActive
		}
	}
	if target != fsm.StatusActive && (c.Valid != nil || c.Preferred != nil) {
		return fsm.Binding{}, fmt.Errorf("%w: lifetimes only apply to an ACTIVE lease", ErrBadChange)
	}
	switch target {
	case fsm.StatusActive:
		if nb.DUID == "" {
			return fsm.Binding{}, fmt.Errorf("%w: an ACTIVE lease needs a client DUID", ErrBadChange)
		}
		wasActive := exists && cur.Status == fsm.StatusActive
		if !wasActive {
			if err := s.adminMayAllocate(p, c, cur, exists, nb.DUID); err != nil {
				return fsm.Binding{}, err
			}
			nb.Status, nb.StartTimeOfState = fsm.StatusActive, now.Unix()
			nb.Flags = 0
		}
		pref, desired := s.lifetimes(p.subnet)
		switch {
		case c.Valid != nil:
			desired = *c.Valid
		case wasActive && cur.StateExpirationTime > now.Unix():
			desired = time.Duration(cur.StateExpirationTime-now.Unix()) * time.Second // keep the time left
		}
		if c.Preferred != nil {
			pref = *c.Preferred
		}
		valid := s.policy.Grant(now, &nb, desired)
		valid = min(valid, desired)
		pref = min(pref, valid)
		nb.PreferredLifetime = uint32(pref / time.Second)
		nb.ValidLifetime = uint32(valid / time.Second)
		nb.CLTT = now.Unix()
		nb.StateExpirationTime = now.Add(valid).Unix()
	case fsm.StatusReleased:
		if cur.Status != fsm.StatusActive {
			return fsm.Binding{}, fmt.Errorf("%w: only an ACTIVE lease can be released (%v is %v)", ErrBadChange, r, cur.Status)
		}
		s.policy.Free(now, &nb, true)
		nb.CLTT = now.Unix()
	case fsm.StatusAbandoned:
		nb.Status = fsm.StatusAbandoned
		nb.StartTimeOfState = now.Unix()
		// Never sooner than a hold for a partner that lost its database
		// (an EXPIRED or RELEASED lease with a state expiration time).
		nb.StateExpirationTime = now.Add(s.cfg.DeclineHoldTime).Unix()
		if cur.Status == fsm.StatusExpired || cur.Status == fsm.StatusReleased {
			nb.StateExpirationTime = max(nb.StateExpirationTime, cur.StateExpirationTime)
		}
		s.policy.Changed(now, &nb)
	default:
		return fsm.Binding{}, fmt.Errorf("%w: %v is %v: only --state ACTIVE, RELEASED or ABANDONED changes it", ErrBadChange, r, cur.Status)
	}
	return nb, nil
}

// adminMayAllocate applies the failover allocation rules to an operator
// making r ACTIVE: RFC 8156 §4.2.1 forbids a server to allocate its
// partner's free resources, and an operator's add is an allocation (it is
// sent to the partner with this server's CLTT), so the same check applies
// unless forced.
func (s *Server) adminMayAllocate(p *pool, c AdminChange, cur fsm.Binding, exists bool, duid string) error {
	if c.Force {
		return nil
	}
	if !s.policy.MayAllocate() {
		return fmt.Errorf("%v: %w: the failover state does not allow allocation now (--force overrides)", c.Resource, ErrNotOurs)
	}
	_, mine := p.slotOf(c.Resource) // out of our parity's slots: the partner's address
	if mine {
		if exists {
			mine = s.policy.Available(&cur, duid)
		} else {
			mine = p.untrackedFree
		}
	}
	if !mine {
		what := "its partner's half of the pool"
		if exists {
			what = fmt.Sprintf("a %v binding this server may not reuse now", cur.Status)
		}
		return fmt.Errorf("%v: %w: %s (RFC 8156 §4.2.1; --force overrides)", c.Resource, ErrNotOurs, what)
	}
	return nil
}

// AdminDelete removes the binding of r. Under failover an ACTIVE lease is
// not removed but released (RELEASED with an update owed, Released set in
// the result): a raw delete would leave the partner believing the client
// still holds it and is never told otherwise, and the RFC 8156 §8.8.1 rule
// that a lease is reused only after the partner acknowledged its release
// would be skipped. The endpoint then moves it to FREE as for a client's
// Release. force deletes it outright anyway. An EXPIRED or RELEASED lease
// with a state expiration time ahead is refused too (held for a failover
// partner that lost its database, docs/failover.md item 89: a client of
// the partner may still hold it, and an unrecorded resource in this
// server's pool is free at once); force deletes it anyway. Other bindings
// are deleted. Forgetting an EXPIRED or RELEASED lease whose update is
// still owed lets this server reuse it before the partner heard of the
// expiry; that client gave it up or ran out, so only the partner's
// database disagrees, which conflict resolution settles when the new
// lease's update arrives.
func (s *Server) AdminDelete(ctx context.Context, r fsm.Resource, force bool, note string) (AdminResult, error) {
	for attempt := 0; attempt < adminRetries; attempt++ {
		if err := ctx.Err(); err != nil {
			return AdminResult{}, err
		}
		now := s.clock.Now()
		cur, ok := s.state.Get(r)
		if !ok {
			return AdminResult{}, fmt.Errorf("%v: %w", r, ErrNoBinding)
		}
		if !force && (cur.Status == fsm.StatusExpired || cur.Status == fsm.StatusReleased) && cur.StateExpirationTime > now.Unix() {
			return AdminResult{}, fmt.Errorf("%w: %v is %v and held until %s for a failover partner that lost its database "+
				"(a client may still hold it); --force deletes it anyway", ErrBadChange, r, cur.Status,
				time.Unix(cur.StateExpirationTime, 0).UTC().Format(time.RFC3339))
		}
		op := fsm.Op{Resource: r, IfRev: cur.Rev, Delete: true}
		release := cur.Status == fsm.StatusActive && s.failover() && !force
		if release {
			nb := cur
			s.policy.Free(now, &nb, true)
			nb.CLTT = now.Unix()
			op = fsm.Op{Resource: r, IfRev: cur.Rev, Binding: nb}
		}
		idx, err := s.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginAdmin,
			Note: adminNote(note), Ops: []fsm.Op{op}})
		if errors.Is(err, fsm.ErrConflict) {
			continue
		}
		if err != nil {
			return AdminResult{}, fmt.Errorf("lease change not stored: %w", err)
		}
		if release {
			op.Binding.Rev = idx
			return AdminResult{Binding: op.Binding, Released: true}, nil
		}
		return AdminResult{Binding: cur, Deleted: true}, nil
	}
	return AdminResult{}, fmt.Errorf("%v: %w (%d attempts)", r, ErrBusy, adminRetries)
}

func adminNote(note string) string {
	n := "admin: " + note
	if len(n) > fsm.MaxNoteLen {
		n = n[:fsm.MaxNoteLen]
	}
	return n
}

// ImportOptions controls AdminImport.
type ImportOptions struct {
	// Replace overwrites bindings that exist; without it any existing
	// binding for an imported resource refuses the whole import.
	Replace bool
	// DryRun checks everything and changes nothing.
	DryRun bool
	// BatchSize is the number of bindings per log entry (default 1000).
	BatchSize int
	// Note names the import in the log entries' notes (e.g. the file).
	Note string
	// Progress, if set, is called with the number of bindings applied so
	// far, from one goroutine at a time.
	Progress func(applied int)
}

// ImportProblem is why one imported binding is refused.
type ImportProblem struct {
	Index    int // in the slice given to AdminImport
	Resource fsm.Resource
	Err      error
}

// ImportResult is the outcome of AdminImport.
type ImportResult struct {
	Records  int // bindings given
	Replaced int // of which overwrote an existing binding
	Applied  int // committed
	Batches  int // log entries written
	// Problems lists the first maxImportProblems problems found; Refused
	// counts the records with a problem.
	Problems []ImportProblem
	Refused  int
}

const (
	maxImportProblems = 20
	importWorkers     = 4 // concurrent batches: the store group-commits them
)

// AdminImport writes bs (a table exported earlier, or built by a
// migration) in batches of BatchSize bindings per log entry. Everything is
// checked before anything is written: each resource in a configured pool,
// well formed, not twice, and (without Replace) without a binding yet. A
// refused import returns ErrImportRefused and the problems, and changes
// nothing.
//
// Each binding is stored as given except for the partner bookkeeping,
// which Policy.Changed sets: standalone owes nobody; under failover every
// imported binding is owed to the partner (the endpoint's sender sends
// them). The address parity is not checked: a server's table holds its
// partner's leases too.
//
// Batches commit concurrently and IfRev-guarded (0, or with Replace the
// revision seen at the check). A client transaction that changes an
// imported resource meanwhile makes a Replace batch re-read and retry;
// without Replace the client wins and the import stops there with an
// error saying how much was applied. bs is modified (the bookkeeping).
func (s *Server) AdminImport(ctx context.Context, bs []fsm.Binding, opt ImportOptions) (ImportResult, error) {
	if opt.BatchSize <= 0 {
		opt.BatchSize = 1000
	}
	res := ImportResult{Records: len(bs)}
	bad := map[int]bool{}
	problem := func(i int, err error) {
		if !bad[i] {
			bad[i] = true
			res.Refused++
		}
		if len(res.Problems) < maxImportProblems {
			res.Problems = append(res.Problems, ImportProblem{Index: i, Resource: bs[i].Resource, Err: err})
		}
	}
	seen := make(map[fsm.Resource]int32, len(bs))
	for i := range bs {
		b := &bs[i]
		switch {
		case !b.Resource.Valid():
			problem(i, fmt.Errorf("%w: bad resource", ErrBadChange))
			continue
		case !b.Status.Valid():
			problem(i, fmt.Errorf("%w: bad state %v", ErrBadChange, b.Status))
		case len(b.DUID) > fsm.MaxDUIDLen:
			problem(i, fmt.Errorf("%w: DUID of %d bytes (max %d)", ErrBadChange, len(b.DUID), fsm.MaxDUIDLen))
		case b.Status == fsm.StatusActive && b.DUID == "":
			problem(i, fmt.Errorf("%w: an ACTIVE lease needs a client DUID", ErrBadChange))
		case s.pools.find(b.Resource) == nil:
			problem(i, ErrNotInPool)
		}
		if j, dup := seen[b.Resource]; dup {
			problem(i, fmt.Errorf("%w: %v is also record %d", ErrBadChange, b.Resource, j+1))
			continue
		}
		seen[b.Resource] = int32(i)
	}
	seen = nil
	revs := make([]uint64, len(bs))
	v := s.state.View()
	for i := range bs {
		if cur, ok := v.Get(bs[i].Resource); ok {
			if !opt.Replace {
				problem(i, fmt.Errorf("%w: %v already has a lease (%v, client %s): use --replace to overwrite", ErrLeaseExists,
					cur.Resource, cur.Status, cur.DUIDHex()))
				continue
			}
			revs[i] = cur.Rev
			res.Replaced++
		}
	}
	v = nil
	if res.Refused > 0 {
		return res, fmt.Errorf("%w: %d of %d records have problems; nothing was changed", ErrImportRefused, res.Refused, len(bs))
	}
	if opt.DryRun {
		return res, nil
	}
	now := s.clock.Now()
	for i := range bs {
		bs[i].Rev = 0
		s.policy.Changed(now, &bs[i])
	}
	nb := (len(bs) + opt.BatchSize - 1) / opt.BatchSize
	var (
		next, applied, batches atomic.Int64
		mu                     sync.Mutex
		firstErr               error
		wg                     sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return firstErr != nil }
	worker := func() {
		defer wg.Done()
		ops := make([]fsm.Op, 0, opt.BatchSize)
		for !failed() {
			k := int(next.Add(1) - 1)
			if k >= nb {
				return
			}
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			lo, hi := k*opt.BatchSize, min((k+1)*opt.BatchSize, len(bs))
			ops = ops[:0]
			for i := lo; i < hi; i++ {
				ops = append(ops, fsm.Op{Resource: bs[i].Resource, IfRev: revs[i], Binding: bs[i]})
			}
			var err error
			for attempt := 0; ; attempt++ {
				_, err = s.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: s.clock.Now().UnixNano(), Origin: fsm.OriginAdmin,
					Note: adminNote(fmt.Sprintf("import %s batch %d/%d", opt.Note, k+1, nb)), Ops: ops})
				if !errors.Is(err, fsm.ErrConflict) || !opt.Replace || attempt == adminRetries {
					break
				}
				for j := range ops { // a client changed one meanwhile: overwrite what is there now
					ops[j].IfRev = 0
					if cur, ok := s.state.Get(ops[j].Resource); ok {
						ops[j].IfRev = cur.Rev
					}
				}
			}
			if err != nil {
				var ce *fsm.ConflictError
				if errors.As(err, &ce) {
					err = fmt.Errorf("%v was taken by a DHCP client during the import: %w", ce.Resource, err)
				}
				fail(err)
				return
			}
			batches.Add(1)
			n := applied.Add(int64(hi - lo))
			if opt.Progress != nil {
				mu.Lock()
				opt.Progress(int(n))
				mu.Unlock()
			}
		}
	}
	wg.Add(importWorkers)
	for w := 0; w < importWorkers; w++ {
		go worker()
	}
	wg.Wait()
	res.Applied, res.Batches = int(applied.Load()), int(batches.Load())
	if firstErr != nil {
		return res, fmt.Errorf("import stopped after %d of %d bindings were stored: %w", res.Applied, len(bs), firstErr)
	}
	return res, nil
}
