package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-dhcp/tandem/fsm"
)

// restoreFixture makes a source store with n leases and returns its snapshot
// (fsm format, as `tandem snapshot save` writes it), its dump and its index;
// and an "old" data dir (closed) holding other leases.
func restoreFixture(t *testing.T, n int) (snap []byte, srcDump string, srcIndex uint64, oldDir, oldDump string) {
	t.Helper()
	src := openT(t, Config{DataDir: t.TempDir(), SnapshotThreshold: 64, TrailingLogs: 16})
	writeLeases(t, src, n)
	if _, err := src.Apply(&fsm.Command{Type: fsm.CmdSetEndpoint, Endpoint: &fsm.EndpointState{State: 6, Communicated: true}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	h, err := src.SaveSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	srcDump, srcIndex = dump(src.State()), h.Index
	src.Close()

	oldDir = filepath.Join(t.TempDir(), "data")
	old := openT(t, Config{DataDir: oldDir})
	for i := 5000; i < 5010; i++ {
		if _, err := old.Apply(leaseCmd(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	oldDump = dump(old.State())
	old.Close()
	return buf.Bytes(), srcDump, srcIndex, oldDir, oldDump
}

// openDump opens dir, returns its dump (with the restore hold not shown:
// callers check the endpoint record) and applied index, and closes it.
func openDump(t *testing.T, dir string) (string, uint64, fsm.EndpointState) {
	t.Helper()
	s := openT(t, Config{DataDir: dir})
	defer s.Close()
	idx, _, _ := s.State().Applied()
	return strings.Replace(dump(s.State()), "HeldInStartup:true", "HeldInStartup:false", 1), idx, s.State().Endpoint()
}

func held(h *fsm.SnapshotHeader) { h.Endpoint.HeldInStartup = true }

func TestRestoreReplacesDataDir(t *testing.T) {
	snap, srcDump, srcIndex, dir, oldDump := restoreFixture(t, 300)
	res, err := Restore(Config{DataDir: dir}, bytes.NewReader(snap), held)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Swapped || res.Previous != dir+".before-restore-"+strings.TrimPrefix(res.Previous, dir+".before-restore-") || res.Header.Index != srcIndex {
		t.Fatalf("result %+v (index %d), want swapped, previous next to %s, index %d", res, res.Header.Index, dir, srcIndex)
	}
	got, idx, ep := openDump(t, dir)
	if got != srcDump || idx != srcIndex {
		t.Fatalf("restored: index %d (want %d), bindings equal %v", idx, srcIndex, got == srcDump)
	}
	if !ep.HeldInStartup || ep.State != 6 || !ep.Communicated {
		t.Fatalf("restored endpoint record %+v: want the source's, held", ep)
	}
	if got, _, _ := openDump(t, res.Previous); got != oldDump {
		t.Fatalf("the old data dir moved to %s does not hold the old data", res.Previous)
	}
	if m, _ := filepath.Glob(dir + ".restore-*"); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}

	// The log continues after the snapshot, and survives a restart.
	s := openT(t, Config{DataDir: dir})
	i, err := s.Apply(leaseCmd(9000, 0))
	if err != nil || i <= srcIndex {
		t.Fatalf("apply after restore: index %d (snapshot %d), %v", i, srcIndex, err)
	}
	want := strings.Replace(dump(s.State()), "HeldInStartup:true", "HeldInStartup:false", 1)
	s.Close()
	if got, idx, _ := openDump(t, dir); got != want || idx != i {
		t.Fatalf("after reopen: index %d want %d, equal %v", idx, i, got == want)
	}
}

func TestRestoreIntoNewDir(t *testing.T) {
	snap, srcDump, srcIndex, _, _ := restoreFixture(t, 50)
	dir := filepath.Join(t.TempDir(), "a", "b", "data")
	res, err := Restore(Config{DataDir: dir}, bytes.NewReader(snap), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Previous != "" {
		t.Fatalf("previous %q for a dir that did not exist", res.Previous)
	}
	got, idx, ep := openDump(t, dir)
	if got != srcDump || idx != srcIndex || ep.HeldInStartup {
		t.Fatalf("restored index %d want %d, equal %v, held %v", idx, srcIndex, got == srcDump, ep.HeldInStartup)
	}
}

// TestRestoreRefusals: a damaged snapshot, a locked data dir and a directory
// that is not a data dir are refused, and nothing on disk changes.
func TestRestoreRefusals(t *testing.T) {
	snap, _, _, dir, oldDump := restoreFixture(t, 100)
	unchanged := func(what string) {
		t.Helper()
		if got, _, _ := openDump(t, dir); got != oldDump {
			t.Fatalf("%s: the old data dir changed", what)
		}
		if m, _ := filepath.Glob(dir + ".*"); len(m) != 0 {
			t.Fatalf("%s: left behind %v", what, m)
		}
	}
	for _, off := range []int{20, len(snap) / 2, len(snap) - 3} {
		bad := append([]byte(nil), snap...)
		bad[off] ^= 0x10
		if _, err := Restore(Config{DataDir: dir}, bytes.NewReader(bad), held); !errors.Is(err, fsm.ErrCorruptSnapshot) {
			t.Fatalf("damage at %d: err %v, want ErrCorruptSnapshot", off, err)
		}
		unchanged(fmt.Sprintf("damage at %d", off))
	}
	if _, err := Restore(Config{DataDir: dir}, bytes.NewReader(snap[:len(snap)/3]), held); !errors.Is(err, fsm.ErrCorruptSnapshot) {
		t.Fatalf("truncated: %v", err)
	}
	unchanged("truncated")

	s := openT(t, Config{DataDir: dir})
	_, err := Restore(Config{DataDir: dir}, bytes.NewReader(snap), held)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", os.Getpid())) {
		t.Fatalf("locked: err %v, want ErrLocked naming this process", err)
	}
	if err := CheckUnlocked(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("CheckUnlocked while open: %v", err)
	}
	s.Close()
	if err := CheckUnlocked(dir); err != nil {
		t.Fatalf("CheckUnlocked after close: %v", err)
	}
	unchanged("locked")

	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "precious.txt"), []byte("x"), 0o600)
	if _, err := Restore(Config{DataDir: other}, bytes.NewReader(snap), nil); !errors.Is(err, ErrNotDataDir) {
		t.Fatalf("not a data dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, "precious.txt")); err != nil {
		t.Fatalf("a foreign dir was touched: %v", err)
	}
}

// TestRestoreCrashChild is the child of TestRestoreCrash: it restores and
// exits (no deferred cleanup, like a crash) at the step named in its env.
func TestRestoreCrashChild(t *testing.T) {
	at := os.Getenv("TANDEM_RESTORE_CRASH_AT")
	if at == "" {
		t.Skip("child process of TestRestoreCrash")
	}
	restoreStep = func(s string) {
		if s == at {
			os.Exit(3)
		}
	}
	f, err := os.Open(os.Getenv("TANDEM_RESTORE_SNAP"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Restore(Config{DataDir: os.Getenv("TANDEM_RESTORE_DIR")}, f, held); err != nil {
		t.Fatal(err)
	}
	os.Exit(0)
}

// TestRestoreCrash kills a restore (a real process exit, no cleanup) after
// each of its steps: the data dir then opens and holds either the old data
// or the whole restored data, and the old data is always kept somewhere.
func TestRestoreCrash(t *testing.T) {
	snap, srcDump, _, dir0, oldDump := restoreFixture(t, 200)
	snapPath := filepath.Join(t.TempDir(), "snap.bin")
	if err := os.WriteFile(snapPath, snap, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"created tmp", "copied", "built", "exchanged", "renamed"} {
		t.Run(step, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.Rename(cloneDir(t, dir0), dir); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestRestoreCrashChild$", "-test.count=1", "-test.timeout=60s")
			cmd.Env = append(os.Environ(), "TANDEM_RESTORE_CRASH_AT="+step, "TANDEM_RESTORE_SNAP="+snapPath, "TANDEM_RESTORE_DIR="+dir)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("child did not stop at %q: %v\n%s", step, err, out)
			}
			swapped := step == "exchanged" || step == "renamed"
			want := oldDump
			if swapped {
				want = srcDump
			}
			if got, _, _ := openDump(t, dir); got != want {
				t.Fatalf("after a crash at %q the data dir holds neither the old nor the restored data (want restored: %v)", step, swapped)
			}
			if !swapped {
				return
			}
			// The old data is kept: in .before-restore-*, or (crash right
			// after the exchange) in the .restore-*.tmp dir.
			keep, _ := filepath.Glob(dir + ".before-restore-*")
			if step == "exchanged" {
				keep, _ = filepath.Glob(dir + ".restore-*.tmp")
			}
			if len(keep) != 1 {
				t.Fatalf("old data not found after a crash at %q: %v", step, keep)
			}
			if got, _, _ := openDump(t, keep[0]); got != oldDump {
				t.Fatalf("%s does not hold the old data", keep[0])
			}
		})
	}
}
