package control

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

type backend struct{ st *fsm.State }

func (b backend) State() *fsm.State { return b.st }
func (b backend) Status() Status {
	return Status{Version: "test", Counters: map[string]uint64{"pkt6-received": 7}}
}

// newBackend holds 10 ACTIVE NA leases (two clients), 3 PD leases and one FREE address.
func newBackend(t *testing.T) backend {
	st := fsm.New()
	var ops []fsm.Op
	put := func(r fsm.Resource, status fsm.Status, duid string) {
		ops = append(ops, fsm.Op{Resource: r, IfRev: fsm.AnyRev, Binding: fsm.Binding{Resource: r, Status: status,
			DUID: duid, IAID: 1, ValidLifetime: 3600, StateExpirationTime: 1_800_000_000}})
	}
	for i := 0; i < 10; i++ {
		a := netip.MustParseAddr("2001:db8:1::1000").As16()
		a[15] = byte(i)
		duid := "\x00\x03\x00\x01aaaaaa"
		if i%2 == 1 {
			duid = "\x00\x03\x00\x01bbbbbb"
		}
		put(fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a)), fsm.StatusActive, duid)
	}
	for i := 0; i < 3; i++ {
		put(fsm.PrefixResource(netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x80, byte(i)}), 56)), fsm.StatusActive, "\x00\x03\x00\x01cccccc")
	}
	put(fsm.AddrResource(fsm.IANA, netip.MustParseAddr("2001:db8:2::5")), fsm.StatusFree, "")
	if r := st.Apply(fsm.Entry{Index: 1, Term: 1, Cmd: &fsm.Command{Type: fsm.CmdTxn, Ops: ops}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	return backend{st: st}
}

func serve(t *testing.T, b Backend) string {
	path := filepath.Join(t.TempDir(), "run", "tandem.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, b) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func TestLeaseListFiltersAndPaging(t *testing.T) {
	path := serve(t, newBackend(t))
	c := NewClient(path)
	ctx := context.Background()
	all, err := c.Leases(ctx, LeaseFilter{})
	if err != nil || len(all) != 14 {
		t.Fatalf("all leases: %d, %v", len(all), err)
	}
	first := all[0]
	if first.Type != "na" || first.Address != "2001:db8:1::1000" || first.State != "ACTIVE" ||
		first.DUID != "00030001616161616161" || first.IAID != 1 || first.ValidUntil != "2027-01-15T08:00:00Z" {
		t.Fatalf("first lease JSON: %+v", first)
	}
	for _, tc := range []struct {
		f    LeaseFilter
		want int
	}{
		{LeaseFilter{Type: "pd"}, 3},
		{LeaseFilter{Type: "PD"}, 3},
		{LeaseFilter{State: "free"}, 1},
		{LeaseFilter{DUID: "00030001626262626262"}, 5},
		{LeaseFilter{Subnet: netip.MustParsePrefix("2001:db8:2::/64")}, 1},
		{LeaseFilter{Subnet: netip.MustParsePrefix("2001:db8:8000::/40")}, 3},
		{LeaseFilter{Limit: 4}, 4},
		{LeaseFilter{After: "na 2001:db8:1::1008"}, 5},
		{LeaseFilter{Type: "na", State: "ACTIVE", DUID: "00030001616161616161", Limit: 2}, 2},
	} {
		got, err := c.Leases(ctx, tc.f)
		if err != nil || len(got) != tc.want {
			t.Errorf("filter %+v: %d leases, %v; want %d", tc.f, len(got), err, tc.want)
		}
	}
	// Paging through everything 3 at a time gives every lease once, in order.
	var paged []Lease
	after := ""
	for {
		page, err := c.Leases(ctx, LeaseFilter{Limit: 3, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		last := page[len(page)-1]
		after = last.Type + " " + last.Address + last.Prefix
	}
	if len(paged) != len(all) {
		t.Fatalf("paging gave %d leases, want %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i].Address != all[i].Address || paged[i].Prefix != all[i].Prefix {
			t.Fatalf("page order differs at %d", i)
		}
	}
	for _, bad := range []LeaseFilter{{Type: "xx"}, {State: "SLEEPING"}, {After: "na nonsense"}} {
		if _, err := c.Leases(ctx, bad); err == nil {
			t.Errorf("bad filter %+v accepted", bad)
		}
	}
}

func TestStatus(t *testing.T) {
	st, err := NewClient(serve(t, newBackend(t))).Status(context.Background())
	if err != nil || st.Version != "test" || st.Counters["pkt6-received"] != 7 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

func TestSocketModeAndStaleSocket(t *testing.T) {
	path := serve(t, newBackend(t))
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	// A socket file nobody listens on (a crashed daemon) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := Listen(stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	// A regular file at the path (a mistyped control-socket) is never removed.
	file := filepath.Join(t.TempDir(), "tandem.toml")
	os.WriteFile(file, []byte("data-dir = \"/x\"\n"), 0o644)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || len(b) == 0 {
		t.Fatal("Listen removed a regular file")
	}
}

func TestClientErrorsSayWhatToDo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "no tandem daemon is listening") {
		t.Fatalf("no daemon: %v", err)
	}
	if os.Geteuid() == 0 {
		return // root ignores file modes
	}
	path := serve(t, newBackend(t))
	os.Chmod(path, 0o000)
	if _, err := NewClient(path).Status(ctx); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("unreadable socket: %v", err)
	}
}

// snapBackend also streams snapshots and can be held (the hold is a flag
// here; the daemon's is the failover endpoint's or the standalone server's).
type snapBackend struct {
	backend
	held *bool
}

func (b snapBackend) SaveSnapshot(w io.Writer) (*fsm.SnapshotHeader, error) {
	return nil, fsm.WriteSnapshot(w, b.st.View(), 1)
}

func (b snapBackend) Continue() error {
	if !*b.held {
		return errors.New("not held")
	}
	*b.held = false
	return nil
}

func TestSnapshotAndContinue(t *testing.T) {
	b := newBackend(t)
	held := true
	c := NewClient(serve(t, snapBackend{b, &held}))
	var buf bytes.Buffer
	n, err := c.SaveSnapshot(context.Background(), &buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("SaveSnapshot: %d bytes (%d), %v", n, buf.Len(), err)
	}
	info := fsm.InspectSnapshot(&buf)
	if info.Err != nil || info.Read != uint64(b.st.Stats().Bindings) {
		t.Fatalf("streamed snapshot: %d bindings, %v", info.Read, info.Err)
	}
	if _, err := c.Continue(context.Background()); err != nil || held {
		t.Fatalf("Continue: %v (held %v)", err, held)
	}
	if _, err := c.Continue(context.Background()); err == nil || !strings.Contains(err.Error(), "not held") {
		t.Fatalf("second Continue: %v", err)
	}

	// A backend without these abilities says so.
	c = NewClient(serve(t, b))
	if _, err := c.SaveSnapshot(context.Background(), io.Discard); err == nil || !strings.Contains(err.Error(), "cannot save snapshots") {
		t.Fatalf("SaveSnapshot on a plain backend: %v", err)
	}
	if _, err := c.Continue(context.Background()); err == nil || !strings.Contains(err.Error(), "nothing to continue") {
		t.Fatalf("Continue on a plain backend: %v", err)
	}
}
