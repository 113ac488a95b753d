package raftstore

import (
	"bufio"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// fsmAdapter presents an fsm.State to raft. raft calls Apply, ApplyBatch,
// Snapshot and Restore from its single FSM goroutine; Persist runs on
// another goroutine over an immutable fsm.View.
type fsmAdapter struct {
	state *fsm.State
	clock clock.Clock
}

var (
	_ raft.FSM         = (*fsmAdapter)(nil)
	_ raft.BatchingFSM = (*fsmAdapter)(nil)
)

// entry turns a raft log into an fsm entry. Logs that are not commands (the
// bootstrap configuration, leader no-ops, barriers) carry nothing for the fsm:
// ok is false and they are skipped. A command that does not decode becomes an
// entry with DecodeErr, which the fsm records without changing any binding.
func entry(l *raft.Log) (fsm.Entry, bool) {
	if l.Type != raft.LogCommand {
		return fsm.Entry{}, false
	}
	cmd, err := fsm.DecodeCommand(l.Data)
	return fsm.Entry{Index: l.Index, Term: l.Term, Cmd: cmd, DecodeErr: err}, true
}

func (a *fsmAdapter) Apply(l *raft.Log) interface{} {
	e, ok := entry(l)
	if !ok {
		return nil
	}
	return a.state.Apply(e)
}

func (a *fsmAdapter) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	es := make([]fsm.Entry, 0, len(logs))
	pos := make([]int, 0, len(logs))
	for i, l := range logs {
		if e, ok := entry(l); ok {
			es = append(es, e)
			pos = append(pos, i)
		}
	}
	for j, r := range a.state.ApplyBatch(es) {
		out[pos[j]] = r
	}
	return out
}

func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{view: a.state.View(), created: a.clock.Now().UnixNano()}, nil
}

func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if _, err := a.state.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	return nil
}

type fsmSnapshot struct {
	view    *fsm.View
	created int64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 1<<20)
	err := fsm.WriteSnapshot(w, s.view, s.created)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
