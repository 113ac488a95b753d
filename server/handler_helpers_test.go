package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// storeOpenTimeout bounds raftstore.Open in tests.
const storeOpenTimeout = 30 * time.Second

// t0 is the fake clock's start (whole seconds, so Unix-second fields compare exactly).
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	prefLT  = 2 * time.Hour
	validLT = 3 * time.Hour
	t1Conf  = time.Hour
	t2Conf  = 96 * time.Minute
)

var (
	subnet1  = netip.MustParsePrefix("2001:db8:1::/64")
	subnet2  = netip.MustParsePrefix("2001:db8:2::/64")
	pool1    = AddressRange{addr("2001:db8:1::1000"), addr("2001:db8:1::1fff")}
	pool2    = AddressRange{addr("2001:db8:2::1000"), addr("2001:db8:2::1fff")}
	pdPrefix = netip.MustParsePrefix("2001:db8:8000::/40")
	dnsAddr  = addr("2001:db8::53")

	// linkInfo is a client on eth1 multicasting to All_DHCP_Relay_Agents_and_Servers.
	linkInfo = PacketInfo{IfIndex: 1, IfName: "eth1",
		Src: netip.AddrPortFrom(addr("fe80::1%eth1"), 546), Dst: addr("ff02::1:2")}
	// unicastInfo is the same client unicasting to one of our addresses.
	unicastInfo = PacketInfo{IfIndex: 1, IfName: "eth1",
		Src: netip.AddrPortFrom(addr("fe80::1%eth1"), 546), Dst: addr("2001:db8:1::53")}
)

// testConfig is the standard server: subnet1 on eth1 with an address pool
// and a /40 of /56s, subnet2 reachable through relays only.
func testConfig() Config {
	return Config{
		Subnets: []SubnetConfig{{
			Prefix: subnet1, Interface: "eth1",
			Pools:             []AddressRange{pool1},
			PDPools:           []PDPool{{Prefix: pdPrefix, DelegatedLength: 56}},
			PreferredLifetime: prefLT, ValidLifetime: validLT, RenewTime: t1Conf, RebindTime: t2Conf,
		}, {
			Prefix:            subnet2,
			Pools:             []AddressRange{pool2},
			PreferredLifetime: prefLT, ValidLifetime: validLT, RenewTime: t1Conf, RebindTime: t2Conf,
		}},
		DNSServers: []netip.Addr{dnsAddr},
	}
}

// harness is a server on a real raftstore in a temp dir, driven by a fake clock.
type harness struct {
	t     testing.TB
	dir   string
	clk   *clock.Fake
	cfg   Config
	store *raftstore.Store
	srv   *Server
}

func newHarness(t testing.TB, mods ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), clk: clock.NewFake(t0)}
	h.cfg = testConfig()
	for _, m := range mods {
		m(&h.cfg)
	}
	h.cfg.Clock = h.clk
	h.open()
	t.Cleanup(h.close)
	return h
}

func (h *harness) open() {
	h.t.Helper()
	// A generous OpenTimeout: leader election can be slow on a loaded CI
	// machine under -race, and a failed Open must not end the test.
	st, err := raftstore.Open(raftstore.Config{DataDir: h.dir, Clock: h.clk, OpenTimeout: storeOpenTimeout})
	if err != nil {
		h.t.Fatalf("raftstore.Open: %v", err)
	}
	srv, err := New(h.cfg, st)
	if err != nil {
		st.Close()
		h.t.Fatalf("server.New: %v", err)
	}
	h.store, h.srv = st, srv
}

func (h *harness) close() {
	if h.srv != nil {
		h.srv.Close()
		h.srv = nil
	}
	if h.store != nil {
		if err := h.store.Close(); err != nil {
			h.t.Errorf("store.Close: %v", err)
		}
		h.store = nil
	}
}

// restart closes the server and the store and opens both again on the same data dir.
func (h *harness) restart() {
	h.t.Helper()
	h.close()
	h.open()
}

func (h *harness) state() *fsm.State { return h.store.State() }

func (h *harness) get(r fsm.Resource) (fsm.Binding, bool) { return h.state().Get(r) }

func (h *harness) bindings() int { return h.state().Stats().Bindings }

func (h *harness) dump() string {
	var b strings.Builder
	h.state().View().Dump(&b)
	return b.String()
}

func (h *harness) metric(name string) uint64 { return h.srv.Metrics().Get(name) }

// handle sends raw bytes and parses whatever comes back.
func (h *harness) handle(b []byte, info PacketInfo) (dhcpv6.DHCPv6, netip.AddrPort, error) {
	out, dst, err := h.srv.Handle(b, info)
	if err != nil {
		if out != nil {
			return nil, dst, fmt.Errorf("reply bytes returned together with error %w", err)
		}
		return nil, dst, err
	}
	p, perr := dhcpv6.FromBytes(out)
	if perr != nil {
		return nil, dst, fmt.Errorf("reply does not parse: %v (% x)", perr, out)
	}
	return p, dst, nil
}

// try sends m from info and checks the basics of the reply (RFC 8415 §18.3):
// sent back to the sender, same transaction ID, our Server ID, the client's
// Client ID echoed. It returns an error instead of failing, for goroutines.
func (h *harness) try(m *dhcpv6.Message, info PacketInfo) (*dhcpv6.Message, error) {
	p, dst, err := h.handle(m.ToBytes(), info)
	if err != nil {
		return nil, err
	}
	if dst != info.Src {
		return nil, fmt.Errorf("reply goes to %v, want the sender %v", dst, info.Src)
	}
	r, ok := p.(*dhcpv6.Message)
	if !ok {
		return nil, fmt.Errorf("reply is a %v, want a client message", p.Type())
	}
	if err := checkReplyIDs(h.srv, m, r); err != nil {
		return nil, err
	}
	return r, nil
}

func checkReplyIDs(srv *Server, m, r *dhcpv6.Message) error {
	if r.TransactionID != m.TransactionID {
		return fmt.Errorf("reply xid %v, want %v", r.TransactionID, m.TransactionID)
	}
	sid := r.Options.ServerID()
	if sid == nil || !bytes.Equal(sid.ToBytes(), srv.DUID()) {
		return fmt.Errorf("reply Server ID %v, want our DUID %x", sid, srv.DUID())
	}
	if len(r.Options.Get(dhcpv6.OptionServerID)) != 1 {
		return errors.New("reply has more than one Server ID")
	}
	cid, rcid := m.Options.ClientID(), r.Options.ClientID()
	switch {
	case cid == nil && rcid != nil:
		return errors.New("reply has a Client ID, the message had none")
	case cid != nil && (rcid == nil || !bytes.Equal(cid.ToBytes(), rcid.ToBytes())):
		return fmt.Errorf("reply Client ID %v, want %v", rcid, cid)
	}
	return nil
}

// exchange sends m directly from the client on eth1 and wants a reply of type want.
func (h *harness) exchange(m *dhcpv6.Message, want dhcpv6.MessageType) *dhcpv6.Message {
	h.t.Helper()
	return h.exchangeFrom(m, linkInfo, want)
}

func (h *harness) exchangeFrom(m *dhcpv6.Message, info PacketInfo, want dhcpv6.MessageType) *dhcpv6.Message {
	h.t.Helper()
	r, err := h.try(m, info)
	if err != nil {
		h.t.Fatalf("%v: %v", m.MessageType, err)
	}
	if r.MessageType != want {
		h.t.Fatalf("%v answered with %v, want %v", m.MessageType, r.MessageType, want)
	}
	return r
}

// expectDrop sends m and wants it deliberately unanswered, with nothing committed.
func (h *harness) expectDrop(m dhcpv6.DHCPv6, info PacketInfo) {
	h.t.Helper()
	before, drops := h.dump(), h.metric("pkt6-receive-drop")
	p, _, err := h.handle(m.ToBytes(), info)
	if !errors.Is(err, ErrDropped) {
		h.t.Fatalf("%v: got reply %v, err %v; want ErrDropped", m.Type(), p, err)
	}
	if got := h.metric("pkt6-receive-drop"); got != drops+1 {
		h.t.Errorf("%v: pkt6-receive-drop went %d -> %d, want +1", m.Type(), drops, got)
	}
	if after := h.dump(); after != before {
		h.t.Fatalf("%v: dropped message changed the database:\nbefore %s\nafter  %s", m.Type(), before, after)
	}
}

// client is a DHCPv6 client identity with one IA_NA and one IA_PD IAID.
type client struct {
	duid       dhcpv6.DUID
	iaid, pdid [4]byte
}

func newClient(n int) *client {
	hw := net.HardwareAddr{0x02, 0x00, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	return &client{duid: &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: hw},
		iaid: [4]byte{0, 0, byte(n >> 8), byte(n)}, pdid: [4]byte{0xd0, 0, byte(n >> 8), byte(n)}}
}

func (c *client) key() string { return string(c.duid.ToBytes()) }

func (c *client) iaidNum() uint32 { return iaidOf(c.iaid) }

// msg builds a message of type t with this client's Client ID, an Elapsed
// Time and opts.
func (c *client) msg(t dhcpv6.MessageType, opts ...dhcpv6.Option) *dhcpv6.Message {
	m, err := dhcpv6.NewMessage()
	if err != nil {
		panic(err)
	}
	m.MessageType = t
	m.AddOption(dhcpv6.OptClientID(c.duid))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	for _, o := range opts {
		m.AddOption(o)
	}
	return m
}

// ia is an IA_NA with this client's IAID holding addrs (lifetimes 0, as clients send).
func (c *client) ia(addrs ...netip.Addr) *dhcpv6.OptIANA {
	return iaNA(c.iaid, addrs...)
}

func iaNA(id [4]byte, addrs ...netip.Addr) *dhcpv6.OptIANA {
	o := &dhcpv6.OptIANA{IaId: id}
	for _, a := range addrs {
		o.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice())})
	}
	return o
}

// pd is an IA_PD with this client's PD IAID holding prefixes.
func (c *client) pd(prefixes ...netip.Prefix) *dhcpv6.OptIAPD {
	o := &dhcpv6.OptIAPD{IaId: c.pdid}
	for _, p := range prefixes {
		o.Options.Add(&dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 128)}})
	}
	return o
}

func (c *client) solicit(opts ...dhcpv6.Option) *dhcpv6.Message {
	return c.msg(dhcpv6.MessageTypeSolicit, append([]dhcpv6.Option{c.ia()}, opts...)...)
}

// withSID returns opts with our Server ID prepended.
func (h *harness) sid() dhcpv6.Option {
	d, err := dhcpv6.DUIDFromBytes(h.srv.DUID())
	if err != nil {
		h.t.Fatalf("server DUID: %v", err)
	}
	return dhcpv6.OptServerID(d)
}

// otherSID is a Server ID that is not ours.
func otherSID() dhcpv6.Option {
	return dhcpv6.OptServerID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{0xee, 1, 2, 3, 4, 5}})
}

// lease runs Solicit/Advertise/Request/Reply for c's IA_NA and returns the address.
func (h *harness) lease(c *client) netip.Addr {
	h.t.Helper()
	adv := h.exchange(c.solicit(), dhcpv6.MessageTypeAdvertise)
	req, err := dhcpv6.NewRequestFromAdvertise(adv)
	if err != nil {
		h.t.Fatalf("NewRequestFromAdvertise: %v", err)
	}
	rep := h.exchange(req, dhcpv6.MessageTypeReply)
	return leasedAddr(h.t, rep, c.iaid)
}

// leasedAddr returns the one address with a non-zero lifetime in IA_NA iaid.
func leasedAddr(t testing.TB, m *dhcpv6.Message, iaid [4]byte) netip.Addr {
	t.Helper()
	ia := findIANA(m, iaid)
	if ia == nil {
		t.Fatalf("%v has no IA_NA %x: %v", m.MessageType, iaid, m)
	}
	var out []netip.Addr
	for _, a := range ia.Options.Addresses() {
		if a.ValidLifetime > 0 {
			x, _ := netip.AddrFromSlice(a.IPv6Addr)
			out = append(out, x)
		}
	}
	if len(out) != 1 {
		t.Fatalf("IA_NA %x holds %d live addresses, want 1: %v", iaid, len(out), ia)
	}
	return out[0]
}

func findIANA(m *dhcpv6.Message, iaid [4]byte) *dhcpv6.OptIANA {
	for _, ia := range m.Options.IANA() {
		if ia.IaId == iaid {
			return ia
		}
	}
	return nil
}

func findIAPD(m *dhcpv6.Message, iaid [4]byte) *dhcpv6.OptIAPD {
	for _, ia := range m.Options.IAPD() {
		if ia.IaId == iaid {
			return ia
		}
	}
	return nil
}

// iaAddr finds address a in ia.
func iaAddr(ia *dhcpv6.OptIANA, a netip.Addr) *dhcpv6.OptIAAddress {
	for _, x := range ia.Options.Addresses() {
		if y, _ := netip.AddrFromSlice(x.IPv6Addr); y == a {
			return x
		}
	}
	return nil
}

func prefixOf(p *dhcpv6.OptIAPrefix) netip.Prefix {
	a, _ := netip.AddrFromSlice(p.Prefix.IP.To16())
	ones, _ := p.Prefix.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// status returns the status code in opts, or -1 when there is none.
func status(o interface {
	GetOne(dhcpv6.OptionCode) dhcpv6.Option
}) int {
	sc, ok := o.GetOne(dhcpv6.OptionStatusCode).(*dhcpv6.OptStatusCode)
	if !ok {
		return -1
	}
	return int(sc.StatusCode)
}

// relayForw wraps m in a Relay-Forw from a relay on link with an Interface-ID.
func relayForw(t testing.TB, m dhcpv6.DHCPv6, link, peer netip.Addr, ifID string) *dhcpv6.RelayMessage {
	t.Helper()
	r, err := dhcpv6.EncapsulateRelay(m, dhcpv6.MessageTypeRelayForward, net.IP(link.AsSlice()), net.IP(peer.AsSlice()))
	if err != nil {
		t.Fatalf("EncapsulateRelay: %v", err)
	}
	if ifID != "" {
		r.AddOption(dhcpv6.OptInterfaceID([]byte(ifID)))
	}
	return r
}

// unwrapReply checks that p is a Relay-Repl chain mirroring the Relay-Forw
// chain fw (hop counts, addresses, Interface-ID) and returns the message inside.
func unwrapReply(t testing.TB, p dhcpv6.DHCPv6, fw *dhcpv6.RelayMessage) *dhcpv6.Message {
	t.Helper()
	var in dhcpv6.DHCPv6 = fw
	for depth := 0; in.IsRelay(); depth++ {
		f := in.(*dhcpv6.RelayMessage)
		r, ok := p.(*dhcpv6.RelayMessage)
		if !ok || r.MessageType != dhcpv6.MessageTypeRelayReply {
			t.Fatalf("depth %d: got %v, want Relay-Repl", depth, p.Type())
		}
		if r.HopCount != f.HopCount || !r.LinkAddr.Equal(f.LinkAddr) || !r.PeerAddr.Equal(f.PeerAddr) {
			t.Fatalf("depth %d: Relay-Repl hop %d link %v peer %v; Relay-Forw had hop %d link %v peer %v",
				depth, r.HopCount, r.LinkAddr, r.PeerAddr, f.HopCount, f.LinkAddr, f.PeerAddr)
		}
		if !bytes.Equal(r.Options.InterfaceID(), f.Options.InterfaceID()) {
			t.Fatalf("depth %d: Interface-ID %q, want %q", depth, r.Options.InterfaceID(), f.Options.InterfaceID())
		}
		p, in = r.Options.RelayMessage(), f.Options.RelayMessage()
		if p == nil {
			t.Fatalf("depth %d: Relay-Repl without a Relay Message option", depth)
		}
	}
	m, ok := p.(*dhcpv6.Message)
	if !ok {
		t.Fatalf("innermost reply is %v", p.Type())
	}
	return m
}

// inPool reports whether a is within the inclusive range r.
func inPool(a netip.Addr, r AddressRange) bool { return !a.Less(r.First) && !r.Last.Less(a) }

// poolOf returns the server's pool of resource r (after a restart it is a new one).
func (h *harness) poolOf(r fsm.Resource) *pool { return h.srv.pools.find(r) }

// unix is t0+d in Unix seconds.
func unix(d time.Duration) int64 { return t0.Add(d).Unix() }
