package link

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/internal/netns"
)

// Hostile-input tests over real TCP on loopback: the secondary listens on
// 127.0.0.1, its partner is 127.0.0.3, strangers come from 127.0.0.2 (Linux
// routes all of 127.0.0.0/8 to lo, so a socket may bind any of them).
//
// TestHostileIPv6 runs the same tests again inside a network namespace
// whose lo has 2001:db8:f::1, ::2 and ::3 (IPv6 loopback is only ::1).
var (
	tcpSecIP      = "127.0.0.1"
	tcpPartnerIP  = "127.0.0.3"
	tcpStrangerIP = "127.0.0.2"
)

// hostileIPv6Env, when set in the environment, makes TestHostileIPv6Inner
// run the hostile tests with IPv6 addresses (inside TestHostileIPv6's
// namespace).
const hostileIPv6Env = "TANDEM_HOSTILE_IPV6"

// TestHostileIPv6: the hostile-input tests over IPv6 TCP, in a namespace of
// their own (the test binary re-runs itself inside it).
func TestHostileIPv6(t *testing.T) {
	if os.Getenv(hostileIPv6Env) != "" {
		t.Skip("inside the namespace: TestHostileIPv6Inner runs")
	}
	netns.Require(t)
	ns := netns.New(t, "hostile")
	for _, a := range []string{"2001:db8:f::1/128", "2001:db8:f::2/128", "2001:db8:f::3/128"} {
		ns.MustRun("ip", "-6", "addr", "add", a, "dev", "lo", "nodad")
	}
	args := []string{"-test.run=^TestHostileIPv6Inner$", "-test.v", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := ns.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), hostileIPv6Env+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHostileIPv6Inner") {
		t.Fatalf("inside %s: %v\n%s", ns.Name, err, out)
	}
	t.Logf("inside %s:\n%s", ns.Name, out)
}

func TestHostileIPv6Inner(t *testing.T) {
	if os.Getenv(hostileIPv6Env) == "" {
		t.Skip("runs inside TestHostileIPv6's namespace")
	}
	tcpSecIP, tcpStrangerIP, tcpPartnerIP = "2001:db8:f::1", "2001:db8:f::2", "2001:db8:f::3"
	t.Run("refused", TestHostileConnectionsRefused)
	t.Run("flood", TestPartnerConnectsDuringFlood)
}

// tcpSecondary runs a secondary on real TCP with a fake clock and an
// observed logger (Warn and up).
type tcpSecondary struct {
	*side
	clk  *clock.Fake
	logs *observer.ObservedLogs
	addr string
}

func startTCPSecondary(t *testing.T, mod func(*Config)) *tcpSecondary {
	t.Helper()
	clk := clock.NewFake(t0)
	core, logs := observer.New(zapcore.WarnLevel)
	c := Config{Role: Secondary, Relationship: "pair-a", MCLT: time.Hour, Local: net.JoinHostPort(tcpSecIP, "0"),
		Peer: tcpPartnerIP, Clock: clk, Logger: zap.New(core)}
	if mod != nil {
		mod(&c)
	}
	s := startSecondary(t, c)
	return &tcpSecondary{side: s, clk: clk, logs: logs, addr: s.l.ListenAddr().String()}
}

// dialFrom opens a TCP connection to the secondary from ip (any port).
func (s *tcpSecondary) dialFrom(t *testing.T, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: waitTimeout}
	c, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *tcpSecondary) raw(t *testing.T, ip string) *rawPeer {
	return newRawPeer(t, s.dialFrom(t, ip), s.clk)
}

func (s *tcpSecondary) rejected(reason string) uint64 { return s.l.Stats().Rejected[reason] }

// TestHostileConnectionsRefused: each kind of unwanted connection to the
// secondary's failover port is refused, counted under its reason in
// Stats.Rejected (nothing else is counted), and logged once per source and
// reason per LogInterval, the next line after the interval followed by a
// "suppressed" line with the count held back.
func TestHostileConnectionsRefused(t *testing.T) {
	ca, other := newCA(t, "failover CA"), newCA(t, "someone else's CA")
	withTLS := func(c *Config) { c.TLS = tlsFor(t, ca, ca, tcpSecIP) }
	connectRefused := func(mod func(*wire.ConnectInfo), text string) func(*testing.T, *tcpSecondary) {
		return func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpPartnerIP)
			ci := connectInfo(3600)
			mod(&ci)
			raw.send(wire.NewConnect(9, 0, ci), 0)
			m := raw.recv()
			if st, _ := m.Status(); m.Type != wire.MsgConnectReply || !m.Rejected() || st.Code != wire.StatusConfigurationConflict {
				t.Fatalf("answer %v (%v), want a rejecting CONNECTREPLY (%s)", m, st, text)
			}
			raw.expectClosed()
		}
	}
	cases := []struct {
		name   string
		mod    func(*Config)
		reason string
		attack func(t *testing.T, s *tcpSecondary)
	}{
		{name: "not the partner's address", reason: RejectNotPartner, attack: func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpStrangerIP)
			b, _ := wire.NewConnect(1, wire.ToFOTime(s.clk.Now()), connectInfo(3600)).AppendFrame(nil)
			raw.c.Write(b) // may fail: closed unread
			raw.expectClosed()
		}},
		{name: "wrong relationship name", reason: RejectRelationship,
			attack: connectRefused(func(c *wire.ConnectInfo) { c.RelationshipName = "pair-b" }, "relationship")},
		{name: "wrong MCLT", reason: RejectMCLT,
			attack: connectRefused(func(c *wire.ConnectInfo) { c.MCLT = 1800 }, "MCLT")},
		{name: "no TLS when TLS is required", mod: withTLS, reason: RejectTLSRequired,
			attack: connectRefused(func(*wire.ConnectInfo) {}, "TLS is required")},
		{name: "bad client certificate", mod: withTLS, reason: RejectTLS, attack: func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpPartnerIP)
			raw.send(wire.NewStartTLS(5), 0)
			if m := raw.recv(); m.Type != wire.MsgReply || m.Rejected() {
				t.Fatalf("answer to STARTTLS: %v", m)
			}
			cert, _, _ := other.issue(t, tcpPartnerIP)
			tc := tls.Client(raw.c, &tls.Config{RootCAs: ca.pool, ServerName: tcpSecIP, Certificates: []tls.Certificate{cert},
				Time: s.clk.Now, MinVersion: tls.VersionTLS12})
			tc.SetDeadline(time.Now().Add(waitTimeout))
			err := tc.Handshake()
			if err == nil { // TLS 1.3: the server's verdict arrives on the next read
				_, err = tc.Read(make([]byte, 1))
			}
			if err == nil {
				t.Fatal("a client certificate from another CA was accepted")
			}
		}},
		{name: "oversize frame", reason: RejectFrameTooLarge, attack: func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpPartnerIP)
			b := binary.BigEndian.AppendUint16(nil, maxHandshakeFrame+1)
			raw.c.Write(append(b, make([]byte, 64)...))
			raw.expectClosed()
		}},
		{name: "an HTTP probe", reason: RejectFrameTooLarge, attack: func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpPartnerIP) // "GE" is a message-size of 18245
			raw.c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			raw.expectClosed()
		}},
		{name: "garbage that frames", reason: RejectProtocol, attack: func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpPartnerIP)
			raw.c.Write([]byte{0, 4, 0xde, 0xad, 0xbe, 0xef})
			raw.expectClosed()
		}},
		{name: "idle", reason: RejectHandshakeTimeout, attack: func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpPartnerIP)
			eventually(t, "the connection to be pending", func() bool { return s.l.Stats().Pending == 1 })
			s.clk.Advance(DefaultHandshakeTimeout)
			raw.expectClosed()
		}},
		{name: "byte at a time", reason: RejectHandshakeTimeout, attack: func(t *testing.T, s *tcpSecondary) {
			raw := s.raw(t, tcpPartnerIP)
			b, _ := wire.NewConnect(1, wire.ToFOTime(s.clk.Now()), connectInfo(3600)).AppendFrame(nil)
			eventually(t, "the connection to be pending", func() bool { return s.l.Stats().Pending == 1 })
			step := DefaultHandshakeTimeout / time.Duration(len(b)-1)
			for i := range len(b) - 1 { // never the last byte
				if _, err := raw.c.Write(b[i : i+1]); err != nil {
					break
				}
				s.clk.Advance(step)
			}
			s.clk.Advance(DefaultHandshakeTimeout)
			raw.expectClosed()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startTCPSecondary(t, tc.mod)
			refusedLines := func() []observer.LoggedEntry {
				return s.logs.FilterMessage("refused a failover connection").FilterField(zap.String("reason", tc.reason)).AllUntimed()
			}
			for i := uint64(1); i <= 3; i++ {
				if i == 3 {
					s.clk.Advance(DefaultLogInterval)
				}
				tc.attack(t, s)
				eventually(t, fmt.Sprintf("refusal %d to be counted as %s", i, tc.reason), func() bool { return s.rejected(tc.reason) == i })
			}
			st := s.l.Stats()
			if len(st.Rejected) != 1 || st.Sessions != 0 || st.Pending != 0 {
				t.Fatalf("stats %+v: want only %d %s", st, 3, tc.reason)
			}
			if n := len(refusedLines()); n != 2 {
				t.Fatalf("%d log lines for 3 refusals (2 within a minute, 1 after), want 2", n)
			}
			sup := s.logs.FilterMessage("suppressed similar refusals").AllUntimed()
			if len(sup) != 1 || sup[0].ContextMap()["suppressed"] != uint64(1) || sup[0].ContextMap()["reason"] != tc.reason {
				t.Fatalf("suppressed lines %v, want one saying 1", sup)
			}
			noUpDown(t, s.h, "secondary")
		})
	}
}

// TestRateLog: one event per key per interval, the suppressed count handed
// to the next one let through, keys independent, a full table sharing one
// overflow entry.
func TestRateLog(t *testing.T) {
	clk := clock.NewFake(t0)
	r := newRateLog(clk, time.Minute)
	check := func(key string, wantOK bool, wantSup uint64) {
		t.Helper()
		ok, sup, _ := r.allow(key)
		if ok != wantOK || sup != wantSup {
			t.Fatalf("allow(%q) = %v, %d; want %v, %d", key, ok, sup, wantOK, wantSup)
		}
	}
	check("a", true, 0)
	check("a", false, 0)
	check("b", true, 0)
	clk.Advance(59 * time.Second)
	check("a", false, 0)
	clk.Advance(time.Second)
	check("a", true, 2)
	check("a", false, 0)
	clk.Advance(time.Minute)
	check("a", true, 1)
	check("b", true, 0)
	for i := range maxRateKeys {
		r.allow(fmt.Sprint("k", i))
	}
	if _, _, as := r.allow("new"); as != overflowKey {
		t.Fatalf("a key beyond a full table is %q, want the overflow key", as)
	}
	clk.Advance(time.Minute)
	if ok, _, as := r.allow("newer"); !ok || as != "newer" {
		t.Fatalf("after the interval old keys are pruned: %v %q", ok, as)
	}
}

// attacker keeps n connections to the secondary from ip: idle ones dial
// once and hold; slow ones write one byte of a CONNECT per tick and redial
// whenever the secondary has closed theirs.
type attacker struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	dials  atomic.Int64
	bytes  atomic.Int64
}

func attack(t testing.TB, addr, ip string, n int, slow bool, tick time.Duration) *attacker {
	ctx, cancel := context.WithCancel(context.Background())
	a := &attacker{cancel: cancel}
	frame, _ := wire.NewConnect(1, 0, connectInfo(3600)).AppendFrame(nil)
	for i := range n {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: time.Second}
			tk := time.NewTicker(tick)
			defer tk.Stop()
			var c net.Conn
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for k := i; ; k++ {
				if c == nil {
					var err error
					if c, err = d.DialContext(ctx, "tcp", addr); err != nil {
						c = nil
					} else {
						a.dials.Add(1)
					}
				}
				if c != nil && slow {
					if _, err := c.Write(frame[k%len(frame) : k%len(frame)+1]); err != nil {
						c.Close()
						c = nil
					} else {
						a.bytes.Add(1)
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
				}
			}
		}()
	}
	return a
}

func (a *attacker) stop() { a.cancel(); a.wg.Wait() }

// tcpPrimary runs a primary from the partner's address against s.
func (s *tcpSecondary) tcpPrimary(t *testing.T) *side {
	c := Config{Role: Primary, Relationship: "pair-a", MCLT: time.Hour, Local: tcpPartnerIP, Peer: s.addr, Clock: s.clk,
		Logger: zap.NewNop()}
	return start(t, c)
}

// waitConnected waits until both are up, moving the fake clock to the
// primary's next dial whenever it waits for one (an evicted attempt).
func waitConnected(t *testing.T, clk *clock.Fake, pri, sec *side) {
	t.Helper()
	eventually(t, "the partners to connect", func() bool {
		ps := pri.l.Stats()
		if ps.Connected && sec.l.Stats().Connected {
			return true
		}
		if !ps.NextAttempt.IsZero() && ps.NextAttempt.After(clk.Now()) {
			clk.Set(ps.NextAttempt)
		}
		return false
	})
}

// TestPartnerConnectsDuringFlood: with 1000 idle connections from a
// stranger and 1000 byte-at-a-time connections from the partner's own
// address open (redialing whenever evicted), the real primary still
// connects and binding updates flow both ways; the strangers are closed
// unread, the slow ones evicted, and the secondary never holds more than
// MaxPendingConns of them.
func TestPartnerConnectsDuringFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("2000 connections")
	}
	s := startTCPSecondary(t, nil)
	idle := attack(t, s.addr, tcpStrangerIP, 1000, false, time.Hour)
	defer idle.stop()
	slow := attack(t, s.addr, tcpPartnerIP, 1000, true, 50*time.Millisecond)
	defer slow.stop()
	// 2000 connections take a while under the race detector: a longer wait.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(60 * time.Second); ; <-tick.C {
		st := s.l.Stats()
		if st.Rejected[RejectNotPartner] >= 1000 && st.Rejected[RejectEvicted] >= 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flood was not refused: %d idle and %d slow dials, rejected %v", idle.dials.Load(), slow.dials.Load(), st.Rejected)
		}
	}
	pri := s.tcpPrimary(t)
	waitConnected(t, s.clk, pri, s.side)
	waitUp(t, pri.h, "primary")
	waitUp(t, s.h, "secondary")
	s.h.setOnRecv(func(m *wire.Message) {
		if m.Type == wire.MsgBndUpd {
			s.l.Send(bndReply(m))
		}
	})
	for i := range 20 {
		upd := bndUpd(pri.l.NewXID(), byte(i+1))
		if err := pri.l.SendBndUpd(context.Background(), upd); err != nil {
			t.Fatalf("BNDUPD %d during the flood: %v", i, err)
		}
		waitMsg(t, s.h, "secondary", wire.MsgBndUpd)
		waitMsg(t, pri.h, "primary", wire.MsgBndReply)
	}
	st := s.l.Stats()
	if !st.Connected || st.Pending > s.l.cfg.MaxPendingConns || st.Sessions != 1 {
		t.Fatalf("secondary during the flood: %+v", st)
	}
	ps := pri.l.Stats()
	t.Logf("flood: %d idle dials, %d slow dials, %d slow bytes; rejected %v; primary connect attempts %d, handshake failures %v",
		idle.dials.Load(), slow.dials.Load(), slow.bytes.Load(), st.Rejected, ps.ConnectAttempts, ps.HandshakeFailures)
	// One line per source and reason per LogInterval (each reason here comes
	// from one source); the fake clock moved on only for the primary's
	// redials.
	intervals := int(s.clk.Now().Sub(t0)/DefaultLogInterval) + 1
	if lines := s.logs.FilterMessage("refused a failover connection").Len(); lines > len(st.Rejected)*intervals {
		t.Fatalf("%d refusal log lines for %v refusals in %d log intervals", lines, st.Rejected, intervals)
	}
}
