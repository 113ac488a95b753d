package e2e

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/ipv6"

	"github.com/tandem-dhcp/tandem/internal/netns"
)

// recorderPort is the recorder's client port: perfdhcp holds 546 in the same
// namespace, and the server answers a client at its source port.
const recorderPort = 10546

// TestKillDuringLoad: while perfdhcp loads the server and a recording client
// does its own 4-message exchanges, the server is killed with SIGKILL and
// restarted. Every address a client got a Reply for must still be bound to
// that client afterwards.
func TestKillDuringLoad(t *testing.T) {
	tp := newTopo(t)
	netns.RequireTool(t, "perfdhcp")
	cfg := tp.config(t, "")
	d := tp.start(t, cfg)

	perf := tp.cli.Command("perfdhcp", "-6", "-l", cliIf, "-r", "300", "-R", "100000", "-p", "30")
	if err := perf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = perf.Process.Kill(); _ = perf.Wait() }()

	rec := tp.cli.Command(os.Args[0], "-test.run=^TestRecorderHelper$")
	rec.Env = append(os.Environ(), "E2E_HELPER=recorder", "RECORDER_IF="+cliIf, "RECORDER_COUNT=1000", "RECORDER_SECONDS=25")
	stdout, err := rec.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	rec.Stderr = os.Stderr
	if err := rec.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]string{} // address -> duid
	var acks atomic.Int64
	var mu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "ACK" {
				mu.Lock()
				acked[f[2]] = f[1]
				mu.Unlock()
				acks.Add(1)
			}
		}
	}()
	var before int64
	for round, at := range []int64{100, 400, 700} {
		netns.WaitFor(t, 20*time.Second, fmt.Sprintf("%d recorded replies before crash %d", at, round+1),
			func() bool { return acks.Load() >= at })
		before = acks.Load()
		d.kill()
		t.Logf("crash %d: killed tandem with SIGKILL after %d recorded replies", round+1, before)
		d = tp.start(t, cfg)
	}
	<-readDone
	if err := rec.Wait(); err != nil {
		t.Fatalf("recorder: %v", err)
	}
	if acks.Load() <= before {
		t.Fatalf("no replies after the restart (%d before, %d total)", before, acks.Load())
	}
	ls := tp.leases(t)
	bound := map[string]string{}
	for _, l := range ls {
		if l.Type == "na" && l.State == "ACTIVE" {
			bound[l.Address] = l.DUID
		}
	}
	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for addr, duid := range acked {
		if bound[addr] != duid {
			lost++
			if lost < 10 {
				t.Errorf("address %s was acknowledged to %s but is bound to %q after the crash", addr, duid, bound[addr])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged leases lost or changed hands", lost, len(acked))
	}
	t.Logf("%d acknowledged leases (%d before the last crash), all bound after restart; %d leases in the database", len(acked), before, len(ls))
}

// TestRecorderHelper is not a test: it is the recording DHCPv6 client that
// TestKillDuringLoad runs inside the client namespace.
func TestRecorderHelper(t *testing.T) {
	if os.Getenv("E2E_HELPER") != "recorder" {
		t.Skip("helper process for TestKillDuringLoad")
	}
	count, _ := strconv.Atoi(os.Getenv("RECORDER_COUNT"))
	secs, _ := strconv.Atoi(os.Getenv("RECORDER_SECONDS"))
	if err := record(os.Getenv("RECORDER_IF"), count, time.Duration(secs)*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "recorder:", err)
		os.Exit(1)
	}
}

// record performs count Solicit/Advertise/Request/Reply exchanges with
// distinct DUIDs, 16 at a time, retransmitting each message every 300 ms,
// and prints "ACK <duid hex> <address>" for every Reply that assigns one.
func record(ifname string, count int, d time.Duration) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp6", fmt.Sprintf("[::]:%d", recorderPort))
	if err != nil {
		return err
	}
	defer pc.Close()
	conn := ipv6.NewPacketConn(pc)
	dst := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: ifname}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()

	var mu sync.Mutex
	waiters := map[dhcpv6.TransactionID]chan *dhcpv6.Message{}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := dhcpv6.MessageFromBytes(buf[:n])
			if err != nil {
				continue
			}
			mu.Lock()
			ch := waiters[m.TransactionID]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
		}
	}()
	exchange := func(req *dhcpv6.Message) (*dhcpv6.Message, error) {
		ch := make(chan *dhcpv6.Message, 4)
		mu.Lock()
		waiters[req.TransactionID] = ch
		mu.Unlock()
		defer func() { mu.Lock(); delete(waiters, req.TransactionID); mu.Unlock() }()
		for ctx.Err() == nil {
			if _, err := conn.WriteTo(req.ToBytes(), &ipv6.ControlMessage{IfIndex: ifi.Index}, dst); err != nil {
				return nil, err
			}
			select {
			case m := <-ch:
				return m, nil
			case <-time.After(300 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		return nil, ctx.Err()
	}
	var out sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if int(i) > count || ctx.Err() != nil {
					return
				}
				mac := net.HardwareAddr{0x02, 0xee, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
				duid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}
				sol, err := dhcpv6.NewSolicit(mac, dhcpv6.WithClientID(duid))
				if err != nil {
					continue
				}
				adv, err := exchange(sol)
				if err != nil || adv.MessageType != dhcpv6.MessageTypeAdvertise {
					continue
				}
				req, err := dhcpv6.NewRequestFromAdvertise(adv)
				if err != nil {
					continue
				}
				rep, err := exchange(req)
				if err != nil || rep.MessageType != dhcpv6.MessageTypeReply {
					continue
				}
				ia := rep.Options.OneIANA()
				if ia == nil || ia.Options.Status() != nil {
					continue
				}
				if a := ia.Options.OneAddress(); a != nil && a.ValidLifetime > 0 {
					out.Lock()
					fmt.Printf("ACK %s %s\n", hex.EncodeToString(duid.ToBytes()), a.IPv6Addr)
					out.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return nil
}
