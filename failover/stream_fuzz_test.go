package failover

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/update"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// The stream fuzz target's secondary: one per process (each fuzz worker is
// its own process), a real raftstore, endpoint and DHCP server behind a
// memnet listener, built on first use and stopped by the F's cleanup.
var (
	streamOnce sync.Once
	streamEnv  *pairEnv
)

func streamSecondary(f *testing.F) *node {
	streamOnce.Do(func() {
		streamEnv = newPairEnv(f)
		n := streamEnv.sec
		n.cfgEndpoint = func(c *Config) {
			// Any sent-time is accepted, so that fuzzed messages reach the
			// endpoint instead of all dying in the skew check (sent-time is
			// 32-bit seconds since 2000: 146 years covers every value).
			c.Link.MaxSkew = 1 << 62
		}
		n.start()
	})
	return streamEnv.sec
}

// streamBndUpd is a well-formed BNDUPD for a lease the primary grants: it
// must change the secondary's binding database (TestStreamFuzzSeeds).
func streamBndUpd(tb testing.TB, now time.Time) []byte {
	a := netip.MustParseAddr("2001:db8:1::1001")
	b := fsm.Binding{Resource: fsm.AddrResource(fsm.IANA, a), Status: fsm.StatusActive, IAID: 7,
		DUID: "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x77", PreferredLifetime: uint32(prefLT / time.Second),
		ValidLifetime: uint32(validLT / time.Second), CLTT: now.Unix(), StartTimeOfState: now.Unix(),
		StateExpirationTime: now.Add(validLT).Unix(), PartnerLifetime: now.Add(validLT + testMCLT).Unix()}
	cd, err := update.ClientDataFor(b.DUID, []fsm.Binding{b}, now)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := wire.NewBndUpd(0x4242, wire.ToFOTime(now), cd).AppendFrame(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func frameOf(tb testing.TB, m *wire.Message) []byte {
	b, err := m.AppendFrame(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func streamSeeds(tb testing.TB) [][]byte {
	now := t0
	fo := wire.ToFOTime(now)
	bnd := streamBndUpd(tb, now)
	return [][]byte{
		bnd,
		append(frameOf(tb, wire.NewContact(1, fo)), bnd...),
		frameOf(tb, wire.NewPoolReq(2, fo)),
		frameOf(tb, wire.NewUpdReq(3, fo)),
		frameOf(tb, wire.NewUpdDone(4, fo)),
		frameOf(tb, wire.NewDisconnect(5, fo, wire.Status{Code: wire.StatusServerShuttingDown})),
		frameOf(tb, wire.NewConnect(6, fo, wire.ConnectInfo{Version: wire.Version1, MCLT: 60, KeepaliveTime: 60, MaxUnackedBndUpd: 10})),
		{0, 8, byte(wire.MsgBndUpd), 0, 0, 9, 0, 0, 0, 0}, // a BNDUPD with no content
		{0xff, 0xff, 1, 2, 3},                             // a frame that never ends
		{0, 3, 99, 0, 0},                                  // short header, unknown type
		bnd[:len(bnd)/2],                                  // truncated
		nil,
	}
}

// streamResult is what one fuzzed stream did to the secondary.
type streamResult struct {
	reason  string // the Downs label of the session's end
	changed bool   // the binding database changed
}

// feedStream connects to the secondary as its primary, completes a valid
// handshake (CONNECT, CONNECTREPLY, STATE both ways), writes data as the
// rest of the stream, and waits until the session is over.
// Everything the secondary writes is drained meanwhile.
func feedStream(t *testing.T, n *node, data []byte) streamResult {
	t.Helper()
	l := n.ep.link
	downsBefore := l.Stats().Downs
	before := n.bindings()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := n.p.net.Dial(ctx, "[2001:db8:1::1]:40000", secAddr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout)) // real time: a hung secondary fails the input
	rd, w := wire.NewReader(c), wire.NewWriter(c)
	now := wire.ToFOTime(n.p.clk.Now())
	ci := wire.ConnectInfo{Version: wire.Version1, MCLT: uint32(testMCLT / time.Second),
		KeepaliveTime: uint32(testKeepalive / time.Second), MaxUnackedBndUpd: 64, RelationshipName: "pair-a"}
	if err := w.WriteMessage(wire.NewConnect(1, now, ci)); err != nil {
		t.Fatalf("CONNECT: %v", err)
	}
	if m, err := rd.ReadMessage(); err != nil || m.Type != wire.MsgConnectReply || m.Rejected() {
		t.Fatalf("answer to CONNECT: %v, %v", m, err)
	}
	if m, err := rd.ReadMessage(); err != nil || m.Type != wire.MsgState {
		t.Fatalf("after CONNECTREPLY: %v, %v", m, err)
	}
	st := wire.StateInfo{State: wire.StateNormal, Flags: wire.ServerFlagCommunicated, StartTime: now}
	if err := w.WriteMessage(wire.NewState(2, now, st)); err != nil {
		t.Fatalf("STATE: %v", err)
	}
	waitFor(t, "communications OK", func() bool { return l.Stats().Connected })
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(drained) }()
	// The secondary must end the session by itself where it can: closing
	// our end would race its own writes (a failed write ends the session
	// as connection-lost before the reader reports the bad frame). Whole
	// frames get a DISCONNECT after them; a first frame that does not decode
	// ends the session there; only a stream that stops inside a frame needs
	// us to close.
	firstBad, _, whole := classify(data)
	if whole {
		data = append(slices.Clip(data), frameOf(t, wire.NewDisconnect(3, now, wire.Status{Code: wire.StatusServerShuttingDown}))...)
	}
	c.Write(data) // may fail: the secondary may already have dropped us
	if !whole && !firstBad {
		c.Close()
	}
	var reason string
	ended := poll(5*time.Second, func() bool {
		s := l.Stats()
		if s.Established {
			return false
		}
		for k, v := range s.Downs {
			if v != downsBefore[k] {
				reason = k
				return true
			}
		}
		return false
	})
	if !ended {
		t.Fatalf("the session did not end (whole %v, first frame bad %v): %+v\ninput % x", whole, firstBad, l.Stats(), data)
	}
	c.Close()
	<-drained
	// The session is over, so no more BNDUPDs arrive: wait for the commits
	// of those that did.
	n.ep.handlers.Wait()
	return streamResult{reason: reason, changed: !maps.Equal(before, n.bindings())}
}

// classify walks data as the secondary's reader does and reports whether
// its first frame does not decode (so the session must end with a protocol
// error), whether any frame is a BNDUPD or an UPDREQALL that decodes (the
// only things allowed to change the binding database: an UPDREQALL makes
// the secondary hold the leases a partner that lost its database may have
// renewed, docs/failover.md item 89), and whether data ends exactly at a
// frame boundary.
func classify(data []byte) (firstBad, mayChange, whole bool) {
	rd := wire.NewReader(bytes.NewReader(data))
	for i := 0; ; i++ {
		b, err := rd.ReadFrame()
		if err != nil {
			return firstBad, mayChange, err == io.EOF
		}
		m, err := wire.DecodeMessage(b)
		if err != nil {
			if i == 0 && !errors.Is(err, wire.ErrUnknownMessageType) {
				return true, mayChange, false // the session ends here
			}
			continue // an unknown type is skipped; anything else ends the session
		}
		if m.Type == wire.MsgBndUpd || m.Type == wire.MsgUpdReqAll {
			mayChange = true
		}
	}
}

// TestStreamFuzzSeeds: the harness can fail. The well-formed BNDUPD seed
// changes the database and ends with the DISCONNECT the harness appends; the
// contentless BNDUPD ends with a protocol error and changes nothing.
func TestStreamFuzzSeeds(t *testing.T) {
	p := newPairEnv(t)
	p.sec.cfgEndpoint = func(c *Config) { c.Link.MaxSkew = 1 << 62 }
	p.sec.start()
	if r := feedStream(t, p.sec, streamBndUpd(t, p.clk.Now())); !r.changed || r.reason != "partner-disconnect" {
		t.Fatalf("valid BNDUPD: %+v, want the database changed and the harness's DISCONNECT", r)
	}
	bad := []byte{0, 8, byte(wire.MsgBndUpd), 0, 0, 9, 0, 0, 0, 0}
	if first, _, _ := classify(bad); !first {
		t.Fatal("classify: the contentless BNDUPD decodes")
	}
	if r := feedStream(t, p.sec, bad); r.changed || r.reason != "protocol-error" {
		t.Fatalf("contentless BNDUPD: %+v, want protocol-error and no change", r)
	}
}

// FuzzStream feeds arbitrary bytes as the primary's side of an established
// failover connection to a real secondary (link, endpoint, state machine,
// raftstore). Properties: no panic; the session ends (never hangs) and the
// secondary accepts the next connection; a first frame that does not
// decode ends it with a protocol error; the binding database changes only
// if a well-formed BNDUPD or UPDREQALL arrived.
func FuzzStream(f *testing.F) {
	n := streamSecondary(f)
	for _, s := range streamSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		firstBad, bnd, _ := classify(data)
		r := feedStream(t, n, data)
		if firstBad && r.reason != "protocol-error" {
			t.Fatalf("a first frame that does not decode ended the session with %q, want protocol-error", r.reason)
		}
		if r.changed && !bnd {
			t.Fatalf("the binding database changed without a well-formed BNDUPD or UPDREQALL")
		}
		if n.ep.link.Stats().Established {
			t.Fatalf("session still established: %+v", n.ep.link.Stats())
		}
	})
}
