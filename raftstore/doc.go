// Package raftstore persists one node's binding history through a local,
// single-node hashicorp/raft log (raft-boltdb for the log and stable store, a
// file snapshot store), and applies it to an fsm.State.
//
// It owns: opening the data dir (with an exclusive lock), bootstrapping on
// first start, waiting until the state machine holds the whole log (Barrier)
// before anyone reads it, group-committed Apply from many goroutines,
// threshold snapshots and log compaction, user snapshots, offline, read-only
// access to the log for inspection and replay, and Restore: a new data dir
// built from a snapshot and swapped in atomically, the old one kept aside.
//
// Commit latency is reported through Config.OnApply (a plain func, so this
// package does not depend on a metrics library).
//
// It must never: know about DHCP or failover, open a network port (the raft
// transport is in-memory; a single voter sends no RPCs), or report a command as
// applied before it is fsynced. Any Apply error means "not stored".
//
// The raft log is this node's alone; the failover partner is reached only
// through RFC 8156 (package failover).
//
// Data dir layout:
//
//	LOCK         flock held by the running process (holds its PID)
//	raft.db      bbolt: raft log and stable store
//	snapshots/   raft file snapshot store (each: meta.json + state.bin, the fsm snapshot format)
package raftstore
