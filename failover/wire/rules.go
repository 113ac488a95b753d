package wire

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting level at which an option may appear. Top-
// level options are at depth 1; the deepest legitimate option,
// OPTION_F_DNS_HOST_NAME in OPTION_F_DNS_REMOVAL_INFO in OPTION_IAADDR in
// OPTION_IA_NA in OPTION_CLIENT_DATA, is at depth 5. A container option at
// depth MaxDepth (whose contents would be deeper) is ErrTooDeep, whatever
// its enclosing option.
const MaxDepth = 5

// DUID length bounds (RFC 8415 §11.1: a 2-octet type and 1..128 octets).
const (
	MinDUIDLen = 3
	MaxDUIDLen = 130
)

// isContainer reports whether options of code c hold other options.
func isContainer(c OptionCode) bool {
	switch c {
	case OptClientData, OptIANA, OptIATA, OptIAPD, OptIAAddr, OptIAPrefix, OptFDNSRemovalInfo:
		return true
	}
	return false
}

// topAllowed reports whether a known option code may appear at the top level
// of a message of type t (STARTTLS and REPLY are handled by the callers).
// OPTION_STATUS_CODE is allowed in every message (RFC 8415 §21.13 allows it
// in any message; RFC 8156 uses it in CONNECTREPLY and DISCONNECT).
func topAllowed(t MsgType, c OptionCode) bool {
	if c == OptStatusCode {
		return true
	}
	switch t {
	case MsgConnect, MsgConnectReply:
		switch c {
		case OptFProtocolVersion, OptFMCLT, OptFKeepaliveTime, OptFMaxUnackedBndUpd, OptFRelationshipName, OptFConnectFlags:
			return true
		}
	case MsgState:
		switch c {
		case OptFServerState, OptFServerFlags, OptFStartTimeOfState, OptFPartnerDownTime:
			return true
		}
	case MsgBndUpd, MsgBndReply:
		return c == OptClientData || c == OptIAPrefix
	}
	return false
}

// clientDataAllowed: RFC 8156 §7.4 and §7.6 client-options. OPTION_CLT_TIME
// is per lease in RFC 8156 (inside IAaddr-options), unlike RFC 5007.
func clientDataAllowed(c OptionCode) bool {
	switch c {
	case OptClientID, OptLQBaseTime, OptVSS, OptStatusCode, OptFReconfigureData, OptLQRelayData, OptIANA, OptIATA, OptIAPD:
		return true
	}
	return false
}

// iaAllowed: the IA_*-options of an IA of type t.
func iaAllowed(t IAType, c OptionCode) bool {
	return c == OptStatusCode || c == t.leaseCode()
}

// leaseAllowed: IAaddr-options / IAprefix-options of a lease inside an IA
// (RFC 8156 §7.4, §7.6).
func leaseAllowed(c OptionCode) bool {
	switch c {
	case OptStatusCode, OptFBindingStatus, OptFStartTimeOfState, OptFStateExpirationTime, OptCLTTime,
		OptFPartnerLifetime, OptFPartnerRawCLTTime, OptFExpirationTime, OptFPartnerLifetimeSent,
		OptClientFQDN, OptFDNSRemovalInfo:
		return true
	}
	return false
}

// lonePrefixAllowed: IAprefix-options of a lone OPTION_IAPREFIX (RFC 8156
// §7.4 form (2), §7.6): no client information.
func lonePrefixAllowed(c OptionCode) bool {
	switch c {
	case OptVSS, OptLQBaseTime, OptStatusCode, OptFBindingStatus, OptFStartTimeOfState, OptFStateExpirationTime,
		OptFPartnerLifetime, OptFExpirationTime, OptFPartnerLifetimeSent:
		return true
	}
	return false
}

// dnsRemovalAllowed: RFC 8156 §5.5.3.
func dnsRemovalAllowed(c OptionCode) bool {
	return c == OptFDNSHostName || c == OptFDNSZoneName || c == OptFDNSFlags
}

// repeatable reports whether several options of code c may appear in one
// container: the IAs in a CLIENT_DATA and the leases in an IA.
func repeatable(in, c OptionCode) bool {
	switch in {
	case OptClientData:
		return c == OptIANA || c == OptIATA || c == OptIAPD
	case OptIANA, OptIATA:
		return c == OptIAAddr
	case OptIAPD:
		return c == OptIAPrefix
	}
	return false
}

// seenSet records which known option codes (all < 192) a container holds.
type seenSet [3]uint64

// add records c and reports whether it was new.
func (s *seenSet) add(c OptionCode) bool {
	if c >= 192 {
		return true
	}
	w, b := c/64, uint64(1)<<(c%64)
	if s[w]&b != 0 {
		return false
	}
	s[w] |= b
	return true
}

func (s *seenSet) has(c OptionCode) bool {
	return c < 192 && s[c/64]&(uint64(1)<<(c%64)) != 0
}

// Value checks shared by the decoder and the encoder. Each returns "" when v
// is acceptable, else what is wrong.

func checkDUID(b []byte) string {
	if len(b) < MinDUIDLen || len(b) > MaxDUIDLen {
		return fmt.Sprintf("DUID of %d bytes (want %d..%d)", len(b), MinDUIDLen, MaxDUIDLen)
	}
	return ""
}

func checkRelationshipName(s string) string {
	switch {
	case s == "":
		return "empty relationship name"
	case !utf8.ValidString(s):
		return "relationship name is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "relationship name contains a NUL byte (it MUST NOT be NUL-terminated)"
	}
	return ""
}

func checkServerState(s ServerState) string {
	switch {
	case s == StateStartup:
		return "server-state STARTUP (1) is never sent; a server in STARTUP sends its previous state with the STARTUP flag (RFC 8156 §5.5.16)"
	case !s.Valid():
		return fmt.Sprintf("server-state %d is not an RFC 8156 state (2..10)", uint8(s))
	}
	return ""
}

func checkBindingStatus(b BindingStatus) string {
	if !b.Valid() {
		return fmt.Sprintf("binding-status %d is not an RFC 8156 value (1..8)", uint8(b))
	}
	return ""
}

// checkLeasePrefix checks the address or prefix of a lease held in an
// option of code c (OptIAAddr or OptIAPrefix).
func checkLeasePrefix(c OptionCode, p netip.Prefix) string {
	a := p.Addr()
	switch {
	case !p.IsValid() || !a.Is6() || a.Zone() != "":
		return fmt.Sprintf("%v is not an IPv6 prefix without zone", p)
	case c == OptIAAddr && p.Bits() != 128:
		return fmt.Sprintf("IAADDR address %v must be a /128", p)
	case p.Masked() != p:
		return fmt.Sprintf("prefix %v has bits set beyond its length", p)
	}
	return ""
}

func checkPeerAddr(a netip.Addr) string {
	if !a.Is6() || a.Zone() != "" {
		return fmt.Sprintf("relay peer-address %v is not an IPv6 address without zone", a)
	}
	return ""
}

// checkDomainName checks an uncompressed, fully qualified domain name in
// RFC 1035 §3.1 wire format (RFC 3315 §8 / RFC 8415 §10): labels of 1..63
// octets ending with the root label, 255 octets at most, nothing after.
func checkDomainName(b []byte) string {
	if len(b) == 0 {
		return "empty domain name"
	}
	if len(b) > 255 {
		return fmt.Sprintf("domain name of %d bytes (max 255)", len(b))
	}
	for i := 0; ; {
		if i >= len(b) {
			return "domain name lacks the terminating root label"
		}
		l := int(b[i])
		if l == 0 {
			if i != len(b)-1 {
				return fmt.Sprintf("%d bytes after the root label of the domain name", len(b)-1-i)
			}
			return ""
		}
		if l > 63 {
			return fmt.Sprintf("label length byte %#x at name offset %d (labels are 1..63 bytes; compression is not allowed)", l, i)
		}
		i += 1 + l
	}
}

// EncodeDomainName converts a domain name in dotted form ("host.example.com",
// with or without the final dot) to RFC 1035 wire format. Labels may not
// contain dots; escapes are not interpreted.
func EncodeDomainName(name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".")
	var b []byte
	if name != "" {
		for _, l := range strings.Split(name, ".") {
			if len(l) == 0 || len(l) > 63 {
				return nil, fmt.Errorf("domain name %q: label of %d bytes (want 1..63)", name, len(l))
			}
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	b = append(b, 0)
	if len(b) > 255 {
		return nil, fmt.Errorf("domain name %q: %d bytes in wire format (max 255)", name, len(b))
	}
	return b, nil
}

// DomainNameString converts an RFC 1035 wire-format name to dotted form with
// a final dot ("host.example.com."; the root is "."). It fails on a malformed
// name or a label containing a dot.
func DomainNameString(b []byte) (string, error) {
	if msg := checkDomainName(b); msg != "" {
		return "", fmt.Errorf("%w: %s", ErrMalformed, msg)
	}
	var sb strings.Builder
	for i := 0; b[i] != 0; i += 1 + int(b[i]) {
		l := b[i+1 : i+1+int(b[i])]
		if strings.IndexByte(string(l), '.') >= 0 {
			return "", fmt.Errorf("%w: label %q contains a dot", ErrMalformed, l)
		}
		sb.Write(l)
		sb.WriteByte('.')
	}
	if sb.Len() == 0 {
		return ".", nil
	}
	return sb.String(), nil
}
