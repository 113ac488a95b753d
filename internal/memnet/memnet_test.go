package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/internal/clock"
)

func dialPair(t *testing.T, n *Network) (client, server net.Conn) {
	t.Helper()
	return dialPairAt(t, n, "srv")
}

func dialPairAt(t *testing.T, n *Network, srv string) (client, server net.Conn) {
	t.Helper()
	l, err := n.Listen(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			got <- c
		}
	}()
	c, err := n.Dial(context.Background(), "cli", srv)
	if err != nil {
		t.Fatal(err)
	}
	return c, <-got
}

func TestStreamAndAddresses(t *testing.T) {
	n := New()
	c, s := dialPair(t, n)
	if c.RemoteAddr().String() != "srv" || s.RemoteAddr().String() != "cli" {
		t.Fatalf("addresses: %v %v", c.RemoteAddr(), s.RemoteAddr())
	}
	if _, err := c.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("world"))
	buf := make([]byte, 11)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hello world" {
		t.Fatalf("read %q %v", buf, err)
	}
	c.Close()
	if _, err := s.Read(buf); err != io.EOF {
		t.Fatalf("after peer close: %v, want EOF", err)
	}
	if _, err := c.Read(buf); err == nil {
		t.Fatal("read on a closed conn succeeded")
	}
}

func TestCutPartitionBlackHoleHeal(t *testing.T) {
	n := New()
	c, s := dialPair(t, n)
	n.Cut("srv", "cli")
	if _, err := s.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Fatalf("read after cut: %v, want a reset error", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write after cut succeeded")
	}
	n.Partition("cli", "srv")
	if _, err := n.Dial(context.Background(), "cli", "srv"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial across a partition: %v", err)
	}
	n.Heal("cli", "srv")
	l2, _ := n.Listen("srv2")
	defer l2.Close()
	go func() { c, _ := l2.Accept(); _ = c }()
	c2, err := n.Dial(context.Background(), "cli", "srv2")
	if err != nil {
		t.Fatal(err)
	}
	n.BlackHole("cli", "srv2")
	if k, err := c2.Write([]byte("lost")); err != nil || k != 4 {
		t.Fatalf("write into a black hole: %d %v", k, err)
	}
}

func TestReadDeadline(t *testing.T) {
	n := New()
	_, s := dialPair(t, n)
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
}

func TestDialNoListener(t *testing.T) {
	if _, err := New().Dial(context.Background(), "a", "b"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial with no listener: %v", err)
	}
}

// TestDelay: delayed bytes arrive only once the network's clock has moved
// past their time, in write order even when the delay shrinks; a reader
// blocked on them wakes when the clock moves; Heal ends the delay for new
// writes; EOF comes after the delayed bytes.
func TestDelay(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	n := NewWithClock(clk)
	c, s := dialPair(t, n)
	n.Delay("srv", "cli", 10*time.Second)
	c.Write([]byte("ab"))
	n.Delay("cli", "srv", 2*time.Second) // shorter: must not overtake "ab"
	c.Write([]byte("cd"))
	if ready, delayed := n.Buffered(); ready != 0 || delayed != 4 {
		t.Fatalf("Buffered = %d ready, %d delayed; want 0, 4", ready, delayed)
	}
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read before the delay passed: %v, want a deadline error", err)
	}
	s.SetReadDeadline(time.Time{})
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4)
		_, err := io.ReadFull(s, buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf)
	}()
	clk.Advance(5 * time.Second)
	if ready, delayed := n.Buffered(); ready != 0 || delayed != 4 {
		t.Fatalf("after 5s: Buffered = %d ready, %d delayed; want 0, 4 (\"cd\" must wait for \"ab\")", ready, delayed)
	}
	clk.Advance(5 * time.Second)
	if g := <-got; g != "abcd" {
		t.Fatalf("read %q, want abcd", g)
	}
	n.Heal("cli", "srv")
	c.Write([]byte("e"))
	c.Close()
	buf := make([]byte, 1)
	if k, err := s.Read(buf); k != 1 || buf[0] != 'e' || err != nil {
		t.Fatalf("after Heal: read %d %q %v, want e at once", k, buf[:k], err)
	}
	if _, err := s.Read(buf); err != io.EOF {
		t.Fatalf("after close: %v, want EOF", err)
	}

	// A close behind delayed bytes: EOF only after them.
	c2, s2 := dialPairAt(t, n, "srv2")
	n.Delay("cli", "srv2", time.Second)
	c2.Write([]byte("z"))
	c2.Close()
	s2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s2.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read before the delay: %v, want a deadline error (not EOF)", err)
	}
	s2.SetReadDeadline(time.Time{})
	clk.Advance(time.Second)
	if k, err := s2.Read(buf); k != 1 || buf[0] != 'z' {
		t.Fatalf("read %d %v, want z", k, err)
	}
	if _, err := s2.Read(buf); err != io.EOF {
		t.Fatalf("after the delayed bytes: %v, want EOF", err)
	}
}
