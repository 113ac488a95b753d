package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/config"
	"github.com/tandem-dhcp/tandem/control"
)

var at = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func lease(addr, state, duid string, until time.Time) control.Lease {
	l := control.Lease{Resource: control.Resource{Type: "na", Address: addr}, State: state, DUID: duid, IAID: 1}
	if state == "ACTIVE" {
		l.ValidUntil = until.Format(time.RFC3339)
	}
	return l
}

func prefixLease(prefix, state, duid string, until time.Time) control.Lease {
	l := lease("", state, duid, until)
	l.Resource = control.Resource{Type: "pd", Prefix: prefix}
	return l
}

func TestCompareDBs(t *testing.T) {
	long, soon := at.Add(time.Hour), at.Add(3*time.Second)
	pri := []control.Lease{
		lease("2001:db8::1", "ACTIVE", "aa", long),   // same on both: fine
		lease("2001:db8::2", "ACTIVE", "aa", long),   // other client on the secondary
		lease("2001:db8::3", "RELEASED", "aa", long), // ACTIVE on the secondary
		lease("2001:db8::4", "ACTIVE", "aa", soon),   // EXPIRED there, ends now: a note
		lease("2001:db8::5", "ACTIVE", "aa", long),   // absent there
		lease("2001:db8::6", "EXPIRED", "aa", long),  // not ACTIVE anywhere: not compared
	}
	sec := []control.Lease{
		lease("2001:db8::1", "ACTIVE", "aa", long),
		lease("2001:db8::2", "ACTIVE", "bb", long),
		lease("2001:db8::3", "ACTIVE", "aa", long),
		lease("2001:db8::4", "EXPIRED", "aa", long),
		lease("2001:db8::6", "RELEASED", "aa", long),
	}
	fs, active := compareDBs(pri, sec, at)
	if active["na"] != 5 || active["pd"] != 0 {
		t.Errorf("%v ACTIVE resources compared, want 5 addresses", active)
	}
	want := map[string]bool{"::2": true, "::3": false, "::4": false, "::5": true} // ::3 is a dispute
	if len(fs) != len(want) {
		t.Fatalf("findings %+v, want %d", fs, len(want))
	}
	for _, f := range fs {
		found := false
		for k, v := range want {
			if strings.Contains(f.Text, "2001:db8"+k+":") {
				found = true
				if f.Violation != v {
					t.Errorf("%s: violation %v, want %v", f.Text, f.Violation, v)
				}
				if f.Dispute != (k == "::3") {
					t.Errorf("%s: dispute %v", f.Text, f.Dispute)
				}
			}
		}
		if !found {
			t.Errorf("unexpected finding %s", f.Text)
		}
	}
}

func TestCheckClients(t *testing.T) {
	g := func(c int, duid, addr, srv string, from, until time.Time) grant {
		return grant{Client: c, DUID: duid, Addr: addr, Server: srv, From: from, Until: until}
	}
	long := at.Add(time.Hour)
	grants := []grant{
		g(1, "c1", "2001:db8::1", "p", at.Add(-time.Minute), at.Add(-time.Second)), // superseded
		g(1, "c1", "2001:db8::1", "p", at.Add(-time.Second), long),                 // bound on p: fine
		g(2, "c2", "2001:db8::2", "s", at.Add(-time.Second), long),                 // s lost it
		g(3, "c3", "2001:db8::3", "p", at.Add(-time.Second), at.Add(time.Second)),  // ends now: skipped
		g(4, "c4", "2001:db8::4", "p", at.Add(-time.Second), long),                 // bound to another client
		g(5, "c5", "2001:db8::5", "x", at.Add(-time.Second), long),                 // unknown server
	}
	grants = append(grants, grant{Client: 6, DUID: "c6", Addr: "2001:db8::6", Server: "p", From: at, Until: long, Released: true})
	servers := map[string][]control.Lease{
		"p": {lease("2001:db8::1", "ACTIVE", "c1", long), lease("2001:db8::4", "ACTIVE", "zz", long)},
		"s": {lease("2001:db8::2", "EXPIRED", "c2", long)},
	}
	fs, checked := checkClients(grants, servers, map[string]string{"p": "primary", "s": "secondary"}, at, nil)
	if checked["na"] != 4 {
		t.Errorf("checked %v, want 4 (clients 1, 2, 4, 5)", checked)
	}
	if len(fs) != 3 {
		t.Fatalf("findings %+v, want 3 (clients 2, 4, 5)", fs)
	}
	for i, c := range []string{"client 2 ", "client 4 ", "client 5:"} {
		if !strings.HasPrefix(fs[i].Text, c) || !fs[i].Violation {
			t.Errorf("finding %d: %+v, want a violation for %s", i, fs[i], c)
		}
	}
}

func TestCheckOverlaps(t *testing.T) {
	g := func(c int, addr string, from, until int) grant {
		return grant{Client: c, Addr: addr, From: at.Add(time.Duration(from) * time.Second), Until: at.Add(time.Duration(until) * time.Second)}
	}
	grants := []grant{
		g(1, "2001:db8::1", 0, 10), g(1, "2001:db8::1", 5, 30), // one client renewing: fine
		g(2, "2001:db8::1", 30, 40),                            // after client 1's last end: reuse, fine
		g(3, "2001:db8::2", 0, 10), g(4, "2001:db8::2", 9, 20), // overlap
		g(5, "2001:db8::3", 0, 10),
	}
	fs, reused := checkOverlaps(grants, nil)
	if reused["na"] != 2 {
		t.Errorf("reused %v, want 2 addresses", reused)
	}
	if len(fs) != 1 || !strings.HasPrefix(fs[0].Text, "na 2001:db8::2:") {
		t.Fatalf("findings %+v, want one overlap on 2001:db8::2", fs)
	}
}

// TestCompareDBsPrefixes: delegated prefixes are compared like addresses,
// by prefix; a FREE-BACKUP prefix (no client) is not compared, and an
// address and a prefix with the same first address are different resources.
func TestCompareDBsPrefixes(t *testing.T) {
	long := at.Add(time.Hour)
	pri := []control.Lease{
		prefixLease("2001:db8:8000::/64", "ACTIVE", "aa", long),       // same on both
		prefixLease("2001:db8:8000:1::/64", "ACTIVE", "aa", long),     // another client on the secondary
		prefixLease("2001:db8:8000:2::/64", "ACTIVE", "aa", long),     // absent on the secondary
		prefixLease("2001:db8:8000:3::/64", "EXPIRED", "aa", long),    // ACTIVE on the secondary: a dispute
		prefixLease("2001:db8:8000:ff::/64", "FREE-BACKUP", "", long), // the secondary's share
		lease("2001:db8:8000:4::", "ACTIVE", "aa", long),              // an address, not the prefix below
	}
	sec := []control.Lease{
		prefixLease("2001:db8:8000::/64", "ACTIVE", "aa", long),
		prefixLease("2001:db8:8000:1::/64", "ACTIVE", "bb", long),
		prefixLease("2001:db8:8000:3::/64", "ACTIVE", "aa", long),
		prefixLease("2001:db8:8000:ff::/64", "FREE-BACKUP", "", long),
		prefixLease("2001:db8:8000:4::/64", "ACTIVE", "aa", long),
		lease("2001:db8:8000:4::", "ACTIVE", "aa", long),
	}
	fs, active := compareDBs(pri, sec, at)
	if active["pd"] != 5 || active["na"] != 1 {
		t.Errorf("compared %v, want 5 prefixes and 1 address", active)
	}
	want := map[string]string{ // finding prefix -> violation or dispute
		"pd 2001:db8:8000:1::/64:": "violation",
		"pd 2001:db8:8000:2::/64:": "violation",
		"pd 2001:db8:8000:3::/64:": "dispute",
		"pd 2001:db8:8000:4::/64:": "violation",
	}
	if len(fs) != len(want) {
		t.Fatalf("findings %+v, want %d", fs, len(want))
	}
	for _, f := range fs {
		w, ok := "", false
		if n := strings.Index(f.Text, "/64:"); n >= 0 {
			w, ok = want[f.Text[:n+len("/64:")]]
		}
		if !ok {
			t.Errorf("unexpected finding %s", f.Text)
			continue
		}
		if got := map[bool]string{true: "violation", false: "dispute"}[f.Violation]; got != w || f.Violation == f.Dispute {
			t.Errorf("%s: violation %v dispute %v, want a %s", f.Text, f.Violation, f.Dispute, w)
		}
	}
}

// TestCheckClientsPrefixes: a client's latest address and latest prefix
// are each checked against the server that granted them; a prefix lease
// bound to another client, or an address where a prefix was granted, is a
// violation.
func TestCheckClientsPrefixes(t *testing.T) {
	long := at.Add(time.Hour)
	g := func(c int, kind, res, srv string, from time.Time) grant {
		return grant{Client: c, DUID: fmt.Sprintf("c%d", c), Kind: kind, Addr: res, Server: srv, From: from, Until: long}
	}
	grants := []grant{
		g(1, "na", "2001:db8::1", "p", at.Add(-time.Second)),
		g(1, "pd", "2001:db8:8000::/64", "p", at.Add(-2*time.Second)),                                                                           // older than the address: still the latest prefix
		{Client: 2, DUID: "c2", Kind: "pd", Addr: "2001:db8:8000:1::/64", Server: "p", From: at.Add(-time.Minute), Until: at.Add(-time.Second)}, // ended by a later Reply
		g(2, "pd", "2001:db8:8000:2::/64", "s", at.Add(-time.Second)),                                                                           // from the secondary: bound there
		g(3, "pd", "2001:db8:8000:3::/64", "p", at.Add(-time.Second)),                                                                           // bound to another client
		g(4, "pd", "2001:db8:8000:4::/64", "s", at.Add(-time.Second)),                                                                           // the secondary has the address only
		{Client: 5, DUID: "c5", Addr: "2001:db8::5", Server: "s", From: at, Until: long},                                                        // no kind: an address
	}
	servers := map[string][]control.Lease{
		"p": {lease("2001:db8::1", "ACTIVE", "c1", long), prefixLease("2001:db8:8000::/64", "ACTIVE", "c1", long),
			prefixLease("2001:db8:8000:3::/64", "ACTIVE", "zz", long)},
		"s": {prefixLease("2001:db8:8000:2::/64", "ACTIVE", "c2", long), lease("2001:db8:8000:4::", "ACTIVE", "c4", long),
			lease("2001:db8::5", "ACTIVE", "c5", long)},
	}
	fs, checked := checkClients(grants, servers, map[string]string{"p": "primary", "s": "secondary"}, at, nil)
	if checked["na"] != 2 || checked["pd"] != 4 {
		t.Errorf("checked %v, want 2 addresses (clients 1, 5) and 4 prefixes (clients 1-4)", checked)
	}
	if len(fs) != 2 {
		t.Fatalf("findings %+v, want 2 (clients 3, 4)", fs)
	}
	for i, c := range []string{"client 3 ", "client 4 "} {
		if !strings.HasPrefix(fs[i].Text, c) || !fs[i].Violation {
			t.Errorf("finding %d: %+v, want a violation for %s", i, fs[i], c)
		}
	}
}

// TestCheckOverlapsPrefixes: a prefix granted to two clients at once is
// found; one client renewing its prefix, a prefix reused after the last
// grant ended, and an address equal to a prefix's first address are not.
func TestCheckOverlapsPrefixes(t *testing.T) {
	g := func(c int, kind, res string, from, until int) grant {
		return grant{Client: c, Kind: kind, Addr: res, From: at.Add(time.Duration(from) * time.Second), Until: at.Add(time.Duration(until) * time.Second)}
	}
	grants := []grant{
		g(1, "pd", "2001:db8:8000::/64", 0, 10), g(1, "pd", "2001:db8:8000::/64", 5, 30), // renewals: fine
		g(2, "pd", "2001:db8:8000::/64", 30, 40),                                             // reuse after the end: fine
		g(3, "pd", "2001:db8:8000:1::/64", 0, 10), g(4, "pd", "2001:db8:8000:1::/64", 9, 20), // overlap
		g(5, "na", "2001:db8:8000:2::", 0, 10), g(6, "pd", "2001:db8:8000:2::/64", 0, 10), // different resources
	}
	fs, reused := checkOverlaps(grants, nil)
	if reused["pd"] != 2 || reused["na"] != 0 {
		t.Errorf("reused %v, want 2 prefixes", reused)
	}
	if len(fs) != 1 || !strings.HasPrefix(fs[0].Text, "pd 2001:db8:8000:1::/64: client 3 ") || !fs[0].Violation {
		t.Fatalf("findings %+v, want one overlap on 2001:db8:8000:1::/64", fs)
	}
}

// TestServerConfig: the configuration the chaos layout writes is one
// Tandem accepts, with the pd-pool and the rebalance threshold.
func TestServerConfig(t *testing.T) {
	tp := &topo{}
	s := &server{role: "secondary", dir: t.TempDir()}
	doc := tp.serverConfig(s, foAddrSec, foAddrPri, options{mclt: 10 * time.Second, autoPartnerDown: 5 * time.Second})
	c, err := config.Parse("tandem.toml", []byte(doc))
	if err != nil { // Parse validates
		t.Fatalf("%v\n%s", err, doc)
	}
	sn := c.Subnets[0]
	if len(sn.ParsedPDPools) != 1 || sn.ParsedPDPools[0].Prefix.String() != pdPool || sn.ParsedPDPools[0].DelegatedLength != pdLength {
		t.Errorf("pd-pools %+v", sn.ParsedPDPools)
	}
	if c.Failover == nil || c.Failover.PrefixRebalanceThreshold != pdThreshold {
		t.Errorf("failover %+v", c.Failover)
	}
}

// TestCheckOverlapsPartnerDown: an overlap whose later grant came from the
// other server while a server was in PARTNER-DOWN with its partner alive
// (auto-partner-down during a partition: RFC 8156 accepts the double) is a
// note, not a violation; the same overlap after such an interval, or from
// one server, stays a violation.
func TestCheckOverlapsPartnerDown(t *testing.T) {
	g := func(c int, server, res string, from, until int) grant {
		return grant{Client: c, Kind: "pd", Addr: res, Server: server, From: at.Add(time.Duration(from) * time.Second),
			Until: at.Add(time.Duration(until) * time.Second)}
	}
	both := []interval{{From: at.Add(8 * time.Second), Until: at.Add(30 * time.Second)}}
	// (3 at 0 and 4 at 40 are both outside [7 s, 31 s])
	grants := []grant{
		g(1, "pri", "2001:db8:8000:1::/64", 0, 20), g(2, "sec", "2001:db8:8000:1::/64", 10, 300), // in both-PD: note
		g(3, "pri", "2001:db8:8000:2::/64", 0, 50), g(4, "sec", "2001:db8:8000:2::/64", 40, 300), // both outside: violation
		g(7, "pri", "2001:db8:8000:4::/64", 12, 45), g(8, "sec", "2001:db8:8000:4::/64", 44, 300), // the double began inside: note
		g(5, "pri", "2001:db8:8000:3::/64", 0, 20), g(6, "pri", "2001:db8:8000:3::/64", 10, 300), // one server: violation
	}
	fs, _ := checkOverlaps(grants, both)
	if len(fs) != 4 {
		t.Fatalf("findings %+v, want 4", fs)
	}
	want := map[string]bool{"2001:db8:8000:1::/64": false, "2001:db8:8000:2::/64": true, "2001:db8:8000:3::/64": true,
		"2001:db8:8000:4::/64": false}
	for _, f := range fs {
		for res, viol := range want {
			if strings.HasPrefix(f.Text, "pd "+res+":") && f.Violation != viol {
				t.Errorf("%s: violation %v, want %v (%+v)", res, f.Violation, viol, f)
			}
		}
	}
}

// TestMonitorPartnerDownSplit: the monitor's samples become intervals.
func TestMonitorPartnerDownSplit(t *testing.T) {
	var m monitor
	for i, both := range []bool{false, true, true, false, true} {
		m.sample(at.Add(time.Duration(i)*time.Second), both)
	}
	ivs := m.partnerDownSplit(at.Add(10 * time.Second))
	if len(ivs) != 2 || !ivs[0].From.Equal(at.Add(time.Second)) || !ivs[0].Until.Equal(at.Add(3*time.Second)) ||
		!ivs[1].From.Equal(at.Add(4*time.Second)) || !ivs[1].Until.Equal(at.Add(10*time.Second)) {
		t.Fatalf("intervals %+v", ivs)
	}
}

// TestCheckClientsPartnerDown: a client's latest grant, made while a server
// was in PARTNER-DOWN with its partner alive, that lost conflict resolution
// (the server now has the lease for another client) is a note; the same
// outside such an interval is a violation.
func TestCheckClientsPartnerDown(t *testing.T) {
	grants := []grant{
		{Client: 1, DUID: "0001", Kind: "pd", Addr: "2001:db8:8000:1::/64", Server: "p", From: at.Add(-10 * time.Second), Until: at.Add(time.Hour)},
		{Client: 2, DUID: "0002", Kind: "pd", Addr: "2001:db8:8000:2::/64", Server: "p", From: at.Add(-100 * time.Second), Until: at.Add(time.Hour)},
	}
	servers := map[string][]control.Lease{"p": {
		{Resource: control.Resource{Type: "pd", Prefix: "2001:db8:8000:1::/64"}, State: "ACTIVE", DUID: "0009"},
		{Resource: control.Resource{Type: "pd", Prefix: "2001:db8:8000:2::/64"}, State: "ACTIVE", DUID: "0009"},
	}}
	split := []interval{{From: at.Add(-20 * time.Second), Until: at.Add(-5 * time.Second)}}
	fs, _ := checkClients(grants, servers, map[string]string{"p": "primary"}, at, split)
	if len(fs) != 2 {
		t.Fatalf("findings %+v, want 2", fs)
	}
	for _, f := range fs {
		inSplit := strings.HasPrefix(f.Text, "client 1 ")
		if f.Violation == inSplit || (inSplit && f.Check != "clients-partner-down") {
			t.Errorf("%+v: violation %v for a grant in the PARTNER-DOWN interval: %v", f, f.Violation, inSplit)
		}
	}
}
