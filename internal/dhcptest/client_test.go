package dhcptest

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

func TestClientsDistinct(t *testing.T) {
	a, b := New(1), New(2)
	if a.Key() == b.Key() || a.IAID == b.IAID || a.IAID == a.PDIAID {
		t.Errorf("clients 1 and 2 share identifiers: %x %x", a.Key(), b.Key())
	}
	if New(7).IAIDNum() != 7 {
		t.Errorf("IAIDNum %d", New(7).IAIDNum())
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	c := New(3)
	addr := netip.MustParseAddr("2001:db8::5")
	sid, err := ServerID((&dhcpv6.DUIDLL{HWType: 1, LinkLayerAddr: net.HardwareAddr{1, 2, 3, 4, 5, 6}}).ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*dhcpv6.Message{c.Solicit(true, true), c.Renew(sid, addr), c.Rebind(addr), c.Release(sid, addr), c.Decline(sid, addr), c.Confirm(addr)} {
		back, err := Parse(m.ToBytes())
		if err != nil {
			t.Fatalf("%v: %v", m.MessageType, err)
		}
		if back.MessageType != m.MessageType || back.Options.ClientID() == nil || string(back.Options.ClientID().ToBytes()) != c.Key() {
			t.Errorf("%v did not round-trip", m.MessageType)
		}
	}
	if s := c.Solicit(true, true); s.GetOneOption(dhcpv6.OptionRapidCommit) == nil || len(s.Options.IAPD()) != 1 {
		t.Errorf("rapid PD solicit lacks options: %v", s)
	}
}

func TestLeaseOf(t *testing.T) {
	c := New(4)
	r, _ := dhcpv6.NewMessage()
	r.MessageType = dhcpv6.MessageTypeReply
	addr := netip.MustParseAddr("2001:db8::7")
	ia := &dhcpv6.OptIANA{IaId: c.IAID, T1: time.Hour, T2: 2 * time.Hour}
	ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(addr.AsSlice()), ValidLifetime: 3 * time.Hour, PreferredLifetime: 2 * time.Hour})
	pd := &dhcpv6.OptIAPD{IaId: c.PDIAID}
	pd.Options.Add(&dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.ParseIP("2001:db8:8000::"), Mask: net.CIDRMask(56, 128)}, ValidLifetime: time.Hour})
	other := &dhcpv6.OptIANA{IaId: [4]byte{9, 9, 9, 9}}
	other.Options.Add(&dhcpv6.OptStatusCode{StatusCode: 2})
	r.AddOption(ia)
	r.AddOption(pd)
	r.AddOption(other)
	back, err := Parse(r.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	l := c.LeaseOf(back)
	if l.Addr != addr || l.Valid != 3*time.Hour || l.Pref != 2*time.Hour || l.T1 != time.Hour || l.Status != -1 ||
		l.Prefix != netip.MustParsePrefix("2001:db8:8000::/56") || l.PDValid != time.Hour {
		t.Errorf("lease %+v", l)
	}
}
