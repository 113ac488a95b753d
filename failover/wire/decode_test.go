package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// Hand-built messages for the error tests. These helpers only concatenate
// TLVs; they share no code with the encoder under test.

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func opt(code uint16, data ...[]byte) []byte {
	d := cat(data...)
	return cat(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, code), uint16(len(d))), d)
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func fohdr(t MsgType) []byte { return []byte{byte(t), 0x00, 0x00, 0x05, 0x2f, 0xa0, 0xc0, 0x00} }

var (
	addr1   = netip.MustParseAddr("2001:db8::1").AsSlice()
	addr2   = netip.MustParseAddr("2001:db8::2").AsSlice()
	pfx56   = netip.MustParseAddr("2001:db8:0:100::").AsSlice()
	bsOK    = opt(114, []byte{1})
	stosOK  = opt(133, be32(1))
	leaseOK = opt(5, addr1, be32(0), be32(0), bsOK, stosOK)
)

func iana(iaid uint32, subs ...[]byte) []byte {
	return opt(3, be32(iaid), be32(0), be32(0), cat(subs...))
}

func cd(subs ...[]byte) []byte {
	return opt(45, opt(1, goldenDUID), opt(100, be32(1)), cat(subs...))
}

func bndupd(subs ...[]byte) []byte { return cat(fohdr(MsgBndUpd), cat(subs...)) }

func lonePfx(subs ...[]byte) []byte {
	return opt(26, be32(0), be32(0), []byte{56}, pfx56, cat(subs...))
}

func connectOpts() []byte {
	return cat(opt(127, be16(1), be16(0)), opt(122, be32(3600)), opt(128, be32(60)), opt(121, be32(10)), opt(115, be16(0)))
}

func stateOpts(state byte, flags byte) []byte {
	return cat(opt(132, []byte{state}), opt(131, []byte{flags}), opt(133, be32(1)))
}

// Offsets in the standard BNDUPD: header 0..8, CLIENT_DATA header at 8,
// CLIENTID 12..26, LQ_BASE_TIME 26..34, IA_NA header at 34, its IAADDR
// header at 50, the IAADDR's sub-options from 78.

func TestDecodeValidBase(t *testing.T) {
	// The building blocks themselves are valid, so each error case below
	// fails for the one reason it names.
	for name, b := range map[string][]byte{
		"bndupd":  bndupd(cd(iana(1, leaseOK))),
		"lone":    bndupd(lonePfx(opt(100, be32(1)), bsOK, stosOK)),
		"connect": cat(fohdr(MsgConnect), connectOpts()),
		"state":   cat(fohdr(MsgState), stateOpts(2, 0)),
		"pd":      cat(fohdr(MsgState), stateOpts(4, 2)), // PARTNER-DOWN in STARTUP: time optional
	} {
		if _, err := DecodeMessage(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	long := cat(fohdr(MsgContact), opt(999, make([]byte, 65535-12)))
	for _, c := range []struct {
		name string
		b    []byte
		kind error
		want []string // substrings of the error text
	}{
		// Header and framing of options.
		{"empty", nil, ErrMalformed, []string{"empty message"}},
		{"unknown type", []byte{36, 0, 0, 1, 0, 0, 0, 0}, ErrUnknownMessageType, []string{"MSG(36)"}},
		{"unknown type 0", []byte{0}, ErrUnknownMessageType, []string{"msg-type 0"}},
		{"RELAY-FORW", []byte{12, 0, 0, 0}, ErrUnknownMessageType, nil},
		{"short failover header", []byte{byte(MsgBndUpd), 0, 0, 1, 0}, ErrMalformed, []string{"BNDUPD", "header truncated: 5 bytes, want 8"}},
		{"short plain header", []byte{byte(MsgStartTLS), 0, 0}, ErrMalformed, []string{"STARTTLS", "want 4"}},
		{"too long", append(long, 0, 0, 0, 0), ErrMalformed, []string{"65539-byte message"}},
		{"truncated option header", cat(fohdr(MsgContact), []byte{0, 1, 0}), ErrMalformed,
			[]string{"CONTACT", "at offset 8", "truncated option header: 3 bytes left"}},
		{"option overruns message", cat(fohdr(MsgContact), []byte{0x03, 0xe7, 0, 5, 1, 2, 3}), ErrMalformed,
			[]string{"OPTION(999) at top level at offset 8", "option-len 5 exceeds the 3 bytes left"}},
		{"sub-option overruns container", bndupd(opt(45, []byte{0, 1, 0, 20}, goldenDUID)), ErrMalformed,
			[]string{"OPTION_CLIENTID(1) in OPTION_CLIENT_DATA(45) at offset 12", "option-len 20 exceeds the 10 bytes left"}},
		{"truncated sub-option header", bndupd(opt(45, opt(1, goldenDUID), []byte{0, 100})), ErrMalformed,
			[]string{"in OPTION_CLIENT_DATA(45) at offset 26", "truncated option header"}},

		// Wrong length of fixed-size options.
		{"MCLT length 3", cat(fohdr(MsgConnect), opt(122, []byte{0, 0, 1})), ErrMalformed,
			[]string{"CONNECT: OPTION_F_MCLT(122) at top level at offset 8", "option-len 3, want 4"}},
		{"binding status length 2", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), opt(114, []byte{1, 1}), stosOK)))), ErrMalformed,
			[]string{"BNDUPD: OPTION_F_BINDING_STATUS(114) in OPTION_IAADDR(5) at offset 78", "option-len 2, want 1"}},
		{"server state length 0", cat(fohdr(MsgState), opt(132)), ErrMalformed, []string{"OPTION_F_SERVER_STATE(132)", "option-len 0, want 1"}},
		{"connect flags length 4", cat(fohdr(MsgConnect), opt(115, be32(1))), ErrMalformed, []string{"OPTION_F_CONNECT_FLAGS(115)", "want 2"}},
		{"DNS flags length 1", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(116, opt(119, []byte{1})))))), ErrMalformed,
			[]string{"OPTION_F_DNS_FLAGS(119) in OPTION_F_DNS_REMOVAL_INFO(116)", "want 2"}},
		{"CLT time length 8", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(46, be32(1), be32(2)))))), ErrMalformed,
			[]string{"OPTION_CLT_TIME(46) in OPTION_IAADDR(5)", "option-len 8, want 4"}},
		{"IA_NA too short", bndupd(opt(45, opt(1, goldenDUID), opt(100, be32(1)), opt(3, be32(1), be32(0)))), ErrMalformed,
			[]string{"OPTION_IA_NA(3) in OPTION_CLIENT_DATA(45) at offset 34", "option-len 8, want at least 12"}},
		{"IAADDR too short", bndupd(cd(iana(1, opt(5, addr1, be32(0))))), ErrMalformed,
			[]string{"OPTION_IAADDR(5) in OPTION_IA_NA(3) at offset 50", "option-len 20, want at least 24"}},
		{"IAPREFIX too short", bndupd(opt(26, be32(0), be32(0), []byte{56}, pfx56[:15])), ErrMalformed,
			[]string{"OPTION_IAPREFIX(26) at top level at offset 8", "want at least 25"}},
		{"status too short", cat(fohdr(MsgDisconnect), opt(13, []byte{0})), ErrMalformed, []string{"OPTION_STATUS_CODE(13)", "want at least 2"}},
		{"relay data too short", bndupd(cd(opt(47, addr1[:15]), iana(1, leaseOK))), ErrMalformed, []string{"OPTION_LQ_RELAY_DATA(47)", "want at least 16"}},
		{"reconfigure data too short", bndupd(cd(opt(129, []byte{1, 2, 3}), iana(1, leaseOK))), ErrMalformed, []string{"OPTION_F_RECONFIGURE_DATA(129)", "want at least 4"}},

		// Bad values.
		{"binding status 0", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), opt(114, []byte{0}), stosOK)))), ErrMalformed,
			[]string{"OPTION_F_BINDING_STATUS(114) in OPTION_IAADDR(5) at offset 82", "binding-status 0"}},
		{"binding status 9", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), opt(114, []byte{9}), stosOK)))), ErrMalformed, []string{"binding-status 9"}},
		{"server state STARTUP", cat(fohdr(MsgState), stateOpts(1, 2)), ErrMalformed, []string{"STARTUP (1) is never sent"}},
		{"server state 11", cat(fohdr(MsgState), stateOpts(11, 0)), ErrMalformed, []string{"server-state 11"}},
		{"DUID too short", bndupd(opt(45, opt(1, []byte{0, 1}), opt(100, be32(1)), iana(1, leaseOK))), ErrMalformed, []string{"OPTION_CLIENTID(1)", "DUID of 2 bytes"}},
		{"DUID too long", bndupd(opt(45, opt(1, make([]byte, 131)), opt(100, be32(1)), iana(1, leaseOK))), ErrMalformed, []string{"DUID of 131 bytes"}},
		{"empty relationship name", cat(fohdr(MsgConnect), connectOpts(), opt(130)), ErrMalformed, []string{"OPTION_F_RELATIONSHIP_NAME(130)", "empty"}},
		{"NUL-terminated relationship name", cat(fohdr(MsgConnect), connectOpts(), opt(130, []byte("alpha\x00"))), ErrMalformed, []string{"NUL"}},
		{"relationship name not UTF-8", cat(fohdr(MsgConnect), connectOpts(), opt(130, []byte{0xff, 0xfe})), ErrMalformed, []string{"UTF-8"}},
		{"prefix length 129", bndupd(opt(26, be32(0), be32(0), []byte{129}, pfx56, bsOK, stosOK)), ErrMalformed,
			[]string{"OPTION_IAPREFIX(26) at top level at offset 20", "prefix-length 129"}},
		{"prefix host bits", bndupd(opt(26, be32(0), be32(0), []byte{48}, pfx56, opt(100, be32(1)), bsOK, stosOK)), ErrMalformed,
			[]string{"2001:db8:0:100::/48 has bits set beyond its length"}},
		{"empty VSS", bndupd(cd(opt(68), iana(1, leaseOK))), ErrMalformed, []string{"OPTION_VSS(68)", "want at least 1"}},
		{"empty FQDN", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(39))))), ErrMalformed, []string{"OPTION_CLIENT_FQDN(39)"}},
		{"compressed DNS name", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(116, opt(117, []byte{0xc0, 0x0c})))))), ErrMalformed,
			[]string{"OPTION_F_DNS_HOST_NAME(117) in OPTION_F_DNS_REMOVAL_INFO(116)", "compression"}},
		{"DNS name with trailing bytes", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(116, opt(118, []byte{1, 'a', 0, 7})))))), ErrMalformed,
			[]string{"OPTION_F_DNS_ZONE_NAME(118)", "after the root label"}},

		// Duplicates.
		{"duplicate MCLT", cat(fohdr(MsgConnect), connectOpts(), opt(122, be32(1))), ErrDuplicateOption,
			[]string{"CONNECT: OPTION_F_MCLT(122) at top level at offset 46"}},
		{"duplicate status", cat(fohdr(MsgDisconnect), opt(13, be16(20)), opt(13, be16(20))), ErrDuplicateOption, []string{"OPTION_STATUS_CODE(13) at top level at offset 14"}},
		{"duplicate CLIENTID", bndupd(cd(opt(1, goldenDUID), iana(1, leaseOK))), ErrDuplicateOption,
			[]string{"OPTION_CLIENTID(1) in OPTION_CLIENT_DATA(45) at offset 34"}},
		{"duplicate binding status", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, bsOK)))), ErrDuplicateOption,
			[]string{"OPTION_F_BINDING_STATUS(114) in OPTION_IAADDR(5) at offset 91"}},
		{"two CLIENT_DATA", bndupd(cd(iana(1, leaseOK)), cd(iana(1, leaseOK))), ErrDuplicateOption, []string{"OPTION_CLIENT_DATA(45) at top level"}},
		{"two lone prefixes", bndupd(lonePfx(opt(100, be32(1)), bsOK, stosOK), lonePfx(opt(100, be32(1)), bsOK, stosOK)), ErrDuplicateOption, []string{"OPTION_IAPREFIX(26)"}},
		{"CLIENT_DATA and IAPREFIX", bndupd(cd(iana(1, leaseOK)), lonePfx(opt(100, be32(1)), bsOK, stosOK)), ErrDuplicateOption, []string{"not both"}},
		{"duplicate IAID", bndupd(cd(iana(1, leaseOK), iana(1, opt(5, addr2, be32(0), be32(0), bsOK, stosOK)))), ErrDuplicateOption, []string{"second IA_NA with IAID 0x1"}},
		{"duplicate lease", bndupd(cd(iana(1, leaseOK), iana(2, leaseOK))), ErrDuplicateOption, []string{"2001:db8::1/128 appears twice"}},

		// Missing required options.
		{"CONNECT without MCLT", cat(fohdr(MsgConnect), opt(127, be16(1), be16(0)), opt(128, be32(60)), opt(121, be32(10)), opt(115, be16(0))), ErrMissingOption,
			[]string{"CONNECT: OPTION_F_MCLT(122)"}},
		{"CONNECT without flags", cat(fohdr(MsgConnect), opt(127, be16(1), be16(0)), opt(122, be32(3600)), opt(128, be32(60)), opt(121, be32(10))), ErrMissingOption,
			[]string{"OPTION_F_CONNECT_FLAGS(115)"}},
		{"accepting CONNECTREPLY without version", cat(fohdr(MsgConnectReply), opt(13, be16(0))), ErrMissingOption, []string{"CONNECTREPLY: OPTION_F_PROTOCOL_VERSION(127)"}},
		{"STATE without flags", cat(fohdr(MsgState), opt(132, []byte{2}), opt(133, be32(1))), ErrMissingOption, []string{"OPTION_F_SERVER_FLAGS(131)"}},
		{"STATE without start time", cat(fohdr(MsgState), opt(132, []byte{2}), opt(131, []byte{0})), ErrMissingOption, []string{"OPTION_F_START_TIME_OF_STATE(133)"}},
		{"PARTNER-DOWN without partner-down time", cat(fohdr(MsgState), stateOpts(4, 1)), ErrMissingOption, []string{"OPTION_F_PARTNER_DOWN_TIME(125)"}},
		{"BNDUPD without record", bndupd(), ErrMissingOption, []string{"BNDUPD", "one OPTION_CLIENT_DATA or one OPTION_IAPREFIX"}},
		{"BNDREPLY without record", cat(fohdr(MsgBndReply), opt(13, be16(0))), ErrMissingOption, []string{"BNDREPLY"}},
		{"BNDUPD without base time", bndupd(opt(45, opt(1, goldenDUID), iana(1, leaseOK))), ErrMissingOption, []string{"OPTION_LQ_BASE_TIME(100) in OPTION_CLIENT_DATA(45)"}},
		{"BNDREPLY without client id", cat(fohdr(MsgBndReply), opt(45, iana(1, leaseOK))), ErrMissingOption, []string{"OPTION_CLIENTID(1)"}},
		{"BNDUPD without IA", bndupd(cd()), ErrMissingOption, []string{"at least one IA_NA"}},
		{"BNDUPD IA without lease", bndupd(cd(iana(7))), ErrMissingOption, []string{"OPTION_IAADDR(5) in OPTION_IA_NA(3)", "IAID 0x7"}},
		{"BNDUPD lease without status", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), stosOK)))), ErrMissingOption,
			[]string{"OPTION_F_BINDING_STATUS(114) in OPTION_IAADDR(5)", "2001:db8::1"}},
		{"BNDUPD lease without start time", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK)))), ErrMissingOption, []string{"OPTION_F_START_TIME_OF_STATE(133)"}},
		{"lone prefix without base time", bndupd(lonePfx(bsOK, stosOK)), ErrMissingOption, []string{"OPTION_LQ_BASE_TIME(100) in OPTION_IAPREFIX(26)"}},

		// Options in the wrong container.
		{"binding status at top level", bndupd(bsOK), ErrWrongContainer, []string{"BNDUPD: OPTION_F_BINDING_STATUS(114) at top level at offset 8"}},
		{"MCLT in STATE", cat(fohdr(MsgState), stateOpts(2, 0), opt(122, be32(1))), ErrWrongContainer, []string{"STATE: OPTION_F_MCLT(122)", "STATE message"}},
		{"status is fine but CLIENT_DATA in CONNECT", cat(fohdr(MsgConnect), connectOpts(), cd(iana(1, leaseOK))), ErrWrongContainer, []string{"CONNECT: OPTION_CLIENT_DATA(45)"}},
		{"server state in CONTACT", cat(fohdr(MsgContact), opt(132, []byte{2})), ErrWrongContainer, []string{"CONTACT"}},
		{"CLT_TIME in CLIENT_DATA (RFC 5007 placement)", bndupd(cd(opt(46, be32(0)), iana(1, leaseOK))), ErrWrongContainer,
			[]string{"OPTION_CLT_TIME(46) in OPTION_CLIENT_DATA(45) at offset 34"}},
		{"START_TIME_OF_STATE in IA_NA (RFC 8156 §5.5.17 reading)", bndupd(cd(iana(1, leaseOK, stosOK))), ErrWrongContainer,
			[]string{"OPTION_F_START_TIME_OF_STATE(133) in OPTION_IA_NA(3)"}},
		{"IAPREFIX in IA_NA", bndupd(cd(iana(1, lonePfx(bsOK, stosOK)))), ErrWrongContainer, []string{"OPTION_IAPREFIX(26) in OPTION_IA_NA(3) at offset 50"}},
		{"IAADDR in IA_PD", bndupd(cd(opt(25, be32(1), be32(0), be32(0), leaseOK))), ErrWrongContainer, []string{"OPTION_IAADDR(5) in OPTION_IA_PD(25)"}},
		{"IAADDR directly in CLIENT_DATA", bndupd(cd(leaseOK)), ErrWrongContainer, []string{"OPTION_IAADDR(5) in OPTION_CLIENT_DATA(45)"}},
		{"CLIENTID in IAADDR", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(1, goldenDUID))))), ErrWrongContainer, []string{"OPTION_CLIENTID(1) in OPTION_IAADDR(5)"}},
		{"VSS in IAADDR", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(68, []byte{0}))))), ErrWrongContainer, []string{"OPTION_VSS(68) in OPTION_IAADDR(5)"}},
		{"CLT_TIME in lone prefix", bndupd(lonePfx(opt(100, be32(1)), bsOK, stosOK, opt(46, be32(0)))), ErrWrongContainer, []string{"OPTION_CLT_TIME(46) in OPTION_IAPREFIX(26)"}},
		{"binding status in DNS removal info", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(116, bsOK))))), ErrWrongContainer,
			[]string{"OPTION_F_BINDING_STATUS(114) in OPTION_F_DNS_REMOVAL_INFO(116)"}},
		{"IA_NA in IA_NA", bndupd(cd(iana(1, leaseOK, iana(2, leaseOK)))), ErrWrongContainer, []string{"OPTION_IA_NA(3) in OPTION_IA_NA(3)"}},
		{"CLIENT_DATA in CLIENT_DATA", bndupd(cd(cd(iana(1, leaseOK)))), ErrWrongContainer, []string{"OPTION_CLIENT_DATA(45) in OPTION_CLIENT_DATA(45)"}},

		// Nesting depth.
		{"CLIENT_DATA at depth 5", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(116, cd()))))), ErrTooDeep,
			[]string{"OPTION_CLIENT_DATA(45) in OPTION_F_DNS_REMOVAL_INFO(116) at offset 95", "depth 5"}},
		{"DNS removal info at depth 5", bndupd(cd(iana(1, opt(5, addr1, be32(0), be32(0), bsOK, stosOK, opt(116, opt(116)))))), ErrTooDeep,
			[]string{"OPTION_F_DNS_REMOVAL_INFO(116) in OPTION_F_DNS_REMOVAL_INFO(116)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := DecodeMessage(c.b)
			if err == nil {
				t.Fatalf("decoded %s, want error %v", dump(m), c.kind)
			}
			if m != nil {
				t.Errorf("returned a message with the error")
			}
			if !errors.Is(err, c.kind) {
				t.Fatalf("error %q does not match %v", err, c.kind)
			}
			if c.kind != ErrUnknownMessageType && !errors.Is(err, ErrMalformed) {
				t.Errorf("error %q does not match ErrMalformed", err)
			}
			if c.kind == ErrUnknownMessageType && errors.Is(err, ErrMalformed) {
				t.Errorf("unknown message type %q also matches ErrMalformed", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error %T is not *Error", err)
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

// TestDecodeTruncation cuts valid messages at every byte position. A cut
// inside the header or an option must fail as malformed; a cut at a
// top-level option boundary may give a valid message, which must then be
// the original with its first options only.
func TestDecodeTruncation(t *testing.T) {
	msgs := [][]byte{
		bndupd(cd(opt(68, []byte{0, 'r'}), opt(129, be32(7), []byte{1, 2}), opt(47, addr2, []byte{12, 0}), iana(1, leaseOK),
			opt(25, be32(2), be32(0), be32(0), lonePfx(bsOK, stosOK, opt(39, []byte{0, 0}), opt(116, opt(117, []byte{0}), opt(119, be16(3))))))),
		cat(fohdr(MsgConnect), connectOpts(), opt(130, []byte("rel")), opt(999, []byte{1})),
		cat(fohdr(MsgState), stateOpts(4, 1), opt(125, be32(9))),
		cat(fohdr(MsgDisconnect), opt(13, be16(20), []byte("bye"))),
	}
	for _, g := range goldens() {
		msgs = append(msgs, hx(t, g.hex))
	}
	for i, full := range msgs {
		whole, err := DecodeMessage(full)
		if err != nil {
			t.Fatalf("message %d does not decode: %v", i, err)
		}
		// Top-level option boundaries, by walking the TLVs.
		bounds := map[int]int{} // offset -> number of options before it
		pos, n := whole.Type.HeaderLen(), 0
		for {
			bounds[pos] = n
			if pos >= len(full) {
				break
			}
			pos += 4 + int(binary.BigEndian.Uint16(full[pos+2:]))
			n++
		}
		for cut := 0; cut < len(full); cut++ {
			m, err := DecodeMessage(full[:cut])
			k, atBound := bounds[cut]
			switch {
			case err == nil && !atBound:
				t.Fatalf("message %d cut at %d/%d decoded: %s", i, cut, len(full), dump(m))
			case err == nil:
				want := &Message{Header: whole.Header, Options: whole.Options[:k:k]}
				if k == 0 {
					want.Options = nil
				}
				if !reflect.DeepEqual(m, want) {
					t.Fatalf("message %d cut at option boundary %d: %s, want %s", i, cut, dump(m), dump(want))
				}
			case !errors.Is(err, ErrMalformed):
				t.Fatalf("message %d cut at %d: unclassified error %v", i, cut, err)
			}
		}
	}
}

// TestDecodeKeepsUnknown: unknown options are kept raw, in order, at every
// level; STARTTLS options are not interpreted at all.
func TestDecodeKeepsUnknown(t *testing.T) {
	b := cat(fohdr(MsgBndUpd),
		opt(999, []byte{9}),
		opt(45, opt(1, goldenDUID), opt(998), opt(100, be32(1)),
			opt(3, be32(1), be32(0), be32(0), opt(5, addr1, be32(0), be32(0), bsOK, opt(997, []byte{7}), stosOK,
				opt(116, opt(996, []byte{6}))), opt(995))),
		opt(200, []byte{2}))
	m, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	want := NewBndUpd(5, 0x2fa0c000, &ClientData{
		ClientID: goldenDUID, BaseTime: U32(1),
		IAs: []IA{{Type: IANA, IAID: 1, Leases: []Lease{{
			Prefix: netip.PrefixFrom(netip.AddrFrom16([16]byte(addr1)), 128), BindingStatus: BindingActive, StartTimeOfState: U32(1),
			DNSRemoval: &DNSRemovalInfo{Extra: []RawOption{{Code: 996, Data: []byte{6}}}},
			Extra:      []RawOption{{Code: 997, Data: []byte{7}}},
		}}, Extra: []RawOption{{Code: 995}}}},
		Extra: []RawOption{{Code: 998}},
	})
	want.Options = []Option{RawOption{Code: 999, Data: []byte{9}}, want.Options[0], RawOption{Code: 200, Data: []byte{2}}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got  %s\nwant %s", dump(m), dump(want))
	}

	st := cat([]byte{byte(MsgStartTLS), 0, 0, 1}, opt(13, []byte{0}), opt(122, be32(1)))
	m, err = DecodeMessage(st)
	if err != nil {
		t.Fatal(err)
	}
	if want := NewMessage(MsgStartTLS, 1, 0, RawOption{Code: 13, Data: []byte{0}}, RawOption{Code: 122, Data: []byte{0, 0, 0, 1}}); !reflect.DeepEqual(m, want) {
		t.Fatalf("STARTTLS: got %s, want %s", dump(m), dump(want))
	}
	// The decoded message does not alias the input.
	b[len(b)-1] = 0xee
	if r := m.Options[0].(RawOption); r.Data[0] != 0 {
		t.Fatal("aliasing")
	}
}

func TestMustBeZeroBitsKept(t *testing.T) {
	m, err := DecodeMessage(cat(fohdr(MsgState), stateOpts(2, 0xf9)))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := m.StateInfo()
	if s.Flags != 0xf9 || s.Flags.Unknown() != 0xf8 || s.Flags.String() != "COMMUNICATED|0xf8" {
		t.Fatalf("flags %#x %v", uint8(s.Flags), s.Flags)
	}
}

func TestDomainNames(t *testing.T) {
	b, err := EncodeDomainName("host.example.com")
	if err != nil || !bytes.Equal(b, []byte("\x04host\x07example\x03com\x00")) {
		t.Fatalf("EncodeDomainName = %q, %v", b, err)
	}
	if s, err := DomainNameString(b); err != nil || s != "host.example.com." {
		t.Fatalf("DomainNameString = %q, %v", s, err)
	}
	if s, err := DomainNameString([]byte{0}); err != nil || s != "." {
		t.Fatalf("root = %q, %v", s, err)
	}
	for _, bad := range []string{"a..b", strings.Repeat("x", 64) + ".com", strings.Repeat("abcdefg.", 40)} {
		if _, err := EncodeDomainName(bad); err == nil {
			t.Errorf("EncodeDomainName(%q) succeeded", bad)
		}
	}
	if _, err := DomainNameString([]byte("\x03a.b\x00")); err == nil {
		t.Error("label with a dot accepted")
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{MsgConnectReply.String(), "CONNECTREPLY"},
		{MsgUpdReqAll.String(), "UPDREQALL"},
		{MsgType(36).String(), "MSG(36)"},
		{OptFStateExpirationTime.String(), "OPTION_F_STATE_EXPIRATION_TIME(134)"},
		{OptionCode(999).String(), "OPTION(999)"},
		{StatusNotSupported.String(), "NotSupported"},
		{StatusExcessiveTimeSkew.String(), "ExcessiveTimeSkew"},
		{StatusCode(23).String(), "Status(23)"},
		{StateCommInterrupted.String(), "COMMUNICATIONS-INTERRUPTED"},
		{StateConflictDone.String(), "CONFLICT-DONE"},
		{BindingPendingFree.String(), "PENDING-FREE"},
		{BindingFreeBackup.String(), "FREE-BACKUP"},
		{(DNSFlagUsingRequestedFQDN | DNSFlagFwdUpToDate).String(), "USING_REQUESTED_FQDN|FWD_UPTODATE"},
		{ConnectFlags(0).String(), "0"},
		{IAPD.String(), "IA_PD"},
		{Version1.String(), "1.0"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if s, err := ParseServerState("recover-wait"); err != nil || s != StateRecoverWait {
		t.Errorf("ParseServerState = %v, %v", s, err)
	}
	if _, err := ParseServerState("PAUSED"); err == nil {
		t.Error("ParseServerState(PAUSED) succeeded")
	}
	// Every message type, option code, state and status named in the RFCs.
	for c := OptionCode(114); c <= 134; c++ {
		if !c.Known() {
			t.Errorf("option %d unknown", c)
		}
	}
	for tp := MsgBndUpd; tp <= MsgContact; tp++ {
		if !tp.Known() || !tp.HasSentTime() || tp.HeaderLen() != 8 {
			t.Errorf("message type %d", tp)
		}
	}
	if MsgStartTLS.HasSentTime() || MsgReply.HeaderLen() != 4 {
		t.Error("plain header types")
	}
}

func TestConstructors(t *testing.T) {
	for _, c := range []struct {
		m    *Message
		want MsgType
	}{
		{NewContact(1, 2), MsgContact},
		{NewPoolReq(1, 2), MsgPoolReq},
		{NewPoolResp(1, 2), MsgPoolResp},
		{NewUpdReq(1, 2), MsgUpdReq},
		{NewUpdReqAll(1, 2), MsgUpdReqAll},
		{NewUpdDone(1, 2), MsgUpdDone},
	} {
		b, err := c.m.Encode()
		if err != nil || !bytes.Equal(b, []byte{byte(c.want), 0, 0, 1, 0, 0, 0, 2}) {
			t.Errorf("%v: %x, %v", c.want, b, err)
		}
	}
	if b, err := NewReply(3, nil).Encode(); err != nil || !bytes.Equal(b, []byte{7, 0, 0, 3}) {
		t.Errorf("accepting REPLY: %x, %v", b, err)
	}
	m := NewConnect(0x12, 7, ConnectInfo{Version: Version1, MCLT: 1})
	if s := m.String(); s != "CONNECT xid=0x000012 sent=7 OPTION_F_PROTOCOL_VERSION(127) OPTION_F_MCLT(122) OPTION_F_KEEPALIVE_TIME(128) OPTION_F_MAX_UNACKED_BNDUPD(121) OPTION_F_CONNECT_FLAGS(115)" {
		t.Errorf("String = %q", s)
	}
	if ConnectFlags(0x8001).Unknown() != 0x8000 || DNSFlags(0x10f).Unknown() != 0x100 {
		t.Error("Unknown flag bits")
	}
}
