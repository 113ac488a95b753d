// Package wire is the RFC 8156 (DHCPv6 failover) byte format: TCP framing,
// the message header, message types, options, status codes and the
// failover time encoding. It turns bytes into typed messages and back.
//
// It owns:
//   - framing (RFC 5460 §5.1): Reader.ReadFrame, AppendFrame, Writer;
//   - the header (RFC 8156 §5.2) and the failover time format (ToFOTime,
//     FromFOTime, CompareFOTime and friends);
//   - the typed model of every message and option the protocol uses
//     (Message, ClientData, IA, Lease, LonePrefix, ...), the strict decoder
//     DecodeMessage and the canonical encoder Message.Encode.
//
// It must never: open or touch a socket, keep state between calls (Reader
// and Writer hold only a buffer and a sticky error), read a clock (callers
// pass times in), import another Tandem package (in particular not fsm:
// BindingStatus has fsm.Status's values and names, so conversion is a cast),
// panic on any input, or allocate more than the input implies.
//
// # Header choice for STARTTLS and REPLY
//
// RFC 8156 §6.1 sends RFC 7653's STARTTLS (23) before CONNECT, answered by a
// REPLY (7), but does not say whether these two carry the failover header
// with sent-time (digest Appendix A item 9). This package uses the plain
// RFC 5460 / RFC 8415 header for them, as RFC 7653 defines them: msg-type
// (1 byte) and a 24-bit transaction-id, 4 bytes in all, no sent-time. Types
// 24-35 use the 8-byte RFC 8156 header. The msg-type byte therefore tells the
// header length (MsgType.HeaderLen); Header.SentTime must be 0 for STARTTLS
// and REPLY. STARTTLS options are kept as RawOption without interpretation
// (RFC 7653 §6.2.2: they SHOULD be ignored); in a REPLY only
// OPTION_STATUS_CODE is interpreted. After an accepting REPLY the TLS
// handshake runs on the same TCP connection: check Reader.Buffered is 0
// before handing the connection to crypto/tls, then frame over the TLS
// connection with a new Reader and Writer.
//
// # What DecodeMessage checks
//
// Structure: the msg-type is REPLY, STARTTLS or 24-35 (else
// ErrUnknownMessageType); the header is complete; the message is at most
// 65535 bytes; every option header and option-len fits inside its container;
// fixed-size options have exactly their size (OPTION_F_BINDING_STATUS 1,
// OPTION_F_CONNECT_FLAGS 2, the 32-bit times and counts 4, ...) and
// variable ones at least their minimum.
//
// Placement: a known option must sit in a container that may hold it
// (ErrWrongContainer):
//
//	top level    by message type: CONNECT/CONNECTREPLY: PROTOCOL_VERSION,
//	             MCLT, KEEPALIVE_TIME, MAX_UNACKED_BNDUPD, RELATIONSHIP_NAME,
//	             CONNECT_FLAGS; STATE: SERVER_STATE, SERVER_FLAGS,
//	             START_TIME_OF_STATE, PARTNER_DOWN_TIME; BNDUPD/BNDREPLY:
//	             CLIENT_DATA or IAPREFIX; every message: STATUS_CODE
//	CLIENT_DATA  CLIENTID, LQ_BASE_TIME, VSS, STATUS_CODE, RECONFIGURE_DATA,
//	             LQ_RELAY_DATA, IA_NA, IA_TA, IA_PD
//	IA_NA, IA_TA IAADDR, STATUS_CODE;  IA_PD: IAPREFIX, STATUS_CODE
//	IAADDR/IAPREFIX in an IA: STATUS_CODE, F_BINDING_STATUS,
//	             F_START_TIME_OF_STATE, F_STATE_EXPIRATION_TIME, CLT_TIME,
//	             F_PARTNER_LIFETIME, F_PARTNER_RAW_CLT_TIME,
//	             F_EXPIRATION_TIME, F_PARTNER_LIFETIME_SENT, CLIENT_FQDN,
//	             F_DNS_REMOVAL_INFO
//	lone IAPREFIX VSS, LQ_BASE_TIME, STATUS_CODE, F_BINDING_STATUS,
//	             F_START_TIME_OF_STATE, F_STATE_EXPIRATION_TIME,
//	             F_PARTNER_LIFETIME, F_EXPIRATION_TIME, F_PARTNER_LIFETIME_SENT
//	F_DNS_REMOVAL_INFO  F_DNS_HOST_NAME, F_DNS_ZONE_NAME, F_DNS_FLAGS
//
// A container option at depth MaxDepth or deeper is ErrTooDeep. Within one
// container each known option appears at most once, except the IAs in a
// CLIENT_DATA and the leases in an IA; two IAs of one type with the same
// IAID, or the same address or prefix twice in one CLIENT_DATA, are also
// ErrDuplicateOption.
//
// Values: a DUID is 3..130 bytes; the relationship name is non-empty UTF-8
// without NUL; binding-status is 1..8; server-state is 2..10 (STARTUP is
// never sent, §5.5.16); an IAADDR is in an IA_NA or IA_TA and an IAPREFIX
// in an IA_PD; a prefix has length 0..128 and no bits set beyond it; DNS
// names are uncompressed, fully qualified RFC 1035 wire format; VSS and
// CLIENT_FQDN are non-empty.
//
// Required options (ErrMissingOption), RFC 8156 §6.1.1-§6.3 and §7.4-§7.6:
//
//	CONNECT                PROTOCOL_VERSION, MCLT, KEEPALIVE_TIME,
//	                       MAX_UNACKED_BNDUPD, CONNECT_FLAGS
//	CONNECTREPLY           the same, unless it carries an error status
//	                       (a rejection needs only the status)
//	STATE                  SERVER_STATE, SERVER_FLAGS, START_TIME_OF_STATE;
//	                       PARTNER_DOWN_TIME when the state is PARTNER-DOWN
//	                       (unless the STARTUP flag is set) and never
//	                       otherwise
//	BNDUPD, BNDREPLY       exactly one CLIENT_DATA or one lone IAPREFIX
//	BNDUPD CLIENT_DATA     CLIENTID, LQ_BASE_TIME, at least one IA, each IA
//	                       at least one lease, each lease F_BINDING_STATUS
//	                       and F_START_TIME_OF_STATE
//	BNDUPD lone IAPREFIX   LQ_BASE_TIME, F_BINDING_STATUS,
//	                       F_START_TIME_OF_STATE
//	BNDREPLY CLIENT_DATA   CLIENTID (the echoes are the failover layer's
//	                       business: a rejected record may lack them)
//
// Not checked here (the failover layer's job): that STATE_EXPIRATION_TIME,
// PARTNER_LIFETIME and EXPIRATION_TIME appear exactly when the status has a
// timeout (which statuses have one is implementation-defined, §7.2); that
// OPTION_VSS names a configured VPN; transaction-id matching; time skew.
//
// # Forward compatibility
//
// Options with codes this package does not know are kept as RawOption, in
// order: at the top level of every message and inside every container
// (Extra fields). RFC 8156 does not forbid unknown options, and the
// digest's recommendation for the option-less messages is to ignore them.
// Known codes are never carried raw (except in STARTTLS and REPLY), so each
// message has one typed form. Must-be-zero bits of SERVER_FLAGS,
// CONNECT_FLAGS and DNS_FLAGS are kept as received (the RFC defines no
// receiver behaviour; see the Unknown methods). Unknown message types are
// refused with ErrUnknownMessageType so the caller can log and skip them.
// OPTION_STATUS_CODE messages are carried verbatim, not checked for UTF-8.
//
// # Canonical encoding
//
// Encode writes top-level options in Message.Options order. Inside a
// container the order is fixed: CLIENT_DATA: CLIENTID, LQ_BASE_TIME, VSS,
// STATUS_CODE, RECONFIGURE_DATA, LQ_RELAY_DATA, IAs; IA: fixed fields,
// leases, STATUS_CODE; lease: fixed fields, (lone prefix: VSS,
// LQ_BASE_TIME), STATUS_CODE, F_BINDING_STATUS, F_START_TIME_OF_STATE,
// F_STATE_EXPIRATION_TIME, CLT_TIME, F_PARTNER_LIFETIME,
// F_PARTNER_RAW_CLT_TIME, F_EXPIRATION_TIME, F_PARTNER_LIFETIME_SENT,
// CLIENT_FQDN, F_DNS_REMOVAL_INFO; unknown options last in every
// container. Received options may come in any order.
//
// # RFC text versus the digest (/work/shared/spec/rfc8156-digest.md)
//
// Where they differ the RFC wins; each case and the reading taken:
//
//  1. OPTION_F_START_TIME_OF_STATE placement. RFC 8156 §5.5.17 says that
//     inside a binding it appears in IA_NA-options, IA_TA-options or
//     IA_PD-options; §7.4 (and Figure 5, and the digest §3.3/§3.4) put it in
//     IAaddr-options / IAprefix-options, next to the binding-status it
//     dates. The RFC contradicts itself; this package follows §7.4, the
//     normative BNDUPD layout, since the binding-status is per lease. An
//     F_START_TIME_OF_STATE directly in an IA is ErrWrongContainer. The
//     digest does not mention the conflict.
//  2. OPTION_CLT_TIME placement. RFC 5007 puts it in client-options; RFC
//     8156 §7.4 puts it per lease in IAaddr-options (the digest agrees). The
//     decoder follows RFC 8156: OPTION_CLT_TIME directly in CLIENT_DATA is
//     ErrWrongContainer. (The brief's sketch had ClientData.CLTTime; the
//     typed model has Lease.CLTTime instead.)
//  3. Status code levels in BNDREPLY. RFC 8156 §7.6 names two levels of
//     rejection (the outermost CLIENT_DATA/IAPREFIX, and a single
//     IAADDR/IAPREFIX), §7.7 adds a third (an IA_NA/IA_TA/IA_PD); the digest
//     §3.4 lists all three as if uncontested. STATUS_CODE is accepted at all
//     three levels (ClientData.Status, IA.Status, Lease.Status).
//  4. STATE in STARTUP with a recorded state of PARTNER-DOWN. §6.3 requires
//     PARTNER_DOWN_TIME "if this server is in PARTNER-DOWN state"; a server
//     in STARTUP that reports PARTNER-DOWN as its previous state (§8.3.1) is
//     not in it. The digest (§3.4, M5) says "exactly when in PARTNER-DOWN".
//     The decoder requires the option for PARTNER-DOWN only when the STARTUP
//     flag is clear, allows it either way when set, and refuses it with any
//     other state ("do not include this option").
//  5. The digest's §3.2 table gives OPTION_LQ_BASE_TIME as "absolute time";
//     RFC 7653 §6.3.1 says "seconds since midnight January 1, 2000 UTC"
//     without RFC 8156's "modulo 2^32". Same encoding in practice; treated
//     as a failover absolute time (ToFOTime).
//  6. The brief asked to check status 14: it is NotSupported (RFC 7653 §11,
//     with DataMissing 12, CatchUpComplete 13, TLSConnectionRefused 15);
//     RFC 8156 §5.6 defines 16-22. All codes, message types 24-35 and option
//     codes 114-134 in the digest match RFC 8156 §5.5 and §11.
//
// Where the RFC is silent this package also decides (documented above):
// the STARTTLS/REPLY header; OPTION_STATUS_CODE allowed at the top level of
// every message; OPTION_F_DNS_REMOVAL_INFO per lease next to
// OPTION_CLIENT_FQDN (digest Appendix A item 10); no client information in
// a lone IAPREFIX.
package wire
