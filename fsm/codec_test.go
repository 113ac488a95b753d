package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// sampleCommands returns one or more commands of every type, exercising every
// field, including extreme values.
func sampleCommands() map[string]*Command {
	longDUID := strings.Repeat("\xab", MaxDUIDLen)
	full := Binding{
		Resource:             na("2001:db8::1"),
		Status:               StatusActive,
		Flags:                FlagUpdateOwed | FlagResent,
		IAID:                 math.MaxUint32,
		DUID:                 longDUID,
		PreferredLifetime:    math.MaxUint32,
		ValidLifetime:        math.MaxUint32,
		CLTT:                 math.MaxInt64,
		StartTimeOfState:     math.MinInt64,
		StateExpirationTime:  1_700_003_600,
		PartnerLifetime:      -1,
		AckedPartnerLifetime: 1,
		ExpirationTime:       1_700_007_200,
		PartnerRawCLTT:       -1_700_000_000,
	}
	released := Binding{
		Resource:            ta("fe80::1234"),
		Status:              StatusReleased,
		IAID:                7,
		DUID:                "\x00\x03\x00\x01\x02\x03\x04\x05\x06\x07",
		StartTimeOfState:    1_700_000_000,
		StateExpirationTime: 1_700_003_600,
	}
	free := Binding{Resource: pd("2001:db8:ff00::/40"), Status: StatusFree}
	whole := Binding{Resource: pd("::/0"), Status: StatusAbandoned}
	host := Binding{Resource: pd("2001:db8::7/128"), Status: StatusFreeBackup}
	ops := []Op{
		{Resource: full.Resource, IfRev: AnyRev, Binding: full},
		{Resource: released.Resource, IfRev: 0, Binding: released},
		{Resource: free.Resource, IfRev: 42, Binding: free},
		{Resource: whole.Resource, IfRev: math.MaxUint64 - 1, Binding: whole},
		{Resource: host.Resource, IfRev: 1, Binding: host},
		{Resource: na("2001:db8::2"), IfRev: AnyRev, Delete: true},
		{Resource: pd("2001:db8:1:100::/56"), IfRev: 0, Delete: true},
		{Resource: ta("2001:db8::3"), IfRev: 99, Delete: true},
	}
	for st := StatusActive; st <= maxStatus; st++ {
		b := active(pd(fmt.Sprintf("2001:db8:%x::/48", uint8(st))), "\x00\x02\x00\x00\x00\x09abc", uint32(st), 1_700_000_000+int64(st))
		b.Status = st
		ops = append(ops, putOp(b))
	}
	return map[string]*Command{
		"txn-many": {Type: CmdTxn, Time: 1_700_000_000_123_456_789, Origin: OriginPartner,
			Note: "BNDUPD xid=0x1234 \u00e9", Ops: ops},
		"txn-one":       txn(putOp(active(na("2001:db8::10"), "\x00\x01\x00\x01abcdefghij", 1, 1_700_003_600))),
		"txn-empty":     {Type: CmdTxn, Time: -5, Origin: OriginAdmin},
		"txn-maxnote":   {Type: CmdTxn, Time: math.MinInt64, Note: strings.Repeat("n", MaxNoteLen), Ops: []Op{delOp(na("::1"))}},
		"server-duid":   {Type: CmdSetServerDUID, Time: 1, Origin: OriginServer, ServerDUID: []byte{0, 1, 0, 1, 0x2c, 0x5e, 0x7f, 0x10, 1, 2, 3, 4, 5, 6}},
		"server-duid-1": {Type: CmdSetServerDUID, ServerDUID: []byte{0xff}},
		"server-duid-max": {Type: CmdSetServerDUID, Time: math.MaxInt64, Origin: Origin(255),
			ServerDUID: bytes.Repeat([]byte{7}, MaxDUIDLen)},
		"endpoint": {Type: CmdSetEndpoint, Time: 2, Origin: OriginFailover, Endpoint: &EndpointState{
			State: 10, PreviousState: 4, StateSince: 1_700_000_000, PartnerState: 6, PartnerStateSince: -1,
			LastContact: math.MaxInt64, LastOperating: math.MinInt64, PartnerDownTime: 1_700_000_100,
			Communicated: true, HeldInStartup: true}},
		"endpoint-comm":  {Type: CmdSetEndpoint, Endpoint: &EndpointState{Communicated: true}},
		"endpoint-held":  {Type: CmdSetEndpoint, Endpoint: &EndpointState{HeldInStartup: true, State: 1}},
		"endpoint-zero":  {Type: CmdSetEndpoint, Endpoint: &EndpointState{}},
		"noop":           {Type: CmdNoop, Time: 1_700_000_000_000_000_000, Origin: OriginAdmin, Note: "mark"},
		"noop-zero-time": {Type: CmdNoop},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for name, c := range sampleCommands() {
		t.Run(name, func(t *testing.T) {
			enc, err := c.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := DecodeCommand(enc)
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip mismatch:\n got %+v\nwant %+v", got, c)
			}
			// Deterministic: the same command always gives the same bytes.
			enc2, err := got.Encode()
			if err != nil {
				t.Fatalf("re-Encode: %v", err)
			}
			if !bytes.Equal(enc, enc2) {
				t.Fatalf("re-encoding differs:\n%x\n%x", enc, enc2)
			}
			// AppendEncode appends and leaves the prefix alone.
			pre := []byte("prefix")
			app, err := c.AppendEncode(append([]byte(nil), pre...))
			if err != nil {
				t.Fatalf("AppendEncode: %v", err)
			}
			if !bytes.Equal(app[:len(pre)], pre) || !bytes.Equal(app[len(pre):], enc) {
				t.Fatalf("AppendEncode = %x, want %x+%x", app, pre, enc)
			}
		})
	}
}

// TestCommandDecodeCopies checks that decoded strings do not alias the input
// buffer (raft may reuse it) in the fields that State stores.
func TestCommandDecodeCopies(t *testing.T) {
	c := txn(putOp(active(na("2001:db8::10"), "\x00\x01\x00\x01abcdefghij", 1, 1_700_003_600)))
	c.Note = "note"
	enc, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCommand(enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		enc[i] = 0xEE
	}
	if got.Note != "note" || got.Ops[0].Binding.DUID != "\x00\x01\x00\x01abcdefghij" {
		t.Fatalf("decoded command changed with its input buffer: %+v", got)
	}
}

func TestCommandTypicalSize(t *testing.T) {
	// The codec comment promises about 70 bytes for a typical single-lease txn.
	b := active(na("2001:db8:0:1::abcd"), "\x00\x01\x00\x01\x2c\x5e\x7f\x10\x00\x11\x22\x33\x44\x55", 0x0a0b0c0d, 1_700_007_200)
	b.PartnerLifetime = 1_700_010_800
	c := &Command{Type: CmdTxn, Time: 1_700_003_600_123_456_789, Origin: OriginClient, Note: "REQUEST 0xabcdef",
		Ops: []Op{{Resource: b.Resource, IfRev: 123456, Binding: b}}}
	enc, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) > 110 {
		t.Fatalf("typical txn encodes to %d bytes, expected about 70-100", len(enc))
	}
	t.Logf("typical single-lease txn: %d bytes", len(enc))
}

// TestCommandGolden checks the exact bytes against the format comment in
// codec.go. The expected bytes were worked out by hand.
func TestCommandGolden(t *testing.T) {
	tests := []struct {
		name string
		cmd  *Command
		want []byte
	}{
		{
			name: "txn",
			cmd: &Command{
				Type:   CmdTxn,
				Time:   300,
				Origin: OriginClient,
				Note:   "ab",
				Ops: []Op{{
					Resource: pd("2001:db8:0:1200::/56"),
					IfRev:    5,
					Binding: Binding{
						Resource:             pd("2001:db8:0:1200::/56"),
						Status:               StatusActive,
						Flags:                FlagUpdateOwed,
						IAID:                 1000,
						DUID:                 "\x00\x03\x00\x01",
						PreferredLifetime:    3600,
						ValidLifetime:        7200,
						CLTT:                 100,
						StartTimeOfState:     100,
						StateExpirationTime:  7300,
						PartnerLifetime:      0,
						AckedPartnerLifetime: -1,
						ExpirationTime:       0,
						PartnerRawCLTT:       -64,
						Rev:                  77, // ignored in commands
					},
				}},
			},
			want: []byte{
				0x01,       // format version 1
				0x01,       // command type CmdTxn
				0xd8, 0x04, // time 300: zig-zag 600 = 0b100_1011000 -> 0x58|0x80, 0x04
				0x01,             // origin client
				0x02, 0x61, 0x62, // note length 2, "ab"
				0x01,                                     // op count 1
				0x02,                                     // op flags: bit 1 (has precondition), not delete
				0x03,                                     // resource type IA_PD
				0x38,                                     // resource length 56
				0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x12, // ceil(56/8) = 7 address bytes
				0x05,       // expected revision 5
				0x01,       // status ACTIVE
				0x01,       // flags FlagUpdateOwed
				0xe8, 0x07, // IAID 1000 = 7*128 + 104 -> 0x68|0x80, 0x07
				0x04, 0x00, 0x03, 0x00, 0x01, // DUID length 4, DUID
				0x90, 0x1c, // preferred 3600 = 28*128 + 16 -> 0x10|0x80, 0x1c
				0xa0, 0x38, // valid 7200 = 56*128 + 32 -> 0x20|0x80, 0x38
				0xc8, 0x01, // CLTT 100: zig-zag 200 = 1*128 + 72 -> 0x48|0x80, 0x01
				0xc8, 0x01, // start-time-of-state 100
				0x88, 0x72, // state-expiration-time 7300: zig-zag 14600 = 114*128 + 8 -> 0x88, 0x72
				0x00, // partner-lifetime 0
				0x01, // acked-partner-lifetime -1: zig-zag 1
				0x00, // expiration-time 0
				0x7f, // partner-raw-clt-time -64: zig-zag 127
			},
		},
		{
			name: "noop",
			cmd:  &Command{Type: CmdNoop, Time: -1, Origin: OriginAdmin},
			want: []byte{
				0x01, // format version
				0x04, // CmdNoop
				0x01, // time -1: zig-zag 1
				0x04, // origin admin
				0x00, // note length 0
			},
		},
		{
			name: "set-server-duid",
			cmd:  &Command{Type: CmdSetServerDUID, Time: 64, Origin: OriginServer, ServerDUID: []byte{0x00, 0x03, 0x00, 0x01, 0xaa}},
			want: []byte{
				0x01,       // format version
				0x02,       // CmdSetServerDUID
				0x80, 0x01, // time 64: zig-zag 128 -> 0x00|0x80, 0x01
				0x06,                         // origin server
				0x00,                         // note length 0
				0x05,                         // DUID length 5
				0x00, 0x03, 0x00, 0x01, 0xaa, // DUID
			},
		},
		{
			name: "set-endpoint",
			cmd: &Command{Type: CmdSetEndpoint, Time: 0, Origin: OriginFailover, Endpoint: &EndpointState{
				State: 5, PreviousState: 1, StateSince: 10, PartnerState: 4, PartnerStateSince: -10,
				LastContact: 0, LastOperating: 63, PartnerDownTime: -65, HeldInStartup: true,
			}},
			want: []byte{
				0x01, // format version
				0x03, // CmdSetEndpoint
				0x00, // time 0
				0x05, // origin failover
				0x00, // note length 0
				0x01, // endpoint record version 1
				0x02, // flags: bit 1 held in startup
				0x05, // state
				0x01, // previous state
				0x04, // partner state
				0x14, // state since 10: zig-zag 20
				0x13, // partner state since -10: zig-zag 19
				0x00, // last contact 0
				0x7e, // last operating 63: zig-zag 126
				0x81, // partner-down time -65: zig-zag 129 = 1*128 + 1 -> 0x81, 0x01
				0x01,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The trailing u32 CRC-32C is computed with the test's own
			// crc32 table over the hand-written bytes.
			want := withCRC(tc.want)
			got, err := tc.cmd.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Encode =\n%x\nwant\n%x", got, want)
			}
			dec, err := DecodeCommand(want)
			if err != nil {
				t.Fatalf("DecodeCommand(golden): %v", err)
			}
			wantCmd := *tc.cmd
			if wantCmd.Type == CmdTxn {
				// Rev is not encoded.
				wantCmd.Ops = append([]Op(nil), wantCmd.Ops...)
				wantCmd.Ops[0].Binding.Rev = 0
			}
			if !reflect.DeepEqual(dec, &wantCmd) {
				t.Fatalf("DecodeCommand(golden) = %+v, want %+v", dec, &wantCmd)
			}
		})
	}
}

// raw builders for hand-made encodings used by the error tests. They build
// the part before the CRC; withCRC appends it.

// withCRC appends the big-endian CRC-32C of b (computed independently of the
// encoder) to a copy of b.
func withCRC(b []byte) []byte {
	out := append([]byte(nil), b...)
	return binary.BigEndian.AppendUint32(out, crc32c(b))
}

// rawHeader is version 1, the given type, time 0, origin 0, empty note.
func rawHeader(typ byte) []byte { return []byte{1, typ, 0, 0, 0} }

// rawBinding encodes binding fields with all lifetimes/times zero.
func rawBinding(status, flags byte, iaid uint64, duid []byte) []byte {
	b := []byte{status, flags}
	b = binary.AppendUvarint(b, iaid)
	b = binary.AppendUvarint(b, uint64(len(duid)))
	b = append(b, duid...)
	b = append(b, 0, 0)                // preferred, valid
	b = append(b, 0, 0, 0, 0, 0, 0, 0) // 7 times
	return b
}

// rawPutNA is a txn with one unconditional put of IA_NA 2001:db8::1.
func rawPutNA(bindingFields []byte) []byte {
	b := append(rawHeader(1), 1, 0, 1, 128)
	ip := na("2001:db8::1").IP
	b = append(b, ip[:]...)
	return append(b, bindingFields...)
}

func TestRawBuildersValid(t *testing.T) {
	// The hand-made encodings used below are valid when not deliberately broken,
	// so the error tests break exactly one thing.
	for name, data := range map[string][]byte{
		"put":      rawPutNA(rawBinding(byte(StatusActive), 0, 1, []byte{1, 2})),
		"noop":     rawHeader(4),
		"empty":    append(rawHeader(1), 0),
		"endpoint": append(rawHeader(3), 1, 3, 0, 0, 0, 0, 0, 0, 0, 0),
	} {
		if _, err := DecodeCommand(withCRC(data)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	longDUID := bytes.Repeat([]byte{1}, MaxDUIDLen+1)
	pdBad := append(rawHeader(1), 1, 0, 3, 60, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x0f) // /60 with host bits
	pdBad = append(pdBad, rawBinding(byte(StatusFree), 0, 0, nil)...)
	naLen64 := append(rawHeader(1), 1, 1, 1, 64, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0) // IA_NA must be /128
	pd129 := append(rawHeader(1), 1, 1, 3, 129)
	pd129 = append(pd129, make([]byte, 17)...)
	type0 := append(rawHeader(1), 1, 1, 0, 128)
	type0 = append(type0, make([]byte, 16)...)
	overflow := []byte{1, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0}
	iaid33 := rawPutNA(rawBinding(byte(StatusFree), 0, 1<<32, nil))

	validNoop := withCRC(rawHeader(4))
	badCRC := append([]byte(nil), validNoop...)
	badCRC[len(badCRC)-1] ^= 0x10
	tests := []struct {
		name     string
		data     []byte // a CRC is appended unless noCRC
		want     error
		contains string
		noCRC    bool
	}{
		{"empty input", nil, ErrCorruptEntry, "shorter", true},
		{"empty slice", []byte{}, ErrCorruptEntry, "shorter", true},
		{"one byte", []byte{1}, ErrCorruptEntry, "shorter", true},
		{"seven bytes", []byte{1, 4, 0, 0, 0, 0, 0}, ErrCorruptEntry, "shorter", true},
		{"bad checksum", badCRC, ErrCorruptEntry, "checksum", true},
		{"missing checksum", rawPutNA(rawBinding(byte(StatusFree), 0, 0, nil)), ErrCorruptEntry, "checksum", true},
		{"op count beyond data", append(rawHeader(1), 1), ErrCorruptEntry, "op count", false},
		{"version 0", []byte{0, 4, 0, 0, 0}, ErrCorruptEntry, "version 0", false},
		{"version 2", []byte{2, 4, 0, 0, 0}, ErrUnsupportedVersion, "version 2", false},
		{"version 255", []byte{255}, ErrUnsupportedVersion, "version 255", false},
		{"type 0", rawHeader(0), ErrCorruptEntry, "unknown command type 0", false},
		{"type 5", rawHeader(5), ErrCorruptEntry, "unknown command type 5", false},
		{"type 255", rawHeader(255), ErrCorruptEntry, "unknown command type 255", false},
		{"trailing byte noop", append(rawHeader(4), 0), ErrCorruptEntry, "trailing", false},
		{"trailing bytes txn", append(rawPutNA(rawBinding(byte(StatusFree), 0, 0, nil)), 1, 2, 3), ErrCorruptEntry, "3 trailing", false},
		{"huge op count", append(binary.AppendUvarint(rawHeader(1), 1<<40), 0, 1, 128), ErrCorruptEntry, "op count", false},
		{"op count one too many", append(rawHeader(1), 2, 1, 3, 0), ErrCorruptEntry, "op count", false},
		{"max uvarint op count", binary.AppendUvarint(rawHeader(1), math.MaxUint64), ErrCorruptEntry, "op count", false},
		{"varint overflow", overflow, ErrCorruptEntry, "varint", false},
		{"client DUID too long", rawPutNA(rawBinding(byte(StatusActive), 0, 1, longDUID)), ErrCorruptEntry, "client DUID", false},
		{"server DUID too long", append(append(rawHeader(2), byte(MaxDUIDLen+1)), longDUID...), ErrCorruptEntry, "server DUID", false},
		{"server DUID empty", append(rawHeader(2), 0), ErrCorruptEntry, "empty server DUID", false},
		{"server DUID truncated", append(rawHeader(2), 5, 1, 2), ErrCorruptEntry, "truncated", false},
		{"prefix host bits", pdBad, ErrCorruptEntry, "host bits", false},
		{"IA_NA /64", naLen64, ErrCorruptEntry, "bad resource", false},
		{"length 129", pd129, ErrCorruptEntry, "length 129", false},
		{"resource type 0", type0, ErrCorruptEntry, "bad resource type 0", false},
		{"active without DUID", rawPutNA(rawBinding(byte(StatusActive), 0, 1, nil)), ErrCorruptEntry, "without a client DUID", false},
		{"status 0", rawPutNA(rawBinding(0, 0, 1, []byte{1})), ErrCorruptEntry, "bad status", false},
		{"status 9", rawPutNA(rawBinding(9, 0, 1, []byte{1})), ErrCorruptEntry, "bad status", false},
		{"unknown binding flags", rawPutNA(rawBinding(byte(StatusFree), 4, 1, nil)), ErrCorruptEntry, "unknown flags", false},
		{"unknown op flags", append(rawHeader(1), 1, 4, 1, 128), ErrCorruptEntry, "op flags", false},
		{"IAID over 32 bits", iaid33, ErrCorruptEntry, "32 bits", false},
		{"note too long", binary.AppendUvarint([]byte{1, 4, 0, 0}, MaxNoteLen+1), ErrCorruptEntry, "note", false},
		{"endpoint record v2", append(rawHeader(3), 2, 0, 0, 0, 0, 0, 0, 0, 0, 0), ErrCorruptEntry, "endpoint record version 2", false},
		{"endpoint unknown flags", append(rawHeader(3), 1, 4, 0, 0, 0, 0, 0, 0, 0, 0), ErrCorruptEntry, "endpoint flags", false},
		{"endpoint truncated", append(rawHeader(3), 1, 0, 0), ErrCorruptEntry, "truncated", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if !tc.noCRC {
				data = withCRC(data)
			}
			c, err := DecodeCommand(data)
			if err == nil {
				t.Fatalf("DecodeCommand(%x) = %+v, want error", data, c)
			}
			if c != nil {
				t.Errorf("DecodeCommand returned a command with the error")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %q does not wrap %q", err, tc.want)
			}
			if tc.want == ErrUnsupportedVersion && errors.Is(err, ErrCorruptEntry) {
				t.Errorf("version error %q also wraps ErrCorruptEntry", err)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not mention %q", err, tc.contains)
			}
		})
	}
}

// TestDecodeTruncation decodes every proper prefix of valid encodings.
func TestDecodeTruncation(t *testing.T) {
	for name, c := range sampleCommands() {
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("%s: Encode: %v", name, err)
		}
		for n := 0; n < len(enc); n++ {
			got, err := decodeNoPanic(t, enc[:n])
			if err == nil {
				t.Fatalf("%s: prefix of %d/%d bytes decoded to %+v", name, n, len(enc), got)
			}
			if !errors.Is(err, ErrCorruptEntry) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("%s: prefix %d: error %q wraps neither ErrCorruptEntry nor ErrUnsupportedVersion", name, n, err)
			}
		}
	}
}

// TestDecodeBitFlips flips every bit of valid encodings: each damaged entry
// must be refused (the CRC-32C detects every single-bit error), never decoded
// into a different command.
func TestDecodeBitFlips(t *testing.T) {
	for name, c := range sampleCommands() {
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("%s: Encode: %v", name, err)
		}
		if len(enc) > 400 {
			continue // keep it quick: only the small commands
		}
		for i := range enc {
			for bit := 0; bit < 8; bit++ {
				d := append([]byte(nil), enc...)
				d[i] ^= 1 << bit
				got, err := decodeNoPanic(t, d)
				if err == nil {
					t.Fatalf("%s: flipping bit %d of byte %d decoded to %+v", name, bit, i, got)
				}
				want := ErrCorruptEntry
				if i == 0 && d[0] != 0 { // version 0 is damage; other versions are newer formats
					want = ErrUnsupportedVersion
				}
				if !errors.Is(err, want) {
					t.Fatalf("%s: flip byte %d bit %d: error %q does not wrap %q", name, i, bit, err, want)
				}
			}
		}
	}
}

func decodeNoPanic(t *testing.T, data []byte) (c *Command, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("DecodeCommand(%x) panicked: %v", data, r)
		}
	}()
	return DecodeCommand(data)
}

// TestDecodeHugeCountNoAllocation checks that a claimed count far beyond the
// bytes present is refused before anything proportional to it is allocated.
func TestDecodeHugeCountNoAllocation(t *testing.T) {
	for _, count := range []uint64{1 << 20, 1 << 30, 1 << 40, math.MaxInt64, math.MaxUint64} {
		data := binary.AppendUvarint(rawHeader(1), count)
		data = withCRC(append(data, bytes.Repeat([]byte{1, 3, 0}, 8)...)) // a few real delete ops of ::/0
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c, err := DecodeCommand(data)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("count %d: decoded %d ops from %d bytes", count, len(c.Ops), len(data))
		}
		if !errors.Is(err, ErrCorruptEntry) {
			t.Fatalf("count %d: error %q does not wrap ErrCorruptEntry", count, err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
			t.Fatalf("count %d: decoding allocated %d bytes", count, got)
		}
	}
	// A count that the remaining bytes could hold at one byte per op, but
	// not at the 3-byte minimum, is refused before allocating.
	ops := bytes.Repeat([]byte{1, 3, 0}, 1000)
	data := withCRC(append(binary.AppendUvarint(rawHeader(1), 3000), ops...))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := DecodeCommand(data)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorruptEntry) || !strings.Contains(err.Error(), "op count") {
		t.Fatalf("count 3000 with 1000 minimal ops: %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
		t.Fatalf("count 3000 with 3000 bytes: decoding allocated %d bytes", got)
	}
	// The bound is exact: 8 ops of 3 bytes each with count 8 decode.
	data = withCRC(append(binary.AppendUvarint(rawHeader(1), 8), bytes.Repeat([]byte{1, 3, 0}, 8)...))
	c, err := DecodeCommand(data)
	if err != nil {
		t.Fatalf("8 minimal ops: %v", err)
	}
	if len(c.Ops) != 8 || !c.Ops[7].Delete || c.Ops[7].Resource != pd("::/0") || c.Ops[7].IfRev != AnyRev {
		t.Fatalf("8 minimal ops decoded as %+v", c.Ops)
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	good := active(na("2001:db8::1"), "\x00\x01duid", 1, 1_700_000_000)
	with := func(f func(b *Binding)) *Command {
		b := good
		f(&b)
		return txn(Op{Resource: good.Resource, IfRev: AnyRev, Binding: b})
	}
	hostBits := pd("2001:db8::/56")
	hostBits.IP[10] = 1
	tests := map[string]*Command{
		"type 0":             {Type: 0},
		"type 5":             {Type: 5},
		"note too long":      {Type: CmdNoop, Note: strings.Repeat("x", MaxNoteLen+1)},
		"op resource type 0": txn(delOp(Resource{Len: 128})),
		"op IA_NA /64":       txn(delOp(Resource{Type: IANA, Len: 64})),
		"op length 129":      txn(delOp(Resource{Type: IAPD, Len: 129})),
		"op host bits":       txn(delOp(hostBits)),
		"binding resource differs": with(func(b *Binding) {
			b.Resource = na("2001:db8::2")
		}),
		"status 0":            with(func(b *Binding) { b.Status = 0 }),
		"status 9":            with(func(b *Binding) { b.Status = 9 }),
		"unknown flags":       with(func(b *Binding) { b.Flags = 0x80 }),
		"DUID too long":       with(func(b *Binding) { b.DUID = strings.Repeat("d", MaxDUIDLen+1) }),
		"ACTIVE without DUID": with(func(b *Binding) { b.DUID = "" }),
		"server DUID empty":   {Type: CmdSetServerDUID},
		"server DUID too long": {Type: CmdSetServerDUID,
			ServerDUID: bytes.Repeat([]byte{1}, MaxDUIDLen+1)},
		"endpoint nil": {Type: CmdSetEndpoint},
		"second op bad": txn(delOp(na("2001:db8::9")), Op{Resource: good.Resource, IfRev: 0,
			Binding: Binding{Resource: good.Resource, Status: StatusActive}}),
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			enc, err := c.Encode()
			if err == nil {
				t.Fatalf("Encode succeeded: %x", enc)
			}
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %q does not wrap ErrInvalidCommand", err)
			}
			if enc != nil {
				t.Errorf("Encode returned bytes with an error")
			}
			if enc, err := c.AppendEncode([]byte("x")); err == nil || enc != nil {
				t.Errorf("AppendEncode = %x, %v; want nil, error", enc, err)
			}
		})
	}
	// A delete op's Binding is ignored (not validated, not encoded).
	c := txn(Op{Resource: good.Resource, IfRev: AnyRev, Delete: true, Binding: Binding{Status: 99}})
	enc, err := c.Encode()
	if err != nil {
		t.Fatalf("delete with junk binding: %v", err)
	}
	dec, err := DecodeCommand(enc)
	if err != nil {
		t.Fatal(err)
	}
	if dec.Ops[0].Binding != (Binding{}) || !dec.Ops[0].Delete {
		t.Fatalf("delete op decoded as %+v", dec.Ops[0])
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{CmdTxn.String(), "txn"}, {CmdSetServerDUID.String(), "set-server-duid"},
		{CmdSetEndpoint.String(), "set-endpoint"}, {CmdNoop.String(), "noop"}, {CmdType(9).String(), "cmd(9)"},
		{OriginClient.String(), "client"}, {OriginServer.String(), "server"}, {Origin(7).String(), "origin(7)"},
		{StatusFreeBackup.String(), "FREE-BACKUP"}, {Status(0).String(), "NONE"}, {Status(200).String(), "STATUS(200)"},
		{IAPD.String(), "pd"}, {IAType(4).String(), "ia(4)"},
		{pd("2001:db8:8000::/56").String(), "pd 2001:db8:8000::/56"}, {ta("2001:db8::1").String(), "ta 2001:db8::1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for s := StatusActive; s <= maxStatus; s++ {
		if p, err := ParseStatus(strings.ToLower(s.String())); err != nil || p != s {
			t.Errorf("ParseStatus(%q) = %v, %v", s.String(), p, err)
		}
	}
	if _, err := ParseStatus("NONE"); err == nil {
		t.Errorf("ParseStatus(NONE) succeeded")
	}
	for ty := IANA; ty <= maxIAType; ty++ {
		if p, err := ParseIAType(strings.ToUpper(ty.String())); err != nil || p != ty {
			t.Errorf("ParseIAType(%q) = %v, %v", ty.String(), p, err)
		}
	}
	if _, err := ParseIAType("xx"); err == nil {
		t.Errorf("ParseIAType(xx) succeeded")
	}
}

func TestResource(t *testing.T) {
	r := pd("2001:db8:1234:5678::/50") // PrefixResource masks
	if r.Prefix().String() != "2001:db8:1234:4000::/50" || !r.Valid() {
		t.Fatalf("PrefixResource masked to %v (valid %v)", r.Prefix(), r.Valid())
	}
	bad := r
	bad.IP[7] = 0x01
	if bad.Valid() {
		t.Errorf("%v with host bits is valid", bad)
	}
	if (Resource{Type: IANA, Len: 127}).Valid() || (Resource{Type: IAPD, Len: 129}).Valid() || (Resource{Len: 128}).Valid() {
		t.Errorf("invalid resources reported valid")
	}
	// Compare: type, then address, then length.
	order := []Resource{na("2001:db8::1"), na("2001:db8::2"), ta("::1"), pd("2001:db8::/48"), pd("2001:db8::/56"), pd("2001:db8:1::/48")}
	for i := range order {
		for j := range order {
			got := order[i].Compare(order[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	b := Binding{DUID: "\x00\x01\xab"}
	if b.DUIDHex() != "0001ab" {
		t.Errorf("DUIDHex = %q", b.DUIDHex())
	}
	if b.Owed() {
		t.Errorf("zero binding owed")
	}
	b.PartnerLifetime = 1
	if !b.Owed() {
		t.Errorf("PartnerLifetime != 0 not owed")
	}
	b.PartnerLifetime, b.Flags = 0, FlagUpdateOwed
	if !b.Owed() {
		t.Errorf("FlagUpdateOwed not owed")
	}
	b.Flags = FlagResent
	if b.Owed() {
		t.Errorf("FlagResent alone owed")
	}
}
