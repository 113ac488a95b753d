package failover

// BenchmarkResync measures a full UPDREQALL resynchronisation between two
// real processes: the primary (this process) holds TANDEM_RESYNC_N bindings
// (default 20,000) in a real raftstore, the secondary is this test binary
// re-executed (TestResyncSecondaryChild) with an empty data dir, and the
// two speak RFC 8156 over TCP on 127.0.0.1 with the real clock and real
// fsyncs. While the primary answers the UPDREQALL, a probe client gets
// leases from the primary's DHCP server (Rapid Commit Solicit through
// server.Handle, each committed before its Reply) every few milliseconds;
// the same probe runs before the secondary starts and after UPDDONE, so the
// latency during the transfer is compared with the idle latency of the same
// run.
//
// One iteration is one resync; run it once:
//
//	TANDEM_RESYNC_N=1000000 go test ./failover -run '^$' -bench BenchmarkResync -benchtime 1x -v
//
// TANDEM_RESYNC_WINDOW sets the secondary's max-unacked-bndupd;
// TANDEM_RESYNC_CHILD_CPUPROFILE=FILE profiles the secondary process.
//
// Both processes run with `tandem serve`'s default GC target (400) and
// GOMAXPROCS floor (4) unless GOGC or GOMAXPROCS are set.
//
// Memory: each process samples its own HeapInuse every 50 ms. The primary's
// transient is its peak during the transfer minus its heap before it (the
// table is resident in both); the secondary's is its peak minus its heap
// after a GC at the end (which is the received table itself).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/failover/link"
	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
	"github.com/tandem-dhcp/tandem/server"
)

const (
	resyncRelationship = "bench"
	resyncMCLT         = time.Hour // the secondary stays in RECOVER-WAIT after UPDDONE
	// resyncProbeEvery is the probe client's pace (one exchange at a time).
	resyncProbeEvery = 5 * time.Millisecond
	// resyncIdle is how long each idle probe phase lasts.
	resyncIdle = 3 * time.Second
	// childPrefix marks the child's report lines on its stdout.
	childPrefix = "RESYNC-CHILD "
)

var (
	// resyncPool holds the resynchronised bindings (from its start, both
	// parities) and the probe's leases (after them).
	resyncPool = server.AddressRange{First: netip.MustParseAddr("2001:db8:1::1:0:0"), Last: netip.MustParseAddr("2001:db8:1::ff:ffff:ffff")}
)

func resyncServerConfig() server.Config {
	c := serverConfig()
	c.Subnets[0].Pools = []server.AddressRange{resyncPool}
	return c
}

func resyncCovered(r fsm.Resource) bool { return r.Type == fsm.IANA && subnet1.Contains(r.Addr()) }

// resyncBinding is binding i of the primary's table: an ACTIVE IA_NA lease
// of its own client (10-byte DUID-LL), renewed in the last hour,
// acknowledged by the partner (nothing owed). One client per binding is the
// worst case: one BNDUPD per binding.
func resyncBinding(i int, now int64) fsm.Binding {
	a := resyncPool.First.As16()
	binary.BigEndian.PutUint32(a[12:], binary.BigEndian.Uint32(a[12:])+uint32(i))
	duid := make([]byte, 10)
	duid[1], duid[3] = 3, 1 // DUID-LL, Ethernet
	duid[4] = 0x06          // not newClient's 02:00 MACs (the probe's clients)
	binary.BigEndian.PutUint32(duid[6:], uint32(i))
	cltt := now - int64(i%3600)
	return fsm.Binding{
		Resource: fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a)), Status: fsm.StatusActive,
		IAID: uint32(i), DUID: string(duid), PreferredLifetime: 7200, ValidLifetime: 10800,
		CLTT: cltt, StartTimeOfState: cltt, StateExpirationTime: cltt + 10800,
		AckedPartnerLifetime: cltt + 10800 + 3600, ExpirationTime: cltt + 10800 + 3600, PartnerRawCLTT: cltt,
	}
}

// fillPrimary stores the primary's endpoint record (it has talked to its
// partner before; STARTUP then resumes COMMUNICATIONS-INTERRUPTED) and n
// bindings in large transactions, several in flight.
func fillPrimary(tb testing.TB, st *raftstore.Store, n int) {
	tb.Helper()
	now := time.Now()
	rec := fsm.EndpointState{State: uint8(wire.StateCommInterrupted), PreviousState: uint8(wire.StateNormal),
		StateSince: now.Unix() - 60, PartnerState: uint8(wire.StateNormal), PartnerStateSince: now.Unix() - 3600,
		LastContact: now.Unix() - 60, LastOperating: now.Unix(), Communicated: true}
	if _, err := st.Apply(&fsm.Command{Type: fsm.CmdSetEndpoint, Time: now.UnixNano(), Origin: fsm.OriginFailover, Endpoint: &rec}); err != nil {
		tb.Fatalf("store the endpoint record: %v", err)
	}
	const batch, workers = 2048, 4
	next := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first := range next {
				ops := make([]fsm.Op, 0, batch)
				for i := first; i < min(first+batch, n); i++ {
					b := resyncBinding(i, now.Unix())
					ops = append(ops, fsm.Op{Resource: b.Resource, Binding: b})
				}
				if _, err := st.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginClient, Note: "bench fill", Ops: ops}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for first := 0; first < n; first += batch {
		next <- first
	}
	close(next)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		tb.Fatalf("fill the primary: %v", err)
	}
	if got := st.State().Stats().Bindings; got != n {
		tb.Fatalf("primary holds %d bindings, want %d", got, n)
	}
}

// heapSampler records the peak HeapInuse of this process, and the peak
// live heap (what the last GC found reachable: the memory really held,
// without the garbage GOGC lets accumulate).
type heapSampler struct {
	peak, peakLive atomic.Uint64
	stop           chan struct{}
	done           chan struct{}
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			h.sample()
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	raise(&h.peak, ms.HeapInuse)
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	if live[0].Value.Kind() == metrics.KindUint64 {
		raise(&h.peakLive, live[0].Value.Uint64())
	}
}

func raise(a *atomic.Uint64, v uint64) {
	for {
		p := a.Load()
		if v <= p || a.CompareAndSwap(p, v) {
			return
		}
	}
}

// finish stops the sampler and returns the peaks (heap in use, live heap).
func (h *heapSampler) finish() (inuse, live uint64) {
	close(h.stop)
	<-h.done
	return h.peak.Load(), h.peakLive.Load()
}

// heapAfterGC is HeapInuse after two collections: what is really held.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// latencies is one probe phase.
type latencies struct {
	d      []time.Duration
	failed int
}

func (l *latencies) quantile(q float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (l *latencies) String() string {
	return fmt.Sprintf("n=%d failed=%d p50=%v p99=%v max=%v", len(l.d), l.failed,
		l.quantile(0.5).Round(10*time.Microsecond), l.quantile(0.99).Round(10*time.Microsecond), l.quantile(1).Round(10*time.Microsecond))
}

// probe gets a new client a lease from srv with a Rapid Commit Solicit
// every resyncProbeEvery (one at a time) until stop is closed.
func probe(srv *server.Server, firstClient *int, stop <-chan struct{}) *latencies {
	l := &latencies{}
	tick := time.NewTicker(resyncProbeEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return l
		case <-tick.C:
		}
		c := newClient(*firstClient)
		*firstClient++
		m := c.Msg(dhcpv6.MessageTypeSolicit, c.IANA(), &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
		start := time.Now()
		out, _, err := srv.Handle(m.ToBytes(), linkInfo)
		d := time.Since(start)
		if err != nil {
			l.failed++
			continue
		}
		if r, err := dhcpv6.FromBytes(out); err != nil || r.Type() != dhcpv6.MessageTypeReply || !leaseOf(c, r.(*dhcpv6.Message)).addr.IsValid() {
			l.failed++
			continue
		}
		l.d = append(l.d, d)
	}
}

// probeFor runs the probe for d.
func probeFor(srv *server.Server, next *int, d time.Duration) *latencies {
	stop := make(chan struct{})
	t := time.AfterFunc(d, func() { close(stop) })
	defer t.Stop()
	return probe(srv, next, stop)
}

// childReport is what the secondary process reports.
type childReport struct {
	Bindings     int    `json:"bindings"`
	PeakHeap     uint64 `json:"peak_heap_inuse"`
	PeakLive     uint64 `json:"peak_heap_live"`
	HeapAfterGC  uint64 `json:"heap_inuse_after_gc"`
	State        string `json:"state"`
	ReceivedUpds uint64 `json:"received_bndupd"`
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func resyncN(tb testing.TB) int {
	n := 20_000
	if s := os.Getenv("TANDEM_RESYNC_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			tb.Fatalf("TANDEM_RESYNC_N=%q: want a positive integer", s)
		}
		n = v
	}
	return n
}

// likeServe runs the process with the garbage collector target and the
// GOMAXPROCS floor `tandem serve` uses by default (gc-percent 400, at
// least 4 Ps), unless GOGC or GOMAXPROCS are set; it returns the undo.
func likeServe() func() {
	gc, procs := -2, 0
	if os.Getenv("GOGC") == "" {
		gc = debug.SetGCPercent(400)
	}
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 4 {
		procs = runtime.GOMAXPROCS(4)
	}
	return func() {
		if gc != -2 {
			debug.SetGCPercent(gc)
		}
		if procs != 0 {
			runtime.GOMAXPROCS(procs)
		}
	}
}

func BenchmarkResync(b *testing.B) {
	n := resyncN(b)
	defer likeServe()()
	for i := 0; i < b.N; i++ {
		runResync(b, n)
	}
}

func runResync(b *testing.B, n int) {
	b.StopTimer()
	priDir, secDir := b.TempDir(), b.TempDir()
	st, err := raftstore.Open(raftstore.Config{DataDir: priDir, OpenTimeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	fillPrimary(b, st, n)
	b.Logf("primary filled with %d bindings in %v", n, time.Since(start).Round(time.Millisecond))

	port := freePort(b)
	secAddr := fmt.Sprintf("127.0.0.1:%d", port)
	var updReqAllAt atomic.Int64
	lc := link.Config{Role: link.Primary, Relationship: resyncRelationship, MCLT: resyncMCLT,
		Local: "127.0.0.1:0", Peer: secAddr, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	ep, err := New(Config{Link: lc, Machine: machine.Config{StartupTime: time.Second}, Store: st,
		ExpiredHold: time.Hour, Covered: resyncCovered})
	if err != nil {
		b.Fatal(err)
	}
	l, err := link.New(ep.cfg.Link, hookHandler{Endpoint: ep, hook: func(_ *Endpoint, m *wire.Message) {
		if m.Type == wire.MsgUpdReqAll {
			updReqAllAt.CompareAndSwap(0, time.Now().UnixNano())
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	ep.link = l
	scfg := resyncServerConfig()
	scfg.Policy, scfg.Logger = ep, zap.NewNop()
	srv, err := server.New(scfg, st)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- ep.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			b.Errorf("primary Run: %v", err)
		}
	}()
	waitFor(b, "the primary to serve (COMMUNICATIONS-INTERRUPTED)", func() bool { return ep.Status().State == "COMMUNICATIONS-INTERRUPTED" })

	nextClient := 1 << 24
	idleBefore := probeFor(srv, &nextClient, resyncIdle)
	heapBefore := heapAfterGC()

	// The secondary: this binary again, in its own process.
	args := []string{"-test.run", "^TestResyncSecondaryChild$", "-test.count", "1"}
	if p := os.Getenv("TANDEM_RESYNC_CHILD_CPUPROFILE"); p != "" {
		args = append(args, "-test.cpuprofile", p)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TANDEM_RESYNC_CHILD=1", "TANDEM_RESYNC_CHILD_DIR="+secDir,
		"TANDEM_RESYNC_CHILD_ADDR="+secAddr, "TANDEM_RESYNC_N="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	heap := startHeapSampler()
	cpuBefore := selfCPU()
	b.StartTimer()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	reportc := make(chan childReport, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, childPrefix); ok {
				var r childReport
				if err := json.Unmarshal([]byte(rest), &r); err == nil {
					reportc <- r
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()

	// Probe while the transfer runs; it ends when the primary sent UPDDONE.
	stop := make(chan struct{})
	during := make(chan *latencies, 1)
	duringClient := 1 << 25
	go func() { during <- probe(srv, &duringClient, stop) }()
	var doneAt time.Time
	if !poll(time.Duration(n)*time.Millisecond+2*time.Minute, func() bool {
		if ep.link.Stats().Sent[wire.MsgUpdDone] > 0 {
			doneAt = time.Now()
			return true
		}
		return false
	}) {
		close(stop)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b.Fatalf("no UPDDONE (primary %+v)", ep.Status())
	}
	b.StopTimer()
	priCPU := selfCPU() - cpuBefore
	close(stop)
	duringLat := <-during
	priPeak, priPeakLive := heap.finish()
	idleAfter := probeFor(srv, &nextClient, resyncIdle)

	var rep childReport
	select {
	case rep = <-reportc:
	case <-time.After(waitTimeout):
		b.Errorf("the secondary did not report")
	}
	_ = stdin.Close() // the child exits
	if err := cmd.Wait(); err != nil {
		b.Errorf("secondary process: %v", err)
	}
	var secRSS int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		secRSS = ru.Maxrss * 1024
	}
	// The child's CPU includes its start and the idle probe after UPDDONE
	// (a little); the primary's includes the probe client's exchanges.
	secCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	// The view the primary answered from also holds the probe's leases made
	// before it (idle and the start of the transfer).
	if min := n + len(idleBefore.d); rep.Bindings < min || rep.Bindings > min+len(duringLat.d) {
		b.Errorf("secondary holds %d bindings after UPDDONE, want %d plus up to %d probe leases (state %s)", rep.Bindings, min, len(duringLat.d), rep.State)
	}
	startAt := time.Unix(0, updReqAllAt.Load())
	took := doneAt.Sub(startAt)
	const mb = 1 << 20
	b.Logf("UPDREQALL -> UPDDONE: %d bindings in %v (%.0f bindings/s); secondary received %d BNDUPDs, is %s",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), rep.ReceivedUpds, rep.State)
	b.Logf("CPU: primary %v (%.1f µs/binding) during the transfer, secondary process %v in all (%.1f µs/binding)",
		priCPU.Round(time.Millisecond), float64(priCPU.Microseconds())/float64(n), secCPU.Round(time.Millisecond), float64(secCPU.Microseconds())/float64(n))
	b.Logf("primary heap: %.1f MB in use after GC before; during: peak in use %.1f MB, peak live %.1f MB (live transient %.1f MB)",
		float64(heapBefore)/mb, float64(priPeak)/mb, float64(priPeakLive)/mb, (float64(priPeakLive)-float64(heapBefore))/mb)
	b.Logf("secondary heap: %.1f MB in use after GC at the end; during: peak in use %.1f MB, peak live %.1f MB; max RSS %.1f MB",
		float64(rep.HeapAfterGC)/mb, float64(rep.PeakHeap)/mb, float64(rep.PeakLive)/mb, float64(secRSS)/mb)
	b.Logf("probe idle before:  %v", idleBefore)
	b.Logf("probe during:       %v", duringLat)
	b.Logf("probe idle after:   %v", idleAfter)
	idle := idleBefore.quantile(0.5)
	b.Logf("ratio during/idle-before: p50 %.1fx, p99 %.1fx", ratio(duringLat.quantile(0.5), idle), ratio(duringLat.quantile(0.99), idleBefore.quantile(0.99)))
	b.ReportMetric(float64((priCPU+secCPU).Microseconds())/float64(n), "cpu-µs/binding")
	b.ReportMetric(took.Seconds(), "resync-s")
	b.ReportMetric(float64(n)/took.Seconds(), "bindings/s")
	b.ReportMetric((float64(priPeakLive)-float64(heapBefore))/mb, "pri-live-transient-MB")
	b.ReportMetric(float64(rep.PeakLive)/mb, "sec-peak-live-MB")
	b.ReportMetric(float64(rep.HeapAfterGC)/mb, "sec-end-heap-MB")
	b.ReportMetric(float64(duringLat.quantile(0.99).Microseconds())/1000, "p99-during-ms")
	b.ReportMetric(float64(idleBefore.quantile(0.99).Microseconds())/1000, "p99-idle-ms")
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// TestResyncSecondaryChild is BenchmarkResync's secondary process (skipped
// unless BenchmarkResync started it): an empty data dir, RECOVER, UPDREQALL;
// it reports its table and heap once in RECOVER-WAIT, then waits for stdin
// to close.
func TestResyncSecondaryChild(t *testing.T) {
	if os.Getenv("TANDEM_RESYNC_CHILD") != "1" {
		t.Skip("run by BenchmarkResync only")
	}
	n := resyncN(t)
	defer likeServe()()
	heap := startHeapSampler()
	st, err := raftstore.Open(raftstore.Config{DataDir: os.Getenv("TANDEM_RESYNC_CHILD_DIR"), OpenTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lc := link.Config{Role: link.Secondary, Relationship: resyncRelationship, MCLT: resyncMCLT,
		Local: os.Getenv("TANDEM_RESYNC_CHILD_ADDR"), Peer: "127.0.0.1:647"}
	if w := os.Getenv("TANDEM_RESYNC_WINDOW"); w != "" {
		v, err := strconv.ParseUint(w, 10, 32)
		if err != nil {
			t.Fatalf("TANDEM_RESYNC_WINDOW=%q: %v", w, err)
		}
		lc.MaxUnackedBndUpd = uint32(v)
	}
	ep, err := New(Config{Link: lc, Store: st, ExpiredHold: time.Hour, Covered: resyncCovered})
	if err != nil {
		t.Fatal(err)
	}
	scfg := resyncServerConfig()
	scfg.Policy, scfg.Logger = ep, zap.NewNop()
	srv, err := server.New(scfg, st)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- ep.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("secondary Run: %v", err)
		}
	}()
	if !poll(time.Duration(n)*time.Millisecond+2*time.Minute, func() bool { return ep.Status().State == "RECOVER-WAIT" }) {
		t.Fatalf("the secondary did not reach RECOVER-WAIT: %+v", ep.Status())
	}
	rep := childReport{Bindings: st.State().Stats().Bindings, State: ep.Status().State,
		ReceivedUpds: ep.link.Stats().Received[wire.MsgBndUpd]}
	rep.PeakHeap, rep.PeakLive = heap.finish()
	rep.HeapAfterGC = heapAfterGC()
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", childPrefix, js)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes it
}
