package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/internal/netns"
)

var (
	reIAAddr   = regexp.MustCompile(`iaaddr (2001:db8:1::[0-9a-f:]+)`)
	reIAPrefix = regexp.MustCompile(`iaprefix (2001:db8:8[0-9a-f:]*/56)`)
)

// TestDhclient: ISC dhclient -6 gets an address and a prefix in one
// exchange, renews them at T1, and releases them.
func TestDhclient(t *testing.T) {
	tp := newTopo(t)
	netns.RequireTool(t, "dhclient")
	d := tp.start(t, tp.config(t, ""))
	_ = d
	lf, stop := dhclient(t, tp.cli, tp.dir, true)
	var addr, prefix string
	netns.WaitFor(t, 30*time.Second, "dhclient lease with iaaddr and iaprefix", func() bool {
		b, _ := os.ReadFile(lf)
		if m := reIAAddr.FindSubmatch(b); m != nil {
			addr = string(m[1])
		}
		if m := reIAPrefix.FindSubmatch(b); m != nil {
			prefix = string(m[1])
		}
		return addr != "" && prefix != ""
	})
	ls := tp.leases(t)
	na := findLease(ls, "na", addr)
	pd := findLease(ls, "pd", prefix)
	if na == nil || na.State != "ACTIVE" || pd == nil || pd.State != "ACTIVE" {
		t.Fatalf("lease list does not show the client's leases ACTIVE: addr %s prefix %s\n%+v", addr, prefix, ls)
	}
	if na.DUID != pd.DUID || na.DUID == "" {
		t.Fatalf("address and prefix bound to different DUIDs: %q %q", na.DUID, pd.DUID)
	}
	firstCLTT := na.CLTT

	// T1 is 4s: dhclient renews by itself.
	netns.WaitFor(t, 30*time.Second, "a Renew from dhclient", func() bool {
		return tp.status(t).Counters["pkt6-renew-received"] > 0
	})
	netns.WaitFor(t, 10*time.Second, "the renewal recorded", func() bool {
		l := findLease(tp.leases(t), "na", addr)
		return l != nil && l.State == "ACTIVE" && l.CLTT != firstCLTT
	})

	// Release: dhclient -r stops the running client and sends Release.
	stop()
	rel := tp.cli.Command("dhclient", "-6", "-r", "-v", "-N", "-P", "-lf", lf, "-pf", filepath.Join(tp.dir, "rel.pid"), "-sf", "/bin/true", cliIf)
	if out, err := rel.CombinedOutput(); err != nil {
		t.Fatalf("dhclient -r: %v\n%s", err, out)
	}
	netns.WaitFor(t, 10*time.Second, "leases released", func() bool {
		ls := tp.leases(t)
		na, pd := findLease(ls, "na", addr), findLease(ls, "pd", prefix)
		return na != nil && na.State == "FREE" && pd != nil && pd.State == "FREE"
	})
}

// TestDhcpcd: dhcpcd 9 gets an address and a prefix.
func TestDhcpcd(t *testing.T) {
	tp := newTopo(t)
	netns.RequireTool(t, "dhcpcd")
	tp.start(t, tp.config(t, ""))
	conf := filepath.Join(tp.dir, "dhcpcd.conf")
	if err := os.WriteFile(conf, []byte("ipv6only\nnoipv6rs\nduid\nnohook resolv.conf\nnooption domain_name_servers\nia_na 1\nia_pd 2 -\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// ip netns exec gives the command its own mount namespace: the tmpfs
	// mounts keep dhcpcd's state and pid files away from the host's.
	script := fmt.Sprintf("mkdir -p /var/lib/dhcpcd /run/dhcpcd && mount -t tmpfs tmpfs /var/lib/dhcpcd && mount -t tmpfs tmpfs /run/dhcpcd && exec dhcpcd -f %s -6 -1 -d -B -t 20 %s", conf, cliIf)
	out, err := tp.cli.Run("sh", "-c", script)
	if err != nil {
		t.Fatalf("dhcpcd: %v\n%s", err, out)
	}
	ls := tp.leases(t)
	na := findLease(ls, "na", "2001:db8:1::")
	pd := findLease(ls, "pd", "2001:db8:8")
	if na == nil || na.State != "ACTIVE" || pd == nil || pd.State != "ACTIVE" {
		t.Fatalf("dhcpcd did not get an address and a prefix:\n%s\nleases: %+v", out, ls)
	}
	if !strings.Contains(out, na.Address) {
		t.Errorf("dhcpcd output does not mention its address %s:\n%s", na.Address, out)
	}
}

var rePerfSent = regexp.MustCompile(`(?s)Statistics for: REQUEST-REPLY.*?sent packets: (\d+).*?received packets: (\d+).*?drops: (\d+)`)

// perfdhcp runs `perfdhcp -6` in the client namespace and returns its report.
func perfdhcp(t *testing.T, tp *topo, args ...string) (string, error) {
	netns.RequireTool(t, "perfdhcp")
	full := append([]string{"-6", "-l", cliIf}, args...)
	cmd := tp.cli.Command("perfdhcp", full...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPerfdhcpNoDrops: a few seconds of 4-message exchanges at a modest rate
// with no lost exchange, and every lease in the database.
func TestPerfdhcpNoDrops(t *testing.T) {
	tp := newTopo(t)
	tp.start(t, tp.config(t, ""))
	// -W: after the last Solicit, wait 2 s for the answers still in flight
	// (otherwise the exchange cut off by the end of the run counts as a
	// drop); -d 3: a race-instrumented server on a loaded CI machine may take
	// more than perfdhcp's default 1 s now and then.
	out, err := perfdhcp(t, tp, "-r", "200", "-R", "2000", "-p", "4", "-W", "2000000", "-d", "3")
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 3) {
		t.Fatalf("perfdhcp: %v\n%s", err, out)
	}
	m := rePerfSent.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no REQUEST-REPLY statistics in perfdhcp output:\n%s", out)
	}
	if m[3] != "0" || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("perfdhcp REQUEST-REPLY: sent %s received %s drops %s\n%s", m[1], m[2], m[3], out)
	}
	st := tp.status(t)
	if st.Counters["pkt6-reply-sent"] == 0 || st.Bindings["na/ACTIVE"] == 0 {
		t.Fatalf("status shows no replies or bindings: %+v", st)
	}
	t.Logf("perfdhcp: %s requests, %s replies, %s drops; %d active NA bindings", m[1], m[2], m[3], st.Bindings["na/ACTIVE"])
}
