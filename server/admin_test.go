package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// mcltPolicy behaves like the failover endpoint as far as admin changes
// see it (the real one is tested in failover/ and e2e/): primary parity
// (odd addresses), lifetimes capped at mclt, every change owed to the
// partner, a release is RELEASED with an update owed.
type mcltPolicy struct {
	Standalone
	mclt  time.Duration
	alloc bool // MayAllocate
}

func (mcltPolicy) AddressParity() int  { return 1 }
func (p mcltPolicy) MayAllocate() bool { return p.alloc }
func (p mcltPolicy) Grant(_ time.Time, b *fsm.Binding, desired time.Duration) time.Duration {
	b.Flags |= fsm.FlagUpdateOwed
	return min(desired, p.mclt)
}
func (mcltPolicy) Free(now time.Time, b *fsm.Binding, released bool) {
	b.Status = fsm.StatusExpired
	if released {
		b.Status = fsm.StatusReleased
	}
	b.StartTimeOfState, b.StateExpirationTime = now.Unix(), 0
	b.Flags |= fsm.FlagUpdateOwed
}
func (mcltPolicy) Changed(_ time.Time, b *fsm.Binding) { b.Flags |= fsm.FlagUpdateOwed }

func ptr[T any](v T) *T { return &v }

// used returns the used slots of the pool holding r.
func (h *harness) used(r fsm.Resource) uint64 {
	used, _ := h.srv.pools.find(r).usage()
	return used
}

// adminNotes reads the admin entries' notes from the log (the store is closed first).
func adminNotes(t *testing.T, h *harness) []string {
	t.Helper()
	h.close()
	lr, err := raftstore.OpenLog(h.dir, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	var notes []string
	if err := lr.Entries(0, ^uint64(0), func(e *raftstore.LogEntry) error {
		if e.Cmd != nil && e.Cmd.Origin == fsm.OriginAdmin {
			notes = append(notes, fmt.Sprintf("%d ops: %s", len(e.Cmd.Ops), e.Cmd.Note))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return notes
}

func TestAdminPutAddUpdateRelease(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	r := na("2001:db8:1::1234")
	before := h.used(r)
	res, err := h.srv.AdminPut(ctx, AdminChange{Resource: r, Create: true, DUID: ptr("\x00\x03\x00\x01abcdef"), IAID: ptr(uint32(7)), Note: "add"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := h.get(r)
	if b != res.Binding || b.Status != fsm.StatusActive || b.IAID != 7 || b.DUID != "\x00\x03\x00\x01abcdef" ||
		b.ValidLifetime != uint32(validLT/time.Second) || b.PreferredLifetime != uint32(prefLT/time.Second) ||
		b.CLTT != t0.Unix() || b.StateExpirationTime != t0.Add(validLT).Unix() || b.Owed() {
		t.Fatalf("stored %+v, returned %+v", b, res.Binding)
	}
	if got := h.used(r); got != before+1 {
		t.Fatalf("pool used %d after add, want %d: the slotset must follow admin changes", got, before+1)
	}
	// A client's lease is found through the client index.
	if cl := h.state().Client("\x00\x03\x00\x01abcdef", fsm.IANA, 7); len(cl) != 1 || cl[0].Resource != r {
		t.Fatalf("client index: %+v", cl)
	}

	_, err = h.srv.AdminPut(ctx, AdminChange{Resource: r, Create: true, DUID: ptr("x"), IAID: ptr(uint32(1))})
	if !errors.Is(err, ErrLeaseExists) || !strings.Contains(err.Error(), "use lease update") {
		t.Fatalf("add over an ACTIVE lease: %v", err)
	}
	_, err = h.srv.AdminPut(ctx, AdminChange{Resource: na("2001:db8:1::9"), Create: true, DUID: ptr("x"), IAID: ptr(uint32(1))})
	if !errors.Is(err, ErrNotInPool) {
		t.Fatalf("add outside the pools: %v", err)
	}
	_, err = h.srv.AdminPut(ctx, AdminChange{Resource: na("2001:db8:1::1235"), DUID: ptr("x")})
	if !errors.Is(err, ErrNoBinding) {
		t.Fatalf("update of a missing lease: %v", err)
	}
	_, err = h.srv.AdminPut(ctx, AdminChange{Resource: r, Status: fsm.StatusFree})
	if !errors.Is(err, ErrBadChange) {
		t.Fatalf("state FREE: %v", err)
	}

	// Update: an IAID change keeps the time left; --valid extends from now.
	h.clk.Advance(time.Hour)
	res, err = h.srv.AdminPut(ctx, AdminChange{Resource: r, IAID: ptr(uint32(8))})
	if err != nil || res.Binding.IAID != 8 || res.Binding.StateExpirationTime != t0.Add(validLT).Unix() || res.Binding.ValidLifetime != 7200 {
		t.Fatalf("IAID update: %+v, %v", res.Binding, err)
	}
	res, err = h.srv.AdminPut(ctx, AdminChange{Resource: r, Valid: ptr(10 * time.Hour), Preferred: ptr(20 * time.Hour)})
	now := t0.Add(time.Hour)
	if err != nil || res.Binding.ValidLifetime != 36000 || res.Binding.PreferredLifetime != 36000 ||
		res.Binding.StateExpirationTime != now.Add(10*time.Hour).Unix() {
		t.Fatalf("lifetime update: %+v, %v", res.Binding, err)
	}
	_, err = h.srv.AdminPut(ctx, AdminChange{Resource: r, Status: fsm.StatusReleased, Valid: ptr(time.Hour)})
	if !errors.Is(err, ErrBadChange) {
		t.Fatalf("release with lifetimes: %v", err)
	}
	res, err = h.srv.AdminPut(ctx, AdminChange{Resource: r, Status: fsm.StatusReleased})
	if err != nil || res.Binding.Status != fsm.StatusFree || res.Binding.CLTT != now.Unix() {
		t.Fatalf("release (standalone: FREE): %+v, %v", res.Binding, err)
	}
	if got := h.used(r); got != before {
		t.Fatalf("pool used %d after release, want %d", got, before)
	}
	// Add over a FREE binding is fine (it is free).
	if _, err := h.srv.AdminPut(ctx, AdminChange{Resource: r, Create: true, DUID: ptr("\x00\x01"), IAID: ptr(uint32(1))}); err != nil {
		t.Fatalf("add over a FREE lease: %v", err)
	}
	res, err = h.srv.AdminPut(ctx, AdminChange{Resource: r, Status: fsm.StatusAbandoned})
	if err != nil || res.Binding.Status != fsm.StatusAbandoned || res.Binding.StateExpirationTime != now.Add(24*time.Hour).Unix() {
		t.Fatalf("abandon: %+v, %v", res.Binding, err)
	}
	if got := h.used(r); got != before+1 {
		t.Fatalf("an ABANDONED address must stay out of allocation: used %d", got)
	}
	res, err = h.srv.AdminDelete(ctx, r, false, "delete it")
	if err != nil || !res.Deleted || res.Released {
		t.Fatalf("delete: %+v, %v", res, err)
	}
	if _, ok := h.get(r); ok || h.used(r) != before {
		t.Fatal("deleted lease still there or still taken")
	}
	if _, err := h.srv.AdminDelete(ctx, r, false, ""); !errors.Is(err, ErrNoBinding) {
		t.Fatalf("delete of nothing: %v", err)
	}
	pdr := pd("2001:db8:8000:4200::/56")
	if _, err := h.srv.AdminPut(ctx, AdminChange{Resource: pdr, Create: true, DUID: ptr("\x00\x02"), IAID: ptr(uint32(3))}); err != nil {
		t.Fatalf("add a prefix: %v", err)
	}
	bad := fsm.PrefixResource(netip.MustParsePrefix("2001:db8:8000:4200::/60"))
	if _, err := h.srv.AdminPut(ctx, AdminChange{Resource: bad, Create: true, DUID: ptr("\x00\x02"), IAID: ptr(uint32(3))}); !errors.Is(err, ErrNotInPool) {
		t.Fatalf("a /60 in a pool of /56s: %v", err)
	}

	notes := strings.Join(adminNotes(t, h), "\n")
	for _, want := range []string{"1 ops: admin: add", "1 ops: admin: delete it"} {
		if !strings.Contains(notes, want) {
			t.Errorf("log lacks %q:\n%s", want, notes)
		}
	}
}

func TestAdminFailoverRules(t *testing.T) {
	pol := &mcltPolicy{Standalone: Standalone{Hold: time.Hour}, mclt: time.Hour, alloc: true}
	h := newHarness(t, func(c *Config) { c.Policy = pol })
	ctx := context.Background()
	odd, even := na("2001:db8:1::1001"), na("2001:db8:1::1002")
	res, err := h.srv.AdminPut(ctx, AdminChange{Resource: odd, Create: true, DUID: ptr("\x00\x01"), IAID: ptr(uint32(1)), Valid: ptr(5 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Binding.ValidLifetime != 3600 || res.Binding.StateExpirationTime != t0.Add(time.Hour).Unix() || !res.Binding.Owed() {
		t.Fatalf("under failover the stored lifetime is the MCLT-capped one and an update is owed: %+v", res.Binding)
	}
	_, err = h.srv.AdminPut(ctx, AdminChange{Resource: even, Create: true, DUID: ptr("\x00\x01"), IAID: ptr(uint32(2))})
	if !errors.Is(err, ErrNotOurs) || !strings.Contains(err.Error(), "partner") {
		t.Fatalf("add on the partner's address: %v", err)
	}
	if _, err := h.srv.AdminPut(ctx, AdminChange{Resource: even, Create: true, DUID: ptr("\x00\x01"), IAID: ptr(uint32(2)), Force: true}); err != nil {
		t.Fatalf("forced add on the partner's address: %v", err)
	}
	pol.alloc = false
	if _, err := h.srv.AdminPut(ctx, AdminChange{Resource: na("2001:db8:1::1003"), Create: true, DUID: ptr("\x00\x01"), IAID: ptr(uint32(3))}); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("add in a state that does not allocate: %v", err)
	}
	// Extending an ACTIVE lease is not an allocation.
	if _, err := h.srv.AdminPut(ctx, AdminChange{Resource: odd, Valid: ptr(30 * time.Minute)}); err != nil {
		t.Fatalf("extend while not allocating: %v", err)
	}
	pol.alloc = true

	res, err = h.srv.AdminDelete(ctx, odd, false, "delete")
	if err != nil || !res.Released || res.Deleted || res.Binding.Status != fsm.StatusReleased || !res.Binding.Owed() {
		t.Fatalf("delete of an ACTIVE lease under failover must release it with an update owed: %+v, %v", res, err)
	}
	if b, ok := h.get(odd); !ok || b.Status != fsm.StatusReleased {
		t.Fatalf("stored: %+v", b)
	}
	// Held for a partner that lost its database (an EXPIRED or RELEASED
	// lease with a state expiration time ahead): refused unless forced, and
	// making it ABANDONED does not shorten the hold.
	held := na("2001:db8:1::1005")
	h.put(fsm.Binding{Resource: held, Status: fsm.StatusExpired, DUID: "\x00\x05", IAID: 5, StartTimeOfState: t0.Unix(),
		StateExpirationTime: t0.Unix() + 86400*30, Flags: fsm.FlagUpdateOwed})
	if _, err := h.srv.AdminDelete(ctx, held, false, "delete"); !errors.Is(err, ErrBadChange) || !strings.Contains(err.Error(), "held until") {
		t.Fatalf("delete of a held EXPIRED lease: %v", err)
	}
	if res, err := h.srv.AdminPut(ctx, AdminChange{Resource: held, Status: fsm.StatusAbandoned}); err != nil ||
		res.Binding.StateExpirationTime != t0.Unix()+86400*30 {
		t.Fatalf("ABANDONED over a held lease: %+v, %v; want the hold's end kept", res, err)
	}
	// Not ACTIVE any more: deleted.
	if res, err := h.srv.AdminDelete(ctx, odd, false, "delete"); err != nil || !res.Deleted {
		t.Fatalf("second delete: %+v, %v", res, err)
	}
	if res, err := h.srv.AdminDelete(ctx, even, true, "forced"); err != nil || !res.Deleted {
		t.Fatalf("forced delete of an ACTIVE lease: %+v, %v", res, err)
	}

	// Import: everything owed to the partner; parity is not checked.
	bs := []fsm.Binding{
		{Resource: na("2001:db8:1::1100"), Status: fsm.StatusActive, DUID: "\x00\x09", IAID: 1, ValidLifetime: 7200, StateExpirationTime: t0.Unix() + 7200},
		{Resource: na("2001:db8:1::1101"), Status: fsm.StatusFree},
	}
	if _, err := h.srv.AdminImport(ctx, bs, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []fsm.Resource{bs[0].Resource, bs[1].Resource} {
		if b, _ := h.get(r); !b.Owed() {
			t.Errorf("imported %v not owed to the partner: %+v", r, b)
		}
	}
}

func TestAdminImport(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	mk := func(n int) []fsm.Binding {
		bs := make([]fsm.Binding, n)
		for i := range bs {
			a := addr("2001:db8:1::1000").As16()
			a[14], a[15] = 0x10|byte(i>>8), byte(i)
			bs[i] = fsm.Binding{Resource: fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a)), Status: fsm.StatusActive,
				DUID: fmt.Sprintf("\x00\x03\x00\x01%06d", i), IAID: uint32(i), ValidLifetime: 3600, PreferredLifetime: 1800,
				CLTT: t0.Unix(), StartTimeOfState: t0.Unix(), StateExpirationTime: t0.Unix() + 3600}
		}
		return bs
	}
	bs := mk(2500)
	var seen []int
	res, err := h.srv.AdminImport(ctx, bs, ImportOptions{BatchSize: 1000, Note: "f.csv", Progress: func(n int) { seen = append(seen, n) }})
	if err != nil || res.Applied != 2500 || res.Batches != 3 || res.Replaced != 0 {
		t.Fatalf("import: %+v, %v", res, err)
	}
	if len(seen) != 3 || seen[2] != 2500 {
		t.Fatalf("progress calls: %v", seen)
	}
	for _, want := range mk(2500) {
		got, ok := h.get(want.Resource)
		got.Rev = 0
		if !ok || got != want {
			t.Fatalf("imported binding %v: %+v, want %+v", want.Resource, got, want)
		}
	}
	if used := h.used(bs[0].Resource); used != 2500 {
		t.Fatalf("pool used %d after import", used)
	}

	// Again: every record conflicts; the first 20 are listed, nothing changes.
	idx, _, _ := h.state().Applied()
	again := mk(2500)
	again[5].IAID = 99
	res, err = h.srv.AdminImport(ctx, again, ImportOptions{})
	if !errors.Is(err, ErrImportRefused) || res.Refused != 2500 || len(res.Problems) != maxImportProblems ||
		!errors.Is(res.Problems[0].Err, ErrLeaseExists) || res.Problems[0].Index != 0 || !strings.Contains(res.Problems[0].Err.Error(), "--replace") {
		t.Fatalf("conflicting import: %+v, %v", res, err)
	}
	if i2, _, _ := h.state().Applied(); i2 != idx {
		t.Fatal("a refused import wrote to the log")
	}
	res, err = h.srv.AdminImport(ctx, again, ImportOptions{Replace: true, DryRun: true})
	if err != nil || res.Replaced != 2500 || res.Applied != 0 {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	if i2, _, _ := h.state().Applied(); i2 != idx {
		t.Fatal("a dry run wrote to the log")
	}
	res, err = h.srv.AdminImport(ctx, again, ImportOptions{Replace: true})
	if err != nil || res.Replaced != 2500 || res.Applied != 2500 {
		t.Fatalf("replace: %+v, %v", res, err)
	}
	if b, _ := h.get(again[5].Resource); b.IAID != 99 {
		t.Fatalf("replaced binding: %+v", b)
	}

	// Bad records: named by index, nothing applied.
	bad := mk(3)
	for i := range bad {
		bad[i].Resource.IP[14] = 0x1f // fresh resources
	}
	bad[0].Resource = na("2001:db8:7::1")
	bad[2].Resource = bad[1].Resource
	bad = append(bad, fsm.Binding{Resource: na("2001:db8:1::2001"), Status: fsm.StatusActive})
	res, err = h.srv.AdminImport(ctx, bad, ImportOptions{})
	if !errors.Is(err, ErrImportRefused) || res.Refused != 3 || len(res.Problems) != 3 {
		t.Fatalf("bad records: %+v, %v", res, err)
	}
	want := []struct {
		i    int
		want error
		text string
	}{{0, ErrNotInPool, ""}, {2, ErrBadChange, "also record 2"}, {3, ErrBadChange, "DUID"}}
	for k, w := range want {
		p := res.Problems[k]
		if p.Index != w.i || !errors.Is(p.Err, w.want) || !strings.Contains(p.Err.Error(), w.text) {
			t.Errorf("problem %d: %+v, want index %d %v %q", k, p, w.i, w.want, w.text)
		}
	}
	notes := adminNotes(t, h)
	if len(notes) != 6 || !strings.Contains(strings.Join(notes, "\n"), "1000 ops: admin: import f.csv batch 1/3") {
		t.Fatalf("log entries of the imports:\n%s", strings.Join(notes, "\n"))
	}
}

// TestAdminConcurrentUpdates: admin updates of one lease from many
// goroutines race through IfRev; each is applied (after retries on
// conflict) or reports ErrBusy, never anything else.
func TestAdminConcurrentUpdates(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	r := na("2001:db8:1::1500")
	if _, err := h.srv.AdminPut(ctx, AdminChange{Resource: r, Create: true, DUID: ptr("\x00\x01"), IAID: ptr(uint32(0))}); err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			_, err := h.srv.AdminPut(ctx, AdminChange{Resource: r, IAID: ptr(uint32(i + 1))})
			errs <- err
		}(i)
	}
	ok := 0
	for i := 0; i < n; i++ {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrBusy):
		default:
			t.Fatal(err)
		}
	}
	if ok == 0 {
		t.Fatal("no concurrent update succeeded")
	}
	if b, _ := h.get(r); b.IAID == 0 {
		t.Fatalf("final binding: %+v", b)
	}
}
