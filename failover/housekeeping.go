package failover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/failover/update"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// giveChunk is how many prefixes one rebalancing commit hands over (one
// log entry); sweepChunk how many bindings one PARTNER-DOWN sweep commit
// frees.
const (
	giveChunk  = 512
	sweepChunk = 512
)

// housekeeper runs the primary's prefix rebalancing (on the secondary's
// POOLREQ, answered with POOLRESP afterwards, and every RebalanceInterval)
// and the PARTNER-DOWN sweep (every SweepInterval). Housekeeper goroutine:
// one rebalance or sweep at a time.
func (e *Endpoint) housekeeper(ctx context.Context) {
	rb := e.clock.NewTimer(e.cfg.RebalanceInterval)
	defer rb.Stop()
	sw := e.clock.NewTimer(e.cfg.SweepInterval)
	defer sw.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case xid := <-e.poolReq:
			e.rebalance(ctx)
			// POOLRESP "may be sent before, during, or at the completion of"
			// the BNDUPDs (§4.2.2): ours follows the commit of every give and
			// the answers to every take-back.
			if err := e.link.Send(wire.NewPoolResp(xid, 0)); err != nil {
				e.log.Debug("send POOLRESP", zap.Error(err))
			}
		case <-e.rebalanceNow:
			e.rebalance(ctx)
		case <-rb.C():
			e.rebalance(ctx)
			rb.Reset(e.cfg.RebalanceInterval)
		case <-sw.C():
			if n, err := e.sweep(); err != nil {
				e.log.Warn("partner-down sweep", zap.Error(err))
			} else if n > 0 {
				e.log.Info("partner-down sweep freed unacknowledged leases", zap.Int("freed", n))
			}
			sw.Reset(e.cfg.SweepInterval)
		}
	}
}

// rebalancing reports whether the primary moves prefixes now: in NORMAL
// with communications OK (updates then go out at once), and once the
// secondary's POOLREQ on this connection said that its own updates were
// sent (§8.8): before that, the primary's view of the secondary's prefixes
// may be stale, and it would ask for prefixes back that the secondary
// delegated while the two were apart.
func (e *Endpoint) rebalancing() bool {
	return e.role == update.Primary && e.cfg.Pools != nil && e.comm.Load() && e.poolReqSeen.Load() &&
		wire.ServerState(e.local.Load().State) == wire.StateNormal
}

// rebalance brings every PD pool to the configured share (RFC 8156 §4.2.2,
// §7.2 event 7; update.Rebalance): it commits the gives (FREE-BACKUP, owed)
// before any of them is sent, the sender then sends them as lone-IAPREFIX
// BNDUPDs; take-backs are sent as lone FREE IAPREFIXes and awaited, so the
// next count sees their outcome.
func (e *Endpoint) rebalance(ctx context.Context) {
	if !e.rebalancing() {
		return
	}
	for _, pp := range e.cfg.Pools.PrefixPools() {
		bal := update.Rebalance(pp.Available, pp.FreeBackup, *e.cfg.PrefixShare, e.cfg.PrefixThreshold)
		if bal.Give == 0 && bal.Take == 0 {
			continue
		}
		e.log.Info("rebalancing delegable prefixes", zap.Stringer("pool", pp.Prefix), zap.Uint64("primary", pp.Available),
			zap.Uint64("secondary", pp.FreeBackup), zap.Uint64("give", bal.Give), zap.Uint64("take", bal.Take))
		if bal.Give > 0 {
			if err := e.give(pp.Prefix, bal.Give); err != nil {
				e.log.Warn("rebalance: give prefixes", zap.Stringer("pool", pp.Prefix), zap.Error(err))
			}
		}
		if bal.Take > 0 {
			e.take(ctx, pp.Prefix, bal.Take)
		}
	}
}

// give hands n of pool's available prefixes to the secondary: commit
// GiveOp for a chunk (one log entry), the owed observer wakes the sender.
func (e *Endpoint) give(pool netip.Prefix, n uint64) error {
	conflicts := 0
	var below netip.Prefix // the walk resumes under the previous chunk
	for n > 0 && e.rebalancing() {
		now := e.clock.Now()
		cands := e.cfg.Pools.PrefixCandidates(pool, below, int(min(n, giveChunk)), true, update.Givable)
		if len(cands) == 0 {
			return nil
		}
		ops := make([]fsm.Op, 0, len(cands))
		for _, r := range cands {
			var local *fsm.Binding
			if b, ok := e.lookup(r); ok {
				local = &b
			}
			op, err := update.GiveOp(local, r, now)
			if err != nil {
				continue // changed since it was picked
			}
			ops = append(ops, op)
		}
		_, err := e.cfg.Store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginFailover,
			Note: fmt.Sprintf("rebalance: give %d prefixes of %v", len(ops), pool), Ops: ops})
		if errors.Is(err, fsm.ErrConflict) && conflicts < 5 {
			conflicts++ // a client took one meanwhile: pick again
			continue
		}
		if err != nil {
			return err
		}
		n -= uint64(len(cands))
		below = cands[len(cands)-1].Prefix()
	}
	return nil
}

// take sends take-backs for n of pool's FREE-BACKUP prefixes (those with
// no update owed or in flight) and waits for their answers.
func (e *Endpoint) take(ctx context.Context, pool netip.Prefix, n uint64) {
	var below netip.Prefix // the walk resumes under the previous chunk
	for n > 0 && e.rebalancing() {
		want := func(b *fsm.Binding) bool {
			if b.Status != fsm.StatusFreeBackup || b.Owed() {
				return false
			}
			e.mu.Lock()
			_, busy := e.busy[b.Resource]
			e.mu.Unlock()
			return !busy
		}
		cands := e.cfg.Pools.PrefixCandidates(pool, below, int(min(n, giveChunk)), false, want)
		if len(cands) == 0 {
			return
		}
		below = cands[len(cands)-1].Prefix()
		var pending []<-chan struct{}
		for _, r := range cands {
			b, ok := e.lookup(r)
			if !ok {
				continue
			}
			u, err := update.TakeBack(b, e.clock.Now())
			if err != nil {
				continue
			}
			done, err := e.sendUpdate(ctx, &u)
			if err != nil {
				break // connection gone: the next check starts afresh
			}
			pending = append(pending, done)
		}
		for _, d := range pending {
			select {
			case <-d:
			case <-ctx.Done():
				return
			}
		}
		if len(pending) == 0 {
			return
		}
		n -= uint64(len(cands))
	}
}

// sweep is the PARTNER-DOWN event 4 of RFC 8156 §7.2: it commits
// update.DuePendingFree for every owed EXPIRED, RELEASED or RESET binding
// whose wait is over, so that the allocator's free-slot index (kept by the
// server's observer) gets it back. It walks the owed index only, in pages,
// and returns how many bindings it freed.
func (e *Endpoint) sweep() (int, error) {
	c := e.conditions()
	if !c.PartnerDown {
		return 0, nil
	}
	now := e.clock.Now()
	freed := 0
	var ops []fsm.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := e.cfg.Store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginFailover,
			Note: fmt.Sprintf("partner-down: free %d unacknowledged leases", len(ops)), Ops: ops})
		n := len(ops)
		ops = ops[:0]
		switch {
		case errors.Is(err, fsm.ErrConflict):
			return nil // one changed meanwhile: the next sweep sees it again
		case err != nil:
			return err
		}
		freed += n
		return nil
	}
	var from fsm.Resource
	started := false
	for {
		owed := e.state.Owed(from, sweepChunk)
		if started && len(owed) > 0 && owed[0].Resource == from {
			owed = owed[1:]
		}
		if len(owed) == 0 {
			break
		}
		from, started = owed[len(owed)-1].Resource, true
		for i := range owed {
			if op, due := update.DuePendingFree(c, &owed[i], e.cfg.ExpiredHold, now); due {
				ops = append(ops, op)
			}
		}
		if len(ops) >= sweepChunk {
			if err := flush(); err != nil {
				return freed, err
			}
		}
		if len(owed) < sweepChunk-1 {
			break
		}
	}
	err := flush()
	return freed, err
}
