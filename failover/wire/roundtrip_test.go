package wire

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"testing/iotest"
)

// gen builds random valid messages. Empty slices are nil and optional
// fields are nil or set, as the decoder produces them, so that a decoded
// message is DeepEqual to the generated one.
type gen struct{ r *rand.Rand }

func (g gen) coin() bool     { return g.r.IntN(2) == 0 }
func (g gen) n(k int) int    { return g.r.IntN(k) }
func (g gen) u32() uint32    { return g.r.Uint32() }
func (g gen) u32p() *uint32  { v := g.r.Uint32(); return &v }
func (g gen) opt32() *uint32 { return g.maybe(g.u32p) }

func (g gen) maybe(f func() *uint32) *uint32 {
	if g.coin() {
		return f()
	}
	return nil
}

func (g gen) bytes(minLen, maxLen int) []byte {
	n := minLen + g.n(maxLen-minLen+1)
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

func (g gen) status() *Status {
	codes := []StatusCode{StatusSuccess, StatusUnspecFail, StatusAddressInUse, StatusOutdatedBindingInformation, StatusCode(g.n(0x10000))}
	msgs := []string{"", "ok", "newer here", "\x00\xff not UTF-8 is carried verbatim"}
	return &Status{Code: codes[g.n(len(codes))], Message: msgs[g.n(len(msgs))]}
}

func (g gen) unknownCode() OptionCode {
	for {
		c := OptionCode(g.n(0x10000))
		if g.coin() {
			c = OptionCode(g.n(200)) // small codes too, near the known ones
		}
		if !c.Known() {
			return c
		}
	}
}

func (g gen) extra() []RawOption {
	var out []RawOption
	for range g.n(3) - 1 { // usually none
		out = append(out, RawOption{Code: g.unknownCode(), Data: g.bytes(0, 6)})
	}
	return out
}

func (g gen) name() string {
	names := []string{"a", "alpha", "relationship-1", "Zürich ↔ Genève", "x y"}
	return names[g.n(len(names))]
}

func (g gen) domainName() []byte {
	labels := []string{"host", "example", "com", "a", "x-1"}
	s := ""
	for i := g.n(3); i >= 0; i-- {
		s += labels[g.n(len(labels))] + "."
	}
	if g.n(5) == 0 {
		s = "."
	}
	b, err := EncodeDomainName(s)
	if err != nil {
		panic(err)
	}
	return b
}

func (g gen) addr() netip.Addr {
	var a [16]byte
	for i := range a {
		a[i] = byte(g.r.Uint32())
	}
	if g.coin() {
		copy(a[:], []byte{0x20, 0x01, 0x0d, 0xb8})
	}
	return netip.AddrFrom16(a)
}

func (g gen) lease(code OptionCode, bndupd, lone bool) Lease {
	l := Lease{Preferred: g.u32(), Valid: g.u32()}
	if code == OptIAAddr {
		l.Prefix = netip.PrefixFrom(g.addr(), 128)
	} else {
		l.Prefix = netip.PrefixFrom(g.addr(), g.n(129)).Masked()
	}
	if bndupd || g.coin() {
		l.BindingStatus = BindingStatus(1 + g.n(8))
	}
	if bndupd || g.coin() {
		l.StartTimeOfState = g.u32p()
	}
	if g.coin() {
		l.Status = g.status()
	}
	l.StateExpirationTime = g.opt32()
	l.PartnerLifetime = g.opt32()
	l.ExpirationTime = g.opt32()
	l.PartnerLifetimeSent = g.opt32()
	if !lone {
		l.CLTTime = g.opt32()
		l.PartnerRawCLTTime = g.opt32()
		if g.coin() {
			l.FQDN = g.bytes(1, 20)
		}
		if g.coin() {
			d := &DNSRemovalInfo{Extra: g.extra()}
			if g.coin() {
				d.HostName = g.domainName()
			}
			if g.coin() {
				d.ZoneName = g.domainName()
			}
			if g.coin() {
				d.Flags = new(DNSFlags(g.n(0x10000)))
			}
			l.DNSRemoval = d
		}
	}
	l.Extra = g.extra()
	return l
}

func (g gen) clientData(bndupd bool) *ClientData {
	cd := &ClientData{ClientID: g.bytes(MinDUIDLen, 24)}
	if g.n(10) == 0 {
		cd.ClientID = g.bytes(MaxDUIDLen, MaxDUIDLen)
	}
	if bndupd || g.coin() {
		cd.BaseTime = g.u32p()
	}
	if g.coin() {
		cd.VSS = g.bytes(1, 8)
	}
	if !bndupd && g.coin() {
		cd.Status = g.status()
	}
	if g.coin() {
		cd.Reconfigure = &ReconfigureData{Time: g.u32(), Key: g.bytes(0, 16)}
	}
	if g.coin() {
		cd.Relay = &RelayData{PeerAddr: g.addr(), RelayMessage: g.bytes(0, 40)}
	}
	nIA := g.n(4)
	if bndupd {
		nIA++
	}
	iaids := map[IAType]map[uint32]bool{}
	leases := map[IAType]map[netip.Prefix]bool{}
	for range nIA {
		t := []IAType{IANA, IATA, IAPD}[g.n(3)]
		ia := IA{Type: t, IAID: uint32(g.n(4))}
		if iaids[t] == nil {
			iaids[t], leases[t] = map[uint32]bool{}, map[netip.Prefix]bool{}
		}
		if iaids[t][ia.IAID] {
			continue
		}
		iaids[t][ia.IAID] = true
		if t != IATA {
			ia.T1, ia.T2 = g.u32(), g.u32()
		}
		nl := g.n(4)
		if bndupd {
			nl++
		}
		for range nl {
			l := g.lease(t.leaseCode(), bndupd, false)
			if leases[t][l.Prefix] {
				continue
			}
			leases[t][l.Prefix] = true
			ia.Leases = append(ia.Leases, l)
		}
		if !bndupd && g.coin() {
			ia.Status = g.status()
		}
		ia.Extra = g.extra()
		cd.IAs = append(cd.IAs, ia)
	}
	cd.Extra = g.extra()
	return cd
}

func (g gen) lonePrefix(bndupd bool) *LonePrefix {
	p := &LonePrefix{Lease: g.lease(OptIAPrefix, bndupd, true)}
	if g.coin() {
		p.VSS = g.bytes(1, 8)
	}
	if bndupd || g.coin() {
		p.BaseTime = g.u32p()
	}
	return p
}

// message returns a random valid message. Top-level options are shuffled:
// their order is part of the Message and must survive.
func (g gen) message() *Message {
	types := []MsgType{MsgReply, MsgStartTLS, MsgBndUpd, MsgBndReply, MsgPoolReq, MsgPoolResp, MsgUpdReq,
		MsgUpdReqAll, MsgUpdDone, MsgConnect, MsgConnectReply, MsgDisconnect, MsgState, MsgContact}
	t := types[g.n(len(types))]
	m := &Message{Header: Header{Type: t, XID: uint32(g.n(MaxXID + 1))}}
	if t.HasSentTime() {
		m.SentTime = g.u32()
	}
	var opts []Option
	addStatus := func() {
		if g.coin() {
			opts = append(opts, *g.status())
		}
	}
	switch t {
	case MsgStartTLS:
		for range g.n(3) {
			opts = append(opts, RawOption{Code: OptionCode(g.n(140)), Data: g.bytes(0, 5)}) // known codes too: not interpreted
		}
	case MsgReply:
		addStatus()
		for range g.n(3) {
			c := OptionCode(g.n(140))
			if c != OptStatusCode {
				opts = append(opts, RawOption{Code: c, Data: g.bytes(0, 5)})
			}
		}
	case MsgConnect, MsgConnectReply:
		if t == MsgConnectReply && g.coin() {
			opts = append(opts, Status{Code: StatusCode(1 + g.n(22)), Message: "no"})
			break
		}
		c := ConnectInfo{
			Version: ProtocolVersion{uint16(g.n(3)), uint16(g.n(3))}, MCLT: g.u32(), KeepaliveTime: g.u32(),
			MaxUnackedBndUpd: g.u32(), Flags: ConnectFlags(g.n(4)),
		}
		if g.coin() {
			c.RelationshipName = g.name()
		}
		opts = c.options()
		if g.coin() {
			opts = append(opts, Status{Code: StatusSuccess, Message: "welcome"})
		}
	case MsgState:
		s := StateInfo{State: ServerState(2 + g.n(9)), Flags: ServerFlags(g.n(256)), StartTime: g.u32()}
		if s.State == StatePartnerDown && (s.Flags&ServerFlagStartup == 0 || g.coin()) {
			s.PartnerDownTime = g.u32p()
		}
		opts = NewState(0, 0, s).Options
		addStatus()
	case MsgBndUpd, MsgBndReply:
		if g.coin() {
			opts = append(opts, g.clientData(t == MsgBndUpd))
		} else {
			opts = append(opts, g.lonePrefix(t == MsgBndUpd))
		}
		addStatus()
	default:
		addStatus()
	}
	if t != MsgStartTLS && t != MsgReply {
		for _, r := range g.extra() {
			opts = append(opts, r)
		}
	}
	g.r.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
	if len(opts) > 0 {
		m.Options = opts
	}
	return m
}

// TestRoundTrip: for random valid messages, Encode succeeds, DecodeMessage
// gives back an equal message, and re-encoding gives the same bytes.
func TestRoundTrip(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	seen := map[MsgType]int{}
	for i := range 5000 {
		m := g.message()
		seen[m.Type]++
		b, err := m.Encode()
		if err != nil {
			t.Fatalf("#%d: Encode(%s): %v", i, dump(m), err)
		}
		m2, err := DecodeMessage(b)
		if err != nil {
			t.Fatalf("#%d: DecodeMessage: %v\nmessage %s\nbytes %x", i, err, dump(m), b)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("#%d: round trip changed the message\n  %s\nto\n  %s", i, dump(m), dump(m2))
		}
		b2, err := m2.Encode()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("#%d: re-encoding differs (%v)\n  %x\n  %x", i, err, b, b2)
		}
	}
	if len(seen) != 14 {
		t.Errorf("generator covered %d message types, want 14: %v", len(seen), seen)
	}
}

// TestStreamRoundTrip writes random messages through a Writer and reads them
// back through a Reader that delivers one byte at a time.
func TestStreamRoundTrip(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 4))}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	var want []*Message
	for range 300 {
		m := g.message()
		if err := w.WriteMessage(m); err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	r := NewReader(iotest.OneByteReader(&buf))
	for i, m := range want {
		got, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("message %d: got %s, want %s", i, dump(got), dump(m))
		}
	}
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

// TestEncodeRefuses: Encode refuses what DecodeMessage would refuse, and
// writes nothing.
func TestEncodeRefuses(t *testing.T) {
	good := func() *ClientData {
		return &ClientData{ClientID: goldenDUID, BaseTime: U32(1), IAs: []IA{{Type: IANA, IAID: 1, Leases: []Lease{{
			Prefix: netip.MustParsePrefix("2001:db8::1/128"), BindingStatus: BindingActive, StartTimeOfState: U32(1),
		}}}}}
	}
	mod := func(f func(cd *ClientData)) *Message {
		cd := good()
		f(cd)
		return NewBndUpd(1, 1, cd)
	}
	lone := func(f func(p *LonePrefix)) *Message {
		p := &LonePrefix{Lease: Lease{Prefix: netip.MustParsePrefix("2001:db8::/48"), BindingStatus: BindingFree, StartTimeOfState: U32(1)}, BaseTime: U32(1)}
		f(p)
		return NewBndUpdPrefix(1, 1, p)
	}
	big := &ClientData{ClientID: goldenDUID, BaseTime: U32(1), IAs: good().IAs, Extra: []RawOption{{Code: 999, Data: make([]byte, 65530)}}}
	for _, c := range []struct {
		name string
		m    *Message
		kind error
	}{
		{"good", NewBndUpd(1, 1, good()), nil},
		{"unknown type", NewMessage(99, 1, 1), ErrUnknownMessageType},
		{"xid over 24 bits", NewMessage(MsgContact, 1<<24, 1), ErrMalformed},
		{"sent-time in STARTTLS", &Message{Header: Header{Type: MsgStartTLS, SentTime: 1}}, ErrMalformed},
		{"typed option in STARTTLS", NewMessage(MsgStartTLS, 1, 0, Status{}), ErrWrongContainer},
		{"raw status in REPLY", NewMessage(MsgReply, 1, 0, RawOption{Code: OptStatusCode, Data: []byte{0, 0}}), ErrMalformed},
		{"raw known option", NewMessage(MsgContact, 1, 1, RawOption{Code: OptFMCLT, Data: []byte{0, 0, 0, 1}}), ErrMalformed},
		{"nil option", NewMessage(MsgContact, 1, 1, nil), ErrMalformed},
		{"foreign option type", NewMessage(MsgConnect, 1, 1, append(NewConnect(1, 1, ConnectInfo{}).Options, struct{ KeepaliveTime }{5})...), ErrMalformed},
		{"MCLT in STATE", NewMessage(MsgState, 1, 1, StateNormal, ServerFlags(0), StartTimeOfState(1), MCLT(5)), ErrWrongContainer},
		{"duplicate MCLT", NewMessage(MsgConnect, 1, 1, append(NewConnect(1, 1, ConnectInfo{}).Options, MCLT(1))...), ErrDuplicateOption},
		{"CONNECT without flags", NewMessage(MsgConnect, 1, 1, NewConnect(1, 1, ConnectInfo{}).Options[:4]...), ErrMissingOption},
		{"empty relationship name", NewMessage(MsgConnect, 1, 1, append(NewConnect(1, 1, ConnectInfo{}).Options, RelationshipName(""))...), ErrMalformed},
		{"STARTUP state", NewState(1, 1, StateInfo{State: StateStartup}), ErrMalformed},
		{"PARTNER-DOWN without time", NewState(1, 1, StateInfo{State: StatePartnerDown}), ErrMissingOption},
		{"partner-down time in NORMAL", NewState(1, 1, StateInfo{State: StateNormal, PartnerDownTime: U32(1)}), ErrMalformed},
		{"BNDUPD empty", NewMessage(MsgBndUpd, 1, 1), ErrMissingOption},
		{"BNDUPD both", NewMessage(MsgBndUpd, 1, 1, good(), lone(func(*LonePrefix) {}).Options[0]), ErrDuplicateOption},
		{"nil ClientData", NewBndUpd(1, 1, nil), ErrMalformed},
		{"no client id", mod(func(cd *ClientData) { cd.ClientID = nil }), ErrMissingOption},
		{"short DUID", mod(func(cd *ClientData) { cd.ClientID = []byte{1, 2} }), ErrMalformed},
		{"no base time", mod(func(cd *ClientData) { cd.BaseTime = nil }), ErrMissingOption},
		{"no IA", mod(func(cd *ClientData) { cd.IAs = nil }), ErrMissingOption},
		{"no lease", mod(func(cd *ClientData) { cd.IAs[0].Leases = nil }), ErrMissingOption},
		{"no binding status", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].BindingStatus = 0 }), ErrMissingOption},
		{"bad binding status", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].BindingStatus = 9 }), ErrMalformed},
		{"no start time", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].StartTimeOfState = nil }), ErrMissingOption},
		{"empty VSS", mod(func(cd *ClientData) { cd.VSS = []byte{} }), ErrMalformed},
		{"empty FQDN", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].FQDN = []byte{} }), ErrMalformed},
		{"bad DNS name", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].DNSRemoval = &DNSRemovalInfo{HostName: []byte("\x04host")} }), ErrMalformed},
		{"IPv4 relay peer", mod(func(cd *ClientData) { cd.Relay = &RelayData{PeerAddr: netip.MustParseAddr("192.0.2.1")} }), ErrMalformed},
		{"IA_TA with T1", mod(func(cd *ClientData) { cd.IAs[0].Type, cd.IAs[0].T1 = IATA, 5 }), ErrMalformed},
		{"bad IA type", mod(func(cd *ClientData) { cd.IAs[0].Type = 7 }), ErrMalformed},
		{"prefix in IA_NA", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].Prefix = netip.MustParsePrefix("2001:db8::/64") }), ErrMalformed},
		{"IPv4 lease", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].Prefix = netip.MustParsePrefix("192.0.2.1/32") }), ErrMalformed},
		{"host bits", mod(func(cd *ClientData) {
			cd.IAs[0].Type = IAPD
			cd.IAs[0].Leases[0].Prefix = netip.PrefixFrom(netip.MustParseAddr("2001:db8::1"), 64)
		}), ErrMalformed},
		{"duplicate IAID", mod(func(cd *ClientData) {
			cd.IAs = append(cd.IAs, cd.IAs[0])
			cd.IAs[1].Leases = []Lease{{Prefix: netip.MustParsePrefix("2001:db8::2/128"), BindingStatus: BindingActive, StartTimeOfState: U32(1)}}
		}), ErrDuplicateOption},
		{"duplicate lease", mod(func(cd *ClientData) { cd.IAs[0].Leases = append(cd.IAs[0].Leases, cd.IAs[0].Leases[0]) }), ErrDuplicateOption},
		{"raw known in lease", mod(func(cd *ClientData) { cd.IAs[0].Leases[0].Extra = []RawOption{{Code: OptCLTTime}} }), ErrMalformed},
		{"lone prefix with CLT", lone(func(p *LonePrefix) { p.CLTTime = U32(0) }), ErrWrongContainer},
		{"lone prefix without base time", lone(func(p *LonePrefix) { p.BaseTime = nil }), ErrMissingOption},
		{"too large", NewBndUpd(1, 1, big), ErrFrameTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := []byte{1, 2, 3}
			out, err := c.m.AppendTo(dst)
			if c.kind == nil {
				if err != nil {
					t.Fatalf("AppendTo: %v", err)
				}
				return
			}
			if !errors.Is(err, c.kind) {
				t.Fatalf("AppendTo error %v, want %v", err, c.kind)
			}
			if !bytes.Equal(out, dst) || len(out) != 3 {
				t.Fatalf("AppendTo wrote %x on error", out)
			}
			if out, err := c.m.AppendFrame(dst); err == nil || len(out) != 3 {
				t.Fatalf("AppendFrame: %x, %v", out, err)
			}
			t.Log(err)
		})
	}
}
