package failover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/server"
)

// TestPairAdminChanges: an operator's add, delete and import on the
// primary (server.AdminPut/AdminDelete/AdminImport, what `tandem lease`
// calls) take the failover rules of a client transaction: the lifetime is
// capped by the MCLT, the partner's half of the pool is refused, a delete
// of an ACTIVE lease becomes a release, and every change reaches the
// secondary through BNDUPD.
func TestPairAdminChanges(t *testing.T) {
	p := upPair(t)
	ctx := context.Background()
	duid := "\x00\x03\x00\x01admin1"
	oddAddr, evenAddr := netip.MustParseAddr("2001:db8:1::1101"), netip.MustParseAddr("2001:db8:1::1102")
	want := 3 * time.Hour
	res, err := p.pri.srv.AdminPut(ctx, server.AdminChange{Resource: fsm.AddrResource(fsm.IANA, oddAddr), Create: true,
		DUID: &duid, IAID: new(uint32), Valid: &want, Note: "test add"})
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(res.Binding.ValidLifetime)*time.Second != testMCLT {
		t.Errorf("stored valid lifetime %ds, want the MCLT %v (nothing acknowledged yet)", res.Binding.ValidLifetime, testMCLT)
	}
	waitFor(t, "the added lease on the secondary", func() bool {
		b, ok := p.sec.get(oddAddr)
		return ok && b.Status == fsm.StatusActive && b.DUID == duid
	})
	_, err = p.pri.srv.AdminPut(ctx, server.AdminChange{Resource: fsm.AddrResource(fsm.IANA, evenAddr), Create: true, DUID: &duid, IAID: new(uint32)})
	if !errors.Is(err, server.ErrNotOurs) {
		t.Fatalf("add on the secondary's address: %v", err)
	}
	p.waitAcked()
	// 30 s later: a release within the ±5 s of the grant is rejected
	// as outdated by the conflict rules (failover/update/doc.go, decision 2),
	// for an operator as for a client (and before the 60 s lease runs out).
	p.advance(30 * time.Second)

	del, err := p.pri.srv.AdminDelete(ctx, fsm.AddrResource(fsm.IANA, oddAddr), false, "test delete")
	if err != nil || !del.Released {
		t.Fatalf("delete under failover: %+v, %v", del, err)
	}
	if !poll(5*time.Second, func() bool {
		b, ok := p.sec.get(oddAddr)
		return ok && b.Status != fsm.StatusActive
	}) {
		pb, _ := p.pri.get(oddAddr)
		sb, _ := p.sec.get(oddAddr)
		t.Fatalf("release not on the secondary:\nprimary %+v\nsecondary %+v", pb, sb)
	}
	waitFor(t, "the primary to free it once acknowledged", func() bool {
		b, ok := p.pri.get(oddAddr)
		return ok && b.Status == fsm.StatusFree && !b.Owed()
	})

	// Import: both halves of the pool (a table holds the partner's leases
	// too); every binding is owed and reaches the secondary.
	var bs []fsm.Binding
	now := p.clk.Now().Unix()
	for i := 0; i < 300; i++ {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1::2%03x", i))
		bs = append(bs, fsm.Binding{Resource: fsm.AddrResource(fsm.IANA, a), Status: fsm.StatusActive,
			DUID: fmt.Sprintf("\x00\x03\x00\x01imp%03d", i), IAID: 1, ValidLifetime: 600, PreferredLifetime: 300,
			CLTT: now, StartTimeOfState: now, StateExpirationTime: now + 600})
	}
	if _, err := p.pri.srv.AdminImport(ctx, bs, server.ImportOptions{BatchSize: 100}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every imported lease on the secondary", func() bool {
		for _, b := range bs {
			sb, ok := p.sec.get(b.Resource.Addr())
			if !ok || sb.Status != fsm.StatusActive || sb.DUID != b.DUID {
				return false
			}
		}
		return true
	})
	p.waitAcked()
}
