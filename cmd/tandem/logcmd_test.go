package main

import (
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// Tests that open the shared fixture with a log command do not run in
// parallel: raftstore.OpenLog creates and removes a "permTest" file in the
// snapshot store (raft's FileSnapshotStore permission check), so two readers
// of one data dir at the same moment can fail (reported to raftstore).

func TestLogInfoJSON(t *testing.T) {
	r := mustRun(t, "log", "info", "--data-dir", fx.dir, "--json")
	var j jsonLogInfo
	decodeJSON(t, r.stdout, &j)
	switch {
	case j.DataDir != fx.dir:
		t.Errorf("data_dir %q", j.DataDir)
	case j.DBBytes <= 0:
		t.Errorf("db_bytes %d", j.DBBytes)
	case j.FirstIndex != 1 || j.LastIndex != fx.lastIndex() || j.Entries != fx.lastIndex():
		t.Errorf("first %d last %d entries %d, want 1, %d, %d", j.FirstIndex, j.LastIndex, j.Entries, fx.lastIndex(), fx.lastIndex())
	case j.LastAppendedAt == nil:
		t.Errorf("last_appended_at missing")
	case len(j.Snapshots) != 1:
		t.Fatalf("snapshots %+v, want 1", j.Snapshots)
	}
	// The first entry is raft's bootstrap configuration, written without a
	// time: first_appended_at is null then.
	for _, ts := range []*string{j.FirstAppendedAt, j.LastAppendedAt} {
		if ts == nil {
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, *ts); err != nil {
			t.Errorf("appended time %q: %v", *ts, err)
		}
	}
	s := j.Snapshots[0]
	if s.ID != fx.snapID || s.Index != fx.snapIndex || s.Bindings == nil || *s.Bindings != snapNA+snapPD ||
		s.Error != nil || s.SizeBytes <= 0 || s.Created == nil || *s.Created != snapCreated.Format(time.RFC3339Nano) ||
		s.Path != filepath.Join(fx.snapDir, "state.bin") {
		t.Errorf("snapshot %+v (want path %s)", s, filepath.Join(fx.snapDir, "state.bin"))
	}
	// The path it prints is one snapshot inspect accepts.
	if r := tandem(t, "snapshot", "inspect", s.Path); r.code != 0 {
		t.Errorf("snapshot inspect of the path log info gives: exit %d: %s", r.code, r.stderr)
	}
	m := map[string]any{}
	decodeJSON(t, r.stdout, &m)
	for _, k := range []string{"data_dir", "db_bytes", "first_index", "last_index", "entries", "first_appended_at", "last_appended_at", "snapshots"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing from log info --json", k)
		}
	}
}

func TestLogInfoText(t *testing.T) {
	r := mustRun(t, "log", "info", "--data-dir", fx.dir)
	for _, re := range []string{
		`(?m)^Data dir:\s+` + regexp.QuoteMeta(fx.dir) + `$`,
		`(?m)^raft\.db:\s+\d+ bytes$`,
		fmt.Sprintf(`(?m)^Log entries:\s+%d \(index 1 to %d\)$`, fx.lastIndex(), fx.lastIndex()),
		`(?m)^Snapshots:\s+1$`,
		fmt.Sprintf(`(?m)^\s+%s\s+%d\s+\d+\s+\d+\s+\S+\s+\S+\s+%d$`, regexp.QuoteMeta(fx.snapID), fx.snapIndex, snapNA+snapPD),
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("log info output does not match %s:\n%s", re, r.stdout)
		}
	}
}

func TestLogInfoLockedDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := raftstore.Open(raftstore.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := tandem(t, "log", "info", "--data-dir", dir, "--timeout", "300ms")
	if r.code != 1 {
		t.Fatalf("log info on a live data dir: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, "locked") || !strings.Contains(r.stderr, "stop tandem") {
		t.Errorf("stderr does not say the dir is in use and to stop the daemon:\n%s", r.stderr)
	}
	if r.took > 10*time.Second {
		t.Errorf("took %v to give up with --timeout 300ms", r.took)
	}
}

func TestLogMissingDataDir(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope")
	for _, sub := range []string{"info", "dump", "replay"} {
		r := tandem(t, "log", sub, "--data-dir", missing)
		if r.code != 1 || !strings.Contains(r.stderr, "does not exist") || !strings.Contains(r.stderr, "--data-dir") {
			t.Errorf("log %s on a missing dir: exit %d, stderr %q", sub, r.code, r.stderr)
		}
	}
	// A directory that exists but holds no raft.db.
	empty := t.TempDir()
	r := tandem(t, "log", "info", "--data-dir", empty)
	if r.code != 1 || !strings.Contains(r.stderr, "raft.db does not exist") {
		t.Errorf("log info on an empty dir: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(empty, "raft.db")); err == nil {
		t.Errorf("log info created raft.db in %s", empty)
	}
}

// dumpLines runs log dump with args and decodes each line twice: as a
// generic map (to check key names) and as jsonLogEntry.
func dumpLines(t *testing.T, args ...string) (result, []map[string]any, []jsonLogEntry) {
	t.Helper()
	r := mustRun(t, append([]string{"log", "dump"}, args...)...)
	var maps []map[string]any
	var entries []jsonLogEntry
	for i, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if line == "" {
			t.Fatalf("empty line %d in dump output", i+1)
		}
		var m map[string]any
		var e jsonLogEntry
		decodeJSON(t, line, &m)
		decodeJSON(t, line, &e)
		maps = append(maps, m)
		entries = append(entries, e)
	}
	return r, maps, entries
}

func TestLogDump(t *testing.T) {
	r, maps, entries := dumpLines(t, "--data-dir", fx.dir)
	if r.stderr != "" {
		t.Errorf("stderr: %s", r.stderr)
	}
	if uint64(len(entries)) != fx.lastIndex() {
		t.Fatalf("%d lines, want %d", len(entries), fx.lastIndex())
	}
	for i, e := range entries {
		if e.Index != uint64(i+1) || e.Term == 0 || e.Type == "" || e.Error != "" || (e.Type == "command" && e.AppendedAt == "") {
			t.Errorf("line %d: %+v", i+1, e)
		}
	}
	if entries[0].Type != "configuration" {
		t.Errorf("entry 1 is %q, want the bootstrap configuration", entries[0].Type)
	}
	at := func(index uint64) (map[string]any, jsonLogEntry) { return maps[index-1], entries[index-1] }

	// Every fixture command is in the log at its index with its time and type.
	for _, a := range fx.cmds {
		_, e := at(a.index)
		if e.Type != "command" || e.Command != a.cmd.Type.String() || e.Origin != a.cmd.Origin.String() ||
			e.Note != a.cmd.Note || e.Time != a.time().Format(time.RFC3339Nano) {
			t.Errorf("entry %d = %+v, want %v command at %v", a.index, e, a.cmd.Type, a.time())
		}
	}
	if _, e := at(fx.cmds[0].index); e.ServerDUID != hex.EncodeToString(fx.serverDUID) {
		t.Errorf("set-server-duid entry: server_duid %q", e.ServerDUID)
	}
	if _, e := at(fx.cmds[1].index); e.Endpoint == nil || *e.Endpoint != endpointJSON(fx.endpoint) {
		t.Errorf("set-endpoint entry: endpoint %+v", e.Endpoint)
	}

	// The txn with two ops, checked key by key as a script would read it.
	m, _ := at(fx.multiIndex)
	ops, _ := m["ops"].([]any)
	if len(ops) != 2 {
		t.Fatalf("multi-op txn: ops = %v", m["ops"])
	}
	op0, op1 := ops[0].(map[string]any), ops[1].(map[string]any)
	if !reflect.DeepEqual(op0["resource"], map[string]any{"type": "na", "address": "2001:db8:1::100"}) ||
		!reflect.DeepEqual(op1["resource"], map[string]any{"type": "pd", "prefix": "2001:db8:100:ff00::/56"}) {
		t.Errorf("op resources: %v, %v", op0["resource"], op1["resource"])
	}
	for _, op := range []map[string]any{op0, op1} {
		b, _ := op["binding"].(map[string]any)
		if op["op"] != "put" || op["if_rev"] != 0.0 || b == nil || b["state"] != "ACTIVE" ||
			b["duid"] != hex.EncodeToString([]byte(clientDUID(900))) || b["iaid"] != 9.0 ||
			b["valid_until"] == nil || b["cltt"] == nil || b["owed"] != true {
			t.Errorf("multi-op txn op: %v", op)
		}
		if _, ok := b["rev"]; ok {
			t.Errorf("an op's binding has a rev: %v", b)
		}
	}

	// A release (put with a precondition and a flag) and a delete.
	_, e := at(fx.releaseIndex[0])
	if len(e.Ops) != 1 || e.Ops[0].Op != "put" || e.Ops[0].IfRev == nil || *e.Ops[0].IfRev != fx.leaseIndex[1] ||
		e.Ops[0].Binding == nil || e.Ops[0].Binding.State != "RELEASED" || e.Ops[0].Binding.ValidUntil != "" ||
		!reflect.DeepEqual(e.Ops[0].Binding.Flags, []string{"update-owed"}) {
		t.Errorf("release entry: %+v", e)
	}
	_, e = at(fx.deleteIndex)
	if len(e.Ops) != 1 || e.Ops[0].Op != "delete" || e.Ops[0].Binding != nil || e.Ops[0].Resource.Address != "2001:db8:1::6" ||
		e.Ops[0].IfRev == nil || *e.Ops[0].IfRev != fx.leaseIndex[6] || e.Origin != "reclaim" {
		t.Errorf("delete entry: %+v", e)
	}
	// An op without a precondition has no if_rev key.
	m, _ = at(fx.leaseIndex[21])
	if _, ok := m["ops"].([]any)[0].(map[string]any)["if_rev"]; ok {
		t.Errorf("unconditional op has if_rev: %v", m["ops"])
	}
}

func TestLogDumpRange(t *testing.T) {
	from, to := fx.leaseIndex[3], fx.leaseIndex[7]
	_, _, entries := dumpLines(t, "--data-dir", fx.dir, "--from", strconv.FormatUint(from, 10), "--to", strconv.FormatUint(to, 10))
	if uint64(len(entries)) != to-from+1 || entries[0].Index != from || entries[len(entries)-1].Index != to {
		t.Errorf("--from %d --to %d gave %d lines (%d..%d)", from, to, len(entries), entries[0].Index, entries[len(entries)-1].Index)
	}
	if r := tandem(t, "log", "dump", "--data-dir", fx.dir, "--from", "9", "--to", "3"); r.code != exitUsage || !strings.Contains(r.stderr, "after --to") {
		t.Errorf("--from after --to: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestLogDumpDamagedEntry(t *testing.T) {
	r, _, entries := dumpLines(t, "--data-dir", fx.damagedDir)
	if uint64(len(entries)) != fx.lastIndex() {
		t.Fatalf("dump stopped at the damaged entry: %d lines, want %d", len(entries), fx.lastIndex())
	}
	d := entries[fx.damagedIndex-1]
	if d.Index != fx.damagedIndex || !strings.Contains(d.Error, "corrupt log entry") || d.Command != "" || d.Ops != nil {
		t.Errorf("damaged entry line: %+v", d)
	}
	want := fmt.Sprintf("warning: entry %d is damaged: ", fx.damagedIndex)
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	for _, e := range entries {
		if e.Index != fx.damagedIndex && e.Error != "" {
			t.Errorf("entry %d reported damaged: %s", e.Index, e.Error)
		}
	}
}

// replayJSONRun runs log replay --json on dir with args.
func replayJSONRun(t *testing.T, dir string, args ...string) (result, jsonReplay) {
	t.Helper()
	r := mustRun(t, append([]string{"log", "replay", "--data-dir", dir, "--json"}, args...)...)
	var j jsonReplay
	decodeJSON(t, r.stdout, &j)
	return r, j
}

// bindingStates maps "na 2001:db8:1::1" to its state, and checks the
// bindings are in resource order.
func bindingStates(t *testing.T, bs []jsonBinding) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, b := range bs {
		key := b.Type + " " + b.Address + b.Prefix
		m[key] = b.State
	}
	if len(m) != len(bs) {
		t.Errorf("%d bindings but %d distinct resources", len(bs), len(m))
	}
	return m
}

func TestLogReplayLastIndex(t *testing.T) {
	for _, tc := range []struct {
		name     string
		index    uint64
		fromSnap bool
	}{
		{"before the snapshot", fx.leaseIndex[19], false},
		{"after the snapshot", fx.releaseIndex[3], true},
		{"the end", fx.lastIndex(), true},
	} {
		_, j := replayJSONRun(t, fx.dir, "--last-index", strconv.FormatUint(tc.index, 10))
		want := fx.expected(func(a appliedCmd) bool { return a.index <= tc.index }, 0)
		if got := bindingStates(t, j.Bindings); !maps.Equal(got, want) {
			t.Errorf("%s: replay --last-index %d:\n got %v\nwant %v", tc.name, tc.index, got, want)
		}
		if j.AsOfIndex != tc.index || j.TargetLastIndex == nil || *j.TargetLastIndex != tc.index || j.Total != len(want) {
			t.Errorf("%s: as_of_index %d, target %v, total %d", tc.name, j.AsOfIndex, j.TargetLastIndex, j.Total)
		}
		if gotSnap := j.FromSnapshot != nil; gotSnap != tc.fromSnap || (gotSnap && (j.FromSnapshot.ID != fx.snapID || j.FromSnapshot.Index != fx.snapIndex)) {
			t.Errorf("%s: from_snapshot %+v, want from the snapshot: %v", tc.name, j.FromSnapshot, tc.fromSnap)
		}
		if j.ServerDUID == nil || *j.ServerDUID != hex.EncodeToString(fx.serverDUID) || j.Endpoint != endpointJSON(fx.endpoint) {
			t.Errorf("%s: server_duid %v endpoint %+v", tc.name, j.ServerDUID, j.Endpoint)
		}
		if len(j.Damaged) != 0 {
			t.Errorf("%s: damaged %v", tc.name, j.Damaged)
		}
	}
}

func TestLogReplayUntil(t *testing.T) {
	for _, tc := range []struct {
		name     string
		until    time.Time
		fromSnap bool
	}{
		{"between commands, before the snapshot", fx.cmdAt(fx.leaseIndex[9]).time().Add(5 * time.Second), false},
		{"exactly at a command's time", fx.cmdAt(fx.leaseIndex[12]).time(), false},
		{"after the snapshot", fx.cmdAt(fx.releaseIndex[2]).time().Add(5 * time.Second), true},
	} {
		_, j := replayJSONRun(t, fx.dir, "--until", tc.until.Format(time.RFC3339Nano))
		want := fx.expected(func(a appliedCmd) bool { return !a.time().After(tc.until) }, 0)
		if got := bindingStates(t, j.Bindings); !maps.Equal(got, want) {
			t.Errorf("%s: replay --until %v:\n got %v\nwant %v", tc.name, tc.until, got, want)
		}
		var last appliedCmd
		for _, a := range fx.cmds {
			if !a.time().After(tc.until) {
				last = a
			}
		}
		if j.AsOfTime == nil || *j.AsOfTime != last.time().Format(time.RFC3339Nano) || j.AsOfIndex != last.index {
			t.Errorf("%s: as of index %d time %v, want the last command before --until: %d at %v",
				tc.name, j.AsOfIndex, j.AsOfTime, last.index, last.time())
		}
		if (j.FromSnapshot != nil) != tc.fromSnap {
			t.Errorf("%s: from_snapshot %+v", tc.name, j.FromSnapshot)
		}
	}
}

func TestLogReplayText(t *testing.T) {
	r := mustRun(t, "log", "replay", "--data-dir", fx.dir)
	want := fx.expected(func(appliedCmd) bool { return true }, 0)
	for _, re := range []string{
		`(?m)^TYPE\s+ADDRESS/PREFIX\s+STATE\s+DUID\s+IAID\s+VALID UNTIL\s+CLTT$`,
		`(?m)^na\s+2001:db8:1::1\s+RELEASED\s+` + hex.EncodeToString([]byte(clientDUID(1))) + `\s+1\s+-\s+2026-`,
		`(?m)^na\s+2001:db8:1::7\s+ACTIVE\s+\S+\s+7\s+2026-11-27T11:\d\d:\d\dZ\s+2026-11-27T10:`,
		`(?m)^pd\s+2001:db8:100:ff00::/56\s+ACTIVE\s+`,
		fmt.Sprintf(`(?m)^As of index %d \(term \d+\), last command at %s\.$`, fx.lastIndex(), regexp.QuoteMeta(fx.cmds[len(fx.cmds)-1].time().Format(time.RFC3339Nano))),
		fmt.Sprintf(`(?m)^Started from snapshot %s at index %d, applied %d log commands; damaged entries skipped: 0\.$`,
			regexp.QuoteMeta(fx.snapID), fx.snapIndex, len(fx.cmds)-countCmdsUpTo(fx.snapIndex)),
		fmt.Sprintf(`(?m)^Bindings: %d \(na: ACTIVE 20, RELEASED 5; pd: ACTIVE 11\)\.$`, len(want)),
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("replay output does not match %s:\n%s", re, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "2001:db8:1::6 ") {
		t.Errorf("the deleted binding is in the table")
	}
	// Rows are in resource order: all na before pd, addresses ascending.
	i1, i2, ip := strings.Index(r.stdout, "2001:db8:1::2 "), strings.Index(r.stdout, "2001:db8:1::10 "), strings.Index(r.stdout, "\npd ")
	if !(i1 < i2 && i2 < ip) {
		t.Errorf("rows not in resource order:\n%s", r.stdout)
	}
}

func countCmdsUpTo(index uint64) int {
	n := 0
	for _, a := range fx.cmds {
		if a.index <= index {
			n++
		}
	}
	return n
}

func TestLogReplayFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--last-index", "5", "--until", "2026-11-27T10:00:00Z"}, "mutually exclusive"},
		{[]string{"--until", "yesterday"}, "not an RFC 3339 time"},
		{[]string{"--last-index", "0"}, "at least 1"},
		{[]string{"--last-index", "-3"}, "invalid value"},
	} {
		r := tandem(t, append([]string{"log", "replay", "--data-dir", fx.dir}, tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("replay %q: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, exitUsage, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("replay %q printed to stdout: %s", tc.args, r.stdout)
		}
	}
}

func TestLogReplayDamagedEntry(t *testing.T) {
	r, j := replayJSONRun(t, fx.damagedDir)
	if len(j.Damaged) != 1 || j.Damaged[0].Index != fx.damagedIndex || !strings.Contains(j.Damaged[0].Error, "corrupt log entry") {
		t.Errorf("damaged = %+v, want entry %d", j.Damaged, fx.damagedIndex)
	}
	want := fmt.Sprintf("warning: entry %d is damaged", fx.damagedIndex)
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	// The damaged release of NA 2 changed nothing: NA 2 is still ACTIVE.
	exp := fx.expected(func(appliedCmd) bool { return true }, fx.damagedIndex)
	if exp[naRes(2).String()] != "ACTIVE" {
		t.Fatalf("test bug: damaged entry is not the release of NA 2")
	}
	if got := bindingStates(t, j.Bindings); !maps.Equal(got, exp) {
		t.Errorf("replay skipping the damaged entry:\n got %v\nwant %v", got, exp)
	}
}

// TestLogReplayCompacted checks the error for a point older than the log
// and every kept snapshot.
func TestLogReplayCompacted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := raftstore.Open(raftstore.Config{DataDir: dir, TrailingLogs: 2})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 10; n++ {
		b := activeBinding(naRes(n), n, 1, base.Add(time.Duration(n)*time.Second))
		if _, err := st.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: base.Add(time.Duration(n) * time.Second).UnixNano(),
			Ops: []fsm.Op{putOp(b, 0)}}); err != nil {
			t.Fatal(err)
		}
	}
	meta, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	r := tandem(t, "log", "replay", "--data-dir", dir, "--last-index", "3")
	if r.code != 1 || !strings.Contains(r.stderr, "not replayable") {
		t.Errorf("replay before the log start: exit %d, stderr %q", r.code, r.stderr)
	}
	// The snapshot's point itself is fine.
	_, j := replayJSONRun(t, dir, "--last-index", strconv.FormatUint(meta.Index, 10))
	if j.Total != 10 || j.FromSnapshot == nil || j.Applied != 0 {
		t.Errorf("replay at the snapshot: total %d, from %+v, applied %d", j.Total, j.FromSnapshot, j.Applied)
	}
	// dump --from 1 says where the log starts now.
	r = mustRun(t, "log", "dump", "--data-dir", dir, "--from", "1")
	if !strings.Contains(r.stderr, "warning: the log starts at entry") {
		t.Errorf("dump --from 1 of a compacted log: stderr %q", r.stderr)
	}
}
