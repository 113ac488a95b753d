// Package fsm is Tandem's lease binding database, written as a deterministic
// state machine: commands in, state out, snapshot and restore.
//
// It owns:
//   - the binding table (one Binding per leasable resource: an IA_NA or IA_TA
//     address, or an IA_PD prefix) with every per-lease field RFC 8156 needs;
//   - the indexes the server and the failover endpoint need: by resource, by
//     client (DUID, IA type, IAID), by state-expiration-time, and the set of
//     bindings with an update owed to the partner;
//   - the failover endpoint's persistent record and the server DUID;
//   - the versioned binary encoding of commands (one command = one raft log
//     entry = one client transaction) and of snapshots.
//
// It must never: import another Tandem package, read a clock (time arrives
// inside each Command), do I/O other than through the io.Writer/io.Reader it is
// handed for snapshots, or let Go map iteration order reach any output. Given
// the same sequence of (index, term, command) the state is the same on every
// machine.
//
// Concurrency: State.Apply and State.Restore are called by one goroutine at a
// time (raft's FSM goroutine). Read methods may be called from any goroutine;
// they take a read lock. Long scans should take a View, an O(1)
// copy-on-write clone that never blocks Apply.
package fsm
