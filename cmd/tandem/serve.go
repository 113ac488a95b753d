package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/config"
	"github.com/tandem-dhcp/tandem/control"
	"github.com/tandem-dhcp/tandem/failover"
	"github.com/tandem-dhcp/tandem/failover/link"
	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/metrics"
	"github.com/tandem-dhcp/tandem/raftstore"
	"github.com/tandem-dhcp/tandem/server"
)

const defaultConfigPath = "/etc/tandem/tandem.toml"

// minProcs is the least GOMAXPROCS serve runs with (see serveCommand).
const minProcs = 4

func configFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: defaultConfigPath,
		Usage: "configuration file (TOML)", EnvVars: []string{"TANDEM_CONFIG"}}
}

// serveCommand is `tandem serve`: the daemon.
func serveCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the DHCPv6 server (the daemon)",
		Description: "Opens the data dir, replays the lease log, listens on UDP port 547 on the configured\n" +
			"interfaces and serves the control API on the control socket. SIGINT or SIGTERM stop it cleanly.",
		Flags: []cli.Flag{configFlag(),
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile (pprof) to this file until the daemon stops", Hidden: true},
		},
		Action: func(c *cli.Context) error {
			if p := c.String("cpuprofile"); p != "" {
				f, err := os.Create(p)
				if err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				defer pprof.StopCPUProfile()
			}
			cfg, err := config.Load(c.String("config"))
			if err != nil {
				return cli.Exit(fmt.Sprintf("configuration not valid:\n%v", err), exitFailure)
			}
			format := cfg.Log.Format
			if format == "" {
				format = "json"
				if isTerminal(e.stderr) {
					format = "console"
				}
			}
			log, err := newLogger(cfg.Log.Level, format, e.stderr)
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(cfg.GCPercent)
			}
			// With one P, a goroutine blocked in fsync holds the only P until
			// the runtime notices, and the packet path stalls behind it (seen
			// as a 3x lower rate when pinned to one core). More Ps than cores
			// only time-share; GOMAXPROCS in the environment wins.
			if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < minProcs {
				runtime.GOMAXPROCS(minProcs)
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := runDaemon(ctx, cfg, log); err != nil {
				log.Error("tandem stopped", zap.Error(err))
				return cli.Exit(err.Error(), exitFailure)
			}
			return nil
		},
	}
}

// daemon ties the store, the DHCP server, the failover endpoint (if any)
// and the control API together.
type daemon struct {
	cfg     *config.Config
	store   *raftstore.Store
	srv     *server.Server
	ep      *failover.Endpoint
	started time.Time
	// held is the standalone server's snapshot-restore hold (heldPolicy);
	// a failover endpoint keeps its own.
	held atomic.Bool
}

// heldPolicy is the standalone policy of a server restored from a snapshot
// with the hold set: it answers no client and allocates nothing until
// `tandem failover continue` clears held. Reclamation still runs (it only
// frees leases whose time is over).
type heldPolicy struct {
	server.Standalone
	held *atomic.Bool
}

func (p heldPolicy) Serve(t dhcpv6.MessageType, forUs bool) bool { return !p.held.Load() }
func (p heldPolicy) MayAllocate() bool                           { return !p.held.Load() }

// newEndpoint builds the RFC 8156 endpoint from the [failover] table.
// covered answers whether a resource is in one of the server's pools; the
// server is built after the endpoint (it takes the endpoint as its Policy),
// so covered reads it through a pointer set before anything runs.
func newEndpoint(cfg *config.Config, st *raftstore.Store, log *zap.Logger, scfg server.Config, srv **server.Server) (*failover.Endpoint, error) {
	f := cfg.Failover
	role, err := link.ParseRole(f.Role)
	if err != nil {
		return nil, err
	}
	lc := link.Config{Role: role, Relationship: f.Relationship, Local: f.Local, Peer: f.Peer,
		MCLT: f.MCLT.Duration, KeepaliveTime: f.KeepaliveTime.Duration, MaxUnackedBndUpd: uint32(f.MaxUnackedBndUpd),
		RetryMin: f.ConnectRetryMin.Duration, RetryMax: f.ConnectRetryMax.Duration,
		HandshakeTimeout: f.HandshakeTimeout.Duration, MaxPendingConns: f.MaxPendingConnections, Logger: log}
	if f.TLSCert != "" {
		lc.TLS = &link.TLSConfig{CertFile: f.TLSCert, KeyFile: f.TLSKey, CAFile: f.TLSCA}
	}
	covered := func(r fsm.Resource) bool { return (*srv).Covers(r) }
	return failover.New(failover.Config{Link: lc, Machine: machine.Config{AutoPartnerDown: f.AutoPartnerDown.Duration, StartAlone: f.StartAlone},
		Store: st, ExpiredHold: scfg.ExpiredHoldTime, Covered: covered, Pools: latePools{srv},
		PrefixShare: f.PrefixShare, PrefixThreshold: f.PrefixRebalanceThreshold, Logger: log})
}

// latePools is the server's prefix pools for the endpoint, read through
// the pointer that is set once the server exists (before anything runs).
type latePools struct{ srv **server.Server }

func (l latePools) PrefixPools() []server.PrefixPool { return (*l.srv).PrefixPools() }

func (l latePools) PrefixCandidates(pool, below netip.Prefix, n int, unrecorded bool, want func(*fsm.Binding) bool) []fsm.Resource {
	return (*l.srv).PrefixCandidates(pool, below, n, unrecorded, want)
}

func runDaemon(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	// Whatever stops the DHCP service (a signal, or a socket that cannot be
	// opened) stops the control API too: never a daemon that answers on its
	// control socket but serves no DHCP.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rcfg := raftstore.Config{DataDir: cfg.DataDir, SnapshotThreshold: cfg.Store.SnapshotThreshold,
		TrailingLogs: cfg.Store.TrailingLogs, SnapshotRetain: cfg.Store.SnapshotRetain, Logger: log}
	var reg *metrics.Registry // nil: no [metrics] listener
	if cfg.Metrics.Listen != "" {
		reg = metrics.New()
		rcfg.OnApply = reg.ObserveCommit
	}
	st, err := raftstore.Open(rcfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Warn("close store", zap.Error(err))
		}
	}()
	scfg := serverConfig(cfg, log)
	d := &daemon{cfg: cfg, store: st, started: time.Now()}
	var ep *failover.Endpoint
	var srv *server.Server
	if cfg.Failover != nil {
		if ep, err = newEndpoint(cfg, st, log, scfg, &srv); err != nil {
			return err
		}
		scfg.Policy = ep
	} else if st.State().Endpoint().HeldInStartup {
		d.held.Store(true)
		scfg.Policy = heldPolicy{Standalone: server.Standalone{Hold: scfg.ExpiredHoldTime}, held: &d.held}
		log.Error("ALARM: held after a snapshot restore: answering no client until `tandem failover continue`")
	}
	srv, err = server.New(scfg, st)
	if err != nil {
		return err
	}
	defer srv.Close()
	d.srv, d.ep = srv, ep
	epErr := make(chan error, 1)
	if ep != nil {
		go func() {
			err := ep.Run(ctx)
			if err != nil {
				cancel() // no DHCP service without the failover endpoint's rules
			}
			epErr <- err
		}()
	} else {
		epErr <- nil
	}
	l, err := control.Listen(cfg.ControlSocket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.ControlSocket)
	// The optional listeners: each failure to serve stops the daemon, as
	// the control socket's does.
	var opt []<-chan error
	run := func(name string, serve func() error) {
		ch := make(chan error, 1)
		opt = append(opt, ch)
		go func() {
			err := serve()
			if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
				cancel()
			}
			ch <- err
		}()
	}
	if reg != nil {
		src := metrics.Sources{Counters: srv.Metrics().Each, Pools: srv.Pools, Store: st.Info}
		if ep != nil {
			src.Failover = ep.Status
		}
		if err := reg.Register(src); err != nil {
			l.Close()
			return err
		}
		ml, err := metrics.Listen(cfg.Metrics.ParsedListen.String())
		if err != nil {
			l.Close()
			return err
		}
		run("metrics listener", func() error { return reg.Serve(ctx, ml) })
		log.Info("metrics endpoint ready", zap.String("url", "http://"+ml.Addr().String()+"/metrics"))
	}
	if rc := cfg.Control; rc.Listen != "" {
		remote, err := control.ListenRemote(control.RemoteConfig{Addr: rc.ParsedListen.String(), CertFile: rc.TLSCert, KeyFile: rc.TLSKey,
			ClientCAFile: rc.TLSClientCA, TokenFile: rc.TokenFile, Logger: log})
		if err != nil {
			cancel()
			for _, ch := range opt {
				<-ch
			}
			l.Close()
			return err
		}
		run("remote control API", func() error { return remote.Serve(ctx, d) })
		log.Info("remote control API ready", zap.String("address", "https://"+remote.Addr().String()),
			zap.Bool("client-certificates", rc.TLSClientCA != ""), zap.Bool("token", rc.TokenFile != ""))
	}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- control.Serve(ctx, l, d) }()
	log.Info("control socket ready", zap.String("path", cfg.ControlSocket))
	err = srv.Serve(ctx)
	cancel()
	if cerr := <-ctlErr; err == nil && cerr != nil {
		err = fmt.Errorf("control API: %w", cerr)
	}
	for _, ch := range opt {
		if oerr := <-ch; err == nil && oerr != nil {
			err = oerr
		}
	}
	if eerr := <-epErr; err == nil && eerr != nil {
		err = eerr
	}
	return err
}

func serverConfig(cfg *config.Config, log *zap.Logger) server.Config {
	sc := server.Config{
		Interfaces: cfg.DHCP.Interfaces, Port: cfg.DHCP.Port, SiteMulticast: cfg.DHCP.SiteMulticast,
		DomainSearch: cfg.DHCP.DomainSearch, Preference: cfg.DHCP.Preference, RapidCommit: *cfg.DHCP.RapidCommit,
		Workers: cfg.DHCP.Workers, QueueSize: cfg.DHCP.QueueSize,
		DeclineHoldTime: cfg.DHCP.DeclineHoldTime.Duration, ExpiredHoldTime: cfg.DHCP.ExpiredHoldTime.Duration,
		ReclaimInterval: cfg.DHCP.ReclaimInterval.Duration, Logger: log,
		ClientRate:       server.Rate{PerSecond: cfg.DHCP.ClientRateLimit.PerSecond, Burst: cfg.DHCP.ClientBurst},
		RelayRate:        server.Rate{PerSecond: cfg.DHCP.RelayRateLimit.PerSecond, Burst: cfg.DHCP.RelayBurst},
		RateLimitEntries: cfg.DHCP.RateLimitEntries,
	}
	sc.DNSServers = cfg.DHCP.ParsedDNS
	for _, s := range cfg.Subnets {
		ss := server.SubnetConfig{Prefix: s.ParsedPrefix, Interface: s.Interface,
			PreferredLifetime: s.PreferredLifetime.Duration, ValidLifetime: s.ValidLifetime.Duration,
			RenewTime: s.RenewTime.Duration, RebindTime: s.RebindTime.Duration}
		if len(s.DNSServers) > 0 {
			ss.DNSServers = s.ParsedDNS
		}
		for _, r := range s.ParsedPools {
			ss.Pools = append(ss.Pools, server.AddressRange{First: r.First, Last: r.Last})
		}
		for _, p := range s.ParsedPDPools {
			ss.PDPools = append(ss.PDPools, server.PDPool{Prefix: p.Prefix, DelegatedLength: p.DelegatedLength})
		}
		sc.Subnets = append(sc.Subnets, ss)
	}
	return sc
}

// PartnerDown implements control.PartnerDowner.
func (d *daemon) PartnerDown() error { return d.ep.PartnerDown() }

// HasFailover implements control.PartnerDowner.
func (d *daemon) HasFailover() bool { return d.ep != nil }

// SaveSnapshot implements control.Snapshotter.
func (d *daemon) SaveSnapshot(w io.Writer) (*fsm.SnapshotHeader, error) {
	return d.store.SaveSnapshot(w)
}

// Continue implements control.Continuer: it releases the snapshot-restore
// hold of the failover endpoint, or of the standalone server (by storing
// the record without the hold, then answering clients again).
func (d *daemon) Continue() error {
	if d.ep != nil {
		return d.ep.Continue()
	}
	if !d.held.Load() {
		return fmt.Errorf("%w: this standalone server is serving (only a snapshot restore holds it): nothing to continue", machine.ErrNotHeld)
	}
	rec := d.store.State().Endpoint()
	rec.HeldInStartup = false
	if _, err := d.store.Apply(&fsm.Command{Type: fsm.CmdSetEndpoint, Time: time.Now().UnixNano(), Origin: fsm.OriginAdmin,
		Note: "continue after snapshot restore", Endpoint: &rec}); err != nil {
		return fmt.Errorf("the release could not be stored, still held: %w", err)
	}
	d.held.Store(false)
	return nil
}

// State implements control.Backend.
func (d *daemon) State() *fsm.State { return d.store.State() }

// Status implements control.Backend.
func (d *daemon) Status() control.Status {
	info := d.store.Info()
	st := control.Status{Version: version, ServerDUID: fmt.Sprintf("%x", d.srv.DUID()),
		Uptime: time.Since(d.started).Round(time.Second).String(),
		Store: control.StoreStatus{DataDir: info.DataDir, AppliedIndex: info.AppliedIndex,
			FirstLogIndex: info.FirstLogIndex, LastLogIndex: info.LastLogIndex, DBBytes: info.DBBytes},
		Bindings: map[string]int{}, Counters: d.srv.Metrics().Snapshot()}
	if info.LastSnapshot != nil {
		st.Store.LastSnapshot = info.LastSnapshot.Index
	}
	stats := d.store.State().Stats()
	for t := fsm.IANA; t <= fsm.IAPD; t++ {
		for s := fsm.StatusActive; s <= fsm.StatusReset; s++ {
			if n := stats.Counts[t][s]; n > 0 {
				st.Bindings[t.String()+"/"+s.String()] = n
			}
		}
	}
	st.HeldInStartup = d.held.Load()
	if d.ep != nil {
		fs := d.ep.Status()
		st.Failover = fs
		st.HeldInStartup = fs.HeldInStartup
	}
	st.Counters["assigned-nas"] = uint64(stats.Counts[fsm.IANA][fsm.StatusActive])
	st.Counters["assigned-pds"] = uint64(stats.Counts[fsm.IAPD][fsm.StatusActive])
	for _, p := range d.srv.Pools() {
		ps := control.PoolStatus{Subnet: p.Subnet.String(), Type: p.Type.String(), Used: p.Used,
			Total: strconv.FormatUint(p.Total, 10)}
		if p.Type == fsm.IAPD {
			ps.Range = fmt.Sprintf("%s-%s /%d", p.First, p.Last, p.Length)
		} else {
			ps.Range = fmt.Sprintf("%s-%s", p.First, p.Last)
		}
		if p.Total > 0 {
			ps.Ratio = float64(p.Used) / float64(p.Total)
		}
		st.Pools = append(st.Pools, ps)
	}
	return st
}

// configCommand is `tandem config check FILE`.
func configCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "work with configuration files",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "validate a configuration file without starting anything",
			ArgsUsage: "FILE",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("usage: tandem config check FILE", exitUsage)
				}
				cfg, err := config.Load(c.Args().First())
				if err != nil {
					return cli.Exit(fmt.Sprintf("%v", err), exitFailure)
				}
				fmt.Fprintf(e.stdout, "%s: ok (%d subnets, data dir %s)\n", cfg.Path(), len(cfg.Subnets), cfg.DataDir)
				return nil
			},
		}},
	}
}

func socketFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "socket", Aliases: []string{"s"}, Value: "/run/tandem/tandem.sock",
		Usage: "the daemon's control socket", EnvVars: []string{"TANDEM_SOCKET"}}
}

// failoverCommand is `tandem failover ...`.
func failoverCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "failover",
		Usage: "failover operator commands",
		Subcommands: []*cli.Command{{
			Name:  "partner-down",
			Usage: "declare the partner down (RFC 8156 §8.4): this server then serves all clients alone",
			Description: "Only safe when the partner is really stopped: if both servers run in PARTNER-DOWN they may\n" +
				"hand the same resources to different clients. Refused in states where the RFC does not allow it.",
			Flags: append(clientFlags(), jsonFlag(nil), &cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"}),
			Action: func(c *cli.Context) error {
				cl, err := newClient(c)
				if err != nil {
					return err
				}
				if err := confirm(e, c, "Declare the partner DOWN? Only do this if it is really stopped."); err != nil {
					return err
				}
				st, err := cl.PartnerDown(c.Context)
				if err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				if c.Bool("json") {
					return writeJSON(e.stdout, st)
				}
				fmt.Fprintf(e.stdout, "partner-down recorded; failover state: %v\n", st.Failover)
				return nil
			},
		}, {
			Name:  "continue",
			Usage: "release a server held after a snapshot restore: it then starts serving as RFC 8156 allows",
			Description: "A server restored with `tandem snapshot restore` stays in STARTUP (standalone: answers no\n" +
				"client) until this command. Check first with `tandem status` on both servers that the partner\n" +
				"is connected and in the state you expect (docs/operations.md says when it is safe). The\n" +
				"release is stored before the command returns. Refused when the server is not held.",
			Flags: append(clientFlags(), jsonFlag(nil), &cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"}),
			Action: func(c *cli.Context) error {
				cl, err := newClient(c)
				if err != nil {
					return err
				}
				if err := confirm(e, c, "Release the restored server's hold (it may start serving clients)?"); err != nil {
					return err
				}
				st, err := cl.Continue(c.Context)
				if err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				if c.Bool("json") {
					return writeJSON(e.stdout, st)
				}
				if st.Failover == nil {
					fmt.Fprintln(e.stdout, "released: the standalone server answers clients again")
					return nil
				}
				var f failover.Status
				if b, err := json.Marshal(st.Failover); err == nil && json.Unmarshal(b, &f) == nil {
					fmt.Fprintf(e.stdout, "released: failover state %s, partner %s, communications ok: %v\n", f.State, orDash(f.PartnerState), f.CommunicationsOK)
				}
				return nil
			},
		}},
	}
}

// printFailover is the failover part of `tandem status`.
func printFailover(w io.Writer, f *failover.Status, partner string) {
	comm := "communications OK"
	if !f.CommunicationsOK {
		comm = "communications DOWN"
	}
	inState := time.Duration(f.SecondsInState) * time.Second
	fmt.Fprintf(w, "failover: %s in %s for %s (since %s), partner %s, %s\n", f.Role, f.State, inState, f.StateSince, partner, comm)
	contact := "never"
	if f.SecondsSinceContact != nil {
		contact = fmt.Sprintf("%ds ago (%s)", *f.SecondsSinceContact, f.LastContact)
	}
	fmt.Fprintf(w, "          MCLT %s, updates owed %d, unacked %d, clock skew %ds, last contact %s\n",
		f.MCLT, f.OwedUpdates, f.UnackedUpdates, f.ClockSkewSeconds, contact)
	if r := f.ResyncSending; r != nil {
		fmt.Fprintf(w, "          resync: answering the partner's %s since %s: %d of at most %d bindings sent\n", r.Kind, r.Started, r.Bindings, r.Total)
	}
	if r := f.ResyncReceiving; r != nil {
		fmt.Fprintf(w, "          resync: %s sent at %s: %d bindings received so far\n", r.Kind, r.Started, r.Bindings)
	}
}

// statusCommand is `tandem status`.
func statusCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show a running daemon's status",
		Flags: append(clientFlags(), jsonFlag(nil)),
		Action: func(c *cli.Context) error {
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
			defer cancel()
			st, err := cl.Status(ctx)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return cli.Exit("the daemon did not answer within 10s", exitFailure)
				}
				return cli.Exit(err.Error(), exitFailure)
			}
			if c.Bool("json") {
				return writeJSON(e.stdout, st)
			}
			fmt.Fprintf(e.stdout, "tandem %s, up %s, server DUID %s\n", st.Version, st.Uptime, st.ServerDUID)
			if st.HeldInStartup {
				fmt.Fprintln(e.stdout, "HELD after a snapshot restore (held_in_startup): answering no client until `tandem failover continue`")
			}
			fmt.Fprintf(e.stdout, "store: %s, applied index %d, log %d..%d, last snapshot at %d, raft.db %d bytes\n",
				st.Store.DataDir, st.Store.AppliedIndex, st.Store.FirstLogIndex, st.Store.LastLogIndex, st.Store.LastSnapshot, st.Store.DBBytes)
			if st.Failover != nil {
				var f failover.Status
				if b, err := json.Marshal(st.Failover); err == nil && json.Unmarshal(b, &f) == nil {
					partner := f.PartnerState
					if partner == "" {
						partner = "unknown"
					}
					printFailover(e.stdout, &f, partner)
				}
			}
			fmt.Fprintln(e.stdout, "pools:")
			for _, p := range st.Pools {
				fmt.Fprintf(e.stdout, "  %-20s %-3s %-50s %d/%s used (%.2f%%)\n", p.Subnet, p.Type, p.Range, p.Used, p.Total, 100*p.Ratio)
			}
			fmt.Fprintln(e.stdout, "bindings:")
			for _, k := range slices.Sorted(maps.Keys(st.Bindings)) {
				fmt.Fprintf(e.stdout, "  %-20s %d\n", k, st.Bindings[k])
			}
			return nil
		},
	}
}
