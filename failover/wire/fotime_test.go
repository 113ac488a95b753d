package wire

import (
	"testing"
	"time"
)

func TestFOTime(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		t    string
		want uint32
	}{
		{"2000-01-01T00:00:00Z", 0},
		{"2000-01-01T00:00:00.999Z", 0},       // sub-second parts dropped
		{"2001-01-01T00:00:00Z", 366 * 86400}, // 2000 is a leap year: 31622400
		{"2000-01-01T01:00:00+01:00", 0},      // zone does not matter
		{"2136-02-07T06:28:15Z", 0xffffffff},  // last second of the first era
		{"2136-02-07T06:28:16Z", 0},           // mod 2^32
		{"1999-12-31T23:59:59Z", 0xffffffff},  // before the epoch wraps too
		{"2025-04-27T10:14:24Z", 0x2fa0c000},
	} {
		if got := ToFOTime(utc(c.t)); got != c.want {
			t.Errorf("ToFOTime(%s) = %#x, want %#x", c.t, got, c.want)
		}
	}
	if got, want := FromFOTime(31622400), utc("2001-01-01T00:00:00Z"); !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("FromFOTime(31622400) = %v, want %v", got, want)
	}
	if got, want := FromFOTime(0xffffffff), utc("2136-02-07T06:28:15Z"); !got.Equal(want) {
		t.Errorf("FromFOTime(max) = %v, want %v", got, want)
	}
	// Near the wrap, FromFOTimeNear picks the right era.
	ref := utc("2136-02-07T06:28:15Z")
	if got, want := FromFOTimeNear(5, ref), utc("2136-02-07T06:28:21Z"); !got.Equal(want) {
		t.Errorf("FromFOTimeNear(5, %v) = %v, want %v", ref, got, want)
	}
	if got, want := FromFOTimeNear(0xfffffff0, utc("2136-02-07T06:28:30Z")), utc("2136-02-07T06:28:00Z"); !got.Equal(want) {
		t.Errorf("FromFOTimeNear backwards across the wrap = %v, want %v", got, want)
	}
	if got, want := FromFOTimeNear(0x2fa0c000, utc("2025-01-01T00:00:00Z")), utc("2025-04-27T10:14:24Z"); !got.Equal(want) {
		t.Errorf("FromFOTimeNear = %v, want %v", got, want)
	}
}

func TestCompareFOTime(t *testing.T) {
	for _, c := range []struct {
		a, b uint32
		diff int64
		cmp  int
	}{
		{100, 100, 0, 0},
		{100, 95, 5, 0}, // ±5 s is "the same time"
		{95, 100, -5, 0},
		{100, 94, 6, 1},
		{94, 100, -6, -1},
		{2, 0xfffffffe, 4, 0}, // across the wrap
		{10, 0xfffffffe, 12, 1},
		{0xfffffffe, 10, -12, -1},
		{0x80000000, 0, -0x80000000, -1}, // half the circle: the earlier reading
	} {
		if d := FOTimeDiff(c.a, c.b); d != c.diff {
			t.Errorf("FOTimeDiff(%#x, %#x) = %d, want %d", c.a, c.b, d, c.diff)
		}
		if got := CompareFOTime(c.a, c.b); got != c.cmp {
			t.Errorf("CompareFOTime(%#x, %#x) = %d, want %d", c.a, c.b, got, c.cmp)
		}
		if got, want := FOTimeWithin(c.a, c.b, MaxTimeSkew), c.cmp == 0; got != want {
			t.Errorf("FOTimeWithin(%#x, %#x, 5) = %v, want %v", c.a, c.b, got, want)
		}
	}
	now := time.Date(2025, 4, 27, 10, 14, 24, 0, time.UTC)
	for _, c := range []struct {
		sent uint32
		ok   bool
	}{{0x2fa0c000, true}, {0x2fa0c000 + 5, true}, {0x2fa0c000 - 5, true}, {0x2fa0c000 + 6, false}, {0x2fa0c000 - 6, false}} {
		if got := SkewOK(c.sent, now); got != c.ok {
			t.Errorf("SkewOK(%#x) = %v, want %v", c.sent, got, c.ok)
		}
	}
}
