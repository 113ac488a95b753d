package link

import (
	"sync"
	"time"

	"github.com/tandem-dhcp/tandem/internal/clock"
)

// Log rate limiting for what strangers and hostile peers make the
// secondary log: one line per key (source IP and reason) per interval.
const (
	// DefaultLogInterval is how often one source may make the link log the
	// same kind of refused connection.
	DefaultLogInterval = time.Minute
	// maxRateKeys bounds the limiter's memory. When every slot is taken by
	// a key logged within the interval (a flood from many sources), new
	// keys share the overflowKey entry: still one line per interval, with
	// the suppressed count of all of them.
	maxRateKeys = 4096
	overflowKey = "*"
)

// rateLog lets through one event per key per interval and counts the
// events it holds back, so that the next event let through can report how
// many were suppressed. Time comes from the clock; no goroutine, no timer.
// Safe for concurrent use.
type rateLog struct {
	clk      clock.Clock
	interval time.Duration

	mu   sync.Mutex
	keys map[string]*rateEntry
}

type rateEntry struct {
	last       time.Time // when an event under this key was last let through
	suppressed uint64    // events held back since then
}

func newRateLog(clk clock.Clock, interval time.Duration) *rateLog {
	return &rateLog{clk: clk, interval: interval, keys: map[string]*rateEntry{}}
}

// allow reports whether an event under key may be logged now, and if so how
// many events under the same key were suppressed since the last one logged.
// The returned key is key, or overflowKey when the table is full.
func (r *rateLog) allow(key string) (ok bool, suppressed uint64, as string) {
	now := r.clk.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.keys[key]
	if e == nil && len(r.keys) >= maxRateKeys {
		for k, v := range r.keys {
			if now.Sub(v.last) >= r.interval { // a suppressed count this old is dropped
				delete(r.keys, k)
			}
		}
		if len(r.keys) >= maxRateKeys {
			key = overflowKey
			e = r.keys[key]
		}
	}
	if e == nil {
		r.keys[key] = &rateEntry{last: now}
		return true, 0, key
	}
	if now.Sub(e.last) < r.interval {
		e.suppressed++
		return false, 0, key
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n, key
}
