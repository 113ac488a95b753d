package raftstore

import "errors"

// Sentinel errors, wrapped with the path and what to do.
var (
	// ErrLocked: another process holds the data dir.
	ErrLocked = errors.New("data dir in use")
	// ErrCorruptLog: raft.db cannot be read.
	ErrCorruptLog = errors.New("raft log damaged")
	// ErrDiskFull: the disk holding the data dir is full.
	ErrDiskFull = errors.New("disk full")
	// ErrNotStored: the command was not committed (store closed, stepping
	// down after a write error, timed out enqueueing). Nothing was changed.
	ErrNotStored = errors.New("command not stored")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrNoData: no raft log in the data dir.
	ErrNoData = errors.New("no raft log")
	// ErrNotReplayable: the requested point lies before the oldest snapshot or log entry kept.
	ErrNotReplayable = errors.New("point not replayable")
)
