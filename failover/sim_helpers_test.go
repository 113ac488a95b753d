package failover

// The deterministic simulation's machinery (sim_test.go has the tests): a
// pairEnv with short lifetimes and a small pool, a seeded schedule of
// actions, the clients' view, quiescence between steps, and the invariant
// checks. docs/reliability/simulation.md describes the fault model, the
// invariants and what a seed reproduces.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tandem-dhcp/tandem/failover/update"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/dhcptest"
	"github.com/tandem-dhcp/tandem/server"
)

// The simulation's lease timers: short, so that a few hundred steps cross
// T1, T2, lifetimes, the MCLT and the expired-hold time many times.
const (
	simValid   = 10 * time.Minute
	simPref    = 8 * time.Minute
	simT1      = 5 * time.Minute
	simT2      = 8 * time.Minute
	simHold    = 2 * time.Minute
	simClients = 24
	// simPDLen is the delegated length: simPD holds 16 of them.
	simPDLen = 60
	// simPDThreshold is the rebalancing hysteresis (the default, 8, would
	// never move a prefix in a pool of 16).
	simPDThreshold = 2
)

// simPool is small (32 addresses for 24 clients) so addresses are reused
// often: reuse is where the pair can go wrong.
var simPool = server.AddressRange{First: netip.MustParseAddr("2001:db8:1::1000"), Last: netip.MustParseAddr("2001:db8:1::101f")}

// simPD is the pd-pool: 16 /60s for 24 clients that each ask for one, so
// prefixes run out and are reused constantly, and the primary's
// proportional allocation (half to the secondary, FREE-BACKUP) moves.
var simPD = netip.MustParsePrefix("2001:db8:80::/56")

func simCovered(r fsm.Resource) bool {
	return covered(r) || r.Type == fsm.IAPD && r.Len == simPDLen && simPD.Contains(r.Addr())
}

// linkFault is the partner link's injected fault.
type linkFault int

const (
	faultNone  linkFault = iota
	faultCut             // connections reset, new ones refused (memnet Partition)
	faultHole            // bytes vanish silently (memnet BlackHole + Partition after detection)
	faultDelay           // bytes arrive late (memnet Delay)
)

func (f linkFault) String() string { return [...]string{"none", "cut", "hole", "delay"}[f] }

// held is one lease (an address or a delegated prefix) in a client's
// view: what the Reply told it.
type held struct {
	end    time.Time // grant time + valid lifetime
	server string    // the node whose Reply it adopted
	at     time.Time // when
	// wiped: the server that gave it lost its database since (wipe); the
	// lease is no longer durable there (invariant 3 skips it), but the
	// client still holds it (invariant 2 still counts it).
	wiped bool
}

// simClient is a client and what it believes it holds.
type simClient struct {
	*dhcptest.Client
	id     int
	leases map[fsm.Resource]held
}

// iaid is the client's IAID of the IA that holds resources of type t.
func (c *simClient) iaid(t fsm.IAType) uint32 {
	if t == fsm.IAPD {
		return binary.BigEndian.Uint32(c.PDIAID[:])
	}
	return c.IAIDNum()
}

// held returns c's resources, sorted, optionally only those from server.
func (c *simClient) held(server string) []fsm.Resource {
	var out []fsm.Resource
	for r, h := range c.leases {
		if server == "" || h.server == server {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, fsm.Resource.Compare)
	return out
}

// ias returns c's IA_NA and IA_PD naming rs (an IA only if rs has some of
// its type).
func (c *simClient) ias(rs []fsm.Resource) []dhcpv6.Option {
	var addrs []netip.Addr
	var pfxs []netip.Prefix
	for _, r := range rs {
		if r.Type == fsm.IAPD {
			pfxs = append(pfxs, r.Prefix())
		} else {
			addrs = append(addrs, r.Addr())
		}
	}
	var out []dhcpv6.Option
	if len(addrs) > 0 {
		out = append(out, c.IANA(addrs...))
	}
	if len(pfxs) > 0 {
		out = append(out, c.IAPD(pfxs...))
	}
	return out
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
	// wipes includes data-dir wipes among the crashes (a node restarting
	// with nothing, recovering through UPDREQALL).
	wipes bool
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
	// sincePD: the node has been in PARTNER-DOWN since the last
	// convergence, so it may have given full lifetimes its partner does
	// not know; wiping it then would lose leases nothing can protect.
	sincePD map[*node]bool
	// wiped: the node lost its data dir since the last convergence (its
	// partner must not lose its own meanwhile, and the operator does not
	// declare PARTNER-DOWN on it: it knows the disk was lost).
	wiped map[*node]bool
	// downed: the operator declared the node down (its partner entered
	// PARTNER-DOWN) and it has not talked to its partner since (reachable).
	downed map[*node]bool
	// last is the node that answered the last client exchange (the
	// mid-step crash crashes it).
	last *node
	// hist is, per node and resource, what each committed change did to
	// it (for the failure report: how two tables came to differ).
	histMu sync.Mutex
	hist   map[*node]map[fsm.Resource][]string
	stats  simStats
}

// traceStore records each committed op in the sim's history.
type traceStore struct {
	Store
	s *sim
	n *node
}

func (t traceStore) Apply(cmd *fsm.Command) (uint64, error) {
	idx, err := t.Store.Apply(cmd)
	if err != nil || cmd.Type != fsm.CmdTxn {
		return idx, err
	}
	at := time.Unix(0, cmd.Time).Sub(t0).Round(time.Second)
	t.s.histMu.Lock()
	defer t.s.histMu.Unlock()
	h := t.s.hist[t.n]
	for _, op := range cmd.Ops {
		b := op.Binding
		line := fmt.Sprintf("@%v #%d %v %q: ", at, idx, cmd.Origin, cmd.Note)
		if op.Delete {
			line += "deleted"
		} else {
			line += fmt.Sprintf("%v %x/%d sos %d exp %d cltt %d plt %d acked %d owed %v", b.Status, b.DUID, b.IAID,
				b.StartTimeOfState-t0.Unix(), b.StateExpirationTime-t0.Unix(), b.CLTT-t0.Unix(), b.PartnerLifetime-t0.Unix(),
				b.AckedPartnerLifetime-t0.Unix(), b.Owed())
		}
		h[op.Resource] = append(h[op.Resource], line)
	}
	return idx, err
}

// simStats counts what a run did (for the summary).
type simStats struct {
	ClientOps, Grants, PDGrants, Crashes, Wipes, MidCrashes, StreamCrashes, Faults, PartnerDowns, Converges int
}

func newSim(t testing.TB, o simOptions) *sim {
	p := newPairEnv(t)
	for _, n := range []*node{p.pri, p.sec} {
		n.cfgServer = func(c *server.Config) {
			s := &c.Subnets[0]
			s.Pools = []server.AddressRange{simPool}
			s.PDPools = []server.PDPool{{Prefix: simPD, DelegatedLength: simPDLen}}
			s.PreferredLifetime, s.ValidLifetime, s.RenewTime, s.RebindTime = simPref, simValid, simT1, simT2
			c.ExpiredHoldTime = simHold
		}
		n.cfgEndpoint = func(c *Config) {
			c.ExpiredHold = simHold
			c.Covered = simCovered
			c.PrefixThreshold = simPDThreshold
		}
	}
	s := &sim{t: t, o: o, p: p, rng: rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15)),
		acked: map[*node]uint64{}, sincePD: map[*node]bool{}, wiped: map[*node]bool{}, downed: map[*node]bool{},
		hist: map[*node]map[fsm.Resource][]string{}}
	for _, n := range []*node{p.pri, p.sec} {
		s.hist[n] = map[fsm.Resource][]string{}
		n.wrapStore = func(st Store) Store { return traceStore{st, s, n} }
	}
	for i := 0; i < simClients; i++ {
		s.cls = append(s.cls, &simClient{Client: dhcptest.New(1000 + i), id: i, leases: map[fsm.Resource]held{}})
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
	from := max(len(s.log)-*simLogLines, 0)
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
		s.reclaim()
	}
}

// reclaim runs each running server's lease reclamation, as its reclaim
// loop (server.Config.ReclaimInterval, 10 s) does in a real server: that
// loop belongs to server.Serve, which the harness does not run (clients go
// through Handle). Without it no lease would ever expire in the database.
// It reports whether it changed anything.
func (s *sim) reclaim() bool {
	did := false
	for _, n := range s.nodes() {
		if n.ep == nil {
			continue
		}
		k, err := n.srv.Reclaim()
		if err != nil {
			s.fail("%s: reclaim: %v", n.name, err)
		}
		did = did || k > 0
	}
	if did {
		s.quiesce()
	}
	return did
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
// rule a server the operator declared down (its partner entered
// PARTNER-DOWN by the operator's hand: downed) stays down for clients,
// even if that partner stops meanwhile, until it has talked to its partner
// (any state but COMMUNICATIONS-INTERRUPTED, STARTUP or PARTNER-DOWN).
// Likewise, under the operator's
// rule a server whose partner is in PARTNER-DOWN is down as far as clients
// are concerned (RFC 8156 §8.3: the operator declares PARTNER-DOWN only for
// a partner that is not operating) until it has learned of it and
// recovered (RECOVER, RECOVER-WAIT and RECOVER-DONE serve at most the
// renewals the protocol allows them): a connection alone is not enough
// (a delayed or black-holed one carries no STATE). Only the violate runs
// break that rule.
func (s *sim) reachable(n *node) bool {
	if n.ep == nil {
		return false
	}
	if s.o.violate {
		return true
	}
	switch n.state() {
	case "COMMUNICATIONS-INTERRUPTED", "STARTUP", "PARTNER-DOWN":
	default:
		s.downed[n] = false // it has talked to its partner since
		return true
	}
	if s.downed[n] {
		return false
	}
	o := s.p.partner(n)
	return o.ep == nil || !s.partnerDown(o)
}

// partnerDown reports whether n is in PARTNER-DOWN, or in the STARTUP of
// a restart that carries it (its stored previous state): the operator's
// declaration stands across n's restarts.
func (s *sim) partnerDown(n *node) bool {
	switch n.state() {
	case "PARTNER-DOWN":
		return true
	case "STARTUP":
		return wire.ServerState(n.store.State().Endpoint().PreviousState) == wire.StatePartnerDown
	}
	return false
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

// replyLeases returns the addresses and prefixes, with their valid
// lifetimes, in c's IA_NA and IA_PD of r, and which of the two IAs came
// back with an error status (the server holds nothing for it: NoBinding,
// NoAddrsAvail, NoPrefixAvail, NotOnLink...).
func replyLeases(c *simClient, r *dhcpv6.Message) (map[fsm.Resource]time.Duration, map[fsm.IAType]bool) {
	out, failed := map[fsm.Resource]time.Duration{}, map[fsm.IAType]bool{}
	bad := func(opts dhcpv6.Options) bool {
		sc, ok := opts.GetOne(dhcpv6.OptionStatusCode).(*dhcpv6.OptStatusCode)
		return ok && sc.StatusCode != 0
	}
	for _, ia := range r.Options.IANA() {
		if ia.IaId != c.IAID {
			continue
		}
		failed[fsm.IANA] = bad(ia.Options.Options)
		for _, a := range ia.Options.Addresses() {
			addr, _ := netip.AddrFromSlice(a.IPv6Addr)
			out[fsm.AddrResource(fsm.IANA, addr)] = a.ValidLifetime
		}
	}
	for _, ia := range r.Options.IAPD() {
		if ia.IaId != c.PDIAID {
			continue
		}
		failed[fsm.IAPD] = bad(ia.Options.Options)
		for _, p := range ia.Options.Prefixes() {
			if p.Prefix == nil {
				continue
			}
			a, _ := netip.AddrFromSlice(p.Prefix.IP.To16())
			ones, _ := p.Prefix.Mask.Size()
			out[fsm.PrefixResource(netip.PrefixFrom(a, ones))] = p.ValidLifetime
		}
	}
	return out, failed
}

// adopt records what reply r from n told c about the resources it asked
// for (sent) and those it got: leases with a valid lifetime are held until
// now + valid (checking the MCLT invariant, 1, against before, n's table
// before the exchange, unless n was in PARTNER-DOWN, and for prefixes
// invariant 5, whose prefixes n may delegate); resources with a zero
// lifetime are gone, and so are the ones sent in an IA that came back
// with an error status and without them.
func (s *sim) adopt(c *simClient, n *node, r *dhcpv6.Message, before *fsm.View, state string, sent []fsm.Resource) {
	now := s.now()
	got, failed := replyLeases(c, r)
	for _, res := range sent {
		if _, ok := got[res]; !ok && failed[res.Type] {
			delete(c.leases, res)
			s.logf("  client %d drops %v (%s: error status)", c.id, res, n.name)
		}
	}
	for res, valid := range got {
		if valid == 0 {
			delete(c.leases, res)
			continue
		}
		end := now.Add(valid)
		s.checkMCLT(c, n, res, end, before, state)
		s.checkPrefixOwner(c, n, res, before, state)
		c.leases[res] = held{end: end, server: n.name, at: now}
		s.stats.Grants++
		if res.Type == fsm.IAPD {
			s.stats.PDGrants++
		}
		s.logf("  client %d holds %v until +%v from %s (%s)", c.id, res, valid, n.name, state)
	}
	if state == "PARTNER-DOWN" {
		s.sincePD[n] = true
	}
	s.noteAcked(n)
}

// noteAcked records n's applied index as acknowledged to a client, and n
// as the last to answer.
func (s *sim) noteAcked(n *node) {
	idx, _, _ := n.store.State().Applied()
	s.acked[n] = max(s.acked[n], idx)
	s.last = n
}

// clientOp runs one client action chosen by the schedule's parameters.
// A client asks for an address and a prefix (IA_NA + IA_PD) when it holds
// nothing; otherwise it acts on what it holds from the server of its
// first lease.
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
	srv := s.nodeNamed(c.leases[c.held("")[0]].server)
	mine := c.held(srv.name)
	switch {
	case op < 5: // Renew with its server; Rebind with anyone if it does not answer
		s.logf("client %d: Renew %v with %s", c.id, mine, srv.name)
		if s.reachable(srv) {
			before, state := srv.store.State().View(), srv.state()
			if r := s.send(srv, c.Msg(dhcpv6.MessageTypeRenew, append([]dhcpv6.Option{srv.sid()}, c.ias(mine)...)...)); r != nil {
				s.adopt(c, srv, r, before, state, mine)
				return
			}
		}
		s.rebind(c, priFirst)
	case op < 7:
		s.rebind(c, priFirst)
	case op < 9: // Release: the client stops using them at once (RFC 8415 §18.2.7)
		s.giveBack(c, srv, dhcpv6.MessageTypeRelease, mine)
	default: // Decline its addresses (prefixes cannot be declined: Release them)
		var addrs, pfxs []fsm.Resource
		for _, r := range mine {
			if r.Type == fsm.IAPD {
				pfxs = append(pfxs, r)
			} else {
				addrs = append(addrs, r)
			}
		}
		if len(addrs) == 0 {
			s.giveBack(c, srv, dhcpv6.MessageTypeRelease, pfxs)
			return
		}
		s.giveBack(c, srv, dhcpv6.MessageTypeDecline, addrs)
	}
}

// giveBack sends a Release or Decline of rs to srv; the client stops
// using them whatever the answer.
func (s *sim) giveBack(c *simClient, srv *node, t dhcpv6.MessageType, rs []fsm.Resource) {
	s.logf("client %d: %v %v to %s", c.id, t, rs, srv.name)
	for _, r := range rs {
		delete(c.leases, r)
	}
	if s.reachable(srv) {
		if r := s.send(srv, c.Msg(t, append([]dhcpv6.Option{srv.sid()}, c.ias(rs)...)...)); r != nil {
			s.noteAcked(srv)
		}
	}
}

func (s *sim) solicit(c *simClient, priFirst, rapid bool) {
	s.logf("client %d: Solicit IA_NA+IA_PD (rapid %v, %s first)", c.id, rapid, map[bool]string{true: "primary", false: "secondary"}[priFirst])
	if rapid {
		r, n, before, states := s.multicast(c.Solicit(true, true), s.order(priFirst), dhcpv6.MessageTypeReply)
		if r != nil {
			s.adopt(c, n, r, before[n], states[n], nil)
		}
		return
	}
	adv, n, _, _ := s.multicast(c.Solicit(true, false), s.order(priFirst), dhcpv6.MessageTypeAdvertise)
	if adv == nil {
		return
	}
	req, err := c.Request(adv)
	if err != nil {
		s.fail("client %d: Request from %s's Advertise: %v", c.id, n.name, err)
	}
	before, state := n.store.State().View(), n.state()
	if r := s.send(n, req); r != nil {
		s.adopt(c, n, r, before, state, nil)
	}
}

// rebind rebinds everything c holds with any server.
func (s *sim) rebind(c *simClient, priFirst bool) {
	all := c.held("")
	s.logf("client %d: Rebind %v", c.id, all)
	r, n, before, states := s.multicast(c.Msg(dhcpv6.MessageTypeRebind, c.ias(all)...), s.order(priFirst), dhcpv6.MessageTypeReply)
	if r != nil {
		s.adopt(c, n, r, before[n], states[n], all)
	}
}

// prune forgets c's leases that have run out.
func (s *sim) prune(c *simClient) {
	for r, h := range c.leases {
		if !h.end.After(s.now()) {
			delete(c.leases, r)
		}
	}
}

// --- invariants ---

// checkMCLT is invariant 1: a lease (address or prefix) given by a server
// not in PARTNER-DOWN ends no later than max(the partner lifetime the
// partner acknowledged for this client's lease, now) + MCLT (RFC 8156
// §4.4). before is the granting server's table just before the exchange:
// an acknowledgement counts only if the binding was then ACTIVE for this
// same client and IA.
func (s *sim) checkMCLT(c *simClient, n *node, r fsm.Resource, end time.Time, before *fsm.View, state string) {
	if state == "PARTNER-DOWN" {
		return
	}
	now := s.now()
	var acked int64
	b, ok := before.Get(r)
	// The partner's acknowledgement still stands for this client if the
	// lease is ACTIVE for it, or was released or expired with that news
	// not yet acknowledged (the partner still holds the lease as ACTIVE).
	if ok && b.DUID == c.Key() && b.IAID == c.iaid(r.Type) && (b.Status == fsm.StatusActive ||
		(b.Status == fsm.StatusReleased || b.Status == fsm.StatusExpired) && b.Owed()) {
		acked = b.AckedPartnerLifetime
	}
	limit := time.Unix(max(acked, now.Unix()), 0).Add(testMCLT)
	if end.After(limit) {
		s.fail("MCLT invariant: %s (%s) gave client %d %v until %v, beyond max(acked %d, now %v) + MCLT = %v; binding before: %+v\n%s",
			n.name, state, c.id, r, end.Sub(t0), acked, now.Sub(t0), limit.Sub(t0), b, s.history(r))
	}
}

// checkPrefixOwner is invariant 5 (RFC 8156 §4.2.2): outside PARTNER-DOWN
// a prefix new to the client comes from the giver's side of the split: the
// secondary delegates only its FREE-BACKUP prefixes, the primary never
// one of those. A prefix already bound to this client and IA (a renewal,
// a rebind, a reuse of its own expired or released prefix) is not a new
// delegation.
func (s *sim) checkPrefixOwner(c *simClient, n *node, r fsm.Resource, before *fsm.View, state string) {
	if r.Type != fsm.IAPD || state == "PARTNER-DOWN" {
		return
	}
	b, ok := before.Get(r)
	if ok && b.DUID == c.Key() && b.IAID == c.iaid(r.Type) {
		return
	}
	backup := ok && b.Status == fsm.StatusFreeBackup
	if (n == s.p.sec) != backup {
		s.fail("prefix split: %s (%s) delegated %v to client %d; binding before: %+v (ok %v)", n.name, state, r, c.id, b, ok)
	}
}

// checkExclusive is invariant 2: no address or prefix is held, unexpired,
// by two clients in the clients' view.
func (s *sim) checkExclusive() {
	if s.o.violate {
		return
	}
	owner := map[fsm.Resource]*simClient{}
	for _, c := range s.cls {
		s.prune(c)
		for r, h := range c.leases {
			if o := owner[r]; o != nil {
				oh := o.leases[r]
				s.fail("%v held by client %d (until %v, from %s at %v) and client %d (until %v, from %s at %v)\n%s",
					r, o.id, oh.end.Sub(t0), oh.server, oh.at.Sub(t0), c.id, h.end.Sub(t0), h.server, h.at.Sub(t0), s.history(r))
			}
			owner[r] = c
		}
	}
}

// checkDurable is invariant 3, after n restarted: its store has applied
// every change it acknowledged to a client (since its last wipe), and
// (outside violate runs, where conflict resolution may legitimately take a
// lease away) every unexpired lease it gave last, and not before a wipe,
// is ACTIVE there for that client until at least the end the client was
// told.
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
		for r, h := range c.leases {
			if h.server != n.name || h.wiped {
				continue
			}
			b, ok := n.store.State().Get(r)
			if !ok || b.Status != fsm.StatusActive || b.DUID != c.Key() || b.StateExpirationTime < h.end.Unix() {
				s.fail("%s after restart: %v is %+v; client %d was told it holds it until %v", n.name, r, b, c.id, h.end.Sub(t0))
			}
		}
	}
}

// prefixSplit is invariant 6, after convergence ("" if it holds): the
// primary's proportional allocation is settled (update.Rebalance has
// nothing to move) and both sides agree on the secondary's FREE-BACKUP set.
func (s *sim) prefixSplit() string {
	pri, sec := s.p.pri, s.p.sec
	pools := pri.srv.PrefixPools()
	if len(pools) != 1 {
		return fmt.Sprintf("primary has %d pd-pools, want 1", len(pools))
	}
	pp := pools[0]
	if bal := update.Rebalance(pp.Available, pp.FreeBackup, *pri.ep.cfg.PrefixShare, simPDThreshold); bal.Give != 0 || bal.Take != 0 {
		return fmt.Sprintf("primary's split unsettled: available %d, secondary's %d (give %d, take %d)", pp.Available, pp.FreeBackup, bal.Give, bal.Take)
	}
	if a, b := pri.freeBackup(), sec.freeBackup(); !slices.Equal(a, b) {
		var hist []string
		for _, p := range a {
			if !slices.Contains(b, p) && len(hist) < 2 {
				r := fsm.PrefixResource(p)
				sb, _ := sec.store.State().Get(r)
				hist = append(hist, fmt.Sprintf("%v on the secondary: %+v\n%s", p, sb, s.history(r)))
			}
		}
		for _, p := range b {
			if !slices.Contains(a, p) && len(hist) < 4 {
				r := fsm.PrefixResource(p)
				pb, _ := pri.store.State().Get(r)
				hist = append(hist, fmt.Sprintf("%v on the primary: %+v\n%s", p, pb, s.history(r)))
			}
		}
		return fmt.Sprintf("FREE-BACKUP prefixes: primary %v, secondary %v\n%s", a, b, strings.Join(hist, "\n"))
	}
	return ""
}

// converge heals the link, starts a stopped node, and waits (moving the
// clock) until both are NORMAL with nothing owed or in flight and the
// primary's prefix split is settled; then the tables must agree and no
// address or prefix may be ACTIVE for two clients (invariants 4 and 6, and
// the resolution half of invariant 2).
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
		drained := pri.state() == "NORMAL" && sec.state() == "NORMAL" && pri.owed() == 0 && sec.owed() == 0 &&
			pri.ep.Status().UnackedUpdates == 0 && sec.ep.Status().UnackedUpdates == 0
		split := ""
		if drained {
			// Converged also means nothing left for the reclaimers: a lease
			// that ran out since their last pass (an ACTIVE update accepted
			// after its end, as crossing updates can leave one) is expired
			// and exchanged before the tables are compared.
			if split = s.prefixSplit(); split == "" && !s.reclaim() {
				break
			}
		}
		if s.now().After(deadline) {
			s.fail("no convergence after 2h with the link healed: primary %s owed %s (in flight %d, busy %d), secondary %s owed %s (in flight %d, busy %d); prefixes: %s",
				pri.state(), s.owedFull(pri), len(pri.ep.inflight), len(pri.ep.busy), sec.state(), s.owedFull(sec), len(sec.ep.inflight), len(sec.ep.busy), split)
		}
		s.advance(5 * time.Second)
	}
	clear(s.sincePD)
	clear(s.wiped)
	s.logf("converged: both NORMAL, nothing owed, prefix split settled")
	if d := s.p.noDoubleActive(); d != "" {
		s.fail("after convergence, ACTIVE for different clients on the two sides: %s", d)
	}
	if d := s.p.sameBindings(); d != "" {
		s.fail("after convergence the tables differ: %s\n%s", d, s.fullDiff())
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
		s.crashAction(a, b)
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

// crashAction crashes or restarts a node: mostly a plain crash between
// steps (restarted at once or by a later step), sometimes a wipe (the node
// loses its data dir), a crash in the middle of a client exchange's
// aftermath, or a crash while an UPDREQALL answer streams.
func (s *sim) crashAction(a, b uint64) {
	n := s.nodes()[a%2]
	if n.ep == nil {
		s.logf("restart %s", n.name)
		s.restart(n)
		return
	}
	switch (a >> 3) % 6 {
	case 0:
		if s.o.wipes {
			s.wipeAction(n, (a>>6)%4, (a>>8)%16)
			return
		}
	case 1, 2:
		s.midStepCrash(b, (a>>1)%2 == 0)
		return
	}
	s.logf("crash %s (in %s)", n.name, n.state())
	s.crash(n)
	if (a>>1)%3 == 0 {
		s.logf("restart %s at once", n.name)
		s.restart(n)
	}
}

// midStepCrash runs a client action and crashes the server that answered
// the moment its Reply is out, without waiting for anything: its BNDUPD
// may be queued, in flight, or half committed at the partner. restart:
// reopen it at once (invariant 3 then checks the lease it just gave).
func (s *sim) midStepCrash(b uint64, restart bool) {
	s.last = nil
	s.clientOp(b)
	n := s.last
	if n == nil || n.ep == nil {
		return
	}
	s.stats.MidCrashes++
	s.logf("crash %s mid-step (in %s, %d updates unacked)", n.name, n.state(), n.ep.Status().UnackedUpdates)
	s.crash(n)
	if restart {
		s.logf("restart %s at once", n.name)
		s.restart(n)
	}
}

// wipeAction is a node losing its whole database: crash, remove the data
// dir, restart empty; it must ask its partner for everything (UPDREQALL)
// and wait out the MCLT before serving (RECOVER-WAIT), which is what keeps
// safe the leases it gave whose BNDUPD the partner never acknowledged
// (invariant 1 caps them at the MCLT). mode: 0 restart at once, 1 restart
// at a later step, 2 and 3 restart and crash the wiped node (2) or its
// partner (3) once the wiped node has received k BNDUPDs of the UPDREQALL
// answer (mid-stream, when it is that long). Only when the partner has its
// data (not wiped itself since the last convergence) and the node gave no
// lease in PARTNER-DOWN since (full lifetimes its partner may not know:
// nothing can save those).
func (s *sim) wipeAction(n *node, mode, k uint64) {
	o := s.p.partner(n)
	if s.wiped[o] || s.sincePD[n] || n.state() == "PARTNER-DOWN" {
		s.logf("no wipe of %s (partner wiped %v, partner-down since convergence %v)", n.name, s.wiped[o], s.sincePD[n])
		return
	}
	s.stats.Wipes++
	s.logf("wipe %s (in %s, %d owed, %d unacked)", n.name, n.state(), n.owed(), n.ep.Status().UnackedUpdates)
	s.crash(n)
	n.wipe()
	s.wiped[n] = true
	s.acked[n] = 0
	for _, c := range s.cls {
		for r, h := range c.leases {
			if h.server == n.name {
				h.wiped = true
				c.leases[r] = h
			}
		}
	}
	switch {
	case mode == 1:
		return
	case mode == 0 || o.ep == nil || s.fault != faultNone:
		s.logf("restart %s at once", n.name)
		s.restart(n)
		return
	}
	// Mid-stream: start n, move the clock a second at a time (the primary
	// dials on a timer) until n has k+1 BNDUPDs of the answer or UPDDONE.
	s.stats.StreamCrashes++
	n.start()
	base := n.stats().Received[wire.MsgBndUpd]
	for i := 0; i < 30; i++ {
		if poll(time.Second, func() bool {
			st := n.stats()
			return st.Received[wire.MsgBndUpd] > base+k || st.Received[wire.MsgUpdDone] > 0
		}) {
			break
		}
		s.p.clk.Advance(time.Second)
	}
	victim := n
	if mode == 3 {
		victim = o
	}
	st := n.stats()
	s.logf("crash %s during the UPDREQALL answer (%s has %d BNDUPDs, %d UPDDONE, in %s)", victim.name, n.name,
		st.Received[wire.MsgBndUpd]-base, st.Received[wire.MsgUpdDone], n.state())
	s.crash(victim)
	s.logf("restart %s at once", victim.name)
	s.restart(victim)
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
	allowed := (o.ep == nil || s.fault == faultCut || s.fault == faultHole) && !s.wiped[n]
	if !allowed && !s.o.violate {
		return
	}
	s.stats.PartnerDowns++
	err := n.ep.PartnerDown()
	if err == nil {
		s.sincePD[n] = true
		s.downed[o] = true
	}
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
	fmt.Fprintf(&b, "seed %d: %d steps, %d client ops, %d leases adopted (%d prefixes), %d crashes (%d wipes, %d mid-step, %d mid-UPDREQALL), %d link faults, %d partner-downs, %d converges, fake time %v",
		s.o.seed, s.o.steps, st.ClientOps, st.Grants, st.PDGrants, st.Crashes, st.Wipes, st.MidCrashes, st.StreamCrashes, st.Faults, st.PartnerDowns, st.Converges, s.now().Sub(t0))
	return b.String()
}

// fullDiff prints, every field, up to 5 bindings whose views differ.
func (s *sim) fullDiff() string {
	a, b := s.p.pri.bindings(), s.p.sec.bindings()
	va, vb := s.p.pri.leaseViews(), s.p.sec.leaseViews()
	var out []string
	for r := range a {
		if len(out) < 5 && va[r.Addr()] != vb[r.Addr()] {
			out = append(out, fmt.Sprintf("primary %+v\n  secondary %+v\n%s", a[r], b[r], s.history(r)))
		}
	}
	for r := range b {
		if _, ok := a[r]; !ok && len(out) < 5 {
			out = append(out, fmt.Sprintf("secondary only %+v", b[r]))
		}
	}
	return strings.Join(out, "\n")
}

// history is r's committed changes on both nodes (the last 12 of each).
func (s *sim) history(r fsm.Resource) string {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	var out []string
	for _, n := range s.nodes() {
		h := s.hist[n][r]
		for _, l := range h[max(len(h)-12, 0):] {
			out = append(out, "    "+n.name+" "+l)
		}
	}
	return strings.Join(out, "\n")
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
