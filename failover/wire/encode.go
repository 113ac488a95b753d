package wire

import (
	"encoding/binary"
	"fmt"
)

// Encode returns the canonical encoding of m: the header, then the top-level
// options in order; inside containers, options in the fixed order documented
// in the package documentation, unknown (raw) options last. It refuses (with
// an *Error) any message DecodeMessage would refuse, and any message longer
// than MaxMessageSize (ErrFrameTooLarge), so that DecodeMessage(Encode(m))
// succeeds and equals m up to nil-versus-empty slices.
func (m *Message) Encode() ([]byte, error) { return m.AppendTo(nil) }

// AppendTo appends the encoding of m to dst. On error it returns dst
// unchanged.
func (m *Message) AppendTo(dst []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, byte(m.Type), byte(m.XID>>16), byte(m.XID>>8), byte(m.XID))
	if m.Type.HasSentTime() {
		dst = binary.BigEndian.AppendUint32(dst, m.SentTime)
	}
	for _, o := range m.Options {
		dst = appendTop(dst, o)
	}
	if n := len(dst) - start; n > MaxMessageSize {
		return dst[:start], &Error{Kind: ErrFrameTooLarge, MsgType: m.Type, Offset: -1,
			Detail: fmt.Sprintf("encoded message is %d bytes; the maximum is %d", n, MaxMessageSize)}
	}
	return dst, nil
}

// AppendFrame appends m, encoded and framed for the TCP stream (2-byte
// message-size, then the message), to dst. On error it returns dst
// unchanged.
func (m *Message) AppendFrame(dst []byte) ([]byte, error) {
	start := len(dst)
	out, err := m.AppendTo(append(dst, 0, 0))
	if err != nil {
		return dst[:start], err
	}
	binary.BigEndian.PutUint16(out[start:], uint16(len(out)-start-2))
	return out, nil
}

// begin starts an option; end patches its length. A length over 65535 can
// only occur in a message over MaxMessageSize, which AppendTo refuses.
func begin(dst []byte, code OptionCode) ([]byte, int) {
	return append(dst, byte(code>>8), byte(code), 0, 0), len(dst)
}

func end(dst []byte, mark int) []byte {
	binary.BigEndian.PutUint16(dst[mark+2:], uint16(len(dst)-mark-4))
	return dst
}

func appendBytes(dst []byte, code OptionCode, b []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}

func appendU32(dst []byte, code OptionCode, v uint32) []byte {
	dst = append(dst, byte(code>>8), byte(code), 0, 4)
	return binary.BigEndian.AppendUint32(dst, v)
}

func appendU32p(dst []byte, code OptionCode, v *uint32) []byte {
	if v == nil {
		return dst
	}
	return appendU32(dst, code, *v)
}

func appendU16(dst []byte, code OptionCode, v uint16) []byte {
	dst = append(dst, byte(code>>8), byte(code), 0, 2)
	return binary.BigEndian.AppendUint16(dst, v)
}

func appendU8(dst []byte, code OptionCode, v uint8) []byte {
	return append(dst, byte(code>>8), byte(code), 0, 1, v)
}

func appendStatus(dst []byte, st *Status) []byte {
	if st == nil {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(OptStatusCode))
	dst = binary.BigEndian.AppendUint16(dst, uint16(2+len(st.Message)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(st.Code))
	return append(dst, st.Message...)
}

func appendRaw(dst []byte, opts []RawOption) []byte {
	for _, o := range opts {
		dst = appendBytes(dst, o.Code, o.Data)
	}
	return dst
}

func appendTop(dst []byte, o Option) []byte {
	switch o := o.(type) {
	case RawOption:
		return appendBytes(dst, o.Code, o.Data)
	case Status:
		return appendStatus(dst, &o)
	case ProtocolVersion:
		dst = append(dst, byte(OptFProtocolVersion>>8), byte(OptFProtocolVersion), 0, 4)
		dst = binary.BigEndian.AppendUint16(dst, o.Major)
		return binary.BigEndian.AppendUint16(dst, o.Minor)
	case MCLT:
		return appendU32(dst, OptFMCLT, uint32(o))
	case KeepaliveTime:
		return appendU32(dst, OptFKeepaliveTime, uint32(o))
	case MaxUnackedBndUpd:
		return appendU32(dst, OptFMaxUnackedBndUpd, uint32(o))
	case StartTimeOfState:
		return appendU32(dst, OptFStartTimeOfState, uint32(o))
	case PartnerDownTime:
		return appendU32(dst, OptFPartnerDownTime, uint32(o))
	case RelationshipName:
		return appendBytes(dst, OptFRelationshipName, []byte(o))
	case ConnectFlags:
		return appendU16(dst, OptFConnectFlags, uint16(o))
	case ServerFlags:
		return appendU8(dst, OptFServerFlags, uint8(o))
	case ServerState:
		return appendU8(dst, OptFServerState, uint8(o))
	case *ClientData:
		return appendClientData(dst, o)
	case *LonePrefix:
		return appendLease(dst, OptIAPrefix, &o.Lease, o)
	}
	panic(fmt.Sprintf("wire: unhandled option type %T", o)) // unreachable: Option is sealed and validate ran
}

// appendClientData writes client-options in the order CLIENTID,
// LQ_BASE_TIME, VSS, STATUS_CODE, RECONFIGURE_DATA, LQ_RELAY_DATA, the IAs,
// then unknown options.
func appendClientData(dst []byte, cd *ClientData) []byte {
	dst, mark := begin(dst, OptClientData)
	dst = appendBytes(dst, OptClientID, cd.ClientID)
	dst = appendU32p(dst, OptLQBaseTime, cd.BaseTime)
	if cd.VSS != nil {
		dst = appendBytes(dst, OptVSS, cd.VSS)
	}
	dst = appendStatus(dst, cd.Status)
	if r := cd.Reconfigure; r != nil {
		var m int
		dst, m = begin(dst, OptFReconfigureData)
		dst = binary.BigEndian.AppendUint32(dst, r.Time)
		dst = end(append(dst, r.Key...), m)
	}
	if r := cd.Relay; r != nil {
		var m int
		dst, m = begin(dst, OptLQRelayData)
		a := r.PeerAddr.As16()
		dst = end(append(append(dst, a[:]...), r.RelayMessage...), m)
	}
	for i := range cd.IAs {
		dst = appendIA(dst, &cd.IAs[i])
	}
	return end(appendRaw(dst, cd.Extra), mark)
}

// appendIA writes the fixed fields, the leases, STATUS_CODE, then unknown
// options.
func appendIA(dst []byte, ia *IA) []byte {
	dst, mark := begin(dst, OptionCode(ia.Type))
	dst = binary.BigEndian.AppendUint32(dst, ia.IAID)
	if ia.Type != IATA {
		dst = binary.BigEndian.AppendUint32(dst, ia.T1)
		dst = binary.BigEndian.AppendUint32(dst, ia.T2)
	}
	for i := range ia.Leases {
		dst = appendLease(dst, ia.Type.leaseCode(), &ia.Leases[i], nil)
	}
	dst = appendStatus(dst, ia.Status)
	return end(appendRaw(dst, ia.Extra), mark)
}

// appendLease writes an IAADDR or IAPREFIX: fixed fields, then (lone prefix
// only) VSS and LQ_BASE_TIME, then STATUS_CODE, BINDING_STATUS,
// START_TIME_OF_STATE, STATE_EXPIRATION_TIME, CLT_TIME, PARTNER_LIFETIME,
// PARTNER_RAW_CLT_TIME, EXPIRATION_TIME, PARTNER_LIFETIME_SENT,
// CLIENT_FQDN, DNS_REMOVAL_INFO, then unknown options.
func appendLease(dst []byte, code OptionCode, l *Lease, lone *LonePrefix) []byte {
	dst, mark := begin(dst, code)
	a := l.Prefix.Addr().As16()
	if code == OptIAAddr {
		dst = append(dst, a[:]...)
		dst = binary.BigEndian.AppendUint32(dst, l.Preferred)
		dst = binary.BigEndian.AppendUint32(dst, l.Valid)
	} else {
		dst = binary.BigEndian.AppendUint32(dst, l.Preferred)
		dst = binary.BigEndian.AppendUint32(dst, l.Valid)
		dst = append(dst, byte(l.Prefix.Bits()))
		dst = append(dst, a[:]...)
	}
	if lone != nil {
		if lone.VSS != nil {
			dst = appendBytes(dst, OptVSS, lone.VSS)
		}
		dst = appendU32p(dst, OptLQBaseTime, lone.BaseTime)
	}
	dst = appendStatus(dst, l.Status)
	if l.BindingStatus != 0 {
		dst = appendU8(dst, OptFBindingStatus, uint8(l.BindingStatus))
	}
	dst = appendU32p(dst, OptFStartTimeOfState, l.StartTimeOfState)
	dst = appendU32p(dst, OptFStateExpirationTime, l.StateExpirationTime)
	dst = appendU32p(dst, OptCLTTime, l.CLTTime)
	dst = appendU32p(dst, OptFPartnerLifetime, l.PartnerLifetime)
	dst = appendU32p(dst, OptFPartnerRawCLTTime, l.PartnerRawCLTTime)
	dst = appendU32p(dst, OptFExpirationTime, l.ExpirationTime)
	dst = appendU32p(dst, OptFPartnerLifetimeSent, l.PartnerLifetimeSent)
	if l.FQDN != nil {
		dst = appendBytes(dst, OptClientFQDN, l.FQDN)
	}
	if r := l.DNSRemoval; r != nil {
		var m int
		dst, m = begin(dst, OptFDNSRemovalInfo)
		if r.HostName != nil {
			dst = appendBytes(dst, OptFDNSHostName, r.HostName)
		}
		if r.ZoneName != nil {
			dst = appendBytes(dst, OptFDNSZoneName, r.ZoneName)
		}
		if r.Flags != nil {
			dst = appendU16(dst, OptFDNSFlags, uint16(*r.Flags))
		}
		dst = end(appendRaw(dst, r.Extra), m)
	}
	return end(appendRaw(dst, l.Extra), mark)
}
