package raftstore

import (
	"sync"
	"testing"
	"time"
)

// OnApply sees every committed Apply once, with a positive latency.
func TestOnApplyObservesEachCommit(t *testing.T) {
	var mu sync.Mutex
	var seen []time.Duration
	s := openT(t, Config{DataDir: t.TempDir(), OnApply: func(d time.Duration) {
		mu.Lock()
		seen = append(seen, d)
		mu.Unlock()
	}})
	defer s.Close()
	for i := 0; i < 5; i++ {
		if _, err := s.Apply(leaseCmd(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 5 {
		t.Fatalf("OnApply called %d times for 5 applies", len(seen))
	}
	for _, d := range seen {
		if d <= 0 {
			t.Fatalf("latency %v: want > 0 (an fsync happened)", d)
		}
	}
}
