package server

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tandem-dhcp/tandem/fsm"
)

// primaryPolicy is Standalone as a failover primary sees delegable
// prefixes: FREE-BACKUP ones are the partner's.
type primaryPolicy struct{ Standalone }

func (primaryPolicy) Available(b *fsm.Binding, _ string) bool { return b.Status == fsm.StatusFree }

// slash56 returns the i-th /56 of pdPrefix counted from the top (0 = highest).
func slash56(i int) fsm.Resource {
	a := pdPrefix.Addr().As16()
	n := 0xffff - i // 16 bits of /56 index below the /40
	a[5], a[6] = byte(n>>8), byte(n)
	return fsm.PrefixResource(netip.PrefixFrom(netip.AddrFrom16(a), 56))
}

func (h *harness) put(bs ...fsm.Binding) {
	h.t.Helper()
	var ops []fsm.Op
	for _, b := range bs {
		ops = append(ops, fsm.Op{Resource: b.Resource, Binding: b})
	}
	if _, err := h.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: h.clk.Now().UnixNano(), Ops: ops}); err != nil {
		h.t.Fatal(err)
	}
}

// TestPrefixPoolsAndCandidates: counts come from the records plus
// arithmetic for unrecorded prefixes; candidates are highest first, skip
// what is not wanted or reserved, and stop at n.
func TestPrefixPoolsAndCandidates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.Policy = primaryPolicy{Standalone{Hold: time.Hour}} })
	fb := fsm.StatusFreeBackup
	h.put(fsm.Binding{Resource: slash56(0), Status: fb}, fsm.Binding{Resource: slash56(5), Status: fb},
		fsm.Binding{Resource: slash56(9), Status: fb},
		fsm.Binding{Resource: slash56(2), Status: fsm.StatusActive, DUID: "x", StartTimeOfState: t0.Unix(), StateExpirationTime: t0.Unix() + 600},
		fsm.Binding{Resource: slash56(3), Status: fsm.StatusFree})
	pp := h.srv.PrefixPools()
	if len(pp) != 1 {
		t.Fatalf("PrefixPools = %+v, want one pool", pp)
	}
	want := PrefixPool{Prefix: pdPrefix, Length: 56, Available: 65536 - 4, FreeBackup: 3}
	if pp[0] != want {
		t.Fatalf("PrefixPools = %+v, want %+v", pp[0], want)
	}

	own := func(b *fsm.Binding) bool { return b.Status == fsm.StatusFree }
	got := h.srv.PrefixCandidates(pdPrefix, netip.Prefix{}, 4, true, own)
	if w := []fsm.Resource{slash56(1), slash56(3), slash56(4), slash56(6)}; !slices.Equal(got, w) {
		t.Fatalf("own candidates = %v, want %v", got, w)
	}
	// A slot a client transaction has reserved is skipped.
	p := h.srv.pools.find(slash56(1))
	slot, _ := p.slotOf(slash56(1))
	if !p.reserve(slot) {
		t.Fatal("reserve")
	}
	got = h.srv.PrefixCandidates(pdPrefix, netip.Prefix{}, 2, true, own)
	p.unreserve(slot)
	if w := []fsm.Resource{slash56(3), slash56(4)}; !slices.Equal(got, w) {
		t.Fatalf("own candidates with slash56(1) reserved = %v, want %v", got, w)
	}
	backup := func(b *fsm.Binding) bool { return b.Status == fsm.StatusFreeBackup }
	got = h.srv.PrefixCandidates(pdPrefix, netip.Prefix{}, 100, false, backup)
	if w := []fsm.Resource{slash56(0), slash56(5), slash56(9)}; !slices.Equal(got, w) {
		t.Fatalf("FREE-BACKUP candidates = %v, want %v", got, w)
	}
	// The lowest prefix of the pool is reachable (the walk ends at slot 0).
	low := fsm.PrefixResource(netip.PrefixFrom(pdPrefix.Addr(), 56))
	h.put(fsm.Binding{Resource: low, Status: fb})
	got = h.srv.PrefixCandidates(pdPrefix, netip.Prefix{}, 100, false, backup)
	if len(got) != 4 || got[3] != low {
		t.Fatalf("FREE-BACKUP candidates = %v, want 4 ending with %v", got, low)
	}
	if got := h.srv.PrefixCandidates(pdPrefix, netip.Prefix{}, 1<<20, true, own); len(got) != MaxPrefixCandidates {
		t.Fatalf("%d candidates, want the cap %d", len(got), MaxPrefixCandidates)
	}
	if got := h.srv.PrefixCandidates(netip.MustParsePrefix("2001:db8:9900::/40"), netip.Prefix{}, 5, true, own); got != nil {
		t.Fatalf("candidates of an unknown pool = %v", got)
	}
	// A walk resumed with below, chunk after chunk, visits what one walk
	// visits, in the same order (records and unrecorded prefixes mixed).
	for _, c := range []struct {
		unrecorded bool
		want       func(*fsm.Binding) bool
	}{{true, own}, {false, backup}} {
		whole := h.srv.PrefixCandidates(pdPrefix, netip.Prefix{}, 40, c.unrecorded, c.want)
		var chunked []fsm.Resource
		var below netip.Prefix
		for len(chunked) < len(whole) {
			part := h.srv.PrefixCandidates(pdPrefix, below, 3, c.unrecorded, c.want)
			if len(part) == 0 {
				break
			}
			chunked = append(chunked, part...)
			below = part[len(part)-1].Prefix()
		}
		if len(chunked) > len(whole) {
			chunked = chunked[:len(whole)]
		}
		if !slices.Equal(chunked, whole) {
			t.Fatalf("chunked walk (unrecorded %v) = %v, want %v", c.unrecorded, chunked, whole)
		}
	}
	if got := h.srv.PrefixCandidates(pdPrefix, low.Prefix(), 5, true, own); got != nil {
		t.Fatalf("candidates below the lowest prefix = %v", got)
	}
}

// partnerPolicy is a failover secondary whose own prefixes are FREE-BACKUP
// and which may use its partner's (FREE or unrecorded) once allowed.
type partnerPolicy struct {
	secondaryPolicy
	allow *atomic.Bool
}

func (p partnerPolicy) PartnerPool() bool { return p.allow.Load() }
func (p partnerPolicy) PartnerAvailable(b *fsm.Binding, _ string) bool {
	return p.allow.Load() && b.Status == fsm.StatusFree
}

// TestPartnerPrefixesOnlyWhenOwnExhausted: a server delegates its own
// prefix first; with its own pool used up it delegates the partner's only
// while Policy.PartnerPool allows it, and then never one already bound.
func TestPartnerPrefixesOnlyWhenOwnExhausted(t *testing.T) {
	t.Parallel()
	allow := &atomic.Bool{}
	small := netip.MustParsePrefix("2001:db8:8000::/54") // four /56s
	h := newHarness(t, func(c *Config) {
		c.Policy = partnerPolicy{secondaryPolicy{Standalone{Hold: time.Hour}}, allow}
		c.Subnets[0].PDPools = []PDPool{{Prefix: small, DelegatedLength: 56}}
		c.RapidCommit = true
	})
	mine := fsm.PrefixResource(netip.MustParsePrefix("2001:db8:8000:100::/56"))
	h.put(fsm.Binding{Resource: mine, Status: fsm.StatusFreeBackup})
	allow.Store(true)
	delegate := func(n int) (netip.Prefix, int) {
		c := newClient(n)
		rep := h.exchange(c.msg(dhcpv6.MessageTypeSolicit, c.pd(), &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}),
			dhcpv6.MessageTypeReply)
		pd := findIAPD(rep, c.pdid)
		if pd == nil {
			t.Fatalf("client %d: no IA_PD in %v", n, rep)
		}
		if ps := pd.Options.Prefixes(); len(ps) == 1 {
			return prefixOf(ps[0]), -1
		}
		return netip.Prefix{}, status(pd.Options)
	}
	if got, _ := delegate(1); got != mine.Prefix() {
		t.Fatalf("first client got %v, want our own %v before any of the partner's", got, mine.Prefix())
	}
	allow.Store(false)
	if got, st := delegate(2); got.IsValid() || st != int(iana.StatusNoPrefixAvail) {
		t.Fatalf("own pool used up, partner's not allowed: got %v status %d, want NoPrefixAvail", got, st)
	}
	allow.Store(true)
	seen := map[netip.Prefix]bool{mine.Prefix(): true}
	for n := 3; n <= 5; n++ {
		got, st := delegate(n)
		if !got.IsValid() || seen[got] || !small.Contains(got.Addr()) {
			t.Fatalf("client %d: got %v (status %d), want a new partner prefix of %v", n, got, st, small)
		}
		seen[got] = true
	}
	if got, st := delegate(6); got.IsValid() || st != int(iana.StatusNoPrefixAvail) {
		t.Fatalf("every prefix bound: got %v status %d, want NoPrefixAvail", got, st)
	}
}

// BenchmarkPrefixPools counts a pool of 2^32 /64s holding 10000 records
// (FREE-BACKUP), and picks 512 prefixes to give: both cost the records,
// not the pool's size.
func BenchmarkPrefixPools(b *testing.B) {
	big := netip.MustParsePrefix("2001:db8::/32")
	h := newHarness(b, func(c *Config) {
		c.Policy = primaryPolicy{Standalone{Hold: time.Hour}}
		c.Subnets[0].PDPools = []PDPool{{Prefix: big, DelegatedLength: 64}}
	})
	for chunk := 0; chunk < 10; chunk++ {
		var bs []fsm.Binding
		for i := 0; i < 1000; i++ {
			a := big.Addr().As16()
			k := chunk*1000 + i
			a[4], a[5], a[6], a[7] = 0x80, 0, byte(k>>8), byte(k)
			bs = append(bs, fsm.Binding{Resource: fsm.PrefixResource(netip.PrefixFrom(netip.AddrFrom16(a), 64)), Status: fsm.StatusFreeBackup})
		}
		h.put(bs...)
	}
	own := func(b *fsm.Binding) bool { return b.Status == fsm.StatusFree }
	b.Run("PrefixPools", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if pp := h.srv.PrefixPools(); pp[0].FreeBackup != 10000 || pp[0].Available != 1<<32-10000 {
				b.Fatalf("%+v", pp)
			}
		}
	})
	b.Run("PrefixCandidates512", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if got := h.srv.PrefixCandidates(big, netip.Prefix{}, 512, true, own); len(got) != 512 {
				b.Fatal(len(got))
			}
		}
	})
}
