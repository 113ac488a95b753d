package link

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// TestSecondaryChecksConnect drives a real secondary with a scripted
// primary: every refusal path of RFC 8156 §6.1.2 answers CONNECTREPLY with
// the right status and closes; the boundary cases are accepted.
func TestSecondaryChecksConnect(t *testing.T) {
	ca := newCA(t, "ca")
	cases := []struct {
		name   string
		modSec func(*Config)
		modCI  func(*wire.ConnectInfo)
		skew   time.Duration
		code   wire.StatusCode // 0: accepted
		text   []string
	}{
		{name: "accepted"},
		{name: "skew 5s accepted", skew: 5 * time.Second},
		{name: "skew -5s accepted", skew: -5 * time.Second},
		{name: "skew 6s", skew: 6 * time.Second, code: wire.StatusExcessiveTimeSkew, text: []string{"6s"}},
		{name: "skew -10s", skew: -10 * time.Second, code: wire.StatusExcessiveTimeSkew, text: []string{"-10s"}},
		{name: "version 2.0", modCI: func(c *wire.ConnectInfo) { c.Version = wire.ProtocolVersion{Major: 2} }, code: wire.StatusNotSupported, text: []string{"2.0"}},
		{name: "version 1.7 accepted", modCI: func(c *wire.ConnectInfo) { c.Version.Minor = 7 }},
		{name: "MCLT mismatch", modCI: func(c *wire.ConnectInfo) { c.MCLT = 1800 }, code: wire.StatusConfigurationConflict, text: []string{"MCLT", "1800s", "3600s"}},
		{name: "relationship name", modCI: func(c *wire.ConnectInfo) { c.RelationshipName = "pair-b" }, code: wire.StatusConfigurationConflict, text: []string{`"pair-b"`, `"pair-a"`}},
		{name: "no relationship name accepted", modCI: func(c *wire.ConnectInfo) { c.RelationshipName = "" }},
		{name: "flags: we need fixed PD length", modSec: func(c *Config) { c.ConnectFlags = wire.ConnectFlagFixedPDLength },
			code: wire.StatusConfigurationConflict, text: []string{"FIXED_PD_LENGTH"}},
		{name: "flags: partner fixed, we variable, accepted", modCI: func(c *wire.ConnectInfo) { c.Flags = wire.ConnectFlagFixedPDLength }},
		{name: "keepalive 0", modCI: func(c *wire.ConnectInfo) { c.KeepaliveTime = 0 }, code: wire.StatusConfigurationConflict, text: []string{"keepalive"}},
		{name: "max-unacked 0", modCI: func(c *wire.ConnectInfo) { c.MaxUnackedBndUpd = 0 }, code: wire.StatusConfigurationConflict, text: []string{"max-unacked"}},
		{name: "TLS required, cleartext CONNECT", modSec: func(c *Config) { c.TLS = tlsFor(t, ca, ca, "2001:db8:1::2") },
			code: wire.StatusConfigurationConflict, text: []string{"TLS is required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			sc := e.config(Secondary)
			if tc.modSec != nil {
				tc.modSec(&sc)
			}
			sec := startSecondary(t, sc)
			ci := connectInfo(3600)
			if tc.modCI != nil {
				tc.modCI(&ci)
			}
			raw := e.dialRaw("[2001:db8:1::1]:40000")
			raw.send(wire.NewConnect(0x1234, 0, ci), tc.skew)
			m := raw.recv()
			if m.Type != wire.MsgConnectReply || m.XID != 0x1234 {
				t.Fatalf("answer %v", m)
			}
			if tc.code == 0 {
				got, err := m.ConnectInfo()
				if m.Rejected() || err != nil || got.MCLT != 3600 || got.KeepaliveTime != 60 || got.MaxUnackedBndUpd != DefaultMaxUnackedBndUpd || got.Version != wire.Version1 {
					t.Fatalf("accepting CONNECTREPLY expected, got %v (%+v, %v)", m, got, err)
				}
				if m := raw.recv(); m.Type != wire.MsgState {
					t.Fatalf("after CONNECTREPLY: %v, want STATE", m)
				}
				raw.send(stateMsg(), tc.skew)
				waitUp(t, sec.h, "secondary")
				return
			}
			st, ok := m.Status()
			if !ok || st.Code != tc.code {
				t.Fatalf("status %v, want %v", st, tc.code)
			}
			for _, w := range tc.text {
				if !strings.Contains(st.Message, w) {
					t.Errorf("status message %q does not mention %q", st.Message, w)
				}
			}
			raw.expectClosed()
			eventually(t, "the refusal to be counted", func() bool {
				s := sec.l.Stats()
				return s.RejectsSent[tc.code] == 1 && s.HandshakeFailures["refused"] == 1
			})
			noUpDown(t, sec.h, "secondary")
		})
	}
}

// TestSecondaryHandshakeFailures: STARTTLS to a server without TLS, a
// first message that is not CONNECT, and silence past HandshakeTimeout.
func TestSecondaryHandshakeFailures(t *testing.T) {
	t.Run("STARTTLS to a non-TLS server", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := e.dialRaw("[2001:db8:1::1]:40000")
		raw.send(wire.NewStartTLS(77), 0)
		m := raw.recv()
		st, ok := m.Status()
		if m.Type != wire.MsgReply || m.XID != 77 || !ok || st.Code != wire.StatusTLSConnectionRefused {
			t.Fatalf("answer to STARTTLS: %v (%v)", m, st)
		}
		eventually(t, "the refusal to be counted", func() bool { return sec.l.Stats().RejectsSent[wire.StatusTLSConnectionRefused] == 1 })
		// RFC 7653 has the requestor close now; one that goes on in the
		// clear is served (we are in insecure mode).
		raw.send(wire.NewConnect(78, 0, connectInfo(3600)), 0)
		if m := raw.recv(); m.Type != wire.MsgConnectReply || m.Rejected() {
			t.Fatalf("cleartext CONNECT after a refused STARTTLS: %v", m)
		}
	})
	t.Run("first message not CONNECT", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := e.dialRaw("[2001:db8:1::1]:40000")
		raw.send(stateMsg(), 0)
		raw.expectClosed()
		eventually(t, "a protocol error", func() bool { return sec.l.Stats().HandshakeFailures["protocol-error"] == 1 })
	})
	t.Run("silent past HandshakeTimeout", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := e.dialRaw("[2001:db8:1::1]:40000")
		eventually(t, "the connection to be pending", func() bool { return sec.l.Stats().Pending == 1 })
		e.clk.Advance(DefaultHandshakeTimeout - time.Second)
		raw.send(wire.NewStartTLS(1), 0) // anything but CONNECT does not help
		raw.recv()
		e.clk.Advance(time.Second)
		raw.expectClosed()
		eventually(t, "a handshake timeout", func() bool {
			s := sec.l.Stats()
			return s.HandshakeFailures["handshake-timeout"] == 1 && s.Pending == 0
		})
	})
}

// TestPrimaryChecksConnectReply drives a real primary with a scripted
// secondary: CONNECT carries our configuration; a bad CONNECTREPLY is
// answered with DISCONNECT and the connection dropped (RFC 8156 §6.1.3);
// a rejection waits RetryMax before the next attempt.
func TestPrimaryChecksConnectReply(t *testing.T) {
	cases := []struct {
		name   string
		modPri func(*Config)
		modCI  func(*wire.ConnectInfo)
		skew   time.Duration
		reject *wire.Status // the scripted secondary rejects
		code   wire.StatusCode
		text   []string
	}{
		{name: "MCLT mismatch", modCI: func(c *wire.ConnectInfo) { c.MCLT = 1800 }, code: wire.StatusConfigurationConflict, text: []string{"1800s", "3600s"}},
		{name: "version 3.0", modCI: func(c *wire.ConnectInfo) { c.Version.Major = 3 }, code: wire.StatusNotSupported, text: []string{"3.0"}},
		{name: "skew", skew: 8 * time.Second, code: wire.StatusExcessiveTimeSkew, text: []string{"8s"}},
		{name: "relationship name", modCI: func(c *wire.ConnectInfo) { c.RelationshipName = "other" }, code: wire.StatusConfigurationConflict, text: []string{"other"}},
		{name: "flags", modPri: func(c *Config) { c.ConnectFlags = wire.ConnectFlagFixedPDLength }, code: wire.StatusConfigurationConflict, text: []string{"FIXED_PD_LENGTH"}},
		{name: "partner rejects", reject: &wire.Status{Code: wire.StatusConfigurationConflict, Message: "no"}, code: wire.StatusConfigurationConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ln, err := e.n.Listen(secAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			pc := e.config(Primary)
			if tc.modPri != nil {
				tc.modPri(&pc)
			}
			pri := start(t, pc)
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw := newRawPeer(t, c, e.clk)
			m := raw.recv()
			got, err := m.ConnectInfo()
			want := wire.ConnectInfo{Version: wire.Version1, MCLT: 3600, KeepaliveTime: 60, MaxUnackedBndUpd: DefaultMaxUnackedBndUpd, RelationshipName: "pair-a", Flags: pc.ConnectFlags}
			if m.Type != wire.MsgConnect || err != nil || got != want {
				t.Fatalf("CONNECT %v: %+v, want %+v (%v)", m, got, want, err)
			}
			if tc.reject != nil {
				raw.send(wire.NewConnectReject(m.XID, 0, *tc.reject), 0)
				raw.expectClosed()
				eventually(t, "the rejection to be counted", func() bool { return pri.l.Stats().RejectsReceived[tc.code] == 1 })
			} else {
				ci := connectInfo(3600)
				ci.RelationshipName = ""
				if tc.modCI != nil {
					tc.modCI(&ci)
				}
				raw.send(wire.NewConnectReply(m.XID, 0, ci), tc.skew)
				d := raw.recv()
				st, _ := d.Status()
				if d.Type != wire.MsgDisconnect || st.Code != tc.code {
					t.Fatalf("answer to a bad CONNECTREPLY: %v (%v), want DISCONNECT %v", d, st, tc.code)
				}
				for _, w := range tc.text {
					if !strings.Contains(st.Message, w) {
						t.Errorf("DISCONNECT message %q does not mention %q", st.Message, w)
					}
				}
				raw.expectClosed()
				eventually(t, "the refusal to be counted", func() bool { return pri.l.Stats().RejectsSent[tc.code] == 1 })
			}
			if d := waitNextAttempt(t, e, pri).Sub(e.clk.Now()); d != DefaultRetryMax {
				t.Fatalf("next attempt in %v, want RetryMax", d)
			}
			noUpDown(t, pri.h, "primary")
		})
	}
	t.Run("wrong xid", func(t *testing.T) {
		e := newEnv(t)
		ln, _ := e.n.Listen(secAddr)
		defer ln.Close()
		pri := start(t, e.config(Primary))
		c, _ := ln.Accept()
		defer c.Close()
		raw := newRawPeer(t, c, e.clk)
		m := raw.recv()
		raw.send(wire.NewConnectReply(m.XID+1, 0, connectInfo(3600)), 0)
		raw.expectClosed()
		eventually(t, "a protocol error", func() bool { return pri.l.Stats().HandshakeFailures["protocol-error"] == 1 })
		if d := waitNextAttempt(t, e, pri).Sub(e.clk.Now()); d != DefaultRetryMin {
			t.Fatalf("next attempt in %v, want RetryMin", d)
		}
	})
	t.Run("no answer", func(t *testing.T) {
		e := newEnv(t)
		ln, _ := e.n.Listen(secAddr)
		defer ln.Close()
		pri := start(t, e.config(Primary))
		c, _ := ln.Accept()
		defer c.Close()
		raw := newRawPeer(t, c, e.clk)
		raw.recv()
		e.clk.Advance(DefaultHandshakeTimeout)
		raw.expectClosed()
		eventually(t, "a handshake timeout", func() bool { return pri.l.Stats().HandshakeFailures["handshake-timeout"] == 1 })
	})
}

// TestRejectionsBetweenLinks: two real Links that disagree; both sides
// count the refusal, neither goes up, the primary backs off to RetryMax.
func TestRejectionsBetweenLinks(t *testing.T) {
	ca := newCA(t, "ca")
	cases := []struct {
		name           string
		modPri, modSec func(*Config)
		priClockAhead  time.Duration
		code           wire.StatusCode
	}{
		{name: "clock skew", priClockAhead: 10 * time.Second, code: wire.StatusExcessiveTimeSkew},
		{name: "MCLT mismatch", modSec: func(c *Config) { c.MCLT = 30 * time.Minute }, code: wire.StatusConfigurationConflict},
		{name: "relationship", modSec: func(c *Config) { c.Relationship = "pair-b" }, code: wire.StatusConfigurationConflict},
		{name: "flags", modSec: func(c *Config) { c.ConnectFlags = wire.ConnectFlagFixedPDLength }, code: wire.StatusConfigurationConflict},
		{name: "TLS required, partner cleartext", modSec: func(c *Config) { c.TLS = tlsFor(t, ca, ca, "2001:db8:1::2") }, code: wire.StatusConfigurationConflict},
		{name: "STARTTLS to a non-TLS server", modPri: func(c *Config) { c.TLS = tlsFor(t, ca, ca, "2001:db8:1::1") }, code: wire.StatusTLSConnectionRefused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pc, sc := e.config(Primary), e.config(Secondary)
			var priClk *clock.Fake = e.clk
			if tc.priClockAhead != 0 {
				priClk = clock.NewFake(t0.Add(tc.priClockAhead))
				pc.Clock = priClk
			}
			if tc.modPri != nil {
				tc.modPri(&pc)
			}
			if tc.modSec != nil {
				tc.modSec(&sc)
			}
			sec := startSecondary(t, sc)
			pri := start(t, pc)
			eventually(t, "the refusal on both sides", func() bool {
				return pri.l.Stats().RejectsReceived[tc.code] == 1 && sec.l.Stats().RejectsSent[tc.code] == 1
			})
			var next time.Time
			eventually(t, "the primary to back off", func() bool {
				next = pri.l.Stats().NextAttempt
				return next.After(priClk.Now())
			})
			if d := next.Sub(priClk.Now()); d != DefaultRetryMax {
				t.Fatalf("next attempt in %v, want RetryMax", d)
			}
			noUpDown(t, pri.h, "primary")
			noUpDown(t, sec.h, "secondary")
		})
	}
}

// handshakeRaw runs a scripted primary through the handshake with a real
// secondary until the secondary is up.
func handshakeRaw(t *testing.T, e *env, sec *side) *rawPeer {
	t.Helper()
	raw := e.dialRaw("[2001:db8:1::1]:40000")
	raw.send(wire.NewConnect(1, 0, connectInfo(3600)), 0)
	if m := raw.recv(); m.Type != wire.MsgConnectReply || m.Rejected() {
		t.Fatalf("answer %v", m)
	}
	if m := raw.recv(); m.Type != wire.MsgState {
		t.Fatalf("after CONNECTREPLY: %v", m)
	}
	return raw
}

// TestAfterHandshake: the per-message rules once the session exists.
func TestAfterHandshake(t *testing.T) {
	t.Run("skew drops the connection", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := handshakeRaw(t, e, sec)
		raw.send(stateMsg(), 0)
		waitUp(t, sec.h, "secondary")
		raw.send(wire.NewContact(2, 0), 5*time.Second) // at the limit: fine
		raw.send(wire.NewContact(3, 0), -6*time.Second)
		d := raw.recv()
		if st, _ := d.Status(); d.Type != wire.MsgDisconnect || st.Code != wire.StatusExcessiveTimeSkew || !strings.Contains(st.Message, "-6s") {
			t.Fatalf("answer to a skewed CONTACT: %v %v", d, st)
		}
		raw.expectClosed()
		if err := waitDown(t, sec.h, "secondary"); !errors.Is(err, ErrTimeSkew) {
			t.Fatalf("Down(%v)", err)
		}
		if s := sec.l.Stats(); s.ClockSkew != -6*time.Second || s.Received[wire.MsgContact] != 2 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("message before STATE", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := handshakeRaw(t, e, sec)
		raw.send(wire.NewContact(2, 0), 0) // allowed before STATE
		raw.send(wire.NewPoolReq(3, 0), 0)
		d := raw.recv()
		if st, _ := d.Status(); d.Type != wire.MsgDisconnect || st.Code != wire.StatusUnspecFail || !strings.Contains(st.Message, "POOLREQ before") {
			t.Fatalf("answer: %v %v", d, st)
		}
		raw.expectClosed()
		noUpDown(t, sec.h, "secondary")
	})
	t.Run("malformed message", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := handshakeRaw(t, e, sec)
		raw.send(stateMsg(), 0)
		waitUp(t, sec.h, "secondary")
		// A BNDUPD without CLIENT_DATA or IAPREFIX.
		b := []byte{byte(wire.MsgBndUpd), 0, 0, 9, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[4:], wire.ToFOTime(e.clk.Now()))
		if err := raw.w.WriteFrame(b); err != nil {
			t.Fatal(err)
		}
		d := raw.recv()
		if st, _ := d.Status(); d.Type != wire.MsgDisconnect || st.Code != wire.StatusUnspecFail {
			t.Fatalf("answer: %v %v", d, st)
		}
		if err := waitDown(t, sec.h, "secondary"); !errors.Is(err, ErrProtocol) {
			t.Fatalf("Down(%v)", err)
		}
	})
	t.Run("unknown message type skipped", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := handshakeRaw(t, e, sec)
		raw.send(stateMsg(), 0)
		waitUp(t, sec.h, "secondary")
		if err := raw.w.WriteFrame([]byte{99, 0, 0, 1, 0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		raw.send(wire.NewPoolReq(4, 0), 0)
		waitMsg(t, sec.h, "secondary", wire.MsgPoolReq)
		if s := sec.l.Stats(); s.UnknownMessages != 1 || !s.Connected {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("handshake message after the handshake", func(t *testing.T) {
		e := newEnv(t)
		sec := startSecondary(t, e.config(Secondary))
		raw := handshakeRaw(t, e, sec)
		raw.send(stateMsg(), 0)
		waitUp(t, sec.h, "secondary")
		raw.send(wire.NewConnect(5, 0, connectInfo(3600)), 0)
		if d := raw.recv(); d.Type != wire.MsgDisconnect {
			t.Fatalf("answer: %v", d)
		}
		if err := waitDown(t, sec.h, "secondary"); !errors.Is(err, ErrProtocol) {
			t.Fatalf("Down(%v)", err)
		}
	})
}
