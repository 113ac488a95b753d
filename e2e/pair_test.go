package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/control"
	"github.com/tandem-dhcp/tandem/internal/netns"
)

// pair is two tandem servers and a client namespace on one bridged link.
type pair struct {
	a, b    *topo // a: primary, b: secondary; each with its own dir and socket
	bridge  *netns.NS
	cli     *netns.NS
	cfgA    string
	cfgB    string
	dA, dB  *daemon
	sharedT *testing.T
}

func pairConfig(t *testing.T, dir, role, local, peer string) string {
	cfg := fmt.Sprintf(`data-dir = %q
control-socket = %q

[log]
level = "info"
format = "json"

[dhcp]
interfaces = ["srv0"]

[[subnet]]
prefix = "2001:db8:1::/64"
interface = "srv0"
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
preferred-lifetime = "40s"
valid-lifetime = "60s"
renew-time = "20s"
rebind-time = "30s"

[failover]
relationship = "pair-a"
role = %q
local = %q
peer = %q
mclt = "30s"
keepalive-time = "3s"
connect-retry-max = "2s"
`, filepath.Join(dir, "data"), filepath.Join(dir, "tandem.sock"), role, local, peer)
	p := filepath.Join(dir, "tandem.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newPair(t *testing.T) *pair {
	netns.Require(t)
	p := &pair{bridge: netns.New(t, "b"), cli: netns.New(t, "c")}
	p.bridge.Bridge("br0")
	mk := func(name, addr string) *topo {
		tp := &topo{srv: netns.New(t, name), cli: p.cli, dir: t.TempDir()}
		netns.Link(t, tp.srv, srvIf, addr, p.bridge, "p"+name, "")
		p.bridge.Attach("p"+name, "br0")
		return tp
	}
	p.a = mk("a", "2001:db8:1::1/64")
	p.b = mk("s", "2001:db8:1::2/64")
	netns.Link(t, p.cli, cliIf, "", p.bridge, "pc", "")
	p.bridge.Attach("pc", "br0")
	p.cfgA = pairConfig(t, p.a.dir, "primary", "[2001:db8:1::1]:647", "[2001:db8:1::2]:647")
	p.cfgB = pairConfig(t, p.b.dir, "secondary", "[2001:db8:1::2]:647", "[2001:db8:1::1]:647")
	return p
}

type failoverStatus struct {
	Role         string `json:"role"`
	State        string `json:"state"`
	PartnerState string `json:"partner_state"`
	Owed         int    `json:"owed_updates"`
	Unacked      int    `json:"unacked_updates"`
}

func failoverOf(t *testing.T, tp *topo) failoverStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := control.NewClient(tp.socket()).Status(ctx)
	if err != nil {
		return failoverStatus{}
	}
	var fs failoverStatus
	b, _ := json.Marshal(st.Failover)
	_ = json.Unmarshal(b, &fs)
	return fs
}

func waitStates(t *testing.T, p *pair, wantA, wantB string, timeout time.Duration) {
	t.Helper()
	var a, b failoverStatus
	defer func() {
		if t.Failed() {
			t.Logf("primary %+v, secondary %+v; wanted %s / %s", a, b, wantA, wantB)
		}
	}()
	netns.WaitFor(t, timeout, "failover states "+wantA+" / "+wantB, func() bool {
		a, b = failoverOf(t, p.a), failoverOf(t, p.b)
		return a.State == wantA && b.State == wantB
	})
}

// TestPairNormalAndReplication: two fresh servers form a pair and reach
// NORMAL; dhclient gets its lease from the primary, and the secondary's
// lease list shows the same binding within seconds.
func TestPairNormalAndReplication(t *testing.T) {
	p := newPair(t)
	netns.RequireTool(t, "dhclient")
	p.dA = p.a.start(t, p.cfgA)
	p.dB = p.b.start(t, p.cfgB)
	waitStates(t, p, "NORMAL", "NORMAL", 90*time.Second)

	lf := filepath.Join(p.a.dir, "dhclient.leases")
	cl := p.cli.Command("dhclient", "-6", "-d", "-v", "-N", "-lf", lf, "-pf", filepath.Join(p.a.dir, "dhclient.pid"), "-sf", "/bin/true", cliIf)
	clOut := &syncBuffer{}
	cl.Stdout, cl.Stderr = clOut, clOut
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Process.Kill(); _ = cl.Wait() }()
	var addr string
	netns.WaitFor(t, 30*time.Second, "a lease from the pair", func() bool {
		b, _ := os.ReadFile(lf)
		if m := reIAAddr.FindSubmatch(b); m != nil {
			addr = string(m[1])
		}
		return addr != ""
	})
	la := findLease(p.a.leases(t), "na", addr)
	if la == nil || la.State != "ACTIVE" {
		t.Fatalf("primary does not hold the client's lease %s", addr)
	}
	netns.WaitFor(t, 15*time.Second, "the binding on the secondary", func() bool {
		lb := findLease(p.b.leases(t), "na", addr)
		return lb != nil && lb.State == "ACTIVE" && lb.DUID == la.DUID
	})
	// The primary allocates odd addresses (RFC 8156 §4.2.1: bit 127 = 1).
	if last := addr[len(addr)-1]; (last-'0')%2 == 0 && last <= '9' || last == 'a' || last == 'c' || last == 'e' {
		t.Errorf("primary allocated an even address %s", addr)
	}
	netns.WaitFor(t, 15*time.Second, "the update acknowledged", func() bool { return failoverOf(t, p.a).Owed == 0 })
	lb := findLease(p.b.leases(t), "na", addr)
	t.Logf("primary %+v, secondary %+v; lease %s valid %ds on the primary, on the secondary %s expiration_time %s",
		failoverOf(t, p.a), failoverOf(t, p.b), addr, la.ValidLifetime, lb.State, lb.ExpirationTime)
}
