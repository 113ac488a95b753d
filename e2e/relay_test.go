package e2e

import (
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/internal/netns"
)

var reRelayedAddr = regexp.MustCompile(`iaaddr (2001:db8:2::[0-9a-f:]+)`)

// TestRelayed: dhclient in a client namespace, ISC dhcrelay -6 in a relay
// namespace, tandem in the server namespace. The relayed client gets an
// address from the subnet that matches the relay's link-address, not from
// the server's own link.
func TestRelayed(t *testing.T) {
	netns.Require(t)
	netns.RequireTool(t, "dhcrelay")
	netns.RequireTool(t, "dhclient")
	srv, rel, cli := netns.New(t, "s"), netns.New(t, "r"), netns.New(t, "c")
	tp := &topo{srv: srv, cli: cli, dir: t.TempDir()}
	netns.Link(t, srv, srvIf, srvAddr, rel, "rup", "2001:db8:9::2/64")
	srv.MustRun("ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", srvIf, "nodad")
	netns.Link(t, rel, "rdown", "2001:db8:2::1/64", cli, cliIf, "")
	cfg := tp.config(t, `
[[subnet]]
prefix = "2001:db8:2::/64"
pools = ["2001:db8:2::100-2001:db8:2::1ff"]
preferred-lifetime = "40s"
valid-lifetime = "60s"
`)
	tp.start(t, cfg)

	relay := rel.Command("dhcrelay", "-6", "-d", "--no-pid", "-l", "rdown", "-u", "2001:db8:9::1%rup")
	relayOut := &syncBuffer{}
	relay.Stdout, relay.Stderr = relayOut, relayOut
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = relay.Process.Kill(); _ = relay.Wait() }()

	lf, _ := dhclient(t, cli, tp.dir, false)
	var addr string
	netns.WaitFor(t, 30*time.Second, "a relayed lease from 2001:db8:2::/64", func() bool {
		b, _ := os.ReadFile(lf)
		if m := reRelayedAddr.FindSubmatch(b); m != nil {
			addr = string(m[1])
		}
		return addr != ""
	})
	l := findLease(tp.leases(t), "na", addr)
	if l == nil || l.State != "ACTIVE" {
		t.Fatalf("relayed lease %s not ACTIVE in the server", addr)
	}
	if t.Failed() {
		t.Logf("dhcrelay:\n%s", relayOut.String())
	}
}
