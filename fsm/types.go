package fsm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
)

// Status is an RFC 8156 binding-status (RFC 8156 §5.5.1, OPTION_F_BINDING_STATUS).
// The numeric values are the ones on the wire.
type Status uint8

// Binding-status values.
const (
	StatusActive      Status = 1
	StatusExpired     Status = 2
	StatusReleased    Status = 3
	StatusPendingFree Status = 4
	StatusFree        Status = 5
	StatusFreeBackup  Status = 6
	StatusAbandoned   Status = 7
	StatusReset       Status = 8

	maxStatus = StatusReset
)

var statusNames = [...]string{
	0:                 "NONE",
	StatusActive:      "ACTIVE",
	StatusExpired:     "EXPIRED",
	StatusReleased:    "RELEASED",
	StatusPendingFree: "PENDING-FREE",
	StatusFree:        "FREE",
	StatusFreeBackup:  "FREE-BACKUP",
	StatusAbandoned:   "ABANDONED",
	StatusReset:       "RESET",
}

// Valid reports whether s is one of the eight RFC 8156 values.
func (s Status) Valid() bool { return s >= StatusActive && s <= maxStatus }

// String returns the RFC 8156 name, e.g. "FREE-BACKUP".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("STATUS(%d)", uint8(s))
}

// ParseStatus parses an RFC 8156 binding-status name (case-insensitive).
func ParseStatus(name string) (Status, error) {
	for i := StatusActive; i <= maxStatus; i++ {
		if strings.EqualFold(statusNames[i], name) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown binding status %q", name)
}

// IAType is the kind of identity association a resource is leased in.
type IAType uint8

// IA types.
const (
	IANA IAType = 1 // non-temporary address
	IATA IAType = 2 // temporary address
	IAPD IAType = 3 // delegated prefix

	maxIAType = IAPD
)

// Valid reports whether t is a known IA type.
func (t IAType) Valid() bool { return t >= IANA && t <= maxIAType }

// String returns "na", "ta" or "pd".
func (t IAType) String() string {
	switch t {
	case IANA:
		return "na"
	case IATA:
		return "ta"
	case IAPD:
		return "pd"
	}
	return fmt.Sprintf("ia(%d)", uint8(t))
}

// ParseIAType parses "na", "ta" or "pd".
func ParseIAType(s string) (IAType, error) {
	for t := IANA; t <= maxIAType; t++ {
		if strings.EqualFold(t.String(), s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown IA type %q (want na, ta or pd)", s)
}

// Resource identifies one leasable thing: an address (Len 128) in an IA_NA or
// IA_TA, or a prefix in an IA_PD. It is comparable and used as the primary key.
// Bits of IP beyond Len are always zero.
type Resource struct {
	Type IAType
	Len  uint8
	IP   [16]byte
}

// AddrResource returns the resource for address a leased in an IA of type t
// (IANA or IATA).
func AddrResource(t IAType, a netip.Addr) Resource {
	return Resource{Type: t, Len: 128, IP: a.As16()}
}

// PrefixResource returns the resource for delegated prefix p (masked).
func PrefixResource(p netip.Prefix) Resource {
	p = p.Masked()
	return Resource{Type: IAPD, Len: uint8(p.Bits()), IP: p.Addr().As16()}
}

// Addr returns the address (or the first address of the prefix).
func (r Resource) Addr() netip.Addr { return netip.AddrFrom16(r.IP) }

// Prefix returns the resource as a prefix (a /128 for addresses).
func (r Resource) Prefix() netip.Prefix { return netip.PrefixFrom(r.Addr(), int(r.Len)) }

// String returns "na 2001:db8::1" or "pd 2001:db8:8000::/56".
func (r Resource) String() string {
	if r.Type == IAPD {
		return r.Type.String() + " " + r.Prefix().String()
	}
	return r.Type.String() + " " + r.Addr().String()
}

// ParseResource parses the String form: "na 2001:db8::1", "ta ...", "pd 2001:db8:8000::/56".
func ParseResource(s string) (Resource, error) {
	ts, v, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Resource{}, fmt.Errorf("resource %q: want \"na ADDRESS\" or \"pd PREFIX\"", s)
	}
	t, err := ParseIAType(ts)
	if err != nil {
		return Resource{}, err
	}
	if t == IAPD {
		p, err := netip.ParsePrefix(strings.TrimSpace(v))
		if err != nil || !p.Addr().Is6() || p.Masked() != p {
			return Resource{}, fmt.Errorf("resource %q: bad prefix", s)
		}
		return PrefixResource(p), nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(v))
	if err != nil || !a.Is6() {
		return Resource{}, fmt.Errorf("resource %q: bad IPv6 address", s)
	}
	return AddrResource(t, a), nil
}

// Valid reports whether r is well formed: a known type, addresses are /128,
// prefixes are at most /128 with no host bits set.
func (r Resource) Valid() bool {
	if !r.Type.Valid() || r.Len > 128 {
		return false
	}
	if r.Type != IAPD {
		return r.Len == 128
	}
	return r.Prefix().Masked().Addr() == r.Addr()
}

// Compare orders resources by type, then address, then length.
func (r Resource) Compare(o Resource) int {
	if r.Type != o.Type {
		if r.Type < o.Type {
			return -1
		}
		return 1
	}
	if c := bytes.Compare(r.IP[:], o.IP[:]); c != 0 {
		return c
	}
	switch {
	case r.Len < o.Len:
		return -1
	case r.Len > o.Len:
		return 1
	}
	return 0
}

// Flags are per-binding booleans.
type Flags uint8

const (
	// FlagUpdateOwed is the "partner needs update" flag of RFC 8156 §7.5.4: a
	// BNDUPD must be sent for this binding even if PartnerLifetime is zero
	// (e.g. a status change to EXPIRED or RELEASED, or a rejected update to resend).
	FlagUpdateOwed Flags = 1 << iota
	// FlagResent marks that the owed update was already resent once after an
	// OutdatedBindingInformation rejection (RFC 8156 §7.5.4: do not resend at once again).
	FlagResent

	knownFlags = FlagUpdateOwed | FlagResent
)

// Names returns the names of the flags that are set ("update-owed",
// "resent"), and any unknown bits in hex.
func (f Flags) Names() []string {
	var out []string
	for _, n := range []struct {
		f    Flags
		name string
	}{{FlagUpdateOwed, "update-owed"}, {FlagResent, "resent"}} {
		if f&n.f != 0 {
			out = append(out, n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		out = append(out, fmt.Sprintf("%#x", uint8(f)))
	}
	return out
}

// Binding is one lease record. All times are Unix seconds (0 = unset); the
// lifetimes are seconds as given to the client. A Binding held by State is
// immutable: State replaces it on change, so a View never sees it move.
type Binding struct {
	Resource Resource
	Status   Status
	Flags    Flags
	IAID     uint32
	// DUID is the client's DUID, raw bytes (a string so it is immutable and comparable).
	DUID string

	PreferredLifetime uint32
	ValidLifetime     uint32

	// CLTT is client-last-transaction-time: when this server last talked to the client about it.
	CLTT int64
	// StartTimeOfState is when Status last changed.
	StartTimeOfState int64
	// StateExpirationTime is when Status times out (for ACTIVE: the end of the valid lifetime).
	StateExpirationTime int64
	// PartnerLifetime is the partner lifetime sent, or still to be sent, in
	// OPTION_F_PARTNER_LIFETIME. Non-zero means an update is owed (RFC 8156 §7.3).
	PartnerLifetime int64
	// AckedPartnerLifetime is the largest partner lifetime the partner acknowledged.
	AckedPartnerLifetime int64
	// ExpirationTime is the largest lifetime this server acknowledged to the partner.
	ExpirationTime int64
	// PartnerRawCLTT is the partner's client-last-transaction-time, exactly as received.
	PartnerRawCLTT int64

	// Rev is the raft log index of the command that last wrote this binding.
	// Set by State; ignored in commands.
	Rev uint64
}

// Owed reports whether an update to the partner is owed for this binding.
func (b *Binding) Owed() bool { return b.PartnerLifetime != 0 || b.Flags&FlagUpdateOwed != 0 }

// DUIDHex returns the client DUID as lowercase hex with no separators.
func (b *Binding) DUIDHex() string { return hex.EncodeToString([]byte(b.DUID)) }

// validate checks the invariants a stored binding must satisfy.
func (b *Binding) validate() error {
	switch {
	case !b.Resource.Valid():
		return fmt.Errorf("%w: bad resource %v", ErrInvalidCommand, b.Resource)
	case !b.Status.Valid():
		return fmt.Errorf("%w: %v: bad status %d", ErrInvalidCommand, b.Resource, b.Status)
	case b.Flags&^knownFlags != 0:
		return fmt.Errorf("%w: %v: unknown flags %#x", ErrInvalidCommand, b.Resource, b.Flags)
	case len(b.DUID) > MaxDUIDLen:
		return fmt.Errorf("%w: %v: DUID of %d bytes (max %d)", ErrInvalidCommand, b.Resource, len(b.DUID), MaxDUIDLen)
	case b.Status == StatusActive && len(b.DUID) == 0:
		return fmt.Errorf("%w: %v: ACTIVE binding without a client DUID", ErrInvalidCommand, b.Resource)
	}
	return nil
}

// MaxDUIDLen is the longest DUID accepted: 2 type octets + 128 (RFC 8415 §11.1).
const MaxDUIDLen = 130

// EndpointState is the failover endpoint's persistent record (RFC 8156 §8.2).
// The fsm stores it verbatim; the failover package gives the fields meaning.
// State codes are RFC 8156 server state values (1..10), 0 = none.
type EndpointState struct {
	State             uint8
	PreviousState     uint8
	StateSince        int64 // Unix seconds
	PartnerState      uint8
	PartnerStateSince int64
	// LastContact is when the most recent message from the partner was received.
	LastContact int64
	// LastOperating is the last time this server is known to have been running
	// failover (TIME-OF-FAILURE reckoning at startup).
	LastOperating int64
	// PartnerDownTime is when PARTNER-DOWN was entered (0 when not in it).
	PartnerDownTime int64
	// Communicated is set once this endpoint has ever talked to its partner.
	Communicated bool
	// HeldInStartup asks the endpoint to stay in STARTUP until an operator
	// releases it (set after a snapshot restore).
	HeldInStartup bool
}
