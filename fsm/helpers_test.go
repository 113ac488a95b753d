package fsm

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"strings"
	"testing"
)

// Shared helpers for the fsm tests.

// na returns the IA_NA resource of address s.
func na(s string) Resource { return AddrResource(IANA, netip.MustParseAddr(s)) }

// ta returns the IA_TA resource of address s.
func ta(s string) Resource { return AddrResource(IATA, netip.MustParseAddr(s)) }

// pd returns the IA_PD resource of prefix s.
func pd(s string) Resource { return PrefixResource(netip.MustParsePrefix(s)) }

// active returns a plausible ACTIVE binding of r for client duid/iaid,
// expiring at exp (Unix seconds).
func active(r Resource, duid string, iaid uint32, exp int64) Binding {
	return Binding{
		Resource:            r,
		Status:              StatusActive,
		IAID:                iaid,
		DUID:                duid,
		PreferredLifetime:   1800,
		ValidLifetime:       3600,
		CLTT:                exp - 3600,
		StartTimeOfState:    exp - 3600,
		StateExpirationTime: exp,
	}
}

// putOp is an unconditional put of b.
func putOp(b Binding) Op { return Op{Resource: b.Resource, IfRev: AnyRev, Binding: b} }

// delOp is an unconditional delete of r.
func delOp(r Resource) Op { return Op{Resource: r, IfRev: AnyRev, Delete: true} }

// txn wraps ops in a CmdTxn.
func txn(ops ...Op) *Command {
	return &Command{Type: CmdTxn, Time: 1_700_000_000_000_000_000, Origin: OriginClient, Ops: ops}
}

// applier applies commands with increasing indexes.
type applier struct {
	t     testing.TB
	s     *State
	index uint64
}

func newApplier(t testing.TB) *applier { return &applier{t: t, s: New()} }

// apply applies c at the next index and returns the result error.
func (a *applier) apply(c *Command) error {
	a.t.Helper()
	a.index++
	r := a.s.Apply(Entry{Index: a.index, Term: 1, Cmd: c})
	if r == nil {
		a.t.Fatalf("Apply returned nil result")
	}
	if r.Index != a.index {
		a.t.Fatalf("result index %d, want %d", r.Index, a.index)
	}
	return r.Err
}

// mustApply applies c and fails the test on error.
func (a *applier) mustApply(c *Command) {
	a.t.Helper()
	if err := a.apply(c); err != nil {
		a.t.Fatalf("apply at index %d: %v", a.index, err)
	}
}

func dump(v *View) string {
	var sb strings.Builder
	v.Dump(&sb)
	return sb.String()
}

func dumpState(s *State) string { return dump(s.View()) }

// snapshotBytes writes a snapshot of s and returns it.
func snapshotBytes(t testing.TB, s *State, created int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, s.View(), created); err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	return buf.Bytes()
}

// snapLayout is a snapshot file split up by hand according to the format
// comment in snapshot.go (independently of the reader).
type snapLayout struct {
	header  []byte   // everything up to and including the header CRC
	records [][]byte // each record including its uvarint length prefix
	trailer []byte   // "TANDEMEN" + u64 count (without the final CRC)
	crc     []byte   // final 4 bytes
}

// splitSnapshot parses a well-formed snapshot by the documented layout.
func splitSnapshot(t testing.TB, data []byte) snapLayout {
	t.Helper()
	var l snapLayout
	off := 8 + 2 + 2 + 8*5
	count := binary.BigEndian.Uint64(data[44:52])
	duidLen := int(binary.BigEndian.Uint16(data[off:]))
	off += 2 + duidLen
	epLen := int(binary.BigEndian.Uint16(data[off:]))
	off += 2 + epLen + 4
	l.header = data[:off]
	for i := uint64(0); i < count; i++ {
		n, k := binary.Uvarint(data[off:])
		if k <= 0 {
			t.Fatalf("record %d: bad length varint", i)
		}
		l.records = append(l.records, data[off:off+k+int(n)])
		off += k + int(n)
	}
	l.trailer = data[off : off+16]
	l.crc = data[off+16:]
	if len(l.crc) != 4 {
		t.Fatalf("%d bytes after trailer, want 4", len(l.crc))
	}
	return l
}

// join reassembles a snapshot, recomputing the header CRC (over the header
// bytes before it) and the whole-file CRC, so that only the deliberate
// structural change is wrong.
func (l snapLayout) join() []byte {
	var out []byte
	h := append([]byte(nil), l.header...)
	binary.BigEndian.PutUint32(h[len(h)-4:], crc32c(h[:len(h)-4]))
	out = append(out, h...)
	for _, r := range l.records {
		out = append(out, r...)
	}
	out = append(out, l.trailer...)
	return binary.BigEndian.AppendUint32(out, crc32c(out))
}

// crc32c is CRC-32C (Castagnoli), computed with the test's own table.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
