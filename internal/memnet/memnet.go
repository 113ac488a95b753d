// Package memnet is an in-memory stream network for tests: listeners and
// connections between named addresses ("[2001:db8::1]:647") that behave like
// TCP (ordered, reliable, buffered, closable from either side, deadlines)
// and fault hooks to cut a link (both ends see the connection die), black-hole
// it (bytes written vanish, nobody is told: only a keepalive notices), refuse
// new connections (partition), delay it (bytes arrive, in order, only once a
// time has passed on the network's clock, which may be a clock.Fake), and
// heal it.
//
// It is test support: production code sees only net.Conn and net.Listener.
package memnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tandem-dhcp/tandem/internal/clock"
)

// ErrRefused is returned by Dial when nothing listens or the link is partitioned.
var ErrRefused = errors.New("memnet: connection refused")

// Network is a set of addresses that can reach each other.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*Listener
	conns     map[*Conn]struct{}
	parted    map[[2]string]bool // unordered pair -> no new connections
	holed     map[[2]string]bool // unordered pair -> writes vanish
	delays    map[[2]string]time.Duration
	clock     clock.Clock // when delayed bytes arrive
}

// New returns an empty network on the real clock.
func New() *Network { return NewWithClock(clock.Real{}) }

// NewWithClock returns an empty network whose delays (Delay) run on clk.
func NewWithClock(clk clock.Clock) *Network {
	return &Network{listeners: map[string]*Listener{}, conns: map[*Conn]struct{}{},
		parted: map[[2]string]bool{}, holed: map[[2]string]bool{}, delays: map[[2]string]time.Duration{}, clock: clk}
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

type addr string

func (a addr) Network() string { return "memnet" }
func (a addr) String() string  { return string(a) }

// Listen listens on address a.
func (n *Network) Listen(a string) (*Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, busy := n.listeners[a]; busy {
		return nil, fmt.Errorf("memnet: listen %s: address in use", a)
	}
	l := &Listener{n: n, addr: a, ch: make(chan *Conn, 64), done: make(chan struct{})}
	n.listeners[a] = l
	return l, nil
}

// Dial connects from address from to the listener at to.
func (n *Network) Dial(ctx context.Context, from, to string) (net.Conn, error) {
	n.mu.Lock()
	l := n.listeners[to]
	if l == nil || n.parted[pair(from, to)] {
		n.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", to, ErrRefused)
	}
	a, b := newPipe(n, from, to)
	n.conns[a], n.conns[b] = struct{}{}, struct{}{}
	n.mu.Unlock()
	select {
	case l.ch <- b:
		return a, nil
	case <-l.done:
		a.Close()
		return nil, fmt.Errorf("dial %s: %w", to, ErrRefused)
	case <-ctx.Done():
		a.Close()
		return nil, ctx.Err()
	}
}

// Cut closes every connection between a and b (both ends see an error).
func (n *Network) Cut(a, b string) {
	n.mu.Lock()
	var victims []*Conn
	for c := range n.conns {
		if pair(c.local, c.remote) == pair(a, b) {
			victims = append(victims, c)
		}
	}
	n.mu.Unlock()
	for _, c := range victims {
		c.fail(errors.New("memnet: connection reset (cut)"))
	}
}

// Partition cuts a-b and refuses new connections between them until Heal.
func (n *Network) Partition(a, b string) {
	n.mu.Lock()
	n.parted[pair(a, b)] = true
	n.mu.Unlock()
	n.Cut(a, b)
}

// BlackHole makes bytes written between a and b vanish silently, on existing
// and new connections, until Heal.
func (n *Network) BlackHole(a, b string) {
	n.mu.Lock()
	n.holed[pair(a, b)] = true
	n.mu.Unlock()
}

// Delay makes bytes written between a and b, on existing and new
// connections, readable only d after they were written (on the network's
// clock), until Heal or Delay(a, b, 0). The stream stays ordered: bytes
// never overtake bytes written before them, even when the delay shrinks.
func (n *Network) Delay(a, b string, d time.Duration) {
	n.mu.Lock()
	if d > 0 {
		n.delays[pair(a, b)] = d
	} else {
		delete(n.delays, pair(a, b))
	}
	n.mu.Unlock()
}

// Heal removes partitions, black holes and delays between a and b (bytes
// already delayed still arrive at their time).
func (n *Network) Heal(a, b string) {
	n.mu.Lock()
	delete(n.parted, pair(a, b))
	delete(n.holed, pair(a, b))
	delete(n.delays, pair(a, b))
	n.mu.Unlock()
}

// faults returns whether writes between a and b vanish, and their delay.
func (n *Network) faults(a, b string) (holed bool, delay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.holed[pair(a, b)], n.delays[pair(a, b)]
}

// Buffered returns the bytes written on open connections and not yet read:
// ready (readable now) and delayed (waiting for their time).
func (n *Network) Buffered() (ready, delayed int) {
	n.mu.Lock()
	conns := make([]*Conn, 0, len(n.conns))
	for c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	now := n.clock.Now()
	for _, c := range conns {
		b := c.in
		b.mu.Lock()
		b.mature(now)
		ready += len(b.data)
		for _, ch := range b.later {
			delayed += len(ch.data)
		}
		b.mu.Unlock()
	}
	return ready, delayed
}

func (n *Network) forget(c *Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
}

// Conns returns the number of open connections (both ends counted).
func (n *Network) Conns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

// Listener accepts connections on one address.
type Listener struct {
	n    *Network
	addr string
	ch   chan *Conn
	once sync.Once
	done chan struct{}
}

// Accept waits for a connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.n.mu.Lock()
		if l.n.listeners[l.addr] == l {
			delete(l.n.listeners, l.addr)
		}
		l.n.mu.Unlock()
	})
	return nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return addr(l.addr) }

// buffer is one direction of a connection.
type buffer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	data   []byte
	later  []chunk // delayed bytes, in write order, not yet readable
	closed bool    // writer closed: reader gets EOF after data and later
	err    error   // connection failed: reader gets err at once
}

// chunk is one delayed write.
type chunk struct {
	at   time.Time
	data []byte
}

// mature moves the delayed chunks whose time has come to data. b.mu held.
func (b *buffer) mature(now time.Time) {
	i := 0
	for ; i < len(b.later) && !now.Before(b.later[i].at); i++ {
		b.data = append(b.data, b.later[i].data...)
	}
	b.later = b.later[i:]
}

func newBuffer() *buffer {
	b := &buffer{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// Conn is one end of an in-memory connection.
type Conn struct {
	n             *Network
	local, remote string
	in, out       *buffer
	peer          *Conn

	dmu           sync.Mutex
	readDeadline  time.Time
	writeDeadline time.Time
	timer         *time.Timer
}

func newPipe(n *Network, from, to string) (*Conn, *Conn) {
	ab, ba := newBuffer(), newBuffer()
	a := &Conn{n: n, local: from, remote: to, in: ba, out: ab}
	b := &Conn{n: n, local: to, remote: from, in: ab, out: ba}
	a.peer, b.peer = b, a
	return a, b
}

// Read reads what the peer wrote, blocking until data, EOF, failure or the deadline.
func (c *Conn) Read(p []byte) (int, error) {
	b := c.in
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.err != nil {
			return 0, b.err
		}
		b.mature(c.n.clock.Now())
		if len(b.data) > 0 {
			n := copy(p, b.data)
			b.data = b.data[n:]
			return n, nil
		}
		if b.closed && len(b.later) == 0 {
			return 0, io.EOF
		}
		c.dmu.Lock()
		dl := c.readDeadline
		c.dmu.Unlock()
		if !dl.IsZero() && !time.Now().Before(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		b.cond.Wait()
	}
}

// Write hands p to the peer (or drops it inside a black hole, or holds it
// back for the link's delay).
func (c *Conn) Write(p []byte) (int, error) {
	c.dmu.Lock()
	dl := c.writeDeadline
	c.dmu.Unlock()
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, os.ErrDeadlineExceeded
	}
	b := c.out
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, net.ErrClosed
	}
	holed, delay := c.n.faults(c.local, c.remote)
	if holed {
		return len(p), nil
	}
	if delay > 0 || len(b.later) > 0 {
		now := c.n.clock.Now()
		at := now.Add(delay)
		if k := len(b.later); k > 0 && at.Before(b.later[k-1].at) {
			at = b.later[k-1].at // never overtake earlier bytes
		}
		b.later = append(b.later, chunk{at: at, data: append([]byte(nil), p...)})
		c.n.clock.AfterFunc(at.Sub(now), func() {
			b.mu.Lock()
			b.cond.Broadcast()
			b.mu.Unlock()
		})
		return len(p), nil
	}
	b.data = append(b.data, p...)
	b.cond.Broadcast()
	return len(p), nil
}

// Close closes both directions: the peer reads EOF after what was written.
func (c *Conn) Close() error {
	for _, b := range []*buffer{c.out, c.in} {
		b.mu.Lock()
		b.closed = true
		b.cond.Broadcast()
		b.mu.Unlock()
	}
	c.in.mu.Lock()
	if c.in.err == nil {
		c.in.err = net.ErrClosed
	}
	c.in.cond.Broadcast()
	c.in.mu.Unlock()
	c.n.forget(c)
	return nil
}

// fail breaks the connection for both ends.
func (c *Conn) fail(err error) {
	for _, b := range []*buffer{c.in, c.out} {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.cond.Broadcast()
		b.mu.Unlock()
	}
	c.n.forget(c)
	c.n.forget(c.peer)
}

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr { return addr(c.local) }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return addr(c.remote) }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes a blocked Read return os.ErrDeadlineExceeded at t.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	c.readDeadline = t
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if !t.IsZero() {
		c.timer = time.AfterFunc(time.Until(t), func() {
			c.in.mu.Lock()
			c.in.cond.Broadcast()
			c.in.mu.Unlock()
		})
	}
	c.dmu.Unlock()
	c.in.mu.Lock()
	c.in.cond.Broadcast()
	c.in.mu.Unlock()
	return nil
}

// SetWriteDeadline sets the write deadline (writes never block here).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	c.writeDeadline = t
	c.dmu.Unlock()
	return nil
}
