package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
// COMMUNICATIONS-INTERRUPTED and still serves the primary's existing
// client: dhclient's Renews to the primary's Server ID go unanswered, at T2
// it Rebinds and the secondary extends the lease (lifetime capped by the
// MCLT), and the next Renew, now to the secondary, is answered the same
// way. After `tandem failover partner-down` the secondary serves new
// clients from its own (even) addresses; the primary restarts, recovers,
// and both return to NORMAL with the same bindings.
//
// The MCLT is 10 s here, so dhclient's first lease is 10 s long with T1 5 s
// and T2 8 s (RFC 8156 §4.4: the MCLT caps a lease the partner has not
// acknowledged; T1 and T2 scale with it), and the rebind comes within
// seconds of the kill.
func TestPairFailover(t *testing.T) {
	p := newPair(t)
	netns.RequireTool(t, "perfdhcp")
	netns.RequireTool(t, "dhclient")
	const mclt = 10 * time.Second
	for _, cfg := range []string{p.cfgA, p.cfgB} {
		editConfig(t, cfg, `mclt = "30s"`, fmt.Sprintf("mclt = %q", mclt.String()))
	}
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

	// dhclient gets a lease from the primary: capped at the MCLT (nothing
	// acknowledged yet), so it renews after mclt/2 and rebinds after 4/5 of it.
	priDUID, secDUID := p.a.status(t).ServerDUID, p.b.status(t).ServerDUID
	lf, stopClient := dhclient(t, p.cli, p.a.dir, false)
	var first dhcLease
	netns.WaitFor(t, 30*time.Second, "dhclient's lease from the primary", func() bool {
		ls := readDhcLeases(lf)
		if len(ls) == 0 {
			return false
		}
		first = ls[len(ls)-1]
		return true
	})
	if first.serverID != priDUID || first.maxLife != int(mclt/time.Second) || first.renew != first.maxLife/2 {
		t.Fatalf("dhclient's first lease %+v: want from the primary (%s), max-life %d (the MCLT), renew %d", first, priDUID, int(mclt/time.Second), int(mclt/time.Second)/2)
	}
	netns.WaitFor(t, 5*time.Second, "the client's binding acknowledged by the secondary", func() bool {
		l := findLease(p.b.leases(t), "na", first.addr)
		return l != nil && l.State == "ACTIVE" && failoverOf(t, p.a).Owed == 0
	})
	before[first.addr] = "" // not new in PARTNER-DOWN
	sc0 := p.b.status(t).Counters

	// Kill the primary before the client's T1.
	p.dA.kill()
	killed := time.Now()
	if time.Since(time.Unix(first.starts, 0)) >= time.Duration(first.renew)*time.Second {
		t.Fatalf("the primary died after the client's T1 (%ds): the client may have renewed with it", first.renew)
	}
	netns.WaitFor(t, 20*time.Second, "the secondary in COMMUNICATIONS-INTERRUPTED", func() bool {
		return failoverOf(t, p.b).State == "COMMUNICATIONS-INTERRUPTED"
	})

	// The client's Renew names the primary: the secondary drops it. At T2 the
	// client Rebinds; the secondary answers, capped at the MCLT (it holds no
	// acknowledged partner lifetime for the lease).
	var rebound dhcLease
	netns.WaitFor(t, 30*time.Second, "the client's lease extended by the secondary", func() bool {
		for _, l := range readDhcLeases(lf) {
			if l.serverID == secDUID && l.addr == first.addr {
				rebound = l
				return true
			}
		}
		return false
	})
	sc1 := p.b.status(t).Counters
	if sc1["pkt6-renew-received"] == sc0["pkt6-renew-received"] || sc1["pkt6-rebind-received"] == sc0["pkt6-rebind-received"] {
		t.Errorf("secondary counters before/after: renew %d/%d, rebind %d/%d: want the client's Renew (dropped) and then Rebind",
			sc0["pkt6-renew-received"], sc1["pkt6-renew-received"], sc0["pkt6-rebind-received"], sc1["pkt6-rebind-received"])
	}
	if sc1["pkt6-receive-drop"] == sc0["pkt6-receive-drop"] {
		t.Errorf("the secondary dropped nothing: the Renew to the primary's Server ID was answered")
	}
	if rebound.maxLife <= 0 || rebound.maxLife > int(mclt/time.Second) || rebound.starts < killed.Unix()-1 {
		t.Errorf("lease from the secondary %+v: want max-life at most the MCLT %v, started after the kill", rebound, mclt)
	}
	if st := failoverOf(t, p.b).State; st != "COMMUNICATIONS-INTERRUPTED" {
		t.Fatalf("secondary in %s when it rebound the client, want COMMUNICATIONS-INTERRUPTED", st)
	}
	lb := findLease(p.b.leases(t), "na", first.addr)
	if lb == nil || lb.State != "ACTIVE" || lb.ValidLifetime == 0 || lb.ValidLifetime > uint32(mclt/time.Second) || !lb.Owed {
		t.Errorf("secondary's binding of %s: %+v; want ACTIVE, valid lifetime at most the MCLT, an update owed to the primary", first.addr, lb)
	}
	// The next Renew carries the secondary's Server ID: answered, capped.
	netns.WaitFor(t, 30*time.Second, "the client's Renew answered by the secondary", func() bool {
		for _, l := range readDhcLeases(lf) {
			if l.serverID == secDUID && l.addr == first.addr && l.starts > rebound.starts {
				rebound = l
				return true
			}
		}
		return false
	})
	if rebound.maxLife > int(mclt/time.Second) {
		t.Errorf("renewal from the secondary %+v: max-life above the MCLT %v", rebound, mclt)
	}
	t.Logf("dhclient: %s from the primary (max-life %ds, T1 %ds); after the kill, from the secondary in COMMUNICATIONS-INTERRUPTED: max-life %ds",
		first.addr, first.maxLife, first.renew, rebound.maxLife)
	stopClient()

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

// editConfig replaces old (which must be there) by new in a config file.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dhcLease is one IA_NA lease in a dhclient -6 lease file.
type dhcLease struct {
	addr          string
	serverID      string // lowercase hex, as `tandem status` shows a DUID
	starts        int64  // Unix seconds, the iaaddr's
	renew, rebind int    // T1, T2 (s)
	prefLife      int
	maxLife       int
}

var (
	reLease6   = regexp.MustCompile(`(?s)lease6 \{(.*?)\n\}`)
	reServerID = regexp.MustCompile(`option dhcp6\.server-id ([0-9a-fA-F:]+);`)
	reIANA     = regexp.MustCompile(`(?s)ia-na [0-9a-f:]+ \{\s*starts \d+;\s*renew (\d+);\s*rebind (\d+);`)
	reIAAddrLT = regexp.MustCompile(`(?s)iaaddr (\S+) \{\s*starts (\d+);\s*preferred-life (\d+);\s*max-life (\d+);`)
)

// readDhcLeases parses the lease6 blocks of a dhclient lease file, oldest
// first (dhclient appends each new binding).
func readDhcLeases(path string) []dhcLease {
	b, _ := os.ReadFile(path)
	var out []dhcLease
	for _, m := range reLease6.FindAllSubmatch(b, -1) {
		blk := m[1]
		var l dhcLease
		if a := reIAAddrLT.FindSubmatch(blk); a != nil {
			l.addr = string(a[1])
			l.starts, _ = strconv.ParseInt(string(a[2]), 10, 64)
			l.prefLife, _ = strconv.Atoi(string(a[3]))
			l.maxLife, _ = strconv.Atoi(string(a[4]))
		} else {
			continue
		}
		if a := reIANA.FindSubmatch(blk); a != nil {
			l.renew, _ = strconv.Atoi(string(a[1]))
			l.rebind, _ = strconv.Atoi(string(a[2]))
		}
		if a := reServerID.FindSubmatch(blk); a != nil {
			var sb strings.Builder
			for _, part := range strings.Split(string(a[1]), ":") {
				v, _ := strconv.ParseUint(part, 16, 8)
				fmt.Fprintf(&sb, "%02x", v)
			}
			l.serverID = sb.String()
		}
		out = append(out, l)
	}
	return out
}
