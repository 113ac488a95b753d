package server

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/fsm"
)

// maxRelayHops bounds the Relay-Forw nesting we unwrap (RFC 8415 HOP_COUNT_LIMIT).
const maxRelayHops = 32

// maxTxnRetries is how often a transaction is rebuilt after losing a race
// for a resource (fsm.ErrConflict).
const maxTxnRetries = 4

// PacketInfo is what the socket layer knows about a received packet.
type PacketInfo struct {
	IfIndex int
	IfName  string
	Src     netip.AddrPort
	Dst     netip.Addr // destination address (multicast or unicast)
}

// ErrDropped marks a message that is deliberately not answered.
var ErrDropped = errors.New("dropped")

var errDrop = ErrDropped

// ErrRateLimited marks a packet dropped by the client or relay rate limit
// (counted in pkt6-limit-exceeded, not pkt6-receive-drop).
var ErrRateLimited = fmt.Errorf("%w: rate limit exceeded", ErrDropped)

type dropError struct{ reason string }

func (e *dropError) Error() string { return "dropped: " + e.reason }
func (e *dropError) Unwrap() error { return errDrop }

func drop(format string, args ...any) error {
	return &dropError{reason: fmt.Sprintf(format, args...)}
}

// request is one client message being handled.
type request struct {
	msg    *dhcpv6.Message
	relays []*dhcpv6.RelayMessage // outermost first
	info   PacketInfo
	sn     *subnet
	duid   string // client DUID bytes
	now    time.Time
}

// Handle processes one received datagram and returns the reply datagram and
// where to send it, or an error (ErrDropped: not answered on purpose,
// ErrRateLimited among them; anything else: malformed). It applies the rate
// limits first and commits any binding change before returning a reply. It
// is safe for concurrent use; Serve does the same for every packet (the
// limits before the worker queue), tests and fuzzers call it directly.
func (s *Server) Handle(b []byte, info PacketInfo) ([]byte, netip.AddrPort, error) {
	s.metrics.inc(mPktReceived)
	if !s.admit(b, info.Src.Addr()) {
		return nil, netip.AddrPort{}, ErrRateLimited
	}
	return s.handle(b, info)
}

func (s *Server) handle(b []byte, info PacketInfo) ([]byte, netip.AddrPort, error) {
	pkt, err := dhcpv6.FromBytes(b)
	if err != nil {
		s.metrics.inc(mParseFailed)
		return nil, netip.AddrPort{}, fmt.Errorf("parse: %w", err)
	}
	req := &request{info: info, now: s.clock.Now()}
	inner := pkt
	for inner.IsRelay() {
		rm, ok := inner.(*dhcpv6.RelayMessage)
		if !ok || rm.MessageType != dhcpv6.MessageTypeRelayForward {
			s.metrics.inc(mParseFailed)
			return nil, netip.AddrPort{}, errors.New("parse: relay message that is not Relay-Forw")
		}
		if len(req.relays) == maxRelayHops {
			s.metrics.inc(mParseFailed)
			return nil, netip.AddrPort{}, fmt.Errorf("parse: more than %d relay hops", maxRelayHops)
		}
		req.relays = append(req.relays, rm)
		inner = rm.Options.RelayMessage()
		if inner == nil {
			s.metrics.inc(mParseFailed)
			return nil, netip.AddrPort{}, errors.New("parse: Relay-Forw without a Relay Message option")
		}
	}
	msg, ok := inner.(*dhcpv6.Message)
	if !ok {
		s.metrics.inc(mParseFailed)
		return nil, netip.AddrPort{}, errors.New("parse: no client message")
	}
	req.msg = msg
	s.metrics.incType(msg.MessageType)

	reply, err := s.process(req)
	if err != nil {
		if errors.Is(err, errDrop) {
			s.metrics.inc(mReceiveDrop)
		}
		return nil, netip.AddrPort{}, err
	}
	out, err := s.wrap(req, reply)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	if reply.MessageType == dhcpv6.MessageTypeAdvertise {
		s.metrics.inc(mAdvertiseSent)
	} else {
		s.metrics.inc(mReplySent)
	}
	return out, info.Src, nil
}

// wrap encapsulates reply in the Relay-Repl chain matching the request's
// Relay-Forw chain (echoing Interface-ID), innermost first.
func (s *Server) wrap(req *request, reply *dhcpv6.Message) ([]byte, error) {
	var m dhcpv6.DHCPv6 = reply
	for i := len(req.relays) - 1; i >= 0; i-- {
		rf := req.relays[i]
		rr := &dhcpv6.RelayMessage{MessageType: dhcpv6.MessageTypeRelayReply, HopCount: rf.HopCount,
			LinkAddr: rf.LinkAddr, PeerAddr: rf.PeerAddr}
		if id := rf.Options.InterfaceID(); id != nil {
			rr.AddOption(dhcpv6.OptInterfaceID(id))
		}
		rr.AddOption(dhcpv6.OptRelayMessage(m))
		m = rr
	}
	return m.ToBytes(), nil
}

// process validates the client message (RFC 8415 §16), asks the policy,
// picks the subnet and dispatches by type.
func (s *Server) process(req *request) (*dhcpv6.Message, error) {
	m := req.msg
	cid := m.Options.ClientID()
	sid := m.Options.ServerID()
	forUs := sid != nil && string(sid.ToBytes()) == string(s.duid)
	if sid != nil && !forUs {
		return nil, drop("%v for another server", m.MessageType)
	}
	if cid != nil {
		req.duid = string(cid.ToBytes())
		if len(req.duid) > fsm.MaxDUIDLen {
			return nil, drop("client DUID of %d bytes", len(req.duid))
		}
	}
	switch m.MessageType {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeConfirm:
		if cid == nil || sid != nil {
			return nil, drop("%v needs a Client ID and no Server ID", m.MessageType)
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		if cid == nil || !forUs {
			return nil, drop("%v needs a Client ID and our Server ID", m.MessageType)
		}
	case dhcpv6.MessageTypeInformationRequest:
		if len(m.Options.IANA()) > 0 || len(m.Options.IAPD()) > 0 || len(m.Options.IATA()) > 0 {
			return nil, drop("Information-Request with IA options")
		}
	default:
		return nil, drop("message type %v is not for a server", m.MessageType)
	}
	if !s.policy.Serve(m.MessageType, forUs) {
		return nil, drop("%v: not responsive in the current failover state", m.MessageType)
	}
	req.sn = s.selectSubnet(req)
	if req.sn == nil && m.MessageType != dhcpv6.MessageTypeInformationRequest && m.MessageType != dhcpv6.MessageTypeConfirm {
		la := ""
		if n := len(req.relays); n > 0 {
			la = req.relays[n-1].LinkAddr.String()
		}
		return nil, drop("no subnet for interface %q / link-address %q", req.info.IfName, la)
	}
	// A message that must be multicast, received by unicast from a client
	// (not through a relay), gets UseMulticast: we offer no Server Unicast option.
	if len(req.relays) == 0 && req.info.Dst.IsValid() && !req.info.Dst.IsMulticast() {
		switch m.MessageType {
		case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
			r := s.newReply(req, dhcpv6.MessageTypeReply)
			r.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusUseMulticast, StatusMessage: "use multicast"})
			return r, nil
		case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeConfirm, dhcpv6.MessageTypeInformationRequest:
			// RFC 8415 §16: a server MUST discard these when received by unicast.
			return nil, drop("%v received by unicast", m.MessageType)
		}
	}
	switch m.MessageType {
	case dhcpv6.MessageTypeSolicit:
		if s.cfg.RapidCommit && m.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			return s.assign(req, modeRapid)
		}
		return s.assign(req, modeAdvertise)
	case dhcpv6.MessageTypeRequest:
		return s.assign(req, modeRequest)
	case dhcpv6.MessageTypeRenew:
		return s.assign(req, modeRenew)
	case dhcpv6.MessageTypeRebind:
		return s.assign(req, modeRebind)
	case dhcpv6.MessageTypeRelease:
		return s.release(req, false)
	case dhcpv6.MessageTypeDecline:
		return s.release(req, true)
	case dhcpv6.MessageTypeConfirm:
		return s.confirm(req)
	case dhcpv6.MessageTypeInformationRequest:
		r := s.newReply(req, dhcpv6.MessageTypeReply)
		s.addConfigOptions(req, r)
		return r, nil
	}
	return nil, drop("unhandled type")
}

// selectSubnet: relayed traffic by the innermost relay's link-address (the
// first relay agent the client's message reached); direct traffic by the
// ingress interface.
func (s *Server) selectSubnet(req *request) *subnet {
	if n := len(req.relays); n > 0 {
		for i := n - 1; i >= 0; i-- {
			la, ok := netip.AddrFromSlice(req.relays[i].LinkAddr)
			if ok && !la.Unmap().IsUnspecified() {
				return s.subnetForAddr(la.Unmap())
			}
		}
		return nil
	}
	return s.subnetByIf[req.info.IfName]
}

func (s *Server) subnetForAddr(a netip.Addr) *subnet {
	for _, sn := range s.subnets {
		if sn.cfg.Prefix.Contains(a) {
			return sn
		}
	}
	return nil
}

func (s *Server) newReply(req *request, t dhcpv6.MessageType) *dhcpv6.Message {
	r := &dhcpv6.Message{MessageType: t, TransactionID: req.msg.TransactionID}
	r.AddOption(dhcpv6.OptServerID(s.serverDUID))
	if cid := req.msg.Options.ClientID(); cid != nil {
		r.AddOption(dhcpv6.OptClientID(cid))
	}
	return r
}

// addConfigOptions adds the options the client asked for in its ORO.
func (s *Server) addConfigOptions(req *request, r *dhcpv6.Message) {
	oro := req.msg.Options.RequestedOptions()
	has := func(c dhcpv6.OptionCode) bool {
		for _, x := range oro {
			if x == c {
				return true
			}
		}
		return false
	}
	dns := s.cfg.DNSServers
	if req.sn != nil && len(req.sn.cfg.DNSServers) > 0 {
		dns = req.sn.cfg.DNSServers
	}
	if len(dns) > 0 && has(dhcpv6.OptionDNSRecursiveNameServer) {
		ips := make([]net.IP, len(dns))
		for i, a := range dns {
			ips[i] = net.IP(a.AsSlice())
		}
		r.AddOption(dhcpv6.OptDNS(ips...))
	}
	if s.domainSearch != nil && has(dhcpv6.OptionDomainSearchList) {
		r.AddOption(dhcpv6.OptDomainSearchList(s.domainSearch))
	}
}

// confirm answers whether the client's addresses are on its link.
func (s *Server) confirm(req *request) (*dhcpv6.Message, error) {
	var addrs []netip.Addr
	for _, ia := range req.msg.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			if x, ok := netip.AddrFromSlice(a.IPv6Addr); ok {
				addrs = append(addrs, x)
			}
		}
	}
	if len(addrs) == 0 || req.sn == nil {
		return nil, drop("Confirm with no addresses or on an unknown link")
	}
	code, text := iana.StatusSuccess, "all addresses are on link"
	for _, a := range addrs {
		if !req.sn.cfg.Prefix.Contains(a) {
			code, text = iana.StatusNotOnLink, "some addresses are not on link"
			break
		}
	}
	r := s.newReply(req, dhcpv6.MessageTypeReply)
	r.AddOption(&dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: text})
	return r, nil
}

type mode int

const (
	modeAdvertise mode = iota // Solicit: choose, commit nothing
	modeRapid                 // Solicit with Rapid Commit: as Request, Reply with Rapid Commit
	modeRequest
	modeRenew
	modeRebind
)

func (m mode) commits() bool { return m != modeAdvertise }

// iaIn is one IA from the client.
type iaIn struct {
	typ   fsm.IAType
	iaid  uint32
	hints []fsm.Resource // addresses / prefixes the client put in the IA (valid ones only)
}

// leaseOut is one address or prefix to put in a reply IA.
type leaseOut struct {
	res              fsm.Resource
	preferred, valid uint32
}

// iaOut is one IA of the reply.
type iaOut struct {
	in     iaIn
	leases []leaseOut
	status iana.StatusCode
	text   string
	hasSt  bool
}

// txnPlan is a transaction being built: the ops to commit and the slots
// reserved for new leases (released when the transaction ends).
type txnPlan struct {
	ops   []fsm.Op
	resv  []reservation
	outs  []iaOut
	anyOK bool
	// granted holds the resources already given to an IA of this message, so
	// no other IA gets them too (a txn may name a resource only once).
	granted map[fsm.Resource]bool
}

type reservation struct {
	p    *pool
	slot uint64
}

func (t *txnPlan) release() {
	for _, r := range t.resv {
		r.p.unreserve(r.slot)
	}
	t.resv = t.resv[:0]
}

// collectIAs reads the IA_NA and IA_PD options. IA_TA is not offered
// (RFC 8415 deprecates it): such IAs get NoAddrsAvail.
func collectIAs(m *dhcpv6.Message) (ias []iaIn, tas []*dhcpv6.OptIATA) {
	for _, ia := range m.Options.IANA() {
		in := iaIn{typ: fsm.IANA, iaid: iaidOf(ia.IaId)}
		for _, a := range ia.Options.Addresses() {
			if x, ok := netip.AddrFromSlice(a.IPv6Addr); ok && x.Is6() && !x.IsUnspecified() {
				in.hints = append(in.hints, fsm.AddrResource(fsm.IANA, x))
			}
		}
		ias = append(ias, in)
	}
	for _, ia := range m.Options.IAPD() {
		in := iaIn{typ: fsm.IAPD, iaid: iaidOf(ia.IaId)}
		for _, p := range ia.Options.Prefixes() {
			if p.Prefix == nil {
				continue
			}
			ones, _ := p.Prefix.Mask.Size()
			x, ok := netip.AddrFromSlice(p.Prefix.IP)
			if ok && !x.IsUnspecified() {
				in.hints = append(in.hints, fsm.PrefixResource(netip.PrefixFrom(x, ones)))
			}
		}
		ias = append(ias, in)
	}
	return ias, m.Options.IATA()
}

func iaidOf(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// assign handles Solicit, Request, Renew and Rebind: for each IA keep,
// extend or allocate leases, commit the changes as one log entry (except for
// Advertise), then build the reply.
func (s *Server) assign(req *request, md mode) (*dhcpv6.Message, error) {
	ias, tas := collectIAs(req.msg)
	var plan *txnPlan
	if err := s.commit(req, func() ([]fsm.Op, func()) {
		plan = s.plan(req, md, ias)
		if !md.commits() {
			return nil, plan.release // Advertise commits nothing
		}
		return plan.ops, plan.release
	}); err != nil {
		return nil, err
	}
	if md == modeRebind && !plan.anyOK && !anyStatus(plan.outs) {
		return nil, drop("Rebind for leases we do not know")
	}
	t := dhcpv6.MessageTypeReply
	if md == modeAdvertise {
		t = dhcpv6.MessageTypeAdvertise
	}
	r := s.newReply(req, t)
	if md == modeRapid {
		r.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	}
	if md == modeAdvertise && s.cfg.Preference > 0 {
		r.AddOption(dhcpv6.OptPreference(uint8(s.cfg.Preference)))
	}
	s.addIAs(req, r, plan.outs)
	for _, ta := range tas {
		r.AddOption(&dhcpv6.OptIATA{IaId: ta.IaId, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
			&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "temporary addresses are not offered"}}}})
	}
	if md == modeAdvertise && !plan.anyOK && len(ias) > 0 && allNoAvail(plan.outs) {
		// RFC 8415 §18.3.9: no addresses at all: a top-level NoAddrsAvail too.
		r.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "no addresses available"})
	}
	s.addConfigOptions(req, r)
	return r, nil
}

func hasOp(ops []fsm.Op, r fsm.Resource) bool {
	for i := range ops {
		if ops[i].Resource == r {
			return true
		}
	}
	return false
}

func anyStatus(outs []iaOut) bool {
	for _, o := range outs {
		if o.hasSt || len(o.leases) > 0 {
			return true
		}
	}
	return false
}

func allNoAvail(outs []iaOut) bool {
	for _, o := range outs {
		if !o.hasSt || (o.status != iana.StatusNoAddrsAvail && o.status != iana.StatusNoPrefixAvail) {
			return false
		}
	}
	return true
}

func noteFor(req *request) string {
	return fmt.Sprintf("%v xid=%s", req.msg.MessageType, req.msg.TransactionID)
}

// plan decides every IA of the request against the current state.
func (s *Server) plan(req *request, md mode, ias []iaIn) *txnPlan {
	plan := &txnPlan{}
	for _, in := range ias {
		out := iaOut{in: in}
		s.planIA(req, md, in, plan, &out)
		plan.outs = append(plan.outs, out)
	}
	return plan
}

func (s *Server) lifetimes(sn *subnet) (pref, valid time.Duration) {
	return sn.cfg.PreferredLifetime, sn.cfg.ValidLifetime
}

// planIA handles one IA.
func (s *Server) planIA(req *request, md mode, in iaIn, plan *txnPlan, out *iaOut) {
	noAvail := iana.StatusNoAddrsAvail
	if in.typ == fsm.IAPD {
		noAvail = iana.StatusNoPrefixAvail
	}
	setStatus := func(c iana.StatusCode, text string) { out.status, out.text, out.hasSt = c, text, true }
	sn := req.sn
	existing := s.state.Client(req.duid, in.typ, in.iaid)
	var active []fsm.Binding
	var previous *fsm.Binding // an earlier, no longer active lease of this IA
	for i := range existing {
		b := &existing[i]
		switch {
		case b.Status == fsm.StatusActive:
			if s.onLink(sn, b.Resource) && !plan.granted[b.Resource] {
				active = append(active, *b)
			}
		case previous == nil && s.onLink(sn, b.Resource) && s.policy.Available(b, req.duid):
			previous = b
		}
	}

	// Request: an address that is not appropriate for the link gets the IA
	// back with NotOnLink and no addresses (RFC 8415 §18.3.2).
	if (md == modeRequest || md == modeRapid) && in.typ != fsm.IAPD {
		for _, h := range in.hints {
			if !s.onLink(sn, h) {
				setStatus(iana.StatusNotOnLink, "address not on this link")
				return
			}
		}
	}
	// Renew: addresses or prefixes the client holds that it does not get
	// (again) from us go back with lifetimes 0 (RFC 8415 §18.3.4): the Renew
	// names us, so we are the authority on them. Rebind reaches any server,
	// possibly not the one that leased them (a failover partner): only those
	// not appropriate for the link go back with 0 (§18.3.5).
	if md == modeRenew || md == modeRebind {
		defer func() {
			for _, h := range in.hints {
				kept := false
				for _, l := range out.leases {
					kept = kept || l.res == h
				}
				if !kept && (md == modeRenew || !s.onLink(sn, h)) {
					out.leases = append(out.leases, leaseOut{res: h})
				}
			}
		}()
	}

	if len(active) > 0 {
		for i := range active {
			out.leases = append(out.leases, s.grant(req, md, plan, in, active[i].Resource, active[i].Rev, &active[i]))
		}
		plan.anyOK = true
		return
	}
	// No lease yet for this IA. Rebind creates one only where Rapid Commit
	// is on (RFC 8415 §18.3.5: other servers may answer the same Rebind).
	if md == modeRebind && !s.cfg.RapidCommit {
		setStatus(iana.StatusNoBinding, "no binding for this IA")
		return
	}
	if !s.policy.MayAllocate() {
		if md == modeRenew || md == modeRebind {
			setStatus(iana.StatusNoBinding, "no binding for this IA")
		} else {
			setStatus(noAvail, "this server is not allocating now")
		}
		return
	}
	// Candidates in order: the client's hints, its previous lease, any free slot.
	var cands []fsm.Resource
	cands = append(cands, in.hints...)
	if previous != nil {
		cands = append(cands, previous.Resource)
	}
	for _, r := range cands {
		p := s.pools.find(r)
		if p == nil || p.subnet != sn || plan.granted[r] {
			continue
		}
		slot, ok := p.slotOf(r)
		if !ok {
			continue
		}
		var rev uint64
		if b, exists := s.state.Get(r); exists {
			if !s.policy.Available(&b, req.duid) {
				continue
			}
			rev = b.Rev
		} else if !p.reserve(slot) {
			continue
		} else {
			plan.resv = append(plan.resv, reservation{p, slot})
		}
		out.leases = append(out.leases, s.grant(req, md, plan, in, r, rev, nil))
		plan.anyOK = true
		return
	}
	for _, p := range sn.pools {
		if (p.typ == fsm.IAPD) != (in.typ == fsm.IAPD) {
			continue
		}
		for tries := 0; tries < 8; tries++ {
			r, slot, ok := p.pick()
			if !ok {
				break
			}
			plan.resv = append(plan.resv, reservation{p, slot})
			if plan.granted[r] {
				continue // an available binding another IA of this message named
			}
			var rev uint64
			if b, exists := s.state.Get(r); exists {
				if !s.policy.Available(&b, req.duid) {
					continue // changed since the slot was marked; try another
				}
				rev = b.Rev
			}
			out.leases = append(out.leases, s.grant(req, md, plan, in, r, rev, nil))
			plan.anyOK = true
			return
		}
	}
	// This server's own prefixes are used up: the partner's, where the
	// failover rules allow them (Policy.PartnerPool).
	if in.typ == fsm.IAPD && s.policy.PartnerPool() {
		for _, p := range sn.pools {
			if p.typ != fsm.IAPD {
				continue
			}
			if r, slot, rev, ok := s.pickPartner(p, req.duid, plan); ok {
				plan.resv = append(plan.resv, reservation{p, slot})
				out.leases = append(out.leases, s.grant(req, md, plan, in, r, rev, nil))
				plan.anyOK = true
				return
			}
		}
	}
	s.metrics.inc(mAllocFail)
	setStatus(noAvail, "no addresses available")
	if in.typ == fsm.IAPD {
		out.text = "no prefixes available"
	}
}

func (s *Server) onLink(sn *subnet, r fsm.Resource) bool {
	if sn == nil {
		return false
	}
	if r.Type == fsm.IAPD {
		p := s.pools.find(r)
		return p != nil && p.subnet == sn
	}
	return sn.cfg.Prefix.Contains(r.Addr())
}

// grant builds the lease for r (new when old is nil) and, unless
// advertising, the op that commits it.
func (s *Server) grant(req *request, md mode, plan *txnPlan, in iaIn, r fsm.Resource, rev uint64, old *fsm.Binding) leaseOut {
	pref, desired := s.lifetimes(req.sn)
	now := req.now
	nb := fsm.Binding{Resource: r, Status: fsm.StatusActive, DUID: req.duid, StartTimeOfState: now.Unix()}
	var promised int64 // the end an earlier Reply may have given this client
	if old != nil {
		if old.Status == fsm.StatusActive && old.DUID == req.duid && old.IAID == in.iaid {
			promised = old.StateExpirationTime
		}
		nb = *old
		if nb.Status != fsm.StatusActive {
			nb.StartTimeOfState = now.Unix()
		}
		nb.Status = fsm.StatusActive
	} else if cur, ok := s.state.Get(r); ok {
		// Reusing a free binding: keep the partner bookkeeping fields.
		nb = cur
		nb.Status, nb.DUID, nb.StartTimeOfState = fsm.StatusActive, req.duid, now.Unix()
		nb.Flags = 0
	}
	nb.IAID = in.iaid
	valid := s.policy.Grant(now, &nb, desired)
	if valid > desired {
		valid = desired
	}
	if pref > valid {
		pref = valid
	}
	nb.PreferredLifetime = uint32(pref / time.Second)
	nb.ValidLifetime = uint32(valid / time.Second)
	nb.CLTT = now.Unix()
	// A renewal may give less than before (the failover MCLT cap, a lower
	// configured lifetime). The record keeps the earlier end: the client
	// may never get this Reply and hold the lease until then, so the lease
	// must not expire, and be freed by either partner, before it.
	nb.StateExpirationTime = max(now.Add(valid).Unix(), promised)
	if plan.granted == nil {
		plan.granted = map[fsm.Resource]bool{}
	}
	plan.granted[r] = true
	if md.commits() {
		plan.ops = append(plan.ops, fsm.Op{Resource: r, IfRev: rev, Binding: nb})
	}
	return leaseOut{res: r, preferred: nb.PreferredLifetime, valid: nb.ValidLifetime}
}

// commit builds a client transaction with build and commits it as one log
// entry, rebuilding it against the newer state when it lost a race for a
// resource (fsm.ErrConflict). done, if not nil, runs after each attempt's
// Apply returned (it releases reservations). No ops: nothing to commit.
//
// One client's transactions are serialised (a lock striped by DUID): two
// copies of one message handled at once (two relays on a link, a
// retransmission while queued) would otherwise each see the IA empty and
// commit a different new lease for it.
func (s *Server) commit(req *request, build func() (ops []fsm.Op, done func())) error {
	mu := &s.clientLocks[clientStripe(req.duid)]
	mu.Lock()
	defer mu.Unlock()
	for attempt := 0; ; attempt++ {
		ops, done := build()
		if len(ops) == 0 {
			if done != nil {
				done()
			}
			return nil
		}
		_, err := s.store.Apply(&fsm.Command{Type: fsm.CmdTxn, Time: req.now.UnixNano(), Origin: fsm.OriginClient,
			Note: noteFor(req), Ops: ops})
		if done != nil {
			done()
		}
		switch {
		case err == nil:
			s.storeRecovered()
			return nil
		case errors.Is(err, fsm.ErrConflict) && attempt < maxTxnRetries:
			s.metrics.inc(mTxnConflicts)
			req.now = s.clock.Now()
		case errors.Is(err, fsm.ErrConflict):
			s.metrics.inc(mStoreFailed)
			s.log.Warn("lease change lost every retry to concurrent changes: no reply", zap.String("msg", req.msg.MessageType.String()),
				zap.String("client-duid", fmt.Sprintf("%x", req.duid)), zap.Error(err))
			return fmt.Errorf("commit: %w", err)
		default:
			s.storeFailed(req, err)
			return fmt.Errorf("commit: %w", err)
		}
	}
}

// storeFailed counts a transaction the store refused. The first failure of
// an outage is logged at Error with the store's error, which says what to do
// (raftstore: "free space on the disk holding DIR"); the rest are only
// counted in store-failed until a commit succeeds (storeRecovered), so a
// full disk under load writes one line, not one per client.
func (s *Server) storeFailed(req *request, err error) {
	n := s.metrics.c[mStoreFailed].Add(1)
	if s.storeDownSince.CompareAndSwap(0, n) {
		s.log.Error("lease store refuses changes: clients get no Reply until it takes them again; further failures are counted in store-failed, not logged",
			zap.String("msg", req.msg.MessageType.String()), zap.String("client-duid", fmt.Sprintf("%x", req.duid)), zap.Error(err))
	}
}

// storeRecovered ends an outage begun by storeFailed, logging how many
// transactions it cost.
func (s *Server) storeRecovered() {
	if since := s.storeDownSince.Load(); since != 0 && s.storeDownSince.CompareAndSwap(since, 0) {
		s.log.Info("lease store takes changes again", zap.Uint64("transactions-not-stored", s.metrics.get(mStoreFailed)-since+1))
	}
}

// clientLockStripes is the number of per-client lock stripes.
const clientLockStripes = 1024

func clientStripe(duid string) int {
	h := fnv.New32a()
	h.Write([]byte(duid))
	return int(h.Sum32() % clientLockStripes)
}

// addIAs puts the planned IAs in the reply, with one T1/T2 for all of them
// (RFC 8415 §18.3.2).
func (s *Server) addIAs(req *request, r *dhcpv6.Message, outs []iaOut) {
	var t1, t2 time.Duration
	if req.sn != nil {
		t1, t2 = req.sn.cfg.RenewTime, req.sn.cfg.RebindTime
		minPref := time.Duration(-1)
		for _, o := range outs {
			for _, l := range o.leases {
				if l.valid > 0 && (minPref < 0 || time.Duration(l.preferred)*time.Second < minPref) {
					minPref = time.Duration(l.preferred) * time.Second
				}
			}
		}
		switch {
		case minPref < 0:
			t1, t2 = 0, 0
		case minPref < req.sn.cfg.PreferredLifetime:
			t1, t2 = minPref/2, minPref*4/5
		}
	}
	for _, o := range outs {
		var id [4]byte
		id[0], id[1], id[2], id[3] = byte(o.in.iaid>>24), byte(o.in.iaid>>16), byte(o.in.iaid>>8), byte(o.in.iaid)
		var opts dhcpv6.Options
		for _, l := range o.leases {
			pref, valid := time.Duration(l.preferred)*time.Second, time.Duration(l.valid)*time.Second
			if o.in.typ == fsm.IAPD {
				p := l.res.Prefix()
				opts = append(opts, &dhcpv6.OptIAPrefix{PreferredLifetime: pref, ValidLifetime: valid,
					Prefix: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 128)}})
			} else {
				opts = append(opts, &dhcpv6.OptIAAddress{IPv6Addr: net.IP(l.res.Addr().AsSlice()),
					PreferredLifetime: pref, ValidLifetime: valid})
			}
		}
		if o.hasSt {
			opts = append(opts, &dhcpv6.OptStatusCode{StatusCode: o.status, StatusMessage: o.text})
		}
		it1, it2 := t1, t2
		if len(o.leases) == 0 {
			it1, it2 = 0, 0
		}
		if o.in.typ == fsm.IAPD {
			r.AddOption(&dhcpv6.OptIAPD{IaId: id, T1: it1, T2: it2, Options: dhcpv6.PDOptions{Options: opts}})
		} else {
			r.AddOption(&dhcpv6.OptIANA{IaId: id, T1: it1, T2: it2, Options: dhcpv6.IdentityOptions{Options: opts}})
		}
	}
}

// release handles Release and Decline: each lease of the client named in the
// message is freed (Release) or set aside as ABANDONED (Decline), in one
// transaction; IAs we hold no binding for get NoBinding.
func (s *Server) release(req *request, decline bool) (*dhcpv6.Message, error) {
	ias, _ := collectIAs(req.msg)
	var outs []iaOut
	var ops []fsm.Op
	err := s.commit(req, func() ([]fsm.Op, func()) {
		ops, outs = ops[:0], outs[:0]
		now := req.now
		for _, in := range ias {
			out := iaOut{in: in}
			found := false
			for _, h := range in.hints {
				b, ok := s.state.Get(h)
				if !ok || b.DUID != req.duid || b.IAID != in.iaid || b.Resource.Type != in.typ || b.Status != fsm.StatusActive {
					continue
				}
				found = true
				if hasOp(ops, b.Resource) {
					continue // named twice in this message
				}
				nb := b
				if decline {
					nb.Status = fsm.StatusAbandoned
					nb.StartTimeOfState = now.Unix()
					nb.StateExpirationTime = now.Add(s.cfg.DeclineHoldTime).Unix()
					s.policy.Changed(now, &nb)
				} else {
					s.policy.Free(now, &nb, true)
				}
				nb.CLTT = now.Unix()
				ops = append(ops, fsm.Op{Resource: b.Resource, IfRev: b.Rev, Binding: nb})
			}
			if !found {
				out.status, out.text, out.hasSt = iana.StatusNoBinding, "no binding for this IA", true
			}
			outs = append(outs, out)
		}
		return ops, nil
	})
	if err != nil {
		return nil, err
	}
	if decline {
		s.metrics.add(mDeclined, uint64(len(ops)))
	}
	r := s.newReply(req, dhcpv6.MessageTypeReply)
	text := "release received"
	if decline {
		text = "decline received"
	}
	r.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: text})
	for _, o := range outs {
		if o.hasSt {
			s.addIAs(&request{msg: req.msg}, r, []iaOut{o})
		}
	}
	s.addConfigOptions(req, r)
	return r, nil
}
