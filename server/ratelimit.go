package server

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Rate is a token-bucket limit: Per events per second on average, up to
// Burst at once. The zero Rate is no limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Enabled reports whether the rate limits anything.
func (r Rate) Enabled() bool { return r.PerSecond > 0 }

func (r Rate) String() string {
	if !r.Enabled() {
		return "off"
	}
	return fmt.Sprintf("%g/s burst %d", r.PerSecond, r.Burst)
}

const (
	// rateLimitShards spreads the limiter's lock; each shard holds
	// RateLimitEntries/rateLimitShards sources.
	rateLimitShards = 16
	// rateLimitLogInterval: each limited source is logged at most once per
	// interval, with the number of packets dropped since its last line.
	rateLimitLogInterval = time.Minute
)

// rateLimiter is a token bucket per source key (a client DUID, a relay
// address), in a bounded LRU per shard.
//
// Invariants: at most maxEntries buckets exist. A bucket idle for
// Burst/PerSecond is full again, which is the same as having none, so such
// buckets are removed first; when a shard is full of busier ones, its least
// recently seen bucket is dropped: that source starts again with a full
// burst. Memory is bounded and a new source is never refused because the
// table is full (the limiter fails open; rotating DUIDs gets a flooder fresh
// buckets, which is what the relay limit and the worker queue bound).
// Safe for concurrent use; each shard has its own mutex.
type rateLimiter struct {
	kind   string // "client" or "relay", for logs
	rate   Rate
	refill time.Duration // time to refill an empty bucket
	perSh  int
	seed   maphash.Seed
	shards [rateLimitShards]rlShard
}

type rlShard struct {
	mu  sync.Mutex
	m   map[string]*list.Element // value: *rlBucket
	lru list.List                // front: most recently seen
}

type rlBucket struct {
	key     string
	tokens  float64
	last    time.Time // last refill
	dropped uint64    // drops not yet logged
	logged  time.Time // last log line (zero: never)
}

func newRateLimiter(kind string, r Rate, maxEntries int) *rateLimiter {
	if !r.Enabled() {
		return nil
	}
	if r.Burst < 1 {
		r.Burst = 1
	}
	l := &rateLimiter{kind: kind, rate: r, seed: maphash.MakeSeed(),
		refill: time.Duration(float64(r.Burst) / r.PerSecond * float64(time.Second)),
		perSh:  max(1, maxEntries/rateLimitShards)}
	for i := range l.shards {
		l.shards[i].m = map[string]*list.Element{}
	}
	return l
}

// rlReport is what allow asks the caller to log about a limited source.
type rlReport struct {
	dropped uint64 // packets dropped since the previous line, this one included
}

// allow takes a token from key's bucket at now. When there is none it
// returns false, and a report when the source is due a log line.
// key is only read (a lookup does not copy it; a new bucket does).
func (l *rateLimiter) allow(key []byte, now time.Time) (bool, *rlReport) {
	sh := &l.shards[maphash.Bytes(l.seed, key)%rateLimitShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var b *rlBucket
	if e, ok := sh.m[string(key)]; ok {
		b = e.Value.(*rlBucket)
		sh.lru.MoveToFront(e)
		if d := now.Sub(b.last); d > 0 {
			b.tokens = min(float64(l.rate.Burst), b.tokens+d.Seconds()*l.rate.PerSecond)
			b.last = now
		}
	} else {
		l.evict(sh, now)
		b = &rlBucket{key: string(key), tokens: float64(l.rate.Burst), last: now}
		sh.m[b.key] = sh.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, nil
	}
	b.dropped++
	if !b.logged.IsZero() && now.Sub(b.logged) < rateLimitLogInterval {
		return false, nil
	}
	r := &rlReport{dropped: b.dropped}
	b.dropped, b.logged = 0, now
	return false, r
}

// evict makes room for one bucket in sh: buckets idle long enough to be full
// again go first (a few per call, so the sweep follows the clock without a
// goroutine), then, if sh is still full, the least recently seen one.
func (l *rateLimiter) evict(sh *rlShard, now time.Time) {
	remove := func(e *list.Element) {
		sh.lru.Remove(e)
		delete(sh.m, e.Value.(*rlBucket).key)
	}
	for i := 0; i < 4; i++ {
		e := sh.lru.Back()
		if e == nil || now.Sub(e.Value.(*rlBucket).last) < l.refill {
			break
		}
		remove(e)
	}
	if len(sh.m) >= l.perSh {
		remove(sh.lru.Back())
	}
}

// len is the number of buckets held (tests).
func (l *rateLimiter) len() int {
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += len(l.shards[i].m)
		l.shards[i].mu.Unlock()
	}
	return n
}

// limitKeys finds, without parsing the whole message, what the limits are
// keyed by: whether b is relayed, and the client key: the Client ID option's
// DUID (a slice of b), or for a message without one addrKeyPrefix and the
// client's address (the innermost relay's peer-address, or src for a direct
// client), built in scratch. ok is false when b is too malformed to tell;
// the full parser then rejects it.
func limitKeys(b []byte, src netip.Addr, scratch *[len(addrKeyPrefix) + 16]byte) (relayed bool, client []byte, ok bool) {
	const relayForw, relayHeader, clientHeader = 12, 34, 4
	const optClientID, optRelayMsg = 1, 9
	peer := src.As16()
	for hops := 0; len(b) > 0 && b[0] == relayForw; hops++ {
		relayed = true
		if hops == maxRelayHops || len(b) < relayHeader {
			return relayed, nil, false
		}
		peer = [16]byte(b[18:34])
		inner, found := findOption(b[relayHeader:], optRelayMsg)
		if !found {
			return relayed, nil, false
		}
		b = inner
	}
	if len(b) < clientHeader {
		return relayed, nil, false
	}
	if duid, found := findOption(b[clientHeader:], optClientID); found {
		return relayed, duid, true
	}
	n := copy(scratch[:], addrKeyPrefix)
	copy(scratch[n:], peer[:])
	return relayed, scratch[:], true
}

// addrKeyPrefix starts the client key of a message without a Client ID.
const addrKeyPrefix = "addr:"

// findOption returns the data of the first option code in the option area opts.
func findOption(opts []byte, code uint16) ([]byte, bool) {
	for len(opts) >= 4 {
		c, n := binary.BigEndian.Uint16(opts), int(binary.BigEndian.Uint16(opts[2:]))
		if len(opts) < 4+n {
			return nil, false
		}
		if c == code {
			return opts[4 : 4+n], true
		}
		opts = opts[4+n:]
	}
	return nil, false
}

// admit applies the relay and client limits to the datagram b from src. It
// is the first thing done with a packet (before the worker queue in Serve),
// and costs a walk over the option headers, not a parse, and one bucket per
// limit (BenchmarkAdmit). A packet over a limit is counted in
// pkt6-limit-exceeded and dropped.
func (s *Server) admit(b []byte, src netip.Addr) bool {
	if s.relayLimit == nil && s.clientLimit == nil {
		return true
	}
	now := s.clock.Now()
	var scratch [len(addrKeyPrefix) + 16]byte
	relayed, client, ok := limitKeys(b, src, &scratch)
	if relayed && s.relayLimit != nil {
		a := src.As16()
		if allowed, rep := s.relayLimit.allow(a[:], now); !allowed {
			s.metrics.inc(mLimitExceeded)
			if rep != nil {
				s.logLimited(s.relayLimit, rep, zap.String("relay", src.String()))
			}
			return false
		}
	}
	if ok && s.clientLimit != nil {
		if allowed, rep := s.clientLimit.allow(client, now); !allowed {
			s.metrics.inc(mLimitExceeded)
			if rep != nil {
				f := zap.String("client-duid", fmt.Sprintf("%x", client))
				if a, isAddr := bytes.CutPrefix(client, []byte(addrKeyPrefix)); isAddr && len(a) == 16 {
					f = zap.String("client-address", netip.AddrFrom16([16]byte(a)).String())
				}
				s.logLimited(s.clientLimit, rep, f, zap.String("src", src.String()))
			}
			return false
		}
	}
	return true
}

// logLimited logs a source a limit is dropping (at most once per
// rateLimitLogInterval per source: rep says it is due).
func (s *Server) logLimited(l *rateLimiter, rep *rlReport, fields ...zap.Field) {
	s.log.Warn("rate limit exceeded: dropping packets", append(fields, zap.String("limit", l.kind),
		zap.String("rate", l.rate.String()), zap.Uint64("dropped", rep.dropped),
		zap.Duration("next-report-after", rateLimitLogInterval))...)
}
