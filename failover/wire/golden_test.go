package wire

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// Golden messages, worked out by hand from the layouts in RFC 8156 §5.2 and
// §5.5, RFC 8415 §21 and RFC 5007 §4.1.2, one field per line. They are NOT
// produced by the encoder: each test decodes the bytes and compares with the
// typed value, and encodes the typed value and compares with the bytes.
//
// Common values: sent-time 0x2fa0c000 (2025-04-27T10:14:24Z),
// DUID-LL 00 03 00 01 02 00 5e 10 20 30 (type 3, hw type 1, MAC
// 02:00:5e:10:20:30), lease 2001:db8::1.

// hx parses hex with "#" comments and any whitespace.
func hx(t testing.TB, s string) []byte {
	t.Helper()
	var clean strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		clean.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(clean.String())
	if err != nil {
		t.Fatalf("bad golden hex: %v", err)
	}
	return b
}

const (
	goldenSent = 0x2fa0c000
)

var goldenDUID = []byte{0x00, 0x03, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30}

type golden struct {
	name string
	hex  string
	msg  *Message
}

func goldens() []golden {
	return []golden{
		{
			name: "CONNECT",
			hex: `
				1f                  # msg-type CONNECT (31)
				00 00 2a            # transaction-id 42
				2f a0 c0 00         # sent-time
				00 7f 00 04         # OPTION_F_PROTOCOL_VERSION (127), len 4
				00 01 00 00         #   major 1, minor 0
				00 7a 00 04         # OPTION_F_MCLT (122), len 4
				00 00 0e 10         #   3600 s
				00 80 00 04         # OPTION_F_KEEPALIVE_TIME (128), len 4
				00 00 00 3c         #   60 s
				00 79 00 04         # OPTION_F_MAX_UNACKED_BNDUPD (121), len 4
				00 00 00 64         #   100
				00 82 00 05         # OPTION_F_RELATIONSHIP_NAME (130), len 5
				61 6c 70 68 61      #   "alpha"
				00 73 00 02         # OPTION_F_CONNECT_FLAGS (115), len 2
				00 01               #   FIXED_PD_LENGTH
			`,
			msg: &Message{
				Header: Header{Type: MsgConnect, XID: 42, SentTime: goldenSent},
				Options: []Option{
					ProtocolVersion{1, 0}, MCLT(3600), KeepaliveTime(60), MaxUnackedBndUpd(100),
					RelationshipName("alpha"), ConnectFlagFixedPDLength,
				},
			},
		},
		{
			name: "CONNECTREPLY accept",
			hex: `
				20                  # msg-type CONNECTREPLY (32)
				00 00 2a            # transaction-id 42 (the CONNECT's)
				2f a0 c0 01         # sent-time
				00 7f 00 04         # OPTION_F_PROTOCOL_VERSION, len 4
				00 01 00 00         #   1.0
				00 7a 00 04         # OPTION_F_MCLT, len 4
				00 00 0e 10         #   3600 (equal to the CONNECT's)
				00 80 00 04         # OPTION_F_KEEPALIVE_TIME, len 4
				00 00 00 1e         #   30 s
				00 79 00 04         # OPTION_F_MAX_UNACKED_BNDUPD, len 4
				00 00 00 32         #   50
				00 73 00 02         # OPTION_F_CONNECT_FLAGS, len 2
				00 01               #   FIXED_PD_LENGTH
			`,
			msg: NewConnectReply(42, goldenSent+1, ConnectInfo{
				Version: Version1, MCLT: 3600, KeepaliveTime: 30, MaxUnackedBndUpd: 50, Flags: ConnectFlagFixedPDLength,
			}),
		},
		{
			name: "CONNECTREPLY reject",
			hex: `
				20                  # msg-type CONNECTREPLY (32)
				00 00 2a            # transaction-id 42
				2f a0 c0 01         # sent-time
				00 0d 00 09         # OPTION_STATUS_CODE (13), len 2 + 7
				00 16               #   ExcessiveTimeSkew (22)
				73 6b 65 77 20 39 73 #  "skew 9s"
			`,
			msg: NewConnectReject(42, goldenSent+1, Status{Code: StatusExcessiveTimeSkew, Message: "skew 9s"}),
		},
		{
			name: "STATE startup",
			hex: `
				22                  # msg-type STATE (34)
				00 00 07            # transaction-id 7
				2f a0 c0 00         # sent-time
				00 84 00 01         # OPTION_F_SERVER_STATE (132), len 1
				03                  #   COMMUNICATIONS-INTERRUPTED (the recorded state)
				00 83 00 01         # OPTION_F_SERVER_FLAGS (131), len 1
				03                  #   STARTUP (0x02) | COMMUNICATED (0x01)
				00 85 00 04         # OPTION_F_START_TIME_OF_STATE (133), len 4
				2f a0 00 00         #   absolute time
			`,
			msg: NewState(7, goldenSent, StateInfo{
				State: StateCommInterrupted, Flags: ServerFlagStartup | ServerFlagCommunicated, StartTime: 0x2fa00000,
			}),
		},
		{
			name: "STATE partner-down",
			hex: `
				22                  # msg-type STATE (34)
				00 00 08            # transaction-id 8
				2f a0 c0 00         # sent-time
				00 84 00 01         # OPTION_F_SERVER_STATE, len 1
				04                  #   PARTNER-DOWN
				00 83 00 01         # OPTION_F_SERVER_FLAGS, len 1
				01                  #   COMMUNICATED
				00 85 00 04         # OPTION_F_START_TIME_OF_STATE, len 4
				2f a0 b0 00         #   entered PARTNER-DOWN
				00 7d 00 04         # OPTION_F_PARTNER_DOWN_TIME (125), len 4
				2f a0 b0 00         #   same time
			`,
			msg: NewState(8, goldenSent, StateInfo{
				State: StatePartnerDown, Flags: ServerFlagCommunicated, StartTime: 0x2fa0b000, PartnerDownTime: U32(0x2fa0b000),
			}),
		},
		{
			name: "BNDUPD client",
			hex: `
				18                  # msg-type BNDUPD (24)
				00 01 00            # transaction-id 256
				2f a0 c0 00         # sent-time
				00 2d 00 67         # OPTION_CLIENT_DATA (45), len 103 = 14 + 8 + 81
				00 01 00 0a         #   OPTION_CLIENTID (1), len 10
				00 03 00 01 02 00 5e 10 20 30 # DUID-LL
				00 64 00 04         #   OPTION_LQ_BASE_TIME (100), len 4
				2f a0 c0 00         #     base time
				00 03 00 4d         #   OPTION_IA_NA (3), len 77 = 12 + 65
				00 00 00 01         #     IAID 1
				00 00 07 08         #     T1 1800
				00 00 0b 40         #     T2 2880
				00 05 00 3d         #     OPTION_IAADDR (5), len 61 = 24 + 37
				20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 # 2001:db8::1
				00 00 0e 10         #       preferred lifetime 3600
				00 00 0e 10         #       valid lifetime 3600
				00 72 00 01         #       OPTION_F_BINDING_STATUS (114), len 1
				01                  #         ACTIVE
				00 85 00 04         #       OPTION_F_START_TIME_OF_STATE (133), len 4
				2f a0 c0 00
				00 86 00 04         #       OPTION_F_STATE_EXPIRATION_TIME (134), len 4
				2f a0 ce 10         #         base + 3600
				00 2e 00 04         #       OPTION_CLT_TIME (46), len 4
				00 00 00 00         #         0 s before base time
				00 7b 00 04         #       OPTION_F_PARTNER_LIFETIME (123), len 4
				2f a4 bb 88         #         base + 1800 + 259200
			`,
			msg: NewBndUpd(256, goldenSent, &ClientData{
				ClientID: goldenDUID,
				BaseTime: U32(goldenSent),
				IAs: []IA{{
					Type: IANA, IAID: 1, T1: 1800, T2: 2880,
					Leases: []Lease{{
						Prefix:    netip.MustParsePrefix("2001:db8::1/128"),
						Preferred: 3600, Valid: 3600,
						BindingStatus:       BindingActive,
						StartTimeOfState:    U32(goldenSent),
						StateExpirationTime: U32(0x2fa0ce10),
						CLTTime:             U32(0),
						PartnerLifetime:     U32(0x2fa4bb88),
					}},
				}},
			}),
		},
		{
			name: "BNDUPD lone prefix",
			hex: `
				18                  # msg-type BNDUPD (24)
				00 01 01            # transaction-id 257
				2f a0 c0 00         # sent-time
				00 1a 00 2e         # OPTION_IAPREFIX (26), len 46 = 25 + 21
				00 00 00 00         #   preferred lifetime 0
				00 00 00 00         #   valid lifetime 0
				38                  #   prefix-length 56
				20 01 0d b8 00 00 01 00 00 00 00 00 00 00 00 00 # 2001:db8:0:100::
				00 64 00 04         #   OPTION_LQ_BASE_TIME (100), len 4
				2f a0 c0 00
				00 72 00 01         #   OPTION_F_BINDING_STATUS (114), len 1
				06                  #     FREE-BACKUP
				00 85 00 04         #   OPTION_F_START_TIME_OF_STATE (133), len 4
				2f a0 c0 00
			`,
			msg: NewBndUpdPrefix(257, goldenSent, &LonePrefix{
				Lease: Lease{
					Prefix:           netip.MustParsePrefix("2001:db8:0:100::/56"),
					BindingStatus:    BindingFreeBackup,
					StartTimeOfState: U32(goldenSent),
				},
				BaseTime: U32(goldenSent),
			}),
		},
		{
			name: "BNDREPLY per-lease status",
			hex: `
				19                  # msg-type BNDREPLY (25)
				00 01 00            # transaction-id 256 (the BNDUPD's)
				2f a0 c0 02         # sent-time
				00 2d 00 5f         # OPTION_CLIENT_DATA (45), len 95 = 14 + 81
				00 01 00 0a         #   OPTION_CLIENTID, len 10
				00 03 00 01 02 00 5e 10 20 30
				00 03 00 4d         #   OPTION_IA_NA, len 77 = 12 + 65
				00 00 00 01         #     IAID 1
				00 00 07 08         #     T1 1800
				00 00 0b 40         #     T2 2880
				00 05 00 3d         #     OPTION_IAADDR, len 61 = 24 + 37
				20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 # 2001:db8::1
				00 00 0e 10         #       preferred 3600
				00 00 0e 10         #       valid 3600
				00 0d 00 0c         #       OPTION_STATUS_CODE (13), len 2 + 10
				00 13               #         OutdatedBindingInformation (19)
				6e 65 77 65 72 20 68 65 72 65 # "newer here"
				00 72 00 01         #       OPTION_F_BINDING_STATUS, len 1
				01                  #         ACTIVE (echo)
				00 86 00 04         #       OPTION_F_STATE_EXPIRATION_TIME, len 4
				2f a0 ce 10         #         echo
				00 7c 00 04         #       OPTION_F_PARTNER_LIFETIME_SENT (124), len 4
				2f a4 bb 88         #         echo of PARTNER_LIFETIME
			`,
			msg: NewBndReply(256, goldenSent+2, &ClientData{
				ClientID: goldenDUID,
				IAs: []IA{{
					Type: IANA, IAID: 1, T1: 1800, T2: 2880,
					Leases: []Lease{{
						Prefix:    netip.MustParsePrefix("2001:db8::1/128"),
						Preferred: 3600, Valid: 3600,
						Status:              &Status{Code: StatusOutdatedBindingInformation, Message: "newer here"},
						BindingStatus:       BindingActive,
						StateExpirationTime: U32(0x2fa0ce10),
						PartnerLifetimeSent: U32(0x2fa4bb88),
					}},
				}},
			}),
		},
		{
			name: "BNDUPD IA_TA with VSS, FQDN and DNS removal info",
			hex: `
				18                  # msg-type BNDUPD (24)
				00 01 02            # transaction-id 258
				2f a0 c0 00         # sent-time
				00 2d 00 76         # OPTION_CLIENT_DATA, len 118 = 14 + 8 + 8 + 88
				00 01 00 0a         #   OPTION_CLIENTID, len 10
				00 03 00 01 02 00 5e 10 20 30
				00 64 00 04         #   OPTION_LQ_BASE_TIME, len 4
				2f a0 c0 00
				00 44 00 04         #   OPTION_VSS (68), len 4
				00 72 65 64         #     type 0 (NVT ASCII), "red"
				00 04 00 54         #   OPTION_IA_TA (4), len 84 = 4 + 80
				00 00 00 02         #     IAID 2 (no T1/T2 in an IA_TA)
				00 05 00 4c         #     OPTION_IAADDR, len 76 = 24 + 52
				20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02 # 2001:db8::2
				00 00 02 58         #       preferred 600
				00 00 03 84         #       valid 900
				00 72 00 01         #       OPTION_F_BINDING_STATUS, len 1
				01                  #         ACTIVE
				00 85 00 04         #       OPTION_F_START_TIME_OF_STATE, len 4
				2f a0 c0 00
				00 27 00 0f         #       OPTION_CLIENT_FQDN (39), len 15
				01                  #         flags: S
				04 68 6f 73 74 07 65 78 61 6d 70 6c 65 00 # host.example.
				00 74 00 10         #       OPTION_F_DNS_REMOVAL_INFO (116), len 16
				00 75 00 06         #         OPTION_F_DNS_HOST_NAME (117), len 6
				04 68 6f 73 74 00   #           host.
				00 77 00 02         #         OPTION_F_DNS_FLAGS (119), len 2
				00 03               #           REV_UPTODATE | FWD_UPTODATE
			`,
			msg: NewBndUpd(258, goldenSent, &ClientData{
				ClientID: goldenDUID,
				BaseTime: U32(goldenSent),
				VSS:      []byte{0, 'r', 'e', 'd'},
				IAs: []IA{{
					Type: IATA, IAID: 2,
					Leases: []Lease{{
						Prefix:    netip.MustParsePrefix("2001:db8::2/128"),
						Preferred: 600, Valid: 900,
						BindingStatus:    BindingActive,
						StartTimeOfState: U32(goldenSent),
						FQDN:             append([]byte{0x01}, "\x04host\x07example\x00"...),
						DNSRemoval: &DNSRemovalInfo{
							HostName: []byte("\x04host\x00"),
							Flags:    new(DNSFlagRevUpToDate | DNSFlagFwdUpToDate),
						},
					}},
				}},
			}),
		},
		{
			name: "DISCONNECT",
			hex: `
				21                  # msg-type DISCONNECT (33)
				00 00 09            # transaction-id 9
				2f a0 c0 00         # sent-time
				00 0d 00 13         # OPTION_STATUS_CODE, len 2 + 17
				00 14               #   ServerShuttingDown (20)
				6f 70 65 72 61 74 6f 72 20 73 68 75 74 64 6f 77 6e # "operator shutdown"
			`,
			msg: NewDisconnect(9, goldenSent, Status{Code: StatusServerShuttingDown, Message: "operator shutdown"}),
		},
		{
			name: "UPDDONE",
			hex: `
				1e                  # msg-type UPDDONE (30)
				00 ab cd            # transaction-id 0xabcd (the UPDREQ's)
				2f a0 c0 00         # sent-time
			`,
			msg: NewMessage(MsgUpdDone, 0xabcd, goldenSent),
		},
		{
			name: "CONTACT",
			hex: `
				23                  # msg-type CONTACT (35)
				ff ff ff            # transaction-id 0xffffff (the largest)
				2f a0 c0 00         # sent-time
			`,
			msg: NewMessage(MsgContact, 0xffffff, goldenSent),
		},
		{
			name: "STARTTLS",
			hex: `
				17                  # msg-type STARTTLS (23); plain header, no sent-time
				00 00 01            # transaction-id 1
			`,
			msg: NewStartTLS(1),
		},
		{
			name: "REPLY refusing TLS",
			hex: `
				07                  # msg-type REPLY (7); plain header
				00 00 01            # transaction-id 1 (the STARTTLS's)
				00 0d 00 02         # OPTION_STATUS_CODE, len 2
				00 0f               #   TLSConnectionRefused (15)
			`,
			msg: NewReply(1, &Status{Code: StatusTLSConnectionRefused}),
		},
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			b := hx(t, g.hex)
			m, err := DecodeMessage(b)
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if !reflect.DeepEqual(m, g.msg) {
				t.Fatalf("decoded\n  %s\nwant\n  %s", dump(m), dump(g.msg))
			}
		})
	}
}

func TestGoldenEncode(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			want := hx(t, g.hex)
			got, err := g.msg.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n  %x\nwant\n  %x", got, want)
			}
			framed, err := g.msg.AppendFrame([]byte{0xee})
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			wantFramed := append([]byte{0xee, byte(len(want) >> 8), byte(len(want))}, want...)
			if !bytes.Equal(framed, wantFramed) {
				t.Fatalf("framed\n  %x\nwant\n  %x", framed, wantFramed)
			}
		})
	}
}

// TestGoldenAccessors checks the typed views of the golden messages.
func TestGoldenAccessors(t *testing.T) {
	g := goldens()
	find := func(name string) *Message {
		for _, x := range g {
			if x.name == name {
				m, err := DecodeMessage(hx(t, x.hex))
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
		}
		t.Fatalf("no golden %q", name)
		return nil
	}
	c, err := find("CONNECT").ConnectInfo()
	want := ConnectInfo{Version: Version1, MCLT: 3600, KeepaliveTime: 60, MaxUnackedBndUpd: 100, RelationshipName: "alpha", Flags: ConnectFlagFixedPDLength}
	if err != nil || c != want {
		t.Errorf("ConnectInfo = %+v, %v; want %+v", c, err, want)
	}
	if m := find("CONNECTREPLY accept"); m.Rejected() {
		t.Error("accepting CONNECTREPLY reported as rejected")
	}
	if m := find("CONNECTREPLY reject"); !m.Rejected() {
		t.Error("rejecting CONNECTREPLY not reported as rejected")
	} else if st, _ := m.Status(); st.Code != StatusExcessiveTimeSkew || st.String() != "ExcessiveTimeSkew: skew 9s" {
		t.Errorf("status = %v", st)
	}
	s, err := find("STATE startup").StateInfo()
	if err != nil || s.State != StateCommInterrupted || s.Flags&ServerFlagStartup == 0 || s.PartnerDownTime != nil {
		t.Errorf("StateInfo = %+v, %v", s, err)
	}
	if s.State.String() != "COMMUNICATIONS-INTERRUPTED" || s.Flags.String() != "STARTUP|COMMUNICATED" {
		t.Errorf("names: %v %v", s.State, s.Flags)
	}
	if cd := find("BNDUPD client").ClientData(); cd == nil || cd.IAs[0].Leases[0].Addr() != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("ClientData = %+v", cd)
	}
	if p := find("BNDUPD lone prefix").LonePrefix(); p == nil || p.BindingStatus.String() != "FREE-BACKUP" {
		t.Errorf("LonePrefix = %+v", p)
	}
	if find("BNDUPD lone prefix").ClientData() != nil {
		t.Error("lone-prefix BNDUPD has a ClientData")
	}
	if _, err := find("CONTACT").ConnectInfo(); err == nil {
		t.Error("ConnectInfo of CONTACT succeeded")
	}
	if _, err := find("CONTACT").StateInfo(); err == nil {
		t.Error("StateInfo of CONTACT succeeded")
	}
}

// TestReplyEcho: the echo of the golden BNDUPD is the golden BNDREPLY minus
// its status.
func TestReplyEcho(t *testing.T) {
	var upd, reply *Message
	for _, g := range goldens() {
		switch g.name {
		case "BNDUPD client":
			upd = g.msg
		case "BNDREPLY per-lease status":
			reply = g.msg
		}
	}
	echo := upd.ClientData().ReplyEcho()
	want := *reply.ClientData()
	want.IAs = []IA{want.IAs[0]}
	want.IAs[0].Leases = []Lease{want.IAs[0].Leases[0]}
	want.IAs[0].Leases[0].Status = nil
	if !reflect.DeepEqual(echo, &want) {
		t.Fatalf("echo %s\nwant %s", dump(echo), dump(&want))
	}
	echo.ClientID[0] = 0xee
	if upd.ClientData().ClientID[0] == 0xee {
		t.Fatal("echo shares memory with the BNDUPD")
	}
	p := (&LonePrefix{Lease: Lease{Prefix: netip.MustParsePrefix("2001:db8::/48"), BindingStatus: BindingFree,
		StartTimeOfState: U32(1), StateExpirationTime: U32(2), PartnerLifetime: U32(3)}, BaseTime: U32(4), VSS: []byte{1}}).ReplyEcho()
	wantP := &LonePrefix{Lease: Lease{Prefix: netip.MustParsePrefix("2001:db8::/48"), BindingStatus: BindingFree,
		StateExpirationTime: U32(2), PartnerLifetimeSent: U32(3)}, VSS: []byte{1}}
	if !reflect.DeepEqual(p, wantP) {
		t.Fatalf("lone echo %s, want %s", dump(p), dump(wantP))
	}
	if _, err := NewBndReplyPrefix(1, 1, p).Encode(); err != nil {
		t.Fatal(err)
	}
}
