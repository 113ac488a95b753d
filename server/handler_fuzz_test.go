package server

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// The fuzz target's server: one real store per process (each fuzz worker is
// its own process), opened on first use and removed by TestMain.
var (
	fuzzOnce  sync.Once
	fuzzErr   error
	fuzzDir   string
	fuzzStore *raftstore.Store
	fuzzSrv   *Server
	fuzzClock *clock.Fake
	fuzzExecs atomic.Uint64
)

// fuzzDUID is the server DUID, fixed so that seeds naming it are valid in
// every worker process.
var fuzzDUID = &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 1, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x53}}

func TestMain(m *testing.M) {
	code := m.Run()
	if fuzzSrv != nil {
		fuzzSrv.Close()
	}
	if fuzzStore != nil {
		fuzzStore.Close()
	}
	if fuzzDir != "" {
		os.RemoveAll(fuzzDir)
	}
	os.Exit(code)
}

func fuzzServer(tb testing.TB) *Server {
	fuzzOnce.Do(func() {
		if fuzzDir, fuzzErr = os.MkdirTemp("", "tandem-fuzz-handle-"); fuzzErr != nil {
			return
		}
		fuzzClock = clock.NewFake(t0)
		if fuzzStore, fuzzErr = raftstore.Open(raftstore.Config{DataDir: fuzzDir, Clock: fuzzClock, OpenTimeout: storeOpenTimeout}); fuzzErr != nil {
			return
		}
		if _, fuzzErr = fuzzStore.Apply(&fsm.Command{Type: fsm.CmdSetServerDUID, Time: t0.UnixNano(),
			Origin: fsm.OriginServer, ServerDUID: fuzzDUID.ToBytes()}); fuzzErr != nil {
			return
		}
		cfg := testConfig()
		cfg.Clock = fuzzClock
		cfg.RapidCommit = true
		cfg.DomainSearch = []string{"example.net"}
		// Small pools, so exhaustion and reuse of freed leases are reached.
		cfg.Subnets[0].Pools = []AddressRange{{addr("2001:db8:1::1000"), addr("2001:db8:1::103f")}}
		cfg.Subnets[0].PDPools = []PDPool{{Prefix: netip.MustParsePrefix("2001:db8:8000::/52"), DelegatedLength: 56}}
		cfg.ExpiredHoldTime = 10 * time.Minute
		cfg.DeclineHoldTime = 20 * time.Minute
		fuzzSrv, fuzzErr = New(cfg, fuzzStore)
	})
	if fuzzErr != nil {
		tb.Fatalf("fuzz server: %v", fuzzErr)
	}
	return fuzzSrv
}

// fuzzInfos are the ways a datagram can arrive.
var fuzzInfos = []PacketInfo{
	linkInfo,
	unicastInfo,
	relayInfo(),
	{IfIndex: 7, IfName: "eth7", Src: netip.AddrPortFrom(addr("fe80::7%eth7"), 546), Dst: addr("ff02::1:2")},
}

type fuzzSeed struct {
	b   []byte
	how uint8 // index into fuzzInfos
}

func fuzzSeeds(tb testing.TB) []fuzzSeed {
	sid := dhcpv6.OptServerID(fuzzDUID)
	c := newClient(1)
	xid := func(m *dhcpv6.Message, n byte) *dhcpv6.Message {
		m.TransactionID = dhcpv6.TransactionID{0xf0, 0, n}
		return m
	}
	oro := dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList)
	a := addr("2001:db8:1::1000")
	p := netip.MustParsePrefix("2001:db8:8000::/56")
	msgs := []dhcpv6.DHCPv6{
		xid(c.solicit(c.pd(), oro), 1),
		xid(c.solicit(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}), 2),
		xid(c.msg(dhcpv6.MessageTypeRequest, sid, c.ia(a), c.pd(p), oro), 3),
		xid(c.msg(dhcpv6.MessageTypeRenew, sid, c.ia(a), c.pd(p)), 4),
		xid(c.msg(dhcpv6.MessageTypeRebind, c.ia(a), c.pd(p)), 5),
		xid(c.msg(dhcpv6.MessageTypeRelease, sid, c.ia(a), c.pd(p)), 6),
		xid(c.msg(dhcpv6.MessageTypeDecline, sid, c.ia(a)), 7),
		xid(c.msg(dhcpv6.MessageTypeConfirm, c.ia(a)), 8),
		xid(c.msg(dhcpv6.MessageTypeInformationRequest, oro), 9),
		xid(c.msg(dhcpv6.MessageTypeRequest, sid, iaNA([4]byte{1}, a), iaNA([4]byte{2}, a)), 10),
	}
	inner := relayForw(tb, xid(c.solicit(), 11), addr("2001:db8:2::1"), addr("fe80::1"), "inner")
	msgs = append(msgs,
		relayForw(tb, inner, addr("2001:db8:1::1"), addr("2001:db8:2::1"), "outer"),
		relayForw(tb, xid(c.msg(dhcpv6.MessageTypeRequest, sid, c.ia(addr("2001:db8:2::1000"))), 12),
			addr("2001:db8:2::1"), addr("fe80::1"), "if"),
	)
	var out []fuzzSeed
	for _, m := range msgs {
		how := uint8(0) // from a client on eth1
		if m.IsRelay() {
			how = 2 // from a relay
		}
		out = append(out, fuzzSeed{m.ToBytes(), how})
	}
	// The same by unicast and on an interface we do not serve, and garbage.
	out = append(out, fuzzSeed{msgs[2].ToBytes(), 1}, fuzzSeed{msgs[0].ToBytes(), 3})
	return append(out, fuzzSeed{nil, 0}, fuzzSeed{[]byte{1, 0, 0, 1, 0, 1, 0xff, 0xff}, 0}, fuzzSeed{[]byte{12, 0, 1}, 2})
}

// TestFuzzSeedsAnswered: the well-formed seeds reach the interesting code:
// each is answered by the fuzz server (so its Server ID is the fixed one).
func TestFuzzSeedsAnswered(t *testing.T) {
	srv := fuzzServer(t)
	if !bytes.Equal(srv.DUID(), fuzzDUID.ToBytes()) {
		t.Fatalf("fuzz server DUID %x, want the fixed %x", srv.DUID(), fuzzDUID.ToBytes())
	}
	for i, s := range fuzzSeeds(t)[:12] {
		before := fuzzStore.Info().LastLogIndex
		if _, _, err := srv.Handle(s.b, fuzzInfos[s.how]); err != nil {
			t.Errorf("seed %d: %v", i, err)
		}
		// Control for FuzzHandle's no-commit check: the Solicit (Advertise)
		// commits nothing, the Rapid Commit Solicit does.
		switch committed := fuzzStore.Info().LastLogIndex != before; {
		case i == 0 && committed:
			t.Errorf("seed 0 (Solicit, Advertise) committed")
		case i == 1 && !committed:
			t.Errorf("seed 1 (Rapid Commit Solicit) committed nothing: the index does not show commits")
		}
	}
}

// FuzzHandle feeds arbitrary datagrams through the whole packet path (parse,
// validate, allocate, commit to a real store, encode): it must never panic,
// a reply must parse and answer the request, no input may make the server
// build a commit the store rejects as invalid, and nothing is committed for
// an Advertise or for an Information-request (RFC 8415 §18.3.1: an
// Advertise promises nothing; stateless service stores nothing).
func FuzzHandle(f *testing.F) {
	fuzzServer(f)
	for _, s := range fuzzSeeds(f) {
		f.Add(s.b, s.how)
	}
	f.Fuzz(func(t *testing.T, b []byte, how uint8) {
		srv := fuzzServer(t)
		info := fuzzInfos[int(how)%len(fuzzInfos)]
		// Time moves a minute per input, and every 64 inputs the reclaimer
		// runs: leases expire, are freed and forgotten while fuzzing.
		n := fuzzExecs.Add(1)
		fuzzClock.Advance(time.Minute)
		if n%64 == 0 {
			if _, err := srv.Reclaim(); err != nil {
				t.Fatalf("Reclaim: %v", err)
			}
		}
		storeFailed := srv.Metrics().Get("store-failed")
		before := fuzzStore.Info().LastLogIndex
		out, dst, err := srv.Handle(b, info)
		committed := fuzzStore.Info().LastLogIndex != before
		if got := srv.Metrics().Get("store-failed"); got != storeFailed {
			t.Fatalf("input % x made a commit fail: %v", b, err)
		}
		if err != nil {
			if out != nil {
				t.Fatalf("reply bytes together with error %v", err)
			}
			return
		}
		if dst != info.Src {
			t.Fatalf("reply to %v, want the sender %v", dst, info.Src)
		}
		rp, perr := dhcpv6.FromBytes(out)
		if perr != nil {
			t.Fatalf("reply to % x does not parse: %v\nreply % x", b, perr, out)
		}
		q, _ := dhcpv6.FromBytes(b)
		if q == nil || q.IsRelay() != rp.IsRelay() {
			t.Fatalf("reply %v to %v", rp.Type(), q)
		}
		qm, qerr := q.GetInnerMessage()
		rm, rerr := rp.GetInnerMessage()
		if qerr != nil || rerr != nil {
			t.Fatalf("inner messages: %v, %v", qerr, rerr)
		}
		if rm.MessageType != dhcpv6.MessageTypeReply && rm.MessageType != dhcpv6.MessageTypeAdvertise {
			t.Fatalf("answered with %v", rm.MessageType)
		}
		if committed && (rm.MessageType == dhcpv6.MessageTypeAdvertise || qm.MessageType == dhcpv6.MessageTypeInformationRequest) {
			t.Fatalf("%v answered with %v committed to the store", qm.MessageType, rm.MessageType)
		}
		if rm.TransactionID != qm.TransactionID {
			t.Fatalf("reply xid %v, request %v", rm.TransactionID, qm.TransactionID)
		}
		if sid := rm.Options.ServerID(); sid == nil || !bytes.Equal(sid.ToBytes(), srv.DUID()) {
			t.Fatalf("reply Server ID %v", sid)
		}
	})
}
