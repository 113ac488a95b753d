package server

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-dhcp/tandem/internal/clock"
)

// TestRateLimiterTokenBucket: a burst is admitted at once, then one packet
// per 1/rate; an idle source is full again after burst/rate.
func TestRateLimiterTokenBucket(t *testing.T) {
	l := newRateLimiter("client", Rate{PerSecond: 10, Burst: 5}, 1024)
	now := t0
	for i := 0; i < 5; i++ {
		if ok, _ := l.allow([]byte("a"), now); !ok {
			t.Fatalf("packet %d of the burst refused", i)
		}
	}
	ok, rep := l.allow([]byte("a"), now)
	if ok || rep == nil || rep.dropped != 1 {
		t.Fatalf("6th packet: ok %v report %+v, want refused with a report of 1 drop", ok, rep)
	}
	if ok, _ := l.allow([]byte("b"), now); !ok {
		t.Fatal("another source is limited by a's bucket")
	}
	now = now.Add(99 * time.Millisecond)
	if ok, _ := l.allow([]byte("a"), now); ok {
		t.Fatal("a token after 99ms at 10/s")
	}
	now = now.Add(time.Millisecond)
	if ok, _ := l.allow([]byte("a"), now); !ok {
		t.Fatal("no token after 100ms at 10/s")
	}
	if ok, _ := l.allow([]byte("a"), now); ok {
		t.Fatal("two tokens after 100ms at 10/s")
	}
	now = now.Add(time.Hour)
	for i := 0; i < 5; i++ {
		if ok, _ := l.allow([]byte("a"), now); !ok {
			t.Fatalf("after an idle hour, packet %d of the burst refused", i)
		}
	}
}

// TestRateLimiterReportsOncePerInterval: the first drop is reported, the
// next ones within rateLimitLogInterval are only counted, and the next
// report carries their number.
func TestRateLimiterReportsOncePerInterval(t *testing.T) {
	l := newRateLimiter("relay", Rate{PerSecond: 1, Burst: 1}, 1024)
	now := t0
	l.allow([]byte("r"), now)
	if _, rep := l.allow([]byte("r"), now); rep == nil || rep.dropped != 1 {
		t.Fatalf("first drop: report %+v", rep)
	}
	for i := 0; i < 100; i++ {
		if _, rep := l.allow([]byte("r"), now); rep != nil {
			t.Fatalf("drop %d within the interval reported again", i)
		}
	}
	now = now.Add(rateLimitLogInterval)
	l.allow([]byte("r"), now) // refilled: admitted
	if _, rep := l.allow([]byte("r"), now); rep == nil || rep.dropped != 101 {
		t.Fatalf("drop after the interval: report %+v, want 101 dropped", rep)
	}
}

// TestRateLimiterBounded: a flood of distinct sources (a client rotating
// DUIDs) never holds more than the cap; idle sources are evicted by the
// clock; eviction never refuses a new source.
func TestRateLimiterBounded(t *testing.T) {
	const maxEntries = 256
	l := newRateLimiter("client", Rate{PerSecond: 1, Burst: 2}, maxEntries)
	now := t0
	for i := 0; i < 100000; i++ {
		if ok, _ := l.allow(fmt.Appendf(nil, "duid-%d", i), now); !ok {
			t.Fatalf("new source %d refused", i)
		}
		if i%1000 == 0 {
			now = now.Add(time.Millisecond)
		}
	}
	if n := l.len(); n > maxEntries {
		t.Fatalf("%d buckets after 100000 sources, cap %d", n, maxEntries)
	}
	// Busy sources stay limited while rotating DUIDs pass by, as long as
	// the table has room for them.
	l = newRateLimiter("client", Rate{PerSecond: 1, Burst: 1}, maxEntries)
	l.allow([]byte("busy"), now)
	for i := 0; i < 5; i++ {
		l.allow(fmt.Appendf(nil, "other-%d", i), now)
	}
	if ok, _ := l.allow([]byte("busy"), now); ok {
		t.Fatal("busy source admitted twice with a burst of 1")
	}
	// Below the cap, the clock sweeps: after burst/rate every bucket is
	// full again (the same as none), and new sources push them out.
	l = newRateLimiter("client", Rate{PerSecond: 1, Burst: 2}, 1<<20)
	for i := 0; i < 1000; i++ {
		l.allow(fmt.Appendf(nil, "early-%d", i), now)
	}
	now = now.Add(2 * time.Second)
	for i := 0; i < 1000; i++ {
		l.allow(fmt.Appendf(nil, "late-%d", i), now)
	}
	if n := l.len(); n > 1100 {
		t.Fatalf("%d buckets: the 1000 idle ones were not swept", n)
	}
}

// TestLimitKeys: the keys are found by walking option headers, for direct
// and relayed messages, with and without a Client ID.
func TestLimitKeys(t *testing.T) {
	c := newClient(7)
	src := addr("fe80::99")
	var scratch [len(addrKeyPrefix) + 16]byte
	relayed, key, ok := limitKeys(c.solicit().ToBytes(), src, &scratch)
	if relayed || !ok || string(key) != c.key() {
		t.Fatalf("direct Solicit: relayed %v key %x ok %v", relayed, key, ok)
	}
	fw := relayForw(t, c.solicit(), addr("2001:db8:2::1"), addr("fe80::7"), "")
	fw2, err := dhcpv6.EncapsulateRelay(fw, dhcpv6.MessageTypeRelayForward, addr("2001:db8:3::1").AsSlice(), addr("fe80::8").AsSlice())
	if err != nil {
		t.Fatal(err)
	}
	relayed, key, ok = limitKeys(fw2.ToBytes(), src, &scratch)
	if !relayed || !ok || string(key) != c.key() {
		t.Fatalf("twice relayed Solicit: relayed %v key %x ok %v", relayed, key, ok)
	}
	ir, _ := dhcpv6.NewMessage()
	ir.MessageType = dhcpv6.MessageTypeInformationRequest
	relayed, key, ok = limitKeys(relayForw(t, ir, addr("2001:db8:2::1"), addr("fe80::7"), "").ToBytes(), src, &scratch)
	if !relayed || !ok || string(key) != addrKeyPrefix+string(addr("fe80::7").AsSlice()) {
		t.Fatalf("relayed Information-Request without Client ID: relayed %v key %q ok %v", relayed, key, ok)
	}
	for _, b := range [][]byte{{12, 0, 1}, {1, 0}, append([]byte{12}, make([]byte, 40)...), {12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 9, 1}} {
		if _, _, ok := limitKeys(b, src, &scratch); ok {
			t.Errorf("% x: ok, want not ok", b)
		}
	}
}

// TestClientFloodLimited drives the real Handle: one client flooding
// Solicits is held to its burst plus its rate, counted and logged once,
// while other clients (directly and through a relay) get their leases; a
// relay over its own limit is dropped whatever its clients.
func TestClientFloodLimited(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	h := newHarness(t, func(c *Config) {
		c.ClientRate = Rate{PerSecond: 10, Burst: 20}
		c.RelayRate = Rate{PerSecond: 100, Burst: 50}
		c.Logger = zap.New(core)
	})
	flooder := newClient(1)
	answered, limited := 0, 0
	for i := 0; i < 1000; i++ {
		_, err := h.try(flooder.solicit(), linkInfo)
		switch {
		case err == nil:
			answered++
		case errors.Is(err, ErrRateLimited) && errors.Is(err, ErrDropped):
			limited++
		default:
			t.Fatalf("flood Solicit %d: %v", i, err)
		}
	}
	if answered != 20 || limited != 980 {
		t.Fatalf("flood at a standstill clock: %d answered, %d limited; want the burst of 20 answered", answered, limited)
	}
	if got := h.metric("pkt6-limit-exceeded"); got != 980 {
		t.Errorf("pkt6-limit-exceeded = %d, want 980", got)
	}
	if got := h.metric("pkt6-receive-drop"); got != 0 {
		t.Errorf("pkt6-receive-drop = %d: rate-limited packets are counted apart", got)
	}
	if n := logs.FilterMessage("rate limit exceeded: dropping packets").Len(); n != 1 {
		t.Errorf("%d log lines for one flooding client, want 1", n)
	}
	// Other clients are not affected.
	for i := 2; i < 12; i++ {
		c := newClient(i)
		adv := h.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
		h.exchange(c.msg(dhcpv6.MessageTypeRequest, h.sid(), c.ia(leasedAddr(t, adv, c.iaid))), dhcpv6.MessageTypeReply)
	}
	// The flooder gets 10 more per second of (fake) time.
	h.clk.Advance(time.Second)
	answered = 0
	for i := 0; i < 100; i++ {
		if _, err := h.try(flooder.solicit(), linkInfo); err == nil {
			answered++
		}
	}
	if answered != 10 {
		t.Errorf("after 1s, %d answered, want 10", answered)
	}

	// A relay: 50 at once, whatever the clients behind it.
	relayInfo := PacketInfo{IfIndex: 2, IfName: "eth0", Src: netip.AddrPortFrom(addr("2001:db8:ff::1"), 547), Dst: addr("2001:db8::53")}
	ok := 0
	for i := 100; i < 200; i++ {
		c := newClient(i)
		fw := relayForw(t, c.solicit(), subnet2.Addr().Next(), addr("fe80::1"), "")
		if _, _, err := h.handle(fw.ToBytes(), relayInfo); err == nil {
			ok++
		} else if !errors.Is(err, ErrRateLimited) {
			t.Fatalf("relayed Solicit: %v", err)
		}
	}
	if ok != 50 {
		t.Errorf("relay burst 50: %d of 100 clients answered", ok)
	}
	if n := logs.FilterField(zap.String("relay", "2001:db8:ff::1")).Len(); n != 1 {
		t.Errorf("%d log lines for the relay, want 1", n)
	}
	// Another relay has its own bucket.
	other := relayInfo
	other.Src = netip.AddrPortFrom(addr("2001:db8:ff::2"), 547)
	fw := relayForw(t, newClient(300).solicit(), subnet2.Addr().Next(), addr("fe80::1"), "")
	if _, _, err := h.handle(fw.ToBytes(), other); err != nil {
		t.Fatalf("a second relay is limited by the first one's bucket: %v", err)
	}
}

// TestRateLimitOffByDefault: the zero Config limits nothing.
func TestRateLimitOffByDefault(t *testing.T) {
	h := newHarness(t)
	c := newClient(1)
	for i := 0; i < 500; i++ {
		h.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
	}
	if h.srv.clientLimit != nil || h.srv.relayLimit != nil || h.metric("pkt6-limit-exceeded") != 0 {
		t.Fatal("a limiter is on in the zero Config")
	}
}

// BenchmarkAdmit measures the limits' cost per packet on the reader
// goroutine: key extraction and one bucket, for a relayed Solicit from one
// of 10,000 clients.
//
//	go test -run '^$' -bench BenchmarkAdmit ./server/
func BenchmarkAdmit(b *testing.B) {
	s := &Server{clock: clock.NewFake(t0), log: zap.NewNop(), metrics: newMetrics(),
		clientLimit: newRateLimiter("client", Rate{PerSecond: 10, Burst: 50}, 65536)}
	pkts := make([][]byte, 10000)
	for i := range pkts {
		pkts[i] = relayForw(b, newClient(i).solicit(), subnet2.Addr().Next(), addr("fe80::1"), "").ToBytes()
	}
	src := addr("2001:db8:ff::1")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.admit(pkts[i%len(pkts)], src)
	}
}
