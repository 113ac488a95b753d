package link

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

const (
	priIP = "2001:db8:1::1"
	secIP = "2001:db8:1::2"
)

func TestTLSAccepted(t *testing.T) {
	e := newEnv(t)
	ca := newCA(t, "failover CA")
	pri, sec := e.upPair(
		func(c *Config) { c.TLS = tlsFor(t, ca, ca, priIP) },
		func(c *Config) { c.TLS = tlsFor(t, ca, ca, secIP) })
	sp, ss := pri.l.Stats(), sec.l.Stats()
	if !sp.TLS || !ss.TLS || sp.Sent[wire.MsgStartTLS] != 1 || sp.Received[wire.MsgReply] != 1 || ss.Sent[wire.MsgReply] != 1 {
		t.Fatalf("stats: primary %+v secondary %+v", sp, ss)
	}
	xid := sec.l.NewXID()
	if err := sec.l.Send(wire.NewPoolReq(xid, 0)); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, pri.h, "primary", wire.MsgPoolReq)
	if err := pri.l.Send(wire.NewPoolResp(xid, 0)); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, sec.h, "secondary", wire.MsgPoolResp)
}

// TestTLSRefused: certificates that do not verify stop the connection in
// the TLS handshake; neither side goes up.
func TestTLSRefused(t *testing.T) {
	ca, other := newCA(t, "failover CA"), newCA(t, "someone else's CA")
	cases := []struct {
		name     string
		pri, sec func(t *testing.T) *TLSConfig
		failing  string // the side whose TLS handshake must fail: "primary" or "secondary"
	}{
		{"client certificate from the wrong CA",
			func(t *testing.T) *TLSConfig { return tlsFor(t, other, ca, priIP) },
			func(t *testing.T) *TLSConfig { return tlsFor(t, ca, ca, secIP) }, "secondary"},
		{"server certificate from the wrong CA",
			func(t *testing.T) *TLSConfig { return tlsFor(t, ca, ca, priIP) },
			func(t *testing.T) *TLSConfig { return tlsFor(t, other, ca, secIP) }, "primary"},
		{"server certificate for another address",
			func(t *testing.T) *TLSConfig { return tlsFor(t, ca, ca, priIP) },
			func(t *testing.T) *TLSConfig { return tlsFor(t, ca, ca, "2001:db8:1::99") }, "primary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pc, sc := e.config(Primary), e.config(Secondary)
			pc.TLS, sc.TLS = tc.pri(t), tc.sec(t)
			sec := startSecondary(t, sc)
			pri := start(t, pc)
			failing := sec
			if tc.failing == "primary" {
				failing = pri
			}
			eventually(t, tc.failing+"'s TLS handshake to fail", func() bool { return failing.l.Stats().HandshakeFailures["tls"] >= 1 })
			eventually(t, "the primary to back off", func() bool { return pri.l.Stats().NextAttempt.After(e.clk.Now()) })
			noUpDown(t, pri.h, "primary")
			noUpDown(t, sec.h, "secondary")
			if s := sec.l.Stats(); s.Received[wire.MsgConnect] != 0 || s.Sessions != 0 {
				t.Fatalf("CONNECT got through: %+v", s)
			}
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, func() Config { c := e.config(Secondary); c.TLS = tlsFor(t, ca, ca, secIP); return c }())
		raw := e.dialRaw(priAddr)
		raw.send(wire.NewStartTLS(5), 0)
		if m := raw.recv(); m.Type != wire.MsgReply || m.Rejected() {
			t.Fatalf("answer to STARTTLS: %v", m)
		}
		tc := tls.Client(raw.c, &tls.Config{RootCAs: ca.pool, ServerName: secIP, Time: e.clk.Now, MinVersion: tls.VersionTLS12})
		// With TLS 1.3 the client finishes first; the server's refusal
		// arrives as an alert on the next read.
		err := tc.Handshake()
		if err == nil {
			w, rd := wire.NewWriter(tc), wire.NewReader(tc)
			m := wire.NewConnect(6, wire.ToFOTime(e.clk.Now()), connectInfo(3600))
			if err = w.WriteMessage(m); err == nil {
				_, err = rd.ReadMessage()
			}
		}
		if err == nil {
			t.Fatal("a client without a certificate completed the handshake and got an answer")
		}
		eventually(t, "the secondary to refuse", func() bool { return sec.l.Stats().HandshakeFailures["tls"] == 1 })
		noUpDown(t, sec.h, "secondary")
	})
}

// TestStrangerDroppedUnread: a connection from an IP that is not the
// partner's is closed before a single byte is read from it, and logged at
// most once a minute per source.
func TestStrangerDroppedUnread(t *testing.T) {
	e := newEnv(t)
	var read atomic.Int64
	e.tr.wrap = func(c net.Conn) net.Conn { return countingConn{c, &read} }
	core, logs := observer.New(zapcore.WarnLevel)
	sc := e.config(Secondary)
	sc.Logger = zap.New(core)
	sec := startSecondary(t, sc)

	knock := func(from string) {
		raw := e.dialRaw(from)
		m := wire.NewConnect(1, wire.ToFOTime(e.clk.Now()), connectInfo(3600))
		b, _ := m.AppendFrame(nil)
		raw.c.Write(b) // may fail: the secondary may have closed already
		raw.expectClosed()
	}
	strangerLogs := func() int {
		return logs.FilterMessage("refused a failover connection").FilterField(zap.String("reason", RejectNotPartner)).Len()
	}
	for i := range 3 {
		knock(fmt.Sprintf("[2001:db8:9::9]:%d", 6000+i))
	}
	eventually(t, "the strangers to be counted", func() bool { return sec.l.Stats().StrangersDropped == 3 })
	if n := strangerLogs(); n != 1 {
		t.Fatalf("%d log lines for one stranger, want 1", n)
	}
	knock("[2001:db8:9::8]:6000")
	eventually(t, "the strangers to be counted", func() bool { return sec.l.Stats().StrangersDropped == 4 })
	if n := strangerLogs(); n != 2 {
		t.Fatalf("%d log lines for two strangers, want 2", n)
	}
	e.clk.Advance(61 * time.Second)
	knock("[2001:db8:9::9]:6003")
	eventually(t, "the strangers to be counted", func() bool { return sec.l.Stats().StrangersDropped == 5 })
	if n := strangerLogs(); n != 3 {
		t.Fatalf("%d log lines after a minute, want 3", n)
	}
	// The line after the quiet minute says how many were held back: the
	// second and third knock from 2001:db8:9::9.
	sup := logs.FilterMessage("suppressed similar refusals").AllUntimed()
	if len(sup) != 1 || sup[0].ContextMap()["suppressed"] != uint64(2) || sup[0].ContextMap()["source"] != "2001:db8:9::9" {
		t.Fatalf("suppressed lines: %v", sup)
	}
	if s := sec.l.Stats(); s.Rejected[RejectNotPartner] != 5 || len(s.Rejected) != 1 {
		t.Fatalf("Rejected %v, want 5 not-partner", s.Rejected)
	}
	if n := read.Load(); n != 0 {
		t.Fatalf("%d bytes read from strangers", n)
	}
	if s := sec.l.Stats(); s.Pending != 0 || s.HandshakeFailures["protocol-error"] != 0 {
		t.Fatalf("a stranger reached the handshake: %+v", s)
	}
	// Control: the counter does see what is read from the partner.
	raw := e.dialRaw("[2001:db8:1::1]:6000")
	raw.send(wire.NewConnect(1, 0, connectInfo(3600)), 0)
	raw.recv()
	if read.Load() == 0 {
		t.Fatal("the byte counter does not count")
	}
}

// TestFloodDoesNotBlockPartner: 50 idle connections from the partner's IP
// keep at most MaxPendingConns (4 here) open (the oldest are evicted), and the real
// primary still connects; the survivors die at HandshakeTimeout.
func TestFloodDoesNotBlockPartner(t *testing.T) {
	e := newEnv(t)
	sc := e.config(Secondary)
	sc.MaxPendingConns = 4
	sec := startSecondary(t, sc)
	var flood []*rawPeer
	for i := range 50 {
		flood = append(flood, e.dialRaw(fmt.Sprintf("[2001:db8:1::1]:%d", 10000+i)))
	}
	eventually(t, "the flood to be capped", func() bool {
		s := sec.l.Stats()
		return s.PendingEvicted == 46 && s.Pending == 4
	})
	for _, raw := range flood[:46] {
		raw.expectClosed()
	}
	pri := start(t, e.config(Primary))
	waitUp(t, pri.h, "primary")
	waitUp(t, sec.h, "secondary")
	if s := sec.l.Stats(); s.PendingEvicted != 47 || s.Pending != 3 {
		t.Fatalf("after the partner connected: %+v", s)
	}
	e.clk.Advance(DefaultHandshakeTimeout)
	for _, raw := range flood[47:] {
		raw.expectClosed()
	}
	eventually(t, "the idle survivors to time out", func() bool {
		s := sec.l.Stats()
		return s.Pending == 0 && s.HandshakeFailures["handshake-timeout"] == 3
	})
	if s := sec.l.Stats(); !s.Connected || s.HandshakeFailures["connection-lost"] != 0 {
		t.Fatalf("after the flood: %+v", s)
	}
}
