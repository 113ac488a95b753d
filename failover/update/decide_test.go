package update

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// figure4 is RFC 8156 Figure 4, transcribed: rows are the receiver's
// binding-status, columns the received one. Column "FREE" is FREE /
// FREE-BACKUP, column "RESET" is RESET / ABANDONED; row "FREE" is FREE /
// FREE-BACKUP.
var figure4 = map[string][5]string{
	//            ACTIVE       EXPIRED    RELEASED  FREE       RESET
	"ACTIVE":    {"accept(3)", "time(1)", "accept", "time(1)", "accept"},
	"EXPIRED":   {"accept", "accept", "accept", "accept", "accept"},
	"RELEASED":  {"accept", "accept", "accept", "accept", "accept"},
	"FREE":      {"accept", "accept", "accept", "accept", "accept"},
	"RESET":     {"time(2)", "accept", "accept", "accept", "accept"},
	"ABANDONED": {"accept", "accept", "accept", "accept", "accept"},
}

var allStatuses = []fsm.Status{fsm.StatusActive, fsm.StatusExpired, fsm.StatusReleased, fsm.StatusPendingFree,
	fsm.StatusFree, fsm.StatusFreeBackup, fsm.StatusAbandoned, fsm.StatusReset}

// figure4Cell looks a pair up in the transcription (PENDING-FREE as its
// destination, FREE or FREE-BACKUP).
func figure4Cell(local, received fsm.Status) string {
	row := map[fsm.Status]string{fsm.StatusActive: "ACTIVE", fsm.StatusExpired: "EXPIRED", fsm.StatusReleased: "RELEASED",
		fsm.StatusPendingFree: "FREE", fsm.StatusFree: "FREE", fsm.StatusFreeBackup: "FREE", fsm.StatusReset: "RESET",
		fsm.StatusAbandoned: "ABANDONED"}[local]
	col := map[fsm.Status]int{fsm.StatusActive: 0, fsm.StatusExpired: 1, fsm.StatusReleased: 2, fsm.StatusPendingFree: 3,
		fsm.StatusFree: 3, fsm.StatusFreeBackup: 3, fsm.StatusReset: 4, fsm.StatusAbandoned: 4}[received]
	return figure4[row][col]
}

func TestCellIsFigure4(t *testing.T) {
	for _, l := range allStatuses {
		for _, r := range allStatuses {
			if got, want := Cell(l, r).String(), figure4Cell(l, r); got != want {
				t.Errorf("Cell(%v, %v) = %s, want %s", l, r, got, want)
			}
		}
	}
}

// TestDecideMatrix runs every local x received status pair, both roles,
// same and different clients, with the compared times before, within ±5 s,
// and after each other, the local lease running or run out (time(1)), and
// the received CLT_TIME absent, before, within 5 s of, or after the local
// start-time-of-state (time(2)). The expected outcome is derived from the
// transcribed table and the offsets alone.
func TestDecideMatrix(t *testing.T) {
	now := t0
	n := now.Unix()
	const base = 100000 // the local lease's times are around n - base
	deltas := []int64{-3600, -6, -5, -1, 0, 3, 5, 6, 3600}
	type recvShape struct {
		name    string
		clt     func(localTime int64, d int64) int64 // received CLT (0: absent)
		stos    func(localTime int64, d int64) int64
		usesCLT bool
		// onlyOther: the shape works only for statuses other than ACTIVE,
		// EXPIRED and RELEASED (the later of CLT_TIME and start time).
		onlyOther bool
	}
	// How the received time is made to be localTime + d, for each way
	// §7.5.4 picks it.
	shapes := []recvShape{
		{"clt", func(lt, d int64) int64 { return lt + d }, func(lt, d int64) int64 { return lt + d - 50 }, true, false},
		{"no-clt", func(lt, d int64) int64 { return 0 }, func(lt, d int64) int64 { return lt + d }, false, false},
		{"start-later", func(lt, d int64) int64 { return lt + d - 50 }, func(lt, d int64) int64 { return lt + d }, false, true},
	}
	runs, accepted := 0, 0
	for _, ls := range allStatuses {
		for _, rs := range allStatuses {
			cell := figure4Cell(ls, rs)
			for _, role := range []Role{Primary, Secondary} {
				for _, same := range []bool{true, false} {
					for _, localCLTT := range []bool{true, false} {
						for _, sh := range shapes {
							if sh.onlyOther && (rs == fsm.StatusActive || rs == fsm.StatusExpired || rs == fsm.StatusReleased) {
								continue
							}
							for _, d := range deltas {
								for _, expOff := range []int64{-3600, -6, -5, 0, 5, 3600} { // local STE - now
									local := fsm.Binding{Resource: na("2001:db8::1"), Status: ls, DUID: duidA, IAID: 7,
										StartTimeOfState: n - base, StateExpirationTime: n + expOff}
									if ls == fsm.StatusExpired || ls == fsm.StatusReleased {
										local.StateExpirationTime = 0 // a timeout here is a hold (TestDecideHeld)
									}
									if localCLTT {
										local.CLTT = n - base + 40
									}
									lt := local.StartTimeOfState
									if localCLTT {
										lt = local.CLTT
									}
									rec := Record{Binding: fsm.Binding{Resource: local.Resource, Status: rs, DUID: duidA, IAID: 7,
										StateExpirationTime: n + 3600}}
									if rs == fsm.StatusExpired || rs == fsm.StatusReleased {
										rec.StateExpirationTime = 0
									}
									if !same {
										if d%2 == 0 {
											rec.DUID = duidB
										} else {
											rec.IAID = 8 // same DUID, other IAID: another client binding
										}
									}
									rec.CLTT = sh.clt(lt, d)
									rec.StartTimeOfState = sh.stos(lt, d)
									// The received time the RFC compares.
									var rt int64
									switch rs {
									case fsm.StatusActive, fsm.StatusExpired, fsm.StatusReleased:
										rt = rec.StartTimeOfState
										if sh.usesCLT {
											rt = rec.CLTT
										}
									default:
										rt = max(rec.CLTT, rec.StartTimeOfState)
									}
									// With these shapes the received time is localTime + d.
									if rt != lt+d {
										t.Fatalf("test bug: received time %d, want %d", rt, lt+d)
									}
									later := d > 5
									time1 := expOff < -5
									time2 := rec.CLTT != 0 && rec.CLTT-local.StartTimeOfState > 5
									var wantAccept bool
									wantCode := wire.StatusOutdatedBindingInformation
									switch cell {
									case "accept":
										wantAccept = later
										if d >= -5 && d <= 5 { // the tie-break
											free := func(s fsm.Status) bool {
												return s == fsm.StatusExpired || s == fsm.StatusReleased || s == fsm.StatusFree ||
													s == fsm.StatusFreeBackup || s == fsm.StatusPendingFree
											}
											switch {
											case rs == fsm.StatusActive && free(ls):
												wantAccept = true
											case ls == fsm.StatusActive && free(rs) && expOff > 0:
												wantAccept = false // a local ACTIVE that has run out is bound to no one
											case ls == fsm.StatusActive && free(rs):
												wantAccept = d > 0 || d == 0 && role == Secondary
											case d == 0 && ls == rs && (ls == fsm.StatusFree || ls == fsm.StatusFreeBackup):
												wantAccept = true // the same free binding: both accept
											default:
												wantAccept = d > 0 || d == 0 && role == Secondary
											}
										}
									case "time(1)":
										wantAccept = time1
									case "time(2)":
										wantAccept = time2
									case "accept(3)":
										wantAccept = same || time2 || role == Secondary
										wantCode = wire.StatusAddressInUse
									}
									v := Decide(&local, &rec, role, now)
									runs++
									name := fmt.Sprintf("%v/%v %s role=%v same=%v cltt=%v %s d=%+d exp=%+d", ls, rs, cell, role, same,
										localCLTT, sh.name, d, expOff)
									if v.Accept != wantAccept {
										t.Fatalf("%s: accept=%v (%s), want %v", name, v.Accept, v.Reason, wantAccept)
									}
									if v.Rule.String() != cell {
										t.Fatalf("%s: rule %v", name, v.Rule)
									}
									if v.Accept {
										accepted++
										if v.Code != wire.StatusSuccess {
											t.Fatalf("%s: accepted with code %v", name, v.Code)
										}
									} else if v.Code != wantCode {
										t.Fatalf("%s: code %v, want %v", name, v.Code, wantCode)
									}
								}
							}
						}
					}
				}
			}
		}
	}
	if accepted == 0 || accepted == runs {
		t.Fatalf("%d of %d accepted: the matrix does not discriminate", accepted, runs)
	}
}

// TestDecideExamples are hand-checked cases, independent of the matrix
// construction.
func TestDecideExamples(t *testing.T) {
	n := t0.Unix()
	act := func(duid string, iaid uint32, cltt, stos, ste int64) fsm.Binding {
		return fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusActive, DUID: duid, IAID: iaid,
			CLTT: cltt, StartTimeOfState: stos, StateExpirationTime: ste}
	}
	rec := func(s fsm.Status, duid string, iaid uint32, cltt, stos int64) *Record {
		r := &Record{Binding: fsm.Binding{Resource: na("2001:db8::1"), Status: s, DUID: duid, IAID: iaid,
			CLTT: cltt, StartTimeOfState: stos, StateExpirationTime: n + 100}}
		if s == fsm.StatusExpired || s == fsm.StatusReleased {
			r.StateExpirationTime = 0 // a timeout here is a hold (TestDecideHeld)
		}
		return r
	}
	for _, c := range []struct {
		name   string
		local  *fsm.Binding
		rec    *Record
		role   Role
		accept bool
		code   wire.StatusCode
	}{
		{"no local binding", nil, rec(fsm.StatusActive, duidA, 1, n, n), Primary, true, 0},
		{"release after our renewal", ptr(act(duidA, 1, n-600, n-3600, n+3000)), rec(fsm.StatusReleased, duidA, 1, n-10, n-10), Primary, true, 0},
		{"release 4 s after our renewal is the same time", ptr(act(duidA, 1, n-14, n-3600, n+3000)), rec(fsm.StatusReleased, duidA, 1, n-10, n-10), Primary, false, wire.StatusOutdatedBindingInformation},
		{"ACTIVE received at the same time as our RELEASED: ACTIVE wins", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusReleased, DUID: duidA, IAID: 1, CLTT: n, StartTimeOfState: n}), rec(fsm.StatusActive, duidA, 1, 0, n), Primary, true, 0},
		{"RELEASED received 2 s after our EXPIRED (within the skew), on the primary: the later wins", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusExpired, StartTimeOfState: n - 2}), rec(fsm.StatusReleased, duidA, 1, n, n), Primary, true, 0},
		{"RELEASED received 2 s after our EXPIRED (within the skew), on the secondary: the later wins", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusExpired, StartTimeOfState: n - 2}), rec(fsm.StatusReleased, duidA, 1, n, n), Secondary, true, 0},
		{"RELEASED received at exactly the time of our EXPIRED, on the primary: ours (the primary's) wins", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusExpired, StartTimeOfState: n}), rec(fsm.StatusReleased, duidA, 1, n, n), Primary, false, wire.StatusOutdatedBindingInformation},
		{"RELEASED received at exactly the time of our EXPIRED, on the secondary: the primary's wins", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusExpired, StartTimeOfState: n}), rec(fsm.StatusReleased, duidA, 1, n, n), Secondary, true, 0},
		{"expired while ours runs", ptr(act(duidA, 1, n-600, n-3600, n+3000)), rec(fsm.StatusExpired, duidA, 1, 0, n), Primary, false, wire.StatusOutdatedBindingInformation},
		{"expired after ours ran out", ptr(act(duidA, 1, n-7200, n-7200, n-60)), rec(fsm.StatusExpired, duidA, 1, 0, n-60), Primary, true, 0},
		{"secondary takes back a prefix it delegated: rejected", ptr(act(duidA, 1, n, n, n+3600)), &Record{Binding: fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusFree, StartTimeOfState: n}, Lone: true}, Secondary, false, wire.StatusOutdatedBindingInformation},
		{"other client on the primary", ptr(act(duidA, 1, n-60, n-3600, n+3000)), rec(fsm.StatusActive, duidB, 1, n-3700, n-3700), Primary, false, wire.StatusAddressInUse},
		{"other client on the secondary", ptr(act(duidA, 1, n-60, n-3600, n+3000)), rec(fsm.StatusActive, duidB, 1, n-3700, n-3700), Secondary, true, 0},
		{"other client used it after ours began", ptr(act(duidA, 1, n-60, n-3600, n+3000)), rec(fsm.StatusActive, duidB, 1, n-3000, n-3000), Primary, true, 0},
		{"same client, older times", ptr(act(duidA, 1, n-60, n-3600, n+3000)), rec(fsm.StatusActive, duidA, 1, n-3600, n-3600), Primary, true, 0},
		{"same DUID, other IAID", ptr(act(duidA, 1, n-60, n-3600, n+3000)), rec(fsm.StatusActive, duidA, 2, n-3700, n-3700), Primary, false, wire.StatusAddressInUse},
		{"reset, client came back", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusReset, StartTimeOfState: n - 600}), rec(fsm.StatusActive, duidA, 1, n-60, n-60), Primary, true, 0},
		{"reset, no client since", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusReset, StartTimeOfState: n - 600}), rec(fsm.StatusActive, duidA, 1, n-700, n-700), Primary, false, wire.StatusOutdatedBindingInformation},
		{"reset, no CLT_TIME", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusReset, StartTimeOfState: n - 600}), rec(fsm.StatusActive, duidA, 1, 0, n), Primary, false, wire.StatusOutdatedBindingInformation},
		{"FREE received: later of CLT and start", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusExpired, StartTimeOfState: n - 600}), rec(fsm.StatusFree, "", 0, n-900, n-300), Primary, true, 0},
		{"RELEASED received: CLT only", ptr(fsm.Binding{Resource: na("2001:db8::1"), Status: fsm.StatusExpired, StartTimeOfState: n - 600}), rec(fsm.StatusReleased, duidA, 1, n-900, n-300), Primary, false, wire.StatusOutdatedBindingInformation},
	} {
		v := Decide(c.local, c.rec, c.role, t0)
		if v.Accept != c.accept || (!v.Accept && v.Code != c.code) {
			t.Errorf("%s: %+v; want accept=%v code %v", c.name, v, c.accept, c.code)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestDecideConvergesOnTies: two servers hold different bindings for one
// lease whose compared times are within ±5 s of each other, and each sends
// its own to the other. Exactly one must accept, or both keep owing their
// update and resend it forever (RFC 8156 §7.5.4: "ultimately, the server
// with the most recent binding information should have its update
// accepted"). The first cases are the ones scripts/chaos found stuck.
func TestDecideConvergesOnTies(t *testing.T) {
	n := t0.Unix()
	b := func(s fsm.Status, duid string, cltt, stos int64) fsm.Binding {
		x := fsm.Binding{Resource: na("2001:db8::1"), Status: s, DUID: duid, IAID: 1, CLTT: cltt, StartTimeOfState: stos}
		if s == fsm.StatusActive {
			x.StateExpirationTime = n + 3600
		}
		return x
	}
	for _, c := range []struct {
		name     string
		pri, sec fsm.Binding
		winner   string // whose binding both end with
	}{
		// The primary released a lease 5 s after granting it; the secondary
		// knows only the grant (start-time-of-state, no CLTT of its own).
		{"released 5 s after the grant", b(fsm.StatusReleased, duidA, n, n), b(fsm.StatusActive, duidA, 0, n-5), "secondary"},
		// The primary gave a released address to another client 4 s after
		// the secondary learnt of the release.
		{"given again 4 s after the release", b(fsm.StatusActive, duidB, n, n), b(fsm.StatusReleased, duidA, 0, n-4), "primary"},
		{"expired vs released 4 s apart", b(fsm.StatusExpired, duidB, n, n+10), b(fsm.StatusReleased, duidA, 0, n-4), "primary"},
		{"both expired, same CLTT", b(fsm.StatusExpired, duidA, n, n+10), b(fsm.StatusExpired, duidA, n, n+10), "primary"},
		{"secondary's expiry 3 s later", b(fsm.StatusExpired, duidA, n, n), b(fsm.StatusExpired, duidA, n+3, n+3), "secondary"},
		{"both released, equal", b(fsm.StatusReleased, duidA, n, n), b(fsm.StatusReleased, duidB, n, n), "primary"},
		// The secondary learnt a 10 s lease (client transaction at n) and
		// expired it itself at n+20 while the link was down; the primary had
		// renewed it alone at n+8 until n+3600. Without the partner's
		// transaction time the secondary compares its sweep (n+20) and
		// rejects, while the primary rejects the EXPIRED by time(1).
		{"renewed alone, expired by the partner's sweep", b(fsm.StatusActive, duidA, n+8, n), func() fsm.Binding {
			x := b(fsm.StatusExpired, duidA, 0, n+20)
			x.PartnerRawCLTT = n
			return x
		}(), "primary"},
		{"abandoned vs active, 2 s later", b(fsm.StatusAbandoned, "", 0, n+2), b(fsm.StatusActive, duidA, n, n), "primary"},
	} {
		t.Run(c.name, func(t *testing.T) {
			recOf := func(x fsm.Binding) *Record { return &Record{Binding: x} }
			priTakes := Decide(&c.pri, recOf(c.sec), Primary, t0) // the primary receives the secondary's
			secTakes := Decide(&c.sec, recOf(c.pri), Secondary, t0)
			if priTakes.Accept == secTakes.Accept {
				t.Fatalf("primary accepts=%v (%s), secondary accepts=%v (%s): want exactly one",
					priTakes.Accept, priTakes.Reason, secTakes.Accept, secTakes.Reason)
			}
			if got := map[bool]string{true: "secondary", false: "primary"}[priTakes.Accept]; got != c.winner {
				t.Fatalf("the %s's binding won (%s / %s), want the %s's", got, priTakes.Reason, secTakes.Reason, c.winner)
			}
		})
	}
}

// TestCrossingDeclineAndExpiry is the simulation's seed 2, at this
// package's level and through the wire: the primary granted a lease (client
// transaction at n), the secondary learnt it, the client declined it at the
// primary 12 s later (ABANDONED, owed) and, the link being down, the
// secondary expired it itself at n+65 (EXPIRED, owed; no
// client-last-transaction-time of its own, the primary's n as its
// partner-raw-clt-time). The two BNDUPDs cross. The secondary compares the
// ABANDONED (n+12) with its EXPIRED's client transaction (n) and accepts;
// the primary must compare the same two times and reject the EXPIRED. When
// it compared its sweep time (n+65) instead, both accepted and swapped: the
// primary ended EXPIRED (then free, the declined address reusable) and the
// secondary ABANDONED, both NORMAL with nothing owed. Afterwards the
// tables must agree.
func TestCrossingDeclineAndExpiry(t *testing.T) {
	n := t0.Unix()
	r := na("2001:db8::13")
	pri, sec := newStore(t), newStore(t)
	pri.put(fsm.Binding{Resource: r, Status: fsm.StatusAbandoned, DUID: duidA, IAID: 1, PreferredLifetime: 60, ValidLifetime: 60,
		CLTT: n + 12, StartTimeOfState: n + 12, StateExpirationTime: n + 12 + 86400, AckedPartnerLifetime: n + 630,
		Flags: fsm.FlagUpdateOwed})
	sec.put(fsm.Binding{Resource: r, Status: fsm.StatusExpired, DUID: duidA, IAID: 1, PreferredLifetime: 60, ValidLifetime: 60,
		PartnerRawCLTT: n, StartTimeOfState: n + 65, Flags: fsm.FlagUpdateOwed})
	now := at(90)

	// Both build their update before either receives the other's.
	build := func(st *store) Update {
		ups, skipped := Updates(SelectOwed(st.all()), now)
		if len(ups) != 1 || len(skipped) != 0 {
			t.Fatalf("updates %v, skipped %v", ups, skipped)
		}
		return ups[0]
	}
	fromPri, fromSec := build(pri), build(sec)
	receive := func(to *store, u Update, role Role) (Result, *wire.Message) {
		m := wireTrip(t, u.Message(1, wire.ToFOTime(now)))
		res := ApplyBndUpd(to.lookup, m.ClientData(), Params{Role: role}, now)
		to.mustApply(res.Ops)
		return res, wireTrip(t, res.Message(m.XID, wire.ToFOTime(now)))
	}
	secRes, secReply := receive(sec, fromPri, Secondary)
	priRes, priReply := receive(pri, fromSec, Primary)
	if !secRes.Outcomes[0].Accepted {
		t.Errorf("secondary rejected the ABANDONED: %+v", secRes.Outcomes[0].Verdict)
	}
	if priRes.Outcomes[0].Accepted {
		t.Errorf("primary accepted the EXPIRED (%s): both sides took the other's binding", priRes.Outcomes[0].Verdict.Reason)
	}
	pri.mustApply(ApplyBndReply(pri.lookup, fromPri.Bindings, secReply.ClientData(), 0, now).Ops)
	sec.mustApply(ApplyBndReply(sec.lookup, fromSec.Bindings, priReply.ClientData(), 0, now).Ops)

	// Whatever is still owed (the primary's resend after
	// OutdatedBindingInformation) goes out until nothing is.
	for i := 0; i < 4 && len(SelectOwed(pri.all()))+len(SelectOwed(sec.all())) > 0; i++ {
		exchange(t, pri, sec, Primary, now)
		exchange(t, sec, pri, Secondary, now)
	}
	p, s := pri.get(r), sec.get(r)
	if p.Owed() || s.Owed() {
		t.Fatalf("still owed after the exchanges: primary %+v, secondary %+v", p, s)
	}
	if p.Status != fsm.StatusAbandoned || s.Status != fsm.StatusAbandoned {
		t.Fatalf("primary %v, secondary %v; want ABANDONED on both (the decline is the later information)", p.Status, s.Status)
	}
}

// TestReceivedTimeIsSendersLocalTime: for ACTIVE, EXPIRED and RELEASED the
// time a receiver compares for a binding it received is the time its
// sender compares for the same binding, whichever of the
// client-last-transaction-time and partner-raw-clt-time it has, through the
// wire. Two servers then compare the same two times and crossing updates
// are never both accepted (TestCrossingDeclineAndExpiry).
func TestReceivedTimeIsSendersLocalTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 8156))
	n := t0.Unix()
	now := at(7200)
	for i := 0; i < 500; i++ {
		all := []fsm.Status{fsm.StatusActive, fsm.StatusExpired, fsm.StatusReleased, fsm.StatusAbandoned,
			fsm.StatusReset, fsm.StatusFree, fsm.StatusFreeBackup}
		st := all[rng.IntN(len(all))]
		b := fsm.Binding{Resource: na("2001:db8::1"), Status: st, DUID: duidA, IAID: 1, PreferredLifetime: 60, ValidLifetime: 60,
			StartTimeOfState: n + rng.Int64N(3600)}
		if rng.IntN(2) == 0 {
			b.CLTT = n + rng.Int64N(3600)
		}
		if rng.IntN(2) == 0 {
			b.PartnerRawCLTT = n + rng.Int64N(3600)
		}
		if st == fsm.StatusActive {
			b.StateExpirationTime = n + 3600 + rng.Int64N(3600)
		}
		cd, err := ClientDataFor(b.DUID, []fsm.Binding{b}, now)
		if err != nil {
			t.Fatalf("%+v: %v", b, err)
		}
		m := wireTrip(t, wire.NewBndUpd(1, wire.ToFOTime(now), cd))
		recs, err := ParseClientData(m.ClientData(), now)
		if err != nil || len(recs) != 1 {
			t.Fatalf("%+v: parsed %v, %v", b, recs, err)
		}
		if got, want := ReceivedTime(&recs[0]), LocalTime(&b); got != want {
			t.Fatalf("%v with CLTT %d, partner-raw-clt-time %d, start %d: received time %d, sender's local time %d",
				st, b.CLTT, b.PartnerRawCLTT, b.StartTimeOfState, got, want)
		}
	}
}

// TestTieRunOutActive is simulation seed 18: the secondary's ACTIVE update
// (sent for a partner lifetime, the lease ending at 898) crossed the
// primary's own expiry of the lease at 900, and the secondary's reclaimer
// expired its copy too before the primary's EXPIRED arrived. The secondary
// accepts that EXPIRED (equal times: the primary's binding wins); the
// primary must not take the run-out ACTIVE as "bound" and accept it too,
// or the two swap versions and settle ACTIVE on one side only.
func TestTieRunOutActive(t *testing.T) {
	now := at(900)
	u := func(s int64) int64 { return at(s).Unix() }
	r := na("2001:db8:1::1007")
	primary := fsm.Binding{Resource: r, Status: fsm.StatusExpired, DUID: duidA, IAID: 1, CLTT: u(298),
		StartTimeOfState: u(900), Flags: fsm.FlagUpdateOwed}
	sent := fsm.Binding{Resource: r, Status: fsm.StatusActive, DUID: duidA, IAID: 1, PartnerRawCLTT: u(298),
		StartTimeOfState: u(14), StateExpirationTime: u(898), Flags: fsm.FlagUpdateOwed}
	fromSecondary := Record{Binding: sent}
	secondary := sent // then its reclaimer ran
	Free(now, &secondary, false)
	fromPrimary := Record{Binding: primary}
	pv := Decide(&primary, &fromSecondary, Primary, now)
	sv := Decide(&secondary, &fromPrimary, Secondary, now)
	if pv.Accept || !sv.Accept {
		t.Fatalf("primary accepts the run-out ACTIVE: %v (%s); secondary accepts EXPIRED: %v (%s); want false, true",
			pv.Accept, pv.Reason, sv.Accept, sv.Reason)
	}
	// While the lease still runs, the bound lease wins the tie.
	if v := Decide(&primary, &fromSecondary, Primary, at(897)); !v.Accept {
		t.Fatalf("before its end the ACTIVE lease should win the tie: %s", v.Reason)
	}
}

// TestDecideHeld: a lease held for a partner that lost its database
// (EXPIRED or RELEASED with a state expiration time ahead) wins over an
// unbound binding that is not held, or held less long, on both sides and
// whatever the times: the reviewer's case of a primary restored from an
// older snapshot, whose own EXPIRED of the lease (same client time) would
// otherwise win the tie as the primary's and end the secondary's hold.
func TestDecideHeld(t *testing.T) {
	now := at(700)
	u := func(s int64) int64 { return at(s).Unix() }
	r := na("2001:db8:1::11")
	restored := fsm.Binding{Resource: r, Status: fsm.StatusExpired, DUID: duidA, IAID: 1, CLTT: u(0),
		StartTimeOfState: u(601), Flags: fsm.FlagUpdateOwed}
	held := fsm.Binding{Resource: r, Status: fsm.StatusExpired, DUID: duidA, IAID: 1, PartnerRawCLTT: u(0),
		StartTimeOfState: u(601), StateExpirationTime: u(3060), Flags: fsm.FlagUpdateOwed}
	for _, c := range []struct {
		name   string
		local  fsm.Binding
		rec    fsm.Binding
		role   Role
		accept bool
	}{
		{"restored primary receives the held EXPIRED", restored, held, Primary, true},
		{"holding secondary receives the restored primary's EXPIRED", held, restored, Secondary, false},
		{"holding side receives a later RELEASED", held, func() fsm.Binding {
			b := restored
			b.Status = fsm.StatusReleased
			b.CLTT = u(650)
			b.StartTimeOfState = u(650)
			return b
		}(), Secondary, false},
		{"a longer hold wins", func() fsm.Binding { b := held; b.StateExpirationTime = u(2000); return b }(), held, Primary, true},
		{"after the hold: the usual rules (equal times, the primary's wins)", restored, held, Secondary, true},
	} {
		at := now
		if strings.HasPrefix(c.name, "after the hold") {
			at = time.Unix(u(3100), 0)
		}
		rec := Record{Binding: c.rec}
		if v := Decide(&c.local, &rec, c.role, at); v.Accept != c.accept {
			t.Errorf("%s: %+v, want accept=%v", c.name, v, c.accept)
		}
	}
	// Through the accepted binding: the restored primary now holds it too.
	rec := Record{Binding: held}
	nb := Accepted(&restored, &rec)
	if got, ok := HeldUntil(&nb, now); !ok || got != u(3060) || nb.Owed() {
		t.Fatalf("the restored primary stores %+v: want EXPIRED held until %d, its own update dropped", nb, u(3060))
	}
	if nb.ExpirationTime != 0 || nb.PartnerLifetime != 0 {
		t.Fatalf("a non-ACTIVE binding took the old client's partner times: %+v", nb)
	}
}
