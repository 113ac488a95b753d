package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/internal/netns"
	"github.com/tandem-dhcp/tandem/internal/testfs"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// TestDiskFullNoLeaseThenRecovers runs the server on a real raftstore in a
// 4 MiB tmpfs. With the disk full: no client gets a lease (no Reply at all,
// nothing in the state), Handle's error is raftstore.ErrDiskFull naming the
// data dir, store-failed counts every transaction, and the outage is logged
// once. Once space is freed, the same server and store serve again.
func TestDiskFullNoLeaseThenRecovers(t *testing.T) {
	mnt := testfs.Tmpfs(t, 4<<20)
	core, logs := observer.New(zap.InfoLevel)
	h := &harness{t: t, dir: filepath.Join(mnt, "data"), clk: clock.NewFake(t0)}
	h.cfg = testConfig()
	h.cfg.RapidCommit = true
	h.cfg.Clock, h.cfg.Logger = h.clk, zap.New(core)
	h.open()
	t.Cleanup(h.close)
	rapid := &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}

	c0 := newClient(0)
	a0 := leasedAddr(t, h.exchange(c0.solicit(rapid), dhcpv6.MessageTypeReply), c0.iaid)
	for i := 1; i < 5; i++ {
		h.exchange(newClient(i).solicit(rapid), dhcpv6.MessageTypeReply)
	}
	filler := filepath.Join(mnt, "filler")
	testfs.Fill(t, filler)
	// bbolt may still have room in pages it allocated before: clients are
	// served (and stored) until a write needs a new page.
	i := 100
	for ; ; i++ {
		c := newClient(i)
		r, err := h.try(c.solicit(rapid), linkInfo)
		if err != nil {
			if !errors.Is(err, raftstore.ErrDiskFull) {
				t.Fatalf("client %d: err %v, want ErrDiskFull", i, err)
			}
			break
		}
		if _, ok := h.get(fsm.AddrResource(fsm.IANA, leasedAddr(t, r, c.iaid))); !ok {
			t.Fatalf("client %d got a lease that is not in the state", i)
		}
		if i == 5000 {
			t.Fatal("5000 leases stored in a full 4 MiB tmpfs")
		}
	}
	t.Logf("%d leases stored after the disk filled, before the first failure", i-100)
	before, failedBefore, repliesBefore := h.dump(), h.metric("store-failed"), h.metric("pkt6-reply-sent")
	const n = 50
	for j := 0; j < n; j++ {
		i++
		r, err := h.try(newClient(i).solicit(rapid), linkInfo)
		if err == nil {
			t.Fatalf("client %d got a %v with the disk full", i, r.MessageType)
		}
		if !errors.Is(err, raftstore.ErrDiskFull) || !strings.Contains(err.Error(), "free space on the disk holding "+h.dir) {
			t.Fatalf("client %d: err %v, want ErrDiskFull naming %s", i, err, h.dir)
		}
	}
	// A Renew is not answered either: the extended lease is not stored.
	h.clk.Advance(30 * time.Minute)
	if r, err := h.try(c0.msg(dhcpv6.MessageTypeRenew, h.sid(), c0.ia(a0)), linkInfo); err == nil {
		t.Fatalf("Renew answered with %v with the disk full", r.MessageType)
	}
	// An Advertise commits nothing and still goes out (documented).
	h.exchange(newClient(999).solicit(), dhcpv6.MessageTypeAdvertise)
	if after := h.dump(); after != before {
		t.Fatalf("the state changed with the disk full:\nbefore %s\nafter  %s", before, after)
	}
	if got := h.metric("store-failed"); got != failedBefore+n+1 {
		t.Errorf("store-failed = %d, want %d", got, failedBefore+n+1)
	}
	if got := h.metric("pkt6-reply-sent"); got != repliesBefore {
		t.Errorf("pkt6-reply-sent went %d -> %d with the disk full", repliesBefore, got)
	}
	down := logs.FilterMessage("lease store refuses changes: clients get no Reply until it takes them again; further failures are counted in store-failed, not logged")
	if down.Len() != 1 || !strings.Contains(down.All()[0].ContextMap()["error"].(string), "free space on the disk holding") {
		t.Fatalf("outage log lines: %v, want one naming what to do", down.All())
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// raft stepped down after the failed write and elects itself again:
	// poll until a client is served, then every client is.
	bound := h.bindings()
	i = 10000
	netns.WaitFor(t, 30*time.Second, "a lease stored after freeing space", func() bool {
		i++
		_, err := h.try(newClient(i).solicit(rapid), linkInfo)
		if err != nil && !errors.Is(err, raftstore.ErrNotStored) {
			t.Fatalf("after freeing space: %v", err)
		}
		return err == nil
	})
	for j := i + 1; j < i+11; j++ {
		h.exchange(newClient(j).solicit(rapid), dhcpv6.MessageTypeReply)
	}
	h.exchange(c0.msg(dhcpv6.MessageTypeRenew, h.sid(), c0.ia(a0)), dhcpv6.MessageTypeReply)
	if up := logs.FilterMessage("lease store takes changes again"); up.Len() != 1 {
		t.Errorf("recovery log lines: %v, want 1", up.All())
	}
	if got := h.bindings(); got != bound+11 {
		t.Errorf("%d bindings after recovery, want %d", got, bound+11)
	}
}
