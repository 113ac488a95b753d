package raftstore

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/internal/clock"
)

// Config configures a Store. Zero fields take the defaults below.
type Config struct {
	// DataDir holds raft.db, snapshots/ and LOCK. Required.
	DataDir string
	// NodeID is this node's raft server ID; it must not change across
	// restarts of one data dir. Default "tandem".
	NodeID string

	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one. Default 16384.
	SnapshotThreshold uint64
	// SnapshotInterval is how often raft checks the threshold. Default 30s.
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries are kept after a snapshot (log
	// compaction removes older ones). Default 10240: enough to answer
	// "what happened recently" from the log alone.
	TrailingLogs uint64
	// SnapshotRetain is how many snapshots are kept. Default 3.
	SnapshotRetain int

	// MaxAppendEntries is the largest group commit (entries per fsync). Default 256.
	MaxAppendEntries int
	// ApplyTimeout bounds how long Apply waits to enqueue a command. Default 10s.
	ApplyTimeout time.Duration
	// OpenTimeout bounds waiting for the raft.db file lock and for
	// leadership at start. Default 5s.
	OpenTimeout time.Duration

	// Logger receives structured logs (raft's own logs are forwarded). Default: no-op.
	Logger *zap.Logger
	// Clock stamps snapshots and times Apply. Default clock.Real.
	Clock clock.Clock
	// OnApply, if set, is told how long each Apply whose entry was committed
	// took (a txn the state machine refused with a conflict included: it is
	// in the log), from submission until the entry was fsynced and applied:
	// the commit latency, group-commit wait included. It runs on Apply's caller's
	// goroutine, so it must be fast and safe for concurrent use
	// (cmd/tandem feeds a Prometheus histogram).
	OnApply func(time.Duration)
}

func (c *Config) withDefaults() Config {
	o := *c
	if o.NodeID == "" {
		o.NodeID = "tandem"
	}
	if o.SnapshotThreshold == 0 {
		o.SnapshotThreshold = 16384
	}
	if o.SnapshotInterval == 0 {
		o.SnapshotInterval = 30 * time.Second
	}
	if o.TrailingLogs == 0 {
		o.TrailingLogs = 10240
	}
	if o.SnapshotRetain == 0 {
		o.SnapshotRetain = 3
	}
	if o.MaxAppendEntries == 0 {
		o.MaxAppendEntries = 256
	}
	if o.ApplyTimeout == 0 {
		o.ApplyTimeout = 10 * time.Second
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	return o
}

// Validate reports the first bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: required"))
	}
	if c.MaxAppendEntries < 0 || c.MaxAppendEntries > 1024 {
		errs = append(errs, fmt.Errorf("max-append-entries: %d out of range 1..1024", c.MaxAppendEntries))
	}
	if c.SnapshotRetain < 0 {
		errs = append(errs, fmt.Errorf("snapshot-retain: %d must be at least 1", c.SnapshotRetain))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"snapshot-interval", c.SnapshotInterval}, {"apply-timeout", c.ApplyTimeout}, {"open-timeout", c.OpenTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v must not be negative", d.name, d.v))
		}
	}
	if c.SnapshotInterval > 0 && c.SnapshotInterval < 5*time.Millisecond {
		// raft refuses less, with an error that names its own field.
		errs = append(errs, fmt.Errorf("snapshot-interval: %v is below the minimum of 5ms", c.SnapshotInterval))
	}
	return errors.Join(errs...)
}
