package link

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/internal/memnet"
)

const (
	priAddr = "[2001:db8:1::1]:647"
	secAddr = "[2001:db8:1::2]:647"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// waitTimeout bounds every wait for something another goroutine does. It
// is real time: the fake clock only drives the link's own timers.
const waitTimeout = 5 * time.Second

// memTransport adapts memnet to Transport. Dial connects from the local
// address string as given, so memnet's Cut/BlackHole(priAddr, secAddr)
// find the connection. wrap, if set, wraps every accepted connection.
type memTransport struct {
	n    *memnet.Network
	wrap func(net.Conn) net.Conn
}

func (m memTransport) Dial(ctx context.Context, local, remote string) (net.Conn, error) {
	return m.n.Dial(ctx, local, remote)
}

func (m memTransport) Listen(local string) (net.Listener, error) {
	l, err := m.n.Listen(local)
	if err != nil || m.wrap == nil {
		return l, err
	}
	return wrapListener{l, m.wrap}, nil
}

type wrapListener struct {
	net.Listener
	wrap func(net.Conn) net.Conn
}

func (w wrapListener) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return w.wrap(c), nil
}

// countingConn counts the bytes read from it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// recorder is a Handler that records what the link reports.
type recorder struct {
	state wire.StateInfo
	ups   chan Partner
	downs chan error
	msgs  chan *wire.Message

	mu     sync.Mutex
	onRecv func(m *wire.Message) // called on Run's goroutine
}

func newRecorder(st wire.ServerState) *recorder {
	return &recorder{
		state: wire.StateInfo{State: st, Flags: wire.ServerFlagCommunicated, StartTime: wire.ToFOTime(t0)},
		ups:   make(chan Partner, 64),
		downs: make(chan error, 64),
		msgs:  make(chan *wire.Message, 4096),
	}
}

func (r *recorder) LocalState() wire.StateInfo { return r.state }
func (r *recorder) Up(p Partner)               { r.ups <- p }
func (r *recorder) Down(err error)             { r.downs <- err }
func (r *recorder) Receive(m *wire.Message, at time.Time) {
	r.mu.Lock()
	f := r.onRecv
	r.mu.Unlock()
	if f != nil {
		f(m)
	}
	r.msgs <- m
}

func (r *recorder) setOnRecv(f func(*wire.Message)) {
	r.mu.Lock()
	r.onRecv = f
	r.mu.Unlock()
}

func waitUp(t *testing.T, r *recorder, who string) Partner {
	t.Helper()
	select {
	case p := <-r.ups:
		return p
	case err := <-r.downs:
		t.Fatalf("%s: Down(%v) while waiting for Up", who, err)
	case <-time.After(waitTimeout):
		t.Fatalf("%s: no Up", who)
	}
	return Partner{}
}

func waitDown(t *testing.T, r *recorder, who string) error {
	t.Helper()
	select {
	case err := <-r.downs:
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("%s: no Down", who)
	}
	return nil
}

func waitMsg(t *testing.T, r *recorder, who string, typ wire.MsgType) *wire.Message {
	t.Helper()
	select {
	case m := <-r.msgs:
		if m.Type != typ {
			t.Fatalf("%s received %v, want %v", who, m, typ)
		}
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("%s: no %v received", who, typ)
	}
	return nil
}

// noUpDown fails if the recorder has an Up or Down pending.
func noUpDown(t *testing.T, r *recorder, who string) {
	t.Helper()
	select {
	case p := <-r.ups:
		t.Fatalf("%s: unexpected Up(%+v)", who, p)
	case err := <-r.downs:
		t.Fatalf("%s: unexpected Down(%v)", who, err)
	default:
	}
}

// eventually polls cond until it holds, failing after waitTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// env is one in-memory network and one fake clock shared by both sides.
type env struct {
	t   *testing.T
	n   *memnet.Network
	clk *clock.Fake
	tr  memTransport
}

func newEnv(t *testing.T) *env {
	n := memnet.New()
	return &env{t: t, n: n, clk: clock.NewFake(t0), tr: memTransport{n: n}}
}

func (e *env) config(role Role) Config {
	c := Config{
		Role:         role,
		Relationship: "pair-a",
		MCLT:         time.Hour,
		Transport:    e.tr,
		Clock:        e.clk,
		Logger:       zaptest.NewLogger(e.t, zaptest.Level(zap.InfoLevel)),
	}
	if role == Primary {
		c.Local, c.Peer = priAddr, secAddr
	} else {
		c.Local, c.Peer = secAddr, priAddr
	}
	return c
}

// side is one running Link.
type side struct {
	l    *Link
	h    *recorder
	stop func() // cancels Run and waits for it to return
}

// start creates and runs a Link; Run is stopped at the end of the test.
func start(t *testing.T, cfg Config) *side {
	t.Helper()
	st := wire.StateNormal
	if cfg.Role == Secondary {
		st = wire.StateCommInterrupted
	}
	h := newRecorder(st)
	l, err := New(cfg, h)
	if err != nil {
		t.Fatalf("New(%v): %v", cfg.Role, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%v Run: %v", cfg.Role, err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("%v Run did not return after cancel", cfg.Role)
			}
		})
	}
	t.Cleanup(stop)
	return &side{l: l, h: h, stop: stop}
}

// startSecondary starts a secondary and waits until it listens.
func startSecondary(t *testing.T, cfg Config) *side {
	t.Helper()
	s := start(t, cfg)
	eventually(t, "the secondary to listen", func() bool { return s.l.ListenAddr() != nil })
	return s
}

// upPair starts both sides and waits until both are up.
func (e *env) upPair(modPri, modSec func(*Config)) (pri, sec *side) {
	e.t.Helper()
	pc, sc := e.config(Primary), e.config(Secondary)
	if modPri != nil {
		modPri(&pc)
	}
	if modSec != nil {
		modSec(&sc)
	}
	sec = startSecondary(e.t, sc)
	pri = start(e.t, pc)
	waitUp(e.t, pri.h, "primary")
	waitUp(e.t, sec.h, "secondary")
	return pri, sec
}

// rawPeer is a scripted partner speaking wire directly.
type rawPeer struct {
	t   *testing.T
	c   net.Conn
	rd  *wire.Reader
	w   *wire.Writer
	clk clock.Clock
}

func newRawPeer(t *testing.T, c net.Conn, clk clock.Clock) *rawPeer {
	return &rawPeer{t: t, c: c, rd: wire.NewReader(c), w: wire.NewWriter(c), clk: clk}
}

// dialRaw connects to the secondary at secAddr from "from".
func (e *env) dialRaw(from string) *rawPeer {
	e.t.Helper()
	c, err := e.n.Dial(context.Background(), from, secAddr)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return newRawPeer(e.t, c, e.clk)
}

// send stamps the sent-time (now + skew) of failover messages and writes m.
func (p *rawPeer) send(m *wire.Message, skew time.Duration) {
	p.t.Helper()
	if m.Type.HasSentTime() {
		m.SentTime = wire.ToFOTime(p.clk.Now().Add(skew))
	}
	if err := p.w.WriteMessage(m); err != nil {
		p.t.Fatalf("raw peer write %v: %v", m.Type, err)
	}
}

func (p *rawPeer) recv() *wire.Message {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(waitTimeout))
	m, err := p.rd.ReadMessage()
	if err != nil {
		p.t.Fatalf("raw peer read: %v", err)
	}
	return m
}

// expectClosed reads until the connection ends; it fails on a timeout or
// on a message other than those allowed.
func (p *rawPeer) expectClosed(allowed ...wire.MsgType) {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		m, err := p.rd.ReadMessage()
		if err != nil {
			if isTimeout(err) {
				p.t.Fatalf("connection still open: %v", err)
			}
			return
		}
		ok := false
		for _, a := range allowed {
			ok = ok || m.Type == a
		}
		if !ok {
			p.t.Fatalf("unexpected %v before close", m)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func connectInfo(mclt uint32) wire.ConnectInfo {
	return wire.ConnectInfo{Version: wire.Version1, MCLT: mclt, KeepaliveTime: 60, MaxUnackedBndUpd: 10, RelationshipName: "pair-a"}
}

func stateMsg() *wire.Message {
	return wire.NewState(1, 0, wire.StateInfo{State: wire.StateNormal, StartTime: wire.ToFOTime(t0)})
}

// bndUpd returns a valid BNDUPD for address 2001:db8:1::n.
func bndUpd(xid uint32, n byte) *wire.Message {
	a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: n})
	cd := &wire.ClientData{
		ClientID: []byte{0, 3, 0, 1, 2, 3, 4, 5, 6, n},
		BaseTime: wire.U32(wire.ToFOTime(t0)),
		IAs: []wire.IA{{Type: wire.IANA, IAID: 1, Leases: []wire.Lease{{
			Prefix: netip.PrefixFrom(a, 128), Preferred: 3000, Valid: 4000,
			BindingStatus: wire.BindingActive, StartTimeOfState: wire.U32(wire.ToFOTime(t0)),
		}}}},
	}
	return wire.NewBndUpd(xid, 0, cd)
}

func bndReply(upd *wire.Message) *wire.Message {
	return wire.NewBndReply(upd.XID, 0, upd.ClientData().ReplyEcho())
}

// pki is a test certificate authority.
type pki struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	pool  *x509.CertPool
	pem   []byte
	count int64
}

func newCA(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pki{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate for ips usable as TLS client and server, and
// its PEM certificate and key.
func (p *pki) issue(t *testing.T, ips ...string) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.count++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.count + 1),
		Subject:      pkix.Name{CommonName: ips[0]},
		NotBefore:    time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM, keyPEM
}

// tlsFor returns secure-mode settings for a server with identity from
// issuer, trusting trust.
func tlsFor(t *testing.T, issuer, trust *pki, ip string) *TLSConfig {
	t.Helper()
	c, _, _ := issuer.issue(t, ip)
	return NewTLSConfig(c, trust.pool)
}
