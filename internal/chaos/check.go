package main

import (
	"fmt"
	"sort"
	"time"

	"github.com/tandem-dhcp/tandem/control"
)

// edge is how close to its end a lease may be and still differ between
// the servers (or be gone) without counting as a violation: the two
// servers' expiry sweeps are independent, and the lists are read one after
// the other.
const edge = 10 * time.Second

// finding is one difference. Violation marks a safety violation (a lease
// lost, or one address or prefix bound to two clients); Dispute marks a lease the two
// servers hold for the same client in different states (one ACTIVE, one
// not) beyond the expiry edge: not unsafe, but the pair has not converged.
// Neither: a difference at the expiry edge (a note).
type finding struct {
	Check              string
	Violation, Dispute bool
	Text               string
}

// resKey names a binding's resource as grant.key does: "na 2001:db8:1::1000"
// or "pd 2001:db8:8000:1::/64".
func resKey(l control.Lease) string { return l.Type + " " + l.Address + l.Prefix }

func validUntil(l control.Lease) time.Time {
	t, err := time.Parse(time.RFC3339, l.ValidUntil)
	if err != nil {
		return time.Time{}
	}
	return t
}

// compareDBs checks that every ACTIVE binding on one server (address or
// delegated prefix) is ACTIVE on the other for the same client (DUID and
// IAID). A binding that ends within edge of at is reported but not a
// violation. active counts the resources compared by type ("na", "pd").
func compareDBs(pri, sec []control.Lease, at time.Time) (fs []finding, active map[string]int) {
	active = map[string]int{}
	idx := func(ls []control.Lease) map[string]control.Lease {
		m := make(map[string]control.Lease, len(ls))
		for _, l := range ls {
			m[resKey(l)] = l
		}
		return m
	}
	mp, ms := idx(pri), idx(sec)
	seen := map[string]bool{}
	one := func(k string, a, b map[string]control.Lease, aName, bName string) {
		if seen[k] {
			return
		}
		seen[k] = true
		la := a[k]
		lb, okb := b[k]
		if la.State != "ACTIVE" && (!okb || lb.State != "ACTIVE") {
			return
		}
		if la.State == "ACTIVE" {
			active[la.Type]++
		} else {
			active[lb.Type]++
		}
		if okb && la.State == "ACTIVE" && lb.State == "ACTIVE" && la.DUID == lb.DUID && la.IAID == lb.IAID {
			return
		}
		ends := validUntil(la)
		if la.State != "ACTIVE" {
			ends = validUntil(lb)
		}
		f := finding{Check: "databases", Violation: ends.After(at.Add(edge))}
		switch {
		case !okb:
			f.Text = fmt.Sprintf("%s: ACTIVE on the %s for %s/%d (until %s), absent on the %s", k, aName, la.DUID, la.IAID, la.ValidUntil, bName)
		case la.State == "ACTIVE" && lb.State == "ACTIVE":
			f.Violation = true // two clients: never at the edge
			f.Text = fmt.Sprintf("%s: ACTIVE on the %s for %s/%d, on the %s for %s/%d", k, aName, la.DUID, la.IAID, bName, lb.DUID, lb.IAID)
		case la.DUID == lb.DUID && la.IAID == lb.IAID:
			f.Dispute, f.Violation = f.Violation, false
			fallthrough
		default:
			f.Text = fmt.Sprintf("%s: %s on the %s (%s/%d until %s), %s on the %s (%s/%d until %s)", k,
				la.State, aName, la.DUID, la.IAID, la.ValidUntil, lb.State, bName, lb.DUID, lb.IAID, lb.ValidUntil)
		}
		fs = append(fs, f)
	}
	for k := range mp {
		one(k, mp, ms, "primary", "secondary")
	}
	for k := range ms {
		one(k, ms, mp, "secondary", "primary")
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Text < fs[j].Text })
	return fs, active
}

// checkClients checks the clients' view against the databases at time at:
// for each client and each resource (address or prefix) it was granted,
// the latest grant, if still running (Until after at+edge, not released:
// a Reply that no longer listed the resource ended it), must be ACTIVE for
// that client on the server that granted it (servers: Server ID hex ->
// that server's leases, name). A grant made while a server was in
// PARTNER-DOWN with its partner alive (splitPD, see checkOverlaps) may have
// lost POTENTIAL-CONFLICT resolution to the partner's: a note, not a
// violation. checked counts the grants checked by kind.
func checkClients(grants []grant, servers map[string][]control.Lease, names map[string]string, at time.Time, splitPD []interval) (fs []finding, checked map[string]int) {
	type ck struct {
		client int
		res    string // grant.key
	}
	latest := map[ck]grant{}
	for _, g := range grants {
		k := ck{g.Client, g.key()}
		if cur, ok := latest[k]; !ok || !g.From.Before(cur.From) {
			latest[k] = g
		}
	}
	byRes := map[string]map[string]control.Lease{}
	for sid, ls := range servers {
		m := map[string]control.Lease{}
		for _, l := range ls {
			m[resKey(l)] = l
		}
		byRes[sid] = m
	}
	keys := make([]ck, 0, len(latest))
	for k := range latest {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].client != keys[j].client {
			return keys[i].client < keys[j].client
		}
		return keys[i].res < keys[j].res
	})
	checked = map[string]int{}
	for _, k := range keys {
		g := latest[k]
		if g.Released || !g.Until.After(at.Add(edge)) {
			continue
		}
		checked[g.kind()]++
		m, ok := byRes[g.Server]
		if !ok {
			fs = append(fs, finding{Check: "clients", Violation: true,
				Text: fmt.Sprintf("client %d: %s granted by unknown server %s", k.client, g.Addr, g.Server)})
			continue
		}
		l, ok := m[g.key()]
		if !ok || l.State != "ACTIVE" || l.DUID != g.DUID {
			f := finding{Check: "clients", Violation: true}
			if during(splitPD, g.From) {
				f = finding{Check: "clients-partner-down"}
			}
			f.Text = fmt.Sprintf("client %d (%s): %s acknowledged by the %s (%s, until %s) but it has %s for %q",
				k.client, g.DUID, g.Addr, names[g.Server], g.Msg, g.Until.UTC().Format(time.RFC3339), orNone(l.State), l.DUID)
			fs = append(fs, f)
		}
	}
	return fs, checked
}

func orNone(s string) string {
	if s == "" {
		return "no binding"
	}
	return s
}

// interval is a span of time.
type interval struct{ From, Until time.Time }

// pdSlack widens the monitor's split-PARTNER-DOWN intervals: it samples
// every 300 ms, and a grant's From is when its Reply arrived.
const pdSlack = time.Second

// during reports whether t falls in one of ivs, widened by pdSlack.
func during(ivs []interval, t time.Time) bool {
	for _, iv := range ivs {
		if !t.Before(iv.From.Add(-pdSlack)) && !t.After(iv.Until.Add(pdSlack)) {
			return true
		}
	}
	return false
}

// checkOverlaps reports every address or delegated prefix acknowledged to
// two different clients with overlapping intervals: a violation, unless
// the two came from different servers and one of them arrived while a
// server was in PARTNER-DOWN with its partner alive (splitPD, from the
// monitor: auto-partner-down during a partner-link cut, which breaks the
// operator's PARTNER-DOWN rule). RFC 8156 §4.2.2.1 and §8.4.1 accept that
// one lease may then be given twice, and POTENTIAL-CONFLICT resolves it
// when the two meet (the databases check then finds no lease ACTIVE for
// two clients); the losing client holds its grant until its next exchange
// tells it otherwise, so the winner's renewals after the interval overlap
// it too. Those are notes. Prefixes are compared as equal strings: the chaos pd-pool has one
// delegated length, so two different prefixes never overlap. reused
// counts, by kind, the resources that went to more than one client.
func checkOverlaps(grants []grant, splitPD []interval) (fs []finding, reused map[string]int) {
	by := map[string][]grant{}
	for _, g := range grants {
		by[g.key()] = append(by[g.key()], g)
	}
	reused = map[string]int{}
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		gs := by[k]
		clients := map[int]bool{}
		for _, g := range gs {
			clients[g.Client] = true
		}
		if len(clients) > 1 {
			reused[gs[0].kind()]++
		}
		for i := 0; i < len(gs); i++ {
			for j := i + 1; j < len(gs); j++ {
				x, y := gs[i], gs[j]
				if x.Client == y.Client {
					continue
				}
				if x.From.Before(y.Until) && y.From.Before(x.Until) {
					f := finding{Check: "overlap", Violation: true}
					if x.Server != y.Server && (during(splitPD, x.From) || during(splitPD, y.From)) {
						f = finding{Check: "overlap-partner-down"} // accepted by the RFC, resolved on reconnect
					}
					f.Text = fmt.Sprintf("%s: client %d [%s, %s] by %s (%s) and client %d [%s, %s] by %s (%s)", k,
						x.Client, x.From.Format("15:04:05.000"), x.Until.Format("15:04:05.000"), x.Server, x.Msg,
						y.Client, y.From.Format("15:04:05.000"), y.Until.Format("15:04:05.000"), y.Server, y.Msg)
					fs = append(fs, f)
				}
			}
		}
	}
	return fs, reused
}
