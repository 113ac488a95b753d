package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func dialPair(t *testing.T, n *Network) (client, server net.Conn) {
	t.Helper()
	l, err := n.Listen("srv")
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
	c, err := n.Dial(context.Background(), "cli", "srv")
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
