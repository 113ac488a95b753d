package failover

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/link"
	"github.com/tandem-dhcp/tandem/failover/wire"
)

// Loopback addresses of BenchmarkFailoverPortUnderAttack: the secondary
// listens on 127.0.0.1, the primary dials from 127.0.0.3, strangers come
// from 127.0.0.2 (all of 127.0.0.0/8 is on lo).
const (
	benchSecIP      = "127.0.0.1"
	benchPriIP      = "127.0.0.3"
	benchStrangerIP = "127.0.0.2"
)

// flood holds connections to addr from ip: idle ones dial once and hold;
// slow ones write one byte per tick and redial when the secondary closed
// theirs (evicted, timed out or refused).
type flood struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	dials  atomic.Int64
}

func startFlood(addr, ip string, n int, slow bool) *flood {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flood{cancel: cancel}
	for range n {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: time.Second}
			tick := time.Hour
			if slow {
				tick = 50 * time.Millisecond
			}
			tk := time.NewTicker(tick)
			defer tk.Stop()
			var c net.Conn
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for {
				if c == nil {
					if cc, err := d.DialContext(ctx, "tcp", addr); err == nil {
						c = cc
						f.dials.Add(1)
					}
				}
				if c != nil && slow {
					if _, err := c.Write([]byte{0}); err != nil {
						c.Close()
						c = nil
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
				}
			}
		}()
	}
	return f
}

func (f *flood) stop() { f.cancel(); f.wg.Wait() }

// TestFloodHelper is not a test: it is BenchmarkFailoverPortUnderAttack's
// attacker process, started with TANDEM_FLOOD_ADDR set. It holds 1000 idle
// connections from 127.0.0.2 and 1000 byte-at-a-time connections from
// TANDEM_FLOOD_SLOW_FROM (default 127.0.0.3) to that address until its
// stdin closes.
func TestFloodHelper(t *testing.T) {
	addr := os.Getenv("TANDEM_FLOOD_ADDR")
	if addr == "" {
		t.Skip("the attacker process of BenchmarkFailoverPortUnderAttack")
	}
	slowFrom := os.Getenv("TANDEM_FLOOD_SLOW_FROM")
	if slowFrom == "" {
		slowFrom = benchPriIP
	}
	idle := startFlood(addr, benchStrangerIP, 1000, false)
	slow := startFlood(addr, slowFrom, 1000, true)
	io.Copy(io.Discard, os.Stdin)
	idle.stop()
	slow.stop()
	fmt.Fprintf(os.Stderr, "flood helper: %d idle dials, %d slow dials\n", idle.dials.Load(), slow.dials.Load())
}

// BenchmarkFailoverPortUnderAttack measures, on a real pair over TCP on
// loopback, the primary's DHCP reply latency (a Rapid Commit Solicit
// through server.Handle: allocate, commit, reply) and the binding update's
// latency (from the Solicit until the secondary's BNDREPLY for it arrives:
// the secondary commits it first), with the secondary's failover port
// quiet, then with 1000 idle connections from a stranger and 1000
// byte-at-a-time connections from the partner's own address held open
// (redialing when evicted). Both servers, the attackers and the benchmark
// share the process and the CPUs.
func BenchmarkFailoverPortUnderAttack(b *testing.B) {
	// attack: the slow connections come from the partner's own address
	// (evicted); strangers: from another address (closed at accept), as a
	// remote attacker's would.
	for _, mode := range []string{"quiet", "attack", "strangers"} {
		b.Run(mode, func(b *testing.B) {
			p := newPairEnv(b)
			replies := make(chan struct{}, 1024)
			p.pri.onReceive = func(_ *Endpoint, m *wire.Message) {
				if m.Type == wire.MsgBndReply {
					replies <- struct{}{}
				}
			}
			p.sec.cfgEndpoint = func(c *Config) {
				c.Link.Transport, c.Link.Local, c.Link.Peer = link.TCP{}, benchSecIP+":0", benchPriIP
			}
			p.sec.start()
			secAt := p.sec.ep.link.ListenAddr().String()
			p.pri.cfgEndpoint = func(c *Config) {
				c.Link.Transport, c.Link.Local, c.Link.Peer = link.TCP{}, benchPriIP, secAt
			}
			p.pri.start()
			p.connect()
			p.waitStates("NORMAL", "NORMAL")
			var cmd *exec.Cmd
			if mode != "quiet" {
				// The attackers run in a child process (this test binary,
				// TestFloodHelper), so that their own dialing and writing is
				// not charged to the servers' process; they still share the
				// machine's CPUs, as an attacker on the same host would.
				cmd = exec.Command(os.Args[0], "-test.run=^TestFloodHelper$")
				slowFrom := benchPriIP
				if mode == "strangers" {
					slowFrom = benchStrangerIP
				}
				cmd.Env = append(os.Environ(), "TANDEM_FLOOD_ADDR="+secAt, "TANDEM_FLOOD_SLOW_FROM="+slowFrom)
				stdin, err := cmd.StdinPipe()
				if err != nil {
					b.Fatal(err)
				}
				cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				defer func() {
					stdin.Close()
					cmd.Wait()
					if ps := cmd.ProcessState; ps != nil {
						b.Logf("%s: the attackers used %v of CPU in %v", mode, (ps.UserTime() + ps.SystemTime()).Round(time.Millisecond),
							time.Since(start).Round(time.Millisecond))
					}
				}()
				waitFor(b, "the flood", func() bool {
					r := p.sec.stats().Rejected
					if mode == "strangers" {
						return r[link.RejectNotPartner] >= 2000
					}
					return r[link.RejectNotPartner] >= 1000 && r[link.RejectEvicted] >= 1000
				})
			}
			for len(replies) > 0 {
				<-replies
			}
			dhcp := make([]time.Duration, 0, b.N)
			upd := make([]time.Duration, 0, b.N)
			cpu0 := processCPU()
			b.ResetTimer()
			for i := range b.N {
				c := newClient(100000 + i)
				t0 := time.Now()
				if _, err := p.pri.rapidLease(c); err != nil {
					b.Fatalf("lease %d: %v", i, err)
				}
				t1 := time.Now()
				select {
				case <-replies:
				case <-time.After(waitTimeout):
					b.Fatalf("no BNDREPLY for lease %d", i)
				}
				dhcp = append(dhcp, t1.Sub(t0))
				upd = append(upd, time.Since(t0))
			}
			b.StopTimer()
			// CPU of this process (both servers and the benchmark) per op;
			// the attackers' own CPU is the child's, reported below.
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			pct := func(d []time.Duration, q float64) float64 {
				slices.Sort(d)
				return float64(d[int(q*float64(len(d)-1))].Microseconds())
			}
			b.ReportMetric(pct(dhcp, 0.5), "dhcp-p50-µs")
			b.ReportMetric(pct(dhcp, 0.99), "dhcp-p99-µs")
			b.ReportMetric(pct(upd, 0.5), "bndupd-p50-µs")
			b.ReportMetric(pct(upd, 0.99), "bndupd-p99-µs")
			st := p.sec.stats()
			if !st.Connected || st.Sessions != 1 {
				b.Fatalf("the partner connection suffered: %+v", st)
			}
			b.Logf("%s: secondary rejected %v", mode, st.Rejected)

		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
