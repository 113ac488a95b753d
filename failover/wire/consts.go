package wire

import (
	"fmt"
	"strings"
)

// Port is the dhcp-failover TCP port (RFC 8156 §5.1).
const Port = 647

// MaxMessageSize is the largest message the RFC 5460 §5.1 framing can carry:
// the 2-octet message-size field counts the message only, so 65535 bytes.
const MaxMessageSize = 65535

// Header sizes.
const (
	// FailoverHeaderLen is the RFC 8156 §5.2 header: msg-type, 24-bit
	// transaction-id, 32-bit sent-time.
	FailoverHeaderLen = 8
	// PlainHeaderLen is the RFC 8415/RFC 5460 header used by STARTTLS and
	// REPLY: msg-type and 24-bit transaction-id, no sent-time.
	PlainHeaderLen = 4
	// MaxXID is the largest transaction-id (24 bits).
	MaxXID = 1<<24 - 1
)

// MsgType is a DHCPv6 message type as it appears on the failover connection.
type MsgType uint8

// Message types carried on the failover connection. 24-35 are RFC 8156 §5.3
// and §11; STARTTLS is RFC 7653 §6.2.2 and REPLY (RFC 8415) is its answer.
const (
	MsgReply        MsgType = 7
	MsgStartTLS     MsgType = 23
	MsgBndUpd       MsgType = 24
	MsgBndReply     MsgType = 25
	MsgPoolReq      MsgType = 26
	MsgPoolResp     MsgType = 27
	MsgUpdReq       MsgType = 28
	MsgUpdReqAll    MsgType = 29
	MsgUpdDone      MsgType = 30
	MsgConnect      MsgType = 31
	MsgConnectReply MsgType = 32
	MsgDisconnect   MsgType = 33
	MsgState        MsgType = 34
	MsgContact      MsgType = 35
)

var msgNames = map[MsgType]string{
	MsgReply:        "REPLY",
	MsgStartTLS:     "STARTTLS",
	MsgBndUpd:       "BNDUPD",
	MsgBndReply:     "BNDREPLY",
	MsgPoolReq:      "POOLREQ",
	MsgPoolResp:     "POOLRESP",
	MsgUpdReq:       "UPDREQ",
	MsgUpdReqAll:    "UPDREQALL",
	MsgUpdDone:      "UPDDONE",
	MsgConnect:      "CONNECT",
	MsgConnectReply: "CONNECTREPLY",
	MsgDisconnect:   "DISCONNECT",
	MsgState:        "STATE",
	MsgContact:      "CONTACT",
}

// Known reports whether t is one of the message types this package handles.
func (t MsgType) Known() bool { _, ok := msgNames[t]; return ok }

// HasSentTime reports whether messages of type t use the 8-byte RFC 8156
// header with sent-time (types 24-35). STARTTLS and REPLY use the plain
// 4-byte header (see the package documentation).
func (t MsgType) HasSentTime() bool { return t >= MsgBndUpd && t <= MsgContact }

// HeaderLen returns the header length for messages of type t.
func (t MsgType) HeaderLen() int {
	if t.HasSentTime() {
		return FailoverHeaderLen
	}
	return PlainHeaderLen
}

// String returns the RFC name, e.g. "BNDUPD", or "MSG(n)" for unknown types.
func (t MsgType) String() string {
	if n, ok := msgNames[t]; ok {
		return n
	}
	return fmt.Sprintf("MSG(%d)", uint8(t))
}

// OptionCode is a DHCPv6 option code.
type OptionCode uint16

// Option codes used by the failover protocol. The F_ options are RFC 8156
// §5.5; the others are reused from RFC 8415, RFC 5007, RFC 4704, RFC 6607 and
// RFC 7653.
const (
	OptClientID             OptionCode = 1   // RFC 8415 §21.2
	OptIANA                 OptionCode = 3   // RFC 8415 §21.4
	OptIATA                 OptionCode = 4   // RFC 8415 §21.5
	OptIAAddr               OptionCode = 5   // RFC 8415 §21.6
	OptStatusCode           OptionCode = 13  // RFC 8415 §21.13
	OptIAPD                 OptionCode = 25  // RFC 8415 §21.21
	OptIAPrefix             OptionCode = 26  // RFC 8415 §21.22
	OptClientFQDN           OptionCode = 39  // RFC 4704
	OptClientData           OptionCode = 45  // RFC 5007 §4.1.2.2
	OptCLTTime              OptionCode = 46  // RFC 5007 §4.1.2.3
	OptLQRelayData          OptionCode = 47  // RFC 5007 §4.1.2.4
	OptVSS                  OptionCode = 68  // RFC 6607 §3.4
	OptLQBaseTime           OptionCode = 100 // RFC 7653 §6.3.1
	OptFBindingStatus       OptionCode = 114
	OptFConnectFlags        OptionCode = 115
	OptFDNSRemovalInfo      OptionCode = 116
	OptFDNSHostName         OptionCode = 117
	OptFDNSZoneName         OptionCode = 118
	OptFDNSFlags            OptionCode = 119
	OptFExpirationTime      OptionCode = 120
	OptFMaxUnackedBndUpd    OptionCode = 121
	OptFMCLT                OptionCode = 122
	OptFPartnerLifetime     OptionCode = 123
	OptFPartnerLifetimeSent OptionCode = 124
	OptFPartnerDownTime     OptionCode = 125
	OptFPartnerRawCLTTime   OptionCode = 126
	OptFProtocolVersion     OptionCode = 127
	OptFKeepaliveTime       OptionCode = 128
	OptFReconfigureData     OptionCode = 129
	OptFRelationshipName    OptionCode = 130
	OptFServerFlags         OptionCode = 131
	OptFServerState         OptionCode = 132
	OptFStartTimeOfState    OptionCode = 133
	OptFStateExpirationTime OptionCode = 134
)

var optionNames = map[OptionCode]string{
	OptClientID:             "OPTION_CLIENTID",
	OptIANA:                 "OPTION_IA_NA",
	OptIATA:                 "OPTION_IA_TA",
	OptIAAddr:               "OPTION_IAADDR",
	OptStatusCode:           "OPTION_STATUS_CODE",
	OptIAPD:                 "OPTION_IA_PD",
	OptIAPrefix:             "OPTION_IAPREFIX",
	OptClientFQDN:           "OPTION_CLIENT_FQDN",
	OptClientData:           "OPTION_CLIENT_DATA",
	OptCLTTime:              "OPTION_CLT_TIME",
	OptLQRelayData:          "OPTION_LQ_RELAY_DATA",
	OptVSS:                  "OPTION_VSS",
	OptLQBaseTime:           "OPTION_LQ_BASE_TIME",
	OptFBindingStatus:       "OPTION_F_BINDING_STATUS",
	OptFConnectFlags:        "OPTION_F_CONNECT_FLAGS",
	OptFDNSRemovalInfo:      "OPTION_F_DNS_REMOVAL_INFO",
	OptFDNSHostName:         "OPTION_F_DNS_HOST_NAME",
	OptFDNSZoneName:         "OPTION_F_DNS_ZONE_NAME",
	OptFDNSFlags:            "OPTION_F_DNS_FLAGS",
	OptFExpirationTime:      "OPTION_F_EXPIRATION_TIME",
	OptFMaxUnackedBndUpd:    "OPTION_F_MAX_UNACKED_BNDUPD",
	OptFMCLT:                "OPTION_F_MCLT",
	OptFPartnerLifetime:     "OPTION_F_PARTNER_LIFETIME",
	OptFPartnerLifetimeSent: "OPTION_F_PARTNER_LIFETIME_SENT",
	OptFPartnerDownTime:     "OPTION_F_PARTNER_DOWN_TIME",
	OptFPartnerRawCLTTime:   "OPTION_F_PARTNER_RAW_CLT_TIME",
	OptFProtocolVersion:     "OPTION_F_PROTOCOL_VERSION",
	OptFKeepaliveTime:       "OPTION_F_KEEPALIVE_TIME",
	OptFReconfigureData:     "OPTION_F_RECONFIGURE_DATA",
	OptFRelationshipName:    "OPTION_F_RELATIONSHIP_NAME",
	OptFServerFlags:         "OPTION_F_SERVER_FLAGS",
	OptFServerState:         "OPTION_F_SERVER_STATE",
	OptFStartTimeOfState:    "OPTION_F_START_TIME_OF_STATE",
	OptFStateExpirationTime: "OPTION_F_STATE_EXPIRATION_TIME",
}

// Known reports whether c is one of the option codes this package decodes
// into typed values. A known code is never carried as a RawOption (outside
// STARTTLS and REPLY, whose options are not interpreted).
func (c OptionCode) Known() bool { _, ok := optionNames[c]; return ok }

// String returns "OPTION_F_MCLT(122)", or "OPTION(n)" for codes this package
// does not know.
func (c OptionCode) String() string {
	if n, ok := optionNames[c]; ok {
		return fmt.Sprintf("%s(%d)", n, uint16(c))
	}
	return fmt.Sprintf("OPTION(%d)", uint16(c))
}

// StatusCode is an OPTION_STATUS_CODE status-code.
type StatusCode uint16

// Status codes (RFC 8415 §21.13 for 0-6, RFC 5007 for 7-10, RFC 5460 for 11,
// RFC 7653 §11 for 12-15, RFC 8156 §5.6 for 16-22).
const (
	StatusSuccess                    StatusCode = 0
	StatusUnspecFail                 StatusCode = 1
	StatusNoAddrsAvail               StatusCode = 2
	StatusNoBinding                  StatusCode = 3
	StatusNotOnLink                  StatusCode = 4
	StatusUseMulticast               StatusCode = 5
	StatusNoPrefixAvail              StatusCode = 6
	StatusUnknownQueryType           StatusCode = 7
	StatusMalformedQuery             StatusCode = 8
	StatusNotConfigured              StatusCode = 9
	StatusNotAllowed                 StatusCode = 10
	StatusQueryTerminated            StatusCode = 11
	StatusDataMissing                StatusCode = 12
	StatusCatchUpComplete            StatusCode = 13
	StatusNotSupported               StatusCode = 14
	StatusTLSConnectionRefused       StatusCode = 15
	StatusAddressInUse               StatusCode = 16
	StatusConfigurationConflict      StatusCode = 17
	StatusMissingBindingInformation  StatusCode = 18
	StatusOutdatedBindingInformation StatusCode = 19
	StatusServerShuttingDown         StatusCode = 20
	StatusDNSUpdateNotSupported      StatusCode = 21
	StatusExcessiveTimeSkew          StatusCode = 22
)

var statusCodeNames = [...]string{
	StatusSuccess:                    "Success",
	StatusUnspecFail:                 "UnspecFail",
	StatusNoAddrsAvail:               "NoAddrsAvail",
	StatusNoBinding:                  "NoBinding",
	StatusNotOnLink:                  "NotOnLink",
	StatusUseMulticast:               "UseMulticast",
	StatusNoPrefixAvail:              "NoPrefixAvail",
	StatusUnknownQueryType:           "UnknownQueryType",
	StatusMalformedQuery:             "MalformedQuery",
	StatusNotConfigured:              "NotConfigured",
	StatusNotAllowed:                 "NotAllowed",
	StatusQueryTerminated:            "QueryTerminated",
	StatusDataMissing:                "DataMissing",
	StatusCatchUpComplete:            "CatchUpComplete",
	StatusNotSupported:               "NotSupported",
	StatusTLSConnectionRefused:       "TLSConnectionRefused",
	StatusAddressInUse:               "AddressInUse",
	StatusConfigurationConflict:      "ConfigurationConflict",
	StatusMissingBindingInformation:  "MissingBindingInformation",
	StatusOutdatedBindingInformation: "OutdatedBindingInformation",
	StatusServerShuttingDown:         "ServerShuttingDown",
	StatusDNSUpdateNotSupported:      "DNSUpdateNotSupported",
	StatusExcessiveTimeSkew:          "ExcessiveTimeSkew",
}

// String returns the registry name, e.g. "OutdatedBindingInformation", or
// "Status(n)".
func (c StatusCode) String() string {
	if int(c) < len(statusCodeNames) {
		return statusCodeNames[c]
	}
	return fmt.Sprintf("Status(%d)", uint16(c))
}

// ServerState is an RFC 8156 failover endpoint state (OPTION_F_SERVER_STATE,
// §5.5.16). The numeric values are the ones on the wire.
type ServerState uint8

// Endpoint states. StateStartup is never sent (RFC 8156 §5.5.16 note 1): a
// server in STARTUP sends its previously recorded state with the STARTUP
// server flag.
const (
	StateStartup               ServerState = 1
	StateNormal                ServerState = 2
	StateCommInterrupted       ServerState = 3
	StatePartnerDown           ServerState = 4
	StatePotentialConflict     ServerState = 5
	StateRecover               ServerState = 6
	StateRecoverWait           ServerState = 7
	StateRecoverDone           ServerState = 8
	StateResolutionInterrupted ServerState = 9
	StateConflictDone          ServerState = 10

	maxServerState = StateConflictDone
)

var serverStateNames = [...]string{
	0:                          "NONE",
	StateStartup:               "STARTUP",
	StateNormal:                "NORMAL",
	StateCommInterrupted:       "COMMUNICATIONS-INTERRUPTED",
	StatePartnerDown:           "PARTNER-DOWN",
	StatePotentialConflict:     "POTENTIAL-CONFLICT",
	StateRecover:               "RECOVER",
	StateRecoverWait:           "RECOVER-WAIT",
	StateRecoverDone:           "RECOVER-DONE",
	StateResolutionInterrupted: "RESOLUTION-INTERRUPTED",
	StateConflictDone:          "CONFLICT-DONE",
}

// Valid reports whether s is one of the ten RFC 8156 states.
func (s ServerState) Valid() bool { return s >= StateStartup && s <= maxServerState }

// String returns the RFC name, e.g. "COMMUNICATIONS-INTERRUPTED".
func (s ServerState) String() string {
	if int(s) < len(serverStateNames) {
		return serverStateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// ParseServerState parses an RFC state name (case-insensitive).
func ParseServerState(name string) (ServerState, error) {
	for s := StateStartup; s <= maxServerState; s++ {
		if strings.EqualFold(serverStateNames[s], name) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown failover state %q", name)
}

// BindingStatus is an RFC 8156 binding-status (OPTION_F_BINDING_STATUS,
// §5.5.1). The values and names are the same as fsm.Status, so a conversion
// fsm.Status(b) is exact; this package does not import fsm.
type BindingStatus uint8

// Binding-status values. 0 is reserved on the wire; in this package's types
// it means "absent".
const (
	BindingActive      BindingStatus = 1
	BindingExpired     BindingStatus = 2
	BindingReleased    BindingStatus = 3
	BindingPendingFree BindingStatus = 4
	BindingFree        BindingStatus = 5
	BindingFreeBackup  BindingStatus = 6
	BindingAbandoned   BindingStatus = 7
	BindingReset       BindingStatus = 8

	maxBindingStatus = BindingReset
)

var bindingStatusNames = [...]string{
	0:                  "NONE",
	BindingActive:      "ACTIVE",
	BindingExpired:     "EXPIRED",
	BindingReleased:    "RELEASED",
	BindingPendingFree: "PENDING-FREE",
	BindingFree:        "FREE",
	BindingFreeBackup:  "FREE-BACKUP",
	BindingAbandoned:   "ABANDONED",
	BindingReset:       "RESET",
}

// Valid reports whether b is one of the eight RFC 8156 values.
func (b BindingStatus) Valid() bool { return b >= BindingActive && b <= maxBindingStatus }

// String returns the RFC name, e.g. "FREE-BACKUP".
func (b BindingStatus) String() string {
	if int(b) < len(bindingStatusNames) {
		return bindingStatusNames[b]
	}
	return fmt.Sprintf("STATUS(%d)", uint8(b))
}

// ServerFlags is OPTION_F_SERVER_FLAGS (RFC 8156 §5.5.15). Bits are numbered
// from the most significant bit: bits 0-4 must be zero, 5 = A, 6 = S, 7 = C.
type ServerFlags uint8

// Server flag bits.
const (
	ServerFlagCommunicated ServerFlags = 0x01 // C, bit 7: the sender has communicated with its partner
	ServerFlagStartup      ServerFlags = 0x02 // S, bit 6: the sender is in STARTUP
	ServerFlagAckStartup   ServerFlags = 0x04 // A, bit 5: the last flags received had STARTUP set

	knownServerFlags = ServerFlagCommunicated | ServerFlagStartup | ServerFlagAckStartup
)

// Unknown returns the must-be-zero bits that are set. The decoder keeps them
// (a later protocol version may define them); deciding what to do is the
// caller's business.
func (f ServerFlags) Unknown() ServerFlags { return f &^ knownServerFlags }

// String lists the set flags, e.g. "STARTUP|COMMUNICATED".
func (f ServerFlags) String() string {
	return flagString(uint64(f), []flagName{
		{uint64(ServerFlagAckStartup), "ACK_STARTUP"},
		{uint64(ServerFlagStartup), "STARTUP"},
		{uint64(ServerFlagCommunicated), "COMMUNICATED"},
	})
}

// ConnectFlags is OPTION_F_CONNECT_FLAGS (RFC 8156 §5.5.2). Bits 0-14 (from
// the most significant bit) must be zero; bit 15 is FIXED_PD_LENGTH.
type ConnectFlags uint16

// Connect flag bits.
const (
	ConnectFlagFixedPDLength ConnectFlags = 0x0001 // F: all prefixes delegated from one delegable prefix have the same length

	knownConnectFlags = ConnectFlagFixedPDLength
)

// Unknown returns the must-be-zero bits that are set (kept by the decoder).
func (f ConnectFlags) Unknown() ConnectFlags { return f &^ knownConnectFlags }

// String lists the set flags.
func (f ConnectFlags) String() string {
	return flagString(uint64(f), []flagName{{uint64(ConnectFlagFixedPDLength), "FIXED_PD_LENGTH"}})
}

// DNSFlags is OPTION_F_DNS_FLAGS (RFC 8156 §5.5.3.3). Bits 0-11 must be zero;
// 12 = U, 13 = S, 14 = R, 15 = F.
type DNSFlags uint16

// DNS flag bits.
const (
	DNSFlagFwdUpToDate        DNSFlags = 0x0001 // F: forward zone up to date
	DNSFlagRevUpToDate        DNSFlags = 0x0002 // R: reverse zone up to date
	DNSFlagSynthesizedName    DNSFlags = 0x0004 // S: name synthesized by the server
	DNSFlagUsingRequestedFQDN DNSFlags = 0x0008 // U: name came from the client's FQDN

	knownDNSFlags = DNSFlagFwdUpToDate | DNSFlagRevUpToDate | DNSFlagSynthesizedName | DNSFlagUsingRequestedFQDN
)

// Unknown returns the must-be-zero bits that are set (kept by the decoder).
func (f DNSFlags) Unknown() DNSFlags { return f &^ knownDNSFlags }

// String lists the set flags.
func (f DNSFlags) String() string {
	return flagString(uint64(f), []flagName{
		{uint64(DNSFlagUsingRequestedFQDN), "USING_REQUESTED_FQDN"},
		{uint64(DNSFlagSynthesizedName), "SYNTHESIZED_NAME"},
		{uint64(DNSFlagRevUpToDate), "REV_UPTODATE"},
		{uint64(DNSFlagFwdUpToDate), "FWD_UPTODATE"},
	})
}

type flagName struct {
	bit  uint64
	name string
}

func flagString(v uint64, names []flagName) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	for _, n := range names {
		if v&n.bit != 0 {
			parts = append(parts, n.name)
			v &^= n.bit
		}
	}
	if v != 0 {
		parts = append(parts, fmt.Sprintf("%#x", v))
	}
	return strings.Join(parts, "|")
}

// IAType says which kind of identity association an IA is. Its values are
// the option codes of OPTION_IA_NA, OPTION_IA_TA and OPTION_IA_PD.
type IAType uint16

// IA types.
const (
	IANA IAType = IAType(OptIANA)
	IATA IAType = IAType(OptIATA)
	IAPD IAType = IAType(OptIAPD)
)

// Valid reports whether t is IANA, IATA or IAPD.
func (t IAType) Valid() bool { return t == IANA || t == IATA || t == IAPD }

// String returns "IA_NA", "IA_TA", "IA_PD" or "IA(n)".
func (t IAType) String() string {
	switch t {
	case IANA:
		return "IA_NA"
	case IATA:
		return "IA_TA"
	case IAPD:
		return "IA_PD"
	}
	return fmt.Sprintf("IA(%d)", uint16(t))
}

// leaseCode is the option code of the leases an IA of type t holds.
func (t IAType) leaseCode() OptionCode {
	if t == IAPD {
		return OptIAPrefix
	}
	return OptIAAddr
}

// fixedLen is the length of the IA option's fixed fields.
func (t IAType) fixedLen() int {
	if t == IATA {
		return 4
	}
	return 12
}

// ProtocolVersion is OPTION_F_PROTOCOL_VERSION (RFC 8156 §5.5.11).
type ProtocolVersion struct {
	Major, Minor uint16
}

// Version1 is the protocol version RFC 8156 defines: 1.0.
var Version1 = ProtocolVersion{Major: 1, Minor: 0}

// String returns "major.minor".
func (v ProtocolVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }
