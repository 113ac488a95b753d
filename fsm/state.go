package fsm

import (
	"fmt"
	"strings"
	"sync"

	"github.com/google/btree"
)

// btreeDegree is the degree of every index. 32 keeps nodes around a few
// cache lines and the per-item overhead near 10 bytes.
const btreeDegree = 32

// Result is what applying one log entry produced.
type Result struct {
	// Index is the raft log index of the entry.
	Index uint64
	// Err is nil when the command took effect. A *ConflictError (ErrConflict)
	// or ErrInvalidCommand/ErrCorruptEntry means the entry changed nothing.
	Err error
}

// ConflictError reports the failed precondition of a txn.
type ConflictError struct {
	Op       int
	Resource Resource
	Want     uint64 // expected Rev (0 = absent)
	Have     uint64 // actual Rev (0 = absent)
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v (op %d): expected revision %d, found %d", ErrConflict, e.Op, e.Want, e.Have)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Entry is one log entry to apply. Cmd is nil when the entry did not decode;
// DecodeErr then says why, and applying it changes nothing but the applied index.
type Entry struct {
	Index     uint64
	Term      uint64
	Cmd       *Command
	DecodeErr error
}

type clientKey struct {
	duid string
	typ  IAType
	iaid uint32
	res  Resource
}

func clientLess(a, b clientKey) bool {
	if a.duid != b.duid {
		return a.duid < b.duid
	}
	if a.typ != b.typ {
		return a.typ < b.typ
	}
	if a.iaid != b.iaid {
		return a.iaid < b.iaid
	}
	return a.res.Compare(b.res) < 0
}

type expiryKey struct {
	at  int64
	res Resource
}

func expiryLess(a, b expiryKey) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.res.Compare(b.res) < 0
}

func bindingLess(a, b *Binding) bool  { return a.Resource.Compare(b.Resource) < 0 }
func resourceLess(a, b Resource) bool { return a.Compare(b) < 0 }

// Counts holds binding counts by IA type and status.
type Counts [maxIAType + 1][maxStatus + 1]int

// tables is the whole database. A tables value reached through a View is
// never modified again (the btrees are copy-on-write clones).
type tables struct {
	bindings *btree.BTreeG[*Binding]
	byClient *btree.BTreeG[clientKey]
	byExpiry *btree.BTreeG[expiryKey]
	owed     *btree.BTreeG[Resource]
	counts   Counts

	serverDUID []byte
	endpoint   EndpointState

	lastIndex, lastTerm uint64
	lastTime            int64 // Time of the last applied command (Unix ns)

	// obs are told of every binding change (never set on a View's tables).
	obs []Observer
}

// Observer is told of binding changes as they are applied. Its methods run on
// the apply goroutine while the State's write lock is held: they must be quick
// and must not call State methods. The bindings passed are immutable.
type Observer interface {
	// BindingChanged reports one change: old is nil for a new binding, nb is
	// nil for a deleted one.
	BindingChanged(old, nb *Binding)
	// Reset reports that the whole table is now v (observation began, or a
	// snapshot was restored); earlier changes are void.
	Reset(v *View)
}

func newTables() *tables {
	return &tables{
		bindings: btree.NewG(btreeDegree, bindingLess),
		byClient: btree.NewG(btreeDegree, clientLess),
		byExpiry: btree.NewG(btreeDegree, expiryLess),
		owed:     btree.NewG(btreeDegree, resourceLess),
	}
}

func (t *tables) clone() *tables {
	c := *t
	c.bindings = t.bindings.Clone()
	c.byClient = t.byClient.Clone()
	c.byExpiry = t.byExpiry.Clone()
	c.owed = t.owed.Clone()
	c.obs = nil
	return &c
}

// put stores nb (already validated, Rev set), replacing any binding with the
// same resource, and keeps every index in step.
func (t *tables) put(nb *Binding) {
	old, ok := t.bindings.ReplaceOrInsert(nb)
	if ok {
		t.unindex(old)
	}
	t.index(nb)
	for _, o := range t.obs {
		o.BindingChanged(old, nb)
	}
}

func (t *tables) del(r Resource) {
	if old, ok := t.bindings.Delete(&Binding{Resource: r}); ok {
		t.unindex(old)
		for _, o := range t.obs {
			o.BindingChanged(old, nil)
		}
	}
}

func (t *tables) index(b *Binding) {
	if b.DUID != "" {
		t.byClient.ReplaceOrInsert(clientKey{b.DUID, b.Resource.Type, b.IAID, b.Resource})
	}
	if b.StateExpirationTime != 0 {
		t.byExpiry.ReplaceOrInsert(expiryKey{b.StateExpirationTime, b.Resource})
	}
	if b.Owed() {
		t.owed.ReplaceOrInsert(b.Resource)
	}
	t.counts[b.Resource.Type][b.Status]++
}

func (t *tables) unindex(b *Binding) {
	if b.DUID != "" {
		t.byClient.Delete(clientKey{b.DUID, b.Resource.Type, b.IAID, b.Resource})
	}
	if b.StateExpirationTime != 0 {
		t.byExpiry.Delete(expiryKey{b.StateExpirationTime, b.Resource})
	}
	if b.Owed() {
		t.owed.Delete(b.Resource)
	}
	t.counts[b.Resource.Type][b.Status]--
}

func (t *tables) rev(r Resource) uint64 {
	if b, ok := t.bindings.Get(&Binding{Resource: r}); ok {
		return b.Rev
	}
	return 0
}

// apply applies one entry. It is deterministic: the outcome depends only on
// the current tables and the entry.
func (t *tables) apply(e *Entry) *Result {
	t.lastIndex, t.lastTerm = e.Index, e.Term
	res := &Result{Index: e.Index}
	c := e.Cmd
	if c == nil {
		res.Err = e.DecodeErr
		if res.Err == nil {
			res.Err = fmt.Errorf("%w: empty entry", ErrCorruptEntry)
		}
		return res
	}
	t.lastTime = c.Time
	switch c.Type {
	case CmdTxn:
		res.Err = t.applyTxn(e.Index, c.Ops)
	case CmdSetServerDUID:
		switch {
		case len(c.ServerDUID) == 0 || len(c.ServerDUID) > MaxDUIDLen:
			res.Err = fmt.Errorf("%w: server DUID of %d bytes", ErrInvalidCommand, len(c.ServerDUID))
		case t.serverDUID == nil:
			t.serverDUID = append([]byte(nil), c.ServerDUID...)
		}
	case CmdSetEndpoint:
		if c.Endpoint == nil {
			res.Err = fmt.Errorf("%w: set-endpoint without a record", ErrInvalidCommand)
		} else {
			t.endpoint = *c.Endpoint
		}
	case CmdNoop:
	default:
		res.Err = fmt.Errorf("%w: unknown command type %d", ErrInvalidCommand, c.Type)
	}
	return res
}

// dupScanMax is the txn size up to which duplicate resources are found by
// scanning the earlier ops; bigger txns (admin imports) use a set.
const dupScanMax = 16

// dupOf reports whether ops[i]'s resource is in ops[:i]. seen is nil for
// small txns, else the set of the resources of ops[:i] (dupOf adds ops[i]).
func dupOf(ops []Op, i int, seen map[Resource]struct{}) bool {
	r := ops[i].Resource
	if seen == nil {
		for j := 0; j < i; j++ {
			if ops[j].Resource == r {
				return true
			}
		}
		return false
	}
	if _, dup := seen[r]; dup {
		return true
	}
	seen[r] = struct{}{}
	return false
}

func (t *tables) applyTxn(index uint64, ops []Op) error {
	var seen map[Resource]struct{} // membership only: no map order reaches the state
	if len(ops) > dupScanMax {
		seen = make(map[Resource]struct{}, len(ops))
	}
	// Check everything first: a txn applies whole or not at all.
	for i := range ops {
		op := &ops[i]
		if !op.Resource.Valid() {
			return fmt.Errorf("%w: op %d: bad resource %v", ErrInvalidCommand, i, op.Resource)
		}
		if !op.Delete {
			if op.Binding.Resource != op.Resource {
				return fmt.Errorf("%w: op %d: binding resource differs from op resource", ErrInvalidCommand, i)
			}
			if err := op.Binding.validate(); err != nil {
				return fmt.Errorf("op %d: %w", i, err)
			}
		}
		if dupOf(ops, i, seen) {
			return fmt.Errorf("%w: op %d: resource %v appears twice in one txn", ErrInvalidCommand, i, op.Resource)
		}
		if op.IfRev != AnyRev {
			if have := t.rev(op.Resource); have != op.IfRev {
				return &ConflictError{Op: i, Resource: op.Resource, Want: op.IfRev, Have: have}
			}
		}
	}
	for i := range ops {
		op := &ops[i]
		if op.Delete {
			t.del(op.Resource)
			continue
		}
		nb := op.Binding // copy: stored bindings are never shared with callers
		nb.Rev = index
		t.put(&nb)
	}
	return nil
}

// State is the live binding database. See the package doc for who may call what.
type State struct {
	mu sync.RWMutex
	t  *tables
}

// New returns an empty database.
func New() *State { return &State{t: newTables()} }

// Apply applies one entry. Called only from the single apply goroutine.
func (s *State) Apply(e Entry) *Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.apply(&e)
}

// ApplyBatch applies entries in order under one lock acquisition and returns
// one Result per entry. Called only from the single apply goroutine.
func (s *State) ApplyBatch(es []Entry) []*Result {
	out := make([]*Result, len(es))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range es {
		out[i] = s.t.apply(&es[i])
	}
	return out
}

// AddObserver makes o receive every later binding change (observers are
// called in the order they were added). o.Reset is called first, with the
// current table, under the same lock, so o misses nothing. The returned
// function stops o's observation.
func (s *State) AddObserver(o Observer) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t.obs = append(s.t.obs[:len(s.t.obs):len(s.t.obs)], o)
	o.Reset(&View{t: s.t.clone()})
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, x := range s.t.obs {
			if x == o {
				s.t.obs = append(s.t.obs[:i:i], s.t.obs[i+1:]...)
				return
			}
		}
	}
}

// View returns a consistent read-only view of the whole database as of now.
// It costs O(1); the live State copies index nodes lazily as it changes, so
// hold a View only as long as needed (a scan, a snapshot).
func (s *State) View() *View {
	s.mu.Lock() // Clone mutates the source tree's copy-on-write context.
	defer s.mu.Unlock()
	return &View{t: s.t.clone()}
}

// Get returns the binding for r.
func (s *State) Get(r Resource) (Binding, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (&View{t: s.t}).Get(r)
}

// Client returns the bindings of one client IA, in resource order.
func (s *State) Client(duid string, typ IAType, iaid uint32) []Binding {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (&View{t: s.t}).Client(duid, typ, iaid)
}

// ClientAll returns every binding held under duid, in (type, IAID, resource) order.
func (s *State) ClientAll(duid string) []Binding {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (&View{t: s.t}).ClientAll(duid)
}

// Expiring returns up to limit bindings whose StateExpirationTime is at or
// before at (Unix seconds), earliest first.
func (s *State) Expiring(at int64, limit int) []Binding {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (&View{t: s.t}).Expiring(at, limit)
}

// NextExpiry returns the earliest StateExpirationTime, if any binding has one.
func (s *State) NextExpiry() (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (&View{t: s.t}).NextExpiry()
}

// Owed returns up to limit bindings with an update owed to the partner,
// starting at resource from (inclusive), in resource order.
func (s *State) Owed(from Resource, limit int) []Binding {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (&View{t: s.t}).Owed(from, limit)
}

// Stats returns counts and metadata without copying the tables.
func (s *State) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return (&View{t: s.t}).Stats()
}

// ServerDUID returns the recorded server DUID, or nil.
func (s *State) ServerDUID() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]byte(nil), s.t.serverDUID...)
}

// Endpoint returns the failover endpoint's persistent record.
func (s *State) Endpoint() EndpointState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.t.endpoint
}

// Applied returns the index and term of the last applied entry and the time
// carried by the last applied command.
func (s *State) Applied() (index, term uint64, cmdTime int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.t.lastIndex, s.t.lastTerm, s.t.lastTime
}

// Stats summarises a database.
type Stats struct {
	Bindings  int
	Owed      int
	Counts    Counts
	LastIndex uint64
	LastTerm  uint64
	LastTime  int64
}

// View is a read-only, consistent database image (see State.View). It is
// safe for use by one goroutine at a time; its methods never block Apply.
type View struct{ t *tables }

// Get returns the binding for r.
func (v *View) Get(r Resource) (Binding, bool) {
	b, ok := v.t.bindings.Get(&Binding{Resource: r})
	if !ok {
		return Binding{}, false
	}
	return *b, true
}

// Len returns the number of bindings.
func (v *View) Len() int { return v.t.bindings.Len() }

// Client returns the bindings of one client IA, in resource order.
func (v *View) Client(duid string, typ IAType, iaid uint32) []Binding {
	var out []Binding
	v.t.byClient.AscendGreaterOrEqual(clientKey{duid: duid, typ: typ, iaid: iaid}, func(k clientKey) bool {
		if k.duid != duid || k.typ != typ || k.iaid != iaid {
			return false
		}
		if b, ok := v.t.bindings.Get(&Binding{Resource: k.res}); ok {
			out = append(out, *b)
		}
		return true
	})
	return out
}

// ClientAll returns every binding held under duid.
func (v *View) ClientAll(duid string) []Binding {
	var out []Binding
	v.t.byClient.AscendGreaterOrEqual(clientKey{duid: duid}, func(k clientKey) bool {
		if k.duid != duid {
			return false
		}
		if b, ok := v.t.bindings.Get(&Binding{Resource: k.res}); ok {
			out = append(out, *b)
		}
		return true
	})
	return out
}

// Expiring returns up to limit bindings whose StateExpirationTime is at or
// before at, earliest first (ties in resource order).
func (v *View) Expiring(at int64, limit int) []Binding {
	var out []Binding
	v.t.byExpiry.Ascend(func(k expiryKey) bool {
		if k.at > at || len(out) >= limit {
			return false
		}
		if b, ok := v.t.bindings.Get(&Binding{Resource: k.res}); ok {
			out = append(out, *b)
		}
		return true
	})
	return out
}

// NextExpiry returns the earliest StateExpirationTime.
func (v *View) NextExpiry() (int64, bool) {
	k, ok := v.t.byExpiry.Min()
	return k.at, ok
}

// Owed returns up to limit bindings with an update owed, from resource from on.
func (v *View) Owed(from Resource, limit int) []Binding {
	var out []Binding
	v.t.owed.AscendGreaterOrEqual(from, func(r Resource) bool {
		if len(out) >= limit {
			return false
		}
		if b, ok := v.t.bindings.Get(&Binding{Resource: r}); ok {
			out = append(out, *b)
		}
		return true
	})
	return out
}

// Ascend calls fn for each binding with resource >= from, in resource order,
// until fn returns false. fn must not keep or modify the pointer's target.
func (v *View) Ascend(from Resource, fn func(*Binding) bool) {
	v.t.bindings.AscendGreaterOrEqual(&Binding{Resource: from}, fn)
}

// Descend calls fn for each binding with resource <= from, in descending
// resource order, until fn returns false. fn must not keep or modify the
// pointer's target.
func (v *View) Descend(from Resource, fn func(*Binding) bool) {
	v.t.bindings.DescendLessOrEqual(&Binding{Resource: from}, fn)
}

// AscendRange is Ascend over [from, to).
func (v *View) AscendRange(from, to Resource, fn func(*Binding) bool) {
	v.t.bindings.AscendRange(&Binding{Resource: from}, &Binding{Resource: to}, fn)
}

// Stats summarises the view.
func (v *View) Stats() Stats {
	return Stats{
		Bindings:  v.t.bindings.Len(),
		Owed:      v.t.owed.Len(),
		Counts:    v.t.counts,
		LastIndex: v.t.lastIndex,
		LastTerm:  v.t.lastTerm,
		LastTime:  v.t.lastTime,
	}
}

// ServerDUID returns the server DUID, or nil.
func (v *View) ServerDUID() []byte { return append([]byte(nil), v.t.serverDUID...) }

// Endpoint returns the failover endpoint's record.
func (v *View) Endpoint() EndpointState { return v.t.endpoint }

// Dump writes the whole database as deterministic text: one line per binding
// in resource order, then the metadata. Two databases are equal exactly when
// their dumps are; tests and `tandem log replay` use it.
func (v *View) Dump(w *strings.Builder) {
	v.t.bindings.Ascend(func(b *Binding) bool {
		fmt.Fprintf(w, "%v status=%v flags=%d duid=%x iaid=%d pref=%d valid=%d cltt=%d stos=%d sexp=%d pl=%d apl=%d exp=%d prclt=%d rev=%d\n",
			b.Resource, b.Status, b.Flags, b.DUID, b.IAID, b.PreferredLifetime, b.ValidLifetime, b.CLTT,
			b.StartTimeOfState, b.StateExpirationTime, b.PartnerLifetime, b.AckedPartnerLifetime,
			b.ExpirationTime, b.PartnerRawCLTT, b.Rev)
		return true
	})
	fmt.Fprintf(w, "server-duid=%x endpoint=%+v owed=%d counts=%v\n", v.t.serverDUID, v.t.endpoint, v.t.owed.Len(), v.t.counts)
}
