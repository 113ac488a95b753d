package fsm

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
)

// FuzzReadSnapshot: InspectSnapshot and ReadSnapshot never panic on any
// input, agree with each other, and whatever ReadSnapshot accepts is a
// consistent database that survives a write/read cycle.
//
// Each input is also tried with its header and file CRCs recomputed, so that
// the fuzzer reaches the record decoder behind the checksums.
func FuzzReadSnapshot(f *testing.F) {
	for _, s := range []*State{New(), smallState(f), richState(f)} {
		f.Add(snapshotBytes(f, s, snapCreated))
	}
	f.Add([]byte("TANDEMSN"))
	f.Add([]byte("hello, world\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSnapshot(t, data)
		if fixed := fixSnapshotCRCs(data); fixed != nil {
			checkSnapshot(t, fixed)
		}
	})
}

// fixSnapshotCRCs returns a copy of data with the header CRC and the final
// CRC recomputed, or nil if data is too short to have them.
func fixSnapshotCRCs(data []byte) []byte {
	const fixed = 54
	if len(data) < fixed+2 {
		return nil
	}
	d := bytes.Clone(data)
	duidLen := int(binary.BigEndian.Uint16(d[52:]))
	if len(d) < fixed+duidLen+2 {
		return nil
	}
	epLen := int(binary.BigEndian.Uint16(d[fixed+duidLen:]))
	hdrEnd := fixed + duidLen + 2 + epLen
	if len(d) < hdrEnd+4+4 {
		return nil
	}
	binary.BigEndian.PutUint32(d[hdrEnd:], crc32c(d[:hdrEnd]))
	binary.BigEndian.PutUint32(d[len(d)-4:], crc32c(d[:len(d)-4]))
	return d
}

func checkSnapshot(t *testing.T, data []byte) {
	info := InspectSnapshot(bytes.NewReader(data))
	if info.Size > int64(len(data)) {
		t.Fatalf("InspectSnapshot Size %d > %d bytes", info.Size, len(data))
	}
	s, h, err := ReadSnapshot(bytes.NewReader(data))
	if err != nil {
		if snapErrKind(err) == nil {
			t.Fatalf("unclassified error %v", err)
		}
		if info.Err == nil {
			// InspectSnapshot does not check record order (reported bug);
			// anything else it must refuse too.
			if !bytes.Contains([]byte(err.Error()), []byte("out of order")) {
				t.Fatalf("ReadSnapshot refused (%v) but InspectSnapshot accepted", err)
			}
		}
		return
	}
	if info.Err != nil {
		t.Fatalf("ReadSnapshot accepted but InspectSnapshot says %v", info.Err)
	}
	if info.Size != int64(len(data)) || info.Read != h.Count || !reflect.DeepEqual(info.Header, h) {
		t.Fatalf("inspect %+v disagrees with header %+v (%d bytes)", info, h, len(data))
	}
	st := s.Stats()
	if info.Counts != st.Counts || uint64(st.Bindings) != h.Count {
		t.Fatalf("counts: inspect %v, state %+v, header %d", info.Counts, st, h.Count)
	}
	checkIndexes(t, s.View())
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, s.View(), h.Created); err != nil {
		t.Fatal(err)
	}
	s2, h2, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatalf("re-written snapshot does not read: %v", err)
	}
	if !reflect.DeepEqual(h, h2) || dumpState(s) != dumpState(s2) || s.Stats() != s2.Stats() {
		t.Fatalf("write/read cycle changed the database")
	}
}
