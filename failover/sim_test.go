package failover

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Flags of the deterministic simulation (scripts/simulate sets them):
//
//	go test ./failover -run 'TestSimulate$' -seed 42 -steps 1000 -v
//	go test ./failover -run 'TestSimulate$' -seeds 200 -firstseed 1000 -parallel 2
var (
	simSeed      = flag.Uint64("seed", 0, "simulation: run only this seed (0: -seeds seeds from -firstseed)")
	simSeeds     = flag.Int("seeds", 4, "simulation: how many seeds to run")
	simFirstSeed = flag.Uint64("firstseed", 1, "simulation: the first seed of -seeds (unset: from 1, skipping the simRegressions seeds, which run in TestSimulateRegressions)")
	simSteps     = flag.Int("steps", 250, "simulation: steps per seed")
	simLogLines  = flag.Int("simlog", 50, "simulation: how many of the last step log lines a failure prints")
	// simWipes includes data-dir wipes among the crashes (-wipes=false
	// leaves them out: scripts/simulate -no-wipes).
	simWipes = flag.Bool("wipes", true, "simulation: include data-dir wipes among the crashes")
)

// simRegressions are seeds that once found a bug; each runs in the normal
// suite with the steps it needed.
var simRegressions = []struct {
	seed    uint64
	steps   int
	violate bool
	wipes   bool
	why     string
}{
	{1, 60, false, false, "a Release in the same second as the grant, crossing with the partner's copy after a crash: " +
		"both sides rejected each other's update (Figure 4 \"accept\" tie) forever (failover/update tie)"},
	{3, 225, false, false, "the secondary's STARTUP timer expired as the connection came up: the handshake had told the primary " +
		"STARTUP, nothing told it PARTNER-DOWN, and the primary waited in RECOVER forever (Endpoint.Up resends the STATE)"},
	{1032, 245, false, false, "a take-back's BNDREPLY lost with the connection: the primary kept FREE-BACKUP, the secondary FREE, " +
		"nothing owed, and the prefix was lost to both pools (the secondary now owes the FREE: update.TakenBack)"},
	{25, 45, false, true, "the primary renewed a lease in COMMUNICATIONS-INTERRUPTED (within acked + MCLT) and lost its data dir: " +
		"the secondary expired the lease at the end it knew and, after the primary's UPDREQALL, both gave it to a second " +
		"client while the first held it (the secondary now holds leases to expiration-time + MCLT: update.HoldForLostPartner)"},
}

// TestSimulate runs the RFC 8156 pair under a random, seeded schedule of
// client transactions (many clients: Solicit with and without Rapid
// Commit, Request, Renew, Rebind, Release, Decline, against whichever
// server answers), clock jumps past T1/T2/lifetimes/the MCLT, partner-link
// cuts, black holes, delays and heals, crashes and restarts, and the
// operator's PARTNER-DOWN under the RFC's rule; it checks the invariants
// after every step (sim_helpers_test.go; docs/reliability/simulation.md).
func TestSimulate(t *testing.T) {
	runSims(t, false)
}

// TestSimulateConflict is TestSimulate with the operator breaking the
// PARTNER-DOWN rule (declaring it with the partner alive and serving, on
// one side or both): clients may then hold one address twice, which the
// RFC accepts; once the pair reconnects and drains, POTENTIAL-CONFLICT
// resolution must leave no address ACTIVE for two clients and equal tables.
func TestSimulateConflict(t *testing.T) {
	runSims(t, true)
}

func TestSimulateRegressions(t *testing.T) {
	for _, r := range simRegressions {
		t.Run(fmt.Sprintf("seed%d", r.seed), func(t *testing.T) {
			t.Parallel()
			t.Logf("regression: %s", r.why)
			s := newSim(t, simOptions{seed: r.seed, steps: r.steps, violate: r.violate, wipes: r.wipes})
			s.run()
		})
	}
}

func runSims(t *testing.T, violate bool) {
	seeds := []uint64{*simSeed}
	if *simSeed == 0 {
		seeds = seeds[:0]
		n := *simSeeds
		if violate && !flagSet("seeds") {
			n = 2 // the suite's bounded run
		}
		// The default set skips the regression seeds of this mode: they
		// run in TestSimulateRegressions already. An explicit -firstseed
		// (scripts/simulate) runs exactly its range.
		skip := !flagSet("firstseed")
		for seed := *simFirstSeed; len(seeds) < n; seed++ {
			if !skip || !isRegression(seed, violate) {
				seeds = append(seeds, seed)
			}
		}
	}
	if testing.Short() {
		seeds = seeds[:min(len(seeds), 1)]
	}
	start := time.Now()
	var mu sync.Mutex
	var failed []uint64
	steps := 0
	t.Run("seeds", func(t *testing.T) {
		for _, seed := range seeds {
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				t.Parallel()
				s := newSim(t, simOptions{seed: seed, steps: *simSteps, violate: violate, wipes: *simWipes})
				defer func() {
					mu.Lock()
					defer mu.Unlock()
					steps += s.step
					if t.Failed() {
						failed = append(failed, seed)
					}
				}()
				s.run()
				t.Log(s.summary())
			})
		}
	})
	// One line for scripts/simulate to collect.
	fmt.Fprintf(os.Stdout, "SIMULATION %s violate=%v seeds=%d steps=%d elapsed=%s failed=%v\n",
		t.Name(), violate, len(seeds), steps, time.Since(start).Round(time.Millisecond), failed)
}

// isRegression reports whether seed is in simRegressions for this mode.
func isRegression(seed uint64, violate bool) bool {
	for _, r := range simRegressions {
		if r.seed == seed && r.violate == violate {
			return true
		}
	}
	return false
}

func flagSet(name string) (set bool) {
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
