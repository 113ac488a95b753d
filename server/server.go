package server

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// Store is what the server needs from the durable binding database
// (raftstore.Store implements it).
type Store interface {
	// Apply commits cmd; an error means it is not in the state.
	Apply(cmd *fsm.Command) (uint64, error)
	// State is the live database, for reads.
	State() *fsm.State
}

// SubnetConfig is one link.
type SubnetConfig struct {
	Prefix            netip.Prefix
	Interface         string // directly attached interface ("" for relayed-only)
	Pools             []AddressRange
	PDPools           []PDPool
	PreferredLifetime time.Duration
	ValidLifetime     time.Duration
	RenewTime         time.Duration // T1
	RebindTime        time.Duration // T2
	DNSServers        []netip.Addr  // overrides Config.DNSServers
}

// AddressRange is an inclusive address range.
type AddressRange struct{ First, Last netip.Addr }

// PDPool delegates prefixes of DelegatedLength from Prefix.
type PDPool struct {
	Prefix          netip.Prefix
	DelegatedLength int
}

// Config configures a Server.
type Config struct {
	Interfaces    []string
	Port          int  // default 547
	SiteMulticast bool // also join ff05::1:3
	Subnets       []SubnetConfig
	DNSServers    []netip.Addr
	DomainSearch  []string
	Preference    int
	RapidCommit   bool
	Workers       int // default 256
	QueueSize     int // default 4096

	DeclineHoldTime time.Duration // default 24h
	ExpiredHoldTime time.Duration // default 1h
	ReclaimInterval time.Duration // default 10s

	// ClientRate limits each client (by Client ID DUID; by address for a
	// message without one) and RelayRate each relay (by the UDP source of
	// Relay-Forw messages); the zero Rate is no limit. RateLimitEntries
	// caps the sources each limiter tracks (default 65536; see rateLimiter
	// for what happens when it is full).
	ClientRate       Rate
	RelayRate        Rate
	RateLimitEntries int

	// Policy decides responsiveness and allocation; default Standalone.
	Policy Policy
	Clock  clock.Clock
	Logger *zap.Logger
}

func (c *Config) setDefaults() {
	if c.Port == 0 {
		c.Port = 547
	}
	if c.Workers == 0 {
		c.Workers = 256
	}
	if c.QueueSize == 0 {
		c.QueueSize = 4096
	}
	if c.DeclineHoldTime == 0 {
		c.DeclineHoldTime = 24 * time.Hour
	}
	if c.ExpiredHoldTime == 0 {
		c.ExpiredHoldTime = time.Hour
	}
	if c.ReclaimInterval == 0 {
		c.ReclaimInterval = 10 * time.Second
	}
	if c.RateLimitEntries == 0 {
		c.RateLimitEntries = 65536
	}
	if c.Policy == nil {
		c.Policy = Standalone{Hold: c.ExpiredHoldTime}
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate reports configuration errors (the config package has already
// checked the file; this guards programmatic use).
func (c *Config) Validate() error {
	var errs []error
	if len(c.Subnets) == 0 {
		errs = append(errs, errors.New("no subnets"))
	}
	for i, sn := range c.Subnets {
		if !sn.Prefix.IsValid() || !sn.Prefix.Addr().Is6() {
			errs = append(errs, fmt.Errorf("subnet %d: bad prefix", i))
		}
		if sn.ValidLifetime < time.Second || sn.PreferredLifetime > sn.ValidLifetime {
			errs = append(errs, fmt.Errorf("subnet %v: bad lifetimes", sn.Prefix))
		}
	}
	for _, r := range []struct {
		name string
		r    Rate
	}{{"client rate", c.ClientRate}, {"relay rate", c.RelayRate}} {
		if r.r.PerSecond < 0 || r.r.Burst < 0 || (r.r.Enabled() && r.r.Burst < 1) {
			errs = append(errs, fmt.Errorf("%s %v: the rate must not be negative and an enabled limit needs a burst of at least 1", r.name, r.r))
		}
	}
	if c.RateLimitEntries < 1 {
		errs = append(errs, errors.New("rate limit entries must be positive"))
	}
	if c.Workers < 1 || c.QueueSize < 1 {
		errs = append(errs, errors.New("workers and queue size must be positive"))
	}
	return errors.Join(errs...)
}

type subnet struct {
	cfg   SubnetConfig
	pools []*pool
}

// Server is a DHCPv6 server. Create it with New, run it with Serve.
type Server struct {
	cfg          Config
	store        Store
	state        *fsm.State
	policy       Policy
	clock        clock.Clock
	log          *zap.Logger
	subnets      []*subnet
	subnetByIf   map[string]*subnet
	pools        *poolIndex
	serverDUID   dhcpv6.DUID
	duid         []byte
	domainSearch *rfc1035label.Labels
	metrics      *Metrics
	// stopObserving ends the pool observer's subscription (Close).
	stopObserving func()
	// clientLimit and relayLimit are nil when off (admit).
	clientLimit, relayLimit *rateLimiter
	// storeDownSince is the store-failed count at the first failure of a
	// store outage, 0 when the store takes changes (storeFailed).
	storeDownSince atomic.Uint64
	// clientLocks serialise each client's transactions (see commit).
	clientLocks [clientLockStripes]sync.Mutex
}

// New builds a server on store: it records a server DUID in the store if
// there is none yet, builds the pools and starts tracking their use.
func New(cfg Config, store Store) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	s := &Server{cfg: cfg, store: store, state: store.State(), policy: cfg.Policy, clock: cfg.Clock,
		log: cfg.Logger, subnetByIf: map[string]*subnet{}, metrics: newMetrics()}
	s.clientLimit = newRateLimiter("client", cfg.ClientRate, cfg.RateLimitEntries)
	s.relayLimit = newRateLimiter("relay", cfg.RelayRate, cfg.RateLimitEntries)
	if len(cfg.DomainSearch) > 0 {
		s.domainSearch = &rfc1035label.Labels{Labels: cfg.DomainSearch}
	}
	var all []*pool
	parity := s.policy.AddressParity()
	for _, sc := range cfg.Subnets {
		sn := &subnet{cfg: sc}
		for _, r := range sc.Pools {
			sn.pools = append(sn.pools, newAddrPool(sn, r.First, r.Last, parity))
		}
		for _, pd := range sc.PDPools {
			p := newPDPool(sn, pd.Prefix, pd.DelegatedLength)
			p.untrackedFree = s.policy.UntrackedAvailable(fsm.IAPD)
			sn.pools = append(sn.pools, p)
		}
		all = append(all, sn.pools...)
		s.subnets = append(s.subnets, sn)
		if sc.Interface != "" {
			if _, dup := s.subnetByIf[sc.Interface]; !dup {
				s.subnetByIf[sc.Interface] = sn
			}
		}
	}
	s.pools = newPoolIndex(all)
	if err := s.ensureDUID(); err != nil {
		return nil, err
	}
	if err := s.checkPDLengths(); err != nil {
		return nil, err
	}
	s.stopObserving = s.state.AddObserver(&poolObserver{s: s})
	return s, nil
}

// Close stops tracking the database.
func (s *Server) Close() { s.stopObserving() }

// DUID returns the server DUID bytes.
func (s *Server) DUID() []byte { return append([]byte(nil), s.duid...) }

// Metrics returns the server's counters.
func (s *Server) Metrics() *Metrics { return s.metrics }

// ensureDUID loads the server DUID from the store, creating and committing a
// DUID-LLT (or DUID-UUID on a host with no hardware address) the first time.
func (s *Server) ensureDUID() error {
	if b := s.state.ServerDUID(); len(b) > 0 {
		return s.setDUID(b)
	}
	d := newDUID(s.cfg.Interfaces, s.clock.Now())
	if _, err := s.store.Apply(&fsm.Command{Type: fsm.CmdSetServerDUID, Time: s.clock.Now().UnixNano(),
		Origin: fsm.OriginServer, Note: "server DUID created", ServerDUID: d}); err != nil {
		return fmt.Errorf("store server DUID: %w", err)
	}
	// First writer wins: read back what the store holds.
	return s.setDUID(s.state.ServerDUID())
}

func (s *Server) setDUID(b []byte) error {
	d, err := dhcpv6.DUIDFromBytes(b)
	if err != nil {
		return fmt.Errorf("stored server DUID %x: %w", b, err)
	}
	s.serverDUID, s.duid = d, append([]byte(nil), b...)
	return nil
}

func newDUID(ifaces []string, now time.Time) []byte {
	for _, name := range ifaces {
		ifi, err := net.InterfaceByName(name)
		if err == nil && len(ifi.HardwareAddr) == 6 {
			t := uint32(now.Unix() - 946684800)
			return dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: t, LinkLayerAddr: ifi.HardwareAddr}.ToBytes()
		}
	}
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	b := make([]byte, 2, 18)
	binary.BigEndian.PutUint16(b, uint16(dhcpv6.DUID_UUID))
	return append(b, u[:]...)
}

// checkPDLengths refuses to start when a PD pool's delegated length no
// longer matches prefixes still delegated from it: slots are per length, so
// a /56 in use and a free /60 inside it would both look free to a client.
func (s *Server) checkPDLengths() error {
	v := s.state.View()
	var errs []error
	for _, p := range s.pools.pools {
		if p.typ != fsm.IAPD {
			continue
		}
		n := 0
		var example fsm.Resource
		v.Ascend(fsm.Resource{Type: fsm.IAPD, IP: p.first.bytes()}, func(b *fsm.Binding) bool {
			if b.Resource.Type != fsm.IAPD || p.last.less(u128From(b.Resource.IP)) {
				return false
			}
			if b.Resource.Len != p.plen && !s.policy.Available(b, "") {
				if n == 0 {
					example = b.Resource
				}
				n++
			}
			return true
		})
		if n > 0 {
			errs = append(errs, fmt.Errorf("pd-pool %v-%v delegates /%d, but %d prefixes of another length are still bound in it (e.g. %v): keep the old delegated-length until they expire, or release them",
				netip.AddrFrom16(p.first.bytes()), netip.AddrFrom16(p.last.bytes()), p.plen, n, example))
		}
	}
	return errors.Join(errs...)
}

// poolObserver keeps each pool's slotset in step with the database.
type poolObserver struct{ s *Server }

func (o *poolObserver) taken(b *fsm.Binding) bool { return !o.s.policy.Available(b, "") }

func (o *poolObserver) BindingChanged(old, nb *fsm.Binding) {
	r := nb
	if r == nil {
		r = old
	}
	p := o.s.pools.find(r.Resource)
	if p == nil {
		return
	}
	if r.Resource.Type == p.typ { // IA_TA addresses are not assigned-nas
		if old != nil {
			p.count(old.Status, -1)
		}
		if nb != nil {
			p.count(nb.Status, 1)
		}
	}
	slot, ok := p.slotOf(r.Resource)
	if !ok {
		return
	}
	if nb == nil {
		p.mark(slot, !p.untrackedFree) // unrecorded again
		return
	}
	p.mark(slot, o.taken(nb))
}

func (o *poolObserver) Reset(v *fsm.View) {
	for _, p := range o.s.pools.pools {
		p.mu.Lock()
		p.set = p.emptySet()
		if p.last.less(p.base) {
			p.set.Set(0) // an empty pool's only slot stays taken (see newAddrPool)
		}
		p.mu.Unlock()
		p.active.Store(0)
		p.abandoned.Store(0)
		from := fsm.Resource{Type: p.typ, Len: 0, IP: p.first.bytes()}
		if p.typ != fsm.IAPD {
			from.Type = fsm.IANA
		}
		v.Ascend(from, func(b *fsm.Binding) bool {
			a := u128From(b.Resource.IP)
			if b.Resource.Type != from.Type || p.last.less(a) {
				return false
			}
			if o.s.pools.find(b.Resource) == p {
				p.count(b.Status, 1)
			}
			if slot, ok := p.slotOf(b.Resource); ok {
				p.mark(slot, o.taken(b))
			}
			return true
		})
	}
}

// count moves the pool's status counters by n for a binding in status st.
// Observer goroutine (the fsm's apply).
func (p *pool) count(st fsm.Status, n int64) {
	switch st {
	case fsm.StatusActive:
		p.active.Add(n)
	case fsm.StatusAbandoned:
		p.abandoned.Add(n)
	}
}

// Covers reports whether r is a resource of one of the configured pools
// (any address parity; prefixes of the pool's delegated length).
func (s *Server) Covers(r fsm.Resource) bool { return s.pools.find(r) != nil }

// PoolUsage is one pool's utilisation.
type PoolUsage struct {
	Subnet netip.Prefix
	Type   fsm.IAType
	First  netip.Addr
	Last   netip.Addr
	Length int // delegated length for PD pools, 128 for addresses
	// Used counts slots holding a binding not available to this server;
	// Total counts the slots this server may allocate (its parity only under failover).
	Used, Total uint64
	// Active and Abandoned count the pool's ACTIVE and ABANDONED (declined)
	// bindings, both partners' resources included.
	Active, Abandoned int64
}

// Pools reports the utilisation of every pool.
func (s *Server) Pools() []PoolUsage {
	var out []PoolUsage
	for _, sn := range s.subnets {
		for _, p := range sn.pools {
			used, total := p.usage()
			out = append(out, PoolUsage{Subnet: sn.cfg.Prefix, Type: p.typ, First: netip.AddrFrom16(p.first.bytes()),
				Last: netip.AddrFrom16(p.last.bytes()), Length: int(p.plen), Used: used, Total: total,
				Active: p.active.Load(), Abandoned: p.abandoned.Load()})
		}
	}
	return out
}
