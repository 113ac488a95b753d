package raftstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Damaged data dirs: Open and the offline reader must refuse them with an
// error that names the file and says what to do, and must never panic (a
// panic anywhere, including inside raft's goroutines, kills the test binary).

const damageEntries = 300

// writeLeases applies leases 0..n-1 from 16 goroutines.
func writeLeases(t *testing.T, s *Store, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < n; i += 16 {
				if _, err := s.Apply(leaseCmd(i, 0)); err != nil {
					errs <- fmt.Errorf("lease %d: %w", i, err)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// cloneDir copies a data dir (files and directories) to a new temp dir.
func cloneDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	return dst
}

// boltPages returns raft.db's page size and the type of every page below the
// high-water mark ("meta", "leaf", "branch", "freelist" or "free").
func boltPages(t *testing.T, path string) (pageSize int, types []string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("open %s with bbolt: %v", path, err)
	}
	defer db.Close()
	pageSize = db.Info().PageSize
	tx, err := db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for id := 0; ; id++ {
		p, err := tx.Page(id)
		if err != nil {
			t.Fatalf("page %d: %v", id, err)
		}
		if p == nil {
			return pageSize, types
		}
		types = append(types, p.Type)
	}
}

// middlePage returns the id of the page of type typ nearest the middle of the used pages.
func middlePage(t *testing.T, types []string, typ string) int {
	t.Helper()
	best := -1
	for id, ty := range types {
		if ty == typ && (best < 0 || abs(id-len(types)/2) < abs(best-len(types)/2)) {
			best = id
		}
	}
	if best < 0 {
		t.Fatalf("no %s page among %v", typ, types)
	}
	return best
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// assertCorruptLog checks err is ErrCorruptLog naming path and the way out.
func assertCorruptLog(t *testing.T, what string, err error, path string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error, want ErrCorruptLog", what)
	case !errors.Is(err, ErrCorruptLog):
		t.Errorf("%s: err = %v, want ErrCorruptLog", what, err)
	case !strings.Contains(err.Error(), path):
		t.Errorf("%s: error does not name %s: %v", what, path, err)
	case !strings.Contains(err.Error(), "tandem snapshot restore"):
		t.Errorf("%s: error does not say how to recover (tandem snapshot restore): %v", what, err)
	}
}

// checkOffline opens dir with the offline reader and walks it: it must
// report damage as an error (OpenLog, Info, Entries or Replay) or through
// LogEntry.Err, never panic, and never claim the dir is locked (a failed Open
// must release raft.db). With mustReport, the damage must show somewhere.
func checkOffline(t *testing.T, dir string, mustReport bool) {
	t.Helper()
	path := filepath.Join(dir, logFile)
	lr, err := OpenLog(dir, time.Second)
	if err != nil {
		if errors.Is(err, ErrLocked) {
			t.Fatalf("OpenLog after a failed Open: %v (the failed Open kept raft.db locked)", err)
		}
		assertCorruptLog(t, "OpenLog", err, path)
		return
	}
	defer lr.Close()
	reported := false
	if _, err := lr.Info(); err != nil {
		reported = true
		assertCorruptLog(t, "Info", err, path)
	}
	damaged := 0
	err = lr.Entries(0, 0, func(e *LogEntry) error {
		if e.Err != nil {
			damaged++
			if !errors.Is(e.Err, ErrCorruptLog) && !errors.Is(e.Err, fsm.ErrCorruptEntry) {
				t.Errorf("entry %d: Err = %v, want ErrCorruptLog or fsm.ErrCorruptEntry", e.Index, e.Err)
			}
		}
		return nil
	})
	if err != nil {
		reported = true
		assertCorruptLog(t, "Entries", err, path)
	}
	res, err := lr.Replay(ReplayTarget{})
	if err != nil {
		reported = true
		if !errors.Is(err, ErrCorruptLog) && !errors.Is(err, ErrNotReplayable) {
			t.Errorf("Replay: err = %v, want ErrCorruptLog", err)
		}
	} else if len(res.Damaged) != damaged {
		t.Errorf("Replay reports %d damaged entries, Entries %d", len(res.Damaged), damaged)
	}
	if damaged > 0 {
		reported = true
	}
	if mustReport && !reported {
		t.Errorf("the offline reader read the damaged log without reporting anything")
	}
}

func TestOpenDamagedLog(t *testing.T) {
	base := t.TempDir()
	s := openT(t, Config{DataDir: base})
	writeLeases(t, s, damageEntries)
	want := dump(s.State())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	basePath := filepath.Join(base, logFile)
	orig, err := os.ReadFile(basePath)
	if err != nil {
		t.Fatal(err)
	}
	pageSize, types := boltPages(t, basePath)
	t.Logf("raft.db: %d bytes, page size %d, used pages: %v", len(orig), pageSize, types)
	seed := time.Now().UnixNano()
	t.Logf("garbage seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	garbage := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	overwrite := func(b []byte, off int, g []byte) []byte { copy(b[off:], g); return b }

	// A live leaf page holding entry 150's command: flipping one byte of its
	// client DUID leaves bbolt and msgpack happy; only the command CRC sees it.
	duid := []byte(leaseCmd(150, 0).Ops[0].Binding.DUID)
	duidAt := -1
	for id, ty := range types {
		if ty != "leaf" {
			continue
		}
		page := orig[id*pageSize : (id+1)*pageSize]
		if i := bytes.Index(page, duid); i >= 0 {
			duidAt = id*pageSize + i
		}
	}
	if duidAt < 0 {
		t.Fatalf("entry 150 not found in any live leaf page")
	}
	leaf := middlePage(t, types, "leaf")
	branch := middlePage(t, types, "branch")
	freelist := middlePage(t, types, "freelist")

	cases := []struct {
		name string
		mut  func([]byte) []byte
		// strict: Open must fail with ErrCorruptLog. Otherwise the damage may
		// be harmless (a free page): Open may also succeed, with the same state.
		strict bool
		// prefix: Open may also succeed with a state that lost the last commits (see below).
		prefix bool
		// offlineOK: the offline reader need not notice the damage.
		offlineOK bool
	}{
		{name: "both meta pages", strict: true, mut: func(b []byte) []byte {
			return overwrite(overwrite(b, 0, garbage(pageSize)), pageSize, garbage(pageSize))
		}},
		{name: "truncated to half", mut: func(b []byte) []byte { return b[:len(b)/2] }},
		{name: "truncated at a live leaf", strict: true, mut: func(b []byte) []byte { return b[:leaf*pageSize] }},
		{name: "garbage at half the file", mut: func(b []byte) []byte { return overwrite(b, len(b)/2, garbage(pageSize)) }},
		{name: "garbage over a live leaf page", strict: true, mut: func(b []byte) []byte {
			return overwrite(b, leaf*pageSize, garbage(pageSize))
		}},
		{name: "garbage in a live leaf's body", strict: true, mut: func(b []byte) []byte {
			return overwrite(b, leaf*pageSize+16, garbage(pageSize-16))
		}},
		{name: "garbage over the branch page", strict: true, mut: func(b []byte) []byte {
			return overwrite(b, branch*pageSize, garbage(pageSize))
		}},
		{name: "garbage in the branch page's body", strict: true, mut: func(b []byte) []byte {
			return overwrite(b, branch*pageSize+16, garbage(pageSize-16))
		}},
		// The read-only reader does not use the freelist: it may read the log fine.
		{name: "garbage over the freelist page", strict: true, offlineOK: true, mut: func(b []byte) []byte {
			return overwrite(b, freelist*pageSize, garbage(pageSize))
		}},
		{name: "one byte of a command", strict: true, mut: func(b []byte) []byte { b[duidAt+3] ^= 0x20; return b }},
		{name: "zero length", strict: true, mut: func(b []byte) []byte { return b[:0] }},
		// bbolt keeps two meta pages and falls back to the other one when one
		// is invalid, as after a torn final write: the last commit is lost.
		{name: "meta page 0", prefix: true, mut: func(b []byte) []byte { return overwrite(b, 0, garbage(pageSize)) }},
		{name: "meta page 1", prefix: true, mut: func(b []byte) []byte { return overwrite(b, pageSize, garbage(pageSize)) }},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := cloneDir(t, base)
			path := filepath.Join(dir, logFile)
			if err := os.WriteFile(path, tc.mut(append([]byte(nil), orig...)), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(Config{DataDir: dir, OpenTimeout: 2 * time.Second})
			switch {
			case err != nil && (tc.strict || errors.Is(err, ErrCorruptLog)):
				assertCorruptLog(t, "Open", err, path)
				checkOffline(t, dir, tc.strict && !tc.offlineOK)
				return
			case err != nil:
				t.Fatalf("Open: %v", err)
			case tc.strict:
				s.Close()
				t.Fatalf("Open succeeded on a damaged raft.db")
			}
			got := dump(s.State())
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got == want {
				t.Logf("Open succeeded with the complete state (the damage hit unused space)")
				checkOffline(t, dir, false)
				return
			}
			if !tc.prefix {
				t.Fatalf("Open succeeded with a different state:\n got %.400s\nwant %.400s", got, want)
			}
			// Every binding left must be one that was written; at most one
			// group commit (MaxAppendEntries entries) may be missing.
			wantLines := strings.Split(want, "\n")
			sort.Strings(wantLines)
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			for _, l := range lines[:len(lines)-1] {
				if i := sort.SearchStrings(wantLines, l); i == len(wantLines) || wantLines[i] != l {
					t.Fatalf("binding that was never written: %s", l)
				}
			}
			lost := damageEntries - (len(lines) - 1)
			if lost < 0 || lost > 256 {
				t.Fatalf("%d bindings lost, want at most one group commit", lost)
			}
			t.Logf("Open fell back to the previous bbolt commit: %d of %d bindings lost", lost, damageEntries)
			checkOffline(t, dir, false)
		})
	}
}

// An empty raft.db is a damaged log only where a log was kept before (see
// TestOpenDamagedLog/zero_length). In a dir holding nothing else it is what a
// crash during the very first Open leaves, and Open starts a new log.
func TestOpenEmptyLogInNewDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, logFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, Config{DataDir: dir})
	if _, err := s.Apply(leaseCmd(1, 0)); err != nil {
		t.Fatal(err)
	}
	want := dump(s.State())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Config{DataDir: dir})
	defer s.Close()
	if got := dump(s.State()); got != want {
		t.Fatalf("state after reopen differs")
	}
}

// A crash while raft writes a snapshot leaves snapshots/<id>.tmp, which raft
// never looks at again; Open removes it (TestCrashConsistency meets the real
// thing in some rounds).
func TestOpenRemovesUnfinishedSnapshots(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{DataDir: dir})
	writeLeases(t, s, 20)
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	want := dump(s.State())
	s.Close()
	tmp := filepath.Join(dir, snapDir, "2-999-1234.tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "state.bin"), []byte("TANDEMSN half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Config{DataDir: dir})
	got := dump(s.State())
	s.Close()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("unfinished snapshot %s still there after Open (stat: %v)", tmp, err)
	}
	if got != want {
		t.Fatalf("state after reopen differs")
	}
}

func TestOpenDamagedSnapshot(t *testing.T) {
	base := t.TempDir()
	s := openT(t, Config{DataDir: base, SnapshotThreshold: 50, TrailingLogs: 20})
	writeLeases(t, s, damageEntries)
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	want := dump(s.State())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lr, err := OpenLog(base, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := lr.Snapshots()
	lr.Close()
	if err != nil || len(snaps) == 0 {
		t.Fatalf("Snapshots: %v, %d snapshots", err, len(snaps))
	}
	rel, err := filepath.Rel(base, snaps[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(snapDir, snaps[0].ID, "state.bin"); rel != want {
		t.Fatalf("newest snapshot at %s, want %s (the documented layout)", rel, want)
	}
	orig, err := os.ReadFile(snaps[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mut  func([]byte) []byte
	}{
		{"flipped byte in the body", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }},
		{"flipped byte in the header", func(b []byte) []byte { b[20] ^= 0x80; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"empty", func(b []byte) []byte { return b[:0] }},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := cloneDir(t, base)
			path := filepath.Join(dir, rel)
			if err := os.WriteFile(path, tc.mut(append([]byte(nil), orig...)), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(Config{DataDir: dir, OpenTimeout: 2 * time.Second})
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded with a damaged newest snapshot")
			}
			if !errors.Is(err, fsm.ErrCorruptSnapshot) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "tandem snapshot restore") {
				t.Fatalf("Open: err = %v, want fsm.ErrCorruptSnapshot naming %s and what to do", err, path)
			}
			// Put the good file back: the dir opens with the same state, so
			// the failed Open changed nothing and released the dir.
			if err := os.WriteFile(path, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			s = openT(t, Config{DataDir: dir})
			got := dump(s.State())
			s.Close()
			if got != want {
				t.Fatalf("state after repairing the snapshot differs")
			}
		})
	}
}

// TestLockHolderChild is the child process of TestLockedByOtherProcess: it
// holds the store open until its stdin closes.
func TestLockHolderChild(t *testing.T) {
	dir := os.Getenv("TANDEM_LOCK_CHILD")
	if dir == "" {
		t.Skip("child process of TestLockedByOtherProcess")
	}
	s, err := Open(Config{DataDir: dir})
	if err != nil {
		fmt.Printf("ERR %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("LOCKED %d\n", os.Getpid())
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := s.Close(); err != nil {
		fmt.Printf("ERR close: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func TestLockedSameProcessNamesPID(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{DataDir: dir})
	_, err := Open(Config{DataDir: dir})
	pid := fmt.Sprintf("process %d", os.Getpid())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), pid) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open: err = %v, want ErrLocked naming %s and %s", err, dir, pid)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Config{DataDir: dir})
	s.Close()
}

func TestLockedByOtherProcess(t *testing.T) {
	dir := t.TempDir()
	start := func() (*exec.Cmd, io.WriteCloser, int) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderChild$", "-test.count=1", "-test.timeout=60s")
		cmd.Env = append(os.Environ(), "TANDEM_LOCK_CHILD="+dir)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		var pid int
		if _, serr := fmt.Sscanf(line, "LOCKED %d", &pid); serr != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %q %v; stderr: %s", line, err, stderr.String())
		}
		if pid != cmd.Process.Pid {
			t.Fatalf("child says pid %d, exec says %d", pid, cmd.Process.Pid)
		}
		go io.Copy(io.Discard, out)
		return cmd, stdin, pid
	}
	wantLocked := func(pid int) {
		t.Helper()
		_, err := Open(Config{DataDir: dir})
		who := fmt.Sprintf("process %d", pid)
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), who) {
			t.Fatalf("Open while the child holds the dir: err = %v, want ErrLocked naming %s", err, who)
		}
		if _, err := OpenLog(dir, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
			t.Fatalf("OpenLog while the child holds the dir: err = %v, want ErrLocked", err)
		}
	}

	// A child that closes the store cleanly releases the dir.
	cmd, stdin, pid := start()
	wantLocked(pid)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	s := openT(t, Config{DataDir: dir})
	s.Close()

	// A child killed while holding the dir releases it too (the kernel drops
	// the flocks): no stale lock, whatever the LOCK file says.
	cmd, stdin, pid = start()
	defer stdin.Close()
	wantLocked(pid)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	s = openT(t, Config{DataDir: dir})
	s.Close()
}

func TestConfigErrorsNameTheField(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cases := []struct {
		field string
		cfg   Config
	}{
		{"data-dir", Config{}},
		{"max-append-entries", Config{DataDir: dir, MaxAppendEntries: -1}},
		{"max-append-entries", Config{DataDir: dir, MaxAppendEntries: 1025}},
		{"snapshot-retain", Config{DataDir: dir, SnapshotRetain: -1}},
		{"snapshot-interval", Config{DataDir: dir, SnapshotInterval: -time.Second}},
		{"snapshot-interval", Config{DataDir: dir, SnapshotInterval: time.Millisecond}},
		{"apply-timeout", Config{DataDir: dir, ApplyTimeout: -time.Second}},
		{"open-timeout", Config{DataDir: dir, OpenTimeout: -time.Second}},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
		s, err := Open(tc.cfg)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%+v) succeeded", tc.cfg)
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Open(%+v): %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	// Several bad fields are all reported.
	err := (&Config{MaxAppendEntries: 5000, OpenTimeout: -1}).Validate()
	for _, f := range []string{"data-dir", "max-append-entries", "open-timeout"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("Validate with three bad fields: %v, does not name %s", err, f)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("an invalid config created the data dir (stat: %v)", err)
	}
	// Good configs, including the boundaries, validate.
	for _, c := range []Config{{DataDir: dir}, {DataDir: dir, MaxAppendEntries: 1024, SnapshotInterval: 5 * time.Millisecond}} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
}
