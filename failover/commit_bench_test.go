package failover

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkPairReplication measures the update path of a pair in NORMAL:
// b.N clients get a lease from the primary (Rapid Commit, 32 at a time, each
// committed before its Reply), and the timer stops when every binding is on
// the secondary (committed there before its BNDREPLY) and every BNDREPLY is
// committed on the primary. Both endpoints run in this process on real
// raftstores (fsync) over an in-memory link. Reported: leases/s, the
// process's CPU per lease (both servers), and the log entries each server
// wrote per lease.
//
//	go test ./failover -run '^$' -bench PairReplication -benchtime 5000x -count 5
func BenchmarkPairReplication(b *testing.B) {
	p := newPairEnv(b)
	p.sec.start()
	p.pri.start()
	p.connect()
	p.waitStates("NORMAL", "NORMAL")
	pri0, sec0 := p.pri.st.Info().LastLogIndex, p.sec.st.Info().LastLogIndex
	cpu0 := cpuTime()
	start := time.Now()
	b.ResetTimer()
	p.pri.leaseMany(1, b.N)
	waitFor(b, "every update acknowledged", func() bool { return p.pri.owed() == 0 && p.sec.owed() == 0 })
	b.StopTimer()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "leases/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/lease")
	b.ReportMetric(float64(p.pri.st.Info().LastLogIndex-pri0)/float64(b.N), "pri-entries/lease")
	b.ReportMetric(float64(p.sec.st.Info().LastLogIndex-sec0)/float64(b.N), "sec-entries/lease")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
