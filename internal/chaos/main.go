// Command chaos is the process-level chaos run behind scripts/chaos: it
// builds a failover pair in network namespaces (pair-up's layout plus a
// dedicated partner link), loads it with perfdhcp and with a recording
// client, and for N rounds injects a random fault (SIGKILL of the primary,
// the secondary or both, the partner link taken down, or the link cut and
// a server killed while it is down), waits a random time, heals in a
// random order and goes on. The pair has an address pool and a pd-pool;
// the recording clients ask for an address and (a share of them, -pd-share)
// a delegated prefix, so prefixes move between the servers (FREE-BACKUP
// gives, take-backs) and are used from the partner in PARTNER-DOWN. At the end it stops the load, heals
// everything, waits until both servers are NORMAL with nothing owed or
// unacknowledged, and compares:
//
//  1. the two lease databases: every ACTIVE binding (address or prefix) is
//     ACTIVE on both servers for the same client (DUID and IAID);
//  2. the clients' view: every address and prefix the recorder was
//     acknowledged and still holds is ACTIVE for that client on the server
//     that granted it;
//  3. no address or prefix was acknowledged to two clients with
//     overlapping lifetimes.
//
// It prints a summary and exits 1 on a safety violation (a lease lost, an
// address or prefix bound to two clients, a server exit that was not a kill), 3 when
// the pair did not converge (not NORMAL with nothing owed, or the servers
// disagree on a lease's state for one client), 2 when the run itself could
// not be done. It removes its namespaces on exit, also after an
// interrupt; `-down` removes what a killed run left.
//
// Goroutines: main owns the topology and the servers (faults, restarts);
// the recorder's client goroutines and its reader own the recording
// socket; the monitor only reads status over the control sockets.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandem-dhcp/tandem/control"
)

type options struct {
	rounds          int
	seed            uint64
	prefix, dir     string
	tandem          string
	rate, perfCl    int
	clients         int
	pdShare         float64
	holdMax, gapMax time.Duration
	mclt            time.Duration
	autoPartnerDown time.Duration
	settle          time.Duration
}

// planStream is the second PCG seed word of the fault plan.
const planStream = 0x6368616f73

// Fault kinds, in the order the summary lists them.
var kinds = []string{"kill-primary", "kill-secondary", "kill-both", "partner-link-down", "link-down+kill"}

func main() {
	var o options
	var down, showPlan bool
	var seed int64
	flag.IntVar(&o.rounds, "rounds", 30, "fault rounds")
	flag.Int64Var(&seed, "seed", 0, "random seed (0: from the clock; printed)")
	flag.BoolVar(&down, "down", false, "remove what a previous run left (namespaces, state dir) and exit")
	flag.StringVar(&o.prefix, "prefix", envOr("TANDEM_CHAOS_PREFIX", "tc-"), "namespace prefix")
	flag.StringVar(&o.dir, "dir", envOr("TANDEM_CHAOS_DIR", "/run/tandem-chaos"), "state dir (configs, data, logs, grants.jsonl)")
	flag.StringVar(&o.tandem, "tandem", "", "tandem binary")
	flag.IntVar(&o.rate, "rate", 100, "perfdhcp exchanges per second (-r)")
	flag.IntVar(&o.perfCl, "perf-clients", 1200, "perfdhcp client DUIDs (-R)")
	flag.IntVar(&o.clients, "clients", 150, "recording clients")
	flag.Float64Var(&o.pdShare, "pd-share", 1, "share (0..1) of the recording clients that also ask for a delegated prefix")
	flag.DurationVar(&o.holdMax, "hold-max", 12*time.Second, "longest a fault is held (at least 1s)")
	flag.DurationVar(&o.gapMax, "gap-max", 5*time.Second, "longest pause between rounds (at least 1s)")
	flag.DurationVar(&o.mclt, "mclt", 10*time.Second, "MCLT of the pair")
	flag.DurationVar(&o.autoPartnerDown, "auto-partner-down", 5*time.Second, "auto-partner-down of both servers (0: off)")
	flag.DurationVar(&o.settle, "settle", 180*time.Second, "how long to wait at the end for NORMAL with nothing owed")
	flag.BoolVar(&showPlan, "plan", false, "print the faults the seed draws and exit (runs nothing)")
	flag.Parse()
	if showPlan {
		if seed == 0 {
			fmt.Fprintln(os.Stderr, "chaos: -plan needs -seed")
			os.Exit(2)
		}
		for i, f := range plan(rand.New(rand.NewPCG(uint64(seed), planStream)), o) {
			fmt.Printf("round %d: %s, held %v, then %v\n", i+1, f.describe(), f.hold, f.gap)
		}
		return
	}
	tp := &topo{prefix: o.prefix, dir: o.dir, bin: o.tandem}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "chaos: needs root (network namespaces)")
		os.Exit(2)
	}
	if down {
		for _, n := range tp.down() {
			fmt.Println("removed namespace", n)
		}
		_ = os.RemoveAll(o.dir)
		fmt.Println("chaos: down")
		return
	}
	if o.tandem == "" || o.rounds < 0 || o.holdMax < time.Second || o.gapMax < time.Second || o.pdShare < 0 || o.pdShare > 1 {
		fmt.Fprintln(os.Stderr, "chaos: -tandem is required; -rounds >= 0; -hold-max and -gap-max >= 1s; -pd-share 0..1")
		os.Exit(2)
	}
	o.seed = uint64(seed)
	if seed == 0 {
		o.seed = uint64(time.Now().UnixNano() % 1_000_000)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := 2
	func() {
		defer func() { // a bug here must not leave namespaces behind
			if r := recover(); r != nil {
				logf("chaos: panic: %v\n%s", r, debug.Stack())
			}
		}()
		code = runChaos(ctx, tp, o)
	}()
	for _, n := range tp.down() {
		logf("removed namespace %s", n)
	}
	os.Exit(code)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var start = time.Now()

func logf(format string, args ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

// monitor polls both servers' states and records every state seen and
// the intervals in which a server was in PARTNER-DOWN while its partner
// answered too (alive: auto-partner-down during a partner-link cut), in
// which RFC 8156 §4.2.2.1 and §8.4.1 accept that one lease may go to two
// clients.
type monitor struct {
	mu      sync.Mutex
	seen    [2]map[string]bool
	splitPD []interval // the last one may still be open (Until zero)
}

func (m *monitor) run(ctx context.Context, tp *topo) {
	m.seen = [2]map[string]bool{{}, {}}
	for ctx.Err() == nil {
		var cur [2]string
		for i, s := range tp.srv {
			if st, err := s.status(ctx); err == nil && st.FO.State != "" {
				cur[i] = st.FO.State
				m.mu.Lock()
				m.seen[i][st.FO.State] = true
				m.mu.Unlock()
			}
		}
		m.sample(time.Now(), cur[0] != "" && cur[1] != "" && (cur[0] == "PARTNER-DOWN" || cur[1] == "PARTNER-DOWN"))
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// sample records whether, at t, a server was in PARTNER-DOWN with its
// partner alive.
func (m *monitor) sample(t time.Time, split bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.splitPD)
	open := n > 0 && m.splitPD[n-1].Until.IsZero()
	switch {
	case split && !open:
		m.splitPD = append(m.splitPD, interval{From: t})
	case !split && open:
		m.splitPD[n-1].Until = t
	}
}

// partnerDownSplit returns the intervals in which a server was in
// PARTNER-DOWN with its partner alive, an open one closed at now.
func (m *monitor) partnerDownSplit(now time.Time) []interval {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append([]interval(nil), m.splitPD...)
	if n := len(out); n > 0 && out[n-1].Until.IsZero() {
		out[n-1].Until = now
	}
	return out
}

func (m *monitor) states(i int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for s := range m.seen[i] {
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func runChaos(ctx context.Context, tp *topo, o options) int {
	logf("chaos: seed %d, %d rounds, prefix %s, dir %s", o.seed, o.rounds, o.prefix, o.dir)
	rng := rand.New(rand.NewPCG(o.seed, planStream))
	if err := os.RemoveAll(o.dir); err != nil {
		logf("chaos: %v", err)
		return 2
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		logf("chaos: %v", err)
		return 2
	}
	if err := tp.up(); err != nil {
		logf("chaos: setup: %v", err)
		return 2
	}
	if err := tp.prepareServers(o); err != nil {
		logf("chaos: %v", err)
		return 2
	}
	for _, s := range []*server{tp.srv[1], tp.srv[0]} {
		if err := tp.start(s); err != nil {
			logf("chaos: %v", err)
			return 2
		}
	}
	if !waitSettled(ctx, tp, 90*time.Second) {
		logf("chaos: the pair did not reach NORMAL; logs in %s/*/tandem.log", o.dir)
		return 2
	}
	logf("both servers NORMAL")

	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	mon := &monitor{}
	go mon.run(mctx, tp)

	// Load: perfdhcp (4-message exchanges from perf-clients DUIDs) and the recorder.
	perfOut, err := os.Create(filepath.Join(o.dir, "perfdhcp.txt"))
	if err != nil {
		logf("chaos: %v", err)
		return 2
	}
	defer perfOut.Close()
	perf := exec.Command("ip", "netns", "exec", tp.ns("cli"), "perfdhcp", "-6", "-l", "eth0",
		"-r", fmt.Sprint(o.rate), "-R", fmt.Sprint(o.perfCl), "-p", "7200")
	perf.Stdout, perf.Stderr = perfOut, perfOut
	if err := perf.Start(); err != nil {
		logf("chaos: perfdhcp: %v", err)
		return 2
	}
	perfDone := make(chan struct{})
	go func() { _ = perf.Wait(); close(perfDone) }()
	gf, err := os.Create(filepath.Join(o.dir, "grants.jsonl"))
	if err != nil {
		logf("chaos: %v", err)
		return 2
	}
	defer gf.Close()
	rec := &recorder{ifname: "eth0", clients: o.clients, pdShare: o.pdShare, seed: o.seed, out: gf}
	if err := rec.openIn(tp.ns("cli")); err != nil {
		logf("chaos: recorder: %v", err)
		return 2
	}
	defer rec.Close()
	rctx, rcancel := context.WithCancel(ctx)
	recDone := make(chan struct{})
	go func() { rec.Run(rctx); close(recDone) }()
	logf("load on: perfdhcp -r %d -R %d, %d recording clients (%.0f%% with a prefix)", o.rate, o.perfCl, o.clients, 100*o.pdShare)
	sleep(ctx, 5*time.Second)

	counts := map[string]int{}
	rounds := 0
	for r, f := range plan(rng, o) {
		if ctx.Err() != nil {
			break
		}
		counts[f.kind]++
		rounds++
		var heal []func() string
		restart := func(s *server) func() string {
			return func() string {
				if !s.alive() {
					if err := tp.start(s); err != nil {
						logf("  restart %s: %v", s.role, err)
					}
				}
				return "restart " + s.role
			}
		}
		linkUp := func() string { _ = tp.link(true); return "link up" }
		switch f.kind {
		case "kill-primary", "kill-secondary":
			tp.srv[f.victim].kill()
			heal = append(heal, restart(tp.srv[f.victim]))
		case "kill-both":
			tp.srv[f.victim].kill()
			tp.srv[1-f.victim].kill()
			heal = append(heal, restart(tp.srv[0]), restart(tp.srv[1]))
		case "partner-link-down":
			_ = tp.link(false)
			heal = append(heal, linkUp)
		case "link-down+kill":
			_ = tp.link(false)
			sleep(ctx, f.lead)
			tp.srv[f.victim].kill()
			heal = append(heal, linkUp, restart(tp.srv[f.victim]))
		}
		if f.swap && len(heal) == 2 {
			heal[0], heal[1] = heal[1], heal[0]
		}
		logf("round %d: %s, held %v, %d address and %d prefix grants so far", r+1, f.describe(), f.hold, rec.st.Grants.Load(), rec.st.PDGrants.Load())
		sleep(ctx, f.hold)
		var did []string
		for i, h := range heal {
			if i > 0 {
				sleep(ctx, f.between)
			}
			did = append(did, h())
		}
		logf("  healed: %s", strings.Join(did, ", then "))
		sleep(ctx, f.gap)
	}

	// The end: stop the load, heal everything, let the pair settle.
	rcancel()
	<-recDone
	_ = perf.Process.Signal(os.Interrupt)
	select {
	case <-perfDone:
	case <-time.After(10 * time.Second):
		_ = perf.Process.Kill()
		<-perfDone
	}
	_ = tp.link(true)
	for _, s := range tp.srv {
		if !s.alive() {
			_ = tp.start(s)
		}
	}
	logf("load off after %d rounds; waiting up to %v for NORMAL/NORMAL with nothing owed", rounds, o.settle)
	t0 := time.Now()
	settled := waitSettled(ctx, tp, o.settle)
	settleTime := time.Since(t0)
	mcancel()

	return report(ctx, tp, o, rec, mon, counts, rounds, settled, settleTime)
}

// fault is one round: what is done, to whom, for how long, and how it is
// healed. The whole plan is drawn from the seed before the run starts, so a
// seed names the same faults in the same order with the same timings.
type fault struct {
	kind   string
	victim int // 0 primary, 1 secondary: the one killed (kill-both: first)
	// lead is how long the link is down before the kill (link-down+kill).
	lead, hold time.Duration
	swap       bool          // heal in the other order (two heal steps)
	between    time.Duration // between the two heal steps
	gap        time.Duration // after healing, before the next round
}

func (f fault) describe() string {
	who := [2]string{"primary", "secondary"}[f.victim]
	switch f.kind {
	case "kill-both":
		return fmt.Sprintf("kill-both (%s first)", who)
	case "link-down+kill":
		return fmt.Sprintf("link-down+kill (%s after %v)", who, f.lead)
	}
	return f.kind
}

func plan(rng *rand.Rand, o options) []fault {
	dur := func(lo, hi time.Duration) time.Duration {
		return (lo + time.Duration(rng.Int64N(int64(hi-lo)+1))).Round(100 * time.Millisecond)
	}
	fs := make([]fault, o.rounds)
	for i := range fs {
		f := fault{kind: kinds[rng.IntN(len(kinds))], victim: rng.IntN(2)}
		switch f.kind {
		case "kill-primary":
			f.victim = 0
		case "kill-secondary":
			f.victim = 1
		}
		f.lead = dur(0, 3*time.Second)
		f.hold = dur(time.Second, o.holdMax)
		f.swap = rng.IntN(2) == 1
		f.between = dur(0, 2*time.Second)
		f.gap = dur(time.Second, o.gapMax)
		fs[i] = f
	}
	return fs
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitSettled polls until both servers are NORMAL with no owed or
// unacknowledged updates, or the timeout passes.
func waitSettled(ctx context.Context, tp *topo, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ok := true
		for _, s := range tp.srv {
			st, err := s.status(ctx)
			if err != nil || st.FO.State != "NORMAL" || st.FO.Owed != 0 || st.FO.Unacked != 0 {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
		sleep(ctx, 250*time.Millisecond)
	}
	return false
}

func report(ctx context.Context, tp *topo, o options, rec *recorder, mon *monitor, counts map[string]int, rounds int, settled bool, settleTime time.Duration) int {
	violations := 0
	fmt.Println()
	fmt.Println("== chaos summary")
	fmt.Printf("seed %d, rounds %d, MCLT %v, auto-partner-down %v\n", o.seed, rounds, o.mclt, o.autoPartnerDown)
	var fk []string
	for _, k := range kinds {
		fk = append(fk, fmt.Sprintf("%s %d", k, counts[k]))
	}
	fmt.Printf("faults: %s\n", strings.Join(fk, ", "))
	for i, s := range tp.srv {
		fmt.Printf("%s: SIGKILLed %d times, unexpected exits %d, states seen: %s\n", s.role, s.kills, s.unexpected.Load(), mon.states(i))
		if n := s.unexpected.Load(); n > 0 {
			violations++
			fmt.Printf("VIOLATION: the %s exited %d times without being killed (see %s/tandem.log)\n", s.role, n, s.dir)
		}
	}
	st := &rec.st
	fmt.Printf("recorder: %d clients, %d grants, %d prefix grants (replies: %d renew, %d rebind), %d releases, %d NoBinding, %d NoAddrsAvail, %d NoPrefixAvail, %d timeouts\n",
		o.clients, st.Grants.Load(), st.PDGrants.Load(), st.Renewed.Load(), st.Rebound.Load(), st.Released.Load(), st.NoBinding.Load(), st.NoAddrs.Load(), st.NoPrefix.Load(), st.Timeouts.Load())
	fmt.Printf("perfdhcp: %s\n", perfSummary(filepath.Join(o.dir, "perfdhcp.txt")))
	n, give, take := rebalanceSummary(filepath.Join(tp.srv[0].dir, "tandem.log"))
	fmt.Printf("prefix rebalancing (primary's log): %d rebalances, %d prefixes given, %d taken back\n", n, give, take)
	if settled {
		fmt.Printf("settled: both NORMAL, owed 0, unacked 0 after %v\n", settleTime.Round(100*time.Millisecond))
	} else {
		var sts []string
		for _, s := range tp.srv {
			x, err := s.status(ctx)
			sts = append(sts, fmt.Sprintf("%s %+v (%v)", s.role, x.FO, err))
		}
		fmt.Printf("NOT SETTLED: not NORMAL with nothing owed after %v: %s\n", o.settle, strings.Join(sts, "; "))
	}

	at := time.Now()
	servers := map[string][]control.Lease{}
	names := map[string]string{}
	var dbs [2][]control.Lease
	for i, s := range tp.srv {
		x, err := s.status(ctx)
		ls, lerr := s.leases(ctx)
		if err != nil || lerr != nil {
			fmt.Printf("VIOLATION: cannot read the %s (status %v, leases %v)\n", s.role, err, lerr)
			return 1
		}
		servers[x.DUID], names[x.DUID], dbs[i] = ls, s.role, ls
	}
	fs, active := compareDBs(dbs[0], dbs[1], at)
	split := mon.partnerDownSplit(time.Now())
	fs2, checked := checkClients(rec.snapshot(), servers, names, at, split)
	fs3, reused := checkOverlaps(rec.snapshot(), split)
	fmt.Printf("databases: %d / %d bindings, %d ACTIVE addresses and %d ACTIVE prefixes compared\n", len(dbs[0]), len(dbs[1]), active["na"], active["pd"])
	fmt.Printf("clients: %d addresses and %d prefixes still held by recording clients checked; %d addresses and %d prefixes went to more than one client\n",
		checked["na"], checked["pd"], reused["na"], reused["pd"])
	all := append(append(fs, fs2...), fs3...)
	var nviol, ndisp, nnote int
	for _, f := range all {
		kind, n := "note", &nnote
		switch {
		case f.Violation:
			kind, n = "VIOLATION", &nviol
		case f.Dispute:
			kind, n = "DISPUTE", &ndisp
		}
		*n++
		if *n <= 20 {
			fmt.Printf("%s [%s]: %s\n", kind, f.Check, f.Text)
		} else if *n == 21 {
			fmt.Printf("%s [%s]: ... (the rest in the count below)\n", kind, f.Check)
		}
	}
	violations += nviol
	fmt.Printf("findings: %d safety violations, %d disputes (same client, ACTIVE on one server only), %d notes (differences at the expiry edge; doubles while a server was in PARTNER-DOWN with its partner alive, which RFC 8156 accepts)\n",
		violations, ndisp, nnote)
	switch {
	case violations > 0:
		fmt.Printf("chaos: FAIL: %d safety violations (logs and grants.jsonl in %s)\n", violations, o.dir)
		return 1
	case ndisp > 0 || !settled:
		fmt.Printf("chaos: FAIL: not converged: %d disputes, settled=%v (logs in %s)\n", ndisp, settled, o.dir)
		return 3
	}
	fmt.Printf("chaos: PASS: %d rounds, no violations\n", rounds)
	return 0
}

// rebalanceSummary sums the primary's "rebalancing delegable prefixes" log
// lines (JSON): how often it moved prefixes and how many it gave to the
// secondary (FREE-BACKUP) and asked back (take-backs, some of which the
// secondary may refuse).
func rebalanceSummary(path string) (n int, give, take uint64) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte("rebalancing delegable prefixes")) {
			continue
		}
		var l struct {
			Give uint64 `json:"give"`
			Take uint64 `json:"take"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			n, give, take = n+1, give+l.Give, take+l.Take
		}
	}
	return n, give, take
}

// perfSummary pulls the rate and the sent/received counts out of
// perfdhcp's report.
func perfSummary(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no report"
	}
	var out []string
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "Rate:"):
			out = append(out, l)
		case strings.HasPrefix(l, "***Statistics for:"):
			section = strings.Trim(strings.TrimPrefix(l, "***Statistics for:"), "* ")
		case strings.HasPrefix(l, "sent packets:"), strings.HasPrefix(l, "received packets:"):
			out = append(out, section+" "+l)
		}
	}
	if len(out) == 0 {
		return "no statistics in " + path
	}
	return strings.Join(out, "; ")
}
