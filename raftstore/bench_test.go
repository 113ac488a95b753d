package raftstore

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Group commit: BenchmarkApply measures Store.Apply throughput and latency
// with 1, 64 and 256 concurrent callers; BenchmarkRawFsync measures the disk
// alone (append 200 bytes + fdatasync, one at a time) in the same temp dir, so
// one `go test -bench 'Apply|RawFsync'` run gives both sides of the ratio.
// Results and the command line are in docs/benchmarks.md.

// benchLease is a realistic one-lease txn (a REQUEST's reply binding) for
// address n: about 80 bytes encoded.
func benchLease(n uint64) *fsm.Command {
	a := netip.MustParseAddr("2001:db8:40::").As16()
	for i := 0; i < 4; i++ {
		a[15-i] = byte(n >> (8 * i))
	}
	r := fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a))
	now := base.Add(time.Duration(n) * time.Millisecond)
	// DUID-LL: type 3, hardware type 1, a MAC address.
	duid := []byte{0x00, 0x03, 0x00, 0x01, 0x52, 0x54, 0x00, byte(n >> 16), byte(n >> 8), byte(n)}
	return &fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginClient,
		Note: "REQUEST",
		Ops: []fsm.Op{{Resource: r, IfRev: 0, Binding: fsm.Binding{
			Resource: r, Status: fsm.StatusActive, DUID: string(duid), IAID: uint32(n % 7),
			PreferredLifetime: 3600, ValidLifetime: 7200, CLTT: now.Unix(), StartTimeOfState: now.Unix(),
			StateExpirationTime: now.Unix() + 7200, PartnerLifetime: now.Unix() + 9000,
		}}}}
}

// reportLatency reports p50 and p99 of lat in milliseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p int) float64 {
		i := len(lat) * p / 100
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return float64(lat[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(50), "p50-ms")
	b.ReportMetric(pct(99), "p99-ms")
}

func BenchmarkApply(b *testing.B) {
	enc, err := benchLease(1).Encode()
	if err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			s, err := Open(Config{DataDir: b.TempDir(), MaxAppendEntries: 256})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := 0; g < conc; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						cmd := benchLease(uint64(i))
						t0 := time.Now()
						_, err := s.Apply(cmd)
						lat[i] = time.Since(t0)
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
			b.ReportMetric(float64(len(enc)), "entry-bytes")
			reportLatency(b, lat)
		})
	}
}

func BenchmarkRawFsync(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	rec := make([]byte, 200)
	for i := range rec {
		rec[i] = byte(i)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "fsyncs/s")
	reportLatency(b, lat)
}
