package link

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/failover/role"
	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// Role is this server's role in the relationship (shared with the state
// machine and the binding-update rules).
type Role = role.Role

// Roles. The primary dials and sends CONNECT; the secondary listens.
const (
	Primary   = role.Primary
	Secondary = role.Secondary
)

// ParseRole parses "primary" or "secondary".
func ParseRole(s string) (Role, error) { return role.Parse(s) }

// Defaults.
const (
	DefaultKeepaliveTime       = 60 * time.Second // FO_KEEPALIVE_TIME, RFC 8156 §6.5
	DefaultContactPerKeepalive = 4                // FO_CONTACT_PER_KEEPALIVE_TIME
	DefaultMaxUnackedBndUpd    = 1024             // see Config.MaxUnackedBndUpd
	DefaultRetryMin            = time.Second
	DefaultRetryMax            = 30 * time.Second
	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultMaxPendingConns     = 64                             // see Config.MaxPendingConns
	DefaultMaxSkew             = wire.MaxTimeSkew * time.Second // RFC 8156 §7.1
	DefaultSendQueueLen        = 1024
)

// maxRelationshipName bounds OPTION_F_RELATIONSHIP_NAME (the RFC sets no
// limit; a name is an identifier, not a document).
const maxRelationshipName = 1024

// Config configures one Link: one failover relationship with one partner.
// Zero values take the documented defaults; Validate names the bad field.
type Config struct {
	// Role is Primary or Secondary. Required.
	Role Role
	// Relationship is OPTION_F_RELATIONSHIP_NAME: non-empty UTF-8 without
	// NUL, at most 1024 bytes. Both partners must configure the same name.
	// Required.
	Relationship string
	// Local is this server's address, "[2001:db8:1::1]:647" (the port
	// defaults to 647 when omitted). The secondary listens on it; the
	// primary dials from its IP (ephemeral port), because the secondary
	// accepts connections only from the configured partner IP. It must not
	// be an unspecified address. Port 0 (tests) listens on an ephemeral
	// port; see Link.ListenAddr.
	Local string
	// Peer is the partner's address, same syntax. The primary dials it; the
	// secondary accepts connections only from its IP (the port is ignored).
	Peer string

	// MCLT is the maximum client lead time: whole seconds, at least 1s. Both
	// partners must configure the same value (see the package
	// documentation: stricter than RFC 8156 §6.1.2). Required.
	MCLT time.Duration
	// KeepaliveTime is our FO_KEEPALIVE_TIME, sent in CONNECT/CONNECTREPLY:
	// if nothing arrives for this long the connection is dead. Whole
	// seconds. Default 60s.
	KeepaliveTime time.Duration
	// ContactPerKeepalive is FO_CONTACT_PER_KEEPALIVE_TIME: we send CONTACT
	// after the partner's keepalive time divided by this with nothing else
	// sent. Default 4.
	ContactPerKeepalive int
	// MaxUnackedBndUpd is the OPTION_F_MAX_UNACKED_BNDUPD we advertise: how
	// many BNDUPDs the partner may have outstanding to us. Default 1024:
	// the window, not the disk, bounds an UPDREQALL, since each BNDUPD
	// waits for a commit here and the partner gets at most window / commit
	// latency BNDUPDs/s. With 64 a million bindings took minutes; 1024 lets
	// hundreds share each commit (docs/benchmarks.md, UPDREQALL resync).
	MaxUnackedBndUpd uint32
	// ConnectFlags is the OPTION_F_CONNECT_FLAGS we send. With
	// FIXED_PD_LENGTH set we declare that we delegate fixed-length prefixes
	// only and cannot process variable-length delegation, so a partner
	// without it is refused (RFC 8156 §6.1.2 example).
	ConnectFlags wire.ConnectFlags

	// RetryMin and RetryMax bound the primary's reconnect backoff: the wait
	// doubles from RetryMin after each failed attempt up to RetryMax; after
	// a rejection or a DISCONNECT the primary waits RetryMax (RFC 8156
	// §6.1: retry less often, but forever). Defaults 1s and 30s.
	RetryMin, RetryMax time.Duration
	// HandshakeTimeout bounds the handshake (STARTTLS, TLS, CONNECT,
	// CONNECTREPLY): the time a secondary waits for an accepted connection
	// to complete CONNECT, and the time a primary waits for CONNECTREPLY.
	// Default 10s.
	HandshakeTimeout time.Duration
	// MaxPendingConns caps the secondary's accepted but not yet established
	// connections from the partner's IP; a new one evicts the oldest that
	// has not yet sent a whole message, or else the oldest. Default 64: the
	// real partner's connection must survive that many newer ones until its
	// handshake goroutine reads CONNECT; with 4, a flood from the partner's
	// own address evicted it on most attempts (docs/reliability/
	// hostile-failover.md). Each pending connection holds a goroutine and a
	// 4 KiB read buffer, for at most HandshakeTimeout.
	MaxPendingConns int
	// LogInterval rate-limits the secondary's log lines about refused
	// connections: at most one per source IP and reason per interval, the
	// next one followed by a count of those suppressed. Default 1 minute.
	LogInterval time.Duration
	// MaxSkew is the largest accepted difference between a message's
	// sent-time and our clock. Default 5s (RFC 8156 §7.1).
	MaxSkew time.Duration
	// SendQueueLen bounds the messages queued for writing on one session,
	// besides room for the partner's BNDUPD window; Send returns
	// ErrSendQueueFull beyond it. Default 1024.
	SendQueueLen int

	// TLS, when set, is secure mode (RFC 7653 §8.2, §9.1): STARTTLS before
	// CONNECT, mutual certificate authentication, and a partner that does
	// not do TLS is refused. Nil is insecure mode.
	TLS *TLSConfig

	// Transport opens connections. Default TCP{}.
	Transport Transport
	// Clock drives every timer and time stamp. Default clock.Real{}.
	Clock clock.Clock
	// Logger receives structured logs. Default: no-op.
	Logger *zap.Logger
}

// TLSConfig is secure mode. Give either the three PEM files, or ready
// tls.Configs: Client is used by a primary, Server by a secondary. Files are
// loaded by New into both. Either way the link enforces TLS 1.2 or later,
// RequireAndVerifyClientCert on the server side and certificate
// verification on the client side (with the partner's IP as the expected
// name unless Client.ServerName is set).
type TLSConfig struct {
	CertFile, KeyFile, CAFile string

	Client *tls.Config
	Server *tls.Config
}

// resolved is Config with defaults applied and addresses parsed.
type resolved struct {
	Config
	local, peer netip.AddrPort
	clientTLS   *tls.Config // primary in secure mode
	serverTLS   *tls.Config // secondary in secure mode
}

func (c *Config) withDefaults() Config {
	o := *c
	if o.KeepaliveTime == 0 {
		o.KeepaliveTime = DefaultKeepaliveTime
	}
	if o.ContactPerKeepalive == 0 {
		o.ContactPerKeepalive = DefaultContactPerKeepalive
	}
	if o.MaxUnackedBndUpd == 0 {
		o.MaxUnackedBndUpd = DefaultMaxUnackedBndUpd
	}
	if o.RetryMin == 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax == 0 {
		o.RetryMax = max(DefaultRetryMax, o.RetryMin)
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxPendingConns == 0 {
		o.MaxPendingConns = DefaultMaxPendingConns
	}
	if o.MaxSkew == 0 {
		o.MaxSkew = DefaultMaxSkew
	}
	if o.LogInterval == 0 {
		o.LogInterval = DefaultLogInterval
	}
	if o.SendQueueLen == 0 {
		o.SendQueueLen = DefaultSendQueueLen
	}
	if o.Transport == nil {
		o.Transport = TCP{}
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// ParseAddr parses "[2001:db8::1]:647", "2001:db8::1", "[2001:db8::1]" or
// "192.0.2.1:647"; the port defaults to wire.Port (647).
func ParseAddr(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(h)
	if err != nil || (h != s && !a.Is6()) {
		return netip.AddrPort{}, fmt.Errorf("%q is not an address (write \"[2001:db8::1]:647\")", s)
	}
	return netip.AddrPortFrom(a, wire.Port), nil
}

// Validate checks the configuration (after defaults) and reports every bad
// field, each error wrapping ErrInvalidConfig and naming the field.
func (c *Config) Validate() error {
	_, err := c.resolve(false)
	return err
}

// resolve applies defaults, validates, parses addresses and, when load is
// set, loads the TLS files.
func (c *Config) resolve(load bool) (*resolved, error) {
	r := &resolved{Config: c.withDefaults()}
	o := &r.Config
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	if o.Role != Primary && o.Role != Secondary {
		bad("Role", "must be Primary or Secondary")
	}
	switch {
	case o.Relationship == "":
		bad("Relationship", "required")
	case !utf8.ValidString(o.Relationship) || strings.IndexByte(o.Relationship, 0) >= 0:
		bad("Relationship", "%q must be UTF-8 without NUL (RFC 8156 §5.5.14)", o.Relationship)
	case len(o.Relationship) > maxRelationshipName:
		bad("Relationship", "%d bytes is longer than %d", len(o.Relationship), maxRelationshipName)
	}
	var err error
	if r.local, err = ParseAddr(o.Local); err != nil {
		bad("Local", "%v", err)
	} else if r.local.Addr().IsUnspecified() {
		bad("Local", "%v is unspecified: the partner checks our source address, so give the address itself", r.local)
	}
	if r.peer, err = ParseAddr(o.Peer); err != nil {
		bad("Peer", "%v", err)
	} else if r.peer.Addr().IsUnspecified() {
		bad("Peer", "%v is unspecified", r.peer)
	} else if r.peer.Port() == 0 && o.Role == Primary {
		bad("Peer", "%v has port 0", r.peer)
	}
	if r.local.IsValid() && r.peer.IsValid() && r.local.Addr() == r.peer.Addr() && r.local.Port() == r.peer.Port() {
		bad("Peer", "%v is the same as Local", r.peer)
	}
	seconds := func(field string, d time.Duration, min time.Duration) {
		switch {
		case d < min:
			bad(field, "%v is less than %v", d, min)
		case d%time.Second != 0:
			bad(field, "%v is not a whole number of seconds (it is sent in seconds)", d)
		case d/time.Second > math.MaxUint32:
			bad(field, "%v does not fit in 32 bits of seconds", d)
		}
	}
	seconds("MCLT", o.MCLT, time.Second)
	seconds("KeepaliveTime", o.KeepaliveTime, time.Second)
	if o.ContactPerKeepalive < 1 || o.ContactPerKeepalive > 1000 {
		bad("ContactPerKeepalive", "%d out of range 1..1000", o.ContactPerKeepalive)
	}
	if u := o.ConnectFlags.Unknown(); u != 0 {
		bad("ConnectFlags", "bits %#x are not defined by RFC 8156 §5.5.2", uint16(u))
	}
	if o.RetryMin < 0 {
		bad("RetryMin", "%v is negative", o.RetryMin)
	}
	if o.RetryMax < o.RetryMin {
		bad("RetryMax", "%v is less than RetryMin %v", o.RetryMax, o.RetryMin)
	}
	if o.HandshakeTimeout < 0 {
		bad("HandshakeTimeout", "%v is negative", o.HandshakeTimeout)
	}
	if o.MaxPendingConns < 1 {
		bad("MaxPendingConns", "%d must be at least 1", o.MaxPendingConns)
	}
	if o.LogInterval < 0 {
		bad("LogInterval", "%v is negative", o.LogInterval)
	}
	if o.MaxSkew < time.Second {
		bad("MaxSkew", "%v is less than the 1s resolution of sent-time", o.MaxSkew)
	}
	if o.SendQueueLen < 1 {
		bad("SendQueueLen", "%d must be at least 1", o.SendQueueLen)
	}
	if o.TLS != nil {
		errs = append(errs, r.resolveTLS(load)...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *resolved) resolveTLS(load bool) []error {
	t := r.TLS
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: TLS.%s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	files := t.CertFile != "" || t.KeyFile != "" || t.CAFile != ""
	if files && (t.CertFile == "" || t.KeyFile == "" || t.CAFile == "") {
		bad("CertFile", "give all three of CertFile, KeyFile and CAFile, or none")
		return errs
	}
	client, server := t.Client, t.Server
	if files && load {
		loaded, err := LoadTLS(t.CertFile, t.KeyFile, t.CAFile)
		if err != nil {
			bad("CertFile", "%v", err)
			return errs
		}
		if client == nil {
			client = loaded.Client
		}
		if server == nil {
			server = loaded.Server
		}
	}
	if files && !load {
		return errs // checked when New loads them
	}
	switch r.Role {
	case Primary:
		if client == nil {
			bad("Client", "required for a primary (or give the files)")
			break
		}
		if client.InsecureSkipVerify {
			bad("Client", "InsecureSkipVerify: the primary must verify the secondary's certificate (RFC 7653 §8.2)")
		}
		if len(client.Certificates) == 0 && client.GetClientCertificate == nil {
			bad("Client", "no certificate: TLS between partners is mutually authenticated (RFC 7653 §9.1)")
		}
		c := client.Clone()
		c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
		if c.ServerName == "" && r.peer.IsValid() {
			c.ServerName = r.peer.Addr().WithZone("").String()
		}
		if c.Time == nil {
			c.Time = r.Clock.Now
		}
		r.clientTLS = c
	case Secondary:
		if server == nil {
			bad("Server", "required for a secondary (or give the files)")
			break
		}
		if server.ClientAuth != tls.RequireAndVerifyClientCert {
			bad("Server", "ClientAuth must be RequireAndVerifyClientCert (RFC 7653 §9.1: mutual authentication)")
		}
		if len(server.Certificates) == 0 && server.GetCertificate == nil && server.GetConfigForClient == nil {
			bad("Server", "no certificate")
		}
		s := server.Clone()
		s.MinVersion = max(s.MinVersion, tls.VersionTLS12)
		if s.Time == nil {
			s.Time = r.Clock.Now
		}
		r.serverTLS = s
	}
	return errs
}

// LoadTLS reads a PEM certificate and key (this server's identity) and a PEM
// CA bundle (what the partner's certificate must chain to) and returns the
// client and server configurations: TLS 1.2 or later, the server requiring
// and verifying a client certificate, the client verifying the server's.
func LoadTLS(certFile, keyFile, caFile string) (*TLSConfig, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return NewTLSConfig(cert, pool), nil
}

// NewTLSConfig returns the client and server configurations for identity
// cert and trust anchors ca (see LoadTLS).
func NewTLSConfig(cert tls.Certificate, ca *x509.CertPool) *TLSConfig {
	return &TLSConfig{
		Client: &tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      ca,
			MinVersion:   tls.VersionTLS12,
		},
		Server: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    ca,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
	}
}

// connectInfo is what we send in CONNECT (withName) or CONNECTREPLY.
func (r *resolved) connectInfo(withName bool) wire.ConnectInfo {
	ci := wire.ConnectInfo{
		Version:          wire.Version1,
		MCLT:             uint32(r.MCLT / time.Second),
		KeepaliveTime:    uint32(r.KeepaliveTime / time.Second),
		MaxUnackedBndUpd: r.MaxUnackedBndUpd,
		Flags:            r.ConnectFlags,
	}
	if withName {
		ci.RelationshipName = r.Relationship
	}
	return ci
}
