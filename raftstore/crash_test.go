package raftstore

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Process-level crash consistency. TestCrashConsistency runs this test
// binary again as a child (TestCrashChild) that applies commands from many
// goroutines until the parent kills it with SIGKILL at a random moment; the
// parent then reopens the data dir and checks that the state holds exactly
// what the child was told is stored, plus possibly the one command each
// goroutine had in flight, applied whole or not at all.
//
// The child prints, unbuffered, one line per command before Apply (its
// intent) and one after Apply returned nil (its acknowledgement):
//
//	I <goroutine> <seq> <marker> <op>...   op: +<type>/<addr>/<counter> (put) or -<type>/<addr> (delete)
//	A <goroutine> <seq> <index>
//
// Every put writes DUID = marker (unique per command) and IAID = counter (one
// more than the binding's previous counter), so the parent can tell exactly
// which command last wrote each binding. Each goroutine owns its resources
// (new addresses derived from round, goroutine and a sequence; bindings of
// earlier rounds split by a hash of the address), so the goroutines never
// conflict, and each has at most one unacknowledged command when killed.

const crashGoroutines = 32

// crashConfig makes snapshots and log compaction happen during every round.
func crashConfig(dir string) Config {
	return Config{DataDir: dir, SnapshotThreshold: 200, TrailingLogs: 100, SnapshotInterval: 50 * time.Millisecond}
}

var crashBase = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).Unix()

// crashAddr is the address of allocation n by goroutine g in round r.
func crashAddr(round, g int, n uint64) netip.Addr {
	var a [16]byte
	copy(a[:], []byte{0x20, 0x01, 0x0d, 0xb8, byte(round >> 8), byte(round), 0, byte(g)})
	for i := 0; i < 8; i++ {
		a[15-i] = byte(n >> (8 * i))
	}
	return netip.AddrFrom16(a)
}

// crashOwner says which child goroutine owns an existing binding.
func crashOwner(r fsm.Resource) int {
	h := 0
	for _, b := range r.IP {
		h = h*31 + int(b)
	}
	return (h&0x7fffffff + int(r.Type)) % crashGoroutines
}

func resText(r fsm.Resource) string { return fmt.Sprintf("%d/%s", r.Type, r.Addr()) }

func parseRes(s string) (fsm.Resource, error) {
	t, a, ok := strings.Cut(s, "/")
	if !ok {
		return fsm.Resource{}, fmt.Errorf("bad resource %q", s)
	}
	typ, err := strconv.Atoi(t)
	if err != nil {
		return fsm.Resource{}, err
	}
	addr, err := netip.ParseAddr(a)
	if err != nil {
		return fsm.Resource{}, err
	}
	return fsm.AddrResource(fsm.IAType(typ), addr), nil
}

// crashBinding is the binding a put by command marker writes.
func crashBinding(r fsm.Resource, marker string, counter uint32, seq int) fsm.Binding {
	now := crashBase + int64(seq)
	return fsm.Binding{Resource: r, Status: fsm.StatusActive, DUID: marker, IAID: counter,
		PreferredLifetime: 1800, ValidLifetime: 3600, CLTT: now, StartTimeOfState: now,
		StateExpirationTime: now + 3600, PartnerLifetime: now + 5400}
}

type owned struct {
	res     fsm.Resource
	rev     uint64
	counter uint32
}

// emit writes one line with a single write(2): nothing is buffered in the
// process, so every line printed before SIGKILL reaches the parent.
func emit(format string, args ...any) {
	_, _ = os.Stdout.Write([]byte(fmt.Sprintf(format, args...) + "\n"))
}

// TestCrashChild is the child process of TestCrashConsistency.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("TANDEM_CRASH_CHILD")
	if dir == "" {
		t.Skip("child process of TestCrashConsistency")
	}
	round, _ := strconv.Atoi(os.Getenv("TANDEM_CRASH_ROUND"))
	seed, _ := strconv.ParseInt(os.Getenv("TANDEM_CRASH_SEED"), 10, 64)
	// Never outlive the parent: it holds our stdin open.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	time.AfterFunc(2*time.Minute, func() { emit("ERR child was not killed"); os.Exit(4) })

	s, err := Open(crashConfig(dir))
	if err != nil {
		emit("ERR open: %v", err)
		os.Exit(1)
	}
	mine := make([][]owned, crashGoroutines)
	v := s.State().View()
	v.Ascend(fsm.Resource{}, func(b *fsm.Binding) bool {
		g := crashOwner(b.Resource)
		mine[g] = append(mine[g], owned{res: b.Resource, rev: b.Rev, counter: b.IAID})
		return true
	})
	emit("READY %d %d", os.Getpid(), v.Len())
	for g := 0; g < crashGoroutines; g++ {
		go crashWorker(s, round, g, rand.New(rand.NewSource(seed+int64(g))), mine[g])
	}
	select {}
}

func crashWorker(s *Store, round, g int, rng *rand.Rand, mine []owned) {
	typ := fsm.IANA
	if g%4 == 3 {
		typ = fsm.IATA
	}
	var next uint64
	alloc := func() owned {
		next++
		return owned{res: fsm.AddrResource(typ, crashAddr(round, g, next))}
	}
	for seq := 1; ; seq++ {
		marker := fmt.Sprintf("c/%d/%d/%d", round, g, seq)
		// Pick the ops: indexes into mine (updates, deletes) and new allocations.
		var puts []owned
		var upd []int // indexes in mine, put with IfRev
		del := -1     // index in mine, deleted with IfRev
		pickOther := func(not ...int) int {
			for {
				i := rng.Intn(len(mine))
				ok := true
				for _, n := range not {
					ok = ok && i != n
				}
				if ok {
					return i
				}
			}
		}
		switch p := rng.Intn(100); {
		case p < 40 || len(mine) < 3:
			puts = append(puts, alloc())
		case p < 70:
			upd = append(upd, rng.Intn(len(mine)))
		case p < 90: // multi-op: 1-2 allocations and an update, atomically
			puts = append(puts, alloc())
			if rng.Intn(2) == 0 {
				puts = append(puts, alloc())
			}
			upd = append(upd, rng.Intn(len(mine)))
		default: // multi-op: release one binding, update another
			del = rng.Intn(len(mine))
			upd = append(upd, pickOther(del))
			if rng.Intn(2) == 0 {
				upd = append(upd, pickOther(del, upd[0]))
			}
		}
		cmd := &fsm.Command{Type: fsm.CmdTxn, Time: (crashBase + int64(seq)) * 1e9, Origin: fsm.OriginClient, Note: marker}
		var line strings.Builder
		fmt.Fprintf(&line, "I %d %d %s", g, seq, marker)
		for _, o := range puts {
			cmd.Ops = append(cmd.Ops, fsm.Op{Resource: o.res, IfRev: 0, Binding: crashBinding(o.res, marker, 1, seq)})
			fmt.Fprintf(&line, " +%s/1", resText(o.res))
		}
		for _, i := range upd {
			o := mine[i]
			cmd.Ops = append(cmd.Ops, fsm.Op{Resource: o.res, IfRev: o.rev, Binding: crashBinding(o.res, marker, o.counter+1, seq)})
			fmt.Fprintf(&line, " +%s/%d", resText(o.res), o.counter+1)
		}
		if del >= 0 {
			o := mine[del]
			cmd.Ops = append(cmd.Ops, fsm.Op{Resource: o.res, IfRev: o.rev, Delete: true})
			fmt.Fprintf(&line, " -%s", resText(o.res))
		}
		emit("%s", line.String())
		idx, err := s.Apply(cmd)
		if err != nil {
			emit("ERR %d %d: %v", g, seq, err)
			os.Exit(1)
		}
		emit("A %d %d %d", g, seq, idx)
		for _, i := range upd {
			mine[i].rev, mine[i].counter = idx, mine[i].counter+1
		}
		for _, o := range puts {
			o.rev, o.counter = idx, 1
			mine = append(mine, o)
		}
		if del >= 0 {
			mine[del] = mine[len(mine)-1]
			mine = mine[:len(mine)-1]
		}
	}
}

// crashModel is what the parent knows: for each binding, the command that
// last wrote it (marker), its counter and its Rev.
type crashModel map[fsm.Resource]crashEntry

type crashEntry struct {
	marker  string
	counter uint32
	rev     uint64
}

type crashOp struct {
	res     fsm.Resource
	del     bool
	counter uint32
}

type crashIntent struct {
	seq    int
	marker string
	ops    []crashOp
	acked  bool
	index  uint64
}

func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: not in -short mode")
	}
	// About 1 s a round, 2 s under -race (the child runs under it too).
	const rounds = 20
	seed := time.Now().UnixNano()
	if s := os.Getenv("TANDEM_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("TANDEM_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (TANDEM_CRASH_SEED=%d repeats the kill delays and command choices)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	model := crashModel{}
	var childSnapshots, midSnapshot, totalAcked, totalInflightApplied, totalInflightLost int
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		delay := time.Duration(50+rng.Intn(351)) * time.Millisecond
		before := newestSnapshotIndex(t, dir)
		st := crashRound(t, dir, round, rng.Int63(), delay, model)
		if t.Failed() {
			return
		}
		after := newestSnapshotIndex(t, dir)
		if after != before {
			childSnapshots++
		}
		totalAcked += st.acked
		totalInflightApplied += st.inflightApplied
		totalInflightLost += st.inflightLost
		if st.midSnapshot {
			midSnapshot++
		}
		t.Logf("round %2d: killed %v after the first ack: %5d acked, in flight %2d applied %2d not; newest snapshot %d -> %d; %d bindings",
			round, delay, st.acked, st.inflightApplied, st.inflightLost, before, after, len(model))
	}
	info := logInfo(t, dir)
	t.Logf("%d rounds in %v: %d commands acknowledged, in flight at the kill: %d applied, %d not; the child took snapshots in %d rounds and was killed while writing one in %d; log %d..%d, %d snapshots kept",
		rounds, time.Since(start).Round(time.Millisecond), totalAcked, totalInflightApplied, totalInflightLost,
		childSnapshots, midSnapshot, info.FirstIndex, info.LastIndex, len(info.Snapshots))
	if childSnapshots < rounds/4 {
		t.Errorf("the child took a snapshot in only %d of %d rounds: the test did not crash around snapshots", childSnapshots, rounds)
	}
	if info.FirstIndex <= 1 {
		t.Errorf("the log was never compacted (first index %d)", info.FirstIndex)
	}
}

type crashStats struct {
	acked, inflightApplied, inflightLost int
	midSnapshot                          bool // killed while writing a snapshot
}

func logInfo(t *testing.T, dir string) *LogInfo {
	t.Helper()
	lr, err := OpenLog(dir, time.Second)
	if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	defer lr.Close()
	in, err := lr.Info()
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	return in
}

func newestSnapshotIndex(t *testing.T, dir string) uint64 {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, logFile)); err != nil {
		return 0
	}
	if in := logInfo(t, dir); len(in.Snapshots) > 0 {
		return in.Snapshots[0].Index
	}
	return 0
}

// crashRound runs one child, kills it delay after its first acknowledgement,
// and checks the reopened state against model, which it then advances.
func crashRound(t *testing.T, dir string, round int, seed int64, delay time.Duration, model crashModel) crashStats {
	t.Helper()
	var st crashStats
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "TANDEM_CRASH_CHILD="+dir,
		fmt.Sprintf("TANDEM_CRASH_ROUND=%d", round), fmt.Sprintf("TANDEM_CRASH_SEED=%d", seed))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		lines    []string
		firstAck = make(chan struct{})
		eof      = make(chan struct{})
	)
	go func() {
		defer close(eof)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		acked := false
		for sc.Scan() {
			l := sc.Text()
			mu.Lock()
			lines = append(lines, l)
			mu.Unlock()
			if !acked && strings.HasPrefix(l, "A ") {
				acked = true
				close(firstAck)
			}
		}
	}()
	fail := func(format string, args ...any) crashStats {
		t.Helper()
		_ = cmd.Process.Kill()
		<-eof
		_ = cmd.Wait()
		mu.Lock()
		defer mu.Unlock()
		tail := lines
		if len(tail) > 20 {
			tail = tail[len(tail)-20:]
		}
		t.Fatalf("round %d: %s\nchild stdout (last lines):\n%s\nchild stderr:\n%s",
			round, fmt.Sprintf(format, args...), strings.Join(tail, "\n"), stderr.String())
		return st
	}
	select {
	case <-firstAck:
	case <-eof:
		return fail("the child exited before acknowledging anything")
	case <-time.After(60 * time.Second):
		return fail("no acknowledgement within 60s")
	}
	// The crash: SIGKILL at a random moment while 32 goroutines are applying.
	select {
	case <-time.After(delay):
	case <-eof:
		return fail("the child exited by itself")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fail("kill: %v", err)
	}
	<-eof
	werr := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return fail("the child did not die of SIGKILL: %v", werr)
	}

	// Parse what the child said.
	intents := make([][]*crashIntent, crashGoroutines)
	ready := -1
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) == 0:
		case f[0] == "ERR":
			return fail("the child reported: %s", l)
		case f[0] == "READY" && len(f) == 3:
			ready, _ = strconv.Atoi(f[2])
		case f[0] == "I" && len(f) >= 5:
			g, _ := strconv.Atoi(f[1])
			seq, _ := strconv.Atoi(f[2])
			if g < 0 || g >= crashGoroutines || seq != len(intents[g])+1 {
				return fail("out of sequence: %s", l)
			}
			in := &crashIntent{seq: seq, marker: f[3]}
			for _, o := range f[4:] {
				var op crashOp
				var err error
				switch o[0] {
				case '+':
					rs, c, _ := strings.Cut(o[1:], "/")
					r, cnt, _ := strings.Cut(c, "/")
					var n uint64
					if n, err = strconv.ParseUint(cnt, 10, 32); err == nil {
						op.counter = uint32(n)
						op.res, err = parseRes(rs + "/" + r)
					}
				case '-':
					op.del = true
					op.res, err = parseRes(o[1:])
				default:
					err = fmt.Errorf("bad op")
				}
				if err != nil {
					return fail("bad intent %q: %v", l, err)
				}
				in.ops = append(in.ops, op)
			}
			intents[g] = append(intents[g], in)
		case f[0] == "A" && len(f) == 4:
			g, _ := strconv.Atoi(f[1])
			seq, _ := strconv.Atoi(f[2])
			idx, err := strconv.ParseUint(f[3], 10, 64)
			if err != nil || g < 0 || g >= crashGoroutines || seq != len(intents[g]) || intents[g][seq-1].acked {
				return fail("acknowledgement without its intent: %s", l)
			}
			intents[g][seq-1].acked, intents[g][seq-1].index = true, idx
		}
	}
	if ready != len(model) {
		return fail("the child opened the store with %d bindings, the model has %d", ready, len(model))
	}

	if tmp, _ := filepath.Glob(filepath.Join(dir, snapDir, "*.tmp")); len(tmp) > 0 {
		st.midSnapshot = true
	}

	// Reopen in this process and check.
	s, err := Open(crashConfig(dir))
	if err != nil {
		t.Fatalf("round %d: reopen after the crash: %v", round, err)
	}
	state := s.State()
	for g := range intents {
		for _, in := range intents[g] {
			if in.acked {
				st.acked++
				for _, op := range in.ops {
					if op.del {
						delete(model, op.res)
					} else {
						model[op.res] = crashEntry{marker: in.marker, counter: op.counter, rev: in.index}
					}
				}
				continue
			}
			// The one command in flight: applied whole or not at all.
			present, rev := 0, uint64(0)
			for _, op := range in.ops {
				if b, ok := state.Get(op.res); ok && !op.del && b.DUID == in.marker {
					present++
					if rev != 0 && b.Rev != rev {
						t.Errorf("round %d: %s: bindings of one txn have revisions %d and %d", round, in.marker, rev, b.Rev)
					}
					rev = b.Rev
				}
			}
			puts := 0
			for _, op := range in.ops {
				if !op.del {
					puts++
				}
			}
			switch present {
			case 0:
				st.inflightLost++
			case puts:
				st.inflightApplied++
				for _, op := range in.ops {
					if op.del {
						delete(model, op.res)
					} else {
						model[op.res] = crashEntry{marker: in.marker, counter: op.counter, rev: rev}
					}
				}
			default:
				t.Errorf("round %d: txn %s applied in part: %d of its %d puts are in the state", round, in.marker, present, puts)
			}
			if in.seq != len(intents[g]) {
				t.Errorf("round %d: %s is not acknowledged but a later command of its goroutine is", round, in.marker)
			}
		}
	}
	// The whole state must be the model: nothing acknowledged is missing or
	// older, nothing unknown is there.
	v := state.View()
	if v.Len() != len(model) {
		t.Errorf("round %d: %d bindings after reopen, want %d", round, v.Len(), len(model))
	}
	bad := 0
	v.Ascend(fsm.Resource{}, func(b *fsm.Binding) bool {
		m, ok := model[b.Resource]
		switch {
		case !ok:
			t.Errorf("round %d: %v (marker %s) is in the state but should not be (never written, or deleted by an acknowledged command)", round, b.Resource, b.DUID)
		case b.DUID != m.marker || b.IAID != m.counter || b.Rev != m.rev:
			t.Errorf("round %d: %v: state has marker %s counter %d rev %d, want marker %s counter %d rev %d",
				round, b.Resource, b.DUID, b.IAID, b.Rev, m.marker, m.counter, m.rev)
		default:
			return true
		}
		bad++
		return bad < 10
	})
	for r, m := range model {
		if _, ok := v.Get(r); !ok {
			t.Errorf("round %d: acknowledged binding %v (marker %s counter %d) is missing", round, r, m.marker, m.counter)
			if bad++; bad >= 10 {
				break
			}
		}
	}
	want := dump(state)
	if err := s.Close(); err != nil {
		t.Fatalf("round %d: close: %v", round, err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, snapDir, "*.tmp")); len(tmp) > 0 {
		t.Errorf("round %d: unfinished snapshots left by the crash were not removed at Open: %v", round, tmp)
	}

	// A fresh offline replay of the same dir gives the same state.
	lr, err := OpenLog(dir, time.Second)
	if err != nil {
		t.Fatalf("round %d: OpenLog: %v", round, err)
	}
	res, err := lr.Replay(ReplayTarget{})
	lr.Close()
	if err != nil {
		t.Fatalf("round %d: Replay: %v", round, err)
	}
	if len(res.Damaged) > 0 {
		t.Errorf("round %d: replay found %d damaged entries, first: %v", round, len(res.Damaged), res.Damaged[0].Err)
	}
	if got := dump(res.State); got != want {
		t.Errorf("round %d: offline replay differs from the reopened state:\n got %.300s\nwant %.300s", round, got, want)
	}
	return st
}
