package failover

// The deterministic simulation's machinery (sim_test.go has the tests): a
// pairEnv with short lifetimes and a small pool, a seeded schedule of
// actions, the clients' view, quiescence between steps, and the invariant
// checks. docs/reliability/simulation.md describes the fault model, the
// invariants and what a seed reproduces.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/dhcptest"
	"github.com/tandem-dhcp/tandem/server"
)

// The simulation's lease timers: short, so that a few hundred steps cross
// T1, T2, lifetimes, the MCLT and the expired-hold time many times.
const (
	simValid    = 10 * time.Minute
	simPref     = 8 * time.Minute
	simT1       = 5 * time.Minute
	simT2       = 8 * time.Minute
	simHold     = 2 * time.Minute
	simClients  = 24
	simLogLines = 50
)

// simPool is small (32 addresses for 24 clients) so addresses are reused
// often: reuse is where the pair can go wrong.
var simPool = server.AddressRange{First: netip.MustParseAddr("2001:db8:1::1000"), Last: netip.MustParseAddr("2001:db8:1::101f")}

// linkFault is the partner link's injected fault.
type linkFault int

const (
	faultNone  linkFault = iota
	faultCut             // connections reset, new ones refused (memnet Partition)
	faultHole            // bytes vanish silently (memnet BlackHole + Partition after detection)
	faultDelay           // bytes arrive late (memnet Delay)
)

func (f linkFault) String() string { return [...]string{"none", "cut", "hole", "delay"}[f] }

// held is one lease in a client's view: what the Reply told it.
type held struct {
	end    time.Time // grant time + valid lifetime
	server string    // the node whose Reply it adopted
	at     time.Time // when
}

// simClient is a client and what it believes it holds.
type simClient struct {
	*dhcptest.Client
	id     int
	leases map[netip.Addr]held
}

// simOptions select the run.
type simOptions struct {
	seed  uint64
	steps int
	// violate lets the operator declare PARTNER-DOWN against the RFC's
	// rule (while the partner is alive and serving): invariant 2 is then
	// not checked for the clients; the databases must still be free of
	// double ACTIVE after the pair reconnects and drains.
	violate bool
}

// sim is one simulation run.
type sim struct {
	t     testing.TB
	o     simOptions
	p     *pairEnv
	rng   *rand.Rand
	step  int
	fault linkFault
	// lossy: the link black-holed or delayed bytes during the current
	// session, so an update in flight may wait for the clock (a keepalive
	// to end the session, a delay to pass); cleared when the fault is gone
	// and no session is left.
	lossy bool
	cls   []*simClient
	log   []string
	// acked is, per node, the highest raft index of a change a client was
	// told about (a Reply that committed something): after a crash the
	// reopened store must have applied at least that far.
	acked map[*node]uint64
	stats simStats
}

// simStats counts what a run did (for the summary).
type simStats struct {
	ClientOps, Grants, Crashes, Faults, PartnerDowns, Converges int
}

func newSim(t testing.TB, o simOptions) *sim {
	p := newPairEnv(t)
	for _, n := range []*node{p.pri, p.sec} {
		n.cfgServer = func(c *server.Config) {
			s := &c.Subnets[0]
			s.Pools = []server.AddressRange{simPool}
			s.PreferredLifetime, s.ValidLifetime, s.RenewTime, s.RebindTime = simPref, simValid, simT1, simT2
			c.ExpiredHoldTime = simHold
		}
		n.cfgEndpoint = func(c *Config) { c.ExpiredHold = simHold }
	}
	s := &sim{t: t, o: o, p: p, rng: rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15)),
		acked: map[*node]uint64{}}
	for i := 0; i < simClients; i++ {
		s.cls = append(s.cls, &simClient{Client: dhcptest.New(1000 + i), id: i, leases: map[netip.Addr]held{}})
	}
	p.sec.start()
	p.pri.start()
	p.connect()
	p.waitStates("NORMAL", "NORMAL")
	s.quiesce()
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLog()
		}
	})
	return s
}

func (s *sim) now() time.Time { return s.p.clk.Now() }

func (s *sim) logf(format string, args ...any) {
	line := fmt.Sprintf("step %d @%s: ", s.step, s.now().Sub(t0)) + fmt.Sprintf(format, args...)
	s.log = append(s.log, line)
}

func (s *sim) dumpLog() {
	s.t.Logf("simulation seed %d (violate=%v), failed at step %d of %d; rerun: go test ./failover -run 'TestSimulate' -seed %d -steps %d -v",
		s.o.seed, s.o.violate, s.step, s.o.steps, s.o.seed, s.o.steps)
	from := max(len(s.log)-simLogLines, 0)
	for _, l := range s.log[from:] {
		s.t.Log(l)
	}
}

// fail reports a broken invariant and stops the run.
func (s *sim) fail(format string, args ...any) {
	s.t.Helper()
	s.logf("FAIL: "+format, args...)
	s.t.Fatalf("seed %d step %d: "+format, append([]any{s.o.seed, s.step}, args...)...)
}

func (s *sim) nodes() []*node { return []*node{s.p.pri, s.p.sec} }

func (s *sim) running(n *node) bool { return n.ep != nil }

// --- quiescence ---

// idle reports what n is still doing ("" if nothing): closures queued for
// its loop, wake-ups pending, BNDUPDs in flight (unless the link loses or
// holds bytes: they wait for the clock), partner messages being committed.
func (s *sim) idle(n *node) string {
	if n.ep == nil {
		return ""
	}
	e := n.ep
	e.queueMu.Lock()
	q := len(e.queue)
	e.queueMu.Unlock()
	if q > 0 || len(e.kick) > 0 {
		return "loop queue"
	}
	if len(e.wake) > 0 {
		return "sender wake-up"
	}
	e.mu.Lock()
	inflight := len(e.inflight)
	e.mu.Unlock()
	if inflight > 0 && !s.lossy {
		return fmt.Sprintf("%d updates in flight", inflight)
	}
	for _, c := range []*committer{e.updates, e.replies} {
		c.mu.Lock()
		busy := len(c.queue) > 0 || c.flushing
		c.mu.Unlock()
		if busy {
			return c.kind + " commits"
		}
	}
	return ""
}

// quiesce waits until both endpoints have nothing to do and the network
// has no readable bytes, for several polls in a row (a timer that fired
// runs its callback on a new goroutine, which a single look can miss).
func (s *sim) quiesce() {
	s.t.Helper()
	calm, why := 0, ""
	if !poll(waitTimeout, func() bool {
		why = ""
		if s.lossy && s.fault != faultHole && s.fault != faultDelay && !s.established() {
			s.lossy = false
		}
		for _, n := range s.nodes() {
			if w := s.idle(n); w != "" {
				why = n.name + ": " + w
			}
		}
		if ready, _ := s.p.net.Buffered(); ready > 0 && why == "" {
			why = fmt.Sprintf("%d bytes on the wire", ready)
		}
		if why != "" {
			calm = 0
			return false
		}
		calm++
		return calm >= 4
	}) {
		s.fail("no quiescence after %v: %s", waitTimeout, why)
	}
}

// established reports whether either node has a partner session.
func (s *sim) established() bool {
	for _, n := range s.nodes() {
		if n.ep != nil && n.stats().Established {
			return true
		}
	}
	return false
}

// --- time ---

// advance moves the fake clock by d in steps of at most 10 s (a quarter of
// the keepalive's CONTACT interval is 15 s), quiescing after each, so that a
// healthy link never misses a keepalive and every timer's consequences
// settle before time moves on.
func (s *sim) advance(d time.Duration) {
	for d > 0 {
		st := min(d, 10*time.Second)
		s.p.clk.Advance(st)
		d -= st
		s.quiesce()
	}
}

// --- faults ---

// A black hole ends by resetting the connections it swallowed bytes from:
// memnet drops those bytes for good, but TCP never loses bytes on a
// connection that survives (it retransmits), so a session may not carry on
// as if nothing were lost.
func (s *sim) setFault(f linkFault, delay time.Duration) {
	net := s.p.net
	if s.fault == faultHole && f != faultHole {
		net.Cut(priAddr, secAddr)
	}
	net.Heal(priAddr, secAddr)
	switch f {
	case faultCut:
		net.Partition(priAddr, secAddr)
	case faultHole:
		net.BlackHole(priAddr, secAddr)
		s.lossy = true
	case faultDelay:
		net.Delay(priAddr, secAddr, delay)
		s.lossy = true
	}
	s.fault = f
}

// crash drops n's connections (the partner sees a reset, no DISCONNECT),
// then abandons its process state: the endpoint, the DHCP server and the
// store go; only the data dir stays. Nothing acknowledged can be lost: the
// store acknowledges after fsync, and nothing is written on the way down.
func (s *sim) crash(n *node) {
	s.p.net.Cut(priAddr, secAddr)
	n.stop()
	s.stats.Crashes++
}

// restart reopens n's data dir and checks that every acknowledged change
// is there (invariant 3).
func (s *sim) restart(n *node) {
	n.start()
	s.quiesce()
	s.checkDurable(n)
}

// --- clients ---

// reachable reports whether clients can reach n. Under the operator's
// rule a server whose partner is in PARTNER-DOWN while they cannot talk is
// down as far as clients are concerned (RFC 8156 §8.3: the operator
// declares PARTNER-DOWN only for a partner that is not operating); only
// the violate runs break that rule.
func (s *sim) reachable(n *node) bool {
	if n.ep == nil {
		return false
	}
	if s.o.violate {
		return true
	}
	o := s.p.partner(n)
	return !(o.ep != nil && o.state() == "PARTNER-DOWN" && !n.stats().Connected)
}

// send runs m through n; nil if n is unreachable or does not answer.
func (s *sim) send(n *node, m *dhcpv6.Message) *dhcpv6.Message {
	if !s.reachable(n) {
		return nil
	}
	r, err := n.handle(m)
	if errors.Is(err, server.ErrDropped) {
		return nil
	}
	if err != nil {
		s.fail("%s: %v: %v", n.name, m.MessageType, err)
	}
	return r
}

// order returns the nodes in the client's order of preference.
func (s *sim) order(priFirst bool) []*node {
	if priFirst {
		return []*node{s.p.pri, s.p.sec}
	}
	return []*node{s.p.sec, s.p.pri}
}

func (s *sim) nodeNamed(name string) *node {
	if name == s.p.pri.name {
		return s.p.pri
	}
	return s.p.sec
}

// multicast sends m to every reachable server in order (each processes
// it, as a multicast Solicit or Rebind reaches all), and returns the first
// answer of type want with the node that gave it, plus the views of each
// server's table taken before it processed m.
func (s *sim) multicast(m *dhcpv6.Message, order []*node, want dhcpv6.MessageType) (*dhcpv6.Message, *node, map[*node]*fsm.View, map[*node]string) {
	var got *dhcpv6.Message
	var from *node
	before, states := map[*node]*fsm.View{}, map[*node]string{}
	for _, n := range order {
		if !s.reachable(n) {
			continue
		}
		before[n], states[n] = n.store.State().View(), n.state()
		r := s.send(n, m)
		if r != nil && r.MessageType == want && got == nil {
			got, from = r, n
		}
	}
	return got, from, before, states
}

// iaAddrs returns the addresses and valid lifetimes in c's IA_NA of r.
func iaAddrs(c *simClient, r *dhcpv6.Message) map[netip.Addr]time.Duration {
	out := map[netip.Addr]time.Duration{}
	for _, ia := range r.Options.IANA() {
		if ia.IaId != c.IAID {
			continue
		}
		for _, a := range ia.Options.Addresses() {
			addr, _ := netip.AddrFromSlice(a.IPv6Addr)
			out[addr] = a.ValidLifetime
		}
	}
	return out
}

// adopt records what reply r from n told c: leases with a valid lifetime
// are held until now + valid (checking the MCLT invariant, 1, against
// before, n's table before the exchange, unless n was in PARTNER-DOWN);
// addresses with a zero lifetime are gone.
func (s *sim) adopt(c *simClient, n *node, r *dhcpv6.Message, before *fsm.View, state string) {
	now := s.now()
	for a, valid := range iaAddrs(c, r) {
		if valid == 0 {
			delete(c.leases, a)
			continue
		}
		end := now.Add(valid)
		s.checkMCLT(c, n, a, end, before, state)
		c.leases[a] = held{end: end, server: n.name, at: now}
		s.stats.Grants++
		s.logf("  client %d holds %v until +%v from %s (%s)", c.id, a, valid, n.name, state)
	}
	s.noteAcked(n)
}

// noteAcked records n's applied index as acknowledged to a client.
func (s *sim) noteAcked(n *node) {
	idx, _, _ := n.store.State().Applied()
	s.acked[n] = max(s.acked[n], idx)
}

// clientOp runs one client action chosen by the schedule's parameters.
func (s *sim) clientOp(a uint64) {
	c := s.cls[a%simClients]
	op := (a >> 8) % 10
	priFirst := (a>>16)&1 == 1
	rapid := (a>>17)&1 == 1
	s.stats.ClientOps++
	s.prune(c)
	if len(c.leases) == 0 {
		s.solicit(c, priFirst, rapid)
		return
	}
	addrs := make([]netip.Addr, 0, len(c.leases))
	for x := range c.leases {
		addrs = append(addrs, x)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	addr := addrs[0]
	h := c.leases[addr]
	srv := s.nodeNamed(h.server)
	switch {
	case op < 5: // Renew with its server; Rebind with anyone if it does not answer
		s.logf("client %d: Renew %v with %s", c.id, addr, srv.name)
		if s.reachable(srv) {
			before, state := srv.store.State().View(), srv.state()
			if r := s.send(srv, c.Renew(srv.sid(), addr)); r != nil {
				s.adopt(c, srv, r, before, state)
				return
			}
		}
		s.rebind(c, addr, priFirst)
	case op < 7:
		s.rebind(c, addr, priFirst)
	case op < 9: // Release: the client stops using it at once (RFC 8415 §18.2.7)
		s.logf("client %d: Release %v to %s", c.id, addr, srv.name)
		delete(c.leases, addr)
		if s.reachable(srv) {
			if r := s.send(srv, c.Release(srv.sid(), addr)); r != nil {
				s.noteAcked(srv)
			}
		}
	default:
		s.logf("client %d: Decline %v to %s", c.id, addr, srv.name)
		delete(c.leases, addr)
		if s.reachable(srv) {
			if r := s.send(srv, c.Decline(srv.sid(), addr)); r != nil {
				s.noteAcked(srv)
			}
		}
	}
}

func (s *sim) solicit(c *simClient, priFirst, rapid bool) {
	s.logf("client %d: Solicit (rapid %v, %s first)", c.id, rapid, map[bool]string{true: "primary", false: "secondary"}[priFirst])
	if rapid {
		r, n, before, states := s.multicast(c.Solicit(false, true), s.order(priFirst), dhcpv6.MessageTypeReply)
		if r != nil {
			s.adopt(c, n, r, before[n], states[n])
		}
		return
	}
	adv, n, _, _ := s.multicast(c.Solicit(false, false), s.order(priFirst), dhcpv6.MessageTypeAdvertise)
	if adv == nil {
		return
	}
	req, err := c.Request(adv)
	if err != nil {
		s.fail("client %d: Request from %s's Advertise: %v", c.id, n.name, err)
	}
	before, state := n.store.State().View(), n.state()
	if r := s.send(n, req); r != nil {
		s.adopt(c, n, r, before, state)
	}
}

func (s *sim) rebind(c *simClient, addr netip.Addr, priFirst bool) {
	s.logf("client %d: Rebind %v", c.id, addr)
	r, n, before, states := s.multicast(c.Rebind(addr), s.order(priFirst), dhcpv6.MessageTypeReply)
	if r != nil {
		s.adopt(c, n, r, before[n], states[n])
	}
}

// prune forgets c's leases that have run out.
func (s *sim) prune(c *simClient) {
	for a, h := range c.leases {
		if !h.end.After(s.now()) {
			delete(c.leases, a)
		}
	}
}

// --- invariants ---

// checkMCLT is invariant 1: a lease given by a server not in PARTNER-DOWN
// ends no later than max(the partner lifetime the partner acknowledged for
// this client's lease, now) + MCLT (RFC 8156 §4.4). before is the granting
// server's table just before the exchange: an acknowledgement counts only
// if the binding was then ACTIVE for this same client.
func (s *sim) checkMCLT(c *simClient, n *node, a netip.Addr, end time.Time, before *fsm.View, state string) {
	if state == "PARTNER-DOWN" {
		return
	}
	now := s.now()
	var acked int64
	b, ok := before.Get(fsm.AddrResource(fsm.IANA, a))
	// The partner's acknowledgement still stands for this client if the
	// lease is ACTIVE for it, or was released or expired with that news
	// not yet acknowledged (the partner still holds the lease as ACTIVE).
	if ok && b.DUID == c.Key() && b.IAID == c.IAIDNum() && (b.Status == fsm.StatusActive ||
		(b.Status == fsm.StatusReleased || b.Status == fsm.StatusExpired) && b.Owed()) {
		acked = b.AckedPartnerLifetime
	}
	limit := time.Unix(max(acked, now.Unix()), 0).Add(testMCLT)
	if end.After(limit) {
		s.fail("MCLT invariant: %s (%s) gave client %d %v until %v, beyond max(acked %d, now %v) + MCLT = %v; binding before: %+v",
			n.name, state, c.id, a, end.Sub(t0), acked, now.Sub(t0), limit.Sub(t0), b)
	}
}

// checkExclusive is invariant 2: no address is held, unexpired, by two
// clients in the clients' view.
func (s *sim) checkExclusive() {
	if s.o.violate {
		return
	}
	owner := map[netip.Addr]*simClient{}
	for _, c := range s.cls {
		s.prune(c)
		for a, h := range c.leases {
			if o := owner[a]; o != nil {
				oh := o.leases[a]
				s.fail("%v held by client %d (until %v, from %s at %v) and client %d (until %v, from %s at %v)",
					a, o.id, oh.end.Sub(t0), oh.server, oh.at.Sub(t0), c.id, h.end.Sub(t0), h.server, h.at.Sub(t0))
			}
			owner[a] = c
		}
	}
}

// checkDurable is invariant 3, after n restarted: its store has applied
// every change it acknowledged to a client, and (outside violate runs,
// where conflict resolution may legitimately take a lease away) every
// unexpired lease it gave last is ACTIVE there for that client until at
// least the end the client was told.
func (s *sim) checkDurable(n *node) {
	idx, _, _ := n.store.State().Applied()
	if idx < s.acked[n] {
		s.fail("%s reopened at raft index %d, but acknowledged a change committed at %d", n.name, idx, s.acked[n])
	}
	if s.o.violate {
		return
	}
	for _, c := range s.cls {
		s.prune(c)
		for a, h := range c.leases {
			if h.server != n.name {
				continue
			}
			b, ok := n.get(a)
			if !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() || b.StateExpirationTime < h.end.Unix() {
				s.fail("%s after restart: %v is %+v; client %d was told it holds it until %v", n.name, a, b, c.id, h.end.Sub(t0))
			}
		}
	}
}

// converge heals the link, starts a stopped node, and waits (moving the
// clock) until both are NORMAL with nothing owed or in flight; then the
// tables must agree and no address may be ACTIVE for two clients
// (invariant 4, and the resolution half of invariant 2).
func (s *sim) converge() {
	s.stats.Converges++
	s.setFault(faultNone, 0)
	for _, n := range s.nodes() {
		if n.ep == nil {
			s.restart(n)
		}
	}
	deadline := s.now().Add(2 * time.Hour)
	for {
		s.quiesce()
		pri, sec := s.p.pri, s.p.sec
		if pri.state() == "NORMAL" && sec.state() == "NORMAL" && pri.owed() == 0 && sec.owed() == 0 &&
			pri.ep.Status().UnackedUpdates == 0 && sec.ep.Status().UnackedUpdates == 0 {
			break
		}
		if s.now().After(deadline) {
			s.fail("no convergence after 2h with the link healed: primary %s owed %s (in flight %d, busy %d), secondary %s owed %s (in flight %d, busy %d)",
				pri.state(), s.owedFull(pri), len(pri.ep.inflight), len(pri.ep.busy), sec.state(), s.owedFull(sec), len(sec.ep.inflight), len(sec.ep.busy))
		}
		s.advance(5 * time.Second)
	}
	s.logf("converged: both NORMAL, nothing owed")
	if d := s.p.noDoubleActive(); d != "" {
		s.fail("after convergence, ACTIVE for different clients on the two sides: %s", d)
	}
	if d := s.p.sameBindings(); d != "" {
		s.fail("after convergence the tables differ: %s", d)
	}
}

// --- the schedule ---

// runStep draws one action and its parameters (always three draws: the
// schedule is a function of the seed alone) and performs it.
func (s *sim) runStep() {
	k, a, b := s.rng.IntN(100), s.rng.Uint64(), s.rng.Uint64()
	switch {
	case k < 60:
		s.clientOp(a)
	case k < 80:
		s.advance(s.duration(a, b))
	case k < 90:
		s.linkAction(a, b)
	case k < 95:
		s.crashAction(a)
	case k < 98:
		s.partnerDownAction(a)
	default:
		s.logf("converge")
		s.converge()
	}
	s.quiesce()
	s.checkExclusive()
}

// duration picks how far the clock moves: mostly seconds, often past
// T1/T2/the MCLT, sometimes past lifetimes and the expired-hold time.
func (s *sim) duration(a, b uint64) time.Duration {
	var d time.Duration
	switch a % 20 {
	case 0: // past a whole lifetime and more
		d = simValid + time.Duration(b%uint64(20*60))*time.Second
	case 1, 2, 3: // around T1/T2/MCLT
		d = time.Minute + time.Duration(b%uint64(8*60))*time.Second
	default:
		d = time.Duration(1+b%45) * time.Second
	}
	s.logf("advance %v", d)
	return d
}

func (s *sim) linkAction(a, b uint64) {
	s.stats.Faults++
	switch a % 6 {
	case 0, 1:
		s.logf("link heal (was %v)", s.fault)
		s.setFault(faultNone, 0)
	case 2:
		s.logf("link cut")
		s.setFault(faultCut, 0)
	case 3:
		s.logf("link black hole")
		s.setFault(faultHole, 0)
	default:
		d := time.Duration(1+b%5) * time.Second
		if b%8 == 0 {
			d = time.Duration(50+b%60) * time.Second // past the keepalive
		}
		s.logf("link delay %v", d)
		s.setFault(faultDelay, d)
	}
}

func (s *sim) crashAction(a uint64) {
	n := s.nodes()[a%2]
	if n.ep == nil {
		s.logf("restart %s", n.name)
		s.restart(n)
		return
	}
	s.logf("crash %s (in %s)", n.name, n.state())
	s.crash(n)
	if (a>>1)%3 == 0 {
		s.logf("restart %s at once", n.name)
		s.restart(n)
	}
}

// partnerDownAction is the operator's PARTNER-DOWN on one node: under the
// rule only when the partner is stopped, or cut off (and then, being down
// for clients too, it serves nobody: see reachable); violate runs do it
// regardless.
func (s *sim) partnerDownAction(a uint64) {
	n := s.nodes()[a%2]
	if n.ep == nil {
		return
	}
	o := s.p.partner(n)
	allowed := o.ep == nil || s.fault == faultCut || s.fault == faultHole
	if !allowed && !s.o.violate {
		return
	}
	s.stats.PartnerDowns++
	err := n.ep.PartnerDown()
	s.logf("operator partner-down on %s (partner %s, link %v): %v -> %s", n.name,
		map[bool]string{true: "stopped", false: "running"}[o.ep == nil], s.fault, err, n.state())
}

// run runs the schedule, then converges and checks once more.
func (s *sim) run() {
	for s.step = 1; s.step <= s.o.steps; s.step++ {
		s.runStep()
	}
	s.step = s.o.steps
	s.logf("final converge")
	s.converge()
}

// summary is one line about the run.
func (s *sim) summary() string {
	st := s.stats
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d steps, %d client ops, %d leases adopted, %d crashes, %d link faults, %d partner-downs, %d converges, fake time %v",
		s.o.seed, s.o.steps, st.ClientOps, st.Grants, st.Crashes, st.Faults, st.PartnerDowns, st.Converges, s.now().Sub(t0))
	return b.String()
}

// owedFull lists n's bindings that owe the partner an update, every field.
func (s *sim) owedFull(n *node) string {
	var out []string
	for _, b := range n.bindings() {
		if b.Owed() {
			out = append(out, fmt.Sprintf("%+v", b))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}
