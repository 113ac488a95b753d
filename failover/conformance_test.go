package failover

// Conformance index: the digest's "Suggested conformance tests"
// (/work/shared/spec/rfc8156-digest.md, end of §12) and where each is proved.
//
//	1. MCLT example timeline (§6.3): 3600 s, then 259200 s
//	     update.TestWorkedExampleMCLT (exact RFC numbers, real BNDUPD/BNDREPLY
//	     through two stores); failover.TestPairFreshStartMCLT (the same rule
//	     end to end through server.Handle, test-sized MCLT)
//	2. bit-127 parity split
//	     update.TestParitySplit; through the DHCP path in every allocating
//	     state: TestConformanceServicePerState (odd from the primary, even
//	     from the secondary, also when the client hints at a partner address)
//	3. full Figure 4 matrix, including ±5 s ties
//	     update.TestCellIsFigure4, update.TestDecideMatrix (deltas -6/-5/+5/+6),
//	     update.TestDecideExamples
//	4. STARTUP-bit STATE messages ignored in PARTNER-DOWN
//	     machine.TestPartnerDownIgnoresStartup (every partner state, with and
//	     without the bit); end to end implied by
//	     failover.TestPairOperatorPartnerDownAndPrimaryReturn/recover (the
//	     returning primary's STARTUP STATE carries its stored state; the
//	     secondary stays in PARTNER-DOWN, never POTENTIAL-CONFLICT)
//	5. UPDREQ transaction-id survives a 24-bit wrap
//	     link.TestXIDWrap (UPDREQALL and BNDUPD across the wrap, over a link);
//	     link.TestXIDWrapUpdReq (UPDREQ: held across a full wrap, released
//	     only by its UPDDONE)
//	6. RECOVER-WAIT waits MCLT from TIME-OF-FAILURE
//	     machine.TestRecoverWaitTimer (TIME-OF-FAILURE known, lost storage,
//	     deadline already passed); end to end:
//	     failover.TestConformanceRecoverWaitFromTimeOfFailure (RECOVER-DONE
//	     exactly at the stored LastOperating + checkpoint + MCLT) and
//	     failover.TestPairSecondaryLostDatabase (lost storage: start + MCLT)
//	7. PARTNER-DOWN reuse never earlier than PD + MCLT
//	     update.TestPartnerDownReuseProperty (200000 random bindings);
//	     failover.TestPairBothPartnerDownConflict (a released lease not reused
//	     before its reuse time, through server.Handle)
//	8. no BNDREPLY before an fsync
//	     failover.TestPairBndReplyAfterCommit (every BNDREPLY checked against
//	     the receiver's committed database; a held commit holds the BNDREPLY)
//
// Responsiveness per state (digest §4.1, docs/failover.md §1):
// TestConformanceServicePerState below, through server.Handle, for every
// state and role in which it occurs.

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tandem-dhcp/tandem/failover/link"
	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// answers is how a server answers clients in a state.
type answers uint8

const (
	answerNone  answers = iota // unresponsive: every client message dropped
	answerRenew                // renew-responsive: only Renew/Release/Decline carrying our Server ID
	answerAll                  // responsive
)

func (a answers) String() string {
	return [...]string{"unresponsive", "renew-responsive", "responsive"}[a]
}

// service is one cell of the service table.
type service struct {
	answers answers
	capped  bool // lifetimes capped by the MCLT (beyond the acknowledged partner lifetime)
}

// serviceTable is docs/failover.md §1 / digest §4.1, transcribed: for each
// state, what the primary and the secondary do. A missing entry means the
// role never is in that state (the secondary and CONFLICT-DONE).
var serviceTable = map[string]map[link.Role]service{
	"STARTUP":                    {link.Primary: {answerNone, false}, link.Secondary: {answerNone, false}},
	"NORMAL":                     {link.Primary: {answerAll, true}, link.Secondary: {answerRenew, true}},
	"COMMUNICATIONS-INTERRUPTED": {link.Primary: {answerAll, true}, link.Secondary: {answerAll, true}},
	"PARTNER-DOWN":               {link.Primary: {answerAll, false}, link.Secondary: {answerAll, false}},
	"POTENTIAL-CONFLICT":         {link.Primary: {answerNone, false}, link.Secondary: {answerNone, false}},
	"RECOVER":                    {link.Primary: {answerNone, false}, link.Secondary: {answerNone, false}},
	"RECOVER-WAIT":               {link.Primary: {answerNone, false}, link.Secondary: {answerNone, false}},
	"RECOVER-DONE":               {link.Primary: {answerRenew, true}, link.Secondary: {answerRenew, true}},
	"RESOLUTION-INTERRUPTED":     {link.Primary: {answerAll, true}, link.Secondary: {answerAll, true}},
	"CONFLICT-DONE":              {link.Primary: {answerAll, true}},
}

// holdStore holds the partner's binding updates (Origin Partner) at the
// door of the real store while held: the BNDREPLY, and so the partner's
// UPDDONE, waits. Unlike gatedStore it can be opened for good and reports
// how many commits are waiting.
type holdStore struct {
	Store
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	waiting atomic.Int64
}

func (h *holdStore) Apply(cmd *fsm.Command) (uint64, error) {
	if cmd.Origin == fsm.OriginPartner {
		h.mu.Lock()
		g := h.gate
		h.mu.Unlock()
		if g != nil {
			h.waiting.Add(1)
			<-g
			h.waiting.Add(-1)
		}
	}
	return h.Store.Apply(cmd)
}

func (h *holdStore) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate == nil {
		h.gate = make(chan struct{})
	}
}

func (h *holdStore) open() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

// holds wraps both nodes' stores (at every start) in holdStores.
type holds struct {
	mu sync.Mutex
	by map[*node]*holdStore
	// heldAtStart: nodes whose next store starts held.
	heldAtStart map[*node]bool
}

func (h *holds) of(n *node) *holdStore {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.by[n]
}

// withHolds is an upPair setup that installs the holds; it opens every gate
// before the nodes stop (cleanups run last-in first-out).
func withHolds(h *holds) func(*pairEnv) {
	return func(p *pairEnv) {
		h.by, h.heldAtStart = map[*node]*holdStore{}, map[*node]bool{}
		for _, n := range []*node{p.pri, p.sec} {
			n := n
			n.wrapStore = func(s Store) Store {
				hs := &holdStore{Store: s}
				h.mu.Lock()
				h.by[n] = hs
				if h.heldAtStart[n] {
					hs.hold()
				}
				h.mu.Unlock()
				return hs
			}
		}
		p.t.Cleanup(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, hs := range h.by {
				hs.open()
			}
		})
	}
}

// owedDump lists n's bindings that owe the partner an update.
func (n *node) owedDump() string {
	var out []string
	for r, b := range n.bindings() {
		if b.Owed() {
			out = append(out, fmt.Sprintf("%v %v flags=%#x cltt=%d pl=%d", r.Addr(), b.Status, b.Flags, b.CLTT, b.PartnerLifetime))
		}
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

// settle waits until neither partner owes the other an update. An update
// left owed with nothing in flight (after crossed updates of one lease, or
// an OutdatedBindingInformation dispute) goes out on the endpoint's
// periodic scan (every 5 s): then the clock moves on by that much.
func (p *pairEnv) settle() {
	p.t.Helper()
	acked := func() bool { return p.pri.owed() == 0 && p.sec.owed() == 0 }
	scans := 0
	if !poll(waitTimeout, func() bool {
		if acked() {
			return true
		}
		if p.pri.ep.Status().UnackedUpdates == 0 && p.sec.ep.Status().UnackedUpdates == 0 && !poll(50*time.Millisecond, acked) {
			p.advance(5 * time.Second)
			scans++
		}
		return false
	}) {
		p.t.Fatalf("updates still owed after %v: primary %s (in flight %d), secondary %s (in flight %d)", waitTimeout,
			p.pri.owedDump(), p.pri.ep.Status().UnackedUpdates, p.sec.owedDump(), p.sec.ep.Status().UnackedUpdates)
	}
	if scans > 0 {
		p.t.Logf("settled after %d periodic scan(s)", scans)
	}
}

// cut drops the connection and refuses new ones until heal; unlike
// partition it moves no clock (no timer fires on the way).
func (p *pairEnv) cut() {
	p.t.Helper()
	p.net.Partition(priAddr, secAddr)
	waitFor(p.t, "both links down", func() bool {
		return (p.pri.ep == nil || !p.pri.stats().Connected) && (p.sec.ep == nil || !p.sec.stats().Connected)
	})
}

func (p *pairEnv) partner(n *node) *node {
	if n == p.pri {
		return p.sec
	}
	return p.pri
}

// prober runs the DHCP probes of one test: fresh client numbers, fresh
// hint addresses, and a record of the cells probed.
type prober struct {
	p       *pairEnv
	next    int
	hint    int
	known   *dhcpClient // a client with a lease both partners know of
	knownAt netip.Addr
	probed  map[string]bool // "STATE/role"
	holds   *holds
}

func newProber(p *pairEnv, probed map[string]bool) *prober {
	return &prober{p: p, next: 1000, hint: 0x8000, probed: probed}
}

func (pr *prober) client() *dhcpClient { pr.next++; return newClient(pr.next) }

// freeAddr returns an address of the given parity no test client holds yet
// (the allocator walks up from the start of the pool: these are far above).
func (pr *prober) freeAddr(oddParity bool) netip.Addr {
	pr.hint += 2
	a := pool1.First.As16()
	a[14], a[15] = byte(pr.hint>>8), byte(pr.hint)
	if oddParity {
		a[15] |= 1
	}
	return netip.AddrFrom16(a)
}

// lease gives pr.known a lease from the primary in NORMAL and waits until
// both partners hold it with nothing owed.
func (pr *prober) lease() {
	pr.known = pr.client()
	pr.knownAt = pr.p.pri.lease(pr.known).addr
	pr.p.waitAcked()
}

// expectValid is the valid lifetime n must give now when it extends b: the
// desired lifetime, capped (unless uncapped) at MCLT beyond the later of now
// and the partner lifetime n has seen acknowledged (RFC 8156 §4.4).
func expectValid(now time.Time, b fsm.Binding, capped bool) time.Duration {
	if !capped {
		return validLT
	}
	lim := time.Duration(max(b.AckedPartnerLifetime-now.Unix(), 0))*time.Second + testMCLT
	return min(validLT, lim)
}

// check waits until the primary and the secondary are in the given states
// ("" for a stopped or ignored node), then probes each through server.Handle
// against serviceTable.
func (pr *prober) check(t *testing.T, pri, sec string) {
	t.Helper()
	p := pr.p
	waitFor(t, fmt.Sprintf("states %q / %q", pri, sec), func() bool {
		return (pri == "" || p.pri.state() == pri) && (sec == "" || p.sec.state() == sec)
	})
	for _, c := range []struct {
		n     *node
		state string
	}{{p.pri, pri}, {p.sec, sec}} {
		if c.state == "" {
			continue
		}
		svc, ok := serviceTable[c.state][c.n.role]
		if !ok {
			t.Fatalf("%s in %s: not in the service table", c.n.name, c.state)
		}
		t.Run(c.state+"/"+c.n.name, func(t *testing.T) {
			pr.probe(t, c.n, svc)
			if c.n.state() != c.state {
				t.Fatalf("%s left %s during the probes (now %s)", c.n.name, c.state, c.n.state())
			}
		})
		pr.probed[c.state+"/"+c.n.name] = true
	}
}

// probe sends n, in a state with service svc, each kind of client message
// and checks the answer.
func (pr *prober) probe(t *testing.T, n *node, svc service) {
	p := pr.p
	own := n.role == link.Primary // the parity n may allocate: odd for the primary
	newValid := testMCLT          // a new lease: nothing acknowledged yet
	if !svc.capped {
		newValid = validLT
	}
	handle := func(m *dhcpv6.Message) (*dhcpv6.Message, error) { return n.handle(m) }
	want := func(what string, m *dhcpv6.Message, answered bool) *dhcpv6.Message {
		t.Helper()
		r, err := handle(m)
		if !answered {
			if err == nil {
				t.Errorf("%s %s: %s answered (%v), want it dropped", n.name, svc.answers, what, r.MessageType)
			}
			return nil
		}
		wantType := dhcpv6.MessageTypeReply
		if m.MessageType == dhcpv6.MessageTypeSolicit {
			wantType = dhcpv6.MessageTypeAdvertise
		}
		if err != nil || r.MessageType != wantType {
			t.Errorf("%s %s: %s: reply %v, err %v; want %v", n.name, svc.answers, what, r, err, wantType)
			return nil
		}
		return r
	}
	var strangers []*dhcpClient // clients of the probes that must get nothing from a server that does not allocate

	// Solicit (Advertise), Request: only a responsive server allocates, and
	// only its own parity, capped unless PARTNER-DOWN.
	c := pr.client()
	if adv := want("Solicit", c.Msg(dhcpv6.MessageTypeSolicit, c.IANA()), svc.answers == answerAll); adv != nil {
		if a := leaseOf(c, adv).addr; !a.IsValid() || odd(a) != own {
			t.Errorf("%s advertised %v: want an address of its own parity (odd: %v)", n.name, a, own)
		} else {
			req, err := dhcpv6.NewRequestFromAdvertise(adv)
			if err != nil {
				t.Fatal(err)
			}
			l := leaseOf(c, n.exchange(req, dhcpv6.MessageTypeReply))
			if l.addr != a || l.valid != newValid {
				t.Errorf("%s Request: %v valid %v, want %v valid %v", n.name, l.addr, l.valid, a, newValid)
			}
			if b, ok := n.get(a); !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() {
				t.Errorf("%s: the Request's lease %v is %+v, want ACTIVE for the client", n.name, a, b)
			}
		}
	} else {
		c2 := pr.client()
		strangers = append(strangers, c, c2)
		want("Rapid Commit Solicit", c2.Msg(dhcpv6.MessageTypeSolicit, c2.IANA(),
			&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}), false)
		want("Request", c2.Msg(dhcpv6.MessageTypeRequest, n.sid(), c2.IANA(pr.freeAddr(own))), false)
	}
	if svc.answers == answerAll {
		// A client asking for one of the partner's free addresses gets one
		// of ours (never the partner's, not even in PARTNER-DOWN).
		hint := pr.freeAddr(!own)
		l := n.rapidLeaseHint(pr.client(), hint)
		if !l.addr.IsValid() || odd(l.addr) != own || l.valid != newValid {
			t.Errorf("%s: Rapid Commit Solicit hinting at the partner's %v: got %v valid %v, want own parity, valid %v",
				n.name, hint, l.addr, l.valid, newValid)
		}
	}

	// The known client: Renew to this server, Renew to the partner, Rebind.
	k, ka := pr.known, pr.knownAt
	renewAnswered := svc.answers != answerNone
	kb, known := n.get(ka)
	if renewAnswered && !known {
		t.Fatalf("%s holds no binding for the known lease %v", n.name, ka)
	}
	if r := want("Renew (our Server ID)", k.Msg(dhcpv6.MessageTypeRenew, n.sid(), k.IANA(ka)), renewAnswered); r != nil {
		l := leaseOf(k, r)
		if wv := expectValid(p.clk.Now(), kb, svc.capped); l.addr != ka || l.valid != wv {
			t.Errorf("%s Renew of %v: %v valid %v, want valid %v (acked partner lifetime now%+ds, capped %v)",
				n.name, ka, l.addr, l.valid, wv, kb.AckedPartnerLifetime-p.clk.Now().Unix(), svc.capped)
		}
	}
	if o := p.partner(n); o.ep != nil {
		// RFC 8415 §16: a Renew naming another server is not ours, in any state.
		want("Renew (partner's Server ID)", k.Msg(dhcpv6.MessageTypeRenew, o.sid(), k.IANA(ka)), false)
	}
	kb, _ = n.get(ka)
	if r := want("Rebind", k.Msg(dhcpv6.MessageTypeRebind, k.IANA(ka)), svc.answers == answerAll); r != nil {
		l := leaseOf(k, r)
		if wv := expectValid(p.clk.Now(), kb, svc.capped); l.addr != ka || l.valid != wv {
			t.Errorf("%s Rebind of %v: %v valid %v, want valid %v", n.name, ka, l.addr, l.valid, wv)
		}
	}

	if svc.answers == answerRenew {
		// Renew-responsive: a Renew of a lease it has no record of gets
		// NoBinding, and nothing is ever allocated (§8.7.1).
		s := pr.client()
		strangers = append(strangers, s)
		r := want("Renew of an unknown lease", s.Msg(dhcpv6.MessageTypeRenew, n.sid(), s.IANA(pr.freeAddr(own))), true)
		if l := leaseOf(s, r); r != nil && (l.addr.IsValid() || l.statusCode != int(iana.StatusNoBinding)) {
			t.Errorf("%s: Renew of an unknown lease: %+v, want NoBinding and no address", n.name, l)
		}
	}
	// The partner's grants replicate here meanwhile: look only for the
	// probes' own clients.
	for _, b := range n.bindings() {
		for _, c := range strangers {
			if b.DUID == c.Key() {
				t.Errorf("%s %s: a binding for a probe's new client: %v %v", n.name, svc.answers, b.Resource, b.Status)
			}
		}
	}
}

// TestConformanceServicePerState drives the in-process pair into each RFC
// 8156 state, for each role in which it occurs, holds it there, and checks
// through server.Handle (real DHCPv6 messages) what the server does:
// Solicit answered or dropped, Request, Renew with its own Server ID,
// Rebind, the parity of what it allocates, and whether lifetimes are capped
// by the MCLT, all per serviceTable (docs/failover.md §1, digest §4.1).
//
// States that do not last on their own are held: POTENTIAL-CONFLICT and
// CONFLICT-DONE by holding the partner's BNDUPD commits (so no BNDREPLY and
// no UPDDONE), RESOLUTION-INTERRUPTED by cutting the link while so held,
// RECOVER by holding the UPDREQALL answer's commits, RECOVER-DONE by cutting
// the link during RECOVER-WAIT and letting its timer run out.
func TestConformanceServicePerState(t *testing.T) {
	probed := map[string]bool{}
	scenarios := []struct {
		name string
		run  func(t *testing.T, pr *prober)
	}{
		{"startup", func(t *testing.T, pr *prober) {
			// Restarted with their data while unable to reach each other:
			// STARTUP until the startup timer (the fake clock stays put).
			p := pr.p
			p.pri.stop()
			p.sec.stop()
			p.net.Partition(priAddr, secAddr)
			p.sec.start()
			p.pri.start()
			pr.check(t, "STARTUP", "STARTUP")
		}},
		{"normal, communications-interrupted, partner-down, conflict", func(t *testing.T, pr *prober) {
			p := pr.p
			pr.check(t, "NORMAL", "NORMAL")
			p.cut()
			pr.check(t, "COMMUNICATIONS-INTERRUPTED", "COMMUNICATIONS-INTERRUPTED")
			for _, n := range []*node{p.pri, p.sec} {
				if err := n.ep.PartnerDown(); err != nil {
					t.Fatalf("%s: PartnerDown: %v", n.name, err)
				}
			}
			pr.check(t, "PARTNER-DOWN", "PARTNER-DOWN")
			// Both served alone (the probes left owed updates on both sides).
			if p.pri.owed() == 0 || p.sec.owed() == 0 {
				t.Fatalf("owed updates: primary %d, secondary %d; the conflict needs both", p.pri.owed(), p.sec.owed())
			}
			// Meet again with the partner's updates held at both doors: the
			// primary's UPDREQ is answered with BNDUPDs it cannot commit, so
			// no UPDDONE: both stay in POTENTIAL-CONFLICT.
			h := pr.holds
			h.of(p.pri).hold()
			h.of(p.sec).hold()
			p.net.Heal(priAddr, secAddr)
			p.connect()
			pr.check(t, "POTENTIAL-CONFLICT", "POTENTIAL-CONFLICT")
			waitFor(t, "the secondary's BNDUPD held at the primary's store", func() bool { return h.of(p.pri).waiting.Load() > 0 })
			// Communications lost during the resolution.
			p.cut()
			pr.check(t, "RESOLUTION-INTERRUPTED", "RESOLUTION-INTERRUPTED")
			// Back: POTENTIAL-CONFLICT again; now the primary commits, gets
			// its UPDDONE and enters CONFLICT-DONE; its own updates are held
			// at the secondary's door, so the secondary's UPDREQ gets no
			// UPDDONE and it stays in POTENTIAL-CONFLICT.
			h.of(p.pri).open()
			p.net.Heal(priAddr, secAddr)
			p.connect()
			pr.check(t, "CONFLICT-DONE", "POTENTIAL-CONFLICT")
			waitFor(t, "the primary's BNDUPD held at the secondary's store", func() bool { return h.of(p.sec).waiting.Load() > 0 })
			h.of(p.sec).open()
			p.waitStates("NORMAL", "NORMAL")
			p.settle()
			if d := p.sameBindings(); d != "" {
				t.Errorf("binding tables differ after the resolution: %s", d)
			}
			if d := p.noDoubleActive(); d != "" {
				t.Errorf("addresses ACTIVE for two clients: %s", d)
			}
		}},
		{"recover, secondary", func(t *testing.T, pr *prober) { recoverScenario(t, pr, pr.p.sec) }},
		{"recover, primary", func(t *testing.T, pr *prober) { recoverScenario(t, pr, pr.p.pri) }},
	}
	ran := 0
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			ran++
			h := &holds{}
			p := upPair(t, withHolds(h))
			pr := newProber(p, probed)
			pr.holds = h
			pr.lease()
			sc.run(t, pr)
		})
	}
	var missing []string
	for st, roles := range serviceTable {
		for r := range roles {
			if !probed[st+"/"+r.String()] {
				missing = append(missing, st+"/"+r.String())
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 && !t.Failed() && ran == len(scenarios) {
		t.Errorf("state/role cells never probed: %v", missing)
	}
}

// recoverScenario: n loses its disk and restarts; its UPDREQALL's answer is
// held at its store (RECOVER), let through (RECOVER-WAIT: its partner
// remembers it, so it waits the MCLT), then the link is cut and the MCLT
// passes (RECOVER-DONE, kept: communications are down).
func recoverScenario(t *testing.T, pr *prober, n *node) {
	p := pr.p
	o := p.partner(n)
	n.stop()
	waitFor(t, o.name+" in COMMUNICATIONS-INTERRUPTED", func() bool { return o.state() == "COMMUNICATIONS-INTERRUPTED" })
	n.wipe()
	pr.holds.mu.Lock()
	pr.holds.heldAtStart[n] = true
	pr.holds.mu.Unlock()
	n.start()
	p.connect()
	waitFor(t, "the UPDREQALL answer held at "+n.name+"'s store", func() bool { return pr.holds.of(n).waiting.Load() > 0 })
	check := func(mine, other string) {
		t.Helper()
		if n == p.pri {
			pr.check(t, mine, other)
		} else {
			pr.check(t, other, mine)
		}
	}
	if n.stats().Sent[wire.MsgUpdReqAll] != 1 {
		t.Errorf("%s sent %d UPDREQALLs, want 1", n.name, n.stats().Sent[wire.MsgUpdReqAll])
	}
	check("RECOVER", "COMMUNICATIONS-INTERRUPTED")
	pr.holds.of(n).open()
	check("RECOVER-WAIT", "COMMUNICATIONS-INTERRUPTED")
	p.cut()
	p.clk.Advance(testMCLT)
	check("RECOVER-DONE", "COMMUNICATIONS-INTERRUPTED")
	p.net.Heal(priAddr, secAddr)
	p.connect()
	p.waitStates("NORMAL", "NORMAL")
	p.settle()
	if d := p.sameBindings(); d != "" {
		t.Errorf("binding tables differ after the recovery: %s", d)
	}
}

// endpointRecords records the endpoint states a store commits, with the
// command's (fake clock) time.
type endpointRecords struct {
	Store
	mu   sync.Mutex
	recs []fsm.EndpointState
	at   []time.Time
}

func (r *endpointRecords) Apply(cmd *fsm.Command) (uint64, error) {
	idx, err := r.Store.Apply(cmd)
	if err == nil && cmd.Type == fsm.CmdSetEndpoint && cmd.Endpoint != nil {
		r.mu.Lock()
		r.recs = append(r.recs, *cmd.Endpoint)
		r.at = append(r.at, time.Unix(0, cmd.Time))
		r.mu.Unlock()
	}
	return idx, err
}

// first returns the first committed record in state s and when.
func (r *endpointRecords) first(s wire.ServerState) (fsm.EndpointState, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, rec := range r.recs {
		if rec.State == uint8(s) {
			return rec, r.at[i], true
		}
	}
	return fsm.EndpointState{}, time.Time{}, false
}

// TestConformanceRecoverWaitFromTimeOfFailure is digest conformance item 6
// end to end, with a known TIME-OF-FAILURE (machine.TestRecoverWaitTimer
// has it for the machine alone; TestPairSecondaryLostDatabase the lost-storage
// case): the secondary stops, the primary declares PARTNER-DOWN clearly
// after the secondary's TIME-OF-FAILURE (its stored LastOperating + the
// checkpoint interval), the secondary returns through RECOVER (UPDREQ) and
// RECOVER-WAIT, and enters RECOVER-DONE exactly at TIME-OF-FAILURE + MCLT:
// not a second earlier, although its restart and UPDDONE came sooner.
func TestConformanceRecoverWaitFromTimeOfFailure(t *testing.T) {
	var recs *endpointRecords
	p := upPair(t)
	pr := newProber(p, map[string]bool{})
	pr.lease()
	stopped := p.clk.Now()
	p.sec.stop()
	waitFor(t, "the primary in COMMUNICATIONS-INTERRUPTED", func() bool { return p.pri.state() == "COMMUNICATIONS-INTERRUPTED" })
	// PARTNER-DOWN more than checkpoint + 5 s after the stop: the secondary
	// must come back through RECOVER (§8.3.2 step 5), not POTENTIAL-CONFLICT.
	p.advance(machine.DefaultCheckpoint + 10*time.Second)
	if err := p.pri.ep.PartnerDown(); err != nil {
		t.Fatalf("PartnerDown: %v", err)
	}
	// A client of the primary meanwhile: the secondary must learn it by UPDREQ.
	during := pr.client()
	ld := p.pri.lease(during)

	p.sec.wrapStore = func(s Store) Store { recs = &endpointRecords{Store: s}; return recs }
	p.sec.start()
	p.connect()
	waitFor(t, "the secondary in RECOVER-WAIT", func() bool { return p.sec.state() == "RECOVER-WAIT" })
	if s := p.sec.stats(); s.Sent[wire.MsgUpdReq] == 0 || s.Sent[wire.MsgUpdReqAll] != 0 {
		t.Errorf("secondary sent UPDREQ %d, UPDREQALL %d times; want UPDREQ (it kept its database)", s.Sent[wire.MsgUpdReq], s.Sent[wire.MsgUpdReqAll])
	}
	if b, ok := p.sec.get(ld.addr); !ok || b.DUID != during.Key() || b.Status != fsm.StatusActive {
		t.Errorf("after UPDDONE the secondary holds %v as %+v, want the primary's PARTNER-DOWN lease", ld.addr, b)
	}
	startup, _, ok := recs.first(wire.StateStartup)
	if !ok || startup.LastOperating == 0 {
		t.Fatalf("no STARTUP record with LastOperating from the restarted secondary: %+v", startup)
	}
	if lo := time.Unix(startup.LastOperating, 0); lo.After(stopped) {
		t.Fatalf("stored LastOperating %v is after the stop at %v", lo, stopped)
	}
	deadline := time.Unix(startup.LastOperating, 0).Add(machine.DefaultCheckpoint + testMCLT)
	now := p.clk.Now()
	if !now.Before(deadline.Add(-time.Second)) {
		t.Fatalf("test setup: RECOVER-WAIT entered at %v, not before its deadline %v", now, deadline)
	}
	if _, at, _ := recs.first(wire.StateRecoverWait); at.After(deadline) {
		t.Fatalf("RECOVER-WAIT entered at %v, after the deadline %v", at, deadline)
	}
	// A second before the deadline: timers run on their own goroutines, so
	// give an early one half a second (real time) to show; the clock stays
	// put meanwhile, so a RECOVER-DONE then would be recorded at this time.
	p.advance(deadline.Add(-time.Second).Sub(now))
	if poll(500*time.Millisecond, func() bool { _, _, ok := recs.first(wire.StateRecoverDone); return ok }) {
		_, at, _ := recs.first(wire.StateRecoverDone)
		t.Fatalf("the secondary entered RECOVER-DONE at %v, before TIME-OF-FAILURE + MCLT = %v", at, deadline)
	}
	p.advance(time.Second)
	p.waitStates("NORMAL", "NORMAL")
	_, at, ok := recs.first(wire.StateRecoverDone)
	_, rwAt, _ := recs.first(wire.StateRecoverWait)
	t.Logf("stopped %v, LastOperating %v, RECOVER-WAIT at %v, RECOVER-DONE at %v (deadline %v)",
		stopped.Sub(t0), time.Unix(startup.LastOperating, 0).Sub(t0), rwAt.Sub(t0), at.Sub(t0), deadline.Sub(t0))
	if !ok || !at.Equal(deadline) {
		t.Errorf("RECOVER-DONE entered at %v (recorded %v), want TIME-OF-FAILURE + MCLT = %v", at, ok, deadline)
	}
	p.waitAcked()
	if d := p.sameBindings(); d != "" {
		t.Errorf("binding tables differ: %s", d)
	}
}
