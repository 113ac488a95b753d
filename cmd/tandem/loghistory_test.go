package main

import (
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/raftstore"
)

func historyJSON(t *testing.T, dir string, args ...string) jsonHistory {
	t.Helper()
	r := mustRun(t, append([]string{"log", "history", "--data-dir", dir, "--json"}, args...)...)
	var h jsonHistory
	decodeJSON(t, r.stdout, &h)
	return h
}

func TestLogHistoryResource(t *testing.T) {
	// NA 1: leased, then (after the snapshot) released. A bare address works.
	h := historyJSON(t, fx.dir, "--resource", naRes(1).Addr().String())
	if len(h.Events) != 2 {
		t.Fatalf("events %+v, want the lease and the release", h.Events)
	}
	lease, rel := h.Events[0], h.Events[1]
	if lease.Index != fx.leaseIndex[1] || lease.Before != "" || lease.After != "ACTIVE" || lease.Origin != "client" ||
		lease.Note != "REQUEST xid=000001" || lease.Binding == nil || lease.Binding.DUID != hex.EncodeToString([]byte(clientDUID(1))) {
		t.Errorf("lease event %+v", lease)
	}
	if rel.Index != fx.releaseIndex[0] || rel.Before != "ACTIVE" || rel.After != "RELEASED" || rel.Time != fmtTime(fx.cmdAt(rel.Index).time()) {
		t.Errorf("release event %+v", rel)
	}
	// NA 6 was deleted by the reclaimer: "na ADDR" form.
	h = historyJSON(t, fx.dir, "--resource", "na "+naRes(6).Addr().String())
	if len(h.Events) != 2 || h.Events[1].Op != "delete" || h.Events[1].Before != "ACTIVE" || h.Events[1].Origin != "reclaim" {
		t.Errorf("NA 6 events %+v, want lease then delete by reclaim", h.Events)
	}
	// A prefix.
	h = historyJSON(t, fx.dir, "--resource", pdRes(3).Prefix().String())
	if len(h.Events) != 1 || h.Events[0].Resource.Prefix != pdRes(3).Prefix().String() {
		t.Errorf("PD 3 events %+v", h.Events)
	}
}

func TestLogHistoryTimeWindow(t *testing.T) {
	// --since between NA 3's lease and its release: the state at --since
	// shows it ACTIVE and the only event is the release, ACTIVE -> RELEASED.
	rel := fx.cmdAt(fx.releaseIndex[2])
	since := rel.time().Add(-5 * time.Second).Format(time.RFC3339)
	h := historyJSON(t, fx.dir, "--resource", naRes(3).Addr().String(), "--since", since)
	if len(h.Initial) != 1 || h.Initial[0].State != "ACTIVE" {
		t.Errorf("initial %+v, want NA 3 ACTIVE", h.Initial)
	}
	if len(h.Events) != 1 || h.Events[0].Index != rel.index || h.Events[0].Before != "ACTIVE" {
		t.Errorf("events %+v, want only the release", h.Events)
	}
	// --until before the release: only the lease.
	h = historyJSON(t, fx.dir, "--resource", naRes(3).Addr().String(), "--until", since)
	if len(h.Events) != 1 || h.Events[0].After != "ACTIVE" {
		t.Errorf("events until %s: %+v, want only the lease", since, h.Events)
	}
	// Text: a readable line per change.
	r := mustRun(t, "log", "history", "--data-dir", fx.dir, "--resource", naRes(3).Addr().String())
	if !strings.Contains(r.stdout, "ACTIVE -> RELEASED") || !strings.Contains(r.stdout, "- -> ACTIVE") || !strings.Contains(r.stdout, "2 changes.") {
		t.Errorf("history text:\n%s", r.stdout)
	}
}

func TestLogHistoryDUID(t *testing.T) {
	// Client 900 has an address and a prefix from one txn.
	h := historyJSON(t, fx.dir, "--duid", hex.EncodeToString([]byte(clientDUID(900))))
	if len(h.Events) != 2 || h.Events[0].Index != fx.multiIndex || h.Events[1].Index != fx.multiIndex ||
		h.Events[0].Resource.Type == h.Events[1].Resource.Type {
		t.Errorf("client 900 events %+v, want its NA and PD from entry %d", h.Events, fx.multiIndex)
	}
	// Client 6's lease was deleted: the delete (which has no DUID) is its.
	h = historyJSON(t, fx.dir, "--duid", hex.EncodeToString([]byte(clientDUID(6))))
	if len(h.Events) != 2 || h.Events[1].Op != "delete" {
		t.Errorf("client 6 events %+v, want lease then delete", h.Events)
	}
}

func TestLogHistoryUsage(t *testing.T) {
	for _, args := range [][]string{
		{"log", "history", "--data-dir", fx.dir},
		{"log", "history", "--data-dir", fx.dir, "--resource", "10.0.0.1"},
		{"log", "history", "--data-dir", fx.dir, "--duid", "xyz"},
		{"log", "history", "--data-dir", fx.dir, "--duid", "0001", "--since", "yesterday"},
		{"log", "history", "--data-dir", fx.dir, "--duid", "0001", "--since", "2026-11-27T11:00:00Z", "--until", "2026-11-27T10:00:00Z"},
	} {
		r := tandem(t, args...)
		if r.code != exitUsage || r.stderr == "" {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}

func TestLogHistoryDamaged(t *testing.T) {
	// The release of NA 2 is damaged in the copy: reported, not fatal.
	r := mustRun(t, "log", "history", "--data-dir", fx.damagedDir, "--resource", naRes(2).Addr().String(), "--json")
	var h jsonHistory
	decodeJSON(t, r.stdout, &h)
	if len(h.Damaged) != 1 || h.Damaged[0].Index != fx.damagedIndex || !strings.Contains(r.stderr, "damaged") {
		t.Errorf("damaged %+v, stderr %q", h.Damaged, r.stderr)
	}
}

func TestLogDumpFilters(t *testing.T) {
	_, _, es := dumpLines(t, "--data-dir", fx.dir, "--resource", naRes(4).Addr().String())
	if len(es) != 2 || es[0].Index != fx.leaseIndex[4] || es[1].Index != fx.releaseIndex[3] {
		t.Fatalf("dump --resource: %+v", es)
	}
	for _, e := range es {
		if len(e.Ops) != 1 || e.Ops[0].Resource.Address != naRes(4).Addr().String() {
			t.Errorf("entry %d not narrowed to NA 4: %+v", e.Index, e.Ops)
		}
	}
	// The multi-op txn narrowed to its prefix op by --resource.
	_, _, es = dumpLines(t, "--data-dir", fx.dir, "--resource", pdRes(0xff).Prefix().String())
	if len(es) != 1 || es[0].Index != fx.multiIndex || len(es[0].Ops) != 1 || es[0].Ops[0].Resource.Type != "pd" {
		t.Errorf("dump --resource prefix: %+v", es)
	}
	// A time window keeps the commands made in it, of any kind.
	from, to := fx.cmdAt(fx.releaseIndex[0]), fx.cmdAt(fx.deleteIndex)
	_, _, es = dumpLines(t, "--data-dir", fx.dir, "--since", fmtTime(from.time()), "--until", fmtTime(to.time()))
	if len(es) != 6 || es[0].Index != from.index || es[5].Index != to.index {
		t.Errorf("dump --since/--until: %d entries %+v, want the 5 releases and the delete", len(es), es)
	}
}

// TestLogStates: a data dir with a sequence of endpoint records, some of
// them only checkpoints; log states prints the transitions only.
func TestLogStates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st, err := raftstore.Open(raftstore.Config{DataDir: dir, Clock: clock.NewFake(base)})
	if err != nil {
		t.Fatal(err)
	}
	const (
		startup = uint8(wire.StateStartup)
		rec     = uint8(wire.StateRecover)
		normal  = uint8(wire.StateNormal)
		done    = uint8(wire.StateRecoverDone)
		ci      = uint8(wire.StateCommInterrupted)
		pd      = uint8(wire.StatePartnerDown)
	)
	recs := []fsm.EndpointState{
		{State: startup, PreviousState: rec},
		{State: rec, PreviousState: startup, PartnerState: rec},
		{State: normal, PreviousState: done, PartnerState: normal},
		{State: normal, PreviousState: done, PartnerState: normal, LastOperating: 99}, // checkpoint only
		{State: ci, PreviousState: normal},
		{State: pd, PreviousState: ci, PartnerDownTime: base.Add(time.Hour).Unix()},
	}
	for i := range recs {
		ep := recs[i]
		if _, err := st.Apply(&fsm.Command{Type: fsm.CmdSetEndpoint, Time: base.Add(time.Duration(i) * time.Minute).UnixNano(),
			Origin: fsm.OriginFailover, Note: "endpoint", Endpoint: &ep}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	r := mustRun(t, "log", "states", "--data-dir", dir, "--json")
	var cs []jsonStateChange
	decodeJSON(t, r.stdout, &cs)
	var got []string
	for _, c := range cs {
		got = append(got, c.State+"/"+c.PartnerState)
	}
	want := "STARTUP/ RECOVER/RECOVER NORMAL/NORMAL COMMUNICATIONS-INTERRUPTED/ PARTNER-DOWN/"
	if strings.Join(got, " ") != want {
		t.Errorf("transitions %q, want %q", strings.Join(got, " "), want)
	}
	if len(cs) == 5 && cs[4].PartnerDown != fmtUnix(base.Add(time.Hour).Unix()) {
		t.Errorf("partner-down time %q", cs[4].PartnerDown)
	}
	r = mustRun(t, "log", "states", "--data-dir", dir, "--since", base.Add(3*time.Minute).Format(time.RFC3339))
	if strings.Contains(r.stdout, "STARTUP") || !strings.Contains(r.stdout, "COMMUNICATIONS-INTERRUPTED") || !strings.Contains(r.stdout, "PARTNER-DOWN") {
		t.Errorf("states --since:\n%s", r.stdout)
	}
}
