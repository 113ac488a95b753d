package server

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/fsm"
)

// reclaimBatch bounds the bindings changed by one reclamation entry.
const reclaimBatch = 512

func (s *Server) reclaimLoop(ctx context.Context) {
	t := s.clock.NewTimer(s.cfg.ReclaimInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			if _, err := s.Reclaim(); err != nil {
				s.log.Warn("lease reclamation", zap.Error(err))
			}
			t.Reset(s.cfg.ReclaimInterval)
		}
	}
}

// Reclaim processes every binding whose state timer has run out: an expired
// ACTIVE lease is freed (Policy.Free), a freed lease whose hold time is over
// is forgotten, a declined (ABANDONED) address becomes usable again. Each
// batch is one log entry. It returns the number of bindings changed.
func (s *Server) Reclaim() (int, error) {
	total := 0
	for rounds := 0; rounds < 1000; rounds++ {
		now := s.clock.Now()
		due := s.state.Expiring(now.Unix(), reclaimBatch)
		if len(due) == 0 {
			return total, nil
		}
		ops := make([]fsm.Op, 0, len(due))
		expired := 0
		for i := range due {
			b := due[i]
			switch b.Status {
			case fsm.StatusActive:
				expired++
				s.policy.Free(now, &b, false)
				ops = append(ops, fsm.Op{Resource: b.Resource, IfRev: due[i].Rev, Binding: b})
			case fsm.StatusFree, fsm.StatusAbandoned, fsm.StatusReset:
				if b.Owed() {
					// The failover partner has not been told yet: keep the
					// record until the update is acknowledged.
					b.StateExpirationTime = now.Add(s.cfg.ExpiredHoldTime).Unix()
					ops = append(ops, fsm.Op{Resource: b.Resource, IfRev: due[i].Rev, Binding: b})
					continue
				}
				ops = append(ops, fsm.Op{Resource: b.Resource, IfRev: due[i].Rev, Delete: true})
			default:
				// EXPIRED, RELEASED, FREE-BACKUP...: their timers belong to the failover
				// endpoint; stop the timer here so the scan moves on.
				b.StateExpirationTime = 0
				ops = append(ops, fsm.Op{Resource: b.Resource, IfRev: due[i].Rev, Binding: b})
			}
		}
		_, err := s.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginReclaim,
			Note: "reclaim", Ops: ops})
		if errors.Is(err, fsm.ErrConflict) {
			continue // a client renewed one meanwhile: rescan
		}
		if err != nil {
			return total, err
		}
		s.metrics.add(mReclaimed, uint64(expired)) // leases that expired, not housekeeping
		total += len(ops)
	}
	return total, nil
}
