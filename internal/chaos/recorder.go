package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
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

// grant is one lease a client was acknowledged: a Reply that gave Addr a
// non-zero valid lifetime. The interval is the client's, taken narrowly:
// From is when the Reply arrived (the server granted it before), Until is
// the first transmission of the message plus the valid lifetime (the server
// counts from when it handled it, later). A Release or a zero lifetime ends
// it early (Until is then the Release's send time or the Reply's arrival).
type grant struct {
	Client   int       `json:"client"`
	DUID     string    `json:"duid"` // lowercase hex, as `tandem lease list`
	Addr     string    `json:"addr"`
	Server   string    `json:"server"` // Server ID of the Reply, hex
	Msg      string    `json:"msg"`    // the message answered: SOLICIT, REQUEST, RENEW, REBIND
	From     time.Time `json:"from"`
	Until    time.Time `json:"until"`
	Released bool      `json:"released,omitempty"`
}

// recStats counts what the recorder saw.
type recStats struct {
	Grants, Renewed, Rebound, Released, NoBinding, NoAddrs, Timeouts, Dropped atomic.Int64
}

// recorder is a set of simulated DHCPv6 clients (internal/dhcptest) that
// do Rapid Commit Solicits, Renews (Rebind when their server is silent) and
// occasional Releases from one UDP socket in the client namespace, and
// record every acknowledged lease. Its goroutines end when ctx is done;
// Run returns after they have.
type recorder struct {
	ifname  string
	clients int
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

// endLast cuts the client's grants of addr short at t (a Release, or a
// Reply that withdrew the address or gave another): every earlier grant of
// it still running then, since a renewal does not end the one before.
func (r *recorder) endLast(client int, addr string, t time.Time, released bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.grants {
		g := &r.grants[i]
		if g.Client == client && g.Addr == addr && g.Until.After(t) {
			g.Until, g.Released = t, released
		}
	}
	if r.out != nil { // the file has grants as made: the end is a line of its own
		b, _ := json.Marshal(struct {
			Client   int       `json:"client"`
			Addr     string    `json:"addr"`
			Ended    time.Time `json:"ended"`
			Released bool      `json:"released"`
		}{client, addr, t, released})
		_, _ = r.out.Write(append(b, '\n'))
	}
}

// Run drives the clients until ctx is done.
func (r *recorder) Run(ctx context.Context) {
	go r.readLoop()
	var wg sync.WaitGroup
	for i := 0; i < r.clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r.client(ctx, i, rand.New(rand.NewPCG(r.seed, uint64(i))))
		}(i)
	}
	wg.Wait()
}

func (r *recorder) Close() { _ = r.conn.Close() }

// client is one client's life: get an address (Rapid Commit Solicit, or
// Solicit/Request when the server does not commit at once), renew it every
// few seconds (at T1 at the latest) with its server, rebind when that
// server is silent, now and then release it, and start over when it is
// gone.
func (r *recorder) client(ctx context.Context, i int, rng *rand.Rand) {
	c := dhcptest.New(1_000_000 + i)
	duid := hex.EncodeToString(c.DUID.ToBytes())
	var (
		addr    netip.Addr
		sid     []byte
		until   time.Time
		t1      time.Duration
		pending = time.Duration(rng.IntN(2000)) * time.Millisecond
	)
	accept := func(msg string, rep *dhcpv6.Message, first time.Time) bool {
		l := c.LeaseOf(rep)
		now := time.Now()
		if l.Status == int(iana.StatusNoBinding) {
			r.st.NoBinding.Add(1)
		}
		if l.Status == int(iana.StatusNoAddrsAvail) || l.TopStatus == int(iana.StatusNoAddrsAvail) {
			r.st.NoAddrs.Add(1)
		}
		if !l.Addr.IsValid() || l.Valid == 0 {
			if addr.IsValid() {
				r.endLast(i, addr.String(), now, false)
			}
			addr = netip.Addr{}
			return false
		}
		if addr.IsValid() && addr != l.Addr {
			r.endLast(i, addr.String(), now, false)
		}
		addr, sid, until, t1 = l.Addr, l.ServerID, first.Add(l.Valid), l.T1
		r.st.Grants.Add(1)
		r.record(grant{Client: i, DUID: duid, Addr: addr.String(), Server: hex.EncodeToString(sid),
			Msg: msg, From: now, Until: until})
		return true
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(pending):
		}
		if addr.IsValid() && time.Now().After(until) {
			addr = netip.Addr{} // expired on the client's side
		}
		if !addr.IsValid() {
			rep, first, err := r.exchange(ctx, c.Solicit(false, true), 3)
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
		if rng.IntN(20) == 0 { // 5%: release it and start over
			sopt, err := dhcptest.ServerID(sid)
			if err == nil {
				rel := c.Release(sopt, addr)
				r.endLast(i, addr.String(), time.Now(), true)
				r.st.Released.Add(1)
				_, _, _ = r.exchange(ctx, rel, 2)
			}
			addr = netip.Addr{}
			pending = time.Duration(500+rng.IntN(1500)) * time.Millisecond
			continue
		}
		sopt, err := dhcptest.ServerID(sid)
		if err != nil {
			addr = netip.Addr{}
			continue
		}
		rep, first, err := r.exchange(ctx, c.Renew(sopt, addr), 3)
		msg := "RENEW"
		if err != nil && ctx.Err() == nil {
			rep, first, err = r.exchange(ctx, c.Rebind(addr), 3)
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
