package wire

import (
	"fmt"
	"net/netip"
)

// validate checks every rule DecodeMessage enforces, on the typed value. The
// decoder runs it after parsing (for the rules that depend on the message
// type), and Encode runs it before writing, so that Encode produces only
// bytes DecodeMessage accepts and that decode to an equal Message.
func (m *Message) validate() error {
	v := validator{msg: m.Type}
	if !m.Type.Known() {
		return &Error{Kind: ErrUnknownMessageType, MsgType: m.Type, Offset: -1, Detail: fmt.Sprintf("msg-type %d", uint8(m.Type))}
	}
	if m.XID > MaxXID {
		return v.fail(ErrMalformed, 0, 0, "transaction-id %#x does not fit in 24 bits", m.XID)
	}
	if !m.Type.HasSentTime() && m.SentTime != 0 {
		return v.fail(ErrMalformed, 0, 0, "%v uses the plain header, which has no sent-time (SentTime must be 0)", m.Type)
	}
	var seen seenSet
	for i, o := range m.Options {
		if o == nil {
			return v.fail(ErrMalformed, 0, 0, "option %d is nil", i)
		}
		switch o.(type) {
		case RawOption, Status, ProtocolVersion, MCLT, KeepaliveTime, MaxUnackedBndUpd, RelationshipName,
			ConnectFlags, ServerState, ServerFlags, StartTimeOfState, PartnerDownTime, *ClientData, *LonePrefix:
		default: // e.g. a type that embeds one of these
			return v.fail(ErrMalformed, 0, 0, "option %d has unsupported type %T", i, o)
		}
		code := o.OptionCode()
		if r, ok := o.(RawOption); ok {
			switch {
			case m.Type == MsgStartTLS:
			case m.Type == MsgReply && code != OptStatusCode:
			case code.Known():
				return v.fail(ErrMalformed, code, 0, "known option carried as RawOption; use its typed form")
			}
			if len(r.Data) > MaxMessageSize {
				return &Error{Kind: ErrFrameTooLarge, MsgType: m.Type, Option: code, Offset: -1, Detail: fmt.Sprintf("%d bytes of data", len(r.Data))}
			}
			continue
		}
		if m.Type == MsgStartTLS {
			return v.fail(ErrWrongContainer, code, 0, "STARTTLS options are not interpreted: carry them as RawOption")
		}
		if !topAllowed(m.Type, code) {
			return v.fail(ErrWrongContainer, code, 0, "not allowed in a %v message", m.Type)
		}
		if !seen.add(code) {
			return v.fail(ErrDuplicateOption, code, 0, "second %v", code)
		}
		if err := v.topOption(o); err != nil {
			return err
		}
	}
	return v.message(m, &seen)
}

type validator struct {
	msg MsgType
}

func (v *validator) fail(kind error, code, in OptionCode, format string, args ...any) error {
	return &Error{Kind: kind, MsgType: v.msg, Option: code, In: in, Offset: -1, Detail: fmt.Sprintf(format, args...)}
}

func (v *validator) check(code, in OptionCode, msg string) error {
	if msg != "" {
		return v.fail(ErrMalformed, code, in, "%s", msg)
	}
	return nil
}

func (v *validator) topOption(o Option) error {
	switch o := o.(type) {
	case RelationshipName:
		return v.check(OptFRelationshipName, 0, checkRelationshipName(string(o)))
	case ServerState:
		return v.check(OptFServerState, 0, checkServerState(o))
	case *ClientData:
		if o == nil {
			return v.fail(ErrMalformed, OptClientData, 0, "nil *ClientData")
		}
		return v.clientData(o)
	case *LonePrefix:
		if o == nil {
			return v.fail(ErrMalformed, OptIAPrefix, 0, "nil *LonePrefix")
		}
		return v.lonePrefix(o)
	}
	return nil
}

// message checks the per-message-type rules of RFC 8156 §6 and §7.
func (v *validator) message(m *Message, seen *seenSet) error {
	require := func(codes ...OptionCode) error {
		for _, c := range codes {
			if !seen.has(c) {
				return v.fail(ErrMissingOption, c, 0, "a %v must carry %v", m.Type, c)
			}
		}
		return nil
	}
	switch m.Type {
	case MsgConnect:
		return require(OptFProtocolVersion, OptFMCLT, OptFKeepaliveTime, OptFMaxUnackedBndUpd, OptFConnectFlags)
	case MsgConnectReply:
		if m.Rejected() {
			return nil // a rejecting CONNECTREPLY needs only its status (§6.1.2)
		}
		return require(OptFProtocolVersion, OptFMCLT, OptFKeepaliveTime, OptFMaxUnackedBndUpd, OptFConnectFlags)
	case MsgState:
		if err := require(OptFServerState, OptFServerFlags, OptFStartTimeOfState); err != nil {
			return err
		}
		s, _ := m.StateInfo()
		switch {
		case s.State == StatePartnerDown && s.PartnerDownTime == nil && s.Flags&ServerFlagStartup == 0:
			return v.fail(ErrMissingOption, OptFPartnerDownTime, 0, "a STATE in PARTNER-DOWN must carry %v (RFC 8156 §6.3)", OptFPartnerDownTime)
		case s.State != StatePartnerDown && s.PartnerDownTime != nil:
			return v.fail(ErrMalformed, OptFPartnerDownTime, 0, "%v only when the state is PARTNER-DOWN, not %v (RFC 8156 §6.3)", OptFPartnerDownTime, s.State)
		}
	case MsgBndUpd, MsgBndReply:
		cd, lp := seen.has(OptClientData), seen.has(OptIAPrefix)
		switch {
		case cd && lp:
			return v.fail(ErrDuplicateOption, OptIAPrefix, 0, "a %v carries one OPTION_CLIENT_DATA or one OPTION_IAPREFIX, not both (RFC 8156 §7.5.3)", m.Type)
		case !cd && !lp:
			return v.fail(ErrMissingOption, OptClientData, 0, "a %v must carry one OPTION_CLIENT_DATA or one OPTION_IAPREFIX (RFC 8156 §7.5.3)", m.Type)
		}
		if m.Type == MsgBndUpd {
			if cd {
				return v.bndUpdClientData(m.ClientData())
			}
			return v.bndUpdLonePrefix(m.LonePrefix())
		}
	}
	return nil
}

// bndUpdClientData: RFC 8156 §7.4 mandatory contents of a BNDUPD CLIENT_DATA.
func (v *validator) bndUpdClientData(cd *ClientData) error {
	if cd.BaseTime == nil {
		return v.fail(ErrMissingOption, OptLQBaseTime, OptClientData, "a BNDUPD CLIENT_DATA must carry %v (RFC 8156 §7.4)", OptLQBaseTime)
	}
	if len(cd.IAs) == 0 {
		return v.fail(ErrMissingOption, OptIANA, OptClientData, "a BNDUPD CLIENT_DATA must carry at least one IA_NA, IA_TA or IA_PD (RFC 8156 §7.4)")
	}
	for i := range cd.IAs {
		ia := &cd.IAs[i]
		if len(ia.Leases) == 0 {
			return v.fail(ErrMissingOption, ia.Type.leaseCode(), OptionCode(ia.Type), "%v IAID %#x carries no %v (RFC 8156 §7.4)", ia.Type, ia.IAID, ia.Type.leaseCode())
		}
		for j := range ia.Leases {
			if err := v.bndUpdLease(&ia.Leases[j], ia.Type.leaseCode()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *validator) bndUpdLease(l *Lease, code OptionCode) error {
	if l.BindingStatus == 0 {
		return v.fail(ErrMissingOption, OptFBindingStatus, code, "lease %v (RFC 8156 §7.4)", l.Prefix)
	}
	if l.StartTimeOfState == nil {
		return v.fail(ErrMissingOption, OptFStartTimeOfState, code, "lease %v (RFC 8156 §7.4)", l.Prefix)
	}
	return nil
}

func (v *validator) bndUpdLonePrefix(p *LonePrefix) error {
	if p.BaseTime == nil {
		return v.fail(ErrMissingOption, OptLQBaseTime, OptIAPrefix, "lone prefix %v (RFC 8156 §7.4)", p.Prefix)
	}
	return v.bndUpdLease(&p.Lease, OptIAPrefix)
}

// clientData checks the structure of a CLIENT_DATA (any message).
func (v *validator) clientData(cd *ClientData) error {
	const in = OptClientData
	if cd.ClientID == nil {
		return v.fail(ErrMissingOption, OptClientID, in, "OPTION_CLIENT_DATA must identify the client (RFC 8156 §7.4, §7.6)")
	}
	if err := v.check(OptClientID, in, checkDUID(cd.ClientID)); err != nil {
		return err
	}
	if cd.VSS != nil && len(cd.VSS) == 0 {
		return v.fail(ErrMalformed, OptVSS, in, "empty OPTION_VSS (nil means absent)")
	}
	if cd.Relay != nil {
		if err := v.check(OptLQRelayData, in, checkPeerAddr(cd.Relay.PeerAddr)); err != nil {
			return err
		}
	}
	if err := v.extra(cd.Extra, in); err != nil {
		return err
	}
	type iaKey struct {
		t    IAType
		iaid uint32
	}
	type leaseKey struct {
		t IAType
		p netip.Prefix
	}
	var ias map[iaKey]bool
	var leases map[leaseKey]bool
	if len(cd.IAs) > 1 {
		ias = make(map[iaKey]bool, len(cd.IAs))
	}
	n := 0
	for i := range cd.IAs {
		n += len(cd.IAs[i].Leases)
	}
	if n > 1 {
		leases = make(map[leaseKey]bool, n)
	}
	for i := range cd.IAs {
		ia := &cd.IAs[i]
		if !ia.Type.Valid() {
			return v.fail(ErrMalformed, OptionCode(ia.Type), in, "IA type %d is not IA_NA, IA_TA or IA_PD", uint16(ia.Type))
		}
		if ias != nil {
			k := iaKey{ia.Type, ia.IAID}
			if ias[k] {
				return v.fail(ErrDuplicateOption, OptionCode(ia.Type), in, "second %v with IAID %#x", ia.Type, ia.IAID)
			}
			ias[k] = true
		}
		if err := v.ia(ia); err != nil {
			return err
		}
		if leases != nil {
			for j := range ia.Leases {
				k := leaseKey{ia.Type, ia.Leases[j].Prefix}
				if leases[k] {
					return v.fail(ErrDuplicateOption, ia.Type.leaseCode(), OptionCode(ia.Type), "%v appears twice in one OPTION_CLIENT_DATA", k.p)
				}
				leases[k] = true
			}
		}
	}
	return nil
}

func (v *validator) ia(ia *IA) error {
	in := OptionCode(ia.Type)
	if ia.Type == IATA && (ia.T1 != 0 || ia.T2 != 0) {
		return v.fail(ErrMalformed, in, OptClientData, "IA_TA has no T1/T2 fields (IAID %#x has T1=%d T2=%d)", ia.IAID, ia.T1, ia.T2)
	}
	if err := v.extra(ia.Extra, in); err != nil {
		return err
	}
	for j := range ia.Leases {
		if err := v.lease(&ia.Leases[j], ia.Type.leaseCode(), in, false); err != nil {
			return err
		}
	}
	return nil
}

// lease checks a lease held in an option of code code (OptIAAddr or
// OptIAPrefix) in container in; lone marks a lone prefix.
func (v *validator) lease(l *Lease, code, in OptionCode, lone bool) error {
	if err := v.check(code, in, checkLeasePrefix(code, l.Prefix)); err != nil {
		return err
	}
	if l.BindingStatus != 0 {
		if err := v.check(OptFBindingStatus, code, checkBindingStatus(l.BindingStatus)); err != nil {
			return err
		}
	}
	if lone {
		for _, f := range []struct {
			present bool
			code    OptionCode
		}{
			{l.CLTTime != nil, OptCLTTime},
			{l.PartnerRawCLTTime != nil, OptFPartnerRawCLTTime},
			{l.FQDN != nil, OptClientFQDN},
			{l.DNSRemoval != nil, OptFDNSRemovalInfo},
		} {
			if f.present {
				return v.fail(ErrWrongContainer, f.code, code, "a lone prefix belongs to no client and carries no %v", f.code)
			}
		}
	}
	if l.FQDN != nil && len(l.FQDN) == 0 {
		return v.fail(ErrMalformed, OptClientFQDN, code, "empty OPTION_CLIENT_FQDN (nil means absent)")
	}
	if r := l.DNSRemoval; r != nil {
		for _, n := range []struct {
			name []byte
			code OptionCode
		}{{r.HostName, OptFDNSHostName}, {r.ZoneName, OptFDNSZoneName}} {
			if n.name != nil {
				if err := v.check(n.code, OptFDNSRemovalInfo, checkDomainName(n.name)); err != nil {
					return err
				}
			}
		}
		if err := v.extra(r.Extra, OptFDNSRemovalInfo); err != nil {
			return err
		}
	}
	return v.extra(l.Extra, code)
}

func (v *validator) lonePrefix(p *LonePrefix) error {
	if p.VSS != nil && len(p.VSS) == 0 {
		return v.fail(ErrMalformed, OptVSS, OptIAPrefix, "empty OPTION_VSS (nil means absent)")
	}
	return v.lease(&p.Lease, OptIAPrefix, 0, true)
}

// extra checks that raw options in container in have codes this package
// does not know (known codes must use their typed field).
func (v *validator) extra(opts []RawOption, in OptionCode) error {
	for _, o := range opts {
		if o.Code.Known() {
			return v.fail(ErrMalformed, o.Code, in, "known option carried as RawOption; use its typed field")
		}
	}
	return nil
}
