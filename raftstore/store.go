package raftstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/fsm"
)

const (
	logFile   = "raft.db"
	snapDir   = "snapshots" // made by raft's FileSnapshotStore inside the dir it is given
	transAddr = "local"     // in-memory transport address; never dialled
)

// Store is one node's durable binding database. Apply, State and the read
// methods are safe for concurrent use; Close must be called once.
type Store struct {
	cfg   Config
	log   *zap.Logger
	lock  *dirLock
	logs  *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore
	state *fsm.State
	raft  *raft.Raft

	// diskFull is set when a log write failed with ENOSPC and cleared by
	// the next stored command. raft steps down after a failed write and
	// elects itself again; Applies meanwhile fail with "not the leader",
	// which this turns back into the disk-full error and its remedy.
	diskFull atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the data dir, replays the snapshot and log into a
// new fsm.State, and returns once the state holds every committed entry. It
// fails with ErrLocked when another process holds the data dir, ErrCorruptLog
// when raft.db is damaged, and fsm.ErrCorruptSnapshot when the newest
// snapshot is.
func Open(cfg Config) (_ *Store, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("raftstore config: %w", err)
	}
	c := cfg.withDefaults()
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", diskErr(err))
	}
	s := &Store{cfg: c, log: c.Logger.With(zap.String("data-dir", c.DataDir)), state: fsm.New()}
	if s.lock, err = lockDir(c.DataDir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// raft must stop before its stores close, or it panics writing to them.
			if s.raft != nil {
				_ = s.raft.Shutdown().Error()
			}
			s.closeFiles()
		}
	}()

	start := time.Now()
	logPath := filepath.Join(c.DataDir, logFile)
	// bbolt turns an empty file into a new, empty database. The snapshots
	// directory is made right after raft.db was first written and synced, so
	// an empty raft.db next to it is a damaged log, not a new one.
	if fi, serr := os.Stat(logPath); serr == nil && fi.Size() == 0 {
		if _, serr := os.Stat(filepath.Join(c.DataDir, snapDir)); serr == nil {
			return nil, corruptLogErr(logPath, errors.New("the file is empty, but this data dir held a log"))
		}
	}
	if s.logs, err = openBolt(logPath, false, c.OpenTimeout); err != nil {
		return nil, err
	}
	hlog := newRaftLogger(c.Logger)
	removeUnfinishedSnapshots(c.DataDir, s.log)
	// raft keeps its snapshots in base/snapshots (= snapDir): pass the data dir.
	if s.snaps, err = raft.NewFileSnapshotStoreWithLogger(c.DataDir, c.SnapshotRetain, hlog); err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", diskErr(err))
	}
	// raft restores the newest snapshot and applies the entries after it:
	// those must all decode.
	applyFrom := uint64(1)
	if metas, lerr := s.snaps.List(); lerr == nil && len(metas) > 0 {
		applyFrom = metas[0].Index + 1
	}
	first, last, err := verifyLog(s.logs, logPath, applyFrom)
	if err != nil {
		return nil, err
	}
	// raft panics when it cannot write its stable store (current term, vote),
	// taking the process down: prove raft.db takes a write before raft starts.
	if err := probeWrite(s.logs, logPath); err != nil {
		return nil, err
	}
	if err := verifyNewestSnapshot(s.snaps, first, last, c.DataDir); err != nil {
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	// A single voter elects itself at once; short timeouts make start fast.
	rc.HeartbeatTimeout = 100 * time.Millisecond
	rc.ElectionTimeout = 100 * time.Millisecond
	rc.LeaderLeaseTimeout = 50 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = c.MaxAppendEntries
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.Logger = hlog

	existing, err := raft.HasExistingState(s.logs, s.logs, s.snaps)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorruptLog, filepath.Join(c.DataDir, logFile), err)
	}
	_, trans := raft.NewInmemTransport(transAddr)
	if !existing {
		conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: transAddr}}}
		if err := raft.BootstrapCluster(rc, s.logs, s.logs, s.snaps, trans, conf); err != nil {
			return nil, fmt.Errorf("bootstrap raft log: %w", diskErr(err))
		}
	}
	adapter := &fsmAdapter{state: s.state, clock: c.Clock}
	if s.raft, err = raft.NewRaft(rc, adapter, s.logs, s.logs, s.snaps, trans); err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if err := s.waitLeader(c.OpenTimeout); err != nil {
		return nil, err
	}
	// Right after leadership the FSM may not hold the log yet: Barrier waits
	// until every entry before it is applied.
	if err := s.raft.Barrier(c.OpenTimeout).Error(); err != nil {
		return nil, fmt.Errorf("replay log into state: %w", err)
	}
	idx, _, _ := s.state.Applied()
	s.log.Info("store open",
		zap.Bool("new", !existing), zap.Uint64("applied-index", idx),
		zap.Int("bindings", s.state.Stats().Bindings), zap.Duration("took", time.Since(start)))
	return s, nil
}

func (s *Store) waitLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for s.raft.State() != raft.Leader {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: raft did not become leader within %v (state %v)", ErrNotStored, timeout, s.raft.State())
		}
		<-tick.C
	}
	return nil
}

// State returns the live binding database. Readers only: every change goes
// through Apply.
func (s *Store) State() *fsm.State { return s.state }

// Apply commits cmd to the log (fsynced, group-committed with concurrent
// callers) and applies it. It returns the entry's index once the change is
// durable and visible in State. An error means the command is not in the
// state: either it was not stored (ErrNotStored, ErrDiskFull, an invalid
// command) or it was stored but had no effect (fsm.ErrConflict: a
// precondition failed).
func (s *Store) Apply(cmd *fsm.Command) (uint64, error) {
	b, err := cmd.Encode()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	start := s.cfg.Clock.Now()
	f := s.raft.Apply(b, s.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		return 0, s.storeErr(err)
	}
	if s.diskFull.Load() && s.diskFull.CompareAndSwap(true, false) {
		s.log.Info("raft log writes again after a full disk")
	}
	if s.cfg.OnApply != nil {
		s.cfg.OnApply(s.cfg.Clock.Now().Sub(start))
	}
	r, ok := f.Response().(*fsm.Result)
	if !ok || r == nil {
		return 0, fmt.Errorf("%w: no result from the state machine", ErrNotStored)
	}
	return r.Index, r.Err
}

func (s *Store) storeErr(err error) error {
	diskFull := fmt.Errorf("%w: %w: free space on the disk holding %s; service resumes by itself", ErrNotStored, ErrDiskFull, s.cfg.DataDir)
	switch {
	case errors.Is(err, syscall.ENOSPC):
		if s.diskFull.CompareAndSwap(false, true) {
			s.log.Error("raft log write failed: disk full: free space on the disk holding the data dir; service resumes by itself", zap.Error(err))
		}
		return diskFull
	case (errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost)) && s.diskFull.Load():
		return diskFull
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrNotStored, ErrClosed)
	}
	return fmt.Errorf("%w: %w", ErrNotStored, err)
}

// Snapshot makes raft take a snapshot now (which also compacts the log) and
// returns its metadata.
func (s *Store) Snapshot() (*raft.SnapshotMeta, error) {
	f := s.raft.Snapshot()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return s.latestSnapshot()
		}
		return nil, fmt.Errorf("snapshot: %w", diskErr(err))
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("open new snapshot: %w", err)
	}
	rc.Close()
	return meta, nil
}

func (s *Store) latestSnapshot() (*raft.SnapshotMeta, error) {
	metas, err := s.snaps.List()
	if err != nil || len(metas) == 0 {
		return nil, fmt.Errorf("list snapshots: %v", err)
	}
	return metas[0], nil
}

// SaveSnapshot writes the current state to w in the fsm snapshot format (a
// consistent point-in-time copy; client service continues meanwhile) and
// returns its header.
func (s *Store) SaveSnapshot(w io.Writer) (*fsm.SnapshotHeader, error) {
	v := s.state.View()
	created := s.cfg.Clock.Now().UnixNano()
	if err := fsm.WriteSnapshot(w, v, created); err != nil {
		return nil, err
	}
	st := v.Stats()
	return &fsm.SnapshotHeader{Version: fsm.SnapshotVersion, Index: st.LastIndex, Term: st.LastTerm,
		LastTime: st.LastTime, Created: created, Count: uint64(st.Bindings), ServerDUID: v.ServerDUID(), Endpoint: v.Endpoint()}, nil
}

// Info describes the store for status output.
type Info struct {
	DataDir       string
	AppliedIndex  uint64
	LastLogIndex  uint64
	FirstLogIndex uint64
	LastSnapshot  *raft.SnapshotMeta // nil if none
	DBBytes       int64
}

// Info returns index and snapshot facts.
func (s *Store) Info() Info {
	in := Info{DataDir: s.cfg.DataDir, AppliedIndex: s.raft.AppliedIndex(), LastLogIndex: s.raft.LastIndex()}
	in.FirstLogIndex, _ = s.logs.FirstIndex()
	if metas, err := s.snaps.List(); err == nil && len(metas) > 0 {
		in.LastSnapshot = metas[0]
	}
	if fi, err := os.Stat(filepath.Join(s.cfg.DataDir, logFile)); err == nil {
		in.DBBytes = fi.Size()
	}
	return in
}

// Close stops raft and releases the data dir. Pending Applies fail with ErrNotStored.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.raft != nil {
			s.closeErr = s.raft.Shutdown().Error()
		}
		if err := s.closeFiles(); s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

func (s *Store) closeFiles() error {
	var errs []error
	if s.logs != nil {
		errs = append(errs, s.logs.Close())
		s.logs = nil
	}
	errs = append(errs, s.lock.unlock())
	return errors.Join(errs...)
}

// diskErr marks ENOSPC errors as ErrDiskFull.
func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}

// openBolt opens raft.db; bbolt may panic on a damaged file, which becomes ErrCorruptLog.
func openBolt(path string, readOnly bool, timeout time.Duration) (st *raftboltdb.BoltStore, err error) {
	// After a panic inside bbolt.Open there is no *bbolt.DB to close, so keep
	// the file bbolt opened, unlock and close it here: otherwise its flock
	// blocks every later open of raft.db in this process (closing alone is not
	// enough, bbolt's memory map keeps the open file description alive; the
	// mapping itself stays until the process exits).
	var file *os.File
	openFile := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err == nil {
			file = f
		}
		return f, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if file != nil {
				_ = syscall.Flock(int(file.Fd()), syscall.LOCK_UN)
				_ = file.Close()
			}
			st, err = nil, corruptLogErr(path, fmt.Errorf("%v", p))
		}
	}()
	if readOnly {
		fi, err := os.Stat(path)
		if err != nil {
			if os.IsNotExist(err) {
				return nil, fmt.Errorf("%w: %s does not exist (is this a Tandem data dir?)", ErrNoData, path)
			}
			return nil, err
		}
		if fi.Size() == 0 {
			return nil, corruptLogErr(path, errors.New("the file is empty"))
		}
	}
	st, err = raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: timeout, ReadOnly: readOnly, OpenFile: openFile},
	})
	switch {
	case err == nil:
		return st, nil
	case errors.Is(err, bbolt.ErrTimeout):
		return nil, fmt.Errorf("%w: %s is locked by a running process: stop tandem first (offline tools need the daemon stopped), or ask it through its control socket",
			ErrLocked, path)
	case errors.Is(err, syscall.ENOSPC):
		return nil, diskErr(err)
	case errors.Is(err, bbolt.ErrInvalid), errors.Is(err, bbolt.ErrVersionMismatch), errors.Is(err, bbolt.ErrChecksum):
		return nil, corruptLogErr(path, err)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return nil, err
	}
	return nil, corruptLogErr(path, err)
}

func corruptLogErr(path string, cause error) error {
	return fmt.Errorf("%w: %s: %v: move it aside (mv %s %s.damaged) and restore the latest snapshot with `tandem snapshot restore FILE --data-dir %s`",
		ErrCorruptLog, path, cause, path, path, filepath.Dir(path))
}

// Keys raft reads from the stable store (hashicorp/raft api.go).
var stableKeys = []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}

// probeKey is written (and read back) at every Open: see probeWrite.
var probeKey = []byte("tandem-open-probe")

// probeWrite writes and reads back one stable-store key. A raft.db that
// opens but cannot be written (a damaged file that bbolt maps, a full disk)
// gives ErrCorruptLog or ErrDiskFull here instead of a panic inside raft.
func probeWrite(logs *raftboltdb.BoltStore, path string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corruptLogErr(path, fmt.Errorf("write probe: %v", p))
		}
	}()
	v := uint64(time.Now().UnixNano())
	if err := logs.SetUint64(probeKey, v); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("open %s: %w", path, diskErr(err))
		}
		return corruptLogErr(path, fmt.Errorf("write probe: %v", err))
	}
	if got, err := logs.GetUint64(probeKey); err != nil || got != v {
		return corruptLogErr(path, fmt.Errorf("write probe read back %d, %v", got, err))
	}
	return nil
}

// verifyLog reads every entry and the stable store keys once, so a damaged
// raft.db is reported here and not by a panic inside raft later, and checks
// that every command from index applyFrom on (the ones raft will apply)
// decodes: the fsm would skip a damaged one, silently losing its change. It
// returns the first and last index.
func verifyLog(logs *raftboltdb.BoltStore, path string, applyFrom uint64) (first, last uint64, err error) {
	// A damaged page can make bbolt follow a pointer out of its memory map;
	// make that fault a panic (recovered below) instead of a fatal error.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corruptLogErr(path, fmt.Errorf("%v", p))
		}
	}()
	for _, k := range stableKeys {
		if _, err := logs.Get([]byte(k)); err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
			return 0, 0, corruptLogErr(path, fmt.Errorf("stable store key %s: %v", k, err))
		}
	}
	if first, err = logs.FirstIndex(); err != nil {
		return 0, 0, corruptLogErr(path, err)
	}
	if last, err = logs.LastIndex(); err != nil {
		return 0, 0, corruptLogErr(path, err)
	}
	var l raft.Log
	for i := first; i != 0 && i <= last; i++ {
		if err := logs.GetLog(i, &l); err != nil {
			return 0, 0, corruptLogErr(path, fmt.Errorf("entry %d: %v", i, err))
		}
		if l.Index != i {
			return 0, 0, corruptLogErr(path, fmt.Errorf("entry %d holds index %d", i, l.Index))
		}
		if i >= applyFrom && l.Type == raft.LogCommand {
			if _, err := fsm.DecodeCommand(l.Data); err != nil {
				if errors.Is(err, fsm.ErrUnsupportedVersion) {
					return 0, 0, fmt.Errorf("%s: entry %d: %w", path, i, err)
				}
				return 0, 0, corruptLogErr(path, fmt.Errorf("entry %d: %v", i, err))
			}
		}
	}
	return first, last, nil
}

// removeUnfinishedSnapshots deletes the snapshot directories a crash left
// half written (raft writes snapshots/<id>.tmp and renames it when complete,
// and never looks at a .tmp again). Only the data dir's lock holder writes
// snapshots, so at Open every .tmp is garbage; left alone, each crash during
// a snapshot would leak up to a whole snapshot of disk space.
func removeUnfinishedSnapshots(dataDir string, log *zap.Logger) {
	tmps, _ := filepath.Glob(filepath.Join(dataDir, snapDir, "*.tmp"))
	for _, d := range tmps {
		if err := os.RemoveAll(d); err != nil {
			log.Warn("cannot remove unfinished snapshot", zap.String("path", d), zap.Error(err))
			continue
		}
		log.Info("removed unfinished snapshot left by a crash", zap.String("path", d))
	}
}

// verifyNewestSnapshot checks the newest snapshot's checksum and that the log
// continues from it, so raft never silently falls back to an older state.
func verifyNewestSnapshot(snaps *raft.FileSnapshotStore, first, last uint64, dataDir string) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots in %s: %w", filepath.Join(dataDir, snapDir), err)
	}
	if len(metas) == 0 {
		if first > 1 {
			return fmt.Errorf("%w: the log starts at entry %d but there is no snapshot in %s: restore a snapshot with `tandem snapshot restore`",
				ErrCorruptLog, first, filepath.Join(dataDir, snapDir))
		}
		return nil
	}
	m := metas[0]
	path := filepath.Join(dataDir, snapDir, m.ID, "state.bin")
	remedy := fmt.Sprintf("move the directory %s aside to start from the previous snapshot and the log, or restore a good snapshot with `tandem snapshot restore`",
		filepath.Dir(path))
	_, rc, err := snaps.Open(m.ID)
	if err != nil {
		return fmt.Errorf("%w: %s: %v: %s", fsm.ErrCorruptSnapshot, path, err, remedy)
	}
	info := fsm.InspectSnapshot(rc)
	rc.Close()
	if info.Err != nil {
		return fmt.Errorf("snapshot %s: %w: %s", path, info.Err, remedy)
	}
	if first > m.Index+1 && last != 0 {
		return fmt.Errorf("%w: the log starts at entry %d, after the newest snapshot's index %d: entries are missing; restore a snapshot with `tandem snapshot restore`",
			ErrCorruptLog, first, m.Index)
	}
	return nil
}
