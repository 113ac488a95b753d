package server

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// BenchmarkExchange measures the server's own cost of a 4-message exchange
// (Solicit -> Advertise, Request -> Reply with an fsynced commit) through
// Handle, without sockets, with N clients in flight. It reports exchanges/s
// and the CPU time the whole process spent per exchange (user+system, so it
// includes raft, bbolt and the fsyncs' system time).
func BenchmarkExchange(b *testing.B) {
	for _, conc := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			h := newHarness(b, func(c *Config) {
				c.Subnets[0].Pools = []AddressRange{{First: addr("2001:db8:1::1:0"), Last: addr("2001:db8:1::ffff:ffff")}}
			})
			var next atomic.Int64
			var failed atomic.Int64
			cpu0 := processCPU()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for g := 0; g < conc; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						c := newClient(int(i))
						adv, err := h.try(c.solicit(), linkInfo)
						if err != nil || adv.MessageType != dhcpv6.MessageTypeAdvertise {
							failed.Add(1)
							continue
						}
						req, err := dhcpv6.NewRequestFromAdvertise(adv)
						if err != nil {
							failed.Add(1)
							continue
						}
						if rep, err := h.try(req, linkInfo); err != nil || rep.MessageType != dhcpv6.MessageTypeReply {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d of %d exchanges failed", f, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "exchanges/s")
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/exchange")
		})
	}
}
