package server

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tandem-dhcp/tandem/fsm"
)

// TestSolicitAdvertiseCommitsNothing: an Advertise offers an address of the
// pool with the right identifiers and lifetimes, and nothing is stored.
func TestSolicitAdvertiseCommitsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	before := h.dump()
	c := newClient(1)
	adv := h.exchange(c.solicit(c.pd()), dhcpv6.MessageTypeAdvertise)
	a := leasedAddr(t, adv, c.iaid)
	if !inPool(a, pool1) {
		t.Fatalf("advertised %v, not in pool %v-%v", a, pool1.First, pool1.Last)
	}
	ia := findIANA(adv, c.iaid)
	if x := iaAddr(ia, a); x.PreferredLifetime != prefLT || x.ValidLifetime != validLT {
		t.Fatalf("advertised lifetimes %v/%v, want %v/%v", x.PreferredLifetime, x.ValidLifetime, prefLT, validLT)
	}
	if ppd := findIAPD(adv, c.pdid); ppd == nil || len(ppd.Options.Prefixes()) != 1 {
		t.Fatalf("Advertise IA_PD = %v, want one prefix", ppd)
	}
	if adv.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
		t.Fatal("Advertise carries Rapid Commit")
	}
	if h.bindings() != 0 || h.dump() != before {
		t.Fatalf("Solicit committed something: %d bindings\n%s", h.bindings(), h.dump())
	}
	if _, ok := h.get(fsm.AddrResource(fsm.IANA, a)); ok {
		t.Fatal("advertised address has a binding")
	}
	if got := h.metric("pkt6-advertise-sent"); got != 1 {
		t.Errorf("pkt6-advertise-sent = %d", got)
	}
	if got := h.metric("pkt6-solicit-received"); got != 1 {
		t.Errorf("pkt6-solicit-received = %d", got)
	}
	// The same Solicit again offers the same address: the offer reserved nothing.
	adv2 := h.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
	if a2 := leasedAddr(t, adv2, c.iaid); !inPool(a2, pool1) {
		t.Fatalf("second advertise %v", a2)
	}
}

// TestRequestCommitsBinding: a Request built from the Advertise gets the
// advertised address and prefix, committed as ACTIVE bindings, with the
// configured lifetimes and one T1/T2 across IA_NA and IA_PD.
func TestRequestCommitsBinding(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(7)
	adv := h.exchange(c.solicit(c.pd()), dhcpv6.MessageTypeAdvertise)
	advAddr := leasedAddr(t, adv, c.iaid)
	advPD := prefixOf(findIAPD(adv, c.pdid).Options.Prefixes()[0])
	req, err := dhcpv6.NewRequestFromAdvertise(adv)
	if err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(2 * time.Second)
	now := t0.Add(2 * time.Second)
	rep := h.exchange(req, dhcpv6.MessageTypeReply)
	a := leasedAddr(t, rep, c.iaid)
	if a != advAddr {
		t.Fatalf("Reply address %v, advertised %v", a, advAddr)
	}
	ia := findIANA(rep, c.iaid)
	x := iaAddr(ia, a)
	if x.PreferredLifetime != prefLT || x.ValidLifetime != validLT {
		t.Fatalf("lifetimes %v/%v, want %v/%v", x.PreferredLifetime, x.ValidLifetime, prefLT, validLT)
	}
	ipd := findIAPD(rep, c.pdid)
	if ipd == nil || len(ipd.Options.Prefixes()) != 1 {
		t.Fatalf("Reply IA_PD = %v", ipd)
	}
	px := ipd.Options.Prefixes()[0]
	p := prefixOf(px)
	if p != advPD || p.Bits() != 56 || !pdPrefix.Contains(p.Addr()) {
		t.Fatalf("delegated %v (advertised %v), want a /56 of %v", p, advPD, pdPrefix)
	}
	if px.PreferredLifetime != prefLT || px.ValidLifetime != validLT {
		t.Fatalf("prefix lifetimes %v/%v", px.PreferredLifetime, px.ValidLifetime)
	}
	if ia.T1 != t1Conf || ia.T2 != t2Conf || ipd.T1 != ia.T1 || ipd.T2 != ia.T2 {
		t.Fatalf("T1/T2: IA_NA %v/%v, IA_PD %v/%v; want %v/%v in both", ia.T1, ia.T2, ipd.T1, ipd.T2, t1Conf, t2Conf)
	}
	if status(ia.Options) != -1 && status(ia.Options) != int(iana.StatusSuccess) {
		t.Fatalf("IA_NA status %d", status(ia.Options))
	}
	for _, tc := range []struct {
		r    fsm.Resource
		iaid [4]byte
	}{{fsm.AddrResource(fsm.IANA, a), c.iaid}, {fsm.PrefixResource(p), c.pdid}} {
		b, ok := h.get(tc.r)
		if !ok {
			t.Fatalf("%v not stored", tc.r)
		}
		if b.Status != fsm.StatusActive || b.DUID != c.key() || b.IAID != iaidOf(tc.iaid) {
			t.Fatalf("%v: status %v duid %x iaid %#x; want ACTIVE %x %#x", tc.r, b.Status, b.DUID, b.IAID, c.key(), iaidOf(tc.iaid))
		}
		if b.StateExpirationTime != now.Add(validLT).Unix() || b.CLTT != now.Unix() || b.StartTimeOfState != now.Unix() {
			t.Fatalf("%v: sexp %d cltt %d stos %d; want %d %d %d", tc.r, b.StateExpirationTime, b.CLTT, b.StartTimeOfState,
				now.Add(validLT).Unix(), now.Unix(), now.Unix())
		}
		if b.PreferredLifetime != uint32(prefLT/time.Second) || b.ValidLifetime != uint32(validLT/time.Second) {
			t.Fatalf("%v: stored lifetimes %d/%d", tc.r, b.PreferredLifetime, b.ValidLifetime)
		}
	}
	if h.bindings() != 2 {
		t.Fatalf("%d bindings, want 2", h.bindings())
	}
	if got := h.metric("pkt6-reply-sent"); got != 1 {
		t.Errorf("pkt6-reply-sent = %d", got)
	}
	// The DNS servers the client asked for (ORO) come along.
	if dns := rep.Options.DNS(); len(dns) != 1 || !dns[0].Equal(net.IP(dnsAddr.AsSlice())) {
		t.Errorf("Reply DNS = %v, want [%v]", dns, dnsAddr)
	}
	// Repeating the Request (a retransmission) gives the same lease again.
	rep2 := h.exchange(req, dhcpv6.MessageTypeReply)
	if a2 := leasedAddr(t, rep2, c.iaid); a2 != a || h.bindings() != 2 {
		t.Fatalf("retransmitted Request: %v, %d bindings", a2, h.bindings())
	}
}

// TestRapidCommit: with rapid commit on, a Solicit with Rapid Commit gets a
// committed Reply; without the option, or with rapid commit off, an Advertise.
func TestRapidCommit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RapidCommit = true })
	c := newClient(1)
	rep := h.exchange(c.solicit(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}), dhcpv6.MessageTypeReply)
	if rep.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
		t.Fatal("Reply to a rapid Solicit lacks Rapid Commit")
	}
	a := leasedAddr(t, rep, c.iaid)
	if b, ok := h.get(fsm.AddrResource(fsm.IANA, a)); !ok || b.Status != fsm.StatusActive || b.DUID != c.key() {
		t.Fatalf("rapid commit binding = %+v, %v", b, ok)
	}
	c2 := newClient(2)
	h.exchange(c2.solicit(), dhcpv6.MessageTypeAdvertise)
	if h.bindings() != 1 {
		t.Fatalf("plain Solicit committed: %d bindings", h.bindings())
	}

	off := newHarness(t)
	adv := off.exchange(c.solicit(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}), dhcpv6.MessageTypeAdvertise)
	if adv.GetOneOption(dhcpv6.OptionRapidCommit) != nil || off.bindings() != 0 {
		t.Fatalf("rapid commit off: Advertise has Rapid Commit or %d bindings", off.bindings())
	}
}

// TestClientsGetOwnAddresses: two clients get different addresses, and a
// client that solicits again is offered the address it holds.
func TestClientsGetOwnAddresses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.Preference = 200 })
	c1, c2 := newClient(1), newClient(2)
	a1, a2 := h.lease(c1), h.lease(c2)
	if a1 == a2 {
		t.Fatalf("both clients got %v", a1)
	}
	adv := h.exchange(c1.solicit(), dhcpv6.MessageTypeAdvertise)
	if got := leasedAddr(t, adv, c1.iaid); got != a1 {
		t.Fatalf("client 1 solicits again and is offered %v, holds %v", got, a1)
	}
	if adv.Options.Preference() != 200 {
		t.Errorf("Advertise preference %d, want 200", adv.Options.Preference())
	}
	// Soliciting with the other client's address as a hint does not take it.
	m := c2.msg(dhcpv6.MessageTypeSolicit, c2.ia(a1))
	adv = h.exchange(m, dhcpv6.MessageTypeAdvertise)
	if got := leasedAddr(t, adv, c2.iaid); got != a2 {
		t.Fatalf("client 2 hinting client 1's address is offered %v, want its own %v", got, a2)
	}
	// A free address as a hint is honoured.
	hint := addr("2001:db8:1::1abc")
	c3 := newClient(3)
	adv = h.exchange(c3.msg(dhcpv6.MessageTypeSolicit, c3.ia(hint)), dhcpv6.MessageTypeAdvertise)
	if got := leasedAddr(t, adv, c3.iaid); got != hint {
		t.Fatalf("hint %v: offered %v", hint, got)
	}
	// An off-link hint is not offered.
	adv = h.exchange(c3.msg(dhcpv6.MessageTypeSolicit, c3.ia(addr("2001:db8:99::1"))), dhcpv6.MessageTypeAdvertise)
	if got := leasedAddr(t, adv, c3.iaid); !inPool(got, pool1) {
		t.Fatalf("off-link hint: offered %v", got)
	}
}

// shrinkingPolicy is Standalone whose grants are capped at cap once set
// (as the failover MCLT cap does in COMMUNICATIONS-INTERRUPTED).
type shrinkingPolicy struct {
	Standalone
	cap *time.Duration
}

func (p shrinkingPolicy) Grant(_ time.Time, _ *fsm.Binding, desired time.Duration) time.Duration {
	if *p.cap > 0 {
		return min(desired, *p.cap)
	}
	return desired
}

// TestRenewShorterKeepsPromisedEnd: a renewal that gives the client less
// than its earlier lease still had (chaos finding 4: a partner's renewal
// under the MCLT cap after a full one) tells the client the shorter
// lifetime, but the record keeps the earlier end: the client may never get
// the Reply, and the lease must not be freed before the end it was given.
// A later renewal beyond it moves the end on as usual.
func TestRenewShorterKeepsPromisedEnd(t *testing.T) {
	t.Parallel()
	var capped time.Duration
	h := newHarness(t, func(c *Config) { c.Policy = shrinkingPolicy{Standalone{Hold: time.Hour}, &capped} })
	c := newClient(1)
	a := h.lease(c)
	r := fsm.AddrResource(fsm.IANA, a)
	b0, _ := h.get(r)
	h.clk.Advance(time.Minute)
	capped = 10 * time.Second
	rep := h.exchange(c.msg(dhcpv6.MessageTypeRenew, h.sid(), c.ia(a)), dhcpv6.MessageTypeReply)
	if x := iaAddr(findIANA(rep, c.iaid), a); x == nil || x.ValidLifetime != 10*time.Second {
		t.Fatalf("capped Renew told the client %v, want 10s", x)
	}
	b, _ := h.get(r)
	if b.StateExpirationTime != b0.StateExpirationTime || b.ValidLifetime != 10 || b.CLTT != unix(time.Minute) {
		t.Fatalf("after the capped Renew: end %d (was %d), valid %d, cltt %d; want the earlier end kept, valid 10, cltt now",
			b.StateExpirationTime, b0.StateExpirationTime, b.ValidLifetime, b.CLTT)
	}
	capped = 0
	h.clk.Advance(time.Hour)
	h.exchange(c.msg(dhcpv6.MessageTypeRenew, h.sid(), c.ia(a)), dhcpv6.MessageTypeReply)
	if b, _ = h.get(r); b.StateExpirationTime != unix(time.Hour+time.Minute+validLT) {
		t.Fatalf("full Renew: end %d, want %d", b.StateExpirationTime, unix(time.Hour+time.Minute+validLT))
	}
}

// TestRenewExtends: a Renew an hour later extends the lease from then.
func TestRenewExtends(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	a := h.lease(c)
	b0, _ := h.get(fsm.AddrResource(fsm.IANA, a))
	h.clk.Advance(time.Hour)
	rep := h.exchange(c.msg(dhcpv6.MessageTypeRenew, h.sid(), c.ia(a)), dhcpv6.MessageTypeReply)
	if got := leasedAddr(t, rep, c.iaid); got != a {
		t.Fatalf("Renew gave %v, want %v", got, a)
	}
	ia := findIANA(rep, c.iaid)
	if x := iaAddr(ia, a); x.ValidLifetime != validLT || x.PreferredLifetime != prefLT || ia.T1 != t1Conf || ia.T2 != t2Conf {
		t.Fatalf("Renew: lifetimes %v/%v T1/T2 %v/%v", x.PreferredLifetime, x.ValidLifetime, ia.T1, ia.T2)
	}
	b, _ := h.get(fsm.AddrResource(fsm.IANA, a))
	if b.StateExpirationTime != unix(time.Hour+validLT) || b.StateExpirationTime == b0.StateExpirationTime {
		t.Fatalf("expiry %d -> %d, want %d", b0.StateExpirationTime, b.StateExpirationTime, unix(time.Hour+validLT))
	}
	if b.CLTT != unix(time.Hour) || b.StartTimeOfState != b0.StartTimeOfState || b.Rev <= b0.Rev {
		t.Fatalf("after Renew: cltt %d stos %d rev %d (was %d)", b.CLTT, b.StartTimeOfState, b.Rev, b0.Rev)
	}
	if got := h.metric("pkt6-renew-received"); got != 1 {
		t.Errorf("pkt6-renew-received = %d", got)
	}
}

// TestRenewAddressNotOurs: addresses in a Renew that the client does not
// hold from us come back with lifetimes 0, and another client's binding is
// left alone.
func TestRenewAddressNotOurs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c1, c2 := newClient(1), newClient(2)
	a1, a2 := h.lease(c1), h.lease(c2)
	other, _ := h.get(fsm.AddrResource(fsm.IANA, a2))
	offLink := addr("2001:db8:99::1")
	rep := h.exchange(c1.msg(dhcpv6.MessageTypeRenew, h.sid(), c1.ia(a1, a2, offLink)), dhcpv6.MessageTypeReply)
	ia := findIANA(rep, c1.iaid)
	if ia == nil {
		t.Fatal("no IA_NA in the Reply")
	}
	if x := iaAddr(ia, a1); x == nil || x.ValidLifetime != validLT {
		t.Fatalf("own address %v: %v", a1, x)
	}
	for _, a := range []netip.Addr{a2, offLink} {
		x := iaAddr(ia, a)
		if x == nil || x.ValidLifetime != 0 || x.PreferredLifetime != 0 {
			t.Fatalf("address %v not ours: %v, want it with lifetimes 0", a, x)
		}
	}
	if ia.T1 != t1Conf || ia.T2 != t2Conf {
		t.Errorf("T1/T2 %v/%v", ia.T1, ia.T2)
	}
	if now, _ := h.get(fsm.AddrResource(fsm.IANA, a2)); now != other {
		t.Fatalf("client 2's binding changed: %+v -> %+v", other, now)
	}
	if _, ok := h.get(fsm.AddrResource(fsm.IANA, offLink)); ok {
		t.Fatal("off-link address got a binding")
	}
}

// TestRenewUnknownIA: a Renew for an IA we have no binding for, naming a
// free address of the link, creates the binding (RFC 8415 §18.3.4).
func TestRenewUnknownIA(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(5)
	free := addr("2001:db8:1::1234")
	rep := h.exchange(c.msg(dhcpv6.MessageTypeRenew, h.sid(), c.ia(free)), dhcpv6.MessageTypeReply)
	if got := leasedAddr(t, rep, c.iaid); got != free {
		t.Fatalf("Renew of unknown IA with free %v got %v", free, got)
	}
	b, ok := h.get(fsm.AddrResource(fsm.IANA, free))
	if !ok || b.Status != fsm.StatusActive || b.DUID != c.key() || b.IAID != c.iaidNum() || b.StateExpirationTime != unix(validLT) {
		t.Fatalf("binding %+v, %v", b, ok)
	}
	// The same for an unknown IA_PD naming a free prefix.
	freePD := netip.MustParsePrefix("2001:db8:80aa:bb00::/56")
	m := c.msg(dhcpv6.MessageTypeRenew, h.sid(), c.pd(freePD))
	rep = h.exchange(m, dhcpv6.MessageTypeReply)
	ipd := findIAPD(rep, c.pdid)
	if ipd == nil || len(ipd.Options.Prefixes()) != 1 || prefixOf(ipd.Options.Prefixes()[0]) != freePD {
		t.Fatalf("Renew of unknown IA_PD: %v", ipd)
	}
	if b, ok := h.get(fsm.PrefixResource(freePD)); !ok || b.Status != fsm.StatusActive || b.IAID != iaidOf(c.pdid) {
		t.Fatalf("PD binding %+v, %v", b, ok)
	}
}

// TestRebind: a Rebind extends a known lease; for an unknown IA without
// rapid commit it says NoBinding and commits nothing.
func TestRebind(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	a := h.lease(c)
	h.clk.Advance(2 * time.Hour)
	rep := h.exchange(c.msg(dhcpv6.MessageTypeRebind, c.ia(a)), dhcpv6.MessageTypeReply)
	if got := leasedAddr(t, rep, c.iaid); got != a {
		t.Fatalf("Rebind gave %v, want %v", got, a)
	}
	if b, _ := h.get(fsm.AddrResource(fsm.IANA, a)); b.StateExpirationTime != unix(2*time.Hour+validLT) || b.Status != fsm.StatusActive {
		t.Fatalf("after Rebind: %+v", b)
	}
	before := h.dump()
	c2 := newClient(2)
	rep = h.exchange(c2.msg(dhcpv6.MessageTypeRebind, c2.ia(addr("2001:db8:1::1777"))), dhcpv6.MessageTypeReply)
	ia := findIANA(rep, c2.iaid)
	if ia == nil || status(ia.Options) != int(iana.StatusNoBinding) {
		t.Fatalf("Rebind of an unknown IA: %v, want NoBinding", ia)
	}
	// The on-link address may be a failover partner's lease: a Rebind (sent
	// to any server) must not cancel it with lifetime 0; an off-link one is.
	if x := iaAddr(ia, addr("2001:db8:1::1777")); x != nil {
		t.Fatalf("Rebind returned the on-link address of an unknown IA: %v", x)
	}
	rep = h.exchange(c2.msg(dhcpv6.MessageTypeRebind, c2.ia(addr("2001:db8:99::7"))), dhcpv6.MessageTypeReply)
	if x := iaAddr(findIANA(rep, c2.iaid), addr("2001:db8:99::7")); x == nil || x.ValidLifetime != 0 {
		t.Fatalf("off-link address in a Rebind: %v, want it with lifetimes 0", x)
	}
	if h.dump() != before {
		t.Fatal("Rebind of an unknown IA committed something")
	}
}

// TestRequestNotOnLink: a Request naming an address that is not on the
// client's link gets the IA back with NotOnLink and nothing committed.
func TestRequestNotOnLink(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(3)
	before := h.dump()
	rep := h.exchange(c.msg(dhcpv6.MessageTypeRequest, h.sid(), c.ia(addr("2001:db8:99::5"))), dhcpv6.MessageTypeReply)
	ia := findIANA(rep, c.iaid)
	if ia == nil || status(ia.Options) != int(iana.StatusNotOnLink) || len(ia.Options.Addresses()) != 0 {
		t.Fatalf("Request with an off-link address: %v, want NotOnLink and no addresses", ia)
	}
	if h.dump() != before {
		t.Fatal("NotOnLink Request committed something")
	}
}

// TestRelease: a Release frees the lease (FREE, held for its client) and
// answers Success; an IA we hold nothing for gets NoBinding; another
// client cannot release someone else's lease.
func TestRelease(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c, thief := newClient(1), newClient(2)
	adv := h.exchange(c.solicit(c.pd()), dhcpv6.MessageTypeAdvertise)
	req, _ := dhcpv6.NewRequestFromAdvertise(adv)
	rep := h.exchange(req, dhcpv6.MessageTypeReply)
	a := leasedAddr(t, rep, c.iaid)
	p := prefixOf(findIAPD(rep, c.pdid).Options.Prefixes()[0])
	ra, rp := fsm.AddrResource(fsm.IANA, a), fsm.PrefixResource(p)
	if used, _ := h.poolOf(ra).usage(); used != 1 {
		t.Fatalf("pool usage %d with one lease", used)
	}

	// Someone else naming our client's address, even under the same IAID.
	rep = h.exchange(thief.msg(dhcpv6.MessageTypeRelease, h.sid(), iaNA(c.iaid, a)), dhcpv6.MessageTypeReply)
	if status(rep.Options) != int(iana.StatusSuccess) {
		t.Fatalf("Release status %d, want Success", status(rep.Options))
	}
	if ia := findIANA(rep, c.iaid); ia == nil || status(ia.Options) != int(iana.StatusNoBinding) || len(ia.Options.Addresses()) != 0 {
		t.Fatalf("foreign Release IA = %v, want NoBinding and nothing else", ia)
	}
	if b, _ := h.get(ra); b.Status != fsm.StatusActive || b.DUID != c.key() {
		t.Fatalf("another client's Release changed the lease: %+v", b)
	}

	h.clk.Advance(time.Minute)
	unknown := [4]byte{9, 9, 9, 9}
	m := c.msg(dhcpv6.MessageTypeRelease, h.sid(), c.ia(a), c.pd(p), iaNA(unknown, addr("2001:db8:1::1555")))
	rep = h.exchange(m, dhcpv6.MessageTypeReply)
	if status(rep.Options) != int(iana.StatusSuccess) {
		t.Fatalf("Release status %d, want Success", status(rep.Options))
	}
	if ia := findIANA(rep, unknown); ia == nil || status(ia.Options) != int(iana.StatusNoBinding) {
		t.Fatalf("unknown IA in Release: %v, want NoBinding", ia)
	}
	if findIANA(rep, c.iaid) != nil || findIAPD(rep, c.pdid) != nil {
		t.Fatal("released IAs are echoed in the Reply; only IAs without bindings are")
	}
	for _, r := range []fsm.Resource{ra, rp} {
		b, ok := h.get(r)
		if !ok || b.Status != fsm.StatusFree {
			t.Fatalf("%v after Release: %+v, %v; want FREE", r, b, ok)
		}
		if b.StateExpirationTime != unix(time.Minute+time.Hour) || b.StartTimeOfState != unix(time.Minute) {
			t.Fatalf("%v: FREE until %d (since %d), want held for ExpiredHoldTime", r, b.StateExpirationTime, b.StartTimeOfState)
		}
	}
	if used, _ := h.poolOf(ra).usage(); used != 0 {
		t.Fatalf("pool usage %d after Release", used)
	}
	if used, _ := h.poolOf(rp).usage(); used != 0 {
		t.Fatalf("PD pool usage %d after Release", used)
	}
	// The released address goes back to its client first.
	adv = h.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
	if got := leasedAddr(t, adv, c.iaid); got != a {
		t.Fatalf("client soliciting after Release offered %v, want its old %v", got, a)
	}
	if got := h.metric("pkt6-release-received"); got != 2 {
		t.Errorf("pkt6-release-received = %d", got)
	}
}

// TestDecline: a declined address becomes ABANDONED for DeclineHoldTime and
// is offered to nobody, not even the client that declined it.
func TestDecline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.Subnets[0].Pools = []AddressRange{{addr("2001:db8:1::10"), addr("2001:db8:1::11")}}
	})
	c := newClient(1)
	a := h.lease(c)
	h.clk.Advance(time.Minute)
	rep := h.exchange(c.msg(dhcpv6.MessageTypeDecline, h.sid(), c.ia(a)), dhcpv6.MessageTypeReply)
	if status(rep.Options) != int(iana.StatusSuccess) {
		t.Fatalf("Decline status %d", status(rep.Options))
	}
	b, ok := h.get(fsm.AddrResource(fsm.IANA, a))
	if !ok || b.Status != fsm.StatusAbandoned {
		t.Fatalf("declined address: %+v, %v; want ABANDONED", b, ok)
	}
	if b.StateExpirationTime != unix(time.Minute+24*time.Hour) || b.StartTimeOfState != unix(time.Minute) {
		t.Fatalf("ABANDONED until %d, want now+DeclineHoldTime %d", b.StateExpirationTime, unix(time.Minute+24*time.Hour))
	}
	if got := h.metric("declined-addresses"); got != 1 {
		t.Errorf("declined-addresses = %d", got)
	}
	// The declining client asks again, even naming the address: it gets the other one.
	rep = h.exchange(c.msg(dhcpv6.MessageTypeRequest, h.sid(), c.ia(a)), dhcpv6.MessageTypeReply)
	other := leasedAddr(t, rep, c.iaid)
	if other == a {
		t.Fatalf("declined address %v handed out again", a)
	}
	// A third client finds nothing left.
	c3 := newClient(3)
	adv := h.exchange(c3.msg(dhcpv6.MessageTypeSolicit, c3.ia(a)), dhcpv6.MessageTypeAdvertise)
	if ia := findIANA(adv, c3.iaid); ia == nil || status(ia.Options) != int(iana.StatusNoAddrsAvail) || len(ia.Options.Addresses()) != 0 {
		t.Fatalf("with the declined address set aside, a new client got %v; want NoAddrsAvail", ia)
	}
	// Declining an address one does not hold: NoBinding, nothing changes.
	before := h.dump()
	rep = h.exchange(c3.msg(dhcpv6.MessageTypeDecline, h.sid(), c3.ia(other)), dhcpv6.MessageTypeReply)
	if ia := findIANA(rep, c3.iaid); ia == nil || status(ia.Options) != int(iana.StatusNoBinding) {
		t.Fatalf("foreign Decline: %v", ia)
	}
	if h.dump() != before {
		t.Fatal("a foreign Decline changed the database")
	}
}

// TestConfirm: on-link addresses get Success, any off-link one NotOnLink,
// and a Confirm with no addresses is not answered.
func TestConfirm(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	for _, tc := range []struct {
		addrs []netip.Addr
		want  iana.StatusCode
	}{
		{[]netip.Addr{addr("2001:db8:1::1234")}, iana.StatusSuccess},
		{[]netip.Addr{addr("2001:db8:1::1"), addr("2001:db8:1:0:ffff::9")}, iana.StatusSuccess},
		{[]netip.Addr{addr("2001:db8:99::1")}, iana.StatusNotOnLink},
		{[]netip.Addr{addr("2001:db8:1::1"), addr("2001:db8:2::1")}, iana.StatusNotOnLink},
	} {
		rep := h.exchange(c.msg(dhcpv6.MessageTypeConfirm, c.ia(tc.addrs...)), dhcpv6.MessageTypeReply)
		if got := status(rep.Options); got != int(tc.want) {
			t.Errorf("Confirm %v: status %d, want %v", tc.addrs, got, tc.want)
		}
		if len(rep.Options.IANA()) != 0 {
			t.Errorf("Confirm reply carries IAs")
		}
	}
	h.expectDrop(c.msg(dhcpv6.MessageTypeConfirm, c.ia()), linkInfo)
	h.expectDrop(c.msg(dhcpv6.MessageTypeConfirm), linkInfo)
	// On a link we know nothing about, the test cannot be made: no reply.
	h.expectDrop(c.msg(dhcpv6.MessageTypeConfirm, c.ia(addr("2001:db8:1::1"))), PacketInfo{IfIndex: 9, IfName: "eth9",
		Src: linkInfo.Src, Dst: linkInfo.Dst})
	if h.bindings() != 0 {
		t.Fatal("Confirm committed something")
	}
}

// TestInformationRequest: configuration options are returned when the ORO
// asks for them, with or without a Client ID.
func TestInformationRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.DomainSearch = []string{"example.net"}
		c.Subnets[1].DNSServers = []netip.Addr{addr("2001:db8:2::53")}
	})
	c := newClient(1)
	oro := dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList)
	rep := h.exchange(c.msg(dhcpv6.MessageTypeInformationRequest, oro), dhcpv6.MessageTypeReply)
	if dns := rep.Options.DNS(); len(dns) != 1 || !dns[0].Equal(net.IP(dnsAddr.AsSlice())) {
		t.Fatalf("DNS = %v, want [%v]", dns, dnsAddr)
	}
	if dsl := rep.Options.DomainSearchList(); dsl == nil || len(dsl.Labels) != 1 || dsl.Labels[0] != "example.net" {
		t.Fatalf("domain search = %v", dsl)
	}
	// Without an ORO: no DNS option.
	rep = h.exchange(c.msg(dhcpv6.MessageTypeInformationRequest), dhcpv6.MessageTypeReply)
	if rep.Options.DNS() != nil || rep.Options.DomainSearchList() != nil {
		t.Fatal("options sent that the client did not ask for")
	}
	// Without a Client ID: a Reply without one (RFC 8415 §16.10).
	m, _ := dhcpv6.NewMessage()
	m.MessageType = dhcpv6.MessageTypeInformationRequest
	m.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer))
	rep = h.exchange(m, dhcpv6.MessageTypeReply)
	if rep.Options.ClientID() != nil || len(rep.Options.DNS()) != 1 {
		t.Fatalf("anonymous Information-Request reply: %v", rep)
	}
	// With our own Server ID: answered. Through a relay on subnet 2: that
	// subnet's DNS servers.
	h.exchange(c.msg(dhcpv6.MessageTypeInformationRequest, h.sid(), oro), dhcpv6.MessageTypeReply)
	fw := relayForw(t, c.msg(dhcpv6.MessageTypeInformationRequest, oro), addr("2001:db8:2::1"), addr("fe80::1"), "")
	p, _, err := h.handle(fw.ToBytes(), relayInfo())
	if err != nil {
		t.Fatal(err)
	}
	in := unwrapReply(t, p, fw)
	if dns := in.Options.DNS(); len(dns) != 1 || !dns[0].Equal(net.ParseIP("2001:db8:2::53")) {
		t.Fatalf("subnet 2 DNS = %v", dns)
	}
	if h.bindings() != 0 {
		t.Fatal("Information-Request committed something")
	}
}

// TestValidationDrops: messages RFC 8415 §16 says a server must discard are
// dropped (ErrDropped), counted, and change nothing.
func TestValidationDrops(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	a := h.lease(c)
	anon := func(t dhcpv6.MessageType, opts ...dhcpv6.Option) *dhcpv6.Message {
		m, _ := dhcpv6.NewMessage()
		m.MessageType = t
		for _, o := range opts {
			m.AddOption(o)
		}
		return m
	}
	longDUID := &dhcpv6.DUIDOpaque{Type: 99, Data: bytes.Repeat([]byte{7}, 200)}
	cases := []struct {
		name string
		m    *dhcpv6.Message
		info PacketInfo
	}{
		{"Request without Server ID", c.msg(dhcpv6.MessageTypeRequest, c.ia(a)), linkInfo},
		{"Request for another server", c.msg(dhcpv6.MessageTypeRequest, otherSID(), c.ia(a)), linkInfo},
		{"Request without Client ID", anon(dhcpv6.MessageTypeRequest, h.sid(), c.ia(a)), linkInfo},
		{"Renew without Server ID", c.msg(dhcpv6.MessageTypeRenew, c.ia(a)), linkInfo},
		{"Renew for another server", c.msg(dhcpv6.MessageTypeRenew, otherSID(), c.ia(a)), linkInfo},
		{"Release without Server ID", c.msg(dhcpv6.MessageTypeRelease, c.ia(a)), linkInfo},
		{"Release for another server", c.msg(dhcpv6.MessageTypeRelease, otherSID(), c.ia(a)), linkInfo},
		{"Decline without Server ID", c.msg(dhcpv6.MessageTypeDecline, c.ia(a)), linkInfo},
		{"Decline for another server", c.msg(dhcpv6.MessageTypeDecline, otherSID(), c.ia(a)), linkInfo},
		{"Solicit with our Server ID", c.msg(dhcpv6.MessageTypeSolicit, h.sid(), c.ia()), linkInfo},
		{"Solicit with another Server ID", c.msg(dhcpv6.MessageTypeSolicit, otherSID(), c.ia()), linkInfo},
		{"Solicit without Client ID", anon(dhcpv6.MessageTypeSolicit, c.ia()), linkInfo},
		{"Rebind with a Server ID", c.msg(dhcpv6.MessageTypeRebind, h.sid(), c.ia(a)), linkInfo},
		{"Rebind without Client ID", anon(dhcpv6.MessageTypeRebind, c.ia(a)), linkInfo},
		{"Confirm with a Server ID", c.msg(dhcpv6.MessageTypeConfirm, h.sid(), c.ia(a)), linkInfo},
		{"Information-Request with IA_NA", c.msg(dhcpv6.MessageTypeInformationRequest, c.ia()), linkInfo},
		{"Information-Request with IA_PD", c.msg(dhcpv6.MessageTypeInformationRequest, c.pd()), linkInfo},
		{"Information-Request for another server", c.msg(dhcpv6.MessageTypeInformationRequest, otherSID()), linkInfo},
		{"Advertise", c.msg(dhcpv6.MessageTypeAdvertise, h.sid(), c.ia(a)), linkInfo},
		{"Reply", c.msg(dhcpv6.MessageTypeReply, h.sid(), c.ia(a)), linkInfo},
		{"Reconfigure", c.msg(dhcpv6.MessageTypeReconfigure, h.sid()), linkInfo},
		{"unknown type", c.msg(dhcpv6.MessageType(200), c.ia()), linkInfo},
		{"Solicit on an unknown interface", c.solicit(), PacketInfo{IfIndex: 3, IfName: "eth3", Src: linkInfo.Src, Dst: linkInfo.Dst}},
		{"Solicit with a 202-byte DUID", anon(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(longDUID), c.ia()), linkInfo},
		{"Solicit by unicast", c.solicit(), unicastInfo},
		{"Rebind by unicast", c.msg(dhcpv6.MessageTypeRebind, c.ia(a)), unicastInfo},
		{"Confirm by unicast", c.msg(dhcpv6.MessageTypeConfirm, c.ia(a)), unicastInfo},
		{"Information-Request by unicast", c.msg(dhcpv6.MessageTypeInformationRequest), unicastInfo},
	}
	parent := h.t
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			defer func() { h.t = parent }()
			h.expectDrop(tc.m, tc.info)
		})
	}
	if b, _ := h.get(fsm.AddrResource(fsm.IANA, a)); b.Status != fsm.StatusActive {
		t.Fatalf("lease changed by dropped messages: %+v", b)
	}
}

// TestUnicastUseMulticast: Request, Renew, Release and Decline sent by
// unicast (no Server Unicast option offered) get UseMulticast and nothing else.
func TestUnicastUseMulticast(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	a := h.lease(c)
	before := h.dump()
	for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew,
		dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline} {
		rep := h.exchangeFrom(c.msg(typ, h.sid(), c.ia(a)), unicastInfo, dhcpv6.MessageTypeReply)
		if got := status(rep.Options); got != int(iana.StatusUseMulticast) {
			t.Fatalf("unicast %v: status %d, want UseMulticast", typ, got)
		}
		for _, o := range rep.Options.Options {
			switch o.Code() {
			case dhcpv6.OptionServerID, dhcpv6.OptionClientID, dhcpv6.OptionStatusCode:
			default:
				t.Fatalf("unicast %v: UseMulticast reply carries %v", typ, o.Code())
			}
		}
	}
	// A new client's unicast Request commits nothing either.
	c2 := newClient(2)
	h.exchangeFrom(c2.msg(dhcpv6.MessageTypeRequest, h.sid(), c2.ia(addr("2001:db8:1::1999"))), unicastInfo, dhcpv6.MessageTypeReply)
	if h.dump() != before {
		t.Fatal("a unicast message changed the database")
	}
}

// TestPrefixDelegationExhaustion: a /54 of /56s has four prefixes; a fifth
// client gets NoPrefixAvail (and its IA_NA is still served).
func TestPrefixDelegationExhaustion(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.Subnets[0].PDPools = []PDPool{{Prefix: netip.MustParsePrefix("2001:db8:8000::/54"), DelegatedLength: 56}}
	})
	want := map[netip.Prefix]bool{}
	for _, p := range []string{"2001:db8:8000::/56", "2001:db8:8000:100::/56", "2001:db8:8000:200::/56", "2001:db8:8000:300::/56"} {
		want[netip.MustParsePrefix(p)] = true
	}
	got := map[netip.Prefix]bool{}
	for i := 0; i < 4; i++ {
		c := newClient(i)
		adv := h.exchange(c.msg(dhcpv6.MessageTypeSolicit, c.pd()), dhcpv6.MessageTypeAdvertise)
		req, _ := dhcpv6.NewRequestFromAdvertise(adv)
		if req == nil { // no IA_NA in the Advertise: build it by hand
			req = c.msg(dhcpv6.MessageTypeRequest, h.sid(), findIAPD(adv, c.pdid))
		}
		rep := h.exchange(req, dhcpv6.MessageTypeReply)
		ipd := findIAPD(rep, c.pdid)
		if ipd == nil || len(ipd.Options.Prefixes()) != 1 {
			t.Fatalf("client %d: IA_PD %v", i, ipd)
		}
		p := prefixOf(ipd.Options.Prefixes()[0])
		if !want[p] || got[p] {
			t.Fatalf("client %d delegated %v (already given: %v)", i, p, got[p])
		}
		got[p] = true
		if b, ok := h.get(fsm.PrefixResource(p)); !ok || b.Status != fsm.StatusActive || b.DUID != c.key() || b.Resource.Len != 56 {
			t.Fatalf("%v binding %+v, %v", p, b, ok)
		}
	}
	fails := h.metric("v6-allocation-fail")
	c := newClient(99)
	for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest} {
		var m *dhcpv6.Message
		if typ == dhcpv6.MessageTypeSolicit {
			m = c.msg(typ, c.ia(), c.pd())
		} else {
			m = c.msg(typ, h.sid(), c.ia(), c.pd())
		}
		want := dhcpv6.MessageTypeAdvertise
		if typ == dhcpv6.MessageTypeRequest {
			want = dhcpv6.MessageTypeReply
		}
		rep := h.exchange(m, want)
		ipd := findIAPD(rep, c.pdid)
		if ipd == nil || status(ipd.Options) != int(iana.StatusNoPrefixAvail) || len(ipd.Options.Prefixes()) != 0 {
			t.Fatalf("%v on an exhausted PD pool: %v, want NoPrefixAvail", typ, ipd)
		}
		if ipd.T1 != 0 || ipd.T2 != 0 {
			t.Errorf("empty IA_PD has T1/T2 %v/%v", ipd.T1, ipd.T2)
		}
		leasedAddr(t, rep, c.iaid) // the address is still given
	}
	if got := h.metric("v6-allocation-fail"); got != fails+2 {
		t.Errorf("v6-allocation-fail %d -> %d, want +2", fails, got)
	}
}

// TestAddressPoolExhaustion: a pool of four addresses serves four clients;
// the fifth gets NoAddrsAvail and the allocation failure is counted.
func TestAddressPoolExhaustion(t *testing.T) {
	t.Parallel()
	small := AddressRange{addr("2001:db8:1::100"), addr("2001:db8:1::103")}
	h := newHarness(t, func(c *Config) { c.Subnets[0].Pools = []AddressRange{small} })
	seen := map[netip.Addr]bool{}
	for i := 0; i < 4; i++ {
		a := h.lease(newClient(i))
		if !inPool(a, small) || seen[a] {
			t.Fatalf("client %d got %v", i, a)
		}
		seen[a] = true
	}
	c := newClient(4)
	adv := h.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
	ia := findIANA(adv, c.iaid)
	if ia == nil || status(ia.Options) != int(iana.StatusNoAddrsAvail) || len(ia.Options.Addresses()) != 0 {
		t.Fatalf("exhausted pool Advertise IA = %v, want NoAddrsAvail", ia)
	}
	if ia.T1 != 0 || ia.T2 != 0 {
		t.Errorf("empty IA_NA has T1/T2 %v/%v", ia.T1, ia.T2)
	}
	if got := h.metric("v6-allocation-fail"); got != 1 {
		t.Errorf("v6-allocation-fail = %d, want 1", got)
	}
	rep := h.exchange(c.msg(dhcpv6.MessageTypeRequest, h.sid(), c.ia()), dhcpv6.MessageTypeReply)
	if ia := findIANA(rep, c.iaid); ia == nil || status(ia.Options) != int(iana.StatusNoAddrsAvail) {
		t.Fatalf("exhausted pool Reply IA = %v", ia)
	}
	if got := h.metric("v6-allocation-fail"); got != 2 {
		t.Errorf("v6-allocation-fail = %d, want 2", got)
	}
	if h.bindings() != 4 {
		t.Fatalf("%d bindings, want 4", h.bindings())
	}
	if used, total := h.poolOf(fsm.AddrResource(fsm.IANA, small.First)).usage(); used != 4 || total != 4 {
		t.Fatalf("usage %d/%d", used, total)
	}
}

// relayInfo is a Relay-Forw arriving by unicast from a relay on subnet 1.
func relayInfo() PacketInfo {
	return PacketInfo{IfIndex: 1, IfName: "eth1", Src: netip.AddrPortFrom(addr("2001:db8:1::1"), 547), Dst: addr("2001:db8:1::53")}
}

// TestRelayedTwoHops: a client behind two relays is served from the subnet
// of the innermost relay's link-address, and the reply retraces the chain.
func TestRelayedTwoHops(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	wrap := func(m *dhcpv6.Message) *dhcpv6.RelayMessage {
		inner := relayForw(t, m, addr("2001:db8:2::1"), addr("fe80::1"), "inner-if")
		return relayForw(t, inner, addr("2001:db8:1::1"), addr("2001:db8:2::1"), "outer-if")
	}
	fw := wrap(c.solicit())
	if fw.HopCount != 1 {
		t.Fatalf("outer hop count %d", fw.HopCount)
	}
	p, dst, err := h.handle(fw.ToBytes(), relayInfo())
	if err != nil {
		t.Fatal(err)
	}
	if dst != relayInfo().Src {
		t.Fatalf("relay reply goes to %v, want the relay %v", dst, relayInfo().Src)
	}
	adv := unwrapReply(t, p, fw)
	if adv.MessageType != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("relayed Solicit answered with %v", adv.MessageType)
	}
	if a := leasedAddr(t, adv, c.iaid); !inPool(a, pool2) {
		t.Fatalf("relayed client offered %v; the innermost link is %v", a, subnet2)
	}
	req, _ := dhcpv6.NewRequestFromAdvertise(adv)
	fw = wrap(req)
	p, _, err = h.handle(fw.ToBytes(), relayInfo())
	if err != nil {
		t.Fatal(err)
	}
	rep := unwrapReply(t, p, fw)
	if err := checkReplyIDs(h.srv, req, rep); err != nil || rep.MessageType != dhcpv6.MessageTypeReply {
		t.Fatalf("relayed Reply: %v %v", rep.MessageType, err)
	}
	a := leasedAddr(t, rep, c.iaid)
	if b, ok := h.get(fsm.AddrResource(fsm.IANA, a)); !ok || !inPool(a, pool2) || b.Status != fsm.StatusActive || b.DUID != c.key() {
		t.Fatalf("relayed lease %v: %+v %v", a, b, ok)
	}
	// A relay that leaves its link-address unspecified: the next relay's counts.
	c2 := newClient(2)
	inner := relayForw(t, c2.solicit(), addr("::"), addr("fe80::2"), "x")
	fw = relayForw(t, inner, addr("2001:db8:2::1"), addr("fe80::99"), "")
	p, _, err = h.handle(fw.ToBytes(), relayInfo())
	if err != nil {
		t.Fatal(err)
	}
	if a := leasedAddr(t, unwrapReply(t, p, fw), c2.iaid); !inPool(a, pool2) {
		t.Fatalf("unspecified inner link-address: offered %v", a)
	}
	// A relay on a link we do not serve: dropped.
	h.expectDrop(relayForw(t, c2.solicit(), addr("2001:db8:77::1"), addr("fe80::2"), ""), relayInfo())
}

// TestRelayDepthLimit: 32 nested Relay-Forw are unwrapped; a 33rd is a
// malformed packet.
func TestRelayDepthLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	nest := func(n int) *dhcpv6.RelayMessage {
		var m dhcpv6.DHCPv6 = c.solicit()
		for i := 0; i < n; i++ {
			m = relayForw(t, m, addr("2001:db8:1::1"), addr(fmt.Sprintf("fe80::%x", i+1)), fmt.Sprintf("if%d", i))
		}
		return m.(*dhcpv6.RelayMessage)
	}
	fw := nest(maxRelayHops)
	p, _, err := h.handle(fw.ToBytes(), relayInfo())
	if err != nil {
		t.Fatalf("%d relays: %v", maxRelayHops, err)
	}
	if adv := unwrapReply(t, p, fw); adv.MessageType != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("deep relay: %v", adv.MessageType)
	}
	failed := h.metric("pkt6-parse-failed")
	_, _, err = h.srv.Handle(nest(maxRelayHops+1).ToBytes(), relayInfo())
	if err == nil || errors.Is(err, ErrDropped) {
		t.Fatalf("%d relays: err %v, want a parse error", maxRelayHops+1, err)
	}
	if got := h.metric("pkt6-parse-failed"); got != failed+1 {
		t.Fatalf("pkt6-parse-failed %d -> %d", failed, got)
	}
}

// TestMalformedPackets: packets the codec cannot read, and relay messages
// that carry no client message, are errors (not drops), are counted as
// parse failures, and never panic or commit.
func TestMalformedPackets(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	good := c.solicit(c.pd(), dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer)).ToBytes()
	expectParseError := func(name string, b []byte) {
		t.Helper()
		failed := h.metric("pkt6-parse-failed")
		out, _, err := h.srv.Handle(b, linkInfo)
		if err == nil || errors.Is(err, ErrDropped) || out != nil {
			t.Fatalf("%s (% x): out %x err %v; want a non-drop error", name, b, out, err)
		}
		if got := h.metric("pkt6-parse-failed"); got != failed+1 {
			t.Fatalf("%s: pkt6-parse-failed %d -> %d", name, failed, got)
		}
	}
	expectParseError("empty", nil)
	expectParseError("type only", []byte{1})
	expectParseError("short header", []byte{1, 2, 3})
	expectParseError("option longer than the packet", []byte{1, 0, 0, 1, 0, 1, 0xff, 0xff, 0, 3, 0, 1})
	expectParseError("dangling option header", append(append([]byte(nil), good...), 0, 1, 0))
	expectParseError("Client ID too short for a DUID", []byte{1, 0, 0, 1, 0, 1, 0, 1, 0})
	expectParseError("IA_NA too short", []byte{1, 0, 0, 1, 0, 3, 0, 3, 1, 2, 3})
	expectParseError("IA_NA with a bad IA Address", []byte{1, 0, 0, 1, 0, 3, 0, 18, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 2, 1, 2})
	expectParseError("Relay-Forw header cut", []byte{12, 0, 0x20, 0x01, 0x0d, 0xb8})
	relayNoMsg := relayForw(t, c.solicit(), addr("2001:db8:1::1"), addr("fe80::1"), "x")
	relayNoMsg.Options.Del(dhcpv6.OptionRelayMsg)
	expectParseError("Relay-Forw without a Relay Message", relayNoMsg.ToBytes())
	repl, _ := dhcpv6.EncapsulateRelay(c.solicit(), dhcpv6.MessageTypeRelayReply, net.ParseIP("2001:db8:1::1"), net.ParseIP("fe80::1"))
	expectParseError("Relay-Repl", repl.ToBytes())
	fwRepl := relayForw(t, repl, addr("2001:db8:1::1"), addr("fe80::1"), "")
	expectParseError("Relay-Repl inside a Relay-Forw", fwRepl.ToBytes())

	// Every truncation of a valid Solicit the codec rejects is a parse error.
	rejected := 0
	for n := 0; n < len(good); n++ {
		if _, err := dhcpv6.FromBytes(good[:n]); err == nil {
			continue
		}
		rejected++
		expectParseError(fmt.Sprintf("Solicit cut to %d of %d bytes", n, len(good)), good[:n])
	}
	if rejected < len(good)/2 {
		t.Fatalf("only %d of %d truncations rejected by the codec", rejected, len(good))
	}
	// Random bytes and random corruptions: never a panic; whatever the codec
	// rejects is a parse error; a reply, if any, parses.
	rng := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 3000; i++ {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, rng.IntN(120))
			for j := range b {
				b[j] = byte(rng.UintN(256))
			}
			if len(b) > 0 && i%4 == 0 {
				b[0] = byte(1 + rng.IntN(13)) // a known message type
			}
		} else {
			b = append([]byte(nil), good...)
			for k := 0; k <= rng.IntN(4); k++ {
				b[rng.IntN(len(b))] = byte(rng.UintN(256))
			}
			b = b[:rng.IntN(len(b)+1)]
		}
		_, perr := dhcpv6.FromBytes(b)
		failed := h.metric("pkt6-parse-failed")
		out, _, err := h.srv.Handle(b, linkInfo)
		if perr != nil {
			if err == nil || errors.Is(err, ErrDropped) {
				t.Fatalf("undecodable % x: err %v, want a parse error", b, err)
			}
			if h.metric("pkt6-parse-failed") != failed+1 {
				t.Fatalf("undecodable % x not counted", b)
			}
		}
		if err == nil {
			if _, err := dhcpv6.FromBytes(out); err != nil {
				t.Fatalf("reply to % x does not parse: %v", b, err)
			}
		}
	}
	if got := h.metric("store-failed"); got != 0 {
		t.Fatalf("store-failed = %d after garbage", got)
	}
}

// TestConcurrentClients: 200 clients doing Solicit+Request at once all get
// distinct addresses, each ACTIVE for its client in the store.
func TestConcurrentClients(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const n = 200
	type result struct {
		c   *client
		a   netip.Addr
		err error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := newClient(1000 + i)
			<-start
			res := result{c: c}
			defer func() { results <- res }()
			adv, err := h.try(c.solicit(c.pd()), linkInfo)
			if err != nil || adv.MessageType != dhcpv6.MessageTypeAdvertise {
				res.err = fmt.Errorf("solicit: %v %v", adv, err)
				return
			}
			req, err := dhcpv6.NewRequestFromAdvertise(adv)
			if err != nil {
				res.err = err
				return
			}
			rep, err := h.try(req, linkInfo)
			if err != nil || rep.MessageType != dhcpv6.MessageTypeReply {
				res.err = fmt.Errorf("request: %v %v", rep, err)
				return
			}
			ia := findIANA(rep, c.iaid)
			if ia == nil || len(ia.Options.Addresses()) != 1 || ia.Options.Addresses()[0].ValidLifetime != validLT {
				res.err = fmt.Errorf("reply IA_NA %v", ia)
				return
			}
			if ipd := findIAPD(rep, c.pdid); ipd == nil || len(ipd.Options.Prefixes()) != 1 {
				res.err = fmt.Errorf("reply IA_PD %v", ipd)
				return
			}
			res.a, _ = netip.AddrFromSlice(ia.Options.Addresses()[0].IPv6Addr)
		}(i)
	}
	close(start)
	wg.Wait()
	close(results)
	owner := map[netip.Addr]*client{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("client %x: %v", r.c.key(), r.err)
		}
		if prev, dup := owner[r.a]; dup {
			t.Fatalf("%v given to %x and %x", r.a, prev.key(), r.c.key())
		}
		owner[r.a] = r.c
		b, ok := h.get(fsm.AddrResource(fsm.IANA, r.a))
		if !ok || b.Status != fsm.StatusActive || b.DUID != r.c.key() || b.IAID != r.c.iaidNum() {
			t.Fatalf("%v replied to %x but stored as %+v (%v)", r.a, r.c.key(), b, ok)
		}
	}
	if len(owner) != n {
		t.Fatalf("%d addresses for %d clients", len(owner), n)
	}
	st := h.state().Stats()
	if st.Counts[fsm.IANA][fsm.StatusActive] != n || st.Counts[fsm.IAPD][fsm.StatusActive] != n || st.Bindings != 2*n {
		t.Fatalf("store holds %d bindings (%d NA, %d PD active), want %d each", st.Bindings,
			st.Counts[fsm.IANA][fsm.StatusActive], st.Counts[fsm.IAPD][fsm.StatusActive], n)
	}
	if used, _ := h.poolOf(fsm.AddrResource(fsm.IANA, pool1.First)).usage(); used != n {
		t.Fatalf("pool usage %d, want %d", used, n)
	}
	if got := h.metric("store-failed"); got != 0 {
		t.Fatalf("store-failed = %d", got)
	}
}

// TestRestart: after closing and reopening the store and the server, the
// server DUID and the bindings are the same, and the rebuilt allocator
// never offers an address that is ACTIVE.
func TestRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	duid := h.srv.DUID()
	var clients []*client
	active := map[netip.Addr]bool{}
	for i := 0; i < 20; i++ {
		c := newClient(i)
		clients = append(clients, c)
		active[h.lease(c)] = true
	}
	// One lease released (FREE) and one declined (ABANDONED).
	rel, dec := clients[3], clients[4]
	var relAddr, decAddr netip.Addr
	for a := range active {
		b, _ := h.get(fsm.AddrResource(fsm.IANA, a))
		switch b.DUID {
		case rel.key():
			relAddr = a
		case dec.key():
			decAddr = a
		}
	}
	h.exchange(rel.msg(dhcpv6.MessageTypeRelease, h.sid(), rel.ia(relAddr)), dhcpv6.MessageTypeReply)
	h.exchange(dec.msg(dhcpv6.MessageTypeDecline, h.sid(), dec.ia(decAddr)), dhcpv6.MessageTypeReply)
	delete(active, relAddr)
	before := h.dump()

	h.restart()
	if !bytes.Equal(h.srv.DUID(), duid) {
		t.Fatalf("server DUID changed across restart: %x -> %x", duid, h.srv.DUID())
	}
	if after := h.dump(); after != before {
		t.Fatalf("database changed across restart:\nbefore %s\nafter  %s", before, after)
	}
	p := h.poolOf(fsm.AddrResource(fsm.IANA, pool1.First))
	if used, _ := p.usage(); used != uint64(len(active)) {
		t.Fatalf("rebuilt pool counts %d used, want %d (ACTIVE + ABANDONED)", used, len(active))
	}
	for a := range active {
		slot, _ := p.slotOf(fsm.AddrResource(fsm.IANA, a))
		if !p.set.Has(slot) {
			t.Fatalf("rebuilt slotset has %v free", a)
		}
	}
	// The allocator itself (not the handler's re-check) skips every lease:
	// a new server picks from the start of the pool, where the leases are.
	for i := 0; i < 30; i++ {
		r, slot, ok := p.pick()
		if !ok {
			t.Fatal("pick failed")
		}
		if active[r.Addr()] {
			t.Fatalf("pick %d after restart offered %v, which is in use", i, r.Addr())
		}
		p.unreserve(slot)
		p.mark(slot, true) // pretend it was taken, so the next pick moves on
	}
	h.restart()
	// Clients: the old ones renew their leases with the same server ID, new
	// ones get free addresses.
	c := clients[0]
	var ca netip.Addr
	for a := range active {
		if b, _ := h.get(fsm.AddrResource(fsm.IANA, a)); b.DUID == c.key() {
			ca = a
		}
	}
	rep := h.exchange(c.msg(dhcpv6.MessageTypeRenew, h.sid(), c.ia(ca)), dhcpv6.MessageTypeReply)
	if got := leasedAddr(t, rep, c.iaid); got != ca {
		t.Fatalf("Renew after restart gave %v, want %v", got, ca)
	}
	for i := 100; i < 130; i++ {
		a := h.lease(newClient(i))
		if active[a] {
			t.Fatalf("new client after restart got %v, already in use", a)
		}
		active[a] = true
	}
}

// TestReclaim: an expired lease is freed (held for its client for
// ExpiredHoldTime) and then forgotten, its address allocatable again; a
// declined address is forgotten after DeclineHoldTime.
func TestReclaim(t *testing.T) {
	t.Parallel()
	one := AddressRange{addr("2001:db8:1::100"), addr("2001:db8:1::100")}
	h := newHarness(t, func(c *Config) {
		c.Subnets[0].Pools = []AddressRange{one}
		c.ExpiredHoldTime = 30 * time.Minute
		c.DeclineHoldTime = 2 * time.Hour
	})
	x := fsm.AddrResource(fsm.IANA, one.First)
	p := h.poolOf(x)
	ca, cb, cc := newClient(1), newClient(2), newClient(3)
	if a := h.lease(ca); a != one.First {
		t.Fatalf("lease %v", a)
	}
	noAddr := func(c *client) {
		t.Helper()
		adv := h.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
		if ia := findIANA(adv, c.iaid); ia == nil || status(ia.Options) != int(iana.StatusNoAddrsAvail) {
			t.Fatalf("client %x was offered %v; want NoAddrsAvail", c.key(), ia)
		}
	}
	noAddr(cb)
	reclaim := func(want int) {
		t.Helper()
		n, err := h.srv.Reclaim()
		if err != nil || n != want {
			t.Fatalf("Reclaim at +%v = %d, %v; want %d", h.clk.Now().Sub(t0), n, err, want)
		}
	}
	h.clk.Advance(validLT - time.Second)
	reclaim(0)
	if b, _ := h.get(x); b.Status != fsm.StatusActive {
		t.Fatalf("reclaimed before expiry: %+v", b)
	}
	h.clk.Advance(time.Second)
	reclaim(1)
	b, ok := h.get(x)
	if !ok || b.Status != fsm.StatusFree || b.DUID != ca.key() || b.StateExpirationTime != unix(validLT+30*time.Minute) {
		t.Fatalf("expired lease: %+v, %v; want FREE for its client until +30m", b, ok)
	}
	if used, _ := p.usage(); used != 0 {
		t.Fatalf("FREE address still counted used")
	}
	if got := h.metric("reclaimed-leases"); got != 1 {
		t.Errorf("reclaimed-leases = %d", got)
	}
	// Within the hold time the old client gets it back.
	adv := h.exchange(ca.solicit(), dhcpv6.MessageTypeAdvertise)
	if got := leasedAddr(t, adv, ca.iaid); got != one.First {
		t.Fatalf("returning client offered %v", got)
	}
	h.clk.Advance(30*time.Minute - time.Second)
	reclaim(0)
	h.clk.Advance(time.Second)
	reclaim(1)
	if _, ok := h.get(x); ok || h.bindings() != 0 {
		t.Fatalf("FREE binding not forgotten after the hold time (%d bindings)", h.bindings())
	}
	// The address is allocatable again, to anyone.
	if a := h.lease(cb); a != one.First {
		t.Fatalf("reclaimed address: client got %v", a)
	}
	// Declined: set aside for DeclineHoldTime, then forgotten and reusable.
	h.exchange(cb.msg(dhcpv6.MessageTypeDecline, h.sid(), cb.ia(one.First)), dhcpv6.MessageTypeReply)
	if b, _ := h.get(x); b.Status != fsm.StatusAbandoned {
		t.Fatalf("after Decline: %+v", b)
	}
	h.clk.Advance(2*time.Hour - time.Second)
	reclaim(0)
	noAddr(cc)
	h.clk.Advance(time.Second)
	reclaim(1)
	if _, ok := h.get(x); ok {
		t.Fatal("ABANDONED binding not deleted after DeclineHoldTime")
	}
	if a := h.lease(cc); a != one.First {
		t.Fatalf("after the decline hold: client got %v", a)
	}
	// Nothing else is due.
	reclaim(0)
}

// TestDuplicateResourcesInOneMessage: a message naming the same lease twice
// (two IAs hinting one free address; one address twice in a Release) is
// answered normally, not turned into a failed commit.
func TestDuplicateResourcesInOneMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c1 := newClient(1)
	a := h.lease(c1)
	h.exchange(c1.msg(dhcpv6.MessageTypeRelease, h.sid(), c1.ia(a)), dhcpv6.MessageTypeReply)
	if b, _ := h.get(fsm.AddrResource(fsm.IANA, a)); b.Status != fsm.StatusFree {
		t.Fatalf("released: %+v", b)
	}
	// a is FREE (held for c1, available to all): c2 names it in two IAs.
	c2 := newClient(2)
	id1, id2 := [4]byte{0, 0, 0, 1}, [4]byte{0, 0, 0, 2}
	rep := h.exchange(c2.msg(dhcpv6.MessageTypeRequest, h.sid(), iaNA(id1, a), iaNA(id2, a)), dhcpv6.MessageTypeReply)
	x1, x2 := leasedAddr(t, rep, id1), leasedAddr(t, rep, id2)
	if x1 == x2 {
		t.Fatalf("one address %v in two IAs", x1)
	}
	if x1 != a && x2 != a {
		t.Fatalf("neither IA got the hinted free address %v: %v, %v", a, x1, x2)
	}
	for _, x := range []netip.Addr{x1, x2} {
		if b, ok := h.get(fsm.AddrResource(fsm.IANA, x)); !ok || b.Status != fsm.StatusActive || b.DUID != c2.key() {
			t.Fatalf("%v: %+v, %v", x, b, ok)
		}
	}
	// A FREE address picked by the allocator for a second IA while the first
	// IA named it: give the hint first, then an IA without hints.
	c3 := newClient(3)
	b := h.lease(c3)
	h.exchange(c3.msg(dhcpv6.MessageTypeRelease, h.sid(), c3.ia(b)), dhcpv6.MessageTypeReply)
	p := h.poolOf(fsm.AddrResource(fsm.IANA, b))
	slot, _ := p.slotOf(fsm.AddrResource(fsm.IANA, b))
	p.mu.Lock()
	p.cursor = slot // the next pick lands on b
	p.mu.Unlock()
	c4 := newClient(4)
	rep = h.exchange(c4.msg(dhcpv6.MessageTypeRequest, h.sid(), iaNA(id1, b), iaNA(id2)), dhcpv6.MessageTypeReply)
	if y1, y2 := leasedAddr(t, rep, id1), leasedAddr(t, rep, id2); y1 != b || y2 == b {
		t.Fatalf("hinted IA got %v, other IA %v; want %v and another", y1, y2, b)
	}
	// Release naming one address twice.
	rep = h.exchange(c2.msg(dhcpv6.MessageTypeRelease, h.sid(), iaNA(id1, x1, x1)), dhcpv6.MessageTypeReply)
	if status(rep.Options) != int(iana.StatusSuccess) {
		t.Fatalf("Release status %d", status(rep.Options))
	}
	if b, _ := h.get(fsm.AddrResource(fsm.IANA, x1)); b.Status != fsm.StatusFree {
		t.Fatalf("%v after a doubled Release: %+v", x1, b)
	}
	if got := h.metric("store-failed"); got != 0 {
		t.Fatalf("store-failed = %d", got)
	}
}

// parityPolicy is Standalone restricted to one address parity (as a
// failover endpoint is).
type parityPolicy struct {
	Standalone
	parity int
}

func (p parityPolicy) AddressParity() int { return p.parity }

// TestParityPolicy: the server only allocates addresses of its parity, and
// a pool without any address of that parity allocates nothing, before and
// after the observer rebuilds the pools.
func TestParityPolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.Policy = parityPolicy{Standalone{Hold: time.Hour}, 1} })
	for i := 0; i < 10; i++ {
		a := h.lease(newClient(i))
		if a.As16()[15]&1 != 1 || !inPool(a, pool1) {
			t.Fatalf("odd-parity server leased %v", a)
		}
	}
	lone := addr("2001:db8:1::1001") // odd: nothing for an even server
	e := newHarness(t, func(c *Config) {
		c.Policy = parityPolicy{Standalone{Hold: time.Hour}, 0}
		c.Subnets[0].Pools = []AddressRange{{lone, lone}}
	})
	for round := 0; round < 2; round++ {
		c := newClient(round)
		adv := e.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
		if ia := findIANA(adv, c.iaid); ia == nil || status(ia.Options) != int(iana.StatusNoAddrsAvail) || len(ia.Options.Addresses()) != 0 {
			t.Fatalf("round %d: even server with pool [%v] offered %v", round, lone, ia)
		}
		e.restart()
	}
}

// TestDuplicateMessagesOneLease: two copies of one client message handled
// at the same time (two relays on a link forward every message) give the
// IA one lease, not two.
func TestDuplicateMessagesOneLease(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RapidCommit = true })
	const clients = 100
	var wg sync.WaitGroup
	for i := 1; i <= clients; i++ {
		b := newClient(i).solicit(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}).ToBytes()
		for copies := 0; copies < 2; copies++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := h.srv.Handle(b, linkInfo); err != nil {
					t.Errorf("Handle: %v", err)
				}
			}()
		}
	}
	wg.Wait()
	for i := 1; i <= clients; i++ {
		c := newClient(i)
		if got := h.state().Client(c.key(), fsm.IANA, c.iaidNum()); len(got) != 1 {
			t.Fatalf("client %d holds %d addresses for one IA after a duplicated Solicit", i, len(got))
		}
	}
}

// TestPDLengthChangeRefused: restarting with a different delegated-length
// while prefixes of the old length are bound is refused (a /56 in use and a
// /60 inside it would both be given out otherwise).
func TestPDLengthChangeRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newClient(1)
	adv := h.exchange(c.solicit(c.pd()), dhcpv6.MessageTypeAdvertise)
	req, _ := dhcpv6.NewRequestFromAdvertise(adv)
	h.exchange(req, dhcpv6.MessageTypeReply)
	h.srv.Close()
	cfg := h.cfg
	cfg.Subnets = append([]SubnetConfig(nil), cfg.Subnets...)
	cfg.Subnets[0].PDPools = []PDPool{{Prefix: pdPrefix, DelegatedLength: 60}}
	if _, err := New(cfg, h.store); err == nil || !strings.Contains(err.Error(), "still bound") {
		t.Fatalf("New with a changed delegated-length: %v", err)
	}
	h.srv, _ = New(h.cfg, h.store) // the old length still works
}

// secondaryPolicy is Standalone as a failover secondary sees delegable
// prefixes: an unrecorded prefix is the primary's; only FREE-BACKUP ones
// (handed over by the primary) may be delegated.
type secondaryPolicy struct{ Standalone }

func (secondaryPolicy) UntrackedAvailable(t fsm.IAType) bool { return t != fsm.IAPD }
func (secondaryPolicy) Available(b *fsm.Binding, _ string) bool {
	return b.Status == fsm.StatusFreeBackup
}

// TestSecondaryDelegatesOnlyFreeBackup: with unrecorded prefixes not ours,
// the only prefix delegated is the one recorded FREE-BACKUP; the next client
// gets NoPrefixAvail (before the fix, the secondary delegated the primary's
// prefixes and two servers could hand one prefix to two clients).
func TestSecondaryDelegatesOnlyFreeBackup(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.Policy = secondaryPolicy{Standalone{Hold: time.Hour}} })
	given := fsm.PrefixResource(netip.MustParsePrefix("2001:db8:80ab:cd00::/56"))
	if _, err := h.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: t0.UnixNano(), Ops: []fsm.Op{{Resource: given, IfRev: 0,
		Binding: fsm.Binding{Resource: given, Status: fsm.StatusFreeBackup}}}}); err != nil {
		t.Fatal(err)
	}
	c1, c2 := newClient(1), newClient(2)
	adv, _ := dhcpv6.NewRequestFromAdvertise(h.exchange(c1.solicit(c1.pd()), dhcpv6.MessageTypeAdvertise))
	rep := h.exchange(adv, dhcpv6.MessageTypeReply)
	pd := findIAPD(rep, c1.pdid)
	if pd == nil || len(pd.Options.Prefixes()) != 1 || prefixOf(pd.Options.Prefixes()[0]) != given.Prefix() {
		t.Fatalf("first client got %v, want the FREE-BACKUP prefix %v", pd, given.Prefix())
	}
	rep2 := h.exchange(c2.solicit(c2.pd()), dhcpv6.MessageTypeAdvertise)
	if pd2 := findIAPD(rep2, c2.pdid); pd2 == nil || len(pd2.Options.Prefixes()) != 0 || status(pd2.Options) != int(iana.StatusNoPrefixAvail) {
		t.Fatalf("second client: %v, want NoPrefixAvail (unrecorded prefixes are the primary's)", pd2)
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for r, want := range map[fsm.Resource]bool{
		fsm.AddrResource(fsm.IANA, pool1.First):                         true,
		fsm.AddrResource(fsm.IANA, addr("2001:db8:99::1")):              false,
		fsm.PrefixResource(netip.PrefixFrom(pdPrefix.Addr(), 56)):       true,
		fsm.PrefixResource(netip.PrefixFrom(pdPrefix.Addr(), 60)):       false,
		fsm.PrefixResource(netip.MustParsePrefix("2001:db8:ff00::/56")): false,
	} {
		if got := h.srv.Covers(r); got != want {
			t.Errorf("Covers(%v) = %v, want %v", r, got, want)
		}
	}
}
