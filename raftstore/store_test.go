package raftstore

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

var base = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// leaseCmd makes a one-lease txn for address n, made at base+n seconds.
func leaseCmd(n int, ifRev uint64) *fsm.Command {
	a := netip.MustParseAddr("2001:db8:1::").As16()
	a[14], a[15] = byte(n>>8), byte(n)
	r := fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a))
	now := base.Add(time.Duration(n) * time.Second)
	return &fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginClient, Note: "REQUEST",
		Ops: []fsm.Op{{Resource: r, IfRev: ifRev, Binding: fsm.Binding{
			Resource: r, Status: fsm.StatusActive, DUID: fmt.Sprintf("\x00\x01duid-%06d", n), IAID: uint32(n),
			PreferredLifetime: 3600, ValidLifetime: 7200, CLTT: now.Unix(), StartTimeOfState: now.Unix(),
			StateExpirationTime: now.Unix() + 7200, PartnerLifetime: now.Unix() + 9000,
		}}}}
}

func dump(st *fsm.State) string {
	var b strings.Builder
	st.View().Dump(&b)
	return b.String()
}

func openT(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestApplyConcurrentReopenAndReplay(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{DataDir: dir, SnapshotThreshold: 100, TrailingLogs: 50})
	const n = 400
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := s.Apply(leaseCmd(i, 0)); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Apply: %v", err)
	}
	if got := s.State().Stats().Bindings; got != n {
		t.Fatalf("bindings = %d, want %d", got, n)
	}
	// A second allocation of the same address with IfRev 0 must conflict.
	if _, err := s.Apply(leaseCmd(7, 0)); !errors.Is(err, fsm.ErrConflict) {
		t.Fatalf("double allocation: err = %v, want ErrConflict", err)
	}
	if _, err := s.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	want := dump(s.State())
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := openT(t, Config{DataDir: dir})
	if got := dump(s2.State()); got != want {
		t.Fatalf("state after reopen differs:\n got %.300s\nwant %.300s", got, want)
	}
	if s2.Info().FirstLogIndex <= 1 {
		t.Errorf("log was not compacted: first index %d", s2.Info().FirstLogIndex)
	}
	s2.Close()

	lr, err := OpenLog(dir, time.Second)
	if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	defer lr.Close()
	var calls int
	var prev, lastSeen uint64
	res, err := lr.Replay(ReplayTarget{Progress: func(index, last uint64) {
		if index <= prev || index > last {
			t.Errorf("progress %d of %d after %d", index, last, prev)
		}
		prev, lastSeen = index, last
		calls++
	}})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if calls == 0 || prev != lastSeen {
		t.Errorf("progress: %d calls, ended at %d of %d", calls, prev, lastSeen)
	}
	if got := dump(res.State); got != want {
		t.Fatalf("replayed state differs from live state")
	}
	if res.FromSnapshot == nil {
		t.Errorf("replay did not start from a snapshot")
	}
}

func TestLockedDataDir(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{DataDir: dir})
	defer s.Close()
	if _, err := Open(Config{DataDir: dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
	if _, err := OpenLog(dir, 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("OpenLog on a live dir: err = %v, want ErrLocked", err)
	}
}

func TestReplayToIndexAndTime(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{DataDir: dir})
	var idx []uint64
	for i := 0; i < 20; i++ {
		x, err := s.Apply(leaseCmd(i, 0))
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, x)
	}
	s.Close()
	lr, err := OpenLog(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	res, err := lr.Replay(ReplayTarget{LastIndex: idx[9]})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.State.Stats().Bindings; got != 10 {
		t.Fatalf("replay to index %d: %d bindings, want 10", idx[9], got)
	}
	res, err = lr.Replay(ReplayTarget{Until: base.Add(4 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.State.Stats().Bindings; got != 5 {
		t.Fatalf("replay until +4s: %d bindings, want 5", got)
	}
}

// TestOpenTimeoutShutsRaftDown: when Open gives up waiting for leadership,
// raft is stopped before its stores close (otherwise raft panics writing
// to a closed database and takes the process down), and the dir reopens.
func TestOpenTimeoutShutsRaftDown(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{DataDir: dir})
	if _, err := s.Apply(leaseCmd(1, 0)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for i := 0; i < 5; i++ {
		if s, err := Open(Config{DataDir: dir, OpenTimeout: time.Nanosecond}); err == nil {
			s.Close() // won the race to leadership: fine
		} else if !errors.Is(err, ErrNotStored) {
			t.Fatalf("Open with a 1ns timeout: %v", err)
		}
	}
	s2 := openT(t, Config{DataDir: dir})
	defer s2.Close()
	if s2.State().Stats().Bindings != 1 {
		t.Fatal("binding lost")
	}
}
