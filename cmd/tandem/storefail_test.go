package main

// Tests of a real `tandem serve` whose data dir fails it: a full disk (a
// small tmpfs), a damaged snapshot at start, a data dir held by another
// running daemon. docs/reliability/floods-and-disk.md describes them.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tandem-dhcp/tandem/internal/dhcptest"
	"github.com/tandem-dhcp/tandem/internal/netns"
	"github.com/tandem-dhcp/tandem/internal/testfs"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// rapidSolicit is client n's Rapid Commit Solicit for one address.
func rapidSolicit(n int) *dhcpv6.Message { return dhcptest.New(n).Solicit(false, true) }

// TestServeDiskFull: a daemon whose data dir is on an 8 MiB tmpfs. Once the
// tmpfs is full, clients get no Reply (no lease that is not stored), the
// store-failed metric moves, and the log says once what to do; once space
// is freed, the same process serves again.
func TestServeDiskFull(t *testing.T) {
	mnt := testfs.Tmpfs(t, 8<<20)
	dataDir := filepath.Join(mnt, "data")
	d := startOpDaemonIn(t, dataDir)
	if r := d.exchange(t, rapidSolicit(1)); r.MessageType != dhcpv6.MessageTypeReply {
		t.Fatalf("before filling the disk: %v", r.Summary())
	}
	filler := filepath.Join(mnt, "filler")
	testfs.Fill(t, filler)

	// bbolt may have free pages left: leases are stored until it needs a
	// new one. Each client answered now must hold a stored lease (checked
	// after the restart below); the first unanswered one marks the outage.
	n, answered := 2, 0
	for ; ; n++ {
		r, err := d.tryExchange(rapidSolicit(n), time.Second)
		if err != nil {
			break
		}
		if r.MessageType != dhcpv6.MessageTypeReply || r.Options.OneIANA() == nil || r.Options.OneIANA().Options.OneAddress() == nil {
			t.Fatalf("client %d: %v", n, r.Summary())
		}
		answered++
		if n == 3000 {
			t.Fatal("3000 leases stored on a full 8 MiB tmpfs")
		}
	}
	t.Logf("%d leases stored after the tmpfs filled", answered)
	for i := 0; i < 5; i++ {
		n++
		if r, err := d.tryExchange(rapidSolicit(n), 500*time.Millisecond); err == nil {
			t.Fatalf("client %d answered with the disk full: %v", n, r.Summary())
		}
	}
	mf := d.scrape(t)
	if v, _ := value(mf, "tandem_store_failed_total"); v < 6 {
		t.Errorf("tandem_store_failed_total = %v, want at least 6", v)
	}
	logs := d.stderr.String()
	if c := strings.Count(logs, "lease store refuses changes"); c != 1 {
		t.Errorf("the outage is logged %d times, want once:\n%s", c, logs)
	}
	if !strings.Contains(logs, "free space on the disk holding "+dataDir) {
		t.Errorf("the log does not say what to do (free space on the disk holding %s):\n%s", dataDir, logs)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	netns.WaitFor(t, 30*time.Second, "a Reply after freeing space", func() bool {
		n++
		r, err := d.tryExchange(rapidSolicit(n), 500*time.Millisecond)
		return err == nil && r.MessageType == dhcpv6.MessageTypeReply
	})
	for i := 0; i < 5; i++ {
		n++
		if r := d.exchange(t, rapidSolicit(n)); r.MessageType != dhcpv6.MessageTypeReply {
			t.Fatalf("after recovery: %v", r.Summary())
		}
	}
	if !strings.Contains(d.stderr.String(), "lease store takes changes again") {
		t.Errorf("recovery not logged:\n%s", d.stderr.String())
	}
	st := statusJSON(t, d.socket)
	if got, want := st["bindings"].(map[string]any)["na/ACTIVE"], float64(1+answered+1+5); got != want {
		t.Errorf("na/ACTIVE = %v, want %v: the clients answered and nothing else", got, want)
	}
}

// TestServeRefusesLockedDataDir: a second daemon on a data dir a running
// one holds exits at once, naming the holder's PID and what to do.
func TestServeRefusesLockedDataDir(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfgA, sockA := daemonConfig(t, dataDir, false)
	a := startDaemon(t, cfgA, sockA)
	cfgB, _ := daemonConfig(t, dataDir, false)
	r := tandem(t, "serve", "--config", cfgB)
	if r.code == 0 {
		t.Fatal("a second daemon started on a held data dir")
	}
	for _, want := range []string{"data dir in use", dataDir, fmt.Sprintf("process %d", a.cmd.Process.Pid), "stop it first"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	// The first daemon is unaffected.
	statusJSON(t, sockA)
}

// TestServeDamagedSnapshot: a daemon refuses to start on a data dir whose
// newest snapshot is damaged, naming the file and the two ways out; after
// following the first (moving the snapshot aside), it starts with every
// lease (replayed from the log).
func TestServeDamagedSnapshot(t *testing.T) {
	const leases = 200
	dataDir := makeDataDir(t, leases)
	st, err := raftstore.Open(raftstore.Config{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := st.Snapshot()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dataDir, "snapshots", meta.ID)
	state := filepath.Join(snap, "state.bin")
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, sock := daemonConfig(t, dataDir, false)
	r := tandem(t, "serve", "--config", cfg)
	if r.code == 0 {
		t.Fatal("the daemon started on a damaged snapshot")
	}
	for _, want := range []string{state, "move the directory " + snap + " aside", "tandem snapshot restore"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
		}
	}
	if err := os.Rename(snap, filepath.Join(t.TempDir(), "damaged-snapshot")); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, cfg, sock)
	if got := statusJSON(t, sock)["bindings"].(map[string]any)["na/ACTIVE"]; got != float64(leases) {
		t.Errorf("na/ACTIVE = %v after moving the damaged snapshot aside, want %d", got, leases)
	}
}
