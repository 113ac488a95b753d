package wire

import "time"

// FOEpochUnix is 2000-01-01T00:00:00Z as a Unix time: the epoch of every
// absolute time in the failover protocol (RFC 8156 §3, §5.2).
const FOEpochUnix = 946684800

// MaxTimeSkew is the clock difference, in seconds, within which two failover
// times are "essentially the same" and beyond which a partner's sent-time
// is excessive skew (RFC 8156 §7.1, §7.5.1, §6.1.2).
const MaxTimeSkew = 5

// ToFOTime converts t to failover absolute time: whole seconds since
// 2000-01-01T00:00:00Z, modulo 2^32 (sub-second parts are dropped, rounding
// towards the past). Times before 2000 wrap to large values, as the modulo
// demands.
func ToFOTime(t time.Time) uint32 {
	return uint32(t.Unix() - FOEpochUnix) // conversion to uint32 is the mod 2^32
}

// FromFOTime converts failover absolute time v to a UTC time in the first
// era, 2000-01-01T00:00:00Z .. 2136-02-07T06:28:15Z. Use FromFOTimeNear
// when values may come from another era.
func FromFOTime(v uint32) time.Time {
	return time.Unix(int64(v)+FOEpochUnix, 0).UTC()
}

// FromFOTimeNear converts v to the UTC time congruent to it (mod 2^32 s) that
// is closest to ref, within [ref-2^31 s, ref+2^31 s). It is correct across
// the 2136 wrap provided ref (usually the receiver's clock) is within about
// 68 years of the real time.
func FromFOTimeNear(v uint32, ref time.Time) time.Time {
	d := FOTimeDiff(v, ToFOTime(ref))
	return time.Unix(ref.Unix()+d, 0).UTC()
}

// FOTimeDiff returns a-b in seconds with both taken modulo 2^32, as a signed
// value in [-2^31, 2^31): serial-number arithmetic, so that 1 is 2 seconds
// after 0xFFFFFFFF.
func FOTimeDiff(a, b uint32) int64 { return int64(int32(a - b)) }

// FOTimeWithin reports whether a and b are at most tol seconds apart, across
// the mod-2^32 wrap. FOTimeWithin(a, b, MaxTimeSkew) is RFC 8156's
// "essentially the same time" (±5 s).
func FOTimeWithin(a, b, tol uint32) bool {
	d := FOTimeDiff(a, b)
	if d < 0 {
		d = -d
	}
	return d <= int64(tol)
}

// CompareFOTime compares two failover times the way RFC 8156 §7.5.1 and
// §7.5.4 ask: it returns 0 when they are within ±MaxTimeSkew seconds of each
// other ("considered identical"), -1 when a is clearly earlier than b, +1
// when a is clearly later. It handles the mod-2^32 wrap.
func CompareFOTime(a, b uint32) int {
	d := FOTimeDiff(a, b)
	switch {
	case d > MaxTimeSkew:
		return 1
	case d < -MaxTimeSkew:
		return -1
	}
	return 0
}

// SkewOK reports whether a received sent-time is within MaxTimeSkew seconds
// of now, the receiver's own reception time (RFC 8156 §6.1.2, §7.5.1). The
// caller supplies now; this package reads no clock.
func SkewOK(sent uint32, now time.Time) bool {
	return FOTimeWithin(sent, ToFOTime(now), MaxTimeSkew)
}
