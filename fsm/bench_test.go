package fsm

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
)

const (
	benchBindings = 1_000_000
	benchNow      = 1_767_225_600 // 2026-01-01T00:00:00Z, Unix seconds
)

// realisticBinding returns binding number i of a realistic population: 70%
// IA_NA addresses in one /64, 30% IA_PD /56 prefixes, each ACTIVE for its own
// client with a 14-byte DUID-LLT, renewed within the last hour, with a
// two-hour valid lifetime, acknowledged by the failover partner.
func realisticBinding(i int) Binding {
	// A cheap bijective scramble so neighbouring bindings are not adjacent in
	// address order (as with a hashing allocator).
	h := uint32(i)*2654435761 + 0x9e3779b9
	var r Resource
	if i%10 < 7 {
		r = Resource{Type: IANA, Len: 128}
		copy(r.IP[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x02}) // 2001:db8:1:2::/64
		binary.BigEndian.PutUint32(r.IP[8:], 0x0a000000|uint32(i)>>8)
		binary.BigEndian.PutUint32(r.IP[12:], h)
	} else {
		// 2001:db8:XXXX:XX00::/56 with i in the 24 bits after the /32.
		r = Resource{Type: IAPD, Len: 56}
		copy(r.IP[:], []byte{0x20, 0x01, 0x0d, 0xb8})
		r.IP[4], r.IP[5], r.IP[6] = byte(i>>16), byte(i>>8), byte(i)
	}
	// DUID-LLT: type 1, hardware type 1 (Ethernet), time, 6-byte MAC.
	duid := make([]byte, 14)
	duid[1], duid[3] = 1, 1
	binary.BigEndian.PutUint32(duid[4:], 0x2c5e7f10+uint32(i%86400))
	duid[8], duid[9] = 0x02, 0x42
	binary.BigEndian.PutUint32(duid[10:], uint32(i))
	cltt := int64(benchNow - int(h%3600))
	return Binding{
		Resource:             r,
		Status:               StatusActive,
		IAID:                 h >> 8,
		DUID:                 string(duid),
		PreferredLifetime:    3600,
		ValidLifetime:        7200,
		CLTT:                 cltt,
		StartTimeOfState:     cltt - int64(h%86400),
		StateExpirationTime:  cltt + 7200,
		AckedPartnerLifetime: cltt + 7200 + 1800,
		ExpirationTime:       cltt + 7200 + 1800,
		PartnerRawCLTT:       cltt - 1,
	}
}

// realisticTxn is the txn a server logs when it leases binding i.
func realisticTxn(i int) *Command {
	b := realisticBinding(i)
	return &Command{Type: CmdTxn, Time: (b.CLTT)*1e9 + int64(i%1e9), Origin: OriginClient, Note: "REQUEST",
		Ops: []Op{{Resource: b.Resource, IfRev: 0, Binding: b}}}
}

// buildState applies n realistic single-lease txns in batches, as raft would.
func buildState(tb testing.TB, n int) *State {
	tb.Helper()
	s := New()
	const batch = 1024
	es := make([]Entry, 0, batch)
	for i := 0; i < n; i++ {
		es = append(es, Entry{Index: uint64(i + 1), Term: 1, Cmd: realisticTxn(i)})
		if len(es) == batch || i == n-1 {
			for _, r := range s.ApplyBatch(es) {
				if r.Err != nil {
					tb.Fatalf("entry %d: %v", r.Index, r.Err)
				}
			}
			clear(es) // drop the commands
			es = es[:0]
		}
	}
	if got := s.Stats().Bindings; got != n {
		tb.Fatalf("built %d bindings, want %d", got, n)
	}
	return s
}

var bench1M struct {
	once sync.Once
	s    *State
	snap []byte
}

func state1M(b *testing.B) (*State, []byte) {
	bench1M.once.Do(func() {
		bench1M.s = buildState(b, benchBindings)
		var buf bytes.Buffer
		if err := WriteSnapshot(&buf, bench1M.s.View(), benchNow*1e9); err != nil {
			b.Fatal(err)
		}
		bench1M.snap = buf.Bytes()
	})
	if bench1M.s == nil {
		b.Fatal("building the 1M state failed")
	}
	return bench1M.s, bench1M.snap
}

func TestRealisticBindings(t *testing.T) {
	// The benchmark population is valid, distinct and of the intended mix.
	s := buildState(t, 20_000)
	c := s.Stats().Counts
	if c[IANA][StatusActive] != 14_000 || c[IAPD][StatusActive] != 6_000 {
		t.Fatalf("counts %v", c)
	}
	checkIndexes(t, s.View())
	if len(realisticBinding(5).DUID) != 14 {
		t.Fatal("DUID-LLT is not 14 bytes")
	}
}

func BenchmarkApplyTxn(b *testing.B) {
	s := New()
	const pool = 1 << 16
	cmds := make([]*Command, pool)
	for i := range cmds {
		cmds[i] = realisticTxn(i)
		cmds[i].Ops[0].IfRev = AnyRev // first lease, then renewals
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := s.Apply(Entry{Index: uint64(i + 1), Term: 1, Cmd: cmds[i%pool]}); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

func BenchmarkEncodeCommand(b *testing.B) {
	c := realisticTxn(12345)
	buf, err := c.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf, err = c.AppendEncode(buf[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "bytes/cmd")
}

func BenchmarkDecodeCommand(b *testing.B) {
	enc, err := realisticTxn(12345).Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeCommand(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSnapshotSave1M(b *testing.B) {
	s, snap := state1M(b)
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := WriteSnapshot(io.Discard, s.View(), benchNow*1e9); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchBindings*b.N)/b.Elapsed().Seconds(), "bindings/s")
	b.ReportMetric(float64(len(snap))/benchBindings, "bytes/binding")
}

func BenchmarkSnapshotRestore1M(b *testing.B) {
	s, snap := state1M(b)
	want := s.Stats()
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, _, err := ReadSnapshot(bytes.NewReader(snap))
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 && got.Stats() != want {
			b.Fatalf("restored stats %+v, want %+v", got.Stats(), want)
		}
	}
	b.ReportMetric(float64(benchBindings*b.N)/b.Elapsed().Seconds(), "bindings/s")
}

// TestMemoryPerBinding1M measures the live heap per binding with a million
// realistic bindings. It takes several seconds and ~1 GB of allocation, so it
// runs only with TANDEM_MEM_TEST=1 and not in -short mode.
func TestMemoryPerBinding1M(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode")
	}
	if os.Getenv("TANDEM_MEM_TEST") != "1" {
		t.Skip("set TANDEM_MEM_TEST=1 to run")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := buildState(t, benchBindings)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	perBinding := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / benchBindings
	runtime.KeepAlive(s)
	t.Logf("%d bindings: heap %.1f MiB -> %.1f MiB, %.1f bytes/binding",
		benchBindings, float64(before.HeapAlloc)/(1<<20), float64(after.HeapAlloc)/(1<<20), perBinding)
	if perBinding > 400 {
		t.Fatalf("%.1f bytes per binding, budget 400", perBinding)
	}
	if perBinding < 100 {
		t.Fatalf("%.1f bytes per binding is implausibly low (a Binding alone is 112): the measurement is broken", perBinding)
	}
}
