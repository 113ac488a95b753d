package wire

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// DecodeMessage decodes one failover message (the bytes of one frame, without
// the message-size prefix). It never panics and allocates at most a copy of b
// plus typed values proportional to the number of options in b; the returned
// Message does not alias b.
//
// It accepts only messages that satisfy every rule listed in the package
// documentation; otherwise it returns an *Error wrapping ErrUnknownMessageType
// or ErrMalformed (and, for the specific classes, ErrMissingOption,
// ErrDuplicateOption, ErrWrongContainer or ErrTooDeep). Options with codes
// this package does not know are kept as RawOption, in order.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) == 0 {
		return nil, &Error{Kind: ErrMalformed, Detail: "empty message"}
	}
	t := MsgType(b[0])
	if !t.Known() {
		return nil, &Error{Kind: ErrUnknownMessageType, MsgType: t, Detail: fmt.Sprintf("msg-type %d", b[0])}
	}
	hl := t.HeaderLen()
	if len(b) < hl {
		return nil, &Error{Kind: ErrMalformed, MsgType: t, Offset: len(b),
			Detail: fmt.Sprintf("header truncated: %d bytes, want %d", len(b), hl)}
	}
	if len(b) > MaxMessageSize {
		return nil, &Error{Kind: ErrMalformed, MsgType: t, Offset: MaxMessageSize,
			Detail: fmt.Sprintf("%d-byte message exceeds the protocol maximum of %d", len(b), MaxMessageSize)}
	}
	d := decoder{msg: t, buf: append([]byte(nil), b...)}
	m := &Message{Header: Header{Type: t, XID: uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])}}
	if hl == FailoverHeaderLen {
		m.SentTime = binary.BigEndian.Uint32(b[4:8])
	}
	opts, err := d.top(hl)
	if err != nil {
		return nil, err
	}
	m.Options = opts
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

type decoder struct {
	msg MsgType
	buf []byte // private copy of the message; decoded byte fields alias it
}

// tlv is one option: its code, its data, and the offset of its 4-byte
// option header in the message.
type tlv struct {
	code OptionCode
	data []byte
	off  int
}

func (t tlv) dataOff() int { return t.off + 4 }

func (d *decoder) fail(kind error, code, in OptionCode, off int, format string, args ...any) error {
	return &Error{Kind: kind, MsgType: d.msg, Option: code, In: in, Offset: off, Detail: fmt.Sprintf(format, args...)}
}

// each calls fn for every option in buf[start:end], the options area of the
// container in (0 = the message itself).
func (d *decoder) each(start, end int, in OptionCode, fn func(tlv) error) error {
	for pos := start; pos < end; {
		if end-pos < 4 {
			return d.fail(ErrMalformed, 0, in, pos, "truncated option header: %d bytes left, need 4", end-pos)
		}
		code := OptionCode(binary.BigEndian.Uint16(d.buf[pos:]))
		n := int(binary.BigEndian.Uint16(d.buf[pos+2:]))
		if n > end-pos-4 {
			return d.fail(ErrMalformed, code, in, pos, "option-len %d exceeds the %d bytes left", n, end-pos-4)
		}
		if err := fn(tlv{code: code, data: d.buf[pos+4 : pos+4+n : pos+4+n], off: pos}); err != nil {
			return err
		}
		pos += 4 + n
	}
	return nil
}

// place checks that known option c may appear in container in at the given
// depth, and is not a second copy of a singleton.
func (d *decoder) place(c tlv, in OptionCode, depth int, allowed bool, seen *seenSet) error {
	if isContainer(c.code) && depth >= MaxDepth {
		return d.fail(ErrTooDeep, c.code, in, c.off, "container option at depth %d (max depth %d)", depth, MaxDepth)
	}
	if !allowed {
		if in == 0 {
			return d.fail(ErrWrongContainer, c.code, in, c.off, "not allowed in a %v message", d.msg)
		}
		return d.fail(ErrWrongContainer, c.code, in, c.off, "not allowed inside %v", in)
	}
	if !seen.add(c.code) && !repeatable(in, c.code) {
		return d.fail(ErrDuplicateOption, c.code, in, c.off, "second %v", c.code)
	}
	return nil
}

func raw(c tlv) RawOption {
	r := RawOption{Code: c.code}
	if len(c.data) > 0 {
		r.Data = c.data
	}
	return r
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (d *decoder) fixed(c tlv, in OptionCode, n int) error {
	if len(c.data) != n {
		return d.fail(ErrMalformed, c.code, in, c.off, "option-len %d, want %d", len(c.data), n)
	}
	return nil
}

func (d *decoder) u32(c tlv, in OptionCode) (uint32, error) {
	if err := d.fixed(c, in, 4); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(c.data), nil
}

func (d *decoder) u32p(c tlv, in OptionCode) (*uint32, error) {
	v, err := d.u32(c, in)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func (d *decoder) status(c tlv, in OptionCode) (Status, error) {
	if len(c.data) < 2 {
		return Status{}, d.fail(ErrMalformed, c.code, in, c.off, "option-len %d, want at least 2", len(c.data))
	}
	return Status{Code: StatusCode(binary.BigEndian.Uint16(c.data)), Message: string(c.data[2:])}, nil
}

func (d *decoder) value(c tlv, in OptionCode, msg string) error {
	if msg != "" {
		return d.fail(ErrMalformed, c.code, in, c.dataOff(), "%s", msg)
	}
	return nil
}

// minLen checks a variable-length option's minimum length.
func (d *decoder) minLen(c tlv, in OptionCode, n int) error {
	if len(c.data) < n {
		return d.fail(ErrMalformed, c.code, in, c.off, "option-len %d, want at least %d", len(c.data), n)
	}
	return nil
}

// top decodes the options area of the message.
func (d *decoder) top(start int) ([]Option, error) {
	var opts []Option
	var seen seenSet
	err := d.each(start, len(d.buf), 0, func(c tlv) error {
		// RFC 7653 §6.2.2: options in STARTTLS SHOULD be ignored; REPLY is a
		// plain DHCPv6 message of which only the status code matters here.
		if d.msg == MsgStartTLS || !c.code.Known() || (d.msg == MsgReply && c.code != OptStatusCode) {
			opts = append(opts, raw(c))
			return nil
		}
		if err := d.place(c, 0, 1, topAllowed(d.msg, c.code), &seen); err != nil {
			return err
		}
		o, err := d.topOption(c)
		if err != nil {
			return err
		}
		opts = append(opts, o)
		return nil
	})
	return opts, err
}

func (d *decoder) topOption(c tlv) (Option, error) {
	switch c.code {
	case OptStatusCode:
		return d.status(c, 0)
	case OptClientData:
		return d.clientData(c)
	case OptIAPrefix:
		p := &LonePrefix{}
		if err := d.lease(c, 0, 1, &p.Lease, p); err != nil {
			return nil, err
		}
		return p, nil
	case OptFProtocolVersion:
		if err := d.fixed(c, 0, 4); err != nil {
			return nil, err
		}
		return ProtocolVersion{Major: binary.BigEndian.Uint16(c.data), Minor: binary.BigEndian.Uint16(c.data[2:])}, nil
	case OptFMCLT:
		v, err := d.u32(c, 0)
		return MCLT(v), err
	case OptFKeepaliveTime:
		v, err := d.u32(c, 0)
		return KeepaliveTime(v), err
	case OptFMaxUnackedBndUpd:
		v, err := d.u32(c, 0)
		return MaxUnackedBndUpd(v), err
	case OptFStartTimeOfState:
		v, err := d.u32(c, 0)
		return StartTimeOfState(v), err
	case OptFPartnerDownTime:
		v, err := d.u32(c, 0)
		return PartnerDownTime(v), err
	case OptFRelationshipName:
		s := string(c.data)
		if err := d.value(c, 0, checkRelationshipName(s)); err != nil {
			return nil, err
		}
		return RelationshipName(s), nil
	case OptFConnectFlags:
		if err := d.fixed(c, 0, 2); err != nil {
			return nil, err
		}
		return ConnectFlags(binary.BigEndian.Uint16(c.data)), nil
	case OptFServerFlags:
		if err := d.fixed(c, 0, 1); err != nil {
			return nil, err
		}
		return ServerFlags(c.data[0]), nil
	case OptFServerState:
		if err := d.fixed(c, 0, 1); err != nil {
			return nil, err
		}
		s := ServerState(c.data[0])
		if err := d.value(c, 0, checkServerState(s)); err != nil {
			return nil, err
		}
		return s, nil
	}
	// Unreachable: topAllowed admits only the codes above.
	return nil, d.fail(ErrWrongContainer, c.code, 0, c.off, "unexpected option")
}

func (d *decoder) clientData(c tlv) (*ClientData, error) {
	const in = OptClientData
	cd := &ClientData{}
	var seen seenSet
	err := d.each(c.dataOff(), c.dataOff()+len(c.data), in, func(o tlv) error {
		if !o.code.Known() {
			cd.Extra = append(cd.Extra, raw(o))
			return nil
		}
		if err := d.place(o, in, 2, clientDataAllowed(o.code), &seen); err != nil {
			return err
		}
		var err error
		switch o.code {
		case OptClientID:
			if err = d.value(o, in, checkDUID(o.data)); err == nil {
				cd.ClientID = o.data
			}
		case OptLQBaseTime:
			cd.BaseTime, err = d.u32p(o, in)
		case OptVSS:
			if err = d.minLen(o, in, 1); err == nil {
				cd.VSS = o.data
			}
		case OptStatusCode:
			var st Status
			if st, err = d.status(o, in); err == nil {
				cd.Status = &st
			}
		case OptFReconfigureData:
			if err = d.minLen(o, in, 4); err == nil {
				cd.Reconfigure = &ReconfigureData{Time: binary.BigEndian.Uint32(o.data), Key: nilIfEmpty(o.data[4:])}
			}
		case OptLQRelayData:
			if err = d.minLen(o, in, 16); err == nil {
				cd.Relay = &RelayData{PeerAddr: netip.AddrFrom16([16]byte(o.data[:16])), RelayMessage: nilIfEmpty(o.data[16:])}
			}
		case OptIANA, OptIATA, OptIAPD:
			var ia IA
			if ia, err = d.ia(o); err == nil {
				cd.IAs = append(cd.IAs, ia)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return cd, nil
}

func (d *decoder) ia(c tlv) (IA, error) {
	t := IAType(c.code)
	ia := IA{Type: t}
	fl := t.fixedLen()
	if err := d.minLen(c, OptClientData, fl); err != nil {
		return ia, err
	}
	ia.IAID = binary.BigEndian.Uint32(c.data)
	if t != IATA {
		ia.T1 = binary.BigEndian.Uint32(c.data[4:])
		ia.T2 = binary.BigEndian.Uint32(c.data[8:])
	}
	var seen seenSet
	err := d.each(c.dataOff()+fl, c.dataOff()+len(c.data), c.code, func(o tlv) error {
		if !o.code.Known() {
			ia.Extra = append(ia.Extra, raw(o))
			return nil
		}
		if err := d.place(o, c.code, 3, iaAllowed(t, o.code), &seen); err != nil {
			return err
		}
		if o.code == OptStatusCode {
			st, err := d.status(o, c.code)
			ia.Status = &st
			return err
		}
		var l Lease
		if err := d.lease(o, c.code, 3, &l, nil); err != nil {
			return err
		}
		ia.Leases = append(ia.Leases, l)
		return nil
	})
	return ia, err
}

// lease decodes an OPTION_IAADDR or OPTION_IAPREFIX (code c.code) found in
// container in at the given depth into l. lone is non-nil for an
// OPTION_IAPREFIX at the top level of a BNDUPD or BNDREPLY.
func (d *decoder) lease(c tlv, in OptionCode, depth int, l *Lease, lone *LonePrefix) error {
	var fl int
	if c.code == OptIAAddr {
		fl = 24
		if err := d.minLen(c, in, fl); err != nil {
			return err
		}
		l.Prefix = netip.PrefixFrom(netip.AddrFrom16([16]byte(c.data[:16])), 128)
		l.Preferred = binary.BigEndian.Uint32(c.data[16:])
		l.Valid = binary.BigEndian.Uint32(c.data[20:])
	} else {
		fl = 25
		if err := d.minLen(c, in, fl); err != nil {
			return err
		}
		l.Preferred = binary.BigEndian.Uint32(c.data)
		l.Valid = binary.BigEndian.Uint32(c.data[4:])
		plen := int(c.data[8])
		if plen > 128 {
			return d.fail(ErrMalformed, c.code, in, c.dataOff()+8, "prefix-length %d (max 128)", plen)
		}
		l.Prefix = netip.PrefixFrom(netip.AddrFrom16([16]byte(c.data[9:25])), plen)
	}
	if err := d.value(c, in, checkLeasePrefix(c.code, l.Prefix)); err != nil {
		return err
	}
	allowed := leaseAllowed
	if lone != nil {
		allowed = lonePrefixAllowed
	}
	var seen seenSet
	return d.each(c.dataOff()+fl, c.dataOff()+len(c.data), c.code, func(o tlv) error {
		if !o.code.Known() {
			l.Extra = append(l.Extra, raw(o))
			return nil
		}
		if err := d.place(o, c.code, depth+1, allowed(o.code), &seen); err != nil {
			return err
		}
		var err error
		switch o.code {
		case OptStatusCode:
			var st Status
			if st, err = d.status(o, c.code); err == nil {
				l.Status = &st
			}
		case OptFBindingStatus:
			if err = d.fixed(o, c.code, 1); err == nil {
				l.BindingStatus = BindingStatus(o.data[0])
				err = d.value(o, c.code, checkBindingStatus(l.BindingStatus))
			}
		case OptFStartTimeOfState:
			l.StartTimeOfState, err = d.u32p(o, c.code)
		case OptFStateExpirationTime:
			l.StateExpirationTime, err = d.u32p(o, c.code)
		case OptCLTTime:
			l.CLTTime, err = d.u32p(o, c.code)
		case OptFPartnerLifetime:
			l.PartnerLifetime, err = d.u32p(o, c.code)
		case OptFPartnerRawCLTTime:
			l.PartnerRawCLTTime, err = d.u32p(o, c.code)
		case OptFExpirationTime:
			l.ExpirationTime, err = d.u32p(o, c.code)
		case OptFPartnerLifetimeSent:
			l.PartnerLifetimeSent, err = d.u32p(o, c.code)
		case OptClientFQDN:
			if err = d.minLen(o, c.code, 1); err == nil {
				l.FQDN = o.data
			}
		case OptFDNSRemovalInfo:
			l.DNSRemoval, err = d.dnsRemoval(o, depth+1)
		case OptVSS: // lone prefix only
			if err = d.minLen(o, c.code, 1); err == nil {
				lone.VSS = o.data
			}
		case OptLQBaseTime: // lone prefix only
			lone.BaseTime, err = d.u32p(o, c.code)
		}
		return err
	})
}

func (d *decoder) dnsRemoval(c tlv, depth int) (*DNSRemovalInfo, error) {
	const in = OptFDNSRemovalInfo
	r := &DNSRemovalInfo{}
	var seen seenSet
	err := d.each(c.dataOff(), c.dataOff()+len(c.data), in, func(o tlv) error {
		if !o.code.Known() {
			r.Extra = append(r.Extra, raw(o))
			return nil
		}
		if err := d.place(o, in, depth+1, dnsRemovalAllowed(o.code), &seen); err != nil {
			return err
		}
		switch o.code {
		case OptFDNSHostName:
			r.HostName = o.data
			return d.value(o, in, checkDomainName(o.data))
		case OptFDNSZoneName:
			r.ZoneName = o.data
			return d.value(o, in, checkDomainName(o.data))
		default: // OptFDNSFlags
			if err := d.fixed(o, in, 2); err != nil {
				return err
			}
			f := DNSFlags(binary.BigEndian.Uint16(o.data))
			r.Flags = &f
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}
