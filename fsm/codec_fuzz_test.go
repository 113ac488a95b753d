package fsm

import (
	"errors"
	"reflect"
	"sort"
	"testing"
)

// FuzzDecodeCommand: DecodeCommand never panics, refuses with a classified
// error, and whatever it accepts is in canonical form: re-encoding and
// decoding again gives the same command (and the same bytes).
//
// Each input is tried twice: as an entry, and as an entry body with a correct
// CRC-32C appended, so that the fuzzer also reaches the decoder behind the
// checksum.
func FuzzDecodeCommand(f *testing.F) {
	cmds := sampleCommands()
	names := make([]string, 0, len(cmds))
	for name := range cmds {
		names = append(names, name)
	}
	sort.Strings(names) // a deterministic seed order
	for _, name := range names {
		enc, err := cmds[name].Encode()
		if err != nil {
			f.Fatalf("%s: %v", name, err)
		}
		f.Add(enc)
		f.Add(enc[:len(enc)-4])
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add(rawPutNA(rawBinding(byte(StatusActive), 1, 7, []byte{0, 1})))
	f.Add(append(rawHeader(3), 1, 3, 1, 2, 3, 4, 5, 6, 7, 8))

	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		checkDecode(t, withCRC(data))
	})
}

func checkDecode(t *testing.T, data []byte) {
	c, err := DecodeCommand(data)
	if err != nil {
		if c != nil {
			t.Fatalf("DecodeCommand returned a command and error %v", err)
		}
		if !errors.Is(err, ErrCorruptEntry) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("unclassified error %v", err)
		}
		return
	}
	enc, err := c.Encode()
	if err != nil {
		t.Fatalf("decoded command %+v does not encode: %v", c, err)
	}
	c2, err := DecodeCommand(enc)
	if err != nil {
		t.Fatalf("re-encoded command does not decode: %v\n%x", err, enc)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("not canonical:\n%+v\n%+v", c, c2)
	}
	enc2, err := c2.Encode()
	if err != nil || string(enc2) != string(enc) {
		t.Fatalf("encoding not stable: %x vs %x (%v)", enc, enc2, err)
	}
	if len(enc) > len(data) {
		// Canonical varints are minimal, so re-encoding never grows.
		t.Fatalf("re-encoding grew from %d to %d bytes", len(data), len(enc))
	}
	// An accepted command applies without panicking, and its outcome is
	// the same as for the re-decoded copy.
	s1, s2 := New(), New()
	r1 := s1.Apply(Entry{Index: 1, Term: 1, Cmd: c})
	r2 := s2.Apply(Entry{Index: 1, Term: 1, Cmd: c2})
	if (r1.Err == nil) != (r2.Err == nil) || dumpState(s1) != dumpState(s2) {
		t.Fatalf("decoded and re-decoded commands apply differently: %v / %v", r1.Err, r2.Err)
	}
}
