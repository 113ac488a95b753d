package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// snapshotCounts are the fixture's bindings when the snapshot was taken:
// 21 NA (20 + the multi-op txn) and 11 PD, all ACTIVE.
const snapNA, snapPD = 21, 11

func TestSnapshotInspectText(t *testing.T) {
	t.Parallel()
	r := mustRun(t, "snapshot", "inspect", fx.snapDir)
	for _, re := range []string{
		`(?m)^File:\s+` + regexp.QuoteMeta(filepath.Join(fx.snapDir, "state.bin")) + `$`,
		`(?m)^Format version:\s+1$`,
		fmt.Sprintf(`(?m)^Raft index:\s+%d$`, fx.snapIndex),
		`(?m)^Raft term:\s+\d+$`,
		`(?m)^Last command:\s+` + regexp.QuoteMeta(fx.cmdAt(fx.multiIndex).time().Format(time.RFC3339Nano)) + `$`,
		`(?m)^Created:\s+` + regexp.QuoteMeta(snapCreated.Format(time.RFC3339Nano)) + `$`,
		`(?m)^Size:\s+\d+ bytes$`,
		`(?m)^Server DUID:\s+` + hex.EncodeToString(fx.serverDUID) + `$`,
		`(?m)^Endpoint:\s+state 2 \(previous 1\) since 2026-11-27T10:00:10Z;.*communicated yes`,
		fmt.Sprintf(`(?m)^Bindings:\s+%d$`, snapNA+snapPD),
		`(?m)^Checksum:\s+ok$`,
		`(?m)^  TYPE\s+ACTIVE\s+TOTAL$`,
		fmt.Sprintf(`(?m)^  na\s+%d\s+%d$`, snapNA, snapNA),
		fmt.Sprintf(`(?m)^  pd\s+%d\s+%d$`, snapPD, snapPD),
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("inspect output does not match %s:\n%s", re, r.stdout)
		}
	}
}

func TestSnapshotInspectJSON(t *testing.T) {
	t.Parallel()
	// The flag after FILE works too.
	r := mustRun(t, "snapshot", "inspect", fx.snapDir, "--json")
	var j jsonSnapshotInspect
	decodeJSON(t, r.stdout, &j)
	fi, err := os.Stat(filepath.Join(fx.snapDir, "state.bin"))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !j.ChecksumOK || j.Error != nil:
		t.Errorf("checksum_ok %v, error %v", j.ChecksumOK, j.Error)
	case j.Version == nil || *j.Version != 1:
		t.Errorf("version %v", j.Version)
	case j.Index == nil || *j.Index != fx.snapIndex:
		t.Errorf("index %v, want %d", j.Index, fx.snapIndex)
	case j.Bindings == nil || *j.Bindings != snapNA+snapPD || j.BindingsRead != snapNA+snapPD:
		t.Errorf("bindings %v, read %d", j.Bindings, j.BindingsRead)
	case j.Counts["na"]["ACTIVE"] != snapNA || j.Counts["pd"]["ACTIVE"] != snapPD || j.Counts["ta"]["ACTIVE"] != 0 || j.Counts["na"]["RELEASED"] != 0:
		t.Errorf("counts %v", j.Counts)
	case j.SizeBytes != fi.Size():
		t.Errorf("size_bytes %d, file has %d", j.SizeBytes, fi.Size())
	case j.ServerDUID == nil || *j.ServerDUID != hex.EncodeToString(fx.serverDUID):
		t.Errorf("server_duid %v", j.ServerDUID)
	case j.Created == nil || *j.Created != snapCreated.Format(time.RFC3339Nano):
		t.Errorf("created %v, want %v", j.Created, snapCreated)
	case j.LastCommandTime == nil || *j.LastCommandTime != fx.cmdAt(fx.multiIndex).time().Format(time.RFC3339Nano):
		t.Errorf("last_command_time %v", j.LastCommandTime)
	case j.Endpoint == nil || j.Endpoint.State != fx.endpoint.State || !j.Endpoint.Communicated:
		t.Errorf("endpoint %+v", j.Endpoint)
	}
	// Stable keys: every documented key is present, even when null.
	m := map[string]any{}
	decodeJSON(t, r.stdout, &m)
	for _, k := range []string{"version", "index", "term", "last_command_time", "created", "size_bytes",
		"bindings", "counts", "server_duid", "endpoint", "checksum_ok", "error"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing from inspect --json", k)
		}
	}
}

// damagedSnapshot writes a copy of the fixture snapshot with one byte of the
// body flipped and returns its path.
func damagedSnapshot(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fx.snapDir, "state.bin"))
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-60] ^= 0x01 // inside the last records, past the header
	path := filepath.Join(t.TempDir(), "damaged.snap")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSnapshotInspectDamaged(t *testing.T) {
	t.Parallel()
	path := damagedSnapshot(t)
	r := tandem(t, "snapshot", "inspect", path)
	if r.code != 1 {
		t.Fatalf("inspect of a damaged snapshot: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`(?m)^Checksum:\s+BAD: .*corrupt snapshot`).MatchString(r.stdout) {
		t.Errorf("stdout does not say the checksum is BAD:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "error: ") || !strings.Contains(r.stderr, "damaged") || !strings.Contains(r.stderr, "do not restore") {
		t.Errorf("stderr does not say the snapshot is damaged and what to do:\n%s", r.stderr)
	}

	r = tandem(t, "snapshot", "inspect", "--json", path)
	if r.code != 1 {
		t.Fatalf("inspect --json of a damaged snapshot: exit %d, want 1", r.code)
	}
	var j jsonSnapshotInspect
	decodeJSON(t, r.stdout, &j)
	if j.ChecksumOK || j.Error == nil || !strings.Contains(*j.Error, "corrupt snapshot") {
		t.Errorf("checksum_ok %v, error %v", j.ChecksumOK, j.Error)
	}
}

func TestSnapshotInspectNotASnapshot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("these are not the bindings you are looking for\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{text, empty} {
		r := tandem(t, "snapshot", "inspect", path)
		if r.code != 1 || !strings.Contains(r.stderr, "not a Tandem snapshot") {
			t.Errorf("inspect %s: exit %d, stderr %q; want 1 and 'not a Tandem snapshot'", path, r.code, r.stderr)
		}
		if strings.Contains(r.stdout, "Raft index") {
			t.Errorf("inspect %s printed a header:\n%s", path, r.stdout)
		}
	}
	// A directory that is not a raft snapshot directory, and a missing file.
	if r := tandem(t, "snapshot", "inspect", dir); r.code != 1 || !strings.Contains(r.stderr, "without state.bin") {
		t.Errorf("inspect of a plain dir: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := tandem(t, "snapshot", "inspect", filepath.Join(dir, "nope")); r.code != 1 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("inspect of a missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}
