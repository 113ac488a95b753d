package main

import (
	"strings"
	"testing"
	"time"

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
	if active != 5 {
		t.Errorf("%d ACTIVE resources compared, want 5", active)
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
	fs, checked := checkClients(grants, servers, map[string]string{"p": "primary", "s": "secondary"}, at)
	if checked != 4 {
		t.Errorf("checked %d, want 4 (clients 1, 2, 4, 5)", checked)
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
	fs, reused := checkOverlaps(grants)
	if reused != 2 {
		t.Errorf("reused %d, want 2", reused)
	}
	if len(fs) != 1 || !strings.HasPrefix(fs[0].Text, "2001:db8::2:") {
		t.Fatalf("findings %+v, want one overlap on 2001:db8::2", fs)
	}
}
