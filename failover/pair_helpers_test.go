package failover

// In-process pair harness: two Endpoints on real raftstores, linked over
// internal/memnet, sharing one fake clock, each with a server.Server that
// uses the Endpoint as its Policy. Clients are driven through
// server.Handle; nothing here sleeps: waits poll with a real-time deadline.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-dhcp/tandem/failover/link"
	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/failover/update"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/internal/dhcptest"
	"github.com/tandem-dhcp/tandem/internal/memnet"
	"github.com/tandem-dhcp/tandem/raftstore"
	"github.com/tandem-dhcp/tandem/server"
)

const (
	priAddr = "[2001:db8:1::1]:647"
	secAddr = "[2001:db8:1::2]:647"

	testMCLT      = 60 * time.Second
	testKeepalive = 60 * time.Second
	retryMin      = time.Second
	retryMax      = 2 * time.Second

	prefLT   = 2 * time.Hour
	validLT  = 3 * time.Hour // the desired (configured) valid lifetime
	renewT1  = time.Hour
	rebindT2 = 96 * time.Minute

	// waitTimeout bounds every wait for something other goroutines do (real
	// time: the fake clock drives only the protocol timers).
	waitTimeout = 20 * time.Second
)

// t0 is the fake clock's start (whole seconds: Unix-second fields compare exactly).
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	subnet1 = netip.MustParsePrefix("2001:db8:1::/64")
	pool1   = server.AddressRange{First: netip.MustParseAddr("2001:db8:1::1000"), Last: netip.MustParseAddr("2001:db8:1::ffff")}
	// linkInfo is a client on eth1 multicasting to All_DHCP_Relay_Agents_and_Servers.
	linkInfo = server.PacketInfo{IfIndex: 1, IfName: "eth1",
		Src: netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth1"), 546), Dst: netip.MustParseAddr("ff02::1:2")}
)

func serverConfig() server.Config {
	return server.Config{
		Subnets: []server.SubnetConfig{{
			Prefix: subnet1, Interface: "eth1", Pools: []server.AddressRange{pool1},
			PreferredLifetime: prefLT, ValidLifetime: validLT, RenewTime: renewT1, RebindTime: rebindT2,
		}},
		RapidCommit:     true,
		ExpiredHoldTime: time.Hour,
	}
}

func covered(r fsm.Resource) bool {
	a := r.Addr()
	return r.Type == fsm.IANA && !a.Less(pool1.First) && !pool1.Last.Less(a)
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !poll(waitTimeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
	}
}

// poll polls cond until it holds or d (real time) has passed.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// pairEnv is one memnet network and one fake clock shared by both servers.
type pairEnv struct {
	t        testing.TB
	net      *memnet.Network
	clk      *clock.Fake
	pri, sec *node

	// advance's last confirmation point: received counts of the links
	// connected then, and the time.
	mark   map[*link.Link]uint64
	markAt time.Time
}

func newPairEnv(t testing.TB) *pairEnv {
	clk := clock.NewFake(t0)
	p := &pairEnv{t: t, net: memnet.NewWithClock(clk), clk: clk}
	p.pri = p.newNode(link.Primary)
	p.sec = p.newNode(link.Secondary)
	t.Cleanup(func() {
		// Stop both before the temp dirs go; dump the logs if the test failed.
		p.pri.stop()
		p.sec.stop()
		if t.Failed() {
			p.pri.dumpLogs()
			p.sec.dumpLogs()
		}
	})
	return p
}

// node is one server of the pair: data dir, store, endpoint, DHCP server.
type node struct {
	p    *pairEnv
	name string
	role link.Role
	dir  string

	core zapcore.Core
	logs *observer.ObservedLogs

	// wrapStore, if set, wraps the raftstore for both the endpoint and the
	// DHCP server (tests that watch or gate commits).
	wrapStore func(Store) Store
	// onReceive, if set, sees every message the link delivers to the
	// endpoint ep, just before ep does (on the link's goroutine).
	onReceive func(ep *Endpoint, m *wire.Message)
	// dropReceive, if set, is asked about every message the link delivers
	// (after onReceive): true loses it before the endpoint sees it, as a
	// connection that dies at that moment would.
	dropReceive func(m *wire.Message) bool
	// cfgEndpoint and cfgServer, if set, adjust the endpoint's and the DHCP
	// server's configuration before each start.
	cfgEndpoint func(*Config)
	cfgServer   func(*server.Config)

	st     *raftstore.Store
	store  Store
	ep     *Endpoint
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
	starts int
}

func (p *pairEnv) newNode(role link.Role) *node {
	core, logs := observer.New(zapcore.InfoLevel)
	n := &node{p: p, role: role, name: role.String(), dir: p.t.TempDir(), core: core, logs: logs}
	return n
}

// hookHandler is the link Handler of an endpoint whose received messages a
// test wants to see first.
type hookHandler struct {
	*Endpoint
	hook func(*Endpoint, *wire.Message)
	drop func(*wire.Message) bool
}

func (h hookHandler) Receive(m *wire.Message, at time.Time) {
	if h.hook != nil {
		h.hook(h.Endpoint, m)
	}
	if h.drop != nil && h.drop(m) {
		return
	}
	h.Endpoint.Receive(m, at)
}

// start opens the store in the node's data dir and runs the endpoint.
func (n *node) start() {
	t := n.p.t
	t.Helper()
	if n.ep != nil {
		t.Fatalf("%s already running", n.name)
	}
	n.starts++
	st, err := raftstore.Open(raftstore.Config{DataDir: n.dir, Clock: n.p.clk, OpenTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("%s: raftstore.Open: %v", n.name, err)
	}
	n.st, n.store = st, st
	if n.wrapStore != nil {
		n.store = n.wrapStore(st)
	}
	log := zap.New(n.core).Named(fmt.Sprintf("%s#%d", n.name, n.starts))
	lc := link.Config{Role: n.role, Relationship: "pair-a", MCLT: testMCLT, KeepaliveTime: testKeepalive,
		RetryMin: retryMin, RetryMax: retryMax,
		// Both sides read one fake clock, but a test may move it while a
		// message is on its way: only a skew the size of a jump would be
		// reported, never a real one.
		MaxSkew:   24 * time.Hour,
		Transport: memTransport{n.p.net}}
	if n.role == link.Primary {
		lc.Local, lc.Peer = priAddr, secAddr
	} else {
		lc.Local, lc.Peer = secAddr, priAddr
	}
	ecfg := Config{Link: lc, Machine: machine.Config{}, Store: n.store, ExpiredHold: time.Hour,
		Covered: covered, Clock: n.p.clk, Logger: log}
	if n.cfgEndpoint != nil {
		n.cfgEndpoint(&ecfg)
	}
	ep, err := New(ecfg)
	if err != nil {
		st.Close()
		t.Fatalf("%s: failover.New: %v", n.name, err)
	}
	if n.onReceive != nil || n.dropReceive != nil {
		// Same configuration, a handler that shows the test each message first.
		l, err := link.New(ep.cfg.Link, hookHandler{ep, n.onReceive, n.dropReceive})
		if err != nil {
			t.Fatalf("%s: link.New: %v", n.name, err)
		}
		ep.link = l
	}
	scfg := serverConfig()
	if n.cfgServer != nil {
		n.cfgServer(&scfg)
	}
	scfg.Policy, scfg.Clock, scfg.Logger = ep, n.p.clk, log.Named("dhcp")
	srv, err := server.New(scfg, n.store)
	if err != nil {
		st.Close()
		t.Fatalf("%s: server.New: %v", n.name, err)
	}
	ep.cfg.Pools = srv // built after the endpoint, as in cmd/tandem; before Run
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	n.ep, n.srv, n.cancel, n.done = ep, srv, cancel, done
	go func() { done <- ep.Run(ctx) }()
	if n.role == link.Secondary {
		waitFor(t, n.name+" listening", func() bool { return ep.link.ListenAddr() != nil })
	}
}

// stop cancels the endpoint's Run, waits for it, and closes the server and
// the store (a clean shutdown; the data dir stays).
func (n *node) stop() {
	if n.ep == nil {
		return
	}
	t := n.p.t
	n.cancel()
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("%s: Run: %v", n.name, err)
		}
	case <-time.After(waitTimeout):
		t.Errorf("%s: Run did not return after cancel", n.name)
	}
	n.srv.Close()
	if err := n.st.Close(); err != nil {
		t.Errorf("%s: store.Close: %v", n.name, err)
	}
	n.ep, n.srv, n.st, n.store = nil, nil, nil, nil
}

// wipe deletes the (stopped) node's data dir: a server that lost its disk.
func (n *node) wipe() {
	if n.ep != nil {
		n.p.t.Fatalf("%s: wipe while running", n.name)
	}
	if err := os.RemoveAll(n.dir); err != nil {
		n.p.t.Fatal(err)
	}
}

func (n *node) state() string { return n.ep.Status().State }

func (n *node) stats() link.Stats { return n.ep.link.Stats() }

func (n *node) received() uint64 {
	var sum uint64
	for _, c := range n.stats().Received {
		sum += c
	}
	return sum
}

// transitions returns the node's state changes so far ("FROM>TO"), over
// all its starts.
func (n *node) transitions() []string {
	var out []string
	for _, e := range n.logs.FilterMessage("failover state").All() {
		m := e.ContextMap()
		out = append(out, fmt.Sprintf("%v>%v", m["from"], m["to"]))
	}
	return out
}

// statesSince returns the states entered from the i-th transition on.
func (n *node) statesSince(i int) []string {
	tr := n.transitions()
	var out []string
	for _, s := range tr[min(i, len(tr)):] {
		out = append(out, s[strings.IndexByte(s, '>')+1:])
	}
	return out
}

func (n *node) dumpLogs() {
	t := n.p.t
	all := n.logs.All()
	const keep = 400
	if len(all) > keep {
		t.Logf("%s: (%d earlier log lines omitted)", n.name, len(all)-keep)
		all = all[len(all)-keep:]
	}
	for _, e := range all {
		var f []string
		for k, v := range e.ContextMap() {
			f = append(f, fmt.Sprintf("%s=%v", k, v))
		}
		sort.Strings(f)
		t.Logf("%s %s %s: %s %s", e.Time.Format("15:04:05.000"), e.Level.CapitalString(), e.LoggerName, e.Message, strings.Join(f, " "))
	}
}

// memTransport adapts memnet to link.Transport.
type memTransport struct{ n *memnet.Network }

func (m memTransport) Dial(ctx context.Context, local, remote string) (net.Conn, error) {
	return m.n.Dial(ctx, local, remote)
}

func (m memTransport) Listen(local string) (net.Listener, error) { return m.n.Listen(local) }

// --- pair operations ---

// connect waits until both links are up, moving the clock to the
// primary's next dial whenever it waits for one (after a failed attempt or
// a lost session the primary redials on a fake-clock timer).
func (p *pairEnv) connect() {
	p.t.Helper()
	waitFor(p.t, "the partners to connect", func() bool {
		ps := p.pri.stats()
		if ps.Connected && p.sec.stats().Connected {
			return true
		}
		if !ps.NextAttempt.IsZero() && !ps.NextAttempt.After(p.clk.Now()) {
			return false // due: the dial is on its way
		}
		if !ps.NextAttempt.IsZero() {
			p.clk.Set(ps.NextAttempt)
		}
		return false
	})
}

// waitStates waits until the primary and the secondary are in the given
// states.
func (p *pairEnv) waitStates(pri, sec string) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("states %s / %s", pri, sec), func() bool {
		return p.pri.state() == pri && p.sec.state() == sec
	})
}

// advance moves the shared clock forward by d without outrunning the
// keepalive of a connected pair. It moves in windows of a quarter of the
// keepalive time (the CONTACT interval): at the end of each window it waits
// until each link that was connected at the window's start has received
// something since then. Something was sent after the window began (if
// nothing else, the CONTACT the window made due), so every connected link
// has heard from its partner within the last half keepalive time whenever
// the clock moves on.
func (p *pairEnv) advance(d time.Duration) {
	p.t.Helper()
	const window = testKeepalive / 4
	for d > 0 {
		if p.mark == nil {
			p.setMark()
		}
		step := min(d, p.markAt.Add(window).Sub(p.clk.Now()))
		p.clk.Advance(step)
		d -= step
		if p.clk.Now().Before(p.markAt.Add(window)) {
			continue
		}
		for l, recv := range p.mark {
			waitFor(p.t, "a connected link hearing from its partner after a clock step", func() bool {
				st := l.Stats()
				var sum uint64
				for _, c := range st.Received {
					sum += c
				}
				return sum > recv || !st.Connected
			})
		}
		p.setMark()
	}
}

// setMark records, for each connected link, how much it has received.
func (p *pairEnv) setMark() {
	p.mark, p.markAt = map[*link.Link]uint64{}, p.clk.Now()
	for _, n := range []*node{p.pri, p.sec} {
		if n.ep != nil && n.stats().Connected {
			p.mark[n.ep.link] = n.received()
		}
	}
}

// bindings returns the node's binding table.
func (n *node) bindings() map[fsm.Resource]fsm.Binding {
	out := map[fsm.Resource]fsm.Binding{}
	n.store.State().View().Ascend(fsm.Resource{}, func(b *fsm.Binding) bool {
		out[b.Resource] = *b
		return true
	})
	return out
}

func (n *node) get(a netip.Addr) (fsm.Binding, bool) {
	return n.store.State().Get(fsm.AddrResource(fsm.IANA, a))
}

// owed is how many bindings still owe the partner an update.
func (n *node) owed() int { return n.store.State().Stats().Owed }

// leaseView is what both partners must agree on about a binding.
type leaseView struct {
	Status fsm.Status
	DUID   string
	IAID   uint32
}

// freeView drops a free lease's last client: it is residue (a lone
// IAPREFIX moving a prefix between the partners carries none, and each
// side forgets a free record after its hold time on its own).
func freeView(r fsm.Resource, v leaseView) leaseView {
	if v.Status == fsm.StatusFree || v.Status == fsm.StatusFreeBackup {
		v.DUID, v.IAID = "", 0
	}
	return v
}

// absentView is how a lease with no record counts: free, its owner's
// (update.Destination: a prefix the primary's, an address its bit-127
// owner's), as the allocators treat it.
func absentView(r fsm.Resource) leaseView { return leaseView{Status: update.Destination(r)} }

// leaseViews returns n's bindings as the partners must agree on them. A
// received EXPIRED, RELEASED or RESET with no update owed counts as its
// PENDING-FREE destination (failover/update decision 9: the receiver stores
// it as received, the sender frees its own copy on the BNDREPLY); a free
// lease carries no client (freeView).
func (n *node) leaseViews() map[netip.Addr]leaseView {
	out := map[netip.Addr]leaseView{}
	for r, b := range n.bindings() {
		st := b.Status
		switch st {
		case fsm.StatusExpired, fsm.StatusReleased, fsm.StatusReset:
			if !b.Owed() {
				st = update.Destination(r)
			}
		}
		out[r.Addr()] = freeView(r, leaseView{st, b.DUID, b.IAID})
	}
	return out
}

// sameBindings reports the differences between the partners' tables ("" if none).
func (p *pairEnv) sameBindings() string {
	a, b := p.pri.leaseViews(), p.sec.leaseViews()
	res := map[netip.Addr]fsm.Resource{}
	for _, n := range []*node{p.pri, p.sec} {
		for r := range n.bindings() {
			res[r.Addr()] = r
		}
	}
	var diff []string
	for k, va := range a {
		if vb, ok := b[k]; !ok {
			if va != absentView(res[k]) {
				diff = append(diff, fmt.Sprintf("%v only on the primary (%v)", k, va.Status))
			}
		} else if va != vb {
			diff = append(diff, fmt.Sprintf("%v: primary %v %x/%d, secondary %v %x/%d", k, va.Status, va.DUID, va.IAID, vb.Status, vb.DUID, vb.IAID))
		}
	}
	for k, vb := range b {
		if _, ok := a[k]; !ok && vb != absentView(res[k]) {
			diff = append(diff, fmt.Sprintf("%v only on the secondary (%v)", k, vb.Status))
		}
	}
	sort.Strings(diff)
	if len(diff) > 10 {
		diff = append(diff[:10], fmt.Sprintf("... and %d more", len(diff)-10))
	}
	return strings.Join(diff, "; ")
}

// --- DHCPv6 clients ---

// dhcpClient is the shared client simulator (internal/dhcptest).
type dhcpClient = dhcptest.Client

func newClient(n int) *dhcpClient { return dhcptest.New(n) }

// sid is n's Server Identifier option.
func (n *node) sid() dhcpv6.Option {
	d, err := dhcpv6.DUIDFromBytes(n.srv.DUID())
	if err != nil {
		n.p.t.Fatalf("%s: server DUID: %v", n.name, err)
	}
	return dhcpv6.OptServerID(d)
}

// handle runs m through n's DHCP server. The error is server.ErrDropped for
// a message deliberately not answered.
func (n *node) handle(m *dhcpv6.Message) (*dhcpv6.Message, error) {
	out, _, err := n.srv.Handle(m.ToBytes(), linkInfo)
	if err != nil {
		return nil, err
	}
	p, err := dhcpv6.FromBytes(out)
	if err != nil {
		return nil, fmt.Errorf("reply does not parse: %w", err)
	}
	r, ok := p.(*dhcpv6.Message)
	if !ok {
		return nil, fmt.Errorf("reply is a %v", p.Type())
	}
	if r.TransactionID != m.TransactionID {
		return nil, fmt.Errorf("reply xid %v, want %v", r.TransactionID, m.TransactionID)
	}
	return r, nil
}

// exchange runs m and wants a reply of type want.
func (n *node) exchange(m *dhcpv6.Message, want dhcpv6.MessageType) *dhcpv6.Message {
	n.p.t.Helper()
	r, err := n.handle(m)
	if err != nil {
		n.p.t.Fatalf("%s: %v: %v", n.name, m.MessageType, err)
	}
	if r.MessageType != want {
		n.p.t.Fatalf("%s: %v answered with %v, want %v", n.name, m.MessageType, r.MessageType, want)
	}
	return r
}

// expectDrop runs m and wants it deliberately unanswered.
func (n *node) expectDrop(m *dhcpv6.Message) {
	n.p.t.Helper()
	r, err := n.handle(m)
	if !errors.Is(err, server.ErrDropped) {
		n.p.t.Fatalf("%s: %v: got reply %v, err %v; want server.ErrDropped", n.name, m.MessageType, r, err)
	}
}

// lease is a client's lease as a Reply gave it.
type lease struct {
	addr         netip.Addr
	valid, pref  time.Duration
	t1, t2       time.Duration
	statusCode   int
	replyFromSID []byte
}

// leaseOf returns c's lease in r: the one address with a non-zero valid
// lifetime in c's IA_NA (an invalid addr when there is none).
func leaseOf(c *dhcpClient, r *dhcpv6.Message) lease {
	l := c.LeaseOf(r)
	return lease{addr: l.Addr, valid: l.Valid, pref: l.Pref, t1: l.T1, t2: l.T2, statusCode: l.Status, replyFromSID: l.ServerID}
}

// lease runs Solicit/Advertise/Request/Reply with n and returns c's lease.
func (n *node) lease(c *dhcpClient) lease {
	n.p.t.Helper()
	adv := n.exchange(c.Msg(dhcpv6.MessageTypeSolicit, c.IANA()), dhcpv6.MessageTypeAdvertise)
	req, err := dhcpv6.NewRequestFromAdvertise(adv)
	if err != nil {
		n.p.t.Fatalf("NewRequestFromAdvertise: %v", err)
	}
	l := leaseOf(c, n.exchange(req, dhcpv6.MessageTypeReply))
	if !l.addr.IsValid() {
		n.p.t.Fatalf("%s: Request got no address (status %d)", n.name, l.statusCode)
	}
	return l
}

// rapidLease gets c a lease from n with a Rapid Commit Solicit (one
// exchange, one commit); safe from several goroutines.
func (n *node) rapidLease(c *dhcpClient) (lease, error) {
	r, err := n.handle(c.Msg(dhcpv6.MessageTypeSolicit, c.IANA(), &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}))
	if err != nil {
		return lease{}, err
	}
	if r.MessageType != dhcpv6.MessageTypeReply {
		return lease{}, fmt.Errorf("rapid commit Solicit answered with %v", r.MessageType)
	}
	l := leaseOf(c, r)
	if !l.addr.IsValid() {
		return l, fmt.Errorf("no address (status %d)", l.statusCode)
	}
	return l, nil
}

// renew sends c's Renew of a to n (carrying n's Server ID).
func (n *node) renew(c *dhcpClient, a netip.Addr) lease {
	n.p.t.Helper()
	return leaseOf(c, n.exchange(c.Msg(dhcpv6.MessageTypeRenew, n.sid(), c.IANA(a)), dhcpv6.MessageTypeReply))
}

// leaseMany gets count clients (numbered from first) a lease from n, from
// several goroutines (their commits share fsyncs), and returns the addresses.
func (n *node) leaseMany(first, count int) map[netip.Addr]*dhcpClient {
	n.p.t.Helper()
	const workers = 32
	var mu sync.Mutex
	out := map[netip.Addr]*dhcpClient{}
	var firstErr error
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c := newClient(i)
				l, err := n.rapidLease(c)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("client %d: %w", i, err)
				} else if err == nil {
					out[l.addr] = c
				}
				mu.Unlock()
			}
		}()
	}
	for i := first; i < first+count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		n.p.t.Fatalf("%s: leaseMany: %v", n.name, firstErr)
	}
	if len(out) != count {
		n.p.t.Fatalf("%s: leaseMany: %d distinct addresses for %d clients", n.name, len(out), count)
	}
	return out
}

// odd reports whether a's bit 127 is set (the primary's addresses).
func odd(a netip.Addr) bool { return a.As16()[15]&1 == 1 }

// rapidLeaseHint gets c a lease from n with a Rapid Commit Solicit asking
// for address a.
func (n *node) rapidLeaseHint(c *dhcpClient, a netip.Addr) lease {
	n.p.t.Helper()
	r := n.exchange(c.Msg(dhcpv6.MessageTypeSolicit, c.IANA(a), &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}),
		dhcpv6.MessageTypeReply)
	return leaseOf(c, r)
}

// release sends c's Release of a to n.
func (n *node) release(c *dhcpClient, a netip.Addr) {
	n.p.t.Helper()
	n.exchange(c.Msg(dhcpv6.MessageTypeRelease, n.sid(), c.IANA(a)), dhcpv6.MessageTypeReply)
}

// rebind sends c's Rebind of a to n.
func (n *node) rebind(c *dhcpClient, a netip.Addr) lease {
	n.p.t.Helper()
	return leaseOf(c, n.exchange(c.Msg(dhcpv6.MessageTypeRebind, c.IANA(a)), dhcpv6.MessageTypeReply))
}

// noDoubleActive reports addresses ACTIVE on both partners for different
// clients ("" if none).
func (p *pairEnv) noDoubleActive() string {
	a, b := p.pri.leaseViews(), p.sec.leaseViews()
	var bad []string
	for k, va := range a {
		if vb, ok := b[k]; ok && va.Status == fsm.StatusActive && vb.Status == fsm.StatusActive && va.DUID != vb.DUID {
			bad = append(bad, fmt.Sprintf("%v: primary %x, secondary %x", k, va.DUID, vb.DUID))
		}
	}
	sort.Strings(bad)
	return strings.Join(bad, "; ")
}
