package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `data-dir = "/var/lib/tandem"
control-socket = "/run/tandem/tandem.sock"

[dhcp]
interfaces = ["eth1"]
dns-servers = ["2001:db8:1::53"]

[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"                 # directly attached link; relayed clients match by link-address
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
pd-pools = [{ prefix = "2001:db8:8000::/40", delegated-length = 56 }]
preferred-lifetime = "2h"
valid-lifetime = "3h"
`

func TestIssueExampleParses(t *testing.T) {
	c, err := Parse("tandem.toml", []byte(good))
	if err != nil {
		t.Fatalf("the documented example does not parse: %v", err)
	}
	s := c.Subnets[0]
	if s.ParsedPrefix.String() != "2001:db8:1::/64" || len(s.ParsedPools) != 1 || len(s.ParsedPDPools) != 1 {
		t.Fatalf("parsed subnet: %+v", s)
	}
	if s.ParsedPools[0].First.String() != "2001:db8:1::1000" || s.ParsedPools[0].Last.String() != "2001:db8:1::ffff" {
		t.Fatalf("pool range %+v", s.ParsedPools[0])
	}
	if s.PreferredLifetime.Duration != 2*time.Hour || s.ValidLifetime.Duration != 3*time.Hour {
		t.Fatalf("lifetimes %v %v", s.PreferredLifetime, s.ValidLifetime)
	}
	if s.RenewTime.Duration != time.Hour || s.RebindTime.Duration != 96*time.Minute {
		t.Fatalf("default T1/T2 %v %v, want 50%%/80%% of preferred", s.RenewTime, s.RebindTime)
	}
	if len(s.ParsedDNS) != 1 || !*c.DHCP.RapidCommit || c.DHCP.Workers != 256 {
		t.Fatalf("defaults: dns %v rapid %v workers %d", s.ParsedDNS, *c.DHCP.RapidCommit, c.DHCP.Workers)
	}
}

// each case: a change to the good config, and what the error must say.
func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, from, to string
		want           []string
	}{
		{"unknown top key", `data-dir = "/var/lib/tandem"`, "data-dir = \"/x\"\nbogus = 1", []string{"tandem.toml:2", "bogus", "unknown key"}},
		{"unknown dhcp key", `dns-servers = ["2001:db8:1::53"]`, "dns-servers = [\"2001:db8:1::53\"]\nworkerz = 3", []string{"tandem.toml:7", "dhcp.workerz", "unknown key"}},
		{"bad duration", `valid-lifetime = "3h"`, `valid-lifetime = "3x"`, []string{"tandem.toml:14", "valid-lifetime", "bad duration"}},
		{"wrong type", `interfaces = ["eth1"]`, `interfaces = "eth1"`, []string{"tandem.toml:5", "interfaces"}},
		{"bad prefix", `prefix = "2001:db8:1::/64"`, `prefix = "2001:db8:1::1/64"`, []string{"tandem.toml:9", "subnet[0].prefix", "host bits"}},
		{"pool outside subnet", `pools = ["2001:db8:1::1000-2001:db8:1::ffff"]`, `pools = ["2001:db8:2::1-2001:db8:2::9"]`, []string{"tandem.toml:11", "subnet[0].pools", "outside"}},
		{"reversed range", `pools = ["2001:db8:1::1000-2001:db8:1::ffff"]`, `pools = ["2001:db8:1::ffff-2001:db8:1::1000"]`, []string{"tandem.toml:11", "ends before it starts"}},
		{"bad pd length", `delegated-length = 56`, `delegated-length = 32`, []string{"tandem.toml:12", "subnet[0].pd-pools", "delegated-length 32"}},
		{"short lease", `valid-lifetime = "3h"`, `valid-lifetime = "10s"`, []string{"tandem.toml:14", "subnet[0].valid-lifetime", "30s"}},
		{"preferred > valid", `preferred-lifetime = "2h"`, `preferred-lifetime = "4h"`, []string{"tandem.toml:13", "subnet[0].preferred-lifetime"}},
		{"interface not listed", `interface = "eth1"                 #`, `interface = "eth9"                 #`, []string{"tandem.toml:10", "subnet[0].interface", "eth9"}},
		{"bad dns", `dns-servers = ["2001:db8:1::53"]`, `dns-servers = ["10.0.0.1"]`, []string{"tandem.toml:6", "dhcp.dns-servers", "10.0.0.1"}},
		{"syntax", `[dhcp]`, `[dhcp`, []string{"tandem.toml:4"}},
		{"negative duration", `preferred-lifetime = "2h"`, `preferred-lifetime = "-1h"`, []string{"tandem.toml:13", "negative duration"}},
		{"bad domain label", `dns-servers = ["2001:db8:1::53"]`, "dns-servers = [\"2001:db8:1::53\"]\ndomain-search = [\"" + strings.Repeat("a", 64) + ".example\"]", []string{"tandem.toml:7", "dhcp.domain-search", "63"}},
		{"bad rate", `dns-servers = ["2001:db8:1::53"]`, "dns-servers = [\"2001:db8:1::53\"]\nclient-rate-limit = \"20/sec\"", []string{"tandem.toml:7", "dhcp.client-rate-limit", "bad rate", "20/s"}},
		{"zero rate", `dns-servers = ["2001:db8:1::53"]`, "dns-servers = [\"2001:db8:1::53\"]\nrelay-rate-limit = \"0/s\"", []string{"tandem.toml:7", "dhcp.relay-rate-limit", "off"}},
		{"burst without rate", `dns-servers = ["2001:db8:1::53"]`, "dns-servers = [\"2001:db8:1::53\"]\nrelay-burst = 100", []string{"tandem.toml:7", "dhcp.relay-burst", "relay-rate-limit is off"}},
		{"negative burst", `dns-servers = ["2001:db8:1::53"]`, "dns-servers = [\"2001:db8:1::53\"]\nclient-burst = -1", []string{"tandem.toml:7", "dhcp.client-burst", "negative"}},
		{"rate limit entries", `dns-servers = ["2001:db8:1::53"]`, "dns-servers = [\"2001:db8:1::53\"]\nrate-limit-entries = -5", []string{"tandem.toml:7", "dhcp.rate-limit-entries"}},
		{"pd pool over a subnet", `{ prefix = "2001:db8:8000::/40", delegated-length = 56 }`, `{ prefix = "2001:db8::/32", delegated-length = 56 }`, []string{"subnet[0].pd-pools", "overlaps subnet[0] prefix"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(good, tc.from, tc.to, 1)
			if doc == good {
				t.Fatalf("test case does not change the document")
			}
			_, err := Parse("tandem.toml", []byte(doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error is not a *config.Error: %T", err)
			}
		})
	}
}

func TestOverlapsRefused(t *testing.T) {
	doc := good + `
[[subnet]]
prefix = "2001:db8:2::/64"
pools = ["2001:db8:2::/120"]
pd-pools = [{ prefix = "2001:db8:8000::/44", delegated-length = 60 }]
`
	_, err := Parse("t.toml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "subnet[1].pd-pools[0]: overlaps subnet[0].pd-pools[0]") {
		t.Fatalf("overlapping PD pools: %v", err)
	}
	doc = good + `
[[subnet]]
prefix = "2001:db8:1::/48"
pools = ["2001:db8:1:1::/120"]
`
	if _, err := Parse("t.toml", []byte(doc)); err == nil || !strings.Contains(err.Error(), "overlaps subnet[0]") {
		t.Fatalf("overlapping subnets: %v", err)
	}
}

func TestOneSubnetPerInterface(t *testing.T) {
	doc := good + `
[[subnet]]
prefix = "2001:db8:2::/64"
interface = "eth1"
pools = ["2001:db8:2::/120"]
`
	_, err := Parse("t.toml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "subnet[1].interface") || !strings.Contains(err.Error(), "one subnet per interface") {
		t.Fatalf("two subnets on one interface: %v", err)
	}
}

func TestDomainSearchTrailingDot(t *testing.T) {
	c, err := Parse("t.toml", []byte(strings.Replace(good, `[dhcp]`, "[dhcp]\ndomain-search = [\"example.com.\"]", 1)))
	if err != nil || c.DHCP.DomainSearch[0] != "example.com" {
		t.Fatalf("trailing dot: %v %v", c, err)
	}
}

func TestPoolForms(t *testing.T) {
	for in, want := range map[string][2]string{
		"2001:db8::/64":             {"2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"},
		"2001:db8::5 - 2001:db8::9": {"2001:db8::5", "2001:db8::9"},
	} {
		r, err := parseRange(in)
		if err != nil || r.First.String() != want[0] || r.Last.String() != want[1] {
			t.Errorf("parseRange(%q) = %v-%v, %v", in, r.First, r.Last, err)
		}
	}
	for _, bad := range []string{"2001:db8::", "10.0.0.1-10.0.0.9", "2001:db8::1/64", "x-y"} {
		if _, err := parseRange(bad); err == nil {
			t.Errorf("parseRange(%q) accepted", bad)
		}
	}
}

func TestDurationDays(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("3d")); err != nil || d.Duration != 72*time.Hour {
		t.Fatalf("3d = %v, %v", d, err)
	}
	if err := d.UnmarshalText([]byte("-1d")); err == nil {
		t.Fatal("-1d accepted")
	}
}

// goodFailover is the good file plus the [failover] example of the
// failover issue; the table starts on line 16.
const goodFailover = good + `
[failover]
relationship = "pair-a"
role = "primary"                   # or "secondary"
local = "[2001:db8:1::1]:647"      # address this server listens on / dials from
peer = "[2001:db8:1::2]:647"
mclt = "1h"
`

func TestFailoverExampleParses(t *testing.T) {
	c, err := Parse("tandem.toml", []byte(goodFailover))
	if err != nil {
		t.Fatalf("the documented [failover] example does not parse: %v", err)
	}
	f := c.Failover
	if f == nil {
		t.Fatal("no Failover")
	}
	if f.Relationship != "pair-a" || f.Role != "primary" || f.MCLT.Duration != time.Hour {
		t.Fatalf("failover: %+v", f)
	}
	if f.ParsedLocal.String() != "[2001:db8:1::1]:647" || f.ParsedPeer.String() != "[2001:db8:1::2]:647" {
		t.Fatalf("addresses %v %v", f.ParsedLocal, f.ParsedPeer)
	}
	if f.KeepaliveTime.Duration != time.Minute || f.MaxUnackedBndUpd != 1024 || f.ConnectRetryMin.Duration != time.Second ||
		f.ConnectRetryMax.Duration != 30*time.Second || f.HandshakeTimeout.Duration != 10*time.Second ||
		f.MaxPendingConnections != 64 || f.AutoPartnerDown.Duration != 0 || f.TLSCert != "" ||
		f.PrefixShare == nil || *f.PrefixShare != 0.5 || f.PrefixRebalanceThreshold != 8 {
		t.Fatalf("defaults: %+v", f)
	}
	// prefix-share = 0 is a value (the secondary gets no prefixes), not the
	// default; a whole number is a fraction too.
	for doc, want := range map[string]float64{"prefix-share = 0": 0, "prefix-share = 1": 1} {
		c, err := Parse("tandem.toml", []byte(strings.Replace(goodFailover, `mclt = "1h"`, "mclt = \"1h\"\n"+doc, 1)))
		if err != nil || *c.Failover.PrefixShare != want {
			t.Fatalf("%s: %v, %v", doc, err, c)
		}
	}
	c, err = Parse("tandem.toml", []byte(good))
	if err != nil || c.Failover != nil {
		t.Fatalf("without [failover]: %v, %+v", err, c.Failover)
	}
}

func TestFailoverAllKeys(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"cert.pem", "key.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	doc := good + `
[failover]
relationship = "pair-a"
role = "secondary"
local = "2001:db8:1::2"
peer = "[2001:db8:1::1]:6470"
mclt = "30m"
keepalive-time = "20s"
max-unacked-bndupd = 10
connect-retry-min = "2s"
connect-retry-max = "1m"
handshake-timeout = "5s"
max-pending-connections = 8
tls-cert = "` + filepath.Join(dir, "cert.pem") + `"
tls-key = "` + filepath.Join(dir, "key.pem") + `"
tls-ca = "` + filepath.Join(dir, "ca.pem") + `"
auto-partner-down = "2h"
prefix-share = 0.25
prefix-rebalance-threshold = 3
`
	c, err := Parse("tandem.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	f := c.Failover
	if f.Role != "secondary" || f.ParsedLocal.String() != "[2001:db8:1::2]:647" || f.ParsedPeer.Port() != 6470 ||
		f.MCLT.Duration != 30*time.Minute || f.KeepaliveTime.Duration != 20*time.Second || f.MaxUnackedBndUpd != 10 ||
		f.ConnectRetryMin.Duration != 2*time.Second || f.ConnectRetryMax.Duration != time.Minute ||
		f.HandshakeTimeout.Duration != 5*time.Second || f.MaxPendingConnections != 8 ||
		f.TLSCA != filepath.Join(dir, "ca.pem") || f.AutoPartnerDown.Duration != 2*time.Hour ||
		*f.PrefixShare != 0.25 || f.PrefixRebalanceThreshold != 3 {
		t.Fatalf("parsed: %+v", f)
	}
}

func TestFailoverErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, from, to string
		want           []string
	}{
		{"bad role", `role = "primary" `, `role = "tertiary" `, []string{"tandem.toml:18", "failover.role", "tertiary"}},
		{"no role", `role = "primary"                   # or "secondary"`, ``, []string{"tandem.toml:16", "failover.role", "required"}},
		{"no relationship", `relationship = "pair-a"`, `relationship = ""`, []string{"tandem.toml:17", "failover.relationship", "required"}},
		{"bad peer", `peer = "[2001:db8:1::2]:647"`, `peer = "2001:db8:1::zz"`, []string{"tandem.toml:20", "failover.peer", "not an address"}},
		{"IPv4 peer", `peer = "[2001:db8:1::2]:647"`, `peer = "192.0.2.1:647"`, []string{"tandem.toml:20", "failover.peer", "IPv6"}},
		{"unspecified local", `local = "[2001:db8:1::1]:647"`, `local = "[::]:647"`, []string{"tandem.toml:19", "failover.local", "unicast"}},
		{"peer is local", `peer = "[2001:db8:1::2]:647"`, `peer = "2001:db8:1::1"`, []string{"tandem.toml:20", "failover.peer", "same as local"}},
		{"no mclt", `mclt = "1h"`, ``, []string{"tandem.toml:16", "failover.mclt", "required"}},
		{"fractional mclt", `mclt = "1h"`, `mclt = "1500ms"`, []string{"tandem.toml:21", "failover.mclt", "whole number of seconds"}},
		{"bad mclt", `mclt = "1h"`, `mclt = "soon"`, []string{"tandem.toml:21", "mclt", "bad duration"}},
		{"keepalive", `mclt = "1h"`, "mclt = \"1h\"\nkeepalive-time = \"900ms\"", []string{"tandem.toml:22", "failover.keepalive-time"}},
		{"max unacked", `mclt = "1h"`, "mclt = \"1h\"\nmax-unacked-bndupd = 70000", []string{"tandem.toml:22", "failover.max-unacked-bndupd", "70000"}},
		{"retry order", `mclt = "1h"`, "mclt = \"1h\"\nconnect-retry-min = \"1m\"\nconnect-retry-max = \"10s\"", []string{"tandem.toml:23", "failover.connect-retry-max"}},
		{"pending", `mclt = "1h"`, "mclt = \"1h\"\nmax-pending-connections = -1", []string{"tandem.toml:22", "failover.max-pending-connections"}},
		{"start-alone on a secondary", `role = "primary"`, "role = \"secondary\"\nstart-alone = true", []string{"failover.start-alone", "primary only"}},
		{"prefix-share above 1", `mclt = "1h"`, "mclt = \"1h\"\nprefix-share = 1.5", []string{"tandem.toml:22", "failover.prefix-share", "0..1"}},
		{"negative prefix-share", `mclt = "1h"`, "mclt = \"1h\"\nprefix-share = -0.1", []string{"tandem.toml:22", "failover.prefix-share"}},
		{"prefix-share not a number", `mclt = "1h"`, "mclt = \"1h\"\nprefix-share = \"half\"", []string{"tandem.toml:22", "prefix-share"}},
		{"negative threshold", `mclt = "1h"`, "mclt = \"1h\"\nprefix-rebalance-threshold = -2", []string{"tandem.toml:22", "failover.prefix-rebalance-threshold"}},
		{"negative auto-partner-down", `mclt = "1h"`, "mclt = \"1h\"\nauto-partner-down = \"-1h\"", []string{"tandem.toml:22", "failover.auto-partner-down", "negative"}},
		{"tls half", `mclt = "1h"`, "mclt = \"1h\"\ntls-cert = \"/etc/tandem/cert.pem\"", []string{"tandem.toml:16", "failover.tls-key", "all three"}},
		{"tls missing file", `mclt = "1h"`, "mclt = \"1h\"\ntls-cert = \"/nonexistent/c\"\ntls-key = \"/nonexistent/k\"\ntls-ca = \"/nonexistent/a\"", []string{"tandem.toml:22", "failover.tls-cert", "/nonexistent/c"}},
		{"unknown key", `mclt = "1h"`, "mclt = \"1h\"\nmclt-seconds = 5", []string{"tandem.toml:22", "failover.mclt-seconds", "unknown key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(goodFailover, tc.from, tc.to, 1)
			if doc == goodFailover {
				t.Fatalf("test case does not change the document")
			}
			_, err := Parse("tandem.toml", []byte(doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error is not a *config.Error: %T", err)
			}
		})
	}
}

// TestRateLimits: the defaults limit clients (10/s, burst 50) and not
// relays; rates are read per second, minute or hour; a relay burst
// defaults to one second's worth.
func TestRateLimits(t *testing.T) {
	c, err := Parse("tandem.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	d := c.DHCP
	if d.ClientRateLimit.PerSecond != 10 || d.ClientBurst != 50 || d.RelayRateLimit.PerSecond != 0 || d.RelayBurst != 0 || d.RateLimitEntries != 65536 {
		t.Fatalf("defaults: client %v burst %d, relay %v burst %d, entries %d", d.ClientRateLimit.PerSecond, d.ClientBurst,
			d.RelayRateLimit.PerSecond, d.RelayBurst, d.RateLimitEntries)
	}
	doc := strings.Replace(good, `dns-servers = ["2001:db8:1::53"]`, `dns-servers = ["2001:db8:1::53"]
client-rate-limit = "off"
relay-rate-limit = "90000/m"`, 1)
	if c, err = Parse("tandem.toml", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	d = c.DHCP
	if d.ClientRateLimit.PerSecond != 0 || d.ClientBurst != 0 || d.RelayRateLimit.PerSecond != 1500 || d.RelayBurst != 1500 {
		t.Fatalf("client %v burst %d, relay %v burst %d", d.ClientRateLimit.PerSecond, d.ClientBurst, d.RelayRateLimit.PerSecond, d.RelayBurst)
	}
	doc = strings.Replace(good, `dns-servers = ["2001:db8:1::53"]`, `dns-servers = ["2001:db8:1::53"]
client-rate-limit = "0.5/s"
client-burst = 3`, 1)
	if c, err = Parse("tandem.toml", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	if d = c.DHCP; d.ClientRateLimit.PerSecond != 0.5 || d.ClientBurst != 3 {
		t.Fatalf("client %v burst %d", d.ClientRateLimit.PerSecond, d.ClientBurst)
	}
}
