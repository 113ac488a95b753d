package wire

import "net/netip"

// Option is one top-level option of a Message. The concrete types are the
// ones in this package (the interface is sealed):
//
//	*ClientData        OPTION_CLIENT_DATA (BNDUPD, BNDREPLY)
//	*LonePrefix        OPTION_IAPREFIX outside any CLIENT_DATA (BNDUPD, BNDREPLY)
//	Status             OPTION_STATUS_CODE (any message)
//	ProtocolVersion    OPTION_F_PROTOCOL_VERSION (CONNECT, CONNECTREPLY)
//	MCLT               OPTION_F_MCLT (CONNECT, CONNECTREPLY)
//	KeepaliveTime      OPTION_F_KEEPALIVE_TIME (CONNECT, CONNECTREPLY)
//	MaxUnackedBndUpd   OPTION_F_MAX_UNACKED_BNDUPD (CONNECT, CONNECTREPLY)
//	RelationshipName   OPTION_F_RELATIONSHIP_NAME (CONNECT, CONNECTREPLY)
//	ConnectFlags       OPTION_F_CONNECT_FLAGS (CONNECT, CONNECTREPLY)
//	ServerState        OPTION_F_SERVER_STATE (STATE)
//	ServerFlags        OPTION_F_SERVER_FLAGS (STATE)
//	StartTimeOfState   OPTION_F_START_TIME_OF_STATE (STATE)
//	PartnerDownTime    OPTION_F_PARTNER_DOWN_TIME (STATE)
//	RawOption          any option code this package does not know
type Option interface {
	// OptionCode returns the option code.
	OptionCode() OptionCode
	isOption()
}

// MCLT is OPTION_F_MCLT (RFC 8156 §5.5.6): the maximum client lead time, an
// interval in seconds.
type MCLT uint32

// KeepaliveTime is OPTION_F_KEEPALIVE_TIME (RFC 8156 §5.5.12): seconds within
// which the sender must receive a message from its partner.
type KeepaliveTime uint32

// MaxUnackedBndUpd is OPTION_F_MAX_UNACKED_BNDUPD (RFC 8156 §5.5.5).
type MaxUnackedBndUpd uint32

// RelationshipName is OPTION_F_RELATIONSHIP_NAME (RFC 8156 §5.5.14): UTF-8,
// non-empty, with no NUL byte (so in particular not NUL-terminated).
type RelationshipName string

// StartTimeOfState is OPTION_F_START_TIME_OF_STATE at the top level of a
// STATE message (RFC 8156 §5.5.17): absolute failover time (see ToFOTime).
type StartTimeOfState uint32

// PartnerDownTime is OPTION_F_PARTNER_DOWN_TIME (RFC 8156 §5.5.9): absolute
// failover time.
type PartnerDownTime uint32

// Status is OPTION_STATUS_CODE (RFC 8415 §21.13). Message is carried
// verbatim: the RFC asks for UTF-8 without a terminating NUL, but it is
// display text only, so neither the decoder nor the encoder checks it.
type Status struct {
	Code    StatusCode
	Message string
}

// IsError reports whether the status rejects what contains it (RFC 8156
// §7.6: a Success status is informational only).
func (s Status) IsError() bool { return s.Code != StatusSuccess }

// String returns "Code" or "Code: message".
func (s Status) String() string {
	if s.Message == "" {
		return s.Code.String()
	}
	return s.Code.String() + ": " + s.Message
}

// RawOption is an option this package does not interpret, kept so that it
// can be forwarded or logged. Data is nil when empty.
type RawOption struct {
	Code OptionCode
	Data []byte
}

// OptionCode implements Option for each option type.
func (MCLT) OptionCode() OptionCode             { return OptFMCLT }
func (KeepaliveTime) OptionCode() OptionCode    { return OptFKeepaliveTime }
func (MaxUnackedBndUpd) OptionCode() OptionCode { return OptFMaxUnackedBndUpd }
func (RelationshipName) OptionCode() OptionCode { return OptFRelationshipName }
func (StartTimeOfState) OptionCode() OptionCode { return OptFStartTimeOfState }
func (PartnerDownTime) OptionCode() OptionCode  { return OptFPartnerDownTime }
func (Status) OptionCode() OptionCode           { return OptStatusCode }
func (ProtocolVersion) OptionCode() OptionCode  { return OptFProtocolVersion }
func (ConnectFlags) OptionCode() OptionCode     { return OptFConnectFlags }
func (ServerState) OptionCode() OptionCode      { return OptFServerState }
func (ServerFlags) OptionCode() OptionCode      { return OptFServerFlags }
func (*ClientData) OptionCode() OptionCode      { return OptClientData }
func (*LonePrefix) OptionCode() OptionCode      { return OptIAPrefix }
func (o RawOption) OptionCode() OptionCode      { return o.Code }

func (MCLT) isOption()             {}
func (KeepaliveTime) isOption()    {}
func (MaxUnackedBndUpd) isOption() {}
func (RelationshipName) isOption() {}
func (StartTimeOfState) isOption() {}
func (PartnerDownTime) isOption()  {}
func (Status) isOption()           {}
func (ProtocolVersion) isOption()  {}
func (ConnectFlags) isOption()     {}
func (ServerState) isOption()      {}
func (ServerFlags) isOption()      {}
func (*ClientData) isOption()      {}
func (*LonePrefix) isOption()      {}
func (RawOption) isOption()        {}

// ClientData is OPTION_CLIENT_DATA (RFC 5007 §4.1.2.2) as RFC 8156 §7.4
// and §7.6 fill it: all of one client's bindings.
//
// Pointer and slice fields are nil when the option is absent. Required in a
// BNDUPD: ClientID, BaseTime and at least one IA. Required in a BNDREPLY:
// ClientID.
type ClientData struct {
	// ClientID is the client's DUID (OPTION_CLIENTID), 3..130 bytes.
	ClientID []byte
	// BaseTime is OPTION_LQ_BASE_TIME: the absolute failover time at which
	// the sender built this record; OPTION_CLT_TIME values are relative to it.
	BaseTime *uint32
	// VSS is the OPTION_VSS payload (RFC 6607: type octet, VPN identifier),
	// present if and only if the binding is in a non-default VPN.
	VSS []byte
	// Status is an OPTION_STATUS_CODE for the whole record (BNDREPLY).
	Status *Status
	// Reconfigure is OPTION_F_RECONFIGURE_DATA.
	Reconfigure *ReconfigureData
	// Relay is OPTION_LQ_RELAY_DATA.
	Relay *RelayData
	// IAs are the OPTION_IA_NA, OPTION_IA_TA and OPTION_IA_PD options, in order.
	IAs []IA
	// Extra holds options of unknown codes, in order.
	Extra []RawOption
}

// ReconfigureData is OPTION_F_RECONFIGURE_DATA (RFC 8156 §5.5.13).
type ReconfigureData struct {
	Time uint32 // absolute failover time at which the key was created
	Key  []byte // the reconfigure key (nil when empty)
}

// RelayData is OPTION_LQ_RELAY_DATA (RFC 5007 §4.1.2.4).
type RelayData struct {
	PeerAddr netip.Addr // 16-byte form (always Is6)
	// RelayMessage is the last RELAY-FORW received for the client, without
	// the client's message; carried verbatim (nil when empty).
	RelayMessage []byte
}

// IA is an OPTION_IA_NA, OPTION_IA_TA or OPTION_IA_PD inside a ClientData.
type IA struct {
	Type IAType
	IAID uint32
	// T1 and T2 as sent to the client. Always 0 for IA_TA, which has no
	// such fields.
	T1, T2 uint32
	// Leases are the OPTION_IAADDR (IA_NA, IA_TA) or OPTION_IAPREFIX (IA_PD)
	// options, in order.
	Leases []Lease
	// Status rejects everything in this IA (BNDREPLY, RFC 8156 §7.7).
	Status *Status
	Extra  []RawOption
}

// Lease is one OPTION_IAADDR or OPTION_IAPREFIX inside an IA, with the
// per-lease failover options RFC 8156 §7.4 and §7.6 put in its
// IAaddr-options or IAprefix-options. Times marked "abs" are absolute
// failover times (see ToFOTime); pointer fields are nil when absent.
//
// Required in a BNDUPD: BindingStatus and StartTimeOfState.
type Lease struct {
	// Prefix is the address as a /128 (IAADDR), or the delegated prefix
	// (IAPREFIX, no bits set beyond its length).
	Prefix netip.Prefix
	// Preferred and Valid are the lifetimes sent to the client, in seconds.
	Preferred, Valid uint32

	// Status is a per-lease OPTION_STATUS_CODE (BNDREPLY).
	Status *Status
	// BindingStatus is OPTION_F_BINDING_STATUS; 0 means absent.
	BindingStatus BindingStatus
	// StartTimeOfState is OPTION_F_START_TIME_OF_STATE (abs).
	StartTimeOfState *uint32
	// StateExpirationTime is OPTION_F_STATE_EXPIRATION_TIME (abs).
	StateExpirationTime *uint32
	// CLTTime is OPTION_CLT_TIME: seconds before BaseTime at which the sender
	// last talked to the client (relative, RFC 5007 §4.1.2.3).
	CLTTime *uint32
	// PartnerLifetime is OPTION_F_PARTNER_LIFETIME (abs).
	PartnerLifetime *uint32
	// PartnerRawCLTTime is OPTION_F_PARTNER_RAW_CLT_TIME (abs).
	PartnerRawCLTTime *uint32
	// ExpirationTime is OPTION_F_EXPIRATION_TIME (abs).
	ExpirationTime *uint32
	// PartnerLifetimeSent is OPTION_F_PARTNER_LIFETIME_SENT (abs, BNDREPLY).
	PartnerLifetimeSent *uint32
	// FQDN is the OPTION_CLIENT_FQDN payload (RFC 4704: flags octet, domain
	// name), carried verbatim.
	FQDN []byte
	// DNSRemoval is OPTION_F_DNS_REMOVAL_INFO.
	DNSRemoval *DNSRemovalInfo
	Extra      []RawOption
}

// Addr returns the lease's address (the first address of a prefix).
func (l *Lease) Addr() netip.Addr { return l.Prefix.Addr() }

// LonePrefix is an OPTION_IAPREFIX outside any OPTION_CLIENT_DATA: a
// delegable prefix that belongs to no client (RFC 8156 §7.4 form (2)),
// e.g. FREE-BACKUP sent to the secondary. Besides the lease fields it may
// carry OPTION_VSS and OPTION_LQ_BASE_TIME; it never carries client
// information (CLT_TIME, PARTNER_RAW_CLT_TIME, CLIENT_FQDN, DNS removal
// info).
//
// Required in a BNDUPD: BaseTime, BindingStatus and StartTimeOfState.
type LonePrefix struct {
	Lease
	VSS      []byte
	BaseTime *uint32
}

// DNSRemovalInfo is OPTION_F_DNS_REMOVAL_INFO (RFC 8156 §5.5.3). The names
// are in RFC 1035 wire format (see EncodeDomainName); all fields optional.
type DNSRemovalInfo struct {
	HostName []byte    // OPTION_F_DNS_HOST_NAME
	ZoneName []byte    // OPTION_F_DNS_ZONE_NAME
	Flags    *DNSFlags // OPTION_F_DNS_FLAGS
	Extra    []RawOption
}

// U32 returns a pointer to v, for the optional fields.
func U32(v uint32) *uint32 { return &v }
