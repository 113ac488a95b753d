package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/internal/netns"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// BenchmarkClientFlood measures what one flooding client does to everyone
// else, through the real socket path (Serve on lo, a real raftstore): a few
// goroutines send one client's relayed Solicit at FLOOD_PPS (default 20000
// a second), while
// normal clients (a fresh DUID per exchange, paced) do Rapid Commit
// exchanges through the same relay address and wait up to 2s for the Reply.
// It runs with the client limit off and on (10/s, burst 50: the config
// default), each for FLOOD_SECONDS (default 5), in the same run; use
// -benchtime=1x. Reported: the normal clients' success ratio and reply
// latency, the flood's send rate, and the server's counters of dropped
// packets.
//
//	go test -run '^$' -bench BenchmarkClientFlood -benchtime=1x ./server/
func BenchmarkClientFlood(b *testing.B) {
	dur := 5 * time.Second
	if s := os.Getenv("FLOOD_SECONDS"); s != "" {
		d, err := time.ParseDuration(s + "s")
		if err != nil {
			b.Fatal(err)
		}
		dur = d
	}
	pps := 20000
	if s := os.Getenv("FLOOD_PPS"); s != "" {
		if _, err := fmt.Sscan(s, &pps); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		rate Rate
	}{{"limit=off", Rate{}}, {"limit=10/s", Rate{PerSecond: 10, Burst: 50}}} {
		b.Run(tc.name, func(b *testing.B) { floodRun(b, tc.rate, dur, pps) })
	}
}

func floodRun(b *testing.B, rate Rate, dur time.Duration, pps int) {
	st, err := raftstore.Open(raftstore.Config{DataDir: b.TempDir(), OpenTimeout: storeOpenTimeout})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		b.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cfg := testConfig()
	cfg.Interfaces, cfg.Port, cfg.RapidCommit, cfg.ClientRate, cfg.Clock = []string{"lo"}, port, true, rate, clock.Real{}
	cfg.Subnets[1].Pools = []AddressRange{{First: addr("2001:db8:2::1:0"), Last: addr("2001:db8:2::ffff:ffff")}}
	srv, err := New(cfg, st)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			b.Error(err)
		}
	}()
	dst := &net.UDPAddr{IP: net.IPv6loopback, Port: port}
	link, peer := addr("2001:db8:2::1"), addr("fe80::1")
	relay := func(m *dhcpv6.Message) []byte {
		fw, err := dhcpv6.EncapsulateRelay(m, dhcpv6.MessageTypeRelayForward, link.AsSlice(), peer.AsSlice())
		if err != nil {
			b.Fatal(err)
		}
		return fw.ToBytes()
	}
	// Wait until the server answers.
	probe, err := net.DialUDP("udp6", nil, dst)
	if err != nil {
		b.Fatal(err)
	}
	rapid := &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}
	buf := make([]byte, 4096)
	i := 0
	netns.WaitFor(b, 10*time.Second, "the server to answer on lo", func() bool {
		i++
		probe.Write(relay(newClient(1<<24 + i).solicit(rapid)))
		probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := probe.Read(buf)
		return err == nil
	})
	probe.Close()

	b.ResetTimer()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var flooded atomic.Int64
	flood := relay(newClient(0).solicit())
	const flooders = 2
	for g := 0; g < flooders; g++ {
		c, err := net.DialUDP("udp6", nil, dst)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			// pps/flooders a second, sent in bursts every millisecond.
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			start, sent := time.Now(), int64(0)
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				due := int64(time.Since(start).Seconds() * float64(pps) / flooders)
				for ; sent < due; sent++ {
					if _, err := c.Write(flood); err == nil {
						flooded.Add(1)
					}
				}
			}
		}()
	}
	var mu sync.Mutex
	var lat []time.Duration
	var tried, ok atomic.Int64
	var next atomic.Int64
	for g := 0; g < 8; g++ {
		c, err := net.DialUDP("udp6", nil, dst)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]byte, 4096)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				cl := newClient(int(next.Add(1)) + 1<<20)
				m := cl.solicit(rapid)
				tried.Add(1)
				start := time.Now()
				c.Write(relay(m))
				c.SetReadDeadline(start.Add(2 * time.Second))
				for {
					n, err := c.Read(buf)
					if err != nil {
						break // no answer within 2s: a failure
					}
					p, err := dhcpv6.FromBytes(buf[:n])
					if err != nil {
						continue
					}
					in, err := p.(*dhcpv6.RelayMessage).GetInnerMessage()
					if err != nil || in.TransactionID != m.TransactionID || in.MessageType != dhcpv6.MessageTypeReply {
						continue // a late answer to an earlier exchange
					}
					ok.Add(1)
					mu.Lock()
					lat = append(lat, time.Since(start))
					mu.Unlock()
					break
				}
			}
		}()
	}
	t0 := time.Now()
	<-time.After(dur)
	close(stop)
	wg.Wait()
	el := time.Since(t0)
	b.StopTimer()

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	m := srv.Metrics()
	b.ReportMetric(float64(ok.Load())/float64(max(1, tried.Load())), "success-ratio")
	b.ReportMetric(float64(tried.Load()), "exchanges")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(flooded.Load())/el.Seconds(), "flood-sent/s")
	b.ReportMetric(float64(m.Get("pkt6-limit-exceeded"))/el.Seconds(), "limited/s")
	b.ReportMetric(float64(m.Get("pkt6-queue-full"))/el.Seconds(), "queue-full/s")
	b.ReportMetric(float64(m.Get("pkt6-advertise-sent"))/el.Seconds(), "flood-answered/s")
	b.Logf("%s: %d/%d normal exchanges answered within 2s, p50 %.2fms p99 %.2fms; flood %.0f/s sent, %d limited, %d queue-full",
		rate, ok.Load(), tried.Load(), pct(0.5), pct(0.99), float64(flooded.Load())/el.Seconds(),
		m.Get("pkt6-limit-exceeded"), m.Get("pkt6-queue-full"))
}
