package main

// Tests of `snapshot save`, `snapshot restore` and `failover continue`
// against a real daemon: the tandem binary runs `serve` on loopback (a
// high UDP port, the control socket in a temp dir), the commands run as
// separate processes, and data dirs are checked with raftstore.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/control"
)

// daemonConfig writes a configuration for a daemon on lo with data dir
// dataDir and returns its path and control socket. With failover, the node
// is a secondary whose primary never comes.
func daemonConfig(t *testing.T, dataDir string, failover bool) (cfgPath, sock string) {
	t.Helper()
	dir := t.TempDir()
	sock = filepath.Join(dir, "tandem.sock")
	body := fmt.Sprintf(`data-dir = %q
control-socket = %q

[dhcp]
interfaces = ["lo"]
port = %d

[[subnet]]
prefix = "2001:db8:1::/64"
pools = ["2001:db8:1::/108"]
`, dataDir, sock, freePort(t, "udp"))
	if failover {
		body += fmt.Sprintf(`
[failover]
relationship = "pair-a"
role = "secondary"
local = "[::1]:%d"
peer = "[::1]:%d"
mclt = "10m"
`, freePort(t, "tcp"), freePort(t, "tcp"))
	}
	cfgPath = filepath.Join(dir, "tandem.toml")
	if err := os.WriteFile(cfgPath, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, sock
}

// daemonProc is a running `tandem serve`.
type daemonProc struct {
	cmd    *exec.Cmd
	sock   string
	stderr *lockedBuffer
	done   chan error
}

// startDaemon runs `tandem serve` and waits until its control socket answers.
func startDaemon(t *testing.T, cfgPath, sock string) *daemonProc {
	t.Helper()
	d := &daemonProc{cmd: exec.Command(binPath, "serve", "--config", cfgPath), sock: sock, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	d.cmd.Env, d.cmd.Stderr = cleanEnv(), d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := control.NewClient(sock).Status(ctx)
		cancel()
		if err == nil {
			return d
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("tandem serve exited: %v\n%s", err, d.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's control socket %s did not answer within 30s: %v\n%s", sock, err, d.stderr.String())
		}
	}
}

// stop sends SIGTERM and waits for the daemon to exit (idempotent).
func (d *daemonProc) stop(t *testing.T) {
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("tandem serve: %v\n%s", err, d.stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("tandem serve did not stop on SIGTERM within 30s")
	}
}

// makeDataDir makes a data dir holding n ACTIVE leases with
// testdata/mkdatadir (valid for a day, so no reclamation changes them).
func makeDataDir(t *testing.T, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command(mkPath, dir, fmt.Sprint(n)).CombinedOutput(); err != nil {
		t.Fatalf("mkdatadir: %v\n%s", err, out)
	}
	return dir
}

// replayOf reads a (stopped) data dir with `tandem log replay --json`: the
// bindings (the JSON text of the array), the index they are as of, and the endpoint
// record. The replay runs in the tandem binary, so a 100k-binding
// comparison stays cheap when the tests run under the race detector.
func replayOf(t *testing.T, dir string) (bindings string, index uint64, ep jsonEndpoint) {
	t.Helper()
	out := mustRun(t, "log", "replay", "--data-dir", dir, "--json").stdout
	// Cut the bindings array out as text and decode only the rest: decoding
	// 40 MB of JSON under the race detector takes longer than the replay.
	i, j := strings.Index(out, `"bindings": [`), strings.Index(out, `"server_duid":`)
	if i < 0 || j < i {
		t.Fatalf("log replay --json: no bindings array in %.300q", out)
	}
	var rep struct {
		AsOfIndex uint64       `json:"as_of_index"`
		Endpoint  jsonEndpoint `json:"endpoint"`
	}
	decodeJSON(t, out[:i]+out[j:], &rep)
	return out[i:j], rep.AsOfIndex, rep.Endpoint
}

func statusJSON(t *testing.T, sock string) map[string]any {
	t.Helper()
	var st map[string]any
	decodeJSON(t, mustRun(t, "status", "--socket", sock, "--json").stdout, &st)
	return st
}

// TestSnapshotSaveRestoreRoundTrip: 100k bindings saved from a running
// daemon, inspected, restored into its (stopped) data dir; the restored dir
// holds the same bindings at the same index, the old dir is kept, the
// restored standalone server starts held and `failover continue` releases it.
func TestSnapshotSaveRestoreRoundTrip(t *testing.T) {
	const n = 100_000
	start := time.Now()
	dir := makeDataDir(t, n)
	t.Logf("made a data dir of %d bindings in %v", n, time.Since(start).Round(time.Millisecond))
	cfg, sock := daemonConfig(t, dir, false)
	d := startDaemon(t, cfg, sock)
	file := filepath.Join(t.TempDir(), "tandem.snap")

	r := mustRun(t, "snapshot", "save", file, "--socket", sock, "--json")
	var saved jsonSnapshotSave
	decodeJSON(t, r.stdout, &saved)
	fi, err := os.Stat(file)
	if err != nil || saved.Bindings != n || saved.Index == 0 || saved.Bytes != fi.Size() {
		t.Fatalf("save: %+v, file %v %v", saved, fi, err)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("save left %s.tmp: %v", file, err)
	}
	t.Logf("saved %d bindings, %d bytes, in %.1f ms (tandem snapshot save, this test)", n, saved.Bytes, saved.DurationMS)
	if r := mustRun(t, "snapshot", "save", file, "--socket", sock); !strings.Contains(r.stdout, fmt.Sprintf("%d bindings", n)) || !strings.Contains(r.stdout, "verified") {
		t.Fatalf("save text: %q", r.stdout)
	}

	var ins jsonSnapshotInspect
	decodeJSON(t, mustRun(t, "snapshot", "inspect", file, "--json").stdout, &ins)
	if !ins.ChecksumOK || ins.BindingsRead != n || ins.Index == nil || *ins.Index != saved.Index || ins.Counts["na"]["ACTIVE"] != n {
		t.Fatalf("inspect of the saved file: %+v", ins)
	}
	d.stop(t)
	srcBindings, srcIndex, _ := replayOf(t, dir)
	if srcIndex != saved.Index {
		t.Fatalf("the source dir is at index %d after the daemon stopped, the snapshot at %d", srcIndex, saved.Index)
	}

	r = mustRun(t, "snapshot", "restore", file, "--data-dir", dir, "--yes", "--json")
	var res jsonSnapshotRestore
	decodeJSON(t, r.stdout, &res)
	if res.Index != saved.Index || res.Bindings != n || !res.Held || !strings.HasPrefix(res.Previous, dir+".before-restore-") {
		t.Fatalf("restore: %+v", res)
	}
	got, idx, ep := replayOf(t, dir)
	if got != srcBindings || idx != saved.Index || strings.Count(got, `"duid"`) != n || !ep.HeldInStartup {
		t.Fatalf("restored dir: index %d (want %d), same bindings %v, held %v", idx, saved.Index, got == srcBindings, ep.HeldInStartup)
	}
	if old, oldIdx, _ := replayOf(t, res.Previous); old != srcBindings || oldIdx != srcIndex {
		t.Fatalf("the old data dir kept in %s does not hold the old data", res.Previous)
	}
	// inspect reads the raft snapshot dir the restore installed.
	snapDirs, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*"))
	if len(snapDirs) != 1 {
		t.Fatalf("restored snapshots: %v", snapDirs)
	}
	decodeJSON(t, mustRun(t, "snapshot", "inspect", snapDirs[0], "--json").stdout, &ins)
	if !ins.ChecksumOK || ins.BindingsRead != n || *ins.Index != saved.Index || ins.Endpoint == nil || !ins.Endpoint.HeldInStartup {
		t.Fatalf("inspect of the restored snapshot dir: %+v", ins)
	}

	// The restored standalone server is held until `failover continue`.
	d = startDaemon(t, cfg, sock)
	if st := statusJSON(t, sock); st["held_in_startup"] != true {
		t.Fatalf("restored standalone server: held_in_startup %v", st["held_in_startup"])
	}
	if r := mustRun(t, "status", "--socket", sock); !strings.Contains(r.stdout, "HELD") {
		t.Fatalf("status text does not show the hold:\n%s", r.stdout)
	}
	if r := mustRun(t, "failover", "continue", "--socket", sock, "--yes"); !strings.Contains(r.stdout, "released") {
		t.Fatalf("continue: %q", r.stdout)
	}
	if st := statusJSON(t, sock); st["held_in_startup"] != false {
		t.Fatalf("after continue: held_in_startup %v", st["held_in_startup"])
	}
	if r := tandem(t, "failover", "continue", "--socket", sock, "--yes"); r.code != exitFailure || !strings.Contains(r.stderr, "not held") {
		t.Fatalf("second continue: code %d, stderr %q", r.code, r.stderr)
	}
	d.stop(t)
	// The log after a restore holds only what came after the snapshot: the
	// release is its last endpoint record.
	var last map[string]any
	for _, line := range strings.Split(strings.TrimSpace(mustRun(t, "log", "dump", "--data-dir", dir).stdout), "\n") {
		var e map[string]any
		decodeJSON(t, line, &e)
		if e["endpoint"] != nil {
			last = e
		}
	}
	if ep, _ := last["endpoint"].(map[string]any); ep == nil || ep["held_in_startup"] != false || last["origin"] != "admin" {
		t.Fatalf("the release was not stored: last endpoint entry %v", last)
	}
}

// TestSnapshotRestoreRefused: restore is refused, with the data dir
// untouched, while a daemon runs on it (the error names its PID) and when
// the snapshot file is damaged, missing or not a snapshot.
func TestSnapshotRestoreRefused(t *testing.T) {
	dir := makeDataDir(t, 2000)
	cfg, sock := daemonConfig(t, dir, false)
	d := startDaemon(t, cfg, sock)
	file := filepath.Join(t.TempDir(), "s.snap")
	mustRun(t, "snapshot", "save", file, "--socket", sock)

	r := tandem(t, "snapshot", "restore", file, "--data-dir", dir, "--yes")
	if r.code != exitFailure || !strings.Contains(r.stderr, fmt.Sprintf("process %d", d.cmd.Process.Pid)) || !strings.Contains(r.stderr, "stop") {
		t.Fatalf("restore while the daemon runs: code %d, stderr %q", r.code, r.stderr)
	}
	d.stop(t)
	before, beforeIdx, _ := replayOf(t, dir)
	untouched := func(what string) {
		t.Helper()
		if m, _ := filepath.Glob(dir + ".*"); len(m) != 0 {
			t.Fatalf("%s: left %v", what, m)
		}
		if got, idx, _ := replayOf(t, dir); got != before || idx != beforeIdx {
			t.Fatalf("%s: the data dir changed", what)
		}
	}
	untouched("locked")

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data...)
	bad[len(bad)/2] ^= 0x08
	badFile := filepath.Join(t.TempDir(), "damaged.snap")
	os.WriteFile(badFile, bad, 0o600)
	r = tandem(t, "snapshot", "restore", badFile, "--data-dir", dir, "--yes")
	if r.code != exitFailure || !strings.Contains(r.stderr, "damaged") || !strings.Contains(r.stderr, "nothing was changed") {
		t.Fatalf("damaged file: code %d, stderr %q", r.code, r.stderr)
	}
	untouched("damaged file")

	r = tandem(t, "snapshot", "restore", filepath.Join(t.TempDir(), "missing.snap"), "--data-dir", dir, "--yes")
	if r.code != exitFailure || !strings.Contains(r.stderr, "does not exist") {
		t.Fatalf("missing file: code %d, stderr %q", r.code, r.stderr)
	}
	r = tandem(t, "snapshot", "restore", cfg, "--data-dir", dir, "--yes")
	if r.code != exitFailure || !strings.Contains(r.stderr, "not a Tandem snapshot") && !strings.Contains(r.stderr, "written by Tandem") {
		t.Fatalf("not a snapshot: code %d, stderr %q", r.code, r.stderr)
	}
	untouched("bad files")
	if r := tandem(t, "snapshot", "restore", file, "--yes"); r.code != exitUsage {
		t.Fatalf("no --data-dir: code %d, stderr %q", r.code, r.stderr)
	}
}

// TestFailoverRestoredHeldThenContinue: a [failover] node restored from a
// snapshot starts held in STARTUP (status shows it) and `failover
// continue` releases it; continue on a node that is not held is refused.
func TestFailoverRestoredHeldThenContinue(t *testing.T) {
	dir := makeDataDir(t, 500)
	cfg, sock := daemonConfig(t, dir, true)
	d := startDaemon(t, cfg, sock)
	if r := tandem(t, "failover", "continue", "--socket", sock, "--yes"); r.code != exitFailure || !strings.Contains(r.stderr, "not held") {
		t.Fatalf("continue on a node that is not held: code %d, stderr %q", r.code, r.stderr)
	}
	file := filepath.Join(t.TempDir(), "s.snap")
	mustRun(t, "snapshot", "save", file, "--socket", sock)
	d.stop(t)
	if r := mustRun(t, "snapshot", "restore", file, "--data-dir", dir, "--yes"); !strings.Contains(r.stdout, "HELD") {
		t.Fatalf("restore output does not mention the hold: %q", r.stdout)
	}

	d = startDaemon(t, cfg, sock)
	st := statusJSON(t, sock)
	fo, _ := st["failover"].(map[string]any)
	if st["held_in_startup"] != true || fo["held_in_startup"] != true || fo["state"] != "STARTUP" {
		t.Fatalf("restored failover node: held %v, failover %v", st["held_in_startup"], fo)
	}
	if r := mustRun(t, "status", "--socket", sock); !strings.Contains(r.stdout, "HELD") {
		t.Fatalf("status text does not show the hold:\n%s", r.stdout)
	}
	r := mustRun(t, "failover", "continue", "--socket", sock, "--yes", "--json")
	var after map[string]any
	decodeJSON(t, r.stdout, &after)
	if fo, _ := after["failover"].(map[string]any); after["held_in_startup"] != false || fo["held_in_startup"] != false {
		t.Fatalf("after continue: %v", after)
	}
	d.stop(t)
	if _, _, ep := replayOf(t, dir); ep.HeldInStartup || ep.Communicated {
		t.Fatalf("stored record after continue: %+v", ep)
	}
}

// TestSnapshotCommandErrors: no daemon, a control socket the user may not
// open, and bad FILE arguments each give a message that says what to do.
func TestSnapshotCommandErrors(t *testing.T) {
	out := filepath.Join(t.TempDir(), "s.snap")
	missing := filepath.Join(t.TempDir(), "nobody.sock")
	for _, args := range [][]string{
		{"snapshot", "save", out, "--socket", missing},
		{"failover", "continue", "--socket", missing, "--yes"},
	} {
		r := tandem(t, args...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "no tandem daemon is listening on "+missing) {
			t.Fatalf("%v: code %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed save left %s", out)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("a failed save left %s.tmp", out)
	}
	if r := tandem(t, "snapshot", "save", "--socket", missing); r.code != exitUsage {
		t.Fatalf("save without FILE: code %d", r.code)
	}

	dir := makeDataDir(t, 10)
	cfg, sock := daemonConfig(t, dir, false)
	startDaemon(t, cfg, sock)
	r := tandem(t, "snapshot", "save", filepath.Join(t.TempDir(), "no", "such", "dir", "s.snap"), "--socket", sock)
	if r.code != exitFailure || !strings.Contains(r.stderr, "check that the directory exists") {
		t.Fatalf("save into a missing directory: code %d, stderr %q", r.code, r.stderr)
	}
	isDir := t.TempDir()
	r = tandem(t, "snapshot", "save", isDir, "--socket", sock)
	if r.code != exitFailure || !strings.Contains(r.stderr, "is a directory") {
		t.Fatalf("save onto a directory: code %d, stderr %q", r.code, r.stderr)
	}

	// Permission denied: the socket is root's, mode 0600; run the client as nobody.
	if os.Geteuid() != 0 {
		t.Log("not root: the permission-denied case needs root to run the client as another user")
		return
	}
	bin := filepath.Join(t.TempDir(), "tandem")
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, b, 0o755)
	for _, p := range []string{filepath.Dir(bin), filepath.Dir(filepath.Dir(bin)), filepath.Dir(sock), filepath.Dir(filepath.Dir(sock))} {
		os.Chmod(p, 0o755)
	}
	cmd := exec.Command(bin, "snapshot", "save", "/tmp/never-written.snap", "--socket", sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr, cmd.Env = &stderr, cleanEnv()
	err = cmd.Run()
	if err == nil || !strings.Contains(stderr.String(), "permission denied on "+sock) {
		t.Fatalf("as nobody: %v, stderr %q", err, stderr.String())
	}
	os.Remove("/tmp/never-written.snap.tmp")
}
