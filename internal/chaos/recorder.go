package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/tandem-dhcp/tandem/internal/dhcptest"
)

// recorderPort is the recorder's client port: perfdhcp holds 546 in the
// client namespace, and a server answers a client at its source port.
const recorderPort = 10546

// grant is one lease a client was acknowledged: a Reply that gave Addr (an
// address, or a delegated prefix in CIDR form) a non-zero valid lifetime.
// The interval is the client's, taken narrowly: From is when the Reply
// arrived (the server granted it before), Until is the first transmission
// of the message plus the valid lifetime (the server counts from when it
// handled it, later). A Release or a zero lifetime ends it early (Until is
// then the Release's send time or the Reply's arrival).
type grant struct {
	Client   int       `json:"client"`
	DUID     string    `json:"duid"`   // lowercase hex, as `tandem lease list`
	Kind     string    `json:"kind"`   // "na" (IA_NA address) or "pd" (IA_PD prefix); "" reads as "na"
	Addr     string    `json:"addr"`   // the address, or the prefix as 2001:db8:8000:1::/64
	Server   string    `json:"server"` // Server ID of the Reply, hex
	Msg      string    `json:"msg"`    // the message answered: SOLICIT, REQUEST, RENEW, REBIND
	From     time.Time `json:"from"`
	Until    time.Time `json:"until"`
	Released bool      `json:"released,omitempty"`
}

// kind is g's resource type as `tandem lease list` names it ("na", "pd");
// lines written before prefixes were recorded have none and are addresses.
func (g grant) kind() string {
	if g.Kind == "" {
		return "na"
	}
	return g.Kind
}

// key names g's resource as the checks index it: kind and address or prefix.
func (g grant) key() string { return g.kind() + " " + g.Addr }

// recStats counts what the recorder saw. Grants and PDGrants count
// addresses and prefixes acknowledged; Renewed and Rebound count Replies
// to Renew and Rebind that acknowledged anything; NoAddrs and NoPrefix
// count Replies with NoAddrsAvail or NoPrefixAvail.
type recStats struct {
	Grants, PDGrants, Renewed, Rebound, Released, NoBinding, NoAddrs, NoPrefix, Timeouts atomic.Int64
}

// recorder is a set of simulated DHCPv6 clients (internal/dhcptest) that
// do Rapid Commit Solicits, Renews (Rebind when their server is silent) and
// occasional Releases from one UDP socket in the client namespace, and
// record every acknowledged lease. A share of them (pdShare) ask for a
// delegated prefix (IA_PD) besides the address in every message. Its
// goroutines end when ctx is done; Run returns after they have.
type recorder struct {
	ifname  string
	clients int
	pdShare float64 // 0..1: the first round(pdShare*clients) clients also ask for a prefix
	seed    uint64
	out     *os.File // grants as JSON lines, appended as they happen

	conn  *ipv6.PacketConn
	ifidx int

	mu      sync.Mutex
	waiters map[dhcpv6.TransactionID]chan *dhcpv6.Message
	grants  []grant
	st      recStats
}

// openIn opens the recorder's socket inside the network namespace nsName:
// a goroutine locks its thread, enters the namespace and makes the socket
// there; the thread is thrown away afterwards (never unlocked), and the
// socket stays in that namespace whichever thread uses it.
func (r *recorder) openIn(nsName string) error {
	type res struct {
		pc    net.PacketConn
		ifidx int
		err   error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/var/run/netns/"+nsName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- res{err: fmt.Errorf("open netns %s: %w", nsName, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- res{err: fmt.Errorf("setns %s: %w", nsName, err)}
			return
		}
		ifi, err := net.InterfaceByName(r.ifname)
		if err != nil {
			ch <- res{err: err}
			return
		}
		pc, err := net.ListenPacket("udp6", fmt.Sprintf("[::]:%d", recorderPort))
		ch <- res{pc: pc, ifidx: ifi.Index, err: err}
	}()
	x := <-ch
	if x.err != nil {
		return x.err
	}
	r.conn, r.ifidx = ipv6.NewPacketConn(x.pc), x.ifidx
	r.waiters = map[dhcpv6.TransactionID]chan *dhcpv6.Message{}
	return nil
}

func (r *recorder) readLoop() {
	buf := make([]byte, 65536)
	for {
		n, _, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcptest.Parse(buf[:n])
		if err != nil {
			continue
		}
		r.mu.Lock()
		ch := r.waiters[m.TransactionID]
		r.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

// exchange sends req to All_DHCP_Relay_Agents_and_Servers every 400 ms
// (same transaction) until a reply arrives or tries run out. It returns the
// first reply and when req was first sent.
func (r *recorder) exchange(ctx context.Context, req *dhcpv6.Message, tries int) (*dhcpv6.Message, time.Time, error) {
	ch := make(chan *dhcpv6.Message, 4)
	r.mu.Lock()
	r.waiters[req.TransactionID] = ch
	r.mu.Unlock()
	defer func() { r.mu.Lock(); delete(r.waiters, req.TransactionID); r.mu.Unlock() }()
	dst := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547}
	first := time.Now()
	for i := 0; i < tries && ctx.Err() == nil; i++ {
		if _, err := r.conn.WriteTo(req.ToBytes(), &ipv6.ControlMessage{IfIndex: r.ifidx}, dst); err != nil {
			return nil, first, err
		}
		select {
		case m := <-ch:
			return m, first, nil
		case <-time.After(400 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	r.st.Timeouts.Add(1)
	return nil, first, fmt.Errorf("no reply after %d tries", tries)
}

func (r *recorder) record(g grant) {
	r.mu.Lock()
	r.grants = append(r.grants, g)
	r.mu.Unlock()
	if r.out != nil {
		b, _ := json.Marshal(g)
		r.mu.Lock()
		_, _ = r.out.Write(append(b, '\n'))
		r.mu.Unlock()
	}
}

// endLast cuts the client's grants of the resource (kind, res) short at t
// (a Release, or a Reply that withdrew it or gave another): every earlier
// grant of it still running then, since a renewal does not end the one
// before.
func (r *recorder) endLast(client int, kind, res string, t time.Time, released bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.grants {
		g := &r.grants[i]
		if g.Client == client && g.kind() == kind && g.Addr == res && g.Until.After(t) {
			g.Until, g.Released = t, released
		}
	}
	if r.out != nil { // the file has grants as made: the end is a line of its own
		b, _ := json.Marshal(struct {
			Client   int       `json:"client"`
			Kind     string    `json:"kind"`
			Addr     string    `json:"addr"`
			Ended    time.Time `json:"ended"`
			Released bool      `json:"released"`
		}{client, kind, res, t, released})
		_, _ = r.out.Write(append(b, '\n'))
	}
}

// Run drives the clients until ctx is done.
func (r *recorder) Run(ctx context.Context) {
	go r.readLoop()
	var wg sync.WaitGroup
	npd := int(math.Round(r.pdShare * float64(r.clients)))
	for i := 0; i < r.clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r.client(ctx, i, i < npd, rand.New(rand.NewPCG(r.seed, uint64(i))))
		}(i)
	}
	wg.Wait()
}

func (r *recorder) Close() { _ = r.conn.Close() }

// held is what a client holds of one kind ("na" addresses, "pd"
// prefixes): each resource with the end of its valid lifetime. An IA
// usually holds one, but a server answers with every binding of the IA,
// and after a partition the two servers may each have given it one.
type held struct {
	kind string
	res  map[string]time.Time
}

// given is what one Reply gave an IA: each resource with a non-zero valid
// lifetime and that lifetime.
type given map[string]time.Duration

// iaGiven reads the IA_NA (pd false) or IA_PD (pd true) of c in rep.
func iaGiven(c *dhcptest.Client, rep *dhcpv6.Message, pd bool) given {
	g := given{}
	if !pd {
		for _, ia := range rep.Options.IANA() {
			if ia.IaId != c.IAID {
				continue
			}
			for _, a := range ia.Options.Addresses() {
				if ad, ok := netip.AddrFromSlice(a.IPv6Addr); ok && a.ValidLifetime > 0 {
					g[ad.Unmap().String()] = a.ValidLifetime
				}
			}
		}
		return g
	}
	for _, ia := range rep.Options.IAPD() {
		if ia.IaId != c.PDIAID {
			continue
		}
		for _, p := range ia.Options.Prefixes() {
			if p.Prefix == nil || p.ValidLifetime == 0 {
				continue
			}
			ad, _ := netip.AddrFromSlice(p.Prefix.IP.To16())
			ones, _ := p.Prefix.Mask.Size()
			g[netip.PrefixFrom(ad, ones).String()] = p.ValidLifetime
		}
	}
	return g
}

// client is one client's life: get an address, and a prefix when pd (Rapid
// Commit Solicit, or Solicit/Request when the server does not commit at
// once), renew what it holds every few seconds (at T1 at the latest) with
// its server, rebind when that server is silent, now and then release it
// all, and start over when it holds nothing. A client holding only one
// kind asks for the other in its Renews and Rebinds (an empty IA).
func (r *recorder) client(ctx context.Context, i int, pd bool, rng *rand.Rand) {
	c := dhcptest.New(1_000_000 + i)
	duid := hex.EncodeToString(c.DUID.ToBytes())
	var (
		na      = held{kind: "na", res: map[string]time.Time{}}
		pfx     = held{kind: "pd", res: map[string]time.Time{}}
		sid     []byte
		t1      time.Duration
		pending = time.Duration(rng.IntN(2000)) * time.Millisecond
	)
	// take records what one Reply gave h's IA: a grant per resource given;
	// a resource held but not given (absent, or lifetime 0) ends there.
	// It returns how many resources were granted.
	take := func(h *held, g given, server, msg string, first, now time.Time) int {
		for res := range h.res {
			if _, ok := g[res]; !ok {
				r.endLast(i, h.kind, res, now, false)
				delete(h.res, res)
			}
		}
		for res, valid := range g {
			h.res[res] = first.Add(valid)
			r.record(grant{Client: i, DUID: duid, Kind: h.kind, Addr: res, Server: server, Msg: msg, From: now, Until: h.res[res]})
		}
		return len(g)
	}
	accept := func(msg string, rep *dhcpv6.Message, first time.Time) bool {
		l := c.LeaseOf(rep)
		now := time.Now()
		if l.Status == int(iana.StatusNoBinding) || (pd && l.PDStatus == int(iana.StatusNoBinding)) {
			r.st.NoBinding.Add(1)
		}
		if l.Status == int(iana.StatusNoAddrsAvail) || l.TopStatus == int(iana.StatusNoAddrsAvail) {
			r.st.NoAddrs.Add(1)
		}
		if pd && l.PDStatus == int(iana.StatusNoPrefixAvail) {
			r.st.NoPrefix.Add(1)
		}
		server := hex.EncodeToString(l.ServerID)
		n := take(&na, iaGiven(c, rep, false), server, msg, first, now)
		r.st.Grants.Add(int64(n))
		if pd {
			m := take(&pfx, iaGiven(c, rep, true), server, msg, first, now)
			r.st.PDGrants.Add(int64(m))
			n += m
		}
		if n == 0 {
			return false
		}
		sid, t1 = l.ServerID, l.T1
		return true
	}
	// ias are the client's IAs naming what it holds (an empty IA_PD asks
	// for a prefix).
	ias := func() []dhcpv6.Option {
		var as []netip.Addr
		for res := range na.res {
			as = append(as, netip.MustParseAddr(res))
		}
		o := []dhcpv6.Option{c.IANA(as...)}
		if pd {
			var ps []netip.Prefix
			for res := range pfx.res {
				ps = append(ps, netip.MustParsePrefix(res))
			}
			o = append(o, c.IAPD(ps...))
		}
		return o
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(pending):
		}
		now := time.Now()
		for _, h := range []*held{&na, &pfx} {
			for res, until := range h.res {
				if now.After(until) {
					delete(h.res, res) // expired on the client's side
				}
			}
		}
		if len(na.res) == 0 && len(pfx.res) == 0 {
			rep, first, err := r.exchange(ctx, c.Solicit(pd, true), 3)
			if err == nil && rep.MessageType == dhcpv6.MessageTypeAdvertise {
				req, rerr := c.Request(rep)
				if rerr == nil {
					rep, first, err = r.exchange(ctx, req, 3)
				}
			}
			if err == nil && rep.MessageType == dhcpv6.MessageTypeReply {
				accept(rep.MessageType.String(), rep, first)
			}
			pending = time.Duration(500+rng.IntN(1500)) * time.Millisecond
			continue
		}
		sopt, err := dhcptest.ServerID(sid)
		if err != nil {
			clear(na.res)
			clear(pfx.res)
			continue
		}
		if rng.IntN(20) == 0 { // 5%: release all it holds and start over
			rel := c.Msg(dhcpv6.MessageTypeRelease, append([]dhcpv6.Option{sopt}, ias()...)...)
			now := time.Now()
			for _, h := range []*held{&na, &pfx} {
				for res := range h.res {
					r.endLast(i, h.kind, res, now, true)
				}
				clear(h.res)
			}
			r.st.Released.Add(1)
			_, _, _ = r.exchange(ctx, rel, 2)
			pending = time.Duration(500+rng.IntN(1500)) * time.Millisecond
			continue
		}
		rep, first, err := r.exchange(ctx, c.Msg(dhcpv6.MessageTypeRenew, append([]dhcpv6.Option{sopt}, ias()...)...), 3)
		msg := "RENEW"
		if err != nil && ctx.Err() == nil {
			rep, first, err = r.exchange(ctx, c.Msg(dhcpv6.MessageTypeRebind, ias()...), 3)
			msg = "REBIND"
		}
		if err == nil && rep.MessageType == dhcpv6.MessageTypeReply {
			if accept(msg, rep, first) {
				if msg == "RENEW" {
					r.st.Renewed.Add(1)
				} else {
					r.st.Rebound.Add(1)
				}
			}
		}
		next := time.Duration(2000+rng.IntN(4000)) * time.Millisecond
		if t1 > 0 && t1 < next {
			next = t1
		}
		pending = next
	}
}

// snapshot returns a copy of the grants recorded so far.
func (r *recorder) snapshot() []grant {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]grant(nil), r.grants...)
}
