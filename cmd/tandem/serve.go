package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/config"
	"github.com/tandem-dhcp/tandem/control"
	"github.com/tandem-dhcp/tandem/failover"
	"github.com/tandem-dhcp/tandem/failover/link"
	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/fsm"
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
}

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
		Store: st, ExpiredHold: scfg.ExpiredHoldTime, Covered: covered, Logger: log})
}

func runDaemon(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	// Whatever stops the DHCP service (a signal, or a socket that cannot be
	// opened) stops the control API too: never a daemon that answers on its
	// control socket but serves no DHCP.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := raftstore.Open(raftstore.Config{DataDir: cfg.DataDir, SnapshotThreshold: cfg.Store.SnapshotThreshold,
		TrailingLogs: cfg.Store.TrailingLogs, SnapshotRetain: cfg.Store.SnapshotRetain, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Warn("close store", zap.Error(err))
		}
	}()
	scfg := serverConfig(cfg, log)
	var ep *failover.Endpoint
	var srv *server.Server
	if cfg.Failover != nil {
		if ep, err = newEndpoint(cfg, st, log, scfg, &srv); err != nil {
			return err
		}
		scfg.Policy = ep
	}
	srv, err = server.New(scfg, st)
	if err != nil {
		return err
	}
	defer srv.Close()
	d := &daemon{cfg: cfg, store: st, srv: srv, ep: ep, started: time.Now()}
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
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- control.Serve(ctx, l, d) }()
	log.Info("control socket ready", zap.String("path", cfg.ControlSocket))
	err = srv.Serve(ctx)
	cancel()
	if cerr := <-ctlErr; err == nil && cerr != nil {
		err = fmt.Errorf("control API: %w", cerr)
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
	if d.ep != nil {
		fs := d.ep.Status()
		st.Failover = fs
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
			Flags: []cli.Flag{socketFlag(), jsonFlag(nil), &cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"}},
			Action: func(c *cli.Context) error {
				if !c.Bool("yes") {
					fmt.Fprint(e.stdout, "Declare the partner DOWN? Only do this if it is really stopped. Type 'yes': ")
					var answer string
					fmt.Fscanln(os.Stdin, &answer)
					if answer != "yes" {
						return cli.Exit("not confirmed: nothing changed", exitFailure)
					}
				}
				st, err := control.NewClient(c.String("socket")).PartnerDown(c.Context)
				if err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				if c.Bool("json") {
					return writeJSON(e.stdout, st)
				}
				fmt.Fprintf(e.stdout, "partner-down recorded; failover state: %v\n", st.Failover)
				return nil
			},
		}},
	}
}

// statusCommand is `tandem status`.
func statusCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show a running daemon's status",
		Flags: []cli.Flag{socketFlag(), jsonFlag(nil)},
		Action: func(c *cli.Context) error {
			ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
			defer cancel()
			st, err := control.NewClient(c.String("socket")).Status(ctx)
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
			fmt.Fprintf(e.stdout, "store: %s, applied index %d, log %d..%d, last snapshot at %d, raft.db %d bytes\n",
				st.Store.DataDir, st.Store.AppliedIndex, st.Store.FirstLogIndex, st.Store.LastLogIndex, st.Store.LastSnapshot, st.Store.DBBytes)
			if st.Failover != nil {
				var f failover.Status
				if b, err := json.Marshal(st.Failover); err == nil && json.Unmarshal(b, &f) == nil {
					partner := f.PartnerState
					if partner == "" {
						partner = "unknown"
					}
					fmt.Fprintf(e.stdout, "failover: %s in %s since %s, partner %s, communications ok: %v\n", f.Role, f.State, f.StateSince, partner, f.CommunicationsOK)
					fmt.Fprintf(e.stdout, "          MCLT %s, updates owed %d, unacked %d, clock skew %ds, last contact %s\n",
						f.MCLT, f.OwedUpdates, f.UnackedUpdates, f.ClockSkewSeconds, f.LastContact)
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
