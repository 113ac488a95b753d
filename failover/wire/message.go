package wire

import "fmt"

// Header is the message header. For failover messages (types 24-35) it is
// the RFC 8156 §5.2 header; for STARTTLS and REPLY it is the plain RFC 5460
// header, which has no sent-time (SentTime must then be 0).
type Header struct {
	Type MsgType
	// XID is the 24-bit transaction-id (0..MaxXID).
	XID uint32
	// SentTime is the absolute failover time of transmission (see ToFOTime).
	SentTime uint32
}

// Message is one failover message: a header and its top-level options, in
// order. DecodeMessage returns only messages that satisfy the rules of
// RFC 8156 §5-§7 checked by this package (see the package documentation),
// and Encode refuses messages that do not, so a Message that round-trips
// through either is valid.
type Message struct {
	Header
	Options []Option
}

// NewMessage returns a message of type t with the given options.
func NewMessage(t MsgType, xid, sentTime uint32, opts ...Option) *Message {
	return &Message{Header: Header{Type: t, XID: xid, SentTime: sentTime}, Options: opts}
}

// ConnectInfo is the configuration a CONNECT carries (RFC 8156 §6.1.1), and
// an accepting CONNECTREPLY (§6.1.2).
type ConnectInfo struct {
	Version          ProtocolVersion
	MCLT             uint32 // seconds
	KeepaliveTime    uint32 // seconds
	MaxUnackedBndUpd uint32
	// RelationshipName is "" when absent: then there is a single relationship
	// between the two servers. Not expected in a CONNECTREPLY, but allowed.
	RelationshipName string
	Flags            ConnectFlags
}

func (c ConnectInfo) options() []Option {
	opts := []Option{ProtocolVersion(c.Version), MCLT(c.MCLT), KeepaliveTime(c.KeepaliveTime), MaxUnackedBndUpd(c.MaxUnackedBndUpd)}
	if c.RelationshipName != "" {
		opts = append(opts, RelationshipName(c.RelationshipName))
	}
	return append(opts, c.Flags)
}

// NewConnect returns a CONNECT (RFC 8156 §5.3.8, §6.1.1).
func NewConnect(xid, sentTime uint32, c ConnectInfo) *Message {
	return NewMessage(MsgConnect, xid, sentTime, c.options()...)
}

// NewConnectReply returns an accepting CONNECTREPLY (§6.1.2). Its XID should
// be the CONNECT's.
func NewConnectReply(xid, sentTime uint32, c ConnectInfo) *Message {
	return NewMessage(MsgConnectReply, xid, sentTime, c.options()...)
}

// NewConnectReject returns a CONNECTREPLY that rejects the connection with
// the given status (e.g. StatusExcessiveTimeSkew, StatusNotSupported).
func NewConnectReject(xid, sentTime uint32, st Status) *Message {
	return NewMessage(MsgConnectReply, xid, sentTime, st)
}

// StateInfo is the content of a STATE message (RFC 8156 §6.3).
type StateInfo struct {
	// State is the endpoint state; in STARTUP it is the previously recorded
	// state and Flags has ServerFlagStartup (StateStartup is never sent).
	State     ServerState
	Flags     ServerFlags
	StartTime uint32 // abs: when State began
	// PartnerDownTime (abs) is present when State is PARTNER-DOWN (required
	// then, unless the STARTUP flag is set) and absent otherwise.
	PartnerDownTime *uint32
}

// NewState returns a STATE message.
func NewState(xid, sentTime uint32, s StateInfo) *Message {
	opts := []Option{s.State, s.Flags, StartTimeOfState(s.StartTime)}
	if s.PartnerDownTime != nil {
		opts = append(opts, PartnerDownTime(*s.PartnerDownTime))
	}
	return NewMessage(MsgState, xid, sentTime, opts...)
}

// NewBndUpd returns a BNDUPD carrying one client's bindings.
func NewBndUpd(xid, sentTime uint32, cd *ClientData) *Message {
	return NewMessage(MsgBndUpd, xid, sentTime, cd)
}

// NewBndUpdPrefix returns a BNDUPD carrying one lone prefix.
func NewBndUpdPrefix(xid, sentTime uint32, p *LonePrefix) *Message {
	return NewMessage(MsgBndUpd, xid, sentTime, p)
}

// NewBndReply returns a BNDREPLY for a CLIENT_DATA BNDUPD; xid must be the
// BNDUPD's.
func NewBndReply(xid, sentTime uint32, cd *ClientData) *Message {
	return NewMessage(MsgBndReply, xid, sentTime, cd)
}

// NewBndReplyPrefix returns a BNDREPLY for a lone-prefix BNDUPD.
func NewBndReplyPrefix(xid, sentTime uint32, p *LonePrefix) *Message {
	return NewMessage(MsgBndReply, xid, sentTime, p)
}

// NewDisconnect returns a DISCONNECT with the given status (RFC 8156
// §5.3.10 says it SHOULD carry one, often ServerShuttingDown with a
// descriptive message).
func NewDisconnect(xid, sentTime uint32, st Status) *Message {
	return NewMessage(MsgDisconnect, xid, sentTime, st)
}

// NewContact returns a CONTACT (RFC 8156 §5.3.12): the keepalive.
func NewContact(xid, sentTime uint32) *Message { return NewMessage(MsgContact, xid, sentTime) }

// NewPoolReq returns a POOLREQ (§5.3.3), sent by the secondary.
func NewPoolReq(xid, sentTime uint32) *Message { return NewMessage(MsgPoolReq, xid, sentTime) }

// NewPoolResp returns a POOLRESP (§5.3.4); xid should be the POOLREQ's.
func NewPoolResp(xid, sentTime uint32) *Message { return NewMessage(MsgPoolResp, xid, sentTime) }

// NewUpdReq returns an UPDREQ (§5.3.5). Its xid must stay unique until the
// UPDDONE arrives (§5.4).
func NewUpdReq(xid, sentTime uint32) *Message { return NewMessage(MsgUpdReq, xid, sentTime) }

// NewUpdReqAll returns an UPDREQALL (§5.3.6).
func NewUpdReqAll(xid, sentTime uint32) *Message { return NewMessage(MsgUpdReqAll, xid, sentTime) }

// NewUpdDone returns an UPDDONE (§5.3.7); xid should be the UPDREQ's or
// UPDREQALL's.
func NewUpdDone(xid, sentTime uint32) *Message { return NewMessage(MsgUpdDone, xid, sentTime) }

// NewStartTLS returns a STARTTLS (RFC 7653 §6.2.2): no options, plain header.
func NewStartTLS(xid uint32) *Message { return NewMessage(MsgStartTLS, xid, 0) }

// NewReply returns the REPLY to a STARTTLS (RFC 7653 §9.1): st nil accepts
// TLS; a TLSConnectionRefused status refuses it.
func NewReply(xid uint32, st *Status) *Message {
	if st == nil {
		return NewMessage(MsgReply, xid, 0)
	}
	return NewMessage(MsgReply, xid, 0, *st)
}

// Option returns the first top-level option with the given code, or nil.
func (m *Message) Option(code OptionCode) Option {
	for _, o := range m.Options {
		if o.OptionCode() == code {
			return o
		}
	}
	return nil
}

// Status returns the top-level OPTION_STATUS_CODE, if any.
func (m *Message) Status() (Status, bool) {
	st, ok := m.Option(OptStatusCode).(Status)
	return st, ok
}

// Rejected reports whether the message carries a top-level status that is
// an error: a rejecting CONNECTREPLY, a refusing REPLY.
func (m *Message) Rejected() bool {
	st, ok := m.Status()
	return ok && st.IsError()
}

// ClientData returns the OPTION_CLIENT_DATA of a BNDUPD or BNDREPLY, or nil.
func (m *Message) ClientData() *ClientData {
	cd, _ := m.Option(OptClientData).(*ClientData)
	return cd
}

// LonePrefix returns the lone OPTION_IAPREFIX of a BNDUPD or BNDREPLY, or nil.
func (m *Message) LonePrefix() *LonePrefix {
	p, _ := m.Option(OptIAPrefix).(*LonePrefix)
	return p
}

// ConnectInfo returns the configuration in a CONNECT or accepting
// CONNECTREPLY. It fails with ErrMissingOption if one of the required
// options is absent (never for a decoded CONNECT or accepting CONNECTREPLY).
func (m *Message) ConnectInfo() (ConnectInfo, error) {
	var c ConnectInfo
	if m.Type != MsgConnect && m.Type != MsgConnectReply {
		return c, fmt.Errorf("%w: %v has no connect information", ErrMalformed, m.Type)
	}
	var have [5]bool
	for _, o := range m.Options {
		switch v := o.(type) {
		case ProtocolVersion:
			c.Version, have[0] = v, true
		case MCLT:
			c.MCLT, have[1] = uint32(v), true
		case KeepaliveTime:
			c.KeepaliveTime, have[2] = uint32(v), true
		case MaxUnackedBndUpd:
			c.MaxUnackedBndUpd, have[3] = uint32(v), true
		case ConnectFlags:
			c.Flags, have[4] = v, true
		case RelationshipName:
			c.RelationshipName = string(v)
		}
	}
	codes := [5]OptionCode{OptFProtocolVersion, OptFMCLT, OptFKeepaliveTime, OptFMaxUnackedBndUpd, OptFConnectFlags}
	for i, ok := range have {
		if !ok {
			return c, &Error{Kind: ErrMissingOption, MsgType: m.Type, Option: codes[i], Offset: -1}
		}
	}
	return c, nil
}

// StateInfo returns the content of a STATE message. It fails with
// ErrMissingOption if a required option is absent (never for a decoded
// STATE).
func (m *Message) StateInfo() (StateInfo, error) {
	var s StateInfo
	if m.Type != MsgState {
		return s, fmt.Errorf("%w: %v is not a STATE message", ErrMalformed, m.Type)
	}
	var have [3]bool
	for _, o := range m.Options {
		switch v := o.(type) {
		case ServerState:
			s.State, have[0] = v, true
		case ServerFlags:
			s.Flags, have[1] = v, true
		case StartTimeOfState:
			s.StartTime, have[2] = uint32(v), true
		case PartnerDownTime:
			s.PartnerDownTime = U32(uint32(v))
		}
	}
	codes := [3]OptionCode{OptFServerState, OptFServerFlags, OptFStartTimeOfState}
	for i, ok := range have {
		if !ok {
			return s, &Error{Kind: ErrMissingOption, MsgType: m.Type, Option: codes[i], Offset: -1}
		}
	}
	return s, nil
}

// String summarises the message for logs: type, xid and option codes.
func (m *Message) String() string {
	s := fmt.Sprintf("%v xid=%#06x", m.Type, m.XID)
	if m.Type.HasSentTime() {
		s += fmt.Sprintf(" sent=%d", m.SentTime)
	}
	for _, o := range m.Options {
		s += " " + o.OptionCode().String()
	}
	return s
}

// ReplyEcho returns the minimum CLIENT_DATA of a BNDREPLY answering a BNDUPD
// that carried cd (RFC 8156 §7.6): the CLIENTID, the OPTION_VSS, and every
// IA and lease with its fixed fields, binding-status and
// state-expiration-time echoed and PARTNER_LIFETIME_SENT set to the received
// PARTNER_LIFETIME. It shares no memory with cd. The caller adds Status
// values where it rejects something.
func (cd *ClientData) ReplyEcho() *ClientData {
	r := &ClientData{ClientID: clone(cd.ClientID), VSS: clone(cd.VSS)}
	for i := range cd.IAs {
		ia := &cd.IAs[i]
		e := IA{Type: ia.Type, IAID: ia.IAID, T1: ia.T1, T2: ia.T2}
		for j := range ia.Leases {
			e.Leases = append(e.Leases, ia.Leases[j].replyEcho())
		}
		r.IAs = append(r.IAs, e)
	}
	return r
}

// ReplyEcho returns the minimum lone IAPREFIX of a BNDREPLY answering a
// BNDUPD that carried p (RFC 8156 §7.6; its "received in the BNDREPLY" is
// read as "received in the BNDUPD").
func (p *LonePrefix) ReplyEcho() *LonePrefix {
	return &LonePrefix{Lease: p.Lease.replyEcho(), VSS: clone(p.VSS)}
}

func (l *Lease) replyEcho() Lease {
	return Lease{
		Prefix: l.Prefix, Preferred: l.Preferred, Valid: l.Valid,
		BindingStatus:       l.BindingStatus,
		StateExpirationTime: cloneU32(l.StateExpirationTime),
		PartnerLifetimeSent: cloneU32(l.PartnerLifetime),
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func cloneU32(p *uint32) *uint32 {
	if p == nil {
		return nil
	}
	return U32(*p)
}
