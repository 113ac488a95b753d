package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

	lf, _ := dhclient(t, p.cli, p.a.dir, false)
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

// TestPairFailover: kill the primary; the secondary goes to
// COMMUNICATIONS-INTERRUPTED and still renews its known client (lifetime
// capped by the MCLT); after `tandem failover partner-down` it serves new
// clients from its own (even) addresses; the primary restarts, recovers, and
// both return to NORMAL with the same bindings.
func TestPairFailover(t *testing.T) {
	p := newPair(t)
	netns.RequireTool(t, "perfdhcp")
	p.dA = p.a.start(t, p.cfgA)
	p.dB = p.b.start(t, p.cfgB)
	waitStates(t, p, "NORMAL", "NORMAL", 90*time.Second)

	if out, err := p.cli.Run("perfdhcp", "-6", "-l", cliIf, "-r", "50", "-R", "40", "-n", "40", "-p", "3"); err != nil && !isExit3(err) {
		t.Fatalf("perfdhcp: %v\n%s", err, out)
	}
	netns.WaitFor(t, 15*time.Second, "updates acknowledged", func() bool { return failoverOf(t, p.a).Owed == 0 })
	before := activeSet(p.a.leases(t))
	if len(before) == 0 {
		t.Fatal("no leases from the first load")
	}

	p.dA.kill()
	netns.WaitFor(t, 20*time.Second, "the secondary in COMMUNICATIONS-INTERRUPTED", func() bool {
		return failoverOf(t, p.b).State == "COMMUNICATIONS-INTERRUPTED"
	})

	out, err := exec.Command(tandemBin, "failover", "partner-down", "--socket", p.b.socket(), "--yes").CombinedOutput()
	if err != nil {
		t.Fatalf("tandem failover partner-down: %v\n%s", err, out)
	}
	waitStates(t, p, "", "PARTNER-DOWN", 10*time.Second)
	if out, err := p.cli.Run("perfdhcp", "-6", "-l", cliIf, "-r", "50", "-R", "20", "-n", "20", "-p", "3"); err != nil && !isExit3(err) {
		t.Fatalf("perfdhcp against the secondary: %v\n%s", err, out)
	}
	newOnB := 0
	for addr, l := range activeSet(p.b.leases(t)) {
		if _, old := before[addr]; old {
			continue
		}
		newOnB++
		if !evenAddr(addr) {
			t.Errorf("the secondary in PARTNER-DOWN allocated %s (odd: the primary's)", addr)
		}
		_ = l
	}
	if newOnB == 0 {
		t.Fatal("the secondary in PARTNER-DOWN served no new client")
	}

	p.dA = p.a.start(t, p.cfgA)
	waitStates(t, p, "NORMAL", "NORMAL", 120*time.Second)
	netns.WaitFor(t, 30*time.Second, "identical binding sets", func() bool {
		a, b := activeSet(p.a.leases(t)), activeSet(p.b.leases(t))
		if len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if b[k] != v {
				return false
			}
		}
		return true
	})
	for _, line := range strings.Split(p.dA.out.String(), "\n") {
		if strings.Contains(line, "failover state") {
			t.Log(line)
		}
	}
	t.Logf("%d leases before the failure, %d new ones from the secondary in PARTNER-DOWN; both NORMAL with the same %d bindings",
		len(before), newOnB, len(activeSet(p.a.leases(t))))
}

func isExit3(err error) bool {
	ee, ok := err.(*exec.ExitError)
	return ok && ee.ExitCode() == 3
}

// activeSet maps each ACTIVE address to its client's DUID.
func activeSet(ls []control.Lease) map[string]string {
	m := map[string]string{}
	for _, l := range ls {
		if l.State == "ACTIVE" {
			m[l.Address+l.Prefix] = l.DUID
		}
	}
	return m
}

func evenAddr(a string) bool {
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return false
	}
	return ip.As16()[15]&1 == 0
}
