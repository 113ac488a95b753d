package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-dhcp/tandem/failover"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
	"github.com/tandem-dhcp/tandem/server"
)

// Sources is what the collector reads at scrape time. Counters and Pools
// are required; Failover is nil for a standalone server; Store may be nil.
type Sources struct {
	// Counters calls fn for each of the server's counters (server.Metrics.Each).
	Counters func(fn func(kea, help string, v uint64))
	// Pools reports every pool's utilisation (server.Server.Pools).
	Pools func() []server.PoolUsage
	// Failover reports the failover endpoint's status (failover.Endpoint.Status).
	Failover func() failover.Status
	// Store reports the raft log's indexes (raftstore.Store.Info).
	Store func() raftstore.Info
}

// Name converts a Kea statistic name to the Prometheus metric name:
// tandem_ prefix, dashes to underscores, and _total for a counter.
func Name(kea string, counter bool) string {
	n := "tandem_" + strings.ReplaceAll(kea, "-", "_")
	if counter {
		n += "_total"
	}
	return n
}

// CommitBuckets are the commit latency histogram's bucket bounds in
// seconds: 100µs doubling up to about 3.3s (an fsync on SSD is ~0.1-2ms,
// on a busy disk tens of ms).
var CommitBuckets = prometheus.ExponentialBuckets(0.0001, 2, 16)

// Registry is the daemon's Prometheus registry (not the global default one).
type Registry struct {
	reg    *prometheus.Registry
	commit prometheus.Histogram
}

// New returns a registry with the Go runtime and process collectors and the
// commit latency histogram; Register adds the daemon's own collector once
// the server exists.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry(),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tandem_raft_commit_duration_seconds",
			Help:    "Time from submitting a lease transaction to the raft log until it was fsynced and applied (group-commit wait included).",
			Buckets: CommitBuckets,
		})}
	r.reg.MustRegister(r.commit, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// ObserveCommit records one commit's latency; it is raftstore.Config.OnApply.
// Safe for concurrent use.
func (r *Registry) ObserveCommit(d time.Duration) { r.commit.Observe(d.Seconds()) }

// Register adds the collector reading src.
func (r *Registry) Register(src Sources) error {
	if src.Counters == nil || src.Pools == nil {
		return errors.New("metrics: Sources.Counters and Sources.Pools are required")
	}
	return r.reg.Register(newCollector(src))
}

// Gatherer is the registry, for tests and other exporters.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics when the scraper asks for it).
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}

// Listen opens the TCP listener for the metrics endpoint.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	return l, nil
}

// Serve serves GET /metrics on l until ctx is done.
func (r *Registry) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", r.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// collector reads Sources at scrape time.
type collector struct {
	src      Sources
	counters map[string]*prometheus.Desc // by Kea name

	assignedNAs, assignedPDs, declined *prometheus.Desc
	poolUsed, poolTotal, poolRatio     *prometheus.Desc

	foState, foPartner, foInfo, foInState, foUnacked, foOwed *prometheus.Desc
	foSkew, foSinceContact, foUp, foMCLT, foRejected         *prometheus.Desc

	applied, snapshot, dbBytes *prometheus.Desc
}

func newCollector(src Sources) *collector {
	c := &collector{src: src, counters: map[string]*prometheus.Desc{}}
	src.Counters(func(kea, help string, _ uint64) {
		c.counters[kea] = prometheus.NewDesc(Name(kea, true), fmt.Sprintf("%s (Kea statistic %s).", capital(help), kea), nil, nil)
	})
	sub := []string{"subnet"}
	c.assignedNAs = prometheus.NewDesc(Name("assigned-nas", false), "ACTIVE IA_NA address leases in the subnet's pools (Kea statistic assigned-nas).", sub, nil)
	c.assignedPDs = prometheus.NewDesc(Name("assigned-pds", false), "ACTIVE delegated prefixes in the subnet's pools (Kea statistic assigned-pds).", sub, nil)
	c.declined = prometheus.NewDesc(Name("declined-addresses", false), "Addresses held ABANDONED after a Decline in the subnet's pools (Kea statistic declined-addresses).", sub, nil)
	pool := []string{"subnet", "type", "pool"}
	c.poolUsed = prometheus.NewDesc("tandem_pool_used_slots", "Addresses or prefixes of the pool this server may allocate that are taken.", pool, nil)
	c.poolTotal = prometheus.NewDesc("tandem_pool_total_slots", "Addresses or prefixes of the pool this server may allocate (its half under failover) (Kea statistics total-nas, total-pds per pool).", pool, nil)
	c.poolRatio = prometheus.NewDesc("tandem_pool_utilisation_ratio", "used_slots / total_slots of the pool.", pool, nil)
	c.foState = prometheus.NewDesc("tandem_failover_state", "This endpoint's RFC 8156 server state as its numeric code (1 STARTUP, 2 NORMAL, 3 COMMUNICATIONS-INTERRUPTED, 4 PARTNER-DOWN, 5 POTENTIAL-CONFLICT, 6 RECOVER, 7 RECOVER-WAIT, 8 RECOVER-DONE, 9 RESOLUTION-INTERRUPTED, 10 CONFLICT-DONE).", nil, nil)
	c.foPartner = prometheus.NewDesc("tandem_failover_partner_state", "The partner's RFC 8156 server state as last reported, numeric code as tandem_failover_state (0: unknown).", nil, nil)
	c.foInfo = prometheus.NewDesc("tandem_failover_state_info", "Always 1; the labels name this endpoint's role and RFC 8156 state and the partner's state.", []string{"role", "state", "partner_state"}, nil)
	c.foInState = prometheus.NewDesc("tandem_failover_state_seconds", "Seconds since this endpoint entered its current state.", nil, nil)
	c.foUnacked = prometheus.NewDesc("tandem_failover_unacked_updates", "BNDUPDs sent to the partner and not yet answered.", nil, nil)
	c.foOwed = prometheus.NewDesc("tandem_failover_owed_updates", "Bindings that owe the partner a binding update.", nil, nil)
	c.foSkew = prometheus.NewDesc("tandem_failover_clock_skew_seconds", "The partner's clock minus ours, measured at connect.", nil, nil)
	c.foSinceContact = prometheus.NewDesc("tandem_failover_last_contact_age_seconds", "Seconds since the partner's last message (absent if it never sent one).", nil, nil)
	c.foUp = prometheus.NewDesc("tandem_failover_connection_up", "1 while communications with the partner are OK, else 0.", nil, nil)
	c.foMCLT = prometheus.NewDesc("tandem_failover_mclt_seconds", "The configured maximum client lead time.", nil, nil)
	c.foRejected = prometheus.NewDesc("tandem_failover_rejected_connections_total", "Incoming failover connections the secondary refused, by reason (not-partner, evicted, handshake-timeout, frame-too-large, protocol-error, tls, tls-required, relationship, mclt, version, time-skew, config, connection-lost).", []string{"reason"}, nil)
	c.applied = prometheus.NewDesc("tandem_raft_applied_index", "Index of the last raft log entry applied to the lease database.", nil, nil)
	c.snapshot = prometheus.NewDesc("tandem_raft_last_snapshot_index", "Raft index of the newest snapshot (0: none).", nil, nil)
	c.dbBytes = prometheus.NewDesc("tandem_raft_db_bytes", "Size of raft.db (the log) in bytes.", nil, nil)
	return c
}

func capital(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.counters {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{c.assignedNAs, c.assignedPDs, c.declined, c.poolUsed, c.poolTotal, c.poolRatio} {
		ch <- d
	}
	if c.src.Failover != nil {
		for _, d := range []*prometheus.Desc{c.foState, c.foPartner, c.foInfo, c.foInState, c.foUnacked, c.foOwed, c.foSkew, c.foSinceContact, c.foUp, c.foMCLT, c.foRejected} {
			ch <- d
		}
	}
	if c.src.Store != nil {
		ch <- c.applied
		ch <- c.snapshot
		ch <- c.dbBytes
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.src.Counters(func(kea, _ string, v uint64) {
		if d := c.counters[kea]; d != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
		}
	})
	c.collectPools(ch)
	if c.src.Failover != nil {
		c.collectFailover(ch, c.src.Failover())
	}
	if c.src.Store != nil {
		in := c.src.Store()
		ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(in.AppliedIndex))
		snap := 0.0
		if in.LastSnapshot != nil {
			snap = float64(in.LastSnapshot.Index)
		}
		ch <- prometheus.MustNewConstMetric(c.snapshot, prometheus.GaugeValue, snap)
		ch <- prometheus.MustNewConstMetric(c.dbBytes, prometheus.GaugeValue, float64(in.DBBytes))
	}
}

func (c *collector) collectPools(ch chan<- prometheus.Metric) {
	type perSubnet struct{ nas, pds, declined int64 }
	var order []string
	subnets := map[string]*perSubnet{}
	for _, p := range c.src.Pools() {
		sn := p.Subnet.String()
		s := subnets[sn]
		if s == nil {
			s = &perSubnet{}
			subnets[sn] = s
			order = append(order, sn)
		}
		pool := fmt.Sprintf("%s-%s", p.First, p.Last)
		if p.Type == fsm.IAPD {
			s.pds += p.Active
			pool += fmt.Sprintf("/%d", p.Length)
		} else {
			s.nas += p.Active
			s.declined += p.Abandoned
		}
		labels := []string{sn, p.Type.String(), pool}
		ch <- prometheus.MustNewConstMetric(c.poolUsed, prometheus.GaugeValue, float64(p.Used), labels...)
		ch <- prometheus.MustNewConstMetric(c.poolTotal, prometheus.GaugeValue, float64(p.Total), labels...)
		ratio := 0.0
		if p.Total > 0 {
			ratio = float64(p.Used) / float64(p.Total)
		}
		ch <- prometheus.MustNewConstMetric(c.poolRatio, prometheus.GaugeValue, ratio, labels...)
	}
	for _, sn := range order {
		s := subnets[sn]
		ch <- prometheus.MustNewConstMetric(c.assignedNAs, prometheus.GaugeValue, float64(s.nas), sn)
		ch <- prometheus.MustNewConstMetric(c.assignedPDs, prometheus.GaugeValue, float64(s.pds), sn)
		ch <- prometheus.MustNewConstMetric(c.declined, prometheus.GaugeValue, float64(s.declined), sn)
	}
}

func (c *collector) collectFailover(ch chan<- prometheus.Metric, st failover.Status) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(c.foState, float64(st.StateCode))
	g(c.foPartner, float64(st.PartnerStateCode))
	partner := st.PartnerState
	if partner == "" {
		partner = "unknown"
	}
	g(c.foInfo, 1, st.Role, st.State, partner)
	g(c.foInState, float64(st.SecondsInState))
	g(c.foUnacked, float64(st.UnackedUpdates))
	g(c.foOwed, float64(st.OwedUpdates))
	g(c.foSkew, float64(st.ClockSkewSeconds))
	if st.SecondsSinceContact != nil {
		g(c.foSinceContact, float64(*st.SecondsSinceContact))
	}
	up := 0.0
	if st.CommunicationsOK {
		up = 1
	}
	g(c.foUp, up)
	if d, err := time.ParseDuration(st.MCLT); err == nil {
		g(c.foMCLT, d.Seconds())
	}
	for reason, n := range st.RejectedConnections {
		ch <- prometheus.MustNewConstMetric(c.foRejected, prometheus.CounterValue, float64(n), reason)
	}
}
