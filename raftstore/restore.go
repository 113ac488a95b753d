package raftstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"

	"github.com/tandem-dhcp/tandem/fsm"
)

// ErrNotDataDir: Restore was pointed at a directory that holds files but is
// not a Tandem data dir; it refuses to move it.
var ErrNotDataDir = errors.New("not a Tandem data dir")

// RestoreResult says what Restore did.
type RestoreResult struct {
	// Header is the header of the snapshot installed (after the edit).
	Header *fsm.SnapshotHeader
	// Previous is where the old data dir now is ("" if there was none).
	Previous string
	// Swapped is true when the old and new data dirs were exchanged in one
	// atomic rename (Linux renameat2 RENAME_EXCHANGE), false when the
	// filesystem needed two renames.
	Swapped bool
}

// restoreStep, when set (tests only), is called at each step of Restore
// with the step's name; a child process of the crash test exits there.
var restoreStep func(step string)

func step(name string) {
	if restoreStep != nil {
		restoreStep(name)
	}
}

// Restore replaces the data dir cfg.DataDir by a new one whose state is the
// fsm snapshot read from r: a fresh raft log (empty, current term = the
// snapshot's term) and the snapshot installed in the raft snapshot store at
// its raft index, so Open restores it and continues the log after it. edit,
// if not nil, may change the header's ServerDUID and Endpoint on the way in
// (see fsm.CopySnapshot).
//
// Nothing is changed unless the whole snapshot verifies and the new data dir
// is complete and fsynced. The old data dir is never deleted: it is renamed
// to DataDir.before-restore-<UTC time> (RestoreResult.Previous). The new dir
// is built as DataDir.restore-<UTC time>.tmp next to it and exchanged with
// the old one in a single atomic rename, so a crash at any point leaves
// DataDir either the old data or the complete new data. Only on filesystems
// without RENAME_EXCHANGE are two renames used; a crash between them leaves
// no DataDir at all (the old data is in .before-restore-*, the new one in
// the .tmp dir, both whole). A leftover .restore-*.tmp dir is never used
// again and may be deleted once DataDir opens.
//
// The old data dir is locked for the whole time (ErrLocked, naming the PID,
// while a daemon runs on it). A directory that holds files but no raft.db and
// no snapshots/ is refused (ErrNotDataDir), never moved.
func Restore(cfg Config, r io.Reader, edit func(*fsm.SnapshotHeader)) (_ *RestoreResult, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("raftstore config: %w", err)
	}
	c := cfg.withDefaults()
	dir := filepath.Clean(c.DataDir)
	parent := filepath.Dir(dir)

	exists := false
	switch fi, serr := os.Stat(dir); {
	case serr == nil && !fi.IsDir():
		return nil, fmt.Errorf("%w: %s is a file: give the data dir (data-dir in the configuration)", ErrNotDataDir, dir)
	case serr == nil:
		exists = true
		if err := checkDataDir(dir); err != nil {
			return nil, err
		}
		lk, err := lockDir(dir)
		if err != nil {
			return nil, err
		}
		defer lk.unlock()
	case os.IsNotExist(serr):
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", parent, diskErr(err))
		}
	default:
		return nil, serr
	}

	ts := c.Clock.Now().UTC().Format("20060102T150405.000Z")
	tmp := dir + ".restore-" + ts + ".tmp"
	prev := dir + ".before-restore-" + ts
	for _, p := range []string{tmp, prev} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("restore: %s already exists: try again in a moment", p)
		}
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", tmp, diskErr(err))
	}
	step("created tmp")
	defer func() {
		if err != nil && tmp != "" {
			_ = os.RemoveAll(tmp)
		}
	}()
	h, err := buildRestored(c, tmp, r, edit)
	if err != nil {
		return nil, err
	}
	step("built")

	res := &RestoreResult{Header: h}
	if !exists {
		if err := os.Rename(tmp, dir); err != nil {
			return nil, fmt.Errorf("move %s to %s: %w", tmp, dir, err)
		}
		tmp = ""
		return res, syncDir(parent)
	}
	res.Previous = prev
	xerr := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	switch {
	case xerr == nil:
		res.Swapped = true
		step("exchanged")
		// tmp now holds the old data: from here on it must never be removed.
		old := tmp
		tmp = ""
		if err := os.Rename(old, prev); err != nil {
			return nil, fmt.Errorf("restored, but the old data stays in %s (rename to %s: %v)", old, prev, err)
		}
	case errors.Is(xerr, syscall.EINVAL), errors.Is(xerr, syscall.ENOSYS), errors.Is(xerr, syscall.EOPNOTSUPP):
		if err := os.Rename(dir, prev); err != nil {
			return nil, fmt.Errorf("move the old data dir %s to %s: %w", dir, prev, err)
		}
		step("moved old")
		if err := os.Rename(tmp, dir); err != nil {
			return nil, fmt.Errorf("the old data is in %s, the restored one in %s: rename it to %s by hand (%v)", prev, tmp, dir, err)
		}
		tmp = ""
	default:
		return nil, fmt.Errorf("swap %s with the restored data dir: %w", dir, xerr)
	}
	step("renamed")
	return res, syncDir(parent)
}

// checkDataDir refuses a non-empty directory that is not a Tandem data dir.
func checkDataDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) == 0 {
		return nil
	}
	for _, n := range []string{logFile, snapDir} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: %s holds files but neither %s nor %s/: check --data-dir (Restore moves the whole directory aside)",
		ErrNotDataDir, dir, logFile, snapDir)
}

// buildRestored makes a complete data dir in dir (new and empty) from the
// snapshot read from r and fsyncs it.
func buildRestored(c Config, dir string, r io.Reader, edit func(*fsm.SnapshotHeader)) (*fsm.SnapshotHeader, error) {
	// The raft snapshot is created at the snapshot's index and term, so the
	// header must be known before the body is copied.
	br := bufio.NewReaderSize(r, 1<<16)
	peek, _ := br.Peek(4096)
	h, err := fsm.ReadSnapshotHeader(bytes.NewReader(peek))
	if err != nil {
		return nil, err
	}
	if h.Index == 0 {
		return nil, fmt.Errorf("%w: the snapshot is at raft index 0 (it holds no history): nothing to restore; start the daemon on an empty data dir instead",
			fsm.ErrCorruptSnapshot)
	}

	logPath := filepath.Join(dir, logFile)
	logs, err := openBolt(logPath, false, c.OpenTimeout)
	if err != nil {
		return nil, err
	}
	// raft would otherwise start at term 0 with a snapshot of a later term.
	err = logs.SetUint64([]byte("CurrentTerm"), h.Term)
	if cerr := logs.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", logPath, diskErr(err))
	}

	hlog := hclog.NewNullLogger()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hlog)
	if err != nil {
		return nil, fmt.Errorf("create snapshot store: %w", diskErr(err))
	}
	_, trans := raft.NewInmemTransport(transAddr)
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(c.NodeID), Address: transAddr}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, h.Index, h.Term, conf, h.Index, trans)
	if err != nil {
		return nil, fmt.Errorf("create snapshot: %w", diskErr(err))
	}
	out, err := fsm.CopySnapshot(sink, br, edit)
	if err != nil {
		_ = sink.Cancel()
		return nil, diskErr(err)
	}
	step("copied")
	if err := sink.Close(); err != nil { // fsyncs state.bin and meta.json, renames, fsyncs snapshots/
		return nil, fmt.Errorf("finish snapshot: %w", diskErr(err))
	}
	// Read back what was written, as Open will: raft's CRC-64, then ours.
	_, rc, err := snaps.Open(sink.ID())
	if err != nil {
		return nil, fmt.Errorf("%w: restored snapshot does not read back: %v", fsm.ErrCorruptSnapshot, err)
	}
	info := fsm.InspectSnapshot(rc)
	rc.Close()
	if info.Err != nil {
		return nil, fmt.Errorf("restored snapshot does not verify: %w", info.Err)
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return out, nil
}

// syncDir fsyncs a directory, making the entries created or renamed in it durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, diskErr(err))
	}
	return nil
}

// CheckUnlocked returns ErrLocked (naming the PID) when a process holds
// dataDir, and nil when nobody does or dataDir does not exist. It is for
// offline tools that want to refuse early; Restore checks again.
func CheckUnlocked(dataDir string) error {
	if _, err := os.Stat(filepath.Join(dataDir, "LOCK")); err != nil {
		return nil
	}
	lk, err := lockDir(dataDir)
	if err != nil {
		return err
	}
	return lk.unlock()
}
