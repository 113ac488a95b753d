package failover

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// upPair starts a fresh pair (secondary first) and waits for NORMAL/NORMAL.
// setup, if given, configures the nodes before they start.
func upPair(t *testing.T, setup ...func(*pairEnv)) *pairEnv {
	t.Helper()
	p := newPairEnv(t)
	for _, f := range setup {
		f(p)
	}
	p.sec.start()
	p.pri.start()
	p.connect()
	p.waitStates("NORMAL", "NORMAL")
	return p
}

// waitAcked waits until neither partner owes the other an update.
func (p *pairEnv) waitAcked() {
	p.t.Helper()
	waitFor(p.t, "every update acknowledged", func() bool { return p.pri.owed() == 0 && p.sec.owed() == 0 })
}

// TestPairFreshStartMCLT: a fresh pair reaches NORMAL through RECOVER; the
// primary's first grant is capped at the MCLT, the secondary learns the
// binding (ACTIVE, expiration-time = the partner lifetime sent), the
// primary records the acknowledgement, and the Renew at T1 gets the full
// desired lifetime (RFC 8156 §4.4.1 / the §6.3 worked example, end to end).
func TestPairFreshStartMCLT(t *testing.T) {
	p := upPair(t)

	// Both came up from nothing: RECOVER (first start), then RECOVER-WAIT /
	// RECOVER-DONE without a wait (neither ever communicated), then NORMAL.
	for _, n := range []*node{p.pri, p.sec} {
		st := n.statesSince(0)
		if st[0] != "STARTUP" || st[1] != "RECOVER" || st[len(st)-1] != "NORMAL" ||
			!slices.Contains(st, "RECOVER-DONE") {
			t.Errorf("%s states %v, want STARTUP, RECOVER, ..., RECOVER-DONE, ..., NORMAL", n.name, st)
		}
		t.Logf("%s: %v", n.name, n.transitions())
	}

	c := newClient(1)
	granted := p.clk.Now()
	l := p.pri.lease(c)
	if !odd(l.addr) {
		t.Errorf("primary gave %v: not an odd (primary) address", l.addr)
	}
	if l.valid != testMCLT {
		t.Errorf("first grant valid lifetime %v, want the MCLT %v (desired %v)", l.valid, testMCLT, validLT)
	}
	if l.t1 != testMCLT/2 {
		t.Errorf("first grant T1 %v, want %v", l.t1, testMCLT/2)
	}
	// The partner lifetime promised: T1 (half the actual lifetime) plus the
	// full desired lifetime (§4.4.1).
	wantPL := granted.Unix() + int64(testMCLT/2/time.Second) + int64(validLT/time.Second)

	waitFor(t, "the binding on the secondary", func() bool {
		b, ok := p.sec.get(l.addr)
		return ok && b.Status == fsm.StatusActive
	})
	sb, _ := p.sec.get(l.addr)
	if sb.DUID != c.Key() || sb.ExpirationTime != wantPL {
		t.Errorf("secondary binding %+v: want client %x, ExpirationTime %d", sb, c.Key(), wantPL)
	}
	if sb.StateExpirationTime != granted.Add(testMCLT).Unix() {
		t.Errorf("secondary state-expiration-time %d, want %d", sb.StateExpirationTime, granted.Add(testMCLT).Unix())
	}
	waitFor(t, "the primary to record the acknowledgement", func() bool {
		b, _ := p.pri.get(l.addr)
		return b.PartnerLifetime == 0 && b.AckedPartnerLifetime != 0
	})
	pb, _ := p.pri.get(l.addr)
	if pb.AckedPartnerLifetime != wantPL || pb.Owed() {
		t.Errorf("primary binding %+v: want AckedPartnerLifetime %d and nothing owed", pb, wantPL)
	}

	// Renew at T1: the acknowledged partner lifetime now allows the full
	// desired lifetime.
	p.advance(l.t1)
	r := p.pri.renew(c, l.addr)
	if r.addr != l.addr || r.valid != validLT {
		t.Errorf("Renew at T1: %v valid %v, want %v valid %v", r.addr, r.valid, l.addr, validLT)
	}
	if r.t1 != renewT1 {
		t.Errorf("Renew at T1: T1 %v, want the configured %v", r.t1, renewT1)
	}
	renewed := p.clk.Now()
	waitFor(t, "the renewal on the secondary", func() bool {
		b, _ := p.sec.get(l.addr)
		return b.StateExpirationTime == renewed.Add(validLT).Unix()
	})
	p.waitAcked()
	if d := p.sameBindings(); d != "" {
		t.Errorf("binding tables differ: %s", d)
	}
}

// TestPairSecondaryRenewResponsive: a secondary in NORMAL is
// renew-responsive (RFC 8156 §3, digest §4.1): it drops a Solicit, drops a
// Renew meant for the primary, answers a Renew carrying its own Server ID
// (capped by the MCLT: it holds no acknowledged partner lifetime of its
// own) and sends the primary an update for it; it never allocates.
func TestPairSecondaryRenewResponsive(t *testing.T) {
	p := upPair(t)
	c := newClient(7)
	l := p.pri.lease(c)
	p.waitAcked()

	p.sec.expectDrop(c.Msg(dhcpv6.MessageTypeSolicit, c.IANA()))
	p.sec.expectDrop(c.Msg(dhcpv6.MessageTypeSolicit, c.IANA(), &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}))
	p.sec.expectDrop(c.Msg(dhcpv6.MessageTypeRenew, p.pri.sid(), c.IANA(l.addr)))
	p.sec.expectDrop(c.Msg(dhcpv6.MessageTypeRebind, c.IANA(l.addr)))

	p.advance(10 * time.Second)
	renewed := p.clk.Now()
	r := p.sec.renew(c, l.addr)
	if r.addr != l.addr || r.valid != testMCLT {
		t.Fatalf("secondary Renew: %v valid %v, want %v valid %v (MCLT cap)", r.addr, r.valid, l.addr, testMCLT)
	}
	if !bytes.Equal(r.replyFromSID, p.sec.srv.DUID()) {
		t.Errorf("Renew answered with Server ID %x, want the secondary's %x", r.replyFromSID, p.sec.srv.DUID())
	}
	// A Renew from a client the secondary has never heard of: answered,
	// NoBinding, nothing allocated.
	stranger := newClient(8)
	before := len(p.sec.bindings())
	sr := leaseOf(stranger, p.sec.exchange(stranger.Msg(dhcpv6.MessageTypeRenew, p.sec.sid(),
		stranger.IANA(netip.MustParseAddr("2001:db8:1::1002"))), dhcpv6.MessageTypeReply))
	if sr.addr.IsValid() || sr.statusCode != int(iana.StatusNoBinding) {
		t.Errorf("Renew of an unknown lease: %+v, want NoBinding and no address", sr)
	}
	if n := len(p.sec.bindings()); n != before {
		t.Errorf("the renew-responsive secondary committed %d new bindings", n-before)
	}

	// The secondary's renewal reaches the primary (new state-expiration-time)
	// and is acknowledged.
	waitFor(t, "the secondary's renewal on the primary", func() bool {
		b, _ := p.pri.get(l.addr)
		return b.StateExpirationTime == renewed.Add(testMCLT).Unix() && b.DUID == c.Key() && b.Status == fsm.StatusActive
	})
	p.waitAcked()
	sb, _ := p.sec.get(l.addr)
	if sb.AckedPartnerLifetime == 0 || sb.CLTT != renewed.Unix() {
		t.Errorf("secondary binding after the primary's BNDREPLY: %+v, want AckedPartnerLifetime set, CLTT %d", sb, renewed.Unix())
	}
	if got := []string{p.pri.state(), p.sec.state()}; got[0] != "NORMAL" || got[1] != "NORMAL" {
		t.Errorf("states %v, want NORMAL NORMAL", got)
	}
}

// partition makes the link between the partners silent (both directions
// lose every byte) and refuses new connections, then moves the clock past
// the keepalive time so that both ends declare the connection dead.
func (p *pairEnv) partition() {
	p.t.Helper()
	p.net.BlackHole(priAddr, secAddr)
	p.clk.Advance(testKeepalive + time.Second)
	waitFor(p.t, "both links down", func() bool { return !p.pri.stats().Connected && !p.sec.stats().Connected })
	p.net.Partition(priAddr, secAddr)
}

func (p *pairEnv) heal() {
	p.t.Helper()
	p.net.Heal(priAddr, secAddr)
	p.connect()
}

// TestPairPartition: a silent link is detected by the keepalive; both go to
// COMMUNICATIONS-INTERRUPTED and serve, the primary from the odd addresses
// and the secondary from the even ones, both capped by the MCLT. After the
// partition heals both return to NORMAL and exchange what they did apart.
func TestPairPartition(t *testing.T) {
	p := upPair(t)
	pre := newClient(1)
	lpre := p.pri.lease(pre)
	p.waitAcked()
	nPri, nSec := len(p.pri.transitions()), len(p.sec.transitions())

	p.partition()
	p.waitStates("COMMUNICATIONS-INTERRUPTED", "COMMUNICATIONS-INTERRUPTED")
	var keepalive uint64
	for _, n := range []*node{p.pri, p.sec} {
		keepalive += n.stats().Downs["keepalive-expired"]
	}
	if keepalive == 0 {
		t.Errorf("no session ended by the keepalive: primary %v, secondary %v", p.pri.stats().Downs, p.sec.stats().Downs)
	}

	p.clk.Advance(5 * time.Second)
	leases := map[netip.Addr]*dhcpClient{}
	for i := 0; i < 6; i++ {
		n, c := p.pri, newClient(100+i)
		if i%2 == 1 {
			n = p.sec
		}
		l := n.lease(c)
		if odd(l.addr) != (n == p.pri) {
			t.Errorf("%s allocated %v: wrong parity for its role", n.name, l.addr)
		}
		if l.valid != testMCLT {
			t.Errorf("%s gave %v a valid lifetime %v, want the MCLT %v", n.name, l.addr, l.valid, testMCLT)
		}
		leases[l.addr] = c
	}
	// The pre-partition client rebinds with the secondary (the primary is
	// out of reach): extended, but capped by the MCLT (the secondary holds no
	// acknowledged partner lifetime for it).
	rb := leaseOf(pre, p.sec.exchange(pre.Msg(dhcpv6.MessageTypeRebind, pre.IANA(lpre.addr)), dhcpv6.MessageTypeReply))
	if rb.addr != lpre.addr || rb.valid > testMCLT {
		t.Errorf("secondary Rebind of %v: %v valid %v, want the same address, at most the MCLT", lpre.addr, rb.addr, rb.valid)
	}
	if p.pri.owed() != 3 || p.sec.owed() != 4 {
		t.Errorf("owed updates: primary %d, secondary %d; want 3 and 4", p.pri.owed(), p.sec.owed())
	}

	p.heal()
	p.waitStates("NORMAL", "NORMAL")
	for _, n := range []*node{p.pri, p.sec} {
		if st := n.statesSince(map[*node]int{p.pri: nPri, p.sec: nSec}[n]); !slices.Equal(st, []string{"COMMUNICATIONS-INTERRUPTED", "NORMAL"}) {
			t.Errorf("%s states since the partition %v, want [COMMUNICATIONS-INTERRUPTED NORMAL]", n.name, st)
		}
	}
	p.waitAcked()
	for a, c := range leases {
		for _, n := range []*node{p.pri, p.sec} {
			b, ok := n.get(a)
			if !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() {
				t.Errorf("%s: %v is %+v, want ACTIVE for client %x", n.name, a, b, c.Key())
			}
		}
	}
	if d := p.sameBindings(); d != "" {
		t.Errorf("binding tables differ after the heal: %s", d)
	}
	if b, _ := p.pri.get(lpre.addr); b.StateExpirationTime < p.clk.Now().Unix() {
		t.Errorf("primary did not learn the secondary's Rebind of %v: %+v", lpre.addr, b)
	}
}

// TestPairOperatorPartnerDownAndPrimaryReturn: the primary stops (cleanly:
// Run cancelled, store closed); the secondary goes to
// COMMUNICATIONS-INTERRUPTED, the operator declares PARTNER-DOWN, and it
// serves new clients from its own (even) addresses without the MCLT cap.
// The primary restarts from its data dir; both reach NORMAL and hold the
// same bindings.
//
// Two variants: PARTNER-DOWN declared well after the primary's time of
// failure (its last stored operation + the checkpoint): the primary returns
// through RECOVER (§8.3.2 step 5); declared at once: through
// POTENTIAL-CONFLICT, the safe side.
func TestPairOperatorPartnerDownAndPrimaryReturn(t *testing.T) {
	t.Run("recover", func(t *testing.T) { testOperatorPartnerDown(t, 2*time.Minute, "RECOVER") })
	t.Run("potential-conflict", func(t *testing.T) { testOperatorPartnerDown(t, 0, "POTENTIAL-CONFLICT") })
}

func testOperatorPartnerDown(t *testing.T, wait time.Duration, via string) {
	p := upPair(t)
	before := map[netip.Addr]*dhcpClient{}
	for i := 0; i < 3; i++ {
		c := newClient(10 + i)
		before[p.pri.lease(c).addr] = c
	}
	p.waitAcked()
	nSec := len(p.sec.transitions())

	p.pri.stop()
	waitFor(t, "the secondary in COMMUNICATIONS-INTERRUPTED", func() bool { return p.sec.state() == "COMMUNICATIONS-INTERRUPTED" })
	// From COMMUNICATIONS-INTERRUPTED the command is allowed (§8.9.2).
	p.advance(wait)
	pdAt := p.clk.Now()
	if err := p.sec.ep.PartnerDown(); err != nil {
		t.Fatalf("PartnerDown: %v", err)
	}
	if st := p.sec.state(); st != "PARTNER-DOWN" {
		t.Fatalf("after PartnerDown the secondary is in %s", st)
	}
	if got := p.sec.store.State().Endpoint(); got.State != uint8(wire.StatePartnerDown) || got.PartnerDownTime != pdAt.Unix() {
		t.Errorf("stored endpoint record %+v: want PARTNER-DOWN since %d (persisted before PartnerDown returns)", got, pdAt.Unix())
	}
	if err := p.sec.ep.PartnerDown(); err != nil {
		t.Errorf("PartnerDown again in PARTNER-DOWN: %v, want a no-op", err)
	}

	p.advance(time.Minute)
	during := map[netip.Addr]*dhcpClient{}
	for i := 0; i < 4; i++ {
		c := newClient(20 + i)
		l := p.sec.lease(c)
		if odd(l.addr) {
			t.Errorf("secondary in PARTNER-DOWN allocated the primary's address %v", l.addr)
		}
		if l.valid != validLT {
			t.Errorf("secondary in PARTNER-DOWN gave valid lifetime %v, want the full %v (no MCLT cap, §8.4.1)", l.valid, validLT)
		}
		during[l.addr] = c
	}
	// A client of the primary renews with the secondary.
	var moved netip.Addr
	for a, c := range before {
		moved = a
		if r := p.sec.rebind(c, a); r.addr != a || r.valid != validLT {
			t.Errorf("Rebind of %v in PARTNER-DOWN: %v valid %v, want %v valid %v", a, r.addr, r.valid, a, validLT)
		}
		break
	}
	rebound := p.clk.Now()

	nPri := len(p.pri.transitions())
	p.pri.start()
	p.connect()
	waitFor(t, "the primary out of STARTUP and RECOVER", func() bool {
		s := p.pri.state()
		return s != "STARTUP" && s != "RECOVER"
	})
	if p.pri.state() == "RECOVER-WAIT" {
		p.advance(testMCLT)
	}
	p.waitStates("NORMAL", "NORMAL")
	pst, sst := p.pri.statesSince(nPri), p.sec.statesSince(nSec)
	t.Logf("primary after restart: %v", pst)
	t.Logf("secondary: %v", sst)
	if len(pst) > 1 {
		t.Logf("the primary returned through %s", pst[1])
	}
	wantPri := []string{"STARTUP", "RECOVER", "RECOVER-WAIT", "RECOVER-DONE", "NORMAL"}
	wantSec := []string{"COMMUNICATIONS-INTERRUPTED", "PARTNER-DOWN", "NORMAL"}
	if via == "POTENTIAL-CONFLICT" {
		wantPri = []string{"STARTUP", "POTENTIAL-CONFLICT", "CONFLICT-DONE", "NORMAL"}
		wantSec = []string{"COMMUNICATIONS-INTERRUPTED", "PARTNER-DOWN", "POTENTIAL-CONFLICT", "NORMAL"}
	}
	if !slices.Equal(pst, wantPri) {
		t.Errorf("primary states after restart %v, want %v", pst, wantPri)
	}
	if !slices.Equal(sst, wantSec) {
		t.Errorf("secondary states %v, want %v", sst, wantSec)
	}

	p.waitAcked()
	if d := p.sameBindings(); d != "" {
		t.Errorf("binding tables differ: %s", d)
	}
	for a, c := range during {
		if b, ok := p.pri.get(a); !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() {
			t.Errorf("primary: the secondary's PARTNER-DOWN lease %v is %+v", a, b)
		}
	}
	if b, _ := p.pri.get(moved); b.StateExpirationTime != rebound.Add(validLT).Unix() {
		t.Errorf("primary: %v expires at %d, want the secondary's rebind + %v = %d", moved, b.StateExpirationTime, validLT, rebound.Add(validLT).Unix())
	}
	if len(p.pri.bindings()) != len(before)+len(during) {
		t.Errorf("primary holds %d bindings, want %d", len(p.pri.bindings()), len(before)+len(during))
	}
}

// TestPairBothPartnerDownConflict: the partners are cut off from each other
// and the operator declares PARTNER-DOWN on both (the case RFC 8156's
// POTENTIAL-CONFLICT exists for). Both serve; one address ends up ACTIVE
// for different clients on the two sides (the secondary extended client A,
// the primary later gave the address, released by A and past its reuse
// time, to client D). After the heal both go through POTENTIAL-CONFLICT;
// the primary through CONFLICT-DONE; both end in NORMAL with the same
// bindings, the newer lease (D's) winning, and no address ACTIVE for two
// clients.
func TestPairBothPartnerDownConflict(t *testing.T) {
	p := upPair(t)
	a := newClient(1)
	la := p.pri.lease(a)
	p.waitAcked()
	nPri, nSec := len(p.pri.transitions()), len(p.sec.transitions())

	p.partition()
	p.waitStates("COMMUNICATIONS-INTERRUPTED", "COMMUNICATIONS-INTERRUPTED")
	for _, n := range []*node{p.pri, p.sec} {
		if err := n.ep.PartnerDown(); err != nil {
			t.Fatalf("%s: PartnerDown: %v", n.name, err)
		}
	}
	p.waitStates("PARTNER-DOWN", "PARTNER-DOWN")

	p.advance(time.Minute)
	// A (the primary's client) rebinds with the secondary: extended there.
	if r := p.sec.rebind(a, la.addr); r.addr != la.addr || r.valid != validLT {
		t.Fatalf("secondary Rebind of %v: %+v", la.addr, r)
	}
	p.advance(time.Minute)
	// ... then releases it to the primary.
	p.pri.release(a, la.addr)
	if b, _ := p.pri.get(la.addr); b.Status != fsm.StatusReleased || !b.Owed() {
		t.Fatalf("primary after Release: %+v, want RELEASED with an update owed", b)
	}
	side := map[netip.Addr]*dhcpClient{}
	for i := 0; i < 4; i++ {
		n := []*node{p.pri, p.sec}[i%2]
		c := newClient(30 + i)
		l := n.lease(c)
		if odd(l.addr) != (n == p.pri) || l.valid != validLT {
			t.Errorf("%s in PARTNER-DOWN gave %v valid %v: want own parity, uncapped %v", n.name, l.addr, l.valid, validLT)
		}
		side[l.addr] = c
	}
	// The released address is not reused before its reuse time (the
	// acknowledged partner lifetime + MCLT, §8.4.1)...
	d := newClient(40)
	if l := p.pri.rapidLeaseHint(d, la.addr); l.addr == la.addr {
		t.Fatalf("primary gave the released %v to another client before its PARTNER-DOWN reuse time", la.addr)
	} else {
		side[l.addr] = d
		p.pri.release(d, l.addr)
		delete(side, l.addr)
	}
	// ... but is after it.
	p.advance(validLT + 5*time.Minute)
	ld := p.pri.rapidLeaseHint(d, la.addr)
	if ld.addr != la.addr {
		t.Fatalf("primary did not give %v to client D after the reuse time: got %v", la.addr, ld.addr)
	}
	side[ld.addr] = d
	if sb, _ := p.sec.get(la.addr); sb.DUID != a.Key() || sb.Status != fsm.StatusActive {
		t.Fatalf("secondary: %v is %+v, want ACTIVE for A", la.addr, sb)
	}

	p.heal()
	p.waitStates("NORMAL", "NORMAL")
	pst, sst := p.pri.statesSince(nPri), p.sec.statesSince(nSec)
	t.Logf("primary: %v; secondary: %v", pst, sst)
	if !slices.Equal(pst, []string{"COMMUNICATIONS-INTERRUPTED", "PARTNER-DOWN", "POTENTIAL-CONFLICT", "CONFLICT-DONE", "NORMAL"}) {
		t.Errorf("primary states %v, want ... PARTNER-DOWN POTENTIAL-CONFLICT CONFLICT-DONE NORMAL", pst)
	}
	if !slices.Equal(sst, []string{"COMMUNICATIONS-INTERRUPTED", "PARTNER-DOWN", "POTENTIAL-CONFLICT", "NORMAL"}) {
		t.Errorf("secondary states %v, want ... PARTNER-DOWN POTENTIAL-CONFLICT NORMAL", sst)
	}
	p.waitAcked()
	if s := p.noDoubleActive(); s != "" {
		t.Errorf("addresses ACTIVE for different clients on the two sides: %s", s)
	}
	if s := p.sameBindings(); s != "" {
		t.Errorf("binding tables differ: %s", s)
	}
	for addr, c := range side {
		for _, n := range []*node{p.pri, p.sec} {
			if b, ok := n.get(addr); !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() {
				t.Errorf("%s: %v is %+v, want ACTIVE for %x", n.name, addr, b, c.Key())
			}
		}
	}
}

// TestPairSecondaryLostDatabase: a secondary whose data dir is gone starts
// from nothing while the primary remembers it (COMMUNICATED): it must ask
// for everything (UPDREQALL, §8.5.2), wait out the MCLT in RECOVER-WAIT
// (its partner remembers it, so it may have served) and end with the
// primary's bindings.
func TestPairSecondaryLostDatabase(t *testing.T) {
	const count = 2000
	p := upPair(t)
	start := time.Now()
	leases := p.pri.leaseMany(1000, count)
	p.waitAcked()
	t.Logf("%d leases made and replicated in NORMAL in %v", count, time.Since(start).Round(time.Millisecond))
	if n := len(p.sec.bindings()); n != count {
		t.Fatalf("the secondary holds %d bindings before the loss, want %d", n, count)
	}

	p.sec.stop()
	waitFor(t, "the primary in COMMUNICATIONS-INTERRUPTED", func() bool { return p.pri.state() == "COMMUNICATIONS-INTERRUPTED" })
	p.sec.wipe()
	nSec := len(p.sec.transitions())
	priStats := p.pri.stats()

	start = time.Now()
	p.sec.start()
	p.connect()
	waitFor(t, "the secondary's UPDREQALL answered", func() bool { return p.sec.state() == "RECOVER-WAIT" })
	took := time.Since(start)
	if n := len(p.sec.bindings()); n != count {
		t.Fatalf("after UPDDONE the secondary holds %d bindings, want %d", n, count)
	}
	t.Logf("UPDREQALL transfer of %d bindings: %v (%.0f bindings/s, from the new secondary's start)",
		count, took.Round(time.Millisecond), float64(count)/took.Seconds())
	ss, ps := p.sec.stats(), p.pri.stats()
	if ss.Sent[wire.MsgUpdReqAll] != 1 || ss.Sent[wire.MsgUpdReq] != 0 {
		t.Errorf("secondary sent UPDREQALL %d times and UPDREQ %d times, want once and never", ss.Sent[wire.MsgUpdReqAll], ss.Sent[wire.MsgUpdReq])
	}
	if n := ps.Sent[wire.MsgBndUpd] - priStats.Sent[wire.MsgBndUpd]; n < count {
		t.Errorf("primary sent %d BNDUPDs for the UPDREQALL, want at least %d", n, count)
	}
	if n := ps.Sent[wire.MsgUpdDone] - priStats.Sent[wire.MsgUpdDone]; n != 1 {
		t.Errorf("primary sent %d UPDDONEs to the recovering secondary, want 1", n)
	}
	// RECOVER-WAIT lasts the MCLT: not over a second early.
	p.advance(testMCLT - 2*time.Second)
	if s := p.sec.state(); s != "RECOVER-WAIT" {
		t.Errorf("secondary left RECOVER-WAIT before the MCLT had passed: %s", s)
	}
	p.advance(2 * time.Second)
	p.waitStates("NORMAL", "NORMAL")
	if st := p.sec.statesSince(nSec); !slices.Equal(st, []string{"STARTUP", "RECOVER", "RECOVER-WAIT", "RECOVER-DONE", "NORMAL"}) {
		t.Errorf("recovering secondary's states %v, want STARTUP RECOVER RECOVER-WAIT RECOVER-DONE NORMAL", st)
	}
	p.waitAcked()
	if d := p.sameBindings(); d != "" {
		t.Errorf("binding tables differ: %s", d)
	}
	for a, c := range leases {
		if b, ok := p.sec.get(a); !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() || b.ExpirationTime == 0 {
			t.Fatalf("secondary: %v is %+v, want ACTIVE for %x with an expiration-time", a, b, c.Key())
		}
	}
}

// gatedStore holds back the partner's binding updates (Origin Partner) at
// the door of the real store while its gate is closed, and tells the test
// each time one arrives there.
type gatedStore struct {
	Store
	mu      sync.Mutex
	gate    chan struct{} // nil: open; else Applies wait until it is closed
	entered chan *fsm.Command
}

func (g *gatedStore) Apply(cmd *fsm.Command) (uint64, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if cmd.Origin == fsm.OriginPartner && gate != nil {
		g.entered <- cmd
		<-gate
	}
	return g.Store.Apply(cmd)
}

func (g *gatedStore) close() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
	return g.gate
}

// replyCheck is what the primary saw when a BNDREPLY arrived: whether the
// secondary's database already held each binding the BNDUPD described.
type replyCheck struct {
	xid     uint32
	checked int
	missing []string
}

// TestPairBndReplyAfterCommit: the secondary answers a BNDUPD only once
// the binding is committed (RFC 8156 §7.5.2, B8).
//
// Two observations. (1) Every BNDREPLY the primary receives is checked, on
// the primary's link goroutine before the endpoint sees it, against the
// secondary's live database: each binding the BNDUPD described (the
// primary's in-flight record for the transaction-id) must be there already
// with that client and status. (2) Deterministically: with the secondary's
// store holding a BNDUPD's commit at the door, a CONTACT the test queues on
// the secondary's link behind anything already queued reaches the primary
// while no BNDREPLY has; only after the commit is let through does the
// BNDREPLY follow.
func TestPairBndReplyAfterCommit(t *testing.T) {
	var gs *gatedStore
	var mu sync.Mutex
	var checks []replyCheck
	p := upPair(t, func(p *pairEnv) {
		p.sec.wrapStore = func(s Store) Store {
			gs = &gatedStore{Store: s, entered: make(chan *fsm.Command, 16)}
			return gs
		}
		p.pri.onReceive = func(ep *Endpoint, m *wire.Message) {
			if m.Type != wire.MsgBndReply {
				return
			}
			ep.mu.Lock()
			u := ep.inflight[m.XID]
			ep.mu.Unlock()
			c := replyCheck{xid: m.XID}
			if u != nil {
				for _, b := range u.Bindings {
					c.checked++
					sb, ok := p.sec.store.State().Get(b.Resource)
					if !ok || sb.DUID != b.DUID || sb.Status != b.Status || sb.StateExpirationTime != b.StateExpirationTime {
						c.missing = append(c.missing, fmt.Sprintf("%v: sent %v/%x exp %d, secondary holds %+v (found %v)",
							b.Resource, b.Status, b.DUID, b.StateExpirationTime, sb, ok))
					}
				}
			}
			mu.Lock()
			checks = append(checks, c)
			mu.Unlock()
		}
	})
	verify := func(wantChecked int) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range checks {
			n += c.checked
			if len(c.missing) > 0 {
				t.Errorf("BNDREPLY xid %#x reached the primary before the secondary held: %v", c.xid, c.missing)
			}
		}
		if n < wantChecked {
			t.Errorf("checked %d bindings at BNDREPLY arrival, want at least %d", n, wantChecked)
		}
	}

	// (1) Updates flowing freely.
	for i := 0; i < 20; i++ {
		p.pri.lease(newClient(50 + i))
	}
	p.waitAcked()
	verify(20)

	// (2) One update held at the secondary's store.
	gate := gs.close()
	replies := p.pri.stats().Received[wire.MsgBndReply]
	c := newClient(99)
	l := p.pri.lease(c)
	var cmd *fsm.Command
	select {
	case cmd = <-gs.entered:
	case <-time.After(waitTimeout):
		t.Fatal("the BNDUPD never reached the secondary's store")
	}
	if len(cmd.Ops) != 1 || cmd.Ops[0].Binding.Resource.Addr() != l.addr {
		t.Fatalf("held commit %+v, want the binding of %v", cmd.Ops, l.addr)
	}
	contacts := p.pri.stats().Received[wire.MsgContact]
	if err := p.sec.ep.link.Send(wire.NewContact(p.sec.ep.link.NewXID(), 0)); err != nil {
		t.Fatalf("queue CONTACT on the secondary: %v", err)
	}
	waitFor(t, "the CONTACT behind anything the secondary had queued", func() bool {
		return p.pri.stats().Received[wire.MsgContact] > contacts
	})
	if got := p.pri.stats().Received[wire.MsgBndReply]; got != replies {
		t.Fatalf("the secondary sent a BNDREPLY (%d -> %d) while the BNDUPD's commit was held", replies, got)
	}
	if _, ok := p.sec.get(l.addr); ok {
		t.Fatalf("the secondary holds %v although its commit is held", l.addr)
	}
	close(gate)
	waitFor(t, "the BNDREPLY after the commit", func() bool { return p.pri.stats().Received[wire.MsgBndReply] > replies })
	p.waitAcked()
	verify(21)
	if b, _ := p.sec.get(l.addr); b.Status != fsm.StatusActive || b.DUID != c.Key() {
		t.Errorf("secondary: %v is %+v", l.addr, b)
	}
}

// TestPairPartnerDownWithLivePartner: the operator declares PARTNER-DOWN on
// the secondary in NORMAL although the primary is alive. The secondary drops
// the connection without announcing PARTNER-DOWN (machine decision 14); the
// primary reconnects and both resolve through POTENTIAL-CONFLICT, ending in
// NORMAL with what the secondary granted meanwhile.
func TestPairPartnerDownWithLivePartner(t *testing.T) {
	p := upPair(t)
	nPri, nSec := len(p.pri.transitions()), len(p.sec.transitions())
	disc := p.pri.stats().Received[wire.MsgDisconnect]
	if err := p.sec.ep.PartnerDown(); err != nil {
		t.Fatalf("PartnerDown in NORMAL: %v", err)
	}
	if s := p.sec.state(); s != "PARTNER-DOWN" {
		t.Fatalf("secondary in %s after PartnerDown", s)
	}
	waitFor(t, "the primary to lose the connection", func() bool { return p.pri.stats().Downs["partner-disconnect"] > 0 })
	if got := p.pri.stats().Received[wire.MsgDisconnect]; got != disc+1 {
		t.Errorf("primary received %d DISCONNECTs, want %d", got, disc+1)
	}
	// The secondary serves as PARTNER-DOWN while the primary is away.
	c := newClient(5)
	l := p.sec.lease(c)
	if odd(l.addr) || l.valid != validLT {
		t.Errorf("secondary in PARTNER-DOWN: %v valid %v", l.addr, l.valid)
	}
	p.connect()
	p.waitStates("NORMAL", "NORMAL")
	pst, sst := p.pri.statesSince(nPri), p.sec.statesSince(nSec)
	if !slices.Equal(pst, []string{"COMMUNICATIONS-INTERRUPTED", "POTENTIAL-CONFLICT", "CONFLICT-DONE", "NORMAL"}) {
		t.Errorf("primary states %v", pst)
	}
	if !slices.Equal(sst, []string{"PARTNER-DOWN", "POTENTIAL-CONFLICT", "NORMAL"}) {
		t.Errorf("secondary states %v", sst)
	}
	p.waitAcked()
	if b, ok := p.pri.get(l.addr); !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() {
		t.Errorf("primary: %v is %+v", l.addr, b)
	}
	if d := p.sameBindings(); d != "" {
		t.Errorf("binding tables differ: %s", d)
	}
}

// failingStore fails the endpoint's state records (CmdSetEndpoint) while
// fail is set, as a full disk would.
type failingStore struct {
	Store
	fail atomic.Bool
}

func (f *failingStore) Apply(cmd *fsm.Command) (uint64, error) {
	if cmd.Type == fsm.CmdSetEndpoint && f.fail.Load() {
		return 0, errors.New("test: disk full")
	}
	return f.Store.Apply(cmd)
}

// TestPairPersistFailure: a transition that cannot be stored is neither
// published nor announced (S2). PartnerDown reports the failure (it
// "persists the decision before it returns"); the endpoint drops the
// connection and restarts from its stored record (package machine: "restart
// the endpoint from what is stored"), so a later batch cannot publish the
// unstored state; once the store works again the pair meets in NORMAL, and
// the primary never saw PARTNER-DOWN.
func TestPairPersistFailure(t *testing.T) {
	var fs *failingStore
	p := upPair(t, func(p *pairEnv) {
		p.sec.wrapStore = func(s Store) Store { fs = &failingStore{Store: s}; return fs }
	})
	nPri := len(p.pri.transitions())
	fs.fail.Store(true)
	err := p.sec.ep.PartnerDown()
	if err == nil {
		t.Errorf("PartnerDown returned nil although nothing was stored")
	}
	if got := p.sec.store.State().Endpoint().State; got != uint8(wire.StateNormal) {
		t.Errorf("stored state %v, want NORMAL (unchanged)", wire.ServerState(got))
	}
	if s := p.sec.state(); s == "PARTNER-DOWN" {
		t.Errorf("the unstored PARTNER-DOWN is published")
	}
	// No later event may publish it either: a second operator command (a
	// no-op in PARTNER-DOWN) used to.
	fs.fail.Store(false)
	if err := p.sec.ep.PartnerDown(); err == nil && p.sec.state() == "PARTNER-DOWN" &&
		p.sec.store.State().Endpoint().State != uint8(wire.StatePartnerDown) {
		t.Errorf("PARTNER-DOWN published while the stored state is %v", wire.ServerState(p.sec.store.State().Endpoint().State))
	}
	if s := p.sec.state(); s != "STARTUP" {
		t.Errorf("secondary in %s after the failed persist, want STARTUP (restarted from its stored record)", s)
	}
	// The secondary's DISCONNECT, or, when the primary was writing at that
	// moment, a failed write: either way the primary must see the connection
	// go and leave NORMAL before the reconnection below.
	waitFor(t, "the primary to see the connection dropped", func() bool {
		d := p.pri.stats().Downs
		return d["partner-disconnect"]+d["connection-lost"] > 0 && len(p.pri.statesSince(nPri)) > 0
	})
	p.connect()
	// The link counts the drop before the endpoint acts on it, so the
	// primary may still show its old NORMAL: wait for the new one.
	waitFor(t, "the primary back in NORMAL", func() bool {
		st := p.pri.statesSince(nPri)
		return len(st) >= 2 && st[len(st)-1] == "NORMAL"
	})
	p.waitStates("NORMAL", "NORMAL")
	if st := p.pri.statesSince(nPri); !slices.Equal(st, []string{"COMMUNICATIONS-INTERRUPTED", "NORMAL"}) {
		t.Errorf("primary states %v, want COMMUNICATIONS-INTERRUPTED NORMAL (never a partner in PARTNER-DOWN)", st)
	}
	if got := p.sec.store.State().Endpoint().State; got != uint8(wire.StateNormal) {
		t.Errorf("secondary stored state %v, want NORMAL", wire.ServerState(got))
	}
	c := newClient(3)
	l := p.pri.lease(c)
	waitFor(t, "replication after the recovery", func() bool {
		b, ok := p.sec.get(l.addr)
		return ok && b.DUID == c.Key()
	})
}

// TestPairRestoredSecondaryHeldUntilContinue: a secondary restored from an
// older snapshot (raftstore.Restore with machine.Restored's record) stays
// in STARTUP, serving nobody, while the primary in PARTNER-DOWN connects
// and the STARTUP timer runs out; Continue releases it, it asks for every
// binding (UPDREQALL) and so learns the leases made after the snapshot.
func TestPairRestoredSecondaryHeldUntilContinue(t *testing.T) {
	p := upPair(t)
	p.pri.leaseMany(1000, 100)
	p.waitAcked()
	var snap bytes.Buffer
	if _, err := p.sec.st.SaveSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	p.pri.leaseMany(2000, 100) // acknowledged by the secondary, missing from the snapshot
	p.waitAcked()

	p.sec.stop()
	waitFor(t, "the primary in COMMUNICATIONS-INTERRUPTED", func() bool { return p.pri.state() == "COMMUNICATIONS-INTERRUPTED" })
	p.clk.Advance(5 * time.Minute) // past the secondary's last checkpoint
	if err := p.pri.ep.PartnerDown(); err != nil {
		t.Fatal(err)
	}
	res, err := raftstore.Restore(raftstore.Config{DataDir: p.sec.dir}, &snap, func(h *fsm.SnapshotHeader) {
		h.Endpoint = machine.Restored(h.Endpoint, true)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored index %d, old data in %s", res.Header.Index, res.Previous)

	nSec := len(p.sec.transitions())
	p.sec.start()
	if n := len(p.sec.bindings()); n != 100 {
		t.Fatalf("restored secondary holds %d bindings, want the snapshot's 100", n)
	}
	p.connect()
	waitFor(t, "the secondary hearing the primary", func() bool { return p.sec.ep.Status().CommunicationsOK })
	p.clk.Advance(machine.DefaultStartupTime + time.Second)
	if st := p.sec.ep.Status(); st.State != "STARTUP" || !st.HeldInStartup {
		t.Fatalf("restored secondary: %+v, want held in STARTUP", st)
	}
	if p.sec.ep.Serve(dhcpv6.MessageTypeSolicit, false) || p.sec.ep.Serve(dhcpv6.MessageTypeRenew, true) {
		t.Fatalf("a held secondary serves clients")
	}
	before := p.sec.stats().Sent[wire.MsgUpdReqAll]

	if err := p.sec.ep.Continue(); err != nil {
		t.Fatalf("Continue: %v", err)
	}
	if p.sec.ep.Status().HeldInStartup || p.sec.st.State().Endpoint().HeldInStartup {
		t.Fatalf("still held after Continue (or the release is not stored)")
	}
	// The MCLT has long passed since the secondary last operated, so
	// RECOVER-WAIT ends at once: wait for NORMAL.
	p.waitStates("NORMAL", "NORMAL")
	if st := p.sec.statesSince(nSec); !slices.Equal(st, []string{"STARTUP", "RECOVER", "RECOVER-WAIT", "RECOVER-DONE", "NORMAL"}) {
		t.Errorf("restored secondary's states %v, want STARTUP RECOVER RECOVER-WAIT RECOVER-DONE NORMAL", st)
	}
	if n := p.sec.stats().Sent[wire.MsgUpdReqAll] - before; n != 1 {
		t.Errorf("secondary sent %d UPDREQALLs after Continue, want 1", n)
	}
	if n := len(p.sec.bindings()); n != 200 {
		t.Errorf("after UPDREQALL the secondary holds %d bindings, want 200", n)
	}
	if err := p.sec.ep.Continue(); !errors.Is(err, machine.ErrNotHeld) {
		t.Errorf("second Continue: %v, want ErrNotHeld", err)
	}
}

// TestPairResyncProgress: while a recovering secondary's UPDREQALL is being
// answered, both endpoints report the transfer in Status (for `tandem
// status`), and the reports go away with UPDDONE.
func TestPairResyncProgress(t *testing.T) {
	const count = 300
	var gs *gatedStore
	gated := false
	p := upPair(t, func(p *pairEnv) {
		p.sec.wrapStore = func(s Store) Store {
			gs = &gatedStore{Store: s, entered: make(chan *fsm.Command, 16)}
			if gated {
				gs.close()
			}
			return gs
		}
	})
	p.pri.leaseMany(1, count)
	p.waitAcked()
	p.sec.stop()
	waitFor(t, "the primary in COMMUNICATIONS-INTERRUPTED", func() bool { return p.pri.state() == "COMMUNICATIONS-INTERRUPTED" })
	p.sec.wipe()
	gated = true
	p.sec.start()
	p.connect()
	<-gs.entered // the first BNDUPD of the answer waits at the secondary's store door

	// The primary counts a BNDUPD once its send returned, which can be just
	// after the secondary's store saw it: poll (the gate holds the transfer).
	var ps Status
	if !poll(waitTimeout, func() bool {
		ps = p.pri.ep.Status()
		r := ps.ResyncSending
		return r != nil && r.Bindings >= 1
	}) {
		t.Errorf("the primary never reported a binding sent")
	}
	ss := p.sec.ep.Status()
	if r := ps.ResyncSending; r == nil || r.Kind != "UPDREQALL" || r.Total != count || r.Bindings < 1 || r.Bindings > count {
		t.Errorf("primary resync_sending %+v, want UPDREQALL with total %d and some sent", r, count)
	}
	if r := ss.ResyncReceiving; r == nil || r.Kind != "UPDREQALL" || r.Started == "" {
		t.Errorf("secondary resync_receiving %+v, want UPDREQALL", r)
	}
	gs.mu.Lock()
	gate := gs.gate
	gs.gate = nil
	gs.mu.Unlock()
	close(gate)
	go func() { // let the held Applies through
		for range gs.entered {
		}
	}()
	waitFor(t, "the secondary's UPDREQALL answered", func() bool { return p.sec.state() == "RECOVER-WAIT" })
	waitFor(t, "the transfer reports gone", func() bool {
		return p.pri.ep.Status().ResyncSending == nil && p.sec.ep.Status().ResyncReceiving == nil
	})
}

// TestPairLostStorageHoldsRenewals: the primary renews a lease while its
// partner is away (legitimately: up to the MCLT past the partner lifetime
// the secondary acknowledged), then loses its data dir before the update
// reaches the secondary. The secondary knows only the first, MCLT-capped
// end. Answering the recovering primary's UPDREQALL it must hold the lease
// for the client until expiration-time + MCLT (update.HoldForLostPartner),
// on both sides, so that it is not given to another client while the first
// still holds it (simulation seed 25; docs/failover.md item 89).
func TestPairLostStorageHoldsRenewals(t *testing.T) {
	p := upPair(t)
	c := newClient(7)
	first := p.pri.lease(c) // in NORMAL: the MCLT
	p.waitAcked()
	firstEnd := p.clk.Now().Add(first.valid).Unix()
	known, _ := p.sec.get(first.addr)
	if known.StateExpirationTime != firstEnd || known.ExpirationTime == 0 {
		t.Fatalf("the secondary knows %+v, want the lease ending at %d with an expiration-time", known, firstEnd)
	}

	p.sec.stop()
	waitFor(t, "the primary in COMMUNICATIONS-INTERRUPTED", func() bool { return p.pri.state() == "COMMUNICATIONS-INTERRUPTED" })
	p.advance(50 * time.Second) // the client renews before its 60 s run out
	renewed := p.pri.renew(c, first.addr)
	renewedEnd := p.clk.Now().Add(renewed.valid).Unix()
	if renewed.addr != first.addr || renewedEnd <= firstEnd || renewedEnd > known.ExpirationTime+int64(testMCLT/time.Second) {
		t.Fatalf("renewal gave %v until %d, want %v until after %d, at most the acknowledged partner lifetime %d + MCLT",
			renewed.addr, renewedEnd, first.addr, firstEnd, known.ExpirationTime)
	}
	p.pri.stop()
	p.pri.wipe()

	p.sec.start()
	p.pri.start()
	p.connect()
	waitFor(t, "the primary's UPDREQALL answered", func() bool { return p.pri.state() == "RECOVER-WAIT" })
	for _, n := range []*node{p.sec, p.pri} {
		b, ok := n.get(first.addr)
		if !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() || b.StateExpirationTime < renewedEnd {
			t.Fatalf("%s after the UPDREQALL: %+v, want ACTIVE for the client until at least %d (the renewal's end)", n.name, b, renewedEnd)
		}
	}
	p.advance(testMCLT)
	p.waitStates("NORMAL", "NORMAL")
	p.waitAcked()
	if d := p.sameBindings(); d != "" {
		t.Fatalf("binding tables differ: %s", d)
	}
	// Past the end the secondary knew, before the renewal's: the lease is
	// still the client's on both sides, and another client asking for it
	// gets something else.
	if p.clk.Now().Unix() <= firstEnd || p.clk.Now().Unix() >= renewedEnd {
		t.Fatalf("test timing: now %d, want between %d and %d", p.clk.Now().Unix(), firstEnd, renewedEnd)
	}
	for _, n := range []*node{p.sec, p.pri} {
		if _, err := n.srv.Reclaim(); err != nil {
			t.Fatal(err)
		}
		if b, _ := n.get(first.addr); b.Status != fsm.StatusActive {
			t.Fatalf("%s: the renewed lease is %v before the renewal's end", n.name, b.Status)
		}
	}
	if other := p.pri.rapidLeaseHint(newClient(8), first.addr); other.addr == first.addr {
		t.Fatalf("%v given to a second client while the first holds it until %d", first.addr, renewedEnd)
	}
}

// TestPartnerPoolWaitsWholeMCLT: the partner's prefixes become usable in
// PARTNER-DOWN no earlier than MCLT after the entry, also when the entry
// falls inside a second (chaos run 9: the whole-second time let a server
// use them 0.5 s early).
func TestPartnerPoolWaitsWholeMCLT(t *testing.T) {
	p := upPair(t)
	p.pri.stop()
	waitFor(t, "the secondary in COMMUNICATIONS-INTERRUPTED", func() bool { return p.sec.state() == "COMMUNICATIONS-INTERRUPTED" })
	p.clk.Advance(600 * time.Millisecond)
	entered := p.clk.Now()
	if err := p.sec.ep.PartnerDown(); err != nil {
		t.Fatalf("PartnerDown: %v", err)
	}
	p.clk.Advance(testMCLT - 300*time.Millisecond) // the same whole second as entered + MCLT, before it
	if p.sec.ep.PartnerPool() {
		t.Fatalf("partner's pool usable at %v, %v after entering PARTNER-DOWN at %v (MCLT %v)",
			p.clk.Now(), p.clk.Now().Sub(entered), entered, testMCLT)
	}
	p.clk.Advance(time.Second)
	if !p.sec.ep.PartnerPool() {
		t.Fatalf("partner's pool not usable %v after entering PARTNER-DOWN", p.clk.Now().Sub(entered))
	}
}
