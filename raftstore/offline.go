package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/tandem-dhcp/tandem/fsm"
)

// LogReader reads a data dir's log and snapshots while the daemon is
// stopped. raft.db is opened read-only; it never changes anything.
type LogReader struct {
	dir  string
	logs *raftboltdb.BoltStore
}

// OpenLog opens dataDir read-only, waiting at most timeout for the file lock
// (ErrLocked if a running daemon holds it).
func OpenLog(dataDir string, timeout time.Duration) (*LogReader, error) {
	logs, err := openBolt(filepath.Join(dataDir, logFile), true, timeout)
	if err != nil {
		return nil, err
	}
	return &LogReader{dir: dataDir, logs: logs}, nil
}

// listSnapshots reads snapshots/*/meta.json directly, newest first (raft's
// order: term, index, id). raft's FileSnapshotStore is not used here because
// opening it writes a permission-test file, and an offline reader must not
// write (two readers at once, or a read-only mount, would fail).
func (r *LogReader) listSnapshots() ([]*raft.SnapshotMeta, error) {
	ents, err := os.ReadDir(filepath.Join(r.dir, snapDir))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var metas []*raft.SnapshotMeta
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, snapDir, e.Name(), "meta.json"))
		if err != nil {
			continue // not a finished snapshot
		}
		var m raft.SnapshotMeta
		if err := json.Unmarshal(b, &m); err != nil {
			continue
		}
		metas = append(metas, &m)
	}
	sort.Slice(metas, func(i, j int) bool {
		a, b := metas[i], metas[j]
		if a.Term != b.Term {
			return a.Term > b.Term
		}
		if a.Index != b.Index {
			return a.Index > b.Index
		}
		return a.ID > b.ID
	})
	return metas, nil
}

func (r *LogReader) openSnapshot(id string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(r.dir, snapDir, id, "state.bin"))
}

// Close releases raft.db.
func (r *LogReader) Close() error { return r.logs.Close() }

// SnapshotInfo describes one snapshot kept in the data dir.
type SnapshotInfo struct {
	ID     string
	Index  uint64
	Term   uint64
	Size   int64
	Path   string
	Header *fsm.SnapshotHeader // nil when HeaderErr is set
	// HeaderErr says why the snapshot's header could not be read.
	HeaderErr error
}

// LogInfo summarises a data dir.
type LogInfo struct {
	DataDir    string
	DBBytes    int64
	FirstIndex uint64 // 0 when the log is empty
	LastIndex  uint64
	FirstTime  time.Time // AppendedAt of the first and last entries (zero if unknown)
	LastTime   time.Time
	Snapshots  []SnapshotInfo // newest first
}

// Info returns facts about the log and snapshots.
func (r *LogReader) Info() (*LogInfo, error) {
	in := &LogInfo{DataDir: r.dir}
	if fi, err := os.Stat(filepath.Join(r.dir, logFile)); err == nil {
		in.DBBytes = fi.Size()
	}
	var err error
	if in.FirstIndex, in.LastIndex, err = r.bounds(); err != nil {
		return nil, err
	}
	if in.FirstIndex != 0 {
		// entry recovers from a damaged page; AppendedAt stays zero then.
		// raft's bootstrap configuration entry has no time: take the first that has one.
		for i := in.FirstIndex; i <= in.LastIndex && i < in.FirstIndex+16 && in.FirstTime.IsZero(); i++ {
			in.FirstTime = r.entry(i).AppendedAt
		}
		in.LastTime = r.entry(in.LastIndex).AppendedAt
	}
	in.Snapshots, err = r.Snapshots()
	return in, err
}

// Snapshots lists the kept snapshots, newest first, with their headers.
func (r *LogReader) Snapshots() ([]SnapshotInfo, error) {
	metas, err := r.listSnapshots()
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := make([]SnapshotInfo, 0, len(metas))
	for _, m := range metas {
		si := SnapshotInfo{ID: m.ID, Index: m.Index, Term: m.Term, Size: m.Size,
			Path: filepath.Join(r.dir, snapDir, m.ID, "state.bin")}
		if rc, err := r.openSnapshot(m.ID); err != nil {
			si.HeaderErr = err
		} else {
			si.Header, si.HeaderErr = fsm.ReadSnapshotHeader(rc)
			rc.Close()
		}
		out = append(out, si)
	}
	return out, nil
}

// LogEntry is one decoded log entry. Err is set when the entry could not be
// read or decoded (a damaged entry): the caller reports it and goes on.
type LogEntry struct {
	Index      uint64
	Term       uint64
	Type       raft.LogType
	AppendedAt time.Time
	Cmd        *fsm.Command // for LogCommand entries that decoded
	Err        error
}

// Entries calls fn for each entry with from <= index <= to (clamped to the
// log), in order, until fn returns an error, which Entries returns.
func (r *LogReader) Entries(from, to uint64, fn func(*LogEntry) error) error {
	first, last, err := r.bounds()
	if err != nil {
		return err
	}
	if from < first {
		from = first
	}
	if to == 0 || to > last {
		to = last
	}
	for i := from; i != 0 && i <= to; i++ {
		if err := fn(r.entry(i)); err != nil {
			return err
		}
	}
	return nil
}

// bounds returns the first and last index. bbolt panics on some damaged
// pages (a bad branch page under the cursor); that becomes ErrCorruptLog.
func (r *LogReader) bounds() (first, last uint64, err error) {
	path := filepath.Join(r.dir, logFile)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			first, last, err = 0, 0, corruptLogErr(path, fmt.Errorf("%v", p))
		}
	}()
	if first, err = r.logs.FirstIndex(); err != nil {
		return 0, 0, corruptLogErr(path, err)
	}
	if last, err = r.logs.LastIndex(); err != nil {
		return 0, 0, corruptLogErr(path, err)
	}
	return first, last, nil
}

func (r *LogReader) entry(i uint64) (e *LogEntry) {
	e = &LogEntry{Index: i}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			e.Err = fmt.Errorf("%w: entry %d: %v", ErrCorruptLog, i, p)
		}
	}()
	var l raft.Log
	if err := r.logs.GetLog(i, &l); err != nil {
		e.Err = fmt.Errorf("%w: entry %d: %v", ErrCorruptLog, i, err)
		return e
	}
	e.Term, e.Type, e.AppendedAt = l.Term, l.Type, l.AppendedAt
	if l.Index != i {
		e.Err = fmt.Errorf("%w: entry %d holds index %d", ErrCorruptLog, i, l.Index)
		return e
	}
	if l.Type == raft.LogCommand {
		e.Cmd, e.Err = fsm.DecodeCommand(l.Data)
	}
	return e
}

// ReplayTarget says how far to replay. With both zero, the whole log.
type ReplayTarget struct {
	// LastIndex stops after the entry with this index (0 = no limit).
	LastIndex uint64
	// Until stops before the first command made after this time (zero = no limit).
	Until time.Time
	// Progress, when set, is called after each log entry read with its
	// index and the index the replay reads up to (for a progress display).
	Progress func(index, last uint64)
}

// ReplayResult describes a replay.
type ReplayResult struct {
	State *fsm.State
	// FromSnapshot is the snapshot the replay started from (nil: the empty state).
	FromSnapshot *SnapshotInfo
	// Applied is the number of log entries applied on top of the snapshot.
	Applied int
	// Damaged lists entries that could not be read or decoded (each was skipped).
	Damaged []*LogEntry
}

// Replay rebuilds the database as of target: the newest snapshot at or
// before it, then the log entries after the snapshot up to target. It fails
// with ErrNotReplayable when the log has been compacted past the target.
func (r *LogReader) Replay(target ReplayTarget) (*ReplayResult, error) {
	first, _, err := r.bounds()
	if err != nil {
		return nil, err
	}
	snaps, err := r.Snapshots()
	if err != nil {
		return nil, err
	}
	res := &ReplayResult{State: fsm.New()}
	start := uint64(1)
	for i := range snaps {
		si := &snaps[i]
		if si.HeaderErr != nil {
			continue
		}
		if target.LastIndex != 0 && si.Index > target.LastIndex {
			continue
		}
		if !target.Until.IsZero() && si.Header.LastTime > target.Until.UnixNano() {
			continue
		}
		rc, err := r.openSnapshot(si.ID)
		if err != nil {
			return nil, fmt.Errorf("open snapshot %s: %w", si.Path, err)
		}
		st, _, err := fsm.ReadSnapshot(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", si.Path, err)
		}
		res.State, res.FromSnapshot, start = st, si, si.Index+1
		break
	}
	if first > start {
		return nil, fmt.Errorf("%w: the log now starts at entry %d and no kept snapshot is old enough; the oldest replayable point is the oldest snapshot (see `tandem log info`)",
			ErrNotReplayable, first)
	}
	stop := errors.New("stop")
	_, last, _ := r.bounds()
	if target.LastIndex != 0 && target.LastIndex < last {
		last = target.LastIndex
	}
	err = r.Entries(start, target.LastIndex, func(e *LogEntry) error {
		if target.Progress != nil {
			target.Progress(e.Index, last)
		}
		if e.Err != nil {
			res.Damaged = append(res.Damaged, e)
			return nil
		}
		if e.Cmd == nil {
			return nil
		}
		if !target.Until.IsZero() && e.Cmd.Time > target.Until.UnixNano() {
			return stop
		}
		res.State.Apply(fsm.Entry{Index: e.Index, Term: e.Term, Cmd: e.Cmd})
		res.Applied++
		return nil
	})
	if err != nil && err != stop {
		return nil, err
	}
	return res, nil
}

// OpenSnapshotFile opens a snapshot for reading: either a file in the fsm
// snapshot format, or a raft snapshot directory (containing state.bin).
func OpenSnapshotFile(path string) (io.ReadCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		path = filepath.Join(path, "state.bin")
	}
	return os.Open(path)
}
