package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

func TestHandshakeUpAndExchange(t *testing.T) {
	e := newEnv(t)
	pri, sec := e.upPair(nil, func(c *Config) { c.MaxUnackedBndUpd = 7; c.KeepaliveTime = 40 * time.Second })

	stP, stS := pri.l.Stats(), sec.l.Stats()
	if !stP.Connected || !stS.Connected || stP.Sessions != 1 || stS.Sessions != 1 || stP.ConnectAttempts != 1 {
		t.Fatalf("stats after handshake: primary %+v secondary %+v", stP, stS)
	}
	if stP.Sent[wire.MsgConnect] != 1 || stS.Received[wire.MsgConnect] != 1 || stS.Sent[wire.MsgConnectReply] != 1 ||
		stP.Received[wire.MsgConnectReply] != 1 || stP.Received[wire.MsgState] != 1 || stS.Received[wire.MsgState] != 1 {
		t.Fatalf("handshake message counts: primary sent %v received %v; secondary sent %v received %v",
			stP.Sent, stP.Received, stS.Sent, stS.Received)
	}
	if stP.PartnerMaxUnacked != 7 || stS.PartnerMaxUnacked != DefaultMaxUnackedBndUpd {
		t.Fatalf("partner max-unacked: primary sees %d, secondary sees %d", stP.PartnerMaxUnacked, stS.PartnerMaxUnacked)
	}
	if stP.PartnerAddr != secAddr || stS.PartnerAddr != priAddr {
		t.Fatalf("partner addresses %q %q", stP.PartnerAddr, stS.PartnerAddr)
	}

	// Exchange: POOLREQ from the secondary, POOLRESP back; a later STATE.
	xid := sec.l.NewXID()
	if err := sec.l.Send(wire.NewPoolReq(xid, 0)); err != nil {
		t.Fatal(err)
	}
	if m := waitMsg(t, pri.h, "primary", wire.MsgPoolReq); m.XID != xid {
		t.Fatalf("POOLREQ xid %#x, want %#x", m.XID, xid)
	}
	sec.l.mu.Lock()
	held := len(sec.l.xids.outstanding)
	sec.l.mu.Unlock()
	if held != 1 {
		t.Fatalf("POOLREQ xid not outstanding (%d held)", held)
	}
	if err := pri.l.Send(wire.NewPoolResp(xid, 0)); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, sec.h, "secondary", wire.MsgPoolResp)
	sec.l.mu.Lock()
	held = len(sec.l.xids.outstanding)
	sec.l.mu.Unlock()
	if held != 0 || sec.l.Stats().UnmatchedReplies != 0 {
		t.Fatalf("POOLRESP did not release the POOLREQ xid: %d held, %d unmatched", held, sec.l.Stats().UnmatchedReplies)
	}
	want := wire.StateInfo{State: wire.StatePartnerDown, StartTime: 77, PartnerDownTime: wire.U32(66)}
	if err := pri.l.SendState(want); err != nil {
		t.Fatal(err)
	}
	m := waitMsg(t, sec.h, "secondary", wire.MsgState)
	if got, _ := m.StateInfo(); got.State != want.State || *got.PartnerDownTime != 66 {
		t.Fatalf("later STATE delivered as %+v", got)
	}
	noUpDown(t, pri.h, "primary")
	noUpDown(t, sec.h, "secondary")
}

func TestPartnerDescription(t *testing.T) {
	e := newEnv(t)
	pc, sc := e.config(Primary), e.config(Secondary)
	sc.MaxUnackedBndUpd = 7
	sc.KeepaliveTime = 40 * time.Second
	sec := startSecondary(t, sc)
	pri := start(t, pc)
	pp, ps := waitUp(t, pri.h, "primary"), waitUp(t, sec.h, "secondary")
	if pp.Addr != secAddr || ps.Addr != priAddr {
		t.Fatalf("addresses %q %q", pp.Addr, ps.Addr)
	}
	if pp.Connect.MaxUnackedBndUpd != 7 || pp.Connect.KeepaliveTime != 40 || pp.Connect.MCLT != 3600 || pp.Connect.Version != wire.Version1 {
		t.Fatalf("primary's view of the CONNECTREPLY: %+v", pp.Connect)
	}
	if ps.Connect.MaxUnackedBndUpd != DefaultMaxUnackedBndUpd || ps.Connect.KeepaliveTime != 60 || ps.Connect.RelationshipName != "pair-a" {
		t.Fatalf("secondary's view of the CONNECT: %+v", ps.Connect)
	}
	if pp.State.State != wire.StateCommInterrupted || ps.State.State != wire.StateNormal {
		t.Fatalf("partner states: primary sees %v, secondary sees %v", pp.State.State, ps.State.State)
	}
	if !pp.ReceivedAt.Equal(t0) || pp.Skew != 0 || pp.TLS || ps.TLS {
		t.Fatalf("partner: %+v", pp)
	}
}

func TestSendErrors(t *testing.T) {
	e := newEnv(t)
	l, err := New(e.config(Primary), newRecorder(wire.StateNormal))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Send(wire.NewContact(1, 0)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Send before any connection: %v", err)
	}
	if err := l.SendBndUpd(context.Background(), bndUpd(1, 1)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("SendBndUpd before any connection: %v", err)
	}
	pri, _ := e.upPair(nil, nil)
	for _, m := range []*wire.Message{
		nil,
		wire.NewConnect(1, 0, connectInfo(3600)),
		wire.NewConnectReply(1, 0, connectInfo(3600)),
		wire.NewStartTLS(1),
		wire.NewReply(1, nil),
		bndUpd(1, 1),
		wire.NewContact(wire.MaxXID+1, 0), // does not encode
	} {
		if err := pri.l.Send(m); !errors.Is(err, ErrBadMessage) {
			t.Errorf("Send(%v) = %v, want ErrBadMessage", m, err)
		}
	}
	if err := pri.l.SendBndUpd(context.Background(), wire.NewContact(1, 0)); !errors.Is(err, ErrBadMessage) {
		t.Errorf("SendBndUpd(CONTACT) = %v", err)
	}
	if err := pri.l.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v", err)
	}
}

// TestKeepalive checks both timers: while idle each side sends CONTACT
// every partner-keepalive/4 (counted at the receiver as the fake clock
// moves), which keeps the partner's keepalive timer from expiring; once
// the link is black-holed, the side with the shorter keepalive time goes
// Down with ErrKeepaliveExpired exactly when it runs out, then the other.
func TestKeepalive(t *testing.T) {
	for _, tc := range []struct {
		name       string
		kPri, kSec time.Duration
	}{
		{"secondary expires first", 60 * time.Second, 40 * time.Second},
		{"primary expires first", 40 * time.Second, 60 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pri, sec := e.upPair(func(c *Config) { c.KeepaliveTime = tc.kPri }, func(c *Config) { c.KeepaliveTime = tc.kSec })
			// FO_SEND_TIME is the partner's keepalive / 4.
			everyPri, everySec := tc.kSec/4, tc.kPri/4
			contacts := func(s *side, dir func(Stats) map[wire.MsgType]uint64) uint64 {
				return dir(s.l.Stats())[wire.MsgContact]
			}
			sent := func(s Stats) map[wire.MsgType]uint64 { return s.Sent }
			recv := func(s Stats) map[wire.MsgType]uint64 { return s.Received }
			const step = 5 * time.Second
			var el time.Duration // elapsed since both were up
			for el < 60*time.Second {
				e.clk.Advance(step)
				el += step
				wp, ws := uint64(el/everyPri), uint64(el/everySec)
				eventually(t, fmt.Sprintf("CONTACTs at +%v: primary→secondary %d, secondary→primary %d", el, wp, ws), func() bool {
					return contacts(sec, recv) == wp && contacts(pri, recv) == ws
				})
			}
			noUpDown(t, pri.h, "primary")
			noUpDown(t, sec.h, "secondary")
			if !pri.l.Stats().Connected || !sec.l.Stats().Connected {
				t.Fatal("not connected after a minute idle")
			}

			// Black hole: messages vanish, nobody is told.
			e.n.BlackHole(priAddr, secAddr)
			first, other, kFirst := sec, pri, tc.kSec
			if tc.kPri < tc.kSec {
				first, other, kFirst = pri, sec, tc.kPri
			}
			holeAt := el
			for el < holeAt+kFirst {
				e.clk.Advance(step)
				el += step
				if el == holeAt+kFirst {
					break
				}
				wp, ws := uint64(el/everyPri), uint64(el/everySec)
				eventually(t, fmt.Sprintf("CONTACTs into the hole at +%v", el), func() bool {
					return contacts(pri, sent) == wp && contacts(sec, sent) == ws
				})
				noUpDown(t, first.h, "first")
				noUpDown(t, other.h, "other")
			}
			err := waitDown(t, first.h, "the side with the shorter keepalive")
			if !errors.Is(err, ErrKeepaliveExpired) {
				t.Fatalf("Down(%v), want ErrKeepaliveExpired", err)
			}
			// The closed connection (memnet delivers the close even through
			// the black hole) or its own timer takes the other side down.
			if err := waitDown(t, other.h, "the other side"); err == nil {
				t.Fatal("other side: Down(nil)")
			}
			if r := contacts(sec, recv); r != uint64(holeAt/everyPri) {
				t.Fatalf("secondary received %d CONTACTs, some through the black hole", r)
			}
			if s := first.l.Stats(); s.Connected || s.Downs["keepalive-expired"] != 1 {
				t.Fatalf("stats of the expired side: %+v", s)
			}
		})
	}
}

func TestReconnectAfterCut(t *testing.T) {
	e := newEnv(t)
	pri, sec := e.upPair(nil, nil)
	e.n.Cut(priAddr, secAddr)
	if err := waitDown(t, pri.h, "primary"); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("primary Down(%v)", err)
	}
	if err := waitDown(t, sec.h, "secondary"); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("secondary Down(%v)", err)
	}
	next := waitNextAttempt(t, e, pri)
	if d := next.Sub(e.clk.Now()); d != DefaultRetryMin {
		t.Fatalf("first redial in %v, want %v", d, DefaultRetryMin)
	}
	e.clk.Advance(DefaultRetryMin - time.Millisecond)
	if n := pri.l.Stats().ConnectAttempts; n != 1 {
		t.Fatalf("redialed before the backoff elapsed (%d attempts)", n)
	}
	e.clk.Advance(time.Millisecond)
	waitUp(t, pri.h, "primary")
	waitUp(t, sec.h, "secondary")
	if s := pri.l.Stats(); s.ConnectAttempts != 2 || s.Reconnects != 1 || s.Downs["connection-lost"] != 1 {
		t.Fatalf("primary stats after reconnect: %+v", s)
	}
	if err := pri.l.Send(wire.NewPoolResp(5, 0)); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, sec.h, "secondary", wire.MsgPoolResp)
}

// waitNextAttempt waits until the primary has scheduled its next dial
// after the current fake time, and returns when.
func waitNextAttempt(t *testing.T, e *env, s *side) time.Time {
	t.Helper()
	var next time.Time
	eventually(t, "the primary to schedule a redial", func() bool {
		next = s.l.Stats().NextAttempt
		return next.After(e.clk.Now())
	})
	return next
}

func TestBackoffGrowsAndRetriesForever(t *testing.T) {
	e := newEnv(t)
	pri, sec := e.upPair(nil, nil)
	e.n.Partition(priAddr, secAddr)
	waitDown(t, pri.h, "primary")
	waitDown(t, sec.h, "secondary")
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30, 30} {
		want *= time.Second
		next := waitNextAttempt(t, e, pri)
		if d := next.Sub(e.clk.Now()); d != want {
			t.Fatalf("wait %d is %v, want %v", i, d, want)
		}
		n := pri.l.Stats().ConnectAttempts
		e.clk.Advance(want)
		eventually(t, "a dial", func() bool { return pri.l.Stats().ConnectAttempts == n+1 })
	}
	e.n.Heal(priAddr, secAddr)
	next := waitNextAttempt(t, e, pri)
	e.clk.Set(next)
	waitUp(t, pri.h, "primary")
	waitUp(t, sec.h, "secondary")
}

func TestShutdownSendsDisconnect(t *testing.T) {
	t.Run("primary stops", func(t *testing.T) {
		e := newEnv(t)
		pri, sec := e.upPair(nil, nil)
		pri.stop()
		if err := waitDown(t, pri.h, "primary"); !errors.Is(err, ErrShutdown) {
			t.Fatalf("primary Down(%v)", err)
		}
		err := waitDown(t, sec.h, "secondary")
		var se *StatusError
		if !errors.Is(err, ErrPartnerDisconnect) || !errors.As(err, &se) || se.Status.Code != wire.StatusServerShuttingDown {
			t.Fatalf("secondary Down(%v), want DISCONNECT with ServerShuttingDown", err)
		}
		if s := sec.l.Stats(); s.Received[wire.MsgDisconnect] != 1 || s.Downs["partner-disconnect"] != 1 {
			t.Fatalf("secondary stats: %+v", s)
		}
	})
	t.Run("secondary stops", func(t *testing.T) {
		e := newEnv(t)
		pri, sec := e.upPair(nil, nil)
		sec.stop()
		err := waitDown(t, pri.h, "primary")
		var se *StatusError
		if !errors.As(err, &se) || se.Status.Code != wire.StatusServerShuttingDown {
			t.Fatalf("primary Down(%v)", err)
		}
		// A DISCONNECT is a rejection: retry less often (RFC 8156 §6.1).
		if d := waitNextAttempt(t, e, pri).Sub(e.clk.Now()); d != DefaultRetryMax {
			t.Fatalf("redial after DISCONNECT in %v, want %v", d, DefaultRetryMax)
		}
	})
}

func TestSendDisconnectClosesConnection(t *testing.T) {
	e := newEnv(t)
	pri, sec := e.upPair(nil, nil)
	st := wire.Status{Code: wire.StatusUnspecFail, Message: "recover took too long"}
	if err := pri.l.Send(wire.NewDisconnect(pri.l.NewXID(), 0, st)); err != nil {
		t.Fatal(err)
	}
	if err := waitDown(t, pri.h, "primary"); !errors.Is(err, ErrLocalDisconnect) {
		t.Fatalf("primary Down(%v)", err)
	}
	err := waitDown(t, sec.h, "secondary")
	var se *StatusError
	if !errors.As(err, &se) || se.Status != st {
		t.Fatalf("secondary Down(%v)", err)
	}
}

func TestSupersedingConnection(t *testing.T) {
	e := newEnv(t)
	pri, sec := e.upPair(nil, nil)
	raw := e.dialRaw("[2001:db8:1::1]:5000")
	raw.send(wire.NewConnect(9, 0, connectInfo(3600)), 0)
	if m := raw.recv(); m.Type != wire.MsgConnectReply || m.Rejected() {
		t.Fatalf("answer %v", m)
	}
	if err := waitDown(t, sec.h, "secondary"); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("secondary Down(%v)", err)
	}
	if err := waitDown(t, pri.h, "primary"); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("primary Down(%v)", err)
	}
	if m := raw.recv(); m.Type != wire.MsgState {
		t.Fatalf("after CONNECTREPLY: %v", m)
	}
	raw.send(stateMsg(), 0)
	if p := waitUp(t, sec.h, "secondary"); p.Addr != "[2001:db8:1::1]:5000" {
		t.Fatalf("new partner address %q", p.Addr)
	}
	if s := sec.l.Stats(); s.Sessions != 2 || s.Downs["superseded"] != 1 {
		t.Fatalf("secondary stats %+v", s)
	}
}

// TestFlowControl: with the partner's MAX_UNACKED_BNDUPD = 3, the fourth
// SendBndUpd waits until a BNDREPLY frees a slot, and the partner never has
// more than three unanswered.
func TestFlowControl(t *testing.T) {
	e := newEnv(t)
	pri, sec := e.upPair(nil, func(c *Config) { c.MaxUnackedBndUpd = 3 })
	ctx := context.Background()
	var upds []*wire.Message
	for i := 0; i < 3; i++ {
		m := bndUpd(pri.l.NewXID(), byte(i+1))
		if err := pri.l.SendBndUpd(ctx, m); err != nil {
			t.Fatal(err)
		}
		upds = append(upds, m)
	}
	fourth := bndUpd(pri.l.NewXID(), 4)
	done := make(chan error, 1)
	go func() { done <- pri.l.SendBndUpd(ctx, fourth) }()
	for i := 0; i < 3; i++ {
		if m := waitMsg(t, sec.h, "secondary", wire.MsgBndUpd); m.XID != upds[i].XID {
			t.Fatalf("BNDUPD %d xid %#x, want %#x", i, m.XID, upds[i].XID)
		}
	}
	eventually(t, "the fourth SendBndUpd to wait for the window", func() bool {
		s := pri.l.Stats()
		return s.WindowWaiters == 1 && s.Unacked == 3
	})
	select {
	case err := <-done:
		t.Fatalf("fourth SendBndUpd returned %v with a full window", err)
	case m := <-sec.h.msgs:
		t.Fatalf("secondary received %v with a full window", m)
	default:
	}
	// Acknowledge the second one: the fourth goes out.
	if err := sec.l.Send(bndReply(upds[1])); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fourth SendBndUpd: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("fourth SendBndUpd still blocked after a BNDREPLY")
	}
	if m := waitMsg(t, sec.h, "secondary", wire.MsgBndUpd); m.XID != fourth.XID {
		t.Fatalf("fourth BNDUPD xid %#x", m.XID)
	}
	if s := pri.l.Stats(); s.Unacked != 3 || s.WindowWaiters != 0 || s.UnmatchedReplies != 0 {
		t.Fatalf("after the swap: %+v", s)
	}

	// A waiter gives up with its context.
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- pri.l.SendBndUpd(cctx, bndUpd(pri.l.NewXID(), 5)) }()
	eventually(t, "a waiter", func() bool { return pri.l.Stats().WindowWaiters == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled SendBndUpd: %v", err)
	}
	// A waiter fails when the connection drops; the window is reset.
	go func() { done <- pri.l.SendBndUpd(ctx, bndUpd(pri.l.NewXID(), 6)) }()
	eventually(t, "a waiter", func() bool { return pri.l.Stats().WindowWaiters == 1 })
	e.n.Cut(priAddr, secAddr)
	if err := <-done; !errors.Is(err, ErrNotConnected) {
		t.Fatalf("SendBndUpd across a drop: %v", err)
	}
	waitDown(t, pri.h, "primary")
	if s := pri.l.Stats(); s.Unacked != 0 || s.WindowWaiters != 0 {
		t.Fatalf("window not reset: %+v", s)
	}
}

// TestXIDWrap: an UPDREQALL's transaction-id stays reserved across the
// 24-bit wrap until its UPDDONE arrives; so does a BNDUPD's until BNDREPLY.
func TestXIDWrap(t *testing.T) {
	e := newEnv(t)
	pri, sec := e.upPair(nil, nil)
	const held = 5
	if err := pri.l.Send(wire.NewUpdReqAll(held, 0)); err != nil {
		t.Fatal(err)
	}
	top := bndUpd(wire.MaxXID, 1)
	if err := pri.l.SendBndUpd(context.Background(), top); err != nil {
		t.Fatal(err)
	}
	if err := pri.l.Send(wire.NewUpdReqAll(held, 0)); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("second request with an outstanding xid: %v", err)
	}
	pri.l.mu.Lock()
	pri.l.xids.next = wire.MaxXID - 2
	pri.l.mu.Unlock()
	var got []uint32
	for range 8 {
		got = append(got, pri.l.NewXID())
	}
	want := []uint32{wire.MaxXID - 2, wire.MaxXID - 1, 1, 2, 3, 4, 6, 7}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ids across the wrap: %v, want %v (skipping 0, %d and %#x)", got, want, held, wire.MaxXID)
	}
	// UPDDONE releases the UPDREQALL's id, BNDREPLY the BNDUPD's.
	waitMsg(t, sec.h, "secondary", wire.MsgUpdReqAll)
	waitMsg(t, sec.h, "secondary", wire.MsgBndUpd)
	if err := sec.l.Send(wire.NewUpdDone(held, 0)); err != nil {
		t.Fatal(err)
	}
	if err := sec.l.Send(bndReply(top)); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, pri.h, "primary", wire.MsgUpdDone)
	waitMsg(t, pri.h, "primary", wire.MsgBndReply)
	pri.l.mu.Lock()
	pri.l.xids.next = held - 1
	pri.l.mu.Unlock()
	if a, b := pri.l.NewXID(), pri.l.NewXID(); a != held-1 || b != held {
		t.Fatalf("after UPDDONE: %d %d, want %d %d", a, b, held-1, held)
	}
	pri.l.mu.Lock()
	pri.l.xids.next = wire.MaxXID
	pri.l.mu.Unlock()
	if a := pri.l.NewXID(); a != wire.MaxXID {
		t.Fatalf("after BNDREPLY: %#x, want %#x", a, wire.MaxXID)
	}
	if s := pri.l.Stats(); s.UnmatchedReplies != 0 || s.Unacked != 0 {
		t.Fatalf("stats %+v", s)
	}
	// An answer nobody asked for is delivered and counted.
	if err := sec.l.Send(wire.NewUpdDone(999, 0)); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, pri.h, "primary", wire.MsgUpdDone)
	if n := pri.l.Stats().UnmatchedReplies; n != 1 {
		t.Fatalf("unmatched replies %d", n)
	}
}

// TestRealTCP runs two Links over the host's TCP stack on loopback, with
// the real clock: handshake to Up on both sides and a message each way.
func TestRealTCP(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "::1"} {
		t.Run(ip, func(t *testing.T) {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
			if err != nil {
				t.Skipf("no %s loopback: %v", ip, err)
			}
			ln.Close()
			runTCP(t, ip, nil)
		})
	}
	t.Run("tls-files", func(t *testing.T) {
		ca := newCA(t, "tandem test CA")
		_, certPEM, keyPEM := ca.issue(t, "127.0.0.1")
		dir := t.TempDir()
		files := &TLSConfig{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), CAFile: filepath.Join(dir, "ca.pem")}
		for name, b := range map[string][]byte{files.CertFile: certPEM, files.KeyFile: keyPEM, files.CAFile: ca.pem} {
			if err := os.WriteFile(name, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		runTCP(t, "127.0.0.1", files)
	})
}

func runTCP(t *testing.T, ip string, tc *TLSConfig) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	sec := start(t, Config{Role: Secondary, Relationship: "tcp", Local: net.JoinHostPort(ip, "0"), Peer: ip,
		MCLT: time.Hour, TLS: tc, Logger: log})
	eventually(t, "the secondary to listen", func() bool { return sec.l.ListenAddr() != nil })
	pri := start(t, Config{Role: Primary, Relationship: "tcp", Local: ip, Peer: sec.l.ListenAddr().String(),
		MCLT: time.Hour, TLS: tc, Logger: log})
	pp := waitUp(t, pri.h, "primary")
	ps := waitUp(t, sec.h, "secondary")
	if pp.TLS != (tc != nil) || ps.TLS != (tc != nil) {
		t.Fatalf("TLS: primary %v secondary %v", pp.TLS, ps.TLS)
	}
	xid := pri.l.NewXID()
	if err := pri.l.Send(wire.NewUpdReq(xid, 0)); err != nil {
		t.Fatal(err)
	}
	if m := waitMsg(t, sec.h, "secondary", wire.MsgUpdReq); m.XID != xid {
		t.Fatalf("UPDREQ xid %#x", m.XID)
	}
	if err := sec.l.Send(wire.NewUpdDone(xid, 0)); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, pri.h, "primary", wire.MsgUpdDone)
	pri.stop()
	var se *StatusError
	if err := waitDown(t, sec.h, "secondary"); !errors.As(err, &se) || se.Status.Code != wire.StatusServerShuttingDown {
		t.Fatalf("secondary Down(%v)", err)
	}
}
