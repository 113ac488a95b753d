package update

import (
	"fmt"
	"math"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Balance says how many available delegable prefixes of one pool the
// primary moves (RFC 8156 §4.2.2, §7.2 event 7). Which ones is the
// caller's choice (Tandem: the highest-addressed, server.PrefixCandidates).
type Balance struct {
	// Give is how many FREE prefixes to hand to the secondary: for each,
	// commit GiveOp, then send the lone-IAPREFIX FREE-BACKUP BNDUPD
	// (LonePrefixFor on the committed binding).
	Give uint64
	// Take is how many FREE-BACKUP prefixes to take back: for each, send
	// TakeBack's update; the FREE status is committed when the BNDREPLY
	// accepts it (or when the secondary's own update says so: TakenBack).
	Take uint64
}

// MaxBackup caps the secondary's target per pool: every FREE-BACKUP prefix
// is a record in both databases, so a share of a pool of 2^32 prefixes
// must not become 2^31 records. 65536 prefixes serve 65536 new clients
// while the primary is unreachable.
const MaxBackup = 1 << 16

// Target returns how many of total available prefixes the secondary should
// hold for a configured share (the fraction held by the secondary, clamped
// to [0, 1]; the RFC fixes no value or name for it), rounded to nearest,
// and at most MaxBackup.
func Target(total uint64, share float64) uint64 {
	switch {
	case !(share > 0):
		return 0
	case share >= 1:
		return min(total, MaxBackup)
	}
	return min(uint64(math.Round(share*float64(total))), MaxBackup)
}

// Rebalance decides the proportional-allocation moves for one pool, on the
// primary: free counts the available prefixes the primary owns (FREE, or
// with no binding), backup those the secondary owns (FREE-BACKUP), share is
// the fraction the secondary should hold, threshold the hysteresis in
// prefixes.
//
// Nothing moves while the secondary's count is within threshold of
// Target(free+backup, share) (RFC 8156 §4.2.2: "SHOULD employ some
// threshold mechanism"), unless one side has none at all while it should
// have some (the initial allocation after the first POOLREQ, or a primary
// left with nothing). When something moves, the counts move all the way to
// the target, so that the next move needs another drift of more than
// threshold.
func Rebalance(free, backup uint64, share float64, threshold int) Balance {
	target := Target(free+backup, share)
	th := uint64(max(threshold, 0))
	var bal Balance
	switch {
	case target > backup:
		if d := target - backup; d > th || backup == 0 {
			bal.Give = min(d, free)
		}
	case backup > target:
		if d := backup - target; d > th || free == 0 {
			bal.Take = d
		}
	}
	return bal
}

// GiveOp returns the op that hands delegable prefix r to the secondary
// (RFC 8156 §4.2.2): status FREE-BACKUP from now, an update owed. local is
// r's binding (nil if none); it must be available in the primary's pool.
// Commit it before sending the BNDUPD: from the moment the update is sent
// the primary MUST NOT allocate the prefix (A4), and the owed flag makes it
// go out again if the connection drops.
func GiveOp(local *fsm.Binding, r fsm.Resource, now time.Time) (fsm.Op, error) {
	if r.Type != fsm.IAPD {
		return fsm.Op{}, fmt.Errorf("update: %v is not a delegable prefix", r)
	}
	nb, rev := Blank(r), uint64(0)
	if local != nil {
		if !Givable(local) || local.Resource != r {
			return fsm.Op{}, fmt.Errorf("update: %v is %v, not available to the primary", r, local.Status)
		}
		nb, rev = *local, local.Rev
	}
	nb.Rev = 0
	nb.Status = fsm.StatusFreeBackup
	nb.StartTimeOfState = now.Unix()
	nb.StateExpirationTime = 0
	nb.PartnerLifetime, nb.AckedPartnerLifetime, nb.ExpirationTime = 0, 0, 0
	nb.Flags = fsm.FlagUpdateOwed
	return fsm.Op{Resource: r, IfRev: rev, Binding: nb}, nil
}

// Givable reports whether the recorded delegable prefix b may be handed to
// the secondary (GiveOp would accept it): available, and the primary's. It
// allocates nothing, so allocators may ask it of every record they pass.
func Givable(b *fsm.Binding) bool {
	_, ok := freeLike(b)
	return ok && b.Resource.Type == fsm.IAPD && Owner(b) == Primary
}

// TakeBack returns the update that asks the secondary to give FREE-BACKUP
// prefix local back (a lone IAPREFIX with status FREE, RFC 8156 §4.2.2).
// Nothing is committed before the answer: until the secondary accepts, the
// prefix is still its own, and it rejects if it has delegated it. Pass the
// BNDREPLY and u.Bindings[0] to ApplyBndReplyPrefix, which stores FREE. If
// the answer is lost (connection or primary gone), nothing is owed here:
// the secondary, which committed the FREE, owes it to the primary instead
// (TakenBack) and sends it on the next connection.
func TakeBack(local fsm.Binding, now time.Time) (Update, error) {
	if local.Resource.Type != fsm.IAPD || local.Status != fsm.StatusFreeBackup {
		return Update{}, fmt.Errorf("update: %v is %v, not a FREE-BACKUP prefix", local.Resource, local.Status)
	}
	sent := local
	sent.Status = fsm.StatusFree
	sent.StartTimeOfState = now.Unix()
	sent.StateExpirationTime = 0
	lp, err := LonePrefixFor(&sent, now)
	if err != nil {
		return Update{}, err
	}
	return Update{Prefix: lp, Bindings: []fsm.Binding{sent}}, nil
}
