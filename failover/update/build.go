package update

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// MaxLeasesPerUpdate bounds the leases Updates puts in one CLIENT_DATA, so
// that a BNDUPD stays well under the 65535-byte message limit (RFC 5460
// §5.1): a lease with every per-lease option is under 100 bytes. A client
// with more leases gets several BNDUPDs; RFC 8156 §7.4 requires all data of
// one client *binding* (lease) in one CLIENT_DATA, which this keeps.
const MaxLeasesPerUpdate = 256

// ErrUnrepresentable is returned for bindings a BNDUPD cannot describe: an
// address lease without a client DUID of 3..130 bytes (OPTION_CLIENT_DATA
// requires OPTION_CLIENTID, and only prefixes may travel alone), or a
// malformed binding.
var ErrUnrepresentable = errors.New("update: binding cannot be described in a BNDUPD")

// HasTimeout reports whether b's binding-status has a timeout, which RFC
// 8156 §7.2 leaves to the implementation: here, exactly when b has a
// StateExpirationTime. OPTION_F_STATE_EXPIRATION_TIME, OPTION_F_PARTNER_LIFETIME
// and OPTION_F_EXPIRATION_TIME are sent only then (§7.4).
func HasTimeout(b *fsm.Binding) bool { return b.StateExpirationTime != 0 }

// PartnerLifetimeToSend returns the OPTION_F_PARTNER_LIFETIME value for b
// (Unix seconds): the pending partner lifetime; once acknowledged (0) the
// acknowledged one, which the partner holds as its expiration-time; failing
// both, the state expiration time.
func PartnerLifetimeToSend(b *fsm.Binding) int64 {
	switch {
	case b.PartnerLifetime != 0:
		return b.PartnerLifetime
	case b.AckedPartnerLifetime != 0:
		return b.AckedPartnerLifetime
	}
	return b.StateExpirationTime
}

// leaseFor builds the per-lease part of a BNDUPD (RFC 8156 §7.4) for b.
// client says whether it goes in a CLIENT_DATA (with the client-related
// options) rather than alone.
func leaseFor(b *fsm.Binding, now time.Time, client bool) wire.Lease {
	l := wire.Lease{
		Prefix:           b.Resource.Prefix(),
		BindingStatus:    wire.BindingStatus(b.Status),
		StartTimeOfState: wire.U32(toFO(b.StartTimeOfState)),
	}
	if client {
		l.Preferred, l.Valid = b.PreferredLifetime, b.ValidLifetime
		if b.CLTT != 0 {
			l.CLTTime = wire.U32(uint32(max64(now.Unix()-b.CLTT, 0)))
		}
		l.PartnerRawCLTTime = foPtr(b.PartnerRawCLTT)
	}
	if HasTimeout(b) {
		l.StateExpirationTime = foPtr(b.StateExpirationTime)
		l.PartnerLifetime = foPtr(PartnerLifetimeToSend(b))
		l.ExpirationTime = foPtr(b.ExpirationTime)
	}
	return l
}

func checkBinding(b *fsm.Binding) error {
	if !b.Resource.Valid() || !b.Status.Valid() {
		return fmt.Errorf("%w: %v status %v", ErrUnrepresentable, b.Resource, b.Status)
	}
	return nil
}

func duidOK(d string) bool { return len(d) >= wire.MinDUIDLen && len(d) <= wire.MaxDUIDLen }

// ClientDataFor builds the OPTION_CLIENT_DATA of a BNDUPD (RFC 8156 §7.4)
// describing bindings, all held by client duid, as of now:
// OPTION_CLIENTID, OPTION_LQ_BASE_TIME = now, and one IA per (IA type,
// IAID) in (type, IAID, resource) order, each lease with its lifetimes,
// binding-status, start-time-of-state, OPTION_CLT_TIME (now - CLTT, when
// CLTT is set), partner-raw-clt-time (when set) and, when the status has a
// timeout (HasTimeout), state-expiration-time, partner lifetime
// (PartnerLifetimeToSend) and expiration-time (when set). T1 and T2 are 0:
// the binding database does not keep them. No OPTION_VSS (RFC 6607 is not
// supported), reconfigure, relay or DNS data (not kept either).
func ClientDataFor(duid string, bindings []fsm.Binding, now time.Time) (*wire.ClientData, error) {
	if !duidOK(duid) {
		return nil, fmt.Errorf("%w: client DUID of %d bytes", ErrUnrepresentable, len(duid))
	}
	if len(bindings) == 0 {
		return nil, fmt.Errorf("%w: no bindings for the client", ErrUnrepresentable)
	}
	bs := slices.Clone(bindings)
	slices.SortFunc(bs, func(a, b fsm.Binding) int {
		if a.Resource.Type != b.Resource.Type {
			return int(a.Resource.Type) - int(b.Resource.Type)
		}
		if a.IAID != b.IAID {
			if a.IAID < b.IAID {
				return -1
			}
			return 1
		}
		return a.Resource.Compare(b.Resource)
	})
	cd := &wire.ClientData{ClientID: []byte(duid), BaseTime: wire.U32(toFO(now.Unix()))}
	for i := range bs {
		b := &bs[i]
		if err := checkBinding(b); err != nil {
			return nil, err
		}
		if b.DUID != duid {
			return nil, fmt.Errorf("%w: %v belongs to another client", ErrUnrepresentable, b.Resource)
		}
		if i > 0 && bs[i-1].Resource == b.Resource {
			return nil, fmt.Errorf("%w: %v listed twice", ErrUnrepresentable, b.Resource)
		}
		t := wireIAType(b.Resource.Type)
		if n := len(cd.IAs); n == 0 || cd.IAs[n-1].Type != t || cd.IAs[n-1].IAID != b.IAID {
			cd.IAs = append(cd.IAs, wire.IA{Type: t, IAID: b.IAID})
		}
		ia := &cd.IAs[len(cd.IAs)-1]
		ia.Leases = append(ia.Leases, leaseFor(b, now, true))
	}
	return cd, nil
}

// LonePrefixFor builds the lone OPTION_IAPREFIX of a BNDUPD (RFC 8156 §7.4
// form 2) for b, a delegable prefix that belongs to no client, typically
// FREE or FREE-BACKUP (proportional allocation, UPDREQALL): LQ_BASE_TIME =
// now, binding-status, start-time-of-state and, with a timeout, the
// state-expiration-time, partner lifetime and expiration-time. Preferred
// and valid lifetimes are 0 (the RFC does not say; digest §3.4). An ACTIVE
// prefix needs its client and is refused.
func LonePrefixFor(b *fsm.Binding, now time.Time) (*wire.LonePrefix, error) {
	if err := checkBinding(b); err != nil {
		return nil, err
	}
	if b.Resource.Type != fsm.IAPD || b.Status == fsm.StatusActive {
		return nil, fmt.Errorf("%w: %v %v cannot travel without its client", ErrUnrepresentable, b.Resource, b.Status)
	}
	return &wire.LonePrefix{Lease: leaseFor(b, now, false), BaseTime: wire.U32(toFO(now.Unix()))}, nil
}

// Record is one lease as a received BNDUPD describes it: a candidate
// binding in the sender's terms. Resource, Status (as received, possibly
// PENDING-FREE), DUID ("" in a lone prefix), IAID, the lifetimes, and the
// sender's times in Unix seconds, 0 where the option is absent:
//
//	StartTimeOfState     OPTION_F_START_TIME_OF_STATE
//	StateExpirationTime  OPTION_F_STATE_EXPIRATION_TIME
//	CLTT                 LQ_BASE_TIME - OPTION_CLT_TIME (the sender's CLTT)
//	PartnerLifetime      OPTION_F_PARTNER_LIFETIME
//	PartnerRawCLTT       OPTION_F_PARTNER_RAW_CLT_TIME
//	ExpirationTime       OPTION_F_EXPIRATION_TIME
//
// Flags, AckedPartnerLifetime and Rev are zero. Absolute times are taken as
// the instant nearest now congruent to the failover time (mod 2^32 s).
type Record struct {
	fsm.Binding
	// T1 and T2 of the enclosing IA (0 for a lone prefix).
	T1, T2 uint32
	// Lone marks a lone OPTION_IAPREFIX (no client).
	Lone bool
	// DNS marks DNS update information (OPTION_CLIENT_FQDN or
	// OPTION_F_DNS_REMOVAL_INFO), which this package does not store.
	DNS bool
}

// Reject is why (part of) a BNDUPD is rejected: the status for the BNDREPLY.
type Reject struct {
	Code    wire.StatusCode
	Message string
}

func (r *Reject) Error() string { return r.Code.String() + ": " + r.Message }

// Status returns r as an OPTION_STATUS_CODE.
func (r *Reject) Status() *wire.Status { return &wire.Status{Code: r.Code, Message: r.Message} }

func reject(code wire.StatusCode, format string, args ...any) *Reject {
	return &Reject{Code: code, Message: fmt.Sprintf(format, args...)}
}

// parseLease turns one received lease into a Record. It fails with
// MissingBindingInformation when the lease lacks what processing needs
// (binding-status, start-time-of-state, a state-expiration-time for ACTIVE,
// a base time for OPTION_CLT_TIME, a client for ACTIVE) and with
// ConfigurationConflict when its address or prefix is not one this server
// could hold.
func parseLease(t fsm.IAType, duid string, ia *wire.IA, base *uint32, l *wire.Lease, lone bool, now time.Time) (Record, *Reject) {
	var rec Record
	r, ok := resourceOf(t, l.Prefix)
	if !ok {
		return rec, reject(wire.StatusConfigurationConflict, "%v is not a valid %v lease", l.Prefix, t)
	}
	rec.Resource = r
	switch {
	case !l.BindingStatus.Valid():
		return rec, reject(wire.StatusMissingBindingInformation, "%v: no binding-status", r)
	case l.StartTimeOfState == nil:
		return rec, reject(wire.StatusMissingBindingInformation, "%v: no start-time-of-state", r)
	case l.CLTTime != nil && base == nil:
		return rec, reject(wire.StatusMissingBindingInformation, "%v: OPTION_CLT_TIME without OPTION_LQ_BASE_TIME", r)
	case l.BindingStatus == wire.BindingActive && l.StateExpirationTime == nil:
		return rec, reject(wire.StatusMissingBindingInformation, "%v: ACTIVE without state-expiration-time", r)
	case l.BindingStatus == wire.BindingActive && duid == "":
		return rec, reject(wire.StatusMissingBindingInformation, "%v: ACTIVE without a client", r)
	}
	rec.Status = fsm.Status(l.BindingStatus)
	rec.DUID = duid
	rec.Lone = lone
	if ia != nil {
		rec.IAID, rec.T1, rec.T2 = ia.IAID, ia.T1, ia.T2
	}
	rec.PreferredLifetime, rec.ValidLifetime = l.Preferred, l.Valid
	rec.StartTimeOfState = fromFO(*l.StartTimeOfState, now)
	rec.StateExpirationTime = fromFOp(l.StateExpirationTime, now)
	if l.CLTTime != nil {
		rec.CLTT = fromFO(*base-*l.CLTTime, now)
	}
	rec.PartnerLifetime = fromFOp(l.PartnerLifetime, now)
	rec.PartnerRawCLTT = fromFOp(l.PartnerRawCLTTime, now)
	rec.ExpirationTime = fromFOp(l.ExpirationTime, now)
	rec.DNS = l.FQDN != nil || l.DNSRemoval != nil
	return rec, nil
}

// ParseClientData returns the leases of a received BNDUPD's CLIENT_DATA as
// Records, in message order. It fails on the first lease that cannot be
// processed (a *Reject) or on a client DUID of the wrong size.
func ParseClientData(cd *wire.ClientData, now time.Time) ([]Record, error) {
	if !duidOK(string(cd.ClientID)) {
		return nil, reject(wire.StatusMissingBindingInformation, "client DUID of %d bytes", len(cd.ClientID))
	}
	var out []Record
	for i := range cd.IAs {
		ia := &cd.IAs[i]
		t := fsmIAType(ia.Type)
		if t == 0 {
			return nil, reject(wire.StatusMissingBindingInformation, "unknown IA type %v", ia.Type)
		}
		for j := range ia.Leases {
			rec, rj := parseLease(t, string(cd.ClientID), ia, cd.BaseTime, &ia.Leases[j], false, now)
			if rj != nil {
				return nil, rj
			}
			out = append(out, rec)
		}
	}
	return out, nil
}

// ParseLonePrefix returns the Record of a received BNDUPD's lone IAPREFIX.
func ParseLonePrefix(p *wire.LonePrefix, now time.Time) (Record, error) {
	rec, rj := parseLease(fsm.IAPD, "", nil, p.BaseTime, &p.Lease, true, now)
	if rj != nil {
		return rec, rj
	}
	return rec, nil
}

// Update is the content of one BNDUPD and the bindings it describes.
type Update struct {
	// Exactly one of ClientData and Prefix is set.
	ClientData *wire.ClientData
	Prefix     *wire.LonePrefix
	// Bindings are the described bindings as they were when the update was
	// built, with their Rev: hand them to ApplyBndReply / ApplyBndReplyPrefix
	// with the answer.
	Bindings []fsm.Binding
}

// Message returns the BNDUPD carrying u.
func (u *Update) Message(xid, sentTime uint32) *wire.Message {
	if u.Prefix != nil {
		return wire.NewBndUpdPrefix(xid, sentTime, u.Prefix)
	}
	return wire.NewBndUpd(xid, sentTime, u.ClientData)
}

// lone reports whether b travels as a lone IAPREFIX: a delegable prefix that
// is FREE or FREE-BACKUP, or that has no usable client DUID.
func lone(b *fsm.Binding) bool {
	return b.Resource.Type == fsm.IAPD && b.Status != fsm.StatusActive &&
		(b.Status == fsm.StatusFree || b.Status == fsm.StatusFreeBackup || !duidOK(b.DUID))
}

// Updates groups bindings into BNDUPD contents as of now: one CLIENT_DATA
// per client (split every MaxLeasesPerUpdate leases), clients in DUID order;
// then one lone IAPREFIX per delegable prefix that is FREE or FREE-BACKUP or
// has no client, in resource order. Bindings no BNDUPD can describe (see
// ErrUnrepresentable) are returned in skipped. Use it on the result of
// SelectOwed (UPDREQ, entering NORMAL, the periodic scan) or SelectAll
// (UPDREQALL).
func Updates(bindings []fsm.Binding, now time.Time) (ups []Update, skipped []fsm.Binding) {
	byClient := map[string][]fsm.Binding{}
	var lones []fsm.Binding
	for i := range bindings {
		b := bindings[i]
		switch {
		case checkBinding(&b) != nil:
			skipped = append(skipped, b)
		case lone(&b):
			lones = append(lones, b)
		case duidOK(b.DUID):
			byClient[b.DUID] = append(byClient[b.DUID], b)
		default:
			skipped = append(skipped, b)
		}
	}
	duids := make([]string, 0, len(byClient))
	for d := range byClient {
		duids = append(duids, d)
	}
	slices.Sort(duids)
	for _, d := range duids {
		bs := byClient[d]
		slices.SortFunc(bs, func(a, b fsm.Binding) int { return a.Resource.Compare(b.Resource) })
		bs = slices.CompactFunc(bs, func(a, b fsm.Binding) bool { return a.Resource == b.Resource })
		for len(bs) > 0 {
			n := min(len(bs), MaxLeasesPerUpdate)
			cd, err := ClientDataFor(d, bs[:n], now)
			if err != nil { // not reached: every binding was checked
				skipped = append(skipped, bs[:n]...)
			} else {
				ups = append(ups, Update{ClientData: cd, Bindings: slices.Clone(bs[:n])})
			}
			bs = bs[n:]
		}
	}
	slices.SortFunc(lones, func(a, b fsm.Binding) int { return a.Resource.Compare(b.Resource) })
	for i := range lones {
		if i > 0 && lones[i-1].Resource == lones[i].Resource {
			continue
		}
		lp, err := LonePrefixFor(&lones[i], now)
		if err != nil {
			skipped = append(skipped, lones[i])
			continue
		}
		ups = append(ups, Update{Prefix: lp, Bindings: []fsm.Binding{lones[i]}})
	}
	return ups, skipped
}
