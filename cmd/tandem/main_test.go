package main

// The tests build the tandem binary once (TestMain) and run it as a
// subprocess against data dirs made with raftstore, so they check what an
// operator sees: stdout, stderr and the exit status.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// testVersion is linked into the test binary with -X main.version.
const testVersion = "v0.0.0-cmdtest"

var (
	binPath string   // the built tandem binary
	mkPath  string   // the built testdata/mkdatadir (makes big data dirs)
	fx      *fixture // the shared data dir (read-only for every test)
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "tandem-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)

	binPath = filepath.Join(tmp, "tandem")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cmd/tandem tests need the go tool on PATH to build the binary:", err)
		return 1
	}
	build := exec.Command(goTool, "build", "-ldflags", "-X main.version="+testVersion, "-o", binPath, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/tandem: %v\n%s", err, out)
		return 1
	}
	mkPath = filepath.Join(tmp, "mkdatadir")
	if out, err := exec.Command(goTool, "build", "-o", mkPath, "./testdata/mkdatadir").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/tandem/testdata/mkdatadir: %v\n%s", err, out)
		return 1
	}
	if fx, err = buildFixture(filepath.Join(tmp, "data"), filepath.Join(tmp, "damaged")); err != nil {
		fmt.Fprintln(os.Stderr, "building the test data dir:", err)
		return 1
	}
	return m.Run()
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// tandem runs the binary with args and returns what it printed and its exit status.
func tandem(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = cleanEnv()
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("tandem %q: %v (stderr: %s)", args, err, r.stderr)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("tandem %q printed a Go stack trace:\n%s", args, r.stderr)
	}
	return r
}

// mustRun runs tandem and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := tandem(t, args...)
	if r.code != 0 {
		t.Fatalf("tandem %q: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// cleanEnv is the test's environment without TANDEM_* variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TANDEM_") {
			env = append(env, kv)
		}
	}
	return env
}

// decodeJSON unmarshals s into v, failing the test on error.
func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
}

// --- the fixture data dir ---

var base = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// snapCreated is the fake clock's time when the fixture's snapshot is taken.
var snapCreated = base.Add(2 * time.Hour)

// appliedCmd is one command applied to the fixture, with its log index.
type appliedCmd struct {
	index uint64
	cmd   *fsm.Command
}

func (a appliedCmd) time() time.Time { return time.Unix(0, a.cmd.Time).UTC() }

type fixture struct {
	dir        string // pristine data dir
	damagedDir string // a copy with entry damagedIndex damaged
	cmds       []appliedCmd
	serverDUID []byte
	endpoint   fsm.EndpointState

	snapID    string
	snapIndex uint64
	snapDir   string // the raft snapshot directory (meta.json, state.bin)

	multiIndex   uint64   // a txn with an NA and a PD op
	leaseIndex   []uint64 // leaseIndex[n] = index of the txn leasing NA n (1..25)
	releaseIndex []uint64 // release txns of NA 1..5
	deleteIndex  uint64   // delete of NA 6
	damagedIndex uint64   // the entry damaged in damagedDir (release of NA 2)
}

// naRes is the n-th fixture address, 2001:db8:1::<n in hex>.
func naRes(n int) fsm.Resource {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1}
	a[14], a[15] = byte(n>>8), byte(n)
	return fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a))
}

// pdRes is the p-th fixture prefix, 2001:db8:100:<p>00::/56.
func pdRes(p int) fsm.Resource {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, byte(p)}
	return fsm.PrefixResource(netip.PrefixFrom(netip.AddrFrom16(a), 56))
}

// clientDUID is a DUID-LL-like client DUID for client n.
func clientDUID(n int) string {
	return string([]byte{0x00, 0x03, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, byte(n >> 8), byte(n)})
}

func activeBinding(r fsm.Resource, client int, iaid uint32, now time.Time) fsm.Binding {
	return fsm.Binding{
		Resource: r, Status: fsm.StatusActive, DUID: clientDUID(client), IAID: iaid,
		PreferredLifetime: 1800, ValidLifetime: 3600,
		CLTT: now.Unix(), StartTimeOfState: now.Unix(), StateExpirationTime: now.Unix() + 3600,
		PartnerLifetime: now.Unix() + 5400,
	}
}

func putOp(b fsm.Binding, ifRev uint64) fsm.Op {
	return fsm.Op{Resource: b.Resource, IfRev: ifRev, Binding: b}
}

// buildFixture makes the shared data dir: a server DUID, an endpoint record,
// 25 NA and 11 PD leases (one txn with both), 5 releases, a delete, a noop,
// and a snapshot in the middle, so replay uses both snapshot and log. Each
// command is made 10 s after the previous one. It then copies the dir to
// damagedDir and damages one entry there.
func buildFixture(dir, damagedDir string) (_ *fixture, err error) {
	f := &fixture{dir: dir, damagedDir: damagedDir, leaseIndex: make([]uint64, 26),
		serverDUID: []byte{0x00, 0x01, 0x00, 0x01, 0x2f, 0x3a, 0x4b, 0x5c, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}}
	st, err := raftstore.Open(raftstore.Config{DataDir: dir, Clock: clock.NewFake(snapCreated)})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := st.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	seq := 0
	next := func() time.Time { return base.Add(time.Duration(seq) * 10 * time.Second) }
	apply := func(c *fsm.Command) uint64 {
		if err != nil {
			return 0
		}
		c.Time = next().UnixNano()
		seq++
		var idx uint64
		if idx, err = st.Apply(c); err != nil {
			err = fmt.Errorf("apply command %d (%v): %w", seq-1, c.Type, err)
			return 0
		}
		f.cmds = append(f.cmds, appliedCmd{index: idx, cmd: c})
		return idx
	}

	apply(&fsm.Command{Type: fsm.CmdSetServerDUID, Origin: fsm.OriginServer, Note: "first start", ServerDUID: f.serverDUID})
	now := next()
	f.endpoint = fsm.EndpointState{State: 2, PreviousState: 1, StateSince: now.Unix(), PartnerState: 2,
		PartnerStateSince: now.Unix(), LastContact: now.Unix(), LastOperating: now.Unix(), Communicated: true}
	ep := f.endpoint
	apply(&fsm.Command{Type: fsm.CmdSetEndpoint, Origin: fsm.OriginFailover, Note: "NORMAL", Endpoint: &ep})
	for n := 1; n <= 20; n++ {
		b := activeBinding(naRes(n), n, uint32(n), next())
		f.leaseIndex[n] = apply(&fsm.Command{Type: fsm.CmdTxn, Origin: fsm.OriginClient,
			Note: fmt.Sprintf("REQUEST xid=%06x", n), Ops: []fsm.Op{putOp(b, 0)}})
	}
	for p := 1; p <= 10; p++ {
		b := activeBinding(pdRes(p), 100+p, 7, next())
		apply(&fsm.Command{Type: fsm.CmdTxn, Origin: fsm.OriginClient, Note: "REQUEST pd",
			Ops: []fsm.Op{putOp(b, 0)}})
	}
	now = next()
	f.multiIndex = apply(&fsm.Command{Type: fsm.CmdTxn, Origin: fsm.OriginClient, Note: "REQUEST na+pd",
		Ops: []fsm.Op{putOp(activeBinding(naRes(0x100), 900, 9, now), 0), putOp(activeBinding(pdRes(0xff), 900, 9, now), 0)}})
	if err != nil {
		return nil, err
	}
	meta, err := st.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	f.snapID, f.snapIndex = meta.ID, meta.Index
	f.snapDir = ""

	for n := 1; n <= 5; n++ {
		now := next()
		b := activeBinding(naRes(n), n, uint32(n), now)
		b.Status, b.Flags = fsm.StatusReleased, fsm.FlagUpdateOwed
		b.StartTimeOfState, b.StateExpirationTime = now.Unix(), now.Unix()+600
		f.releaseIndex = append(f.releaseIndex, apply(&fsm.Command{Type: fsm.CmdTxn, Origin: fsm.OriginClient,
			Note: "RELEASE", Ops: []fsm.Op{putOp(b, f.leaseIndex[n])}}))
	}
	f.deleteIndex = apply(&fsm.Command{Type: fsm.CmdTxn, Origin: fsm.OriginReclaim, Note: "expired",
		Ops: []fsm.Op{{Resource: naRes(6), IfRev: f.leaseIndex[6], Delete: true}}})
	apply(&fsm.Command{Type: fsm.CmdNoop, Origin: fsm.OriginAdmin, Note: "mark"})
	for n := 21; n <= 25; n++ {
		b := activeBinding(naRes(n), n, uint32(n), next())
		f.leaseIndex[n] = apply(&fsm.Command{Type: fsm.CmdTxn, Origin: fsm.OriginClient,
			Note: "SOLICIT rapid-commit", Ops: []fsm.Op{putOp(b, fsm.AnyRev)}})
	}
	if err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	if f.snapDir, err = findSnapshotDir(dir, f.snapID); err != nil {
		return nil, err
	}
	f.damagedIndex = f.releaseIndex[1]
	if err := copyDir(dir, damagedDir); err != nil {
		return nil, err
	}
	if err := damageEntry(filepath.Join(damagedDir, "raft.db"), f.damagedIndex); err != nil {
		return nil, err
	}
	return f, nil
}

// findSnapshotDir returns the raft snapshot directory of snapshot id: it
// holds meta.json and state.bin, somewhere under dir/snapshots (raft's file
// snapshot store nests its own "snapshots" dir inside the one it is given).
func findSnapshotDir(dir, id string) (string, error) {
	var found string
	err := filepath.WalkDir(filepath.Join(dir, "snapshots"), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == id {
			found = path
			return filepath.SkipAll
		}
		return err
	})
	if err == nil && found == "" {
		err = fmt.Errorf("snapshot %s not found under %s", id, dir)
	}
	return found, err
}

// damageEntry flips one byte in the data of log entry index, as a bad disk would.
func damageEntry(dbPath string, index uint64) error {
	db, err := raftboltdb.New(raftboltdb.Options{Path: dbPath})
	if err != nil {
		return err
	}
	defer db.Close()
	var l raft.Log
	if err := db.GetLog(index, &l); err != nil {
		return err
	}
	l.Data = append([]byte(nil), l.Data...)
	l.Data[len(l.Data)/2] ^= 0x40
	return db.StoreLog(&l)
}

func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		return copyFile(path, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// expected returns the bindings (resource string -> state) after applying
// every fixture command for which include is true, in log order, computed
// from the commands alone (not through fsm), skipping entry skip.
func (f *fixture) expected(include func(appliedCmd) bool, skip uint64) map[string]string {
	m := map[string]string{}
	for _, a := range f.cmds {
		if !include(a) || a.index == skip || a.cmd.Type != fsm.CmdTxn {
			continue
		}
		for _, op := range a.cmd.Ops {
			if op.Delete {
				delete(m, op.Resource.String())
			} else {
				m[op.Resource.String()] = op.Binding.Status.String()
			}
		}
	}
	return m
}

// cmdAt returns the fixture command applied at index.
func (f *fixture) cmdAt(index uint64) appliedCmd {
	for _, a := range f.cmds {
		if a.index == index {
			return a
		}
	}
	panic(fmt.Sprintf("no fixture command at index %d", index))
}

func (f *fixture) lastIndex() uint64 { return f.cmds[len(f.cmds)-1].index }
