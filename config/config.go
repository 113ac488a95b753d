// Package config reads and validates Tandem's one configuration file (TOML).
//
// It owns the file format: key names, defaults, units, and the rule that an
// unknown key or a bad value is an error naming the file, the line and the
// key. It must never start anything or touch the network; it only turns a
// file into a validated Config that cmd/tandem maps onto each package's own
// Config.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Config is the whole file.
type Config struct {
	DataDir       string `toml:"data-dir"`
	ControlSocket string `toml:"control-socket"`
	// GCPercent is the Go garbage collector's target (GOGC); the packet path
	// allocates, and 400 trades memory for about a quarter less CPU per
	// exchange (docs/benchmarks.md). The GOGC environment variable wins.
	GCPercent int      `toml:"gc-percent"`
	Log       Log      `toml:"log"`
	DHCP      DHCP     `toml:"dhcp"`
	Subnets   []Subnet `toml:"subnet"`
	Store     Store    `toml:"store"`
	// Failover is the [failover] table: the RFC 8156 relationship with the
	// partner server. Nil when the table is absent (no failover).
	Failover *Failover `toml:"failover"`
	// Metrics is the [metrics] table (the Prometheus endpoint, off by default).
	Metrics Metrics `toml:"metrics"`
	// Control is the [control] table (remote control API, off by default).
	Control Control `toml:"control"`

	// path is the file the config was read from (for messages).
	path  string
	lines map[string]int
}

// Log configures logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error (default info)
	Format string `toml:"format"` // json or console (default: console on a terminal, else json)
}

// DHCP configures the DHCPv6 service as a whole.
type DHCP struct {
	// Interfaces to listen on (ff02::1:2 is joined on each).
	Interfaces []string `toml:"interfaces"`
	// Port is the UDP port the server listens on (547). Replies go to the
	// source address and port of each request, as RFC 8415 says.
	Port int `toml:"port"`
	// SiteMulticast also joins ff05::1:3 (All_DHCP_Servers) on each interface.
	SiteMulticast bool `toml:"site-multicast"`
	// DNSServers (option 23) and DomainSearch (option 24) are given to every client that asks.
	DNSServers   []string `toml:"dns-servers"`
	DomainSearch []string `toml:"domain-search"`
	// Preference (option 7) in Advertise; 255 makes clients skip waiting for other servers.
	Preference int `toml:"preference"`
	// RapidCommit allows two-message exchanges when the client asks (RFC 8415 §18.3.1).
	RapidCommit *bool `toml:"rapid-commit"`
	// Workers is the number of goroutines handling packets (default 256): many
	// transactions in flight is what lets the log group-commit.
	Workers int `toml:"workers"`
	// QueueSize bounds packets waiting for a worker; beyond it packets are dropped and counted.
	QueueSize int `toml:"queue-size"`
	// DeclineHoldTime is how long a declined address stays ABANDONED (default 24h).
	DeclineHoldTime Duration `toml:"decline-hold-time"`
	// ReclaimInterval is how often expired leases are reclaimed (default 10s).
	ReclaimInterval Duration `toml:"reclaim-interval"`
	// ParsedDNS is DNSServers parsed (set by Validate).
	ParsedDNS []netip.Addr `toml:"-"`
	// ExpiredHoldTime keeps an expired or released lease for its last client
	// before it is forgotten (default 1h); the client gets it back if it returns.
	ExpiredHoldTime Duration `toml:"expired-hold-time"`
	// ClientRateLimit and ClientBurst bound the messages one client (one
	// DUID) may send: default "10/s" with a burst of 50, far above what a
	// client retransmitting by RFC 8415 sends (one host booting twenty
	// interfaces under one DUID sends about 40 at once). "off" disables it.
	ClientRateLimit *Rate `toml:"client-rate-limit"`
	ClientBurst     int   `toml:"client-burst"`
	// RelayRateLimit and RelayBurst bound the Relay-Forw messages from one
	// relay (UDP source): off by default, because a relay carries thousands
	// of clients who all solicit at once after a power cut; set it to what
	// your largest relay can legitimately send. The burst defaults to one
	// second's worth.
	RelayRateLimit *Rate `toml:"relay-rate-limit"`
	RelayBurst     int   `toml:"relay-burst"`
	// RateLimitEntries caps the clients and relays each limit tracks
	// (default 65536); when full, the least recently seen one is forgotten.
	RateLimitEntries int `toml:"rate-limit-entries"`
}

// Rate is a packet rate written "20/s", "600/m", "36000/h", or "off".
type Rate struct {
	// PerSecond is the rate; 0 is off.
	PerSecond float64
	text      string
}

// UnmarshalText parses N/s, N/m, N/h (N > 0, may have a fraction) or "off".
func (r *Rate) UnmarshalText(b []byte) error {
	s := string(b)
	r.text = s
	if s == "off" {
		r.PerSecond = 0
		return nil
	}
	n, unit, ok := strings.Cut(s, "/")
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[unit]
	v, err := strconv.ParseFloat(n, 64)
	if !ok || per == 0 || err != nil || !(v > 0) || math.IsInf(v, 0) {
		return fmt.Errorf("bad rate %q (write e.g. \"20/s\", \"600/m\", or \"off\")", s)
	}
	r.PerSecond = v / per
	return nil
}

// MarshalText writes the rate as it was given.
func (r Rate) MarshalText() ([]byte, error) {
	if r.text == "" {
		return []byte(strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + "/s"), nil
	}
	return []byte(r.text), nil
}

// Subnet is one link (directly attached, or behind relays).
type Subnet struct {
	Prefix string `toml:"prefix"`
	// Interface is the directly attached link; relayed clients match by link-address.
	Interface         string   `toml:"interface"`
	Pools             []string `toml:"pools"`
	PDPools           []PDPool `toml:"pd-pools"`
	PreferredLifetime Duration `toml:"preferred-lifetime"`
	ValidLifetime     Duration `toml:"valid-lifetime"`
	// RenewTime and RebindTime are T1 and T2; default 50% and 80% of the preferred lifetime.
	RenewTime  Duration `toml:"renew-time"`
	RebindTime Duration `toml:"rebind-time"`
	// DNSServers overrides [dhcp] dns-servers for this subnet.
	DNSServers []string `toml:"dns-servers"`

	// Parsed values, set by Validate.
	ParsedPrefix  netip.Prefix   `toml:"-"`
	ParsedPools   []AddressRange `toml:"-"`
	ParsedPDPools []ParsedPDPool `toml:"-"`
	ParsedDNS     []netip.Addr   `toml:"-"`
	Index         int            `toml:"-"`
}

// PDPool is a delegated-prefix pool.
type PDPool struct {
	Prefix          string `toml:"prefix"`
	DelegatedLength int    `toml:"delegated-length"`
}

// ParsedPDPool is a validated PD pool.
type ParsedPDPool struct {
	Prefix          netip.Prefix
	DelegatedLength int
}

// AddressRange is an inclusive range of addresses.
type AddressRange struct{ First, Last netip.Addr }

// Store tunes the local raft log.
type Store struct {
	SnapshotThreshold uint64 `toml:"snapshot-threshold"`
	TrailingLogs      uint64 `toml:"trailing-logs"`
	SnapshotRetain    int    `toml:"snapshot-retain"`
}

// Duration is a time.Duration written as "90s", "2h", "1h30m" or "3d".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration, also accepting a whole number of days ("3d").
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || strings.HasPrefix(n, "+") {
			return fmt.Errorf("bad duration %q", s)
		}
		d.Duration = time.Duration(days) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q (write e.g. \"90s\", \"2h\", \"3d\")", s)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Error is a configuration error at a place in a file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted key path, e.g. "subnet[0].pools"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Load reads, decodes and validates the file at path. Every problem found is
// returned (errors.Join of *Error), each naming file, line and key.
func Load(path string) (*Config, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, doc)
}

// Parse decodes and validates doc; path is used in messages only.
func Parse(path string, doc []byte) (*Config, error) {
	c := &Config{path: path}
	dec := toml.NewDecoder(bytes.NewReader(doc)).DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, decodeErr(path, err)
	}
	c.lines = keyLines(doc)
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeErr(path string, err error) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		var errs []error
		for i := range sm.Errors {
			e := &sm.Errors[i]
			line, _ := e.Position()
			errs = append(errs, &Error{File: path, Line: line, Key: strings.Join(e.Key(), "."), Msg: "unknown key"})
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		return &Error{File: path, Line: line, Key: strings.Join(de.Key(), "."), Msg: msg}
	}
	return &Error{File: path, Msg: err.Error()}
}

// keyLines maps each key path ("dhcp.interfaces", "subnet[1].pools") to its line.
func keyLines(doc []byte) map[string]int {
	lines := map[string]int{}
	arrays := map[string]int{}
	var p unstable.Parser
	p.Reset(doc)
	prefix := ""
	keyOf := func(n *unstable.Node) (string, int) {
		var parts []string
		line := 0
		it := n.Key()
		for it.Next() {
			k := it.Node()
			parts = append(parts, string(k.Data))
			if line == 0 {
				line = p.Shape(k.Raw).Start.Line
			}
		}
		return strings.Join(parts, "."), line
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			k, line := keyOf(e)
			prefix = k
			lines[k] = line
		case unstable.ArrayTable:
			k, line := keyOf(e)
			prefix = fmt.Sprintf("%s[%d]", k, arrays[k])
			arrays[k]++
			lines[prefix] = line
		case unstable.KeyValue:
			k, line := keyOf(e)
			if prefix != "" {
				k = prefix + "." + k
			}
			lines[k] = line
		}
	}
	return lines
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/tandem"
	}
	if c.ControlSocket == "" {
		c.ControlSocket = "/run/tandem/tandem.sock"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.GCPercent == 0 {
		c.GCPercent = 400
	}
	d := &c.DHCP
	if d.Port == 0 {
		d.Port = 547
	}
	if d.RapidCommit == nil {
		t := true
		d.RapidCommit = &t
	}
	if d.Workers == 0 {
		d.Workers = 256
	}
	if d.QueueSize == 0 {
		d.QueueSize = 4096
	}
	if d.DeclineHoldTime.Duration == 0 {
		d.DeclineHoldTime.Duration = 24 * time.Hour
	}
	if d.ReclaimInterval.Duration == 0 {
		d.ReclaimInterval.Duration = 10 * time.Second
	}
	if d.ExpiredHoldTime.Duration == 0 {
		d.ExpiredHoldTime.Duration = time.Hour
	}
	if d.ClientRateLimit == nil {
		d.ClientRateLimit = &Rate{PerSecond: 10, text: "10/s"}
		if d.ClientBurst == 0 {
			d.ClientBurst = 50
		}
	}
	if d.RelayRateLimit == nil {
		d.RelayRateLimit = &Rate{text: "off"}
	}
	for _, l := range []struct {
		r     *Rate
		burst *int
	}{{d.ClientRateLimit, &d.ClientBurst}, {d.RelayRateLimit, &d.RelayBurst}} {
		if *l.burst == 0 && l.r.PerSecond > 0 {
			*l.burst = max(1, int(math.Ceil(l.r.PerSecond)))
		}
	}
	if d.RateLimitEntries == 0 {
		d.RateLimitEntries = 65536
	}
	c.setFailoverDefaults()
	for i := range c.Subnets {
		s := &c.Subnets[i]
		if s.ValidLifetime.Duration == 0 {
			s.ValidLifetime.Duration = 3 * time.Hour
		}
		if s.PreferredLifetime.Duration == 0 {
			s.PreferredLifetime.Duration = s.ValidLifetime.Duration * 2 / 3
		}
		if s.RenewTime.Duration == 0 {
			s.RenewTime.Duration = s.PreferredLifetime.Duration / 2
		}
		if s.RebindTime.Duration == 0 {
			s.RebindTime.Duration = s.PreferredLifetime.Duration * 4 / 5
		}
	}
}

// errAt makes an *Error for key, with the line the key (or its closest
// enclosing table) is on.
func (c *Config) errAt(key, format string, args ...any) error {
	line := 0
	for k := key; k != ""; {
		if l, ok := c.lines[k]; ok {
			line = l
			break
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return &Error{File: c.path, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks every field and fills the Parsed* values.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if c.lines == nil {
		c.lines = map[string]int{}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add(c.errAt("log.level", "%q is not one of debug, info, warn, error", c.Log.Level))
	}
	if c.GCPercent < 10 && c.GCPercent != -1 {
		add(c.errAt("gc-percent", "%d: use 10 or more (or -1 to turn the collector off)", c.GCPercent))
	}
	switch c.Log.Format {
	case "", "json", "console":
	default:
		add(c.errAt("log.format", "%q is not json or console", c.Log.Format))
	}
	d := &c.DHCP
	if len(d.Interfaces) == 0 {
		add(c.errAt("dhcp.interfaces", "at least one interface is required"))
	}
	seen := map[string]bool{}
	for _, ifn := range d.Interfaces {
		if ifn == "" || seen[ifn] {
			add(c.errAt("dhcp.interfaces", "empty or repeated interface %q", ifn))
		}
		seen[ifn] = true
	}
	if d.Port < 1 || d.Port > 65535 {
		add(c.errAt("dhcp.port", "%d is not a UDP port", d.Port))
	}
	if d.Preference < 0 || d.Preference > 255 {
		add(c.errAt("dhcp.preference", "%d out of range 0..255", d.Preference))
	}
	if d.Workers < 1 || d.Workers > 4096 {
		add(c.errAt("dhcp.workers", "%d out of range 1..4096", d.Workers))
	}
	if d.QueueSize < 1 {
		add(c.errAt("dhcp.queue-size", "must be at least 1"))
	}
	for _, l := range []struct {
		key, rateKey string
		burst        int
		r            *Rate
	}{{"dhcp.client-burst", "dhcp.client-rate-limit", d.ClientBurst, d.ClientRateLimit}, {"dhcp.relay-burst", "dhcp.relay-rate-limit", d.RelayBurst, d.RelayRateLimit}} {
		switch {
		case l.burst < 0:
			add(c.errAt(l.key, "%d must not be negative", l.burst))
		case l.burst > 0 && l.r != nil && l.r.PerSecond == 0:
			add(c.errAt(l.key, "is set, but %s is off", strings.TrimPrefix(l.rateKey, "dhcp.")))
		}
	}
	if d.RateLimitEntries < 1 || d.RateLimitEntries > 1<<24 {
		add(c.errAt("dhcp.rate-limit-entries", "%d out of range 1..%d", d.RateLimitEntries, 1<<24))
	}
	if dns, err := parseAddrs(d.DNSServers); err != nil {
		add(c.errAt("dhcp.dns-servers", "%v", err))
	} else {
		d.ParsedDNS = dns
	}
	for i, dom := range d.DomainSearch {
		dom = strings.TrimSuffix(dom, ".")
		d.DomainSearch[i] = dom
		if !validDomain(dom) {
			add(c.errAt("dhcp.domain-search", "%q is not a domain name (labels of 1 to 63 letters, digits or hyphens)", dom))
		}
	}
	if len(c.Subnets) == 0 {
		add(&Error{File: c.path, Key: "subnet", Msg: "at least one [[subnet]] is required"})
	}
	for i := range c.Subnets {
		errs = append(errs, c.validateSubnet(i)...)
	}
	// One directly attached subnet per interface: the ingress interface picks it.
	byIf := map[string]int{}
	for i, sn := range c.Subnets {
		if sn.Interface == "" {
			continue
		}
		if j, dup := byIf[sn.Interface]; dup {
			add(c.errAt(fmt.Sprintf("subnet[%d].interface", i), "%q is already the interface of subnet[%d]: one subnet per interface", sn.Interface, j))
		}
		byIf[sn.Interface] = i
	}
	// Delegated prefixes must not overlap any subnet's addresses.
	for i, sn := range c.Subnets {
		for j, pd := range sn.ParsedPDPools {
			for k, other := range c.Subnets {
				if other.ParsedPrefix.IsValid() && pd.Prefix.Overlaps(other.ParsedPrefix) {
					add(c.errAt(fmt.Sprintf("subnet[%d].pd-pools", i), "pd-pool %d (%v) overlaps subnet[%d] prefix %v", j, pd.Prefix, k, other.ParsedPrefix))
				}
			}
		}
	}
	// Subnets must not overlap: a link-address must pick exactly one.
	for i := range c.Subnets {
		for j := 0; j < i; j++ {
			a, b := c.Subnets[i].ParsedPrefix, c.Subnets[j].ParsedPrefix
			if a.IsValid() && b.IsValid() && a.Overlaps(b) {
				add(c.errAt(fmt.Sprintf("subnet[%d].prefix", i), "%v overlaps subnet[%d] (%v)", a, j, b))
			}
		}
	}
	errs = append(errs, c.checkPoolOverlaps()...)
	errs = append(errs, c.validateFailover()...)
	errs = append(errs, c.validateOperator()...)
	return errors.Join(errs...)
}

func (c *Config) validateSubnet(i int) []error {
	s := &c.Subnets[i]
	s.Index = i
	key := func(k string) string { return fmt.Sprintf("subnet[%d].%s", i, k) }
	var errs []error
	add := func(k, format string, args ...any) { errs = append(errs, c.errAt(key(k), format, args...)) }
	p, err := netip.ParsePrefix(s.Prefix)
	switch {
	case err != nil:
		add("prefix", "%q is not an IPv6 prefix", s.Prefix)
	case !p.Addr().Is6() || p.Addr().Is4In6():
		add("prefix", "%v is not an IPv6 prefix", p)
	case p.Masked() != p:
		add("prefix", "%v has host bits set (did you mean %v?)", p, p.Masked())
	default:
		s.ParsedPrefix = p
	}
	if s.Interface != "" && !contains(c.DHCP.Interfaces, s.Interface) {
		add("interface", "%q is not listed in dhcp.interfaces", s.Interface)
	}
	if len(s.Pools) == 0 && len(s.PDPools) == 0 {
		add("pools", "a subnet needs pools or pd-pools")
	}
	s.ParsedPools = nil
	for j, ps := range s.Pools {
		r, err := parseRange(ps)
		if err != nil {
			add("pools", "pool %d: %v", j, err)
			continue
		}
		if s.ParsedPrefix.IsValid() && (!s.ParsedPrefix.Contains(r.First) || !s.ParsedPrefix.Contains(r.Last)) {
			add("pools", "pool %q lies outside the subnet prefix %v", ps, s.ParsedPrefix)
			continue
		}
		s.ParsedPools = append(s.ParsedPools, r)
	}
	s.ParsedPDPools = nil
	for j, pd := range s.PDPools {
		pp, err := netip.ParsePrefix(pd.Prefix)
		switch {
		case err != nil || !pp.Addr().Is6() || pp.Addr().Is4In6():
			add("pd-pools", "pd-pool %d: %q is not an IPv6 prefix", j, pd.Prefix)
		case pp.Masked() != pp:
			add("pd-pools", "pd-pool %d: %v has host bits set", j, pp)
		case pd.DelegatedLength < pp.Bits() || pd.DelegatedLength > 128:
			add("pd-pools", "pd-pool %d: delegated-length %d must be between the pool's length %d and 128", j, pd.DelegatedLength, pp.Bits())
		case pd.DelegatedLength-pp.Bits() > 63:
			add("pd-pools", "pd-pool %d: 2^%d prefixes is more than Tandem pools hold (2^63)", j, pd.DelegatedLength-pp.Bits())
		default:
			s.ParsedPDPools = append(s.ParsedPDPools, ParsedPDPool{Prefix: pp, DelegatedLength: pd.DelegatedLength})
		}
	}
	v, pr := s.ValidLifetime.Duration, s.PreferredLifetime.Duration
	switch {
	case v < 30*time.Second:
		add("valid-lifetime", "%v is shorter than 30s (RFC 8156 §1 forbids such short leases)", v)
	case v > 0xfffffffe*time.Second:
		add("valid-lifetime", "%v is too long", v)
	case pr > v:
		add("preferred-lifetime", "%v is longer than valid-lifetime %v", pr, v)
	}
	if s.RenewTime.Duration > s.RebindTime.Duration {
		add("renew-time", "%v is longer than rebind-time %v", s.RenewTime.Duration, s.RebindTime.Duration)
	}
	if s.RebindTime.Duration > pr && pr > 0 {
		add("rebind-time", "%v is longer than preferred-lifetime %v", s.RebindTime.Duration, pr)
	}
	dns, err := parseAddrs(s.DNSServers)
	if err != nil {
		add("dns-servers", "%v", err)
	}
	if len(s.DNSServers) == 0 {
		dns, _ = parseAddrs(c.DHCP.DNSServers)
	}
	s.ParsedDNS = dns
	return errs
}

// checkPoolOverlaps refuses address ranges or PD pools that overlap anywhere
// in the file: one resource must belong to exactly one pool.
func (c *Config) checkPoolOverlaps() []error {
	type span struct {
		first, last netip.Addr
		where       string
	}
	var na, pd []span
	for i, s := range c.Subnets {
		for j, r := range s.ParsedPools {
			na = append(na, span{r.First, r.Last, fmt.Sprintf("subnet[%d].pools[%d]", i, j)})
		}
		for j, p := range s.ParsedPDPools {
			pd = append(pd, span{p.Prefix.Addr(), lastAddr(p.Prefix), fmt.Sprintf("subnet[%d].pd-pools[%d]", i, j)})
		}
	}
	var errs []error
	for _, list := range [][]span{na, pd} {
		sort.Slice(list, func(a, b int) bool { return list[a].first.Less(list[b].first) })
		for k := 1; k < len(list); k++ {
			if !list[k-1].last.Less(list[k].first) {
				errs = append(errs, c.errAt(list[k].where, "overlaps %s", list[k-1].where))
			}
		}
	}
	return errs
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As16()
	for b := p.Bits(); b < 128; b++ {
		a[b/8] |= 0x80 >> (b % 8)
	}
	return netip.AddrFrom16(a)
}

// parseRange accepts "first-last" or a CIDR prefix.
func parseRange(s string) (AddressRange, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Masked() != p {
			return AddressRange{}, fmt.Errorf("%q is not an IPv6 prefix", s)
		}
		return AddressRange{First: p.Addr(), Last: lastAddr(p)}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return AddressRange{}, fmt.Errorf("%q is not a range (write \"first-last\" or a prefix)", s)
	}
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || !first.Is6() || !last.Is6() || first.Is4In6() || last.Is4In6() {
		return AddressRange{}, fmt.Errorf("%q is not a range of IPv6 addresses", s)
	}
	if last.Less(first) {
		return AddressRange{}, fmt.Errorf("%q ends before it starts", s)
	}
	return AddressRange{First: first, Last: last}, nil
}

func parseAddrs(ss []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() || a.Is4In6() {
			return nil, fmt.Errorf("%q is not an IPv6 address", s)
		}
		out = append(out, a)
	}
	return out, nil
}

// validDomain accepts a domain name of labels of 1-63 bytes (letters,
// digits, hyphens, underscores), 253 bytes at most.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Path returns the file the config was read from.
func (c *Config) Path() string { return c.path }

// FailoverPort is the dhcp-failover TCP port (RFC 8156 §5.1), the default
// port of failover.local and failover.peer.
const FailoverPort = 647

// Failover is the [failover] table: one RFC 8156 failover relationship.
//
//	[failover]
//	relationship = "pair-a"
//	role = "primary"                   # or "secondary"
//	local = "[2001:db8:1::1]:647"      # address this server listens on / dials from
//	peer = "[2001:db8:1::2]:647"
//	mclt = "1h"
//
// The defaults below are the failover link's (package failover/link);
// cmd/tandem maps this table onto link.Config.
type Failover struct {
	// Relationship is the relationship name (OPTION_F_RELATIONSHIP_NAME);
	// both partners must use the same one. Required.
	Relationship string `toml:"relationship"`
	// Role is "primary" (dials the partner) or "secondary" (listens). Required.
	Role string `toml:"role"`
	// Local is this server's IPv6 address and port (default 647): the
	// secondary listens on it, the primary dials from its address. Required.
	Local string `toml:"local"`
	// Peer is the partner's IPv6 address and port (default 647). Required.
	Peer string `toml:"peer"`
	// MCLT is the maximum client lead time, whole seconds; both partners
	// must configure the same value. Required.
	MCLT Duration `toml:"mclt"`
	// KeepaliveTime is FO_KEEPALIVE_TIME (default 60s, whole seconds).
	KeepaliveTime Duration `toml:"keepalive-time"`
	// MaxUnackedBndUpd is the OPTION_F_MAX_UNACKED_BNDUPD advertised to the
	// partner (default 1024: see failover/link.DefaultMaxUnackedBndUpd).
	MaxUnackedBndUpd int `toml:"max-unacked-bndupd"`
	// ConnectRetryMin and ConnectRetryMax bound the primary's reconnect
	// backoff (defaults 1s and 30s).
	ConnectRetryMin Duration `toml:"connect-retry-min"`
	ConnectRetryMax Duration `toml:"connect-retry-max"`
	// HandshakeTimeout bounds connection set-up (default 10s).
	HandshakeTimeout Duration `toml:"handshake-timeout"`
	// MaxPendingConnections caps the secondary's connections from the
	// partner's address that have not completed CONNECT (default 64).
	MaxPendingConnections int `toml:"max-pending-connections"`
	// TLSCert, TLSKey and TLSCA are PEM files (this server's certificate, its
	// key, and the CA the partner's certificate must chain to): all three
	// turn on TLS with mutual authentication; none is insecure mode.
	TLSCert string `toml:"tls-cert"`
	TLSKey  string `toml:"tls-key"`
	TLSCA   string `toml:"tls-ca"`
	// AutoPartnerDown is how long COMMUNICATIONS-INTERRUPTED lasts before
	// the server moves to PARTNER-DOWN by itself (RFC 8156 §8.9); 0 (the
	// default) turns it off.
	AutoPartnerDown Duration `toml:"auto-partner-down"`
	// StartAlone (primary only): on the very first start, with nothing
	// stored, go to PARTNER-DOWN and serve when the partner cannot be reached
	// within the startup time, instead of waiting in RECOVER (RFC 8156 §8.2,
	// §8.3.2 step 1). For commissioning a primary before its secondary.
	StartAlone bool `toml:"start-alone"`
	// PrefixShare is the fraction (0 to 1) of each pd-pool's available
	// delegable prefixes that the primary hands to the secondary as
	// FREE-BACKUP (RFC 8156 §4.2.2 "configured proportion"; the RFC fixes no
	// name or value). Default 0.5, the same half as the address split; 0
	// gives the secondary none. Used by the primary.
	PrefixShare *float64 `toml:"prefix-share"`
	// PrefixRebalanceThreshold is the rebalancing hysteresis in prefixes:
	// nothing moves while the secondary's count is within this many of its
	// target (RFC 8156 §4.2.2 "threshold mechanism"). Default 8. Used by the
	// primary.
	PrefixRebalanceThreshold int `toml:"prefix-rebalance-threshold"`

	// Parsed values, set by Validate.
	ParsedLocal netip.AddrPort `toml:"-"`
	ParsedPeer  netip.AddrPort `toml:"-"`
}

func (c *Config) setFailoverDefaults() {
	f := c.Failover
	if f == nil {
		return
	}
	if f.KeepaliveTime.Duration == 0 {
		f.KeepaliveTime.Duration = 60 * time.Second
	}
	if f.MaxUnackedBndUpd == 0 {
		f.MaxUnackedBndUpd = 1024
	}
	if f.ConnectRetryMin.Duration == 0 {
		f.ConnectRetryMin.Duration = time.Second
	}
	if f.ConnectRetryMax.Duration == 0 {
		f.ConnectRetryMax.Duration = max(30*time.Second, f.ConnectRetryMin.Duration)
	}
	if f.HandshakeTimeout.Duration == 0 {
		f.HandshakeTimeout.Duration = 10 * time.Second
	}
	if f.MaxPendingConnections == 0 {
		f.MaxPendingConnections = 64
	}
	if f.PrefixShare == nil {
		v := 0.5
		f.PrefixShare = &v
	}
	if f.PrefixRebalanceThreshold == 0 {
		f.PrefixRebalanceThreshold = 8
	}
}

func (c *Config) validateFailover() []error {
	f := c.Failover
	if f == nil {
		return nil
	}
	var errs []error
	add := func(k, format string, args ...any) { errs = append(errs, c.errAt("failover."+k, format, args...)) }
	switch {
	case f.Relationship == "":
		add("relationship", "required")
	case !utf8.ValidString(f.Relationship) || strings.IndexByte(f.Relationship, 0) >= 0:
		add("relationship", "%q must be UTF-8 without NUL", f.Relationship)
	case len(f.Relationship) > 1024:
		add("relationship", "longer than 1024 bytes")
	}
	switch f.Role {
	case "primary", "secondary":
	case "":
		add("role", "required: \"primary\" or \"secondary\"")
	default:
		add("role", "%q is not \"primary\" or \"secondary\"", f.Role)
	}
	var err error
	if f.ParsedLocal, err = parseFailoverAddr(f.Local); err != nil {
		add("local", "%v", err)
	}
	if f.ParsedPeer, err = parseFailoverAddr(f.Peer); err != nil {
		add("peer", "%v", err)
	}
	if f.ParsedLocal.IsValid() && f.ParsedLocal == f.ParsedPeer {
		add("peer", "%v is the same as local", f.ParsedPeer)
	}
	seconds := func(k string, d time.Duration) {
		switch {
		case d < time.Second:
			add(k, "%v is less than 1s", d)
		case d%time.Second != 0:
			add(k, "%v is not a whole number of seconds (it is sent in seconds)", d)
		case d/time.Second > math.MaxUint32:
			add(k, "%v is too long", d)
		}
	}
	if f.MCLT.Duration == 0 {
		add("mclt", "required (e.g. \"1h\"); both partners must use the same value")
	} else {
		seconds("mclt", f.MCLT.Duration)
	}
	seconds("keepalive-time", f.KeepaliveTime.Duration)
	if f.MaxUnackedBndUpd < 1 || f.MaxUnackedBndUpd > 65535 {
		add("max-unacked-bndupd", "%d out of range 1..65535", f.MaxUnackedBndUpd)
	}
	if f.ConnectRetryMin.Duration < 0 {
		add("connect-retry-min", "%v is negative", f.ConnectRetryMin.Duration)
	}
	if f.ConnectRetryMax.Duration < f.ConnectRetryMin.Duration {
		add("connect-retry-max", "%v is shorter than connect-retry-min %v", f.ConnectRetryMax.Duration, f.ConnectRetryMin.Duration)
	}
	if f.HandshakeTimeout.Duration < 0 {
		add("handshake-timeout", "%v is negative", f.HandshakeTimeout.Duration)
	}
	if f.MaxPendingConnections < 1 || f.MaxPendingConnections > 1024 {
		add("max-pending-connections", "%d out of range 1..1024", f.MaxPendingConnections)
	}
	if f.AutoPartnerDown.Duration < 0 {
		add("auto-partner-down", "%v is negative (0 turns it off)", f.AutoPartnerDown.Duration)
	}
	if v := *f.PrefixShare; !(v >= 0 && v <= 1) {
		add("prefix-share", "%v out of range 0..1 (the fraction of the delegable prefixes the secondary holds)", v)
	}
	if f.PrefixRebalanceThreshold < 1 || f.PrefixRebalanceThreshold > 1<<20 {
		add("prefix-rebalance-threshold", "%d out of range 1..1048576", f.PrefixRebalanceThreshold)
	}
	if f.StartAlone && !strings.EqualFold(f.Role, "primary") {
		add("start-alone", "applies to the primary only (a new secondary must first learn the primary's bindings)")
	}
	files := []struct{ key, path string }{{"tls-cert", f.TLSCert}, {"tls-key", f.TLSKey}, {"tls-ca", f.TLSCA}}
	set := 0
	for _, fl := range files {
		if fl.path != "" {
			set++
		}
	}
	if set != 0 {
		for _, fl := range files {
			if fl.path == "" {
				add(fl.key, "required when any of tls-cert, tls-key, tls-ca is set (give all three, or none for insecure mode)")
				continue
			}
			if st, err := os.Stat(fl.path); err != nil {
				add(fl.key, "%v", err)
			} else if st.IsDir() {
				add(fl.key, "%s is a directory", fl.path)
			}
		}
	}
	return errs
}

// parseFailoverAddr accepts "[2001:db8::1]:647", "[2001:db8::1]" or
// "2001:db8::1"; the port defaults to 647. The address must be a specific
// IPv6 unicast address: the partner checks the connection's source
// address against it.
func parseFailoverAddr(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, fmt.Errorf("required (e.g. \"[2001:db8::1]:647\")")
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		a, err2 := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
		if err2 != nil {
			return netip.AddrPort{}, fmt.Errorf("%q is not an address (write e.g. \"[2001:db8::1]:647\")", s)
		}
		ap = netip.AddrPortFrom(a, FailoverPort)
	}
	a := ap.Addr()
	switch {
	case !a.Is6() || a.Is4In6():
		return netip.AddrPort{}, fmt.Errorf("%q is not an IPv6 address", s)
	case a.IsUnspecified() || a.IsMulticast():
		return netip.AddrPort{}, fmt.Errorf("%v is not a unicast address of one server", a)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("%q has port 0", s)
	}
	return ap, nil
}
