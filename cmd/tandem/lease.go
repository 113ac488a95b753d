package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tandem-dhcp/tandem/control"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/progress"
	"github.com/tandem-dhcp/tandem/server"
)

// leaseCommand is `tandem lease ...`: read and change the bindings of a
// running daemon through its control socket.
func leaseCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "lease",
		Usage: "look at and change leases in a running daemon",
		Description: "Changes (add, update, delete, import) go through the daemon's raft log like DHCP traffic\n" +
			"(origin admin) and, under failover, are sent to the partner. docs/operations.md has the details.",
		Subcommands: []*cli.Command{leaseListCommand(e), leaseGetCommand(e), leaseAddCommand(e), leaseUpdateCommand(e),
			leaseDeleteCommand(e), leaseExportCommand(e), leaseImportCommand(e)},
	}
}

func leaseFilterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "type", Usage: "na or pd"},
		&cli.StringFlag{Name: "state", Usage: "binding status, e.g. ACTIVE"},
		&cli.StringFlag{Name: "duid", Usage: "client DUID, hex"},
		&cli.IntFlag{Name: "limit", Usage: "at most this many"},
		&cli.StringFlag{Name: "after", Usage: `page after this lease ("na ADDRESS" or "pd PREFIX")`},
	}
}

func filterOf(c *cli.Context) control.LeaseFilter {
	return control.LeaseFilter{Type: c.String("type"), State: c.String("state"), DUID: c.String("duid"),
		Limit: c.Int("limit"), After: c.String("after")}
}

func leaseListCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list leases (all, or filtered)",
		Flags: append(append(clientFlags(), jsonFlag(nil)), leaseFilterFlags()...),
		Action: func(c *cli.Context) error {
			cl, cerr := newClient(c)
			if cerr != nil {
				return cerr
			}
			ls, err := cl.Leases(c.Context, filterOf(c))
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if c.Bool("json") {
				return writeJSON(e.stdout, ls)
			}
			printLeaseTable(e.stdout, ls)
			fmt.Fprintf(e.stdout, "%d leases\n", len(ls))
			return nil
		},
	}
}

func printLeaseTable(w io.Writer, ls []control.Lease) {
	fmt.Fprintf(w, "%-4s %-44s %-12s %-10s %-24s %s\n", "TYPE", "ADDRESS/PREFIX", "STATE", "IAID", "VALID UNTIL", "DUID")
	for _, l := range ls {
		fmt.Fprintf(w, "%-4s %-44s %-12s %-10d %-24s %s\n", l.Type, leaseLabel(&l), l.State, l.IAID, l.ValidUntil, l.DUID)
	}
}

func leaseLabel(l *control.Lease) string {
	if l.Address != "" {
		return l.Address
	}
	return l.Prefix
}

// printLease writes one lease as "key: value" lines.
func printLease(w io.Writer, l *control.Lease) {
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-24s %s\n", k+":", v)
		}
	}
	row("lease", l.Type+" "+leaseLabel(l))
	row("state", l.State)
	row("duid", l.DUID)
	row("iaid", fmt.Sprint(l.IAID))
	row("valid until", l.ValidUntil)
	row("lifetimes", fmt.Sprintf("preferred %ds, valid %ds", l.PreferredLifetime, l.ValidLifetime))
	row("cltt", l.CLTT)
	row("state since", l.StartTimeOfState)
	row("state expires", l.StateExpirationTime)
	row("partner lifetime", l.PartnerLifetime)
	row("acked partner lifetime", l.AckedPartnerLifetime)
	row("expiration time", l.ExpirationTime)
	row("partner cltt", l.PartnerRawCLTTime)
	row("flags", strings.Join(l.Flags, " "))
	row("update owed", fmt.Sprint(l.Owed))
	row("revision", fmt.Sprint(l.Rev))
}

// resourceArg reads the one ADDRESS|PREFIX argument.
func resourceArg(c *cli.Context) (fsm.Resource, error) {
	if c.NArg() != 1 {
		return fsm.Resource{}, cli.Exit(fmt.Sprintf("usage: %s ADDRESS|PREFIX (run '%s --help')", c.Command.HelpName, c.Command.HelpName), exitUsage)
	}
	r, err := control.ParseResourceArg(c.Args().First(), strings.ToLower(c.String("type")))
	if err != nil {
		return r, cli.Exit(err.Error(), exitUsage)
	}
	return r, nil
}

func leaseGetCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "show one lease, or a client's leases",
		ArgsUsage: "ADDRESS|PREFIX  (or --duid HEX [--iaid N] [--type na|pd])",
		Flags: append(clientFlags(), jsonFlag(nil),
			&cli.StringFlag{Name: "duid", Usage: "the client's DUID (hex): show its leases"},
			&cli.Uint64Flag{Name: "iaid", Usage: "with --duid: only this IA"},
			&cli.StringFlag{Name: "type", Usage: "na, ta or pd (an address is na unless told)"},
		),
		Action: func(c *cli.Context) error {
			cl, cerr := newClient(c)
			if cerr != nil {
				return cerr
			}
			if c.IsSet("duid") {
				if c.NArg() > 0 {
					return cli.Exit("give ADDRESS|PREFIX or --duid, not both", exitUsage)
				}
				var iaid *uint32
				if c.IsSet("iaid") {
					v := uint32(c.Uint64("iaid"))
					iaid = &v
				}
				ls, err := cl.ClientLeases(c.Context, c.String("duid"), strings.ToLower(c.String("type")), iaid)
				if err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				if len(ls) == 0 {
					what := "client " + c.String("duid")
					if iaid != nil {
						what += fmt.Sprintf(" IAID %d", *iaid)
					}
					return cli.Exit("no lease for "+what, exitFailure)
				}
				if c.Bool("json") {
					return writeJSON(e.stdout, ls)
				}
				printLeaseTable(e.stdout, ls)
				return nil
			}
			if c.IsSet("iaid") {
				return cli.Exit("--iaid goes with --duid", exitUsage)
			}
			r, err := resourceArg(c)
			if err != nil {
				return err
			}
			l, err := cl.Lease(c.Context, r)
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if c.Bool("json") {
				return writeJSON(e.stdout, l)
			}
			printLease(e.stdout, l)
			return nil
		},
	}
}

// changeFlags are the flags of add and update.
func changeFlags() []cli.Flag {
	return append(clientFlags(), jsonFlag(nil),
		&cli.StringFlag{Name: "type", Usage: "na or pd (a PREFIX is pd, an ADDRESS na)"},
		&cli.StringFlag{Name: "duid", Usage: "client DUID (hex, ':' allowed)"},
		&cli.Uint64Flag{Name: "iaid", Usage: "client IAID"},
		&cli.DurationFlag{Name: "valid", Usage: "valid lifetime (default: the subnet's; update: the time left)"},
		&cli.DurationFlag{Name: "preferred", Usage: "preferred lifetime (default: the subnet's, at most --valid)"},
		&cli.BoolFlag{Name: "force", Usage: "skip the failover allocation checks (the partner's half of a pool, a state that does not allocate)"},
	)
}

func changeOf(c *cli.Context) (control.LeaseChange, error) {
	var lc control.LeaseChange
	if c.IsSet("duid") {
		d := c.String("duid")
		lc.DUID = &d
	}
	if c.IsSet("iaid") {
		if c.Uint64("iaid") > 1<<32-1 {
			return lc, cli.Exit("--iaid: at most 4294967295", exitUsage)
		}
		v := uint32(c.Uint64("iaid"))
		lc.IAID = &v
	}
	for _, f := range []struct {
		name string
		to   **uint32
	}{{"valid", &lc.ValidLifetime}, {"preferred", &lc.PreferredLifetime}} {
		if c.IsSet(f.name) {
			d := c.Duration(f.name)
			if d < 0 || d%time.Second != 0 || d > time.Duration(1<<32-1)*time.Second {
				return lc, cli.Exit(fmt.Sprintf("--%s %v: whole seconds, 0 to 2^32-1", f.name, d), exitUsage)
			}
			v := uint32(d / time.Second)
			*f.to = &v
		}
	}
	lc.Force = c.Bool("force")
	return lc, nil
}

// showChange prints the stored lease and what the daemon made of the request.
func showChange(e *env, c *cli.Context, verb string, l *control.Lease, lc control.LeaseChange) error {
	if c.Bool("json") {
		return writeJSON(e.stdout, l)
	}
	fmt.Fprintf(e.stdout, "%s %s %s: %s", verb, l.Type, leaseLabel(l), l.State)
	if l.State == "ACTIVE" {
		fmt.Fprintf(e.stdout, " until %s (valid %ds, preferred %ds)", l.ValidUntil, l.ValidLifetime, l.PreferredLifetime)
	}
	fmt.Fprintln(e.stdout)
	if lc.ValidLifetime != nil && l.State == "ACTIVE" && l.ValidLifetime < *lc.ValidLifetime {
		e.warnf("valid lifetime capped to %ds (asked %ds): failover limits a lease to the MCLT beyond what the partner acknowledged", l.ValidLifetime, *lc.ValidLifetime)
	}
	if l.Owed {
		fmt.Fprintln(e.stdout, "the failover partner will be sent this change")
	}
	return nil
}

func leaseAddCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "give an address or prefix to a client (an ACTIVE lease, committed to the log)",
		ArgsUsage: "ADDRESS|PREFIX --duid HEX --iaid N",
		Description: "The resource must be in a configured pool. Refused when it has an ACTIVE lease (use update),\n" +
			"and under failover when it is the partner's to allocate (RFC 8156 §4.2.1) unless --force.\n" +
			"Under failover the valid lifetime may be capped by the MCLT; the stored one is printed.",
		Flags: changeFlags(),
		Action: func(c *cli.Context) error {
			r, err := resourceArg(c)
			if err != nil {
				return err
			}
			if !c.IsSet("duid") || !c.IsSet("iaid") {
				return cli.Exit("lease add needs the client: --duid HEX --iaid N", exitUsage)
			}
			lc, err := changeOf(c)
			if err != nil {
				return err
			}
			lc.Resource = control.ResourceOf(r)
			cl, cerr := newClient(c)
			if cerr != nil {
				return cerr
			}
			l, err := cl.AddLease(c.Context, lc)
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			return showChange(e, c, "added", l, lc)
		},
	}
}

func leaseUpdateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "update",
		Usage:     "change a lease: client, lifetimes (extends it from now), or state",
		ArgsUsage: "ADDRESS|PREFIX [--duid HEX] [--iaid N] [--valid D] [--preferred D] [--state S]",
		Description: "--state ACTIVE (re)grants it now, RELEASED releases it as if its client had, ABANDONED sets it\n" +
			"aside as if declined. Without --valid an ACTIVE lease keeps the time it has left.",
		Flags: append(changeFlags(), &cli.StringFlag{Name: "state", Usage: "ACTIVE, RELEASED or ABANDONED"}),
		Action: func(c *cli.Context) error {
			r, err := resourceArg(c)
			if err != nil {
				return err
			}
			lc, err := changeOf(c)
			if err != nil {
				return err
			}
			lc.State = strings.ToUpper(c.String("state"))
			if lc.DUID == nil && lc.IAID == nil && lc.ValidLifetime == nil && lc.PreferredLifetime == nil && lc.State == "" {
				return cli.Exit("nothing to change: give --duid, --iaid, --valid, --preferred or --state", exitUsage)
			}
			cl, cerr := newClient(c)
			if cerr != nil {
				return cerr
			}
			l, err := cl.UpdateLease(c.Context, r, lc)
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			return showChange(e, c, "updated", l, lc)
		},
	}
}

func leaseDeleteCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "delete",
		Usage:     "remove a lease (under failover an ACTIVE one is released instead, and the partner told)",
		ArgsUsage: "ADDRESS|PREFIX",
		Flags: append(clientFlags(), jsonFlag(nil),
			&cli.StringFlag{Name: "type", Usage: "na or pd (a PREFIX is pd, an ADDRESS na)"},
			&cli.BoolFlag{Name: "force", Usage: "under failover: delete an ACTIVE lease outright (the partner is not told)"}),
		Action: func(c *cli.Context) error {
			r, err := resourceArg(c)
			if err != nil {
				return err
			}
			cl, cerr := newClient(c)
			if cerr != nil {
				return cerr
			}
			dr, err := cl.DeleteLease(c.Context, r, c.Bool("force"))
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if c.Bool("json") {
				return writeJSON(e.stdout, dr)
			}
			if dr.Action == "released" {
				fmt.Fprintf(e.stdout, "released %s %s (failover: RELEASED, the partner will be told; it becomes free once it acknowledges)\n", dr.Lease.Type, leaseLabel(&dr.Lease))
				return nil
			}
			fmt.Fprintf(e.stdout, "deleted %s %s (was %s)\n", dr.Lease.Type, leaseLabel(&dr.Lease), dr.Lease.State)
			return nil
		},
	}
}

// formatFor picks a lease file format: --format, else the file's extension, else csv.
func formatFor(c *cli.Context, file string) (control.LeaseFormat, error) {
	if s := c.String("format"); s != "" {
		f, err := control.ParseLeaseFormat(s)
		if err != nil {
			return "", cli.Exit("--"+err.Error(), exitUsage)
		}
		return f, nil
	}
	if strings.EqualFold(filepath.Ext(file), ".json") || strings.EqualFold(filepath.Ext(file), ".ndjson") {
		return control.FormatJSON, nil
	}
	return control.FormatCSV, nil
}

// lineCounter counts the lines written through it (one lease per line).
type lineCounter struct {
	w   io.Writer
	bar *progress.Bar
	n   int64
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.n += int64(bytes.Count(p, []byte{'\n'}))
	l.bar.Set(l.n)
	return l.w.Write(p)
}

func leaseExportCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write the lease table (or the filtered part) as CSV or JSON, from a consistent view",
		Description: "csv: a header, then one binding per line; columns " + strings.Join(control.CSVColumns, ",") + ".\n" +
			"json: an array of lease objects, one per line (as lease list --json). `lease import` reads both.",
		Flags: append(append(clientFlags(),
			&cli.StringFlag{Name: "format", Usage: "csv or json (default: from the -o file name, else csv)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to FILE (default stdout)"},
		), leaseFilterFlags()...),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			out := c.String("output")
			format, err := formatFor(c, out)
			if err != nil {
				return err
			}
			var w io.Writer = e.stdout
			var f *atomicFile
			if out != "" && out != "-" {
				f, err = createAtomic(out)
				switch {
				case errors.Is(err, errNotRegular):
					// A device or a pipe (/dev/null, a FIFO): write to it as
					// it is; a temp file renamed over it would replace it.
					dev, err := os.OpenFile(out, os.O_WRONLY, 0)
					if err != nil {
						return cli.Exit(err.Error(), exitFailure)
					}
					defer dev.Close()
					w = dev
				case err != nil:
					return cli.Exit(err.Error(), exitFailure)
				default:
					defer f.abort() // removes the temp file unless committed
					w = f
				}
			}
			bar := progress.New(e.stderr, "exporting", 0)
			lw := &lineCounter{w: w, bar: bar}
			cl, cerr := newClient(c)
			if cerr != nil {
				return cerr
			}
			err = cl.Export(c.Context, filterOf(c), format, lw, func(n int) { bar.SetTotal(int64(n)) })
			bar.Done()
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if f != nil {
				if err := f.sync(); err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				if err := f.commit(); err != nil {
					return cli.Exit(err.Error(), exitFailure)
				}
				n := lw.n - 1 // the CSV header, or JSON's closing "]" line
				fmt.Fprintf(e.stderr, "exported %d leases to %s (%s)\n", max(n, 0), out, format)
			}
			return nil
		},
	}
}

// countingReader counts the bytes read through it for a progress bar.
type countingReader struct {
	r   io.Reader
	bar *progress.Bar
	n   int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	c.bar.Set(c.n)
	return k, err
}

func leaseImportCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "load leases from a file written by lease export (CSV or JSON)",
		ArgsUsage: "FILE",
		Description: "Every record is checked first (errors name the line); nothing is stored unless all are good.\n" +
			"A resource that already has a lease refuses the import unless --replace. Bindings are stored\n" +
			"through the log in batches; under failover each is owed to the partner and sent to it.",
		Flags: append(clientFlags(), jsonFlag(nil),
			&cli.StringFlag{Name: "format", Usage: "csv or json (default: from the file name, else csv)"},
			&cli.BoolFlag{Name: "replace", Usage: "overwrite existing leases"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check everything, change nothing"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("usage: tandem lease import FILE", exitUsage)
			}
			file := c.Args().First()
			format, err := formatFor(c, file)
			if err != nil {
				return err
			}
			in, err := os.Open(file)
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			defer in.Close()
			fi, err := in.Stat()
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			readBar := progress.New(e.stderr, "sending", fi.Size())
			var storeBar *progress.Bar
			readDone := false
			ctx, cancel := context.WithCancel(c.Context)
			defer cancel()
			cl, cerr := newClient(c)
			if cerr != nil {
				return cerr
			}
			rep, err := cl.Import(ctx, &countingReader{r: in, bar: readBar},
				control.ImportRequest{Format: format, Replace: c.Bool("replace"), DryRun: c.Bool("dry-run"), Name: filepath.Base(file), Size: fi.Size()},
				func(ev control.ImportEvent) {
					if ev.Phase == "check" {
						readBar.Done()
						readDone = true
						storeBar = progress.New(e.stderr, "storing", int64(ev.Total))
					}
					if ev.Phase == "store" && storeBar != nil {
						storeBar.Set(int64(ev.Done))
					}
				})
			if !readDone {
				readBar.Done()
			}
			if storeBar != nil {
				storeBar.Done()
			}
			if err != nil {
				return cli.Exit(err.Error(), exitFailure)
			}
			if c.Bool("json") {
				if err := writeJSON(e.stdout, rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintf(e.stderr, "%s: line %d: %s\n", file, p.Line, p.Error)
				}
				if rep.Refused > len(rep.Problems) {
					fmt.Fprintf(e.stderr, "%s: ... and %d more problems\n", file, rep.Refused-len(rep.Problems))
				}
				switch {
				case rep.Error != "":
				case rep.DryRun:
					fmt.Fprintf(e.stdout, "%s: %d leases checked, %d would replace existing ones; nothing changed (dry run)\n", file, rep.Records, rep.Replaced)
				default:
					fmt.Fprintf(e.stdout, "%s: %d leases imported (%d replaced) in %d log entries, %.1fs\n", file, rep.Applied, rep.Replaced, rep.Batches, rep.Seconds)
				}
			}
			if rep.Error != "" {
				return cli.Exit(rep.Error, exitFailure)
			}
			return nil
		},
	}
}

// The daemon lets the control API change leases through the DHCP server
// (control.LeaseAdmin), so they go through the log like client traffic.

// AdminPut implements control.LeaseAdmin.
func (d *daemon) AdminPut(ctx context.Context, c server.AdminChange) (server.AdminResult, error) {
	return d.srv.AdminPut(ctx, c)
}

// AdminDelete implements control.LeaseAdmin.
func (d *daemon) AdminDelete(ctx context.Context, r fsm.Resource, force bool, note string) (server.AdminResult, error) {
	return d.srv.AdminDelete(ctx, r, force, note)
}

// AdminImport implements control.LeaseAdmin.
func (d *daemon) AdminImport(ctx context.Context, bs []fsm.Binding, opt server.ImportOptions) (server.ImportResult, error) {
	return d.srv.AdminImport(ctx, bs, opt)
}
