// Package dhcptest is the DHCPv6 client simulator shared by the tests of
// every package (server, failover, and the simulations): a client identity
// (DUID, IAIDs), the messages such a client sends, and the parsing of what
// it gets back into plain values. It never touches the network: a test
// hands the encoded message to a server (server.Handle, a socket) itself.
//
// It is for tests only, but lives outside _test files so several packages
// can share it; nothing in the product imports it.
package dhcptest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// Client is one simulated DHCPv6 client: a DUID-LL, one IA_NA and one
// IA_PD identifier. The zero value is not usable: use New.
type Client struct {
	DUID   dhcpv6.DUID
	IAID   [4]byte // IA_NA
	PDIAID [4]byte // IA_PD
}

// New returns client number n (distinct n give distinct DUIDs and IAIDs).
func New(n int) *Client {
	hw := net.HardwareAddr{0x02, 0x00, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	c := &Client{DUID: &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: hw}}
	binary.BigEndian.PutUint32(c.IAID[:], uint32(n))
	binary.BigEndian.PutUint32(c.PDIAID[:], uint32(n)|1<<31)
	return c
}

// Key is the client's DUID as the raw string fsm bindings carry.
func (c *Client) Key() string { return string(c.DUID.ToBytes()) }

// IAIDNum is the IA_NA's IAID as a number (as fsm bindings carry it).
func (c *Client) IAIDNum() uint32 { return binary.BigEndian.Uint32(c.IAID[:]) }

// Msg builds a message of type t with the Client ID, Elapsed Time and opts.
func (c *Client) Msg(t dhcpv6.MessageType, opts ...dhcpv6.Option) *dhcpv6.Message {
	m, err := dhcpv6.NewMessage()
	if err != nil {
		panic(fmt.Sprintf("dhcptest: new message: %v", err)) // crypto/rand failed
	}
	m.MessageType = t
	m.AddOption(dhcpv6.OptClientID(c.DUID))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	for _, o := range opts {
		m.AddOption(o)
	}
	return m
}

// IANA is the client's IA_NA, asking for (or naming) addrs.
func (c *Client) IANA(addrs ...netip.Addr) *dhcpv6.OptIANA {
	o := &dhcpv6.OptIANA{IaId: c.IAID}
	for _, a := range addrs {
		o.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice())})
	}
	return o
}

// IAPD is the client's IA_PD, asking for (or naming) prefixes.
func (c *Client) IAPD(prefixes ...netip.Prefix) *dhcpv6.OptIAPD {
	o := &dhcpv6.OptIAPD{IaId: c.PDIAID}
	for _, p := range prefixes {
		o.Options.Add(&dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 128)}})
	}
	return o
}

// RapidCommit is the Rapid Commit option.
func RapidCommit() dhcpv6.Option { return &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit} }

// ServerID is the Server Identifier option for a server DUID in wire form.
func ServerID(duid []byte) (dhcpv6.Option, error) {
	d, err := dhcpv6.DUIDFromBytes(duid)
	if err != nil {
		return nil, fmt.Errorf("dhcptest: server DUID: %w", err)
	}
	return dhcpv6.OptServerID(d), nil
}

// Solicit asks for an address (and a prefix when pd); rapid adds Rapid Commit.
func (c *Client) Solicit(pd, rapid bool) *dhcpv6.Message {
	opts := []dhcpv6.Option{c.IANA()}
	if pd {
		opts = append(opts, c.IAPD())
	}
	if rapid {
		opts = append(opts, RapidCommit())
	}
	return c.Msg(dhcpv6.MessageTypeSolicit, opts...)
}

// Request builds the Request that follows adv.
func (c *Client) Request(adv *dhcpv6.Message) (*dhcpv6.Message, error) {
	return dhcpv6.NewRequestFromAdvertise(adv)
}

// Renew renews addr with the server whose Server ID is sid.
func (c *Client) Renew(sid dhcpv6.Option, addrs ...netip.Addr) *dhcpv6.Message {
	return c.Msg(dhcpv6.MessageTypeRenew, sid, c.IANA(addrs...))
}

// Rebind rebinds addrs with any server.
func (c *Client) Rebind(addrs ...netip.Addr) *dhcpv6.Message {
	return c.Msg(dhcpv6.MessageTypeRebind, c.IANA(addrs...))
}

// Release releases addrs held from the server whose Server ID is sid.
func (c *Client) Release(sid dhcpv6.Option, addrs ...netip.Addr) *dhcpv6.Message {
	return c.Msg(dhcpv6.MessageTypeRelease, sid, c.IANA(addrs...))
}

// Decline declines addrs given by the server whose Server ID is sid.
func (c *Client) Decline(sid dhcpv6.Option, addrs ...netip.Addr) *dhcpv6.Message {
	return c.Msg(dhcpv6.MessageTypeDecline, sid, c.IANA(addrs...))
}

// Confirm asks whether addrs are still on link.
func (c *Client) Confirm(addrs ...netip.Addr) *dhcpv6.Message {
	return c.Msg(dhcpv6.MessageTypeConfirm, c.IANA(addrs...))
}

// Lease is what one reply gave a client in its IA_NA and IA_PD.
type Lease struct {
	Type     dhcpv6.MessageType
	ServerID []byte
	// Addr is the address with a non-zero valid lifetime (invalid: none).
	Addr        netip.Addr
	Valid, Pref time.Duration
	T1, T2      time.Duration
	// Prefix is the delegated prefix with a non-zero valid lifetime.
	Prefix            netip.Prefix
	PDValid, PDPref   time.Duration
	Status, PDStatus  int // the IA's status code, -1 when absent
	TopStatus         int // the message's status code, -1 when absent
	RapidCommitted    bool
	AddressesReturned int // IA Address options in the IA_NA, any lifetime
}

// Parse decodes a reply to a *dhcpv6.Message (not a relay message).
func Parse(b []byte) (*dhcpv6.Message, error) {
	p, err := dhcpv6.FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("dhcptest: reply does not parse: %w", err)
	}
	m, ok := p.(*dhcpv6.Message)
	if !ok {
		return nil, fmt.Errorf("dhcptest: reply is a %v, not a client message", p.Type())
	}
	return m, nil
}

// LeaseOf extracts c's lease from reply r.
func (c *Client) LeaseOf(r *dhcpv6.Message) Lease {
	l := Lease{Type: r.MessageType, Status: -1, PDStatus: -1, TopStatus: -1}
	if sid := r.Options.ServerID(); sid != nil {
		l.ServerID = sid.ToBytes()
	}
	if sc, ok := r.Options.GetOne(dhcpv6.OptionStatusCode).(*dhcpv6.OptStatusCode); ok {
		l.TopStatus = int(sc.StatusCode)
	}
	l.RapidCommitted = r.GetOneOption(dhcpv6.OptionRapidCommit) != nil
	for _, ia := range r.Options.IANA() {
		if ia.IaId != c.IAID {
			continue
		}
		l.T1, l.T2 = ia.T1, ia.T2
		if sc, ok := ia.Options.GetOne(dhcpv6.OptionStatusCode).(*dhcpv6.OptStatusCode); ok {
			l.Status = int(sc.StatusCode)
		}
		for _, a := range ia.Options.Addresses() {
			l.AddressesReturned++
			if a.ValidLifetime > 0 {
				l.Addr, _ = netip.AddrFromSlice(a.IPv6Addr)
				l.Valid, l.Pref = a.ValidLifetime, a.PreferredLifetime
			}
		}
	}
	for _, ia := range r.Options.IAPD() {
		if ia.IaId != c.PDIAID {
			continue
		}
		if sc, ok := ia.Options.GetOne(dhcpv6.OptionStatusCode).(*dhcpv6.OptStatusCode); ok {
			l.PDStatus = int(sc.StatusCode)
		}
		for _, p := range ia.Options.Prefixes() {
			if p.ValidLifetime > 0 && p.Prefix != nil {
				a, _ := netip.AddrFromSlice(p.Prefix.IP.To16())
				ones, _ := p.Prefix.Mask.Size()
				l.Prefix = netip.PrefixFrom(a, ones)
				l.PDValid, l.PDPref = p.ValidLifetime, p.PreferredLifetime
			}
		}
	}
	return l
}
