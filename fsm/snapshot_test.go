package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

const snapCreated = 1_700_000_999_000_000_000

var testEndpoint = EndpointState{State: 5, PreviousState: 3, StateSince: 1_700_000_100, PartnerState: 4,
	PartnerStateSince: 1_700_000_050, LastContact: 1_700_000_200, LastOperating: 1_700_000_300,
	PartnerDownTime: -1, Communicated: true, HeldInStartup: true}

// richState returns a state holding every kind of binding and field value.
func richState(t testing.TB) *State {
	t.Helper()
	a := newApplier(t)
	a.mustApply(&Command{Type: CmdSetServerDUID, ServerDUID: []byte{0, 1, 0, 1, 0x2c, 0x5e, 0x7f, 0x10, 1, 2, 3, 4, 5, 6}})
	a.mustApply(&Command{Type: CmdSetEndpoint, Endpoint: &testEndpoint})
	var ops []Op
	i := 0
	for ty := IANA; ty <= IAPD; ty++ {
		for st := StatusActive; st <= maxStatus; st++ {
			i++
			var r Resource
			if ty == IAPD {
				r = pd(fmt.Sprintf("2001:db8:%x::/%d", i, 40+i))
			} else {
				r = AddrResource(ty, na(fmt.Sprintf("2001:db8::%x", i)).Addr())
			}
			b := active(r, fmt.Sprintf("\x00\x02client-%d", i%5), uint32(i%3), int64(1_700_000_000+i*100))
			b.Status = st
			b.Flags = Flags(i % 4)
			b.PartnerLifetime = int64(i%2) * 1_700_009_000
			b.AckedPartnerLifetime = -int64(i)
			b.ExpirationTime = math.MaxInt64 - int64(i)
			b.PartnerRawCLTT = math.MinInt64 + int64(i)
			b.PreferredLifetime = math.MaxUint32 - uint32(i)
			if i == 7 {
				b.DUID = strings.Repeat("\xfe", MaxDUIDLen)
			}
			if i == 8 && st != StatusActive {
				b.DUID = ""
			}
			ops = append(ops, putOp(b))
		}
	}
	a.mustApply(txn(ops...))
	// Give the bindings different revisions.
	for j := 0; j < len(ops); j += 3 {
		b := ops[j].Binding
		b.CLTT++
		a.mustApply(txn(putOp(b)))
	}
	a.s.Apply(Entry{Index: 1000, Term: 7, Cmd: &Command{Type: CmdNoop, Time: 1_700_000_777_000_000_000}})
	return a.s
}

// smallState returns a state with a handful of bindings, for the
// every-byte tests.
func smallState(t testing.TB) *State {
	t.Helper()
	a := newApplier(t)
	a.mustApply(&Command{Type: CmdSetServerDUID, ServerDUID: []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}})
	a.mustApply(&Command{Type: CmdSetEndpoint, Endpoint: &EndpointState{State: 2, StateSince: 1_700_000_000, Communicated: true}})
	b := active(na("2001:db8::1"), duidA, 1, 1_700_003_600)
	b.PartnerLifetime = 1_700_003_600
	a.mustApply(txn(putOp(b),
		putOp(active(ta("2001:db8::2"), duidA, 2, 1_700_003_600)),
		putOp(Binding{Resource: na("2001:db8::3"), Status: StatusFree, StartTimeOfState: 1_699_000_000}),
	))
	a.mustApply(txn(putOp(active(pd("2001:db8:100::/56"), duidB, 1, 1_700_007_200))))
	return a.s
}

func checkHeader(t *testing.T, h *SnapshotHeader, s *State, created int64) {
	t.Helper()
	idx, term, tm := s.Applied()
	want := &SnapshotHeader{Version: SnapshotVersion, Index: idx, Term: term, LastTime: tm, Created: created,
		Count: uint64(s.Stats().Bindings), ServerDUID: s.ServerDUID(), Endpoint: s.Endpoint()}
	if len(want.ServerDUID) == 0 {
		want.ServerDUID = nil
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("header = %+v\nwant %+v", h, want)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	for name, s := range map[string]*State{"rich": richState(t), "small": smallState(t), "empty": New()} {
		t.Run(name, func(t *testing.T) {
			data := snapshotBytes(t, s, snapCreated)
			got, h, err := ReadSnapshot(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("ReadSnapshot: %v", err)
			}
			if dumpState(got) != dumpState(s) {
				t.Fatalf("dump differs:\n got %s\nwant %s", dumpState(got), dumpState(s))
			}
			if got.Stats() != s.Stats() {
				t.Fatalf("stats differ: %+v vs %+v", got.Stats(), s.Stats())
			}
			checkHeader(t, h, s, snapCreated)
			if i1, t1, c1 := got.Applied(); true {
				i2, t2, c2 := s.Applied()
				if i1 != i2 || t1 != t2 || c1 != c2 {
					t.Fatalf("Applied = %d %d %d, want %d %d %d", i1, t1, c1, i2, t2, c2)
				}
			}
			if !reflect.DeepEqual(got.ServerDUID(), s.ServerDUID()) || got.Endpoint() != s.Endpoint() {
				t.Fatalf("metadata differs")
			}
			checkIndexes(t, got.View())
			// Deterministic: writing the restored state gives the same bytes.
			if again := snapshotBytes(t, got, snapCreated); !bytes.Equal(again, data) {
				t.Fatal("re-written snapshot differs")
			}
			// Restore into a non-empty state replaces everything.
			other := richState(t)
			other.Apply(Entry{Index: 5000, Term: 9, Cmd: txn(putOp(active(na("3fff::1"), duidC, 1, 1)))})
			h2, err := other.Restore(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if !reflect.DeepEqual(h, h2) {
				t.Fatalf("Restore header %+v, ReadSnapshot header %+v", h2, h)
			}
			if dumpState(other) != dumpState(s) || other.Stats() != s.Stats() {
				t.Fatalf("Restore did not replace the state:\n%s", dumpState(other))
			}
			checkIndexes(t, other.View())
			// The restored state keeps working: revisions carry over.
			if bs := allBindings(got.View()); len(bs) > 0 {
				idx, term, _ := got.Applied()
				r := got.Apply(Entry{Index: idx + 1, Term: term, Cmd: txn(Op{Resource: bs[0].Resource, IfRev: bs[0].Rev, Delete: true})})
				if r.Err != nil {
					t.Fatalf("apply after restore: %v", r.Err)
				}
			}
			// Reading through a one-byte reader gives the same result.
			got2, _, err := ReadSnapshot(iotest.OneByteReader(bytes.NewReader(data)))
			if err != nil || dumpState(got2) != dumpState(s) {
				t.Fatalf("one-byte reader: %v", err)
			}
		})
	}
}

func TestSnapshotOfOldView(t *testing.T) {
	s := smallState(t)
	v := s.View()
	want := dump(v)
	wantStats := v.Stats()
	s.Apply(Entry{Index: 100, Term: 2, Cmd: txn(delOp(na("2001:db8::1")), putOp(active(na("2001:db8::9"), duidC, 1, 1)))})
	s.Apply(Entry{Index: 101, Term: 2, Cmd: &Command{Type: CmdSetEndpoint, Endpoint: &EndpointState{State: 9}}})
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, v, 1); err != nil {
		t.Fatal(err)
	}
	got, h, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if dumpState(got) != want || got.Stats() != wantStats || h.Index != wantStats.LastIndex {
		t.Fatalf("snapshot of an old view shows later changes:\n%s", dumpState(got))
	}
}

// TestSnapshotLayout checks the file byte by byte against the format comment
// in snapshot.go, independently of the reader.
func TestSnapshotLayout(t *testing.T) {
	a := newApplier(t)
	a.mustApply(&Command{Type: CmdSetServerDUID, ServerDUID: []byte{0xaa, 0xbb}})
	a.mustApply(txn(putOp(Binding{Resource: na("2001:db8::1"), Status: StatusFree})))
	a.s.Apply(Entry{Index: 0x0102, Term: 0x0304, Cmd: &Command{Type: CmdSetEndpoint, Time: -2,
		Endpoint: &EndpointState{State: 1, Communicated: true}}})
	data := snapshotBytes(t, a.s, 0x0506)

	want := []byte("TANDEMSN")
	want = append(want, 0, 1)                                                               // version 1
	want = append(want, 0, 0)                                                               // reserved
	want = append(want, 0, 0, 0, 0, 0, 0, 0x01, 0x02)                                       // index
	want = append(want, 0, 0, 0, 0, 0, 0, 0x03, 0x04)                                       // term
	want = append(want, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe)                     // last time -2
	want = append(want, 0, 0, 0, 0, 0, 0, 0x05, 0x06)                                       // created
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 1)                                             // binding count
	want = append(want, 0, 2, 0xaa, 0xbb)                                                   // server DUID
	want = append(want, 0, 10, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)                                // endpoint: len 10, v1, flags 1, state 1, 0, 0, 5 times 0
	want = binary.BigEndian.AppendUint32(want, crc32c(want))                                // header CRC
	want = append(want, 32)                                                                 // record length
	want = append(want, 1, 128, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1) // resource
	want = append(want, byte(StatusFree), 0, 0, 0, 0, 0)                                    // status, flags, IAID, DUID len, pref, valid
	want = append(want, 0, 0, 0, 0, 0, 0, 0)                                                // 7 times
	want = append(want, 2)                                                                  // Rev 2
	want = append(want, "TANDEMEN"...)                                                      // trailer
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 1)                                             // count
	want = binary.BigEndian.AppendUint32(want, crc32c(want))                                // file CRC
	if !bytes.Equal(data, want) {
		t.Fatalf("snapshot =\n%x\nwant\n%x", data, want)
	}
}

func TestInspectSnapshot(t *testing.T) {
	s := richState(t)
	data := snapshotBytes(t, s, snapCreated)
	info := InspectSnapshot(bytes.NewReader(data))
	if info.Err != nil {
		t.Fatalf("Err = %v", info.Err)
	}
	if info.Size != int64(len(data)) {
		t.Fatalf("Size = %d, file is %d bytes", info.Size, len(data))
	}
	st := s.Stats()
	if info.Counts != st.Counts || info.Read != uint64(st.Bindings) {
		t.Fatalf("Counts %v Read %d, want %v %d", info.Counts, info.Read, st.Counts, st.Bindings)
	}
	checkHeader(t, info.Header, s, snapCreated)
	h, err := ReadSnapshotHeader(bytes.NewReader(data))
	if err != nil || !reflect.DeepEqual(h, info.Header) {
		t.Fatalf("ReadSnapshotHeader = %+v, %v", h, err)
	}
}

// classify checks that a snapshot error has one of the documented kinds.
func snapErrKind(err error) error {
	for _, e := range []error{ErrForeignSnapshot, ErrUnsupportedVersion, ErrCorruptSnapshot} {
		if errors.Is(err, e) {
			return e
		}
	}
	return nil
}

// readNoPanic runs ReadSnapshot and InspectSnapshot on data, failing on a panic.
func readNoPanic(t *testing.T, data []byte) (err error, info *SnapshotInfo) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic reading a %d-byte snapshot: %v", len(data), r)
		}
	}()
	s, h, err := ReadSnapshot(bytes.NewReader(data))
	if err == nil && (s == nil || h == nil) {
		t.Fatalf("ReadSnapshot returned nil state or header without an error")
	}
	if err != nil && (s != nil || h != nil) {
		t.Fatalf("ReadSnapshot returned a state or header with error %v", err)
	}
	return err, InspectSnapshot(bytes.NewReader(data))
}

func TestSnapshotHeaderDamage(t *testing.T) {
	data := snapshotBytes(t, smallState(t), snapCreated)
	for _, off := range []int{12, 19, 20, 30, 40, 44, 51, 56} { // index, term, times, count, DUID
		d := bytes.Clone(data)
		d[off] ^= 0x04
		err, info := readNoPanic(t, d)
		if !errors.Is(err, ErrCorruptSnapshot) || !strings.Contains(err.Error(), "header") {
			t.Errorf("byte %d: error %v, want ErrCorruptSnapshot mentioning the header", off, err)
		}
		if info.Header != nil || !errors.Is(info.Err, ErrCorruptSnapshot) || !strings.Contains(info.Err.Error(), "header") {
			t.Errorf("byte %d: InspectSnapshot = %+v", off, info)
		}
		if _, err := ReadSnapshotHeader(bytes.NewReader(d)); !errors.Is(err, ErrCorruptSnapshot) {
			t.Errorf("byte %d: ReadSnapshotHeader: %v", off, err)
		}
	}
}

// TestSnapshotEveryBitFlip flips every bit of a small snapshot: every
// damaged file must be refused, with a classified error, and never panic.
func TestSnapshotEveryBitFlip(t *testing.T) {
	s := smallState(t)
	data := snapshotBytes(t, s, snapCreated)
	hdrLen := len(splitSnapshot(t, data).header)
	victim := richState(t)
	victimDump := dumpState(victim)
	for off := range data {
		for bit := 0; bit < 8; bit++ {
			d := bytes.Clone(data)
			d[off] ^= 1 << bit
			err, info := readNoPanic(t, d)
			if err == nil {
				t.Fatalf("flipping bit %d of byte %d/%d: ReadSnapshot succeeded", bit, off, len(d))
			}
			if info.Err == nil {
				t.Fatalf("flipping bit %d of byte %d: InspectSnapshot reports no error", bit, off)
			}
			want := ErrCorruptSnapshot
			switch {
			case off < 8:
				want = ErrForeignSnapshot
			case off < 10 && binary.BigEndian.Uint16(d[8:]) != 0: // version 0 is damage
				want = ErrUnsupportedVersion
			}
			if k := snapErrKind(err); k != want {
				t.Fatalf("flip byte %d bit %d: error %q, want kind %q", off, bit, err, want)
			}
			if k := snapErrKind(info.Err); k != want {
				t.Fatalf("flip byte %d bit %d: inspect error %q, want kind %q", off, bit, info.Err, want)
			}
			if off >= hdrLen && info.Header == nil {
				t.Fatalf("flip byte %d (body): InspectSnapshot lost the intact header: %v", off, info.Err)
			}
			if bit == off%8 { // Restore must leave the state alone (one bit per byte is enough)
				if h, err := victim.Restore(bytes.NewReader(d)); err == nil || h != nil {
					t.Fatalf("flip byte %d: Restore = %v, %v", off, h, err)
				}
			}
		}
	}
	if dumpState(victim) != victimDump {
		t.Fatal("failed Restores changed the state")
	}
}

func TestSnapshotTruncation(t *testing.T) {
	data := snapshotBytes(t, smallState(t), snapCreated)
	for n := 0; n < len(data); n++ {
		err, info := readNoPanic(t, data[:n])
		if err == nil {
			t.Fatalf("snapshot truncated to %d/%d bytes read successfully", n, len(data))
		}
		want := ErrCorruptSnapshot
		if n < 8 {
			want = ErrForeignSnapshot
		}
		if k := snapErrKind(err); k != want {
			t.Fatalf("truncated to %d: error %q, want kind %q", n, err, want)
		}
		if k := snapErrKind(info.Err); k != want {
			t.Fatalf("truncated to %d: inspect error %q, want kind %q", n, info.Err, want)
		}
		if info.Size != int64(n) {
			t.Fatalf("truncated to %d: InspectSnapshot Size = %d", n, info.Size)
		}
	}
}

func TestSnapshotForeign(t *testing.T) {
	cmd, _ := (&Command{Type: CmdNoop}).Encode()
	for name, d := range map[string][]byte{
		"empty":   nil,
		"text":    []byte("# Tandem configuration\nlisten = [::]:547\n"),
		"command": cmd,
		"gzip":    {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8},
		"case":    []byte("tandemsn and some more bytes to fill a header......"),
	} {
		err, info := readNoPanic(t, d)
		if !errors.Is(err, ErrForeignSnapshot) || errors.Is(err, ErrCorruptSnapshot) {
			t.Errorf("%s: error %v, want ErrForeignSnapshot only", name, err)
		}
		if !errors.Is(info.Err, ErrForeignSnapshot) || info.Header != nil {
			t.Errorf("%s: inspect %+v", name, info)
		}
	}
}

func TestSnapshotVersion(t *testing.T) {
	data := snapshotBytes(t, smallState(t), snapCreated)
	for _, v := range []uint16{2, 99, 0xffff} {
		d := bytes.Clone(data)
		binary.BigEndian.PutUint16(d[8:], v)
		err, info := readNoPanic(t, d)
		if !errors.Is(err, ErrUnsupportedVersion) || !strings.Contains(err.Error(), fmt.Sprint(v)) {
			t.Errorf("version %d: error %v", v, err)
		}
		if !errors.Is(info.Err, ErrUnsupportedVersion) {
			t.Errorf("version %d: inspect %v", v, info.Err)
		}
	}
	d := bytes.Clone(data)
	binary.BigEndian.PutUint16(d[8:], 0)
	if err, _ := readNoPanic(t, d); !errors.Is(err, ErrCorruptSnapshot) {
		t.Errorf("version 0: error %v, want ErrCorruptSnapshot", err)
	}
	// Even with a correct header CRC (a genuine newer file) it is refused.
	l := splitSnapshot(t, data)
	l.header = bytes.Clone(l.header)
	binary.BigEndian.PutUint16(l.header[8:], 99)
	if err, _ := readNoPanic(t, l.join()); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("version 99 with good CRCs: %v", err)
	}
}

func TestSnapshotTrailingData(t *testing.T) {
	data := snapshotBytes(t, smallState(t), snapCreated)
	for name, extra := range map[string][]byte{
		"one zero byte":   {0},
		"newline":         []byte("\n"),
		"second snapshot": data,
	} {
		d := append(bytes.Clone(data), extra...)
		err, info := readNoPanic(t, d)
		if !errors.Is(err, ErrCorruptSnapshot) || !strings.Contains(err.Error(), "after the trailer") {
			t.Errorf("%s: error %v", name, err)
		}
		if !errors.Is(info.Err, ErrCorruptSnapshot) {
			t.Errorf("%s: inspect %v", name, info.Err)
		}
	}
}

// TestSnapshotStructure damages the structure while keeping both CRCs right,
// so the checks behind the CRC are exercised.
func TestSnapshotStructure(t *testing.T) {
	data := snapshotBytes(t, smallState(t), snapCreated)
	base := splitSnapshot(t, data)
	if len(base.records) != 4 {
		t.Fatalf("%d records", len(base.records))
	}
	if !bytes.Equal(base.join(), data) {
		t.Fatal("splitSnapshot/join do not reproduce the file")
	}
	clone := func() snapLayout {
		l := base
		l.header = bytes.Clone(base.header)
		l.records = append([][]byte(nil), base.records...)
		l.trailer = bytes.Clone(base.trailer)
		return l
	}
	setCount := func(b []byte, off int, n uint64) { binary.BigEndian.PutUint64(b[off:], n) }
	// rec rebuilds a record from its body with a fresh length prefix.
	rec := func(body []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(body))), body...) }
	body := func(r []byte) []byte { _, k := binary.Uvarint(r); return bytes.Clone(r[k:]) }

	tests := map[string]struct {
		edit     func(l *snapLayout)
		contains string
	}{
		"records swapped": {func(l *snapLayout) { l.records[1], l.records[2] = l.records[2], l.records[1] }, "out of order"},
		"record repeated": {func(l *snapLayout) { l.records[2] = l.records[1] }, "out of order"},
		"header count low": {func(l *snapLayout) {
			setCount(l.header, 44, 3)
			setCount(l.trailer, 8, 3)
		}, "no trailer"},
		"header count high": {func(l *snapLayout) {
			setCount(l.header, 44, 5)
			setCount(l.trailer, 8, 5)
		}, ""},
		"trailer count":        {func(l *snapLayout) { setCount(l.trailer, 8, 5) }, "trailer counts 5"},
		"trailer magic":        {func(l *snapLayout) { l.trailer[7] = 'X' }, "no trailer"},
		"record length zero":   {func(l *snapLayout) { l.records[0] = []byte{0} }, "record length 0"},
		"record length 4097":   {func(l *snapLayout) { l.records[0] = binary.AppendUvarint(nil, 4097) }, "record length 4097"},
		"record trailing byte": {func(l *snapLayout) { l.records[0] = rec(append(body(l.records[0]), 0)) }, "trailing"},
		"record short":         {func(l *snapLayout) { b := body(l.records[0]); l.records[0] = rec(b[:len(b)-1]) }, "binding 0"},
		"record bad status": {func(l *snapLayout) {
			b := body(l.records[0])
			b[18] = 0 // status follows the 18-byte /128 resource
			l.records[0] = rec(b)
		}, "bad status"},
		"record ACTIVE without DUID": {func(l *snapLayout) {
			b := body(l.records[1]) // na 2001:db8::3 FREE with no DUID (records are in resource order)
			b[18] = byte(StatusActive)
			l.records[1] = rec(b)
		}, "without a client DUID"},
		"record host bits": {func(l *snapLayout) {
			b := body(l.records[3]) // pd 2001:db8:100::/56: 20 01 0d b8 01 00 00
			b[1] = 39               // now a /39: 5 address bytes, the last (0x01) has bit 39 set
			l.records[3] = rec(b)
		}, "host bits"},
		"header DUID length 131": {func(l *snapLayout) {
			binary.BigEndian.PutUint16(l.header[52:], 131)
		}, "server DUID length 131"},
		"endpoint record version": {func(l *snapLayout) {
			l.header[52+2+10+2] = 2 // first byte of the endpoint record
		}, "endpoint record"},
		"endpoint record flags": {func(l *snapLayout) {
			l.header[52+2+10+2+1] = 0x80
		}, "endpoint"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l := clone()
			tc.edit(&l)
			d := l.join()
			err, _ := readNoPanic(t, d)
			if !errors.Is(err, ErrCorruptSnapshot) || !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("error %v, want ErrCorruptSnapshot containing %q", err, tc.contains)
			}
			victim := smallState(t)
			victim.Apply(Entry{Index: 99, Term: 9, Cmd: txn(delOp(na("2001:db8::1")))})
			before, beforeStats := dumpState(victim), victim.Stats()
			if h, err := victim.Restore(bytes.NewReader(d)); err == nil || h != nil {
				t.Fatalf("Restore = %+v, %v", h, err)
			}
			if dumpState(victim) != before || victim.Stats() != beforeStats {
				t.Fatal("failed Restore changed the state")
			}
		})
	}
}

// TestInspectSnapshotRecordOrder: InspectSnapshot promises to report "whether
// it verifies", and Restore's verification includes record order, so a file
// ReadSnapshot refuses must not inspect as good.
func TestInspectSnapshotRecordOrder(t *testing.T) {
	data := snapshotBytes(t, smallState(t), snapCreated)
	l := splitSnapshot(t, data)
	l.records = append([][]byte(nil), l.records...)
	l.records[1], l.records[2] = l.records[2], l.records[1]
	d := l.join()
	if _, _, err := ReadSnapshot(bytes.NewReader(d)); err == nil {
		t.Fatal("ReadSnapshot accepted out-of-order records")
	}
	info := InspectSnapshot(bytes.NewReader(d))
	if info.Err == nil {
		t.Fatal("InspectSnapshot accepted out-of-order records that ReadSnapshot/Restore refuse")
	}
	if !errors.Is(info.Err, ErrCorruptSnapshot) {
		t.Fatalf("inspect error %v", info.Err)
	}
}

func TestRestoreDamagedLeavesStateUnchanged(t *testing.T) {
	good := snapshotBytes(t, smallState(t), snapCreated)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	version := bytes.Clone(good)
	version[9] = 99
	for name, d := range map[string][]byte{
		"flipped":   flipped,
		"truncated": good[:len(good)-1],
		"header":    good[:60],
		"foreign":   []byte("not a snapshot at all, just some text\n"),
		"version":   version,
		"appended":  append(bytes.Clone(good), 1),
		"empty":     nil,
	} {
		s := richState(t)
		before, beforeStats := dumpState(s), s.Stats()
		bi, bt, bc := s.Applied()
		h, err := s.Restore(bytes.NewReader(d))
		if err == nil || h != nil {
			t.Fatalf("%s: Restore = %+v, %v", name, h, err)
		}
		if dumpState(s) != before || s.Stats() != beforeStats {
			t.Fatalf("%s: failed Restore changed the state", name)
		}
		if i, tm, c := s.Applied(); i != bi || tm != bt || c != bc {
			t.Fatalf("%s: failed Restore changed Applied", name)
		}
	}
}

var errBoom = errors.New("boom")

func TestSnapshotReadError(t *testing.T) {
	data := snapshotBytes(t, smallState(t), snapCreated)
	hdrLen := len(splitSnapshot(t, data).header)
	var known []string
	for _, n := range []int{0, 5, 8, 30, 60, hdrLen - 1, hdrLen, hdrLen + 1, 100, len(data) - 10, len(data) - 1, len(data)} {
		r := io.MultiReader(bytes.NewReader(data[:n]), iotest.ErrReader(errBoom))
		_, _, err := ReadSnapshot(r)
		info := InspectSnapshot(io.MultiReader(bytes.NewReader(data[:n]), iotest.ErrReader(errBoom)))
		if err == nil || info.Err == nil {
			t.Fatalf("read error after %d bytes: ReadSnapshot %v, InspectSnapshot %v", n, err, info.Err)
		}
		if (n == hdrLen || n == len(data)) && errors.Is(err, ErrCorruptSnapshot) && !errors.Is(err, errBoom) {
			// A read error while reading a record length, or after the
			// checksum, is reported as corruption instead of as the I/O error.
			known = append(known, fmt.Sprintf("after %d bytes: %v", n, err))
			continue
		}
		if !errors.Is(err, errBoom) {
			t.Errorf("read error after %d bytes: got %v, want it to wrap the reader's error", n, err)
		}
		if !errors.Is(info.Err, errBoom) {
			t.Errorf("inspect, read error after %d bytes: %v", n, info.Err)
		}
	}
	if len(known) > 0 {
		t.Fatalf("I/O errors misreported as ErrCorruptSnapshot: %s", strings.Join(known, "; "))
	}
}

// failWriter accepts limit bytes, then fails.
type failWriter struct {
	limit, n int
}

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.limit {
		k := w.limit - w.n
		w.n = w.limit
		return k, errBoom
	}
	w.n += len(p)
	return len(p), nil
}

func TestSnapshotWriteError(t *testing.T) {
	s := smallState(t)
	size := len(snapshotBytes(t, s, snapCreated))
	for _, limit := range []int{0, 10, size - 4, size - 1} {
		err := WriteSnapshot(&failWriter{limit: limit}, s.View(), snapCreated)
		if !errors.Is(err, errBoom) {
			t.Errorf("writer failing after %d/%d bytes: WriteSnapshot = %v", limit, size, err)
		}
	}
	if err := WriteSnapshot(&failWriter{limit: size}, s.View(), snapCreated); err != nil {
		t.Errorf("writer with exactly enough room: %v", err)
	}
}

// TestCopySnapshot: a copy without an edit is byte-for-byte the original; an
// edited copy carries the edited header, the same bindings, and verifies; a
// damaged source is refused wherever the damage is.
func TestCopySnapshot(t *testing.T) {
	s := richState(t)
	var orig bytes.Buffer
	if err := WriteSnapshot(&orig, s.View(), snapCreated); err != nil {
		t.Fatal(err)
	}
	var same bytes.Buffer
	if _, err := CopySnapshot(&same, bytes.NewReader(orig.Bytes()), nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(same.Bytes(), orig.Bytes()) {
		t.Fatalf("unedited copy differs from the original")
	}

	var edited bytes.Buffer
	h, err := CopySnapshot(&edited, bytes.NewReader(orig.Bytes()), func(h *SnapshotHeader) {
		h.Endpoint = EndpointState{HeldInStartup: true}
		h.Index, h.Count = 1, 1 // not editable: ignored
	})
	if err != nil {
		t.Fatal(err)
	}
	got, gh, err := ReadSnapshot(bytes.NewReader(edited.Bytes()))
	if err != nil {
		t.Fatalf("edited copy does not verify: %v", err)
	}
	want := s.View().Stats()
	if gh.Endpoint != (EndpointState{HeldInStartup: true}) || gh.Index != want.LastIndex || gh.Count != uint64(want.Bindings) || h.Index != gh.Index || h.Endpoint != gh.Endpoint {
		t.Fatalf("edited header %+v (returned %+v), want index %d count %d", gh, h, want.LastIndex, want.Bindings)
	}
	var a, b []Binding
	s.View().Ascend(Resource{}, func(x *Binding) bool { a = append(a, *x); return true })
	got.View().Ascend(Resource{}, func(x *Binding) bool { b = append(b, *x); return true })
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("bindings differ after an edited copy")
	}

	data := orig.Bytes()
	for _, off := range []int{3, 40, len(data) / 2, len(data) - 2} {
		bad := append([]byte(nil), data...)
		bad[off] ^= 0x40
		if _, err := CopySnapshot(io.Discard, bytes.NewReader(bad), nil); err == nil {
			t.Errorf("damage at byte %d of %d: copied without error", off, len(data))
		}
	}
	if _, err := CopySnapshot(io.Discard, bytes.NewReader(data[:len(data)-1]), nil); !errors.Is(err, ErrCorruptSnapshot) {
		t.Errorf("truncated: %v", err)
	}
}
