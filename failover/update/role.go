package update

import (
	"net/netip"
	"time"

	"github.com/tandem-dhcp/tandem/failover/role"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// Role is this server's role in the failover relationship (shared with
// the link and the state machine).
type Role = role.Role

// Roles.
const (
	Primary   = role.Primary
	Secondary = role.Secondary
)

// Skew is RFC 8156's "essentially the same time" window, in seconds: two
// times at most this far apart compare equal (§7.5.1, §7.5.4).
const Skew = wire.MaxTimeSkew

// CompareTimes compares two Unix times the way RFC 8156 §7.5.1 asks: 0 when
// they are within ±Skew seconds of each other, -1 when a is clearly earlier,
// +1 when a is clearly later.
func CompareTimes(a, b int64) int {
	switch d := a - b; {
	case d > Skew:
		return 1
	case d < -Skew:
		return -1
	}
	return 0
}

// toFO converts a Unix time to failover absolute time (seconds since
// 2000-01-01 UTC, modulo 2^32). Times before 2000 become 0.
func toFO(unix int64) uint32 {
	if unix <= wire.FOEpochUnix {
		return 0
	}
	return uint32(unix - wire.FOEpochUnix)
}

// fromFO converts a failover absolute time to the Unix time congruent to it
// that is nearest now (serial arithmetic, RFC 8156 §3).
func fromFO(v uint32, now time.Time) int64 {
	return wire.FromFOTimeNear(v, now).Unix()
}

// fromFOp is fromFO for an optional field: 0 (absent) for nil.
func fromFOp(v *uint32, now time.Time) int64 {
	if v == nil {
		return 0
	}
	return fromFO(*v, now)
}

// foPtr is toFO as an optional field: nil (absent) for 0 (unset).
func foPtr(unix int64) *uint32 {
	if unix == 0 {
		return nil
	}
	return wire.U32(toFO(unix))
}

// wireIAType maps an fsm IA type to the wire's.
func wireIAType(t fsm.IAType) wire.IAType {
	switch t {
	case fsm.IANA:
		return wire.IANA
	case fsm.IATA:
		return wire.IATA
	}
	return wire.IAPD
}

// fsmIAType maps a wire IA type to fsm's (0 if unknown).
func fsmIAType(t wire.IAType) fsm.IAType {
	switch t {
	case wire.IANA:
		return fsm.IANA
	case wire.IATA:
		return fsm.IATA
	case wire.IAPD:
		return fsm.IAPD
	}
	return 0
}

// resourceOf returns the fsm resource of a lease in an IA of type t.
func resourceOf(t fsm.IAType, p netip.Prefix) (fsm.Resource, bool) {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Zone() != "" || p.Masked() != p {
		return fsm.Resource{}, false
	}
	var r fsm.Resource
	if t == fsm.IAPD {
		r = fsm.PrefixResource(p)
	} else {
		if p.Bits() != 128 {
			return fsm.Resource{}, false
		}
		r = fsm.AddrResource(t, p.Addr())
	}
	return r, r.Valid()
}

// max64 returns the largest of its arguments.
func max64(v ...int64) int64 {
	m := v[0]
	for _, x := range v[1:] {
		if x > m {
			m = x
		}
	}
	return m
}

// seconds returns d in whole seconds, rounding towards zero, never negative.
func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(d / time.Second)
}
