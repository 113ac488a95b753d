package server

import (
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// poolCounts sums Pools' Active and Abandoned by pool type.
func poolCounts(s *Server) (na, pd, abandoned int64) {
	for _, p := range s.Pools() {
		if p.Subnet != subnet1 {
			continue
		}
		if p.Type.String() == "pd" {
			pd += p.Active
		} else {
			na += p.Active
			abandoned += p.Abandoned
		}
	}
	return
}

// TestPoolStatusCounts: the per-pool ACTIVE and ABANDONED counts (the
// assigned-nas, assigned-pds and declined-addresses metrics) follow leases,
// declines and releases, and are rebuilt from the database on restart.
func TestPoolStatusCounts(t *testing.T) {
	h := newHarness(t)
	type netip6 struct {
		c *client
		a netip.Addr
	}
	var addrs []netip6
	for i := 0; i < 3; i++ {
		c := newClient(i)
		addrs = append(addrs, netip6{c, h.lease(c)})
	}
	pc := newClient(10)
	adv := h.exchange(pc.solicit(pc.pd()), dhcpv6.MessageTypeAdvertise)
	req, err := dhcpv6.NewRequestFromAdvertise(adv)
	if err != nil {
		t.Fatal(err)
	}
	h.exchange(req, dhcpv6.MessageTypeReply)
	if na, pd, ab := poolCounts(h.srv); na != 4 || pd != 1 || ab != 0 {
		t.Fatalf("after 4 addresses and a prefix: na %d pd %d abandoned %d", na, pd, ab)
	}
	d := addrs[0]
	h.exchange(d.c.msg(dhcpv6.MessageTypeDecline, h.sid(), d.c.ia(d.a)), dhcpv6.MessageTypeReply)
	r := addrs[1]
	h.exchange(r.c.msg(dhcpv6.MessageTypeRelease, h.sid(), r.c.ia(r.a)), dhcpv6.MessageTypeReply)
	if na, pd, ab := poolCounts(h.srv); na != 2 || pd != 1 || ab != 1 {
		t.Fatalf("after a decline and a release: na %d pd %d abandoned %d", na, pd, ab)
	}
	h.restart()
	if na, pd, ab := poolCounts(h.srv); na != 2 || pd != 1 || ab != 1 {
		t.Fatalf("after a restart: na %d pd %d abandoned %d", na, pd, ab)
	}
}
