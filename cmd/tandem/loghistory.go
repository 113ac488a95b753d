package main

// Log forensics: the filters of `log dump` (--resource, --duid, --since,
// --until), `log history` (what happened to one lease or one client, as a
// timeline) and `log states` (the failover endpoint's state transitions).
// All of them read a stopped server's data dir offline, like every `tandem
// log` command.

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// entryFilter selects log entries and narrows a txn to the ops of interest.
// The zero value selects everything.
type entryFilter struct {
	resource *fsm.Resource
	duid     string // raw bytes; "" = any
	since    time.Time
	until    time.Time
	// seen are the resources a --duid filter matched so far: a later delete
	// of one of them (which carries no DUID) belongs to the client too.
	seen map[fsm.Resource]struct{}
}

func (f *entryFilter) narrows() bool { return f.resource != nil || f.duid != "" }

// inTime reports whether a command made at ns (Unix nanoseconds) is inside
// [since, until].
func (f *entryFilter) inTime(ns int64) bool {
	t := time.Unix(0, ns)
	return (f.since.IsZero() || !t.Before(f.since)) && (f.until.IsZero() || !t.After(f.until))
}

// matchOp reports whether op concerns the filter's resource or client.
// It records what --duid matched (call it on every op in log order).
func (f *entryFilter) matchOp(op *fsm.Op) bool {
	if f.resource != nil && op.Resource != *f.resource {
		return false
	}
	if f.duid == "" {
		return true
	}
	if op.Delete || op.Binding.DUID != f.duid {
		_, ok := f.seen[op.Resource]
		if ok && (op.Delete || op.Binding.DUID != "") {
			delete(f.seen, op.Resource) // deleted, or now another client's
			return true
		}
		return false
	}
	if f.seen == nil {
		f.seen = map[fsm.Resource]struct{}{}
	}
	f.seen[op.Resource] = struct{}{}
	return true
}

// apply returns the entry as the filter shows it (nil: leave it out). For
// a narrowing filter only txns are kept, with only their matching ops.
func (f *entryFilter) apply(le *raftstore.LogEntry) *raftstore.LogEntry {
	if le.Err != nil {
		return le // damaged entries are always shown: they may be the answer
	}
	if le.Cmd == nil {
		if f.narrows() || !f.since.IsZero() || !f.until.IsZero() {
			return nil
		}
		return le
	}
	in := f.inTime(le.Cmd.Time)
	if !f.narrows() {
		if !in {
			return nil
		}
		return le
	}
	if le.Cmd.Type != fsm.CmdTxn {
		return nil
	}
	var ops []fsm.Op
	for i := range le.Cmd.Ops {
		if f.matchOp(&le.Cmd.Ops[i]) { // every op, in order, so seen stays right
			ops = append(ops, le.Cmd.Ops[i])
		}
	}
	if !in || len(ops) == 0 {
		return nil
	}
	cmd := *le.Cmd
	cmd.Ops = ops
	out := *le
	out.Cmd = &cmd
	return &out
}

// filterFlags are the flags shared by dump and history.
type filterFlags struct {
	resource, duid, since, until string
}

func (ff *filterFlags) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "resource", Aliases: []string{"r"}, Destination: &ff.resource,
			Usage: `only this address or prefix ("2001:db8::5", "2001:db8:8000::/56", or "na ADDRESS" / "pd PREFIX")`},
		&cli.StringFlag{Name: "duid", Destination: &ff.duid, Usage: "only this client (DUID in hex, colons allowed)"},
		&cli.StringFlag{Name: "since", Destination: &ff.since, Usage: "only commands made at or after this RFC 3339 time"},
		&cli.StringFlag{Name: "until", Destination: &ff.until, Usage: "only commands made at or before this RFC 3339 time"},
	}
}

// parse turns the flags into a filter; errors are usage errors.
func (ff *filterFlags) parse() (*entryFilter, error) {
	f := &entryFilter{}
	if ff.resource != "" {
		r, err := parseResourceArg(ff.resource)
		if err != nil {
			return nil, cli.Exit("--resource: "+err.Error(), exitUsage)
		}
		f.resource = &r
	}
	if ff.duid != "" {
		b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(ff.duid), ":", ""))
		if err != nil || len(b) == 0 {
			return nil, cli.Exit(fmt.Sprintf("--duid %q: want the client DUID in hex, e.g. 000100012f3a4b5c0242ac110002", ff.duid), exitUsage)
		}
		f.duid = string(b)
	}
	for _, p := range []struct {
		name, v string
		dst     *time.Time
	}{{"since", ff.since, &f.since}, {"until", ff.until, &f.until}} {
		if p.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, p.v)
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("--%s %q is not an RFC 3339 time: write it like 2026-11-27T10:00:00Z", p.name, p.v), exitUsage)
		}
		*p.dst = t
	}
	if !f.since.IsZero() && !f.until.IsZero() && f.until.Before(f.since) {
		return nil, cli.Exit(fmt.Sprintf("--until %s is before --since %s", ff.until, ff.since), exitUsage)
	}
	return f, nil
}

// parseResourceArg accepts "na ADDR", "pd PREFIX", a bare address (na) or a
// bare prefix (pd).
func parseResourceArg(s string) (fsm.Resource, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, " ") {
		return fsm.ParseResource(s)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is6() || p.Masked() != p {
			return fsm.Resource{}, fmt.Errorf("%q is not an IPv6 prefix (e.g. 2001:db8:8000::/56)", s)
		}
		return fsm.PrefixResource(p), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return fsm.Resource{}, fmt.Errorf("%q is not an IPv6 address or prefix", s)
	}
	return fsm.AddrResource(fsm.IANA, a), nil
}

// --- log history ---

// jsonHistoryEvent is one line of `tandem log history`: one op on one
// resource. Before is the status the resource had just before (from the
// replayed state at --since and the ops seen since; "" when unknown or
// absent).
type jsonHistoryEvent struct {
	Index    uint64       `json:"index"`
	Time     string       `json:"time"`
	Origin   string       `json:"origin"`
	Note     string       `json:"note,omitempty"`
	Op       string       `json:"op"`
	Resource jsonResource `json:"resource"`
	Before   string       `json:"before,omitempty"`
	After    string       `json:"after,omitempty"` // "" for a delete
	Binding  *jsonBinding `json:"binding,omitempty"`
}

// jsonHistory is `tandem log history --json`.
type jsonHistory struct {
	DataDir string `json:"data_dir"`
	// Initial are the matching bindings as they were at --since (from a
	// replay), when --since is given and the log reaches back that far.
	Initial []jsonBinding      `json:"initial"`
	Events  []jsonHistoryEvent `json:"events"`
	Damaged []jsonDamaged      `json:"damaged"`
}

func logHistoryCommand(e *env) *cli.Command {
	var (
		o      logOpts
		ff     filterFlags
		asJSON bool
	)
	return &cli.Command{
		Name:  "history",
		Usage: "what happened to one lease or one client: a timeline of every change",
		Description: "Answers \"what happened to lease X between 10:00 and 10:05\": give --resource (an\n" +
			"address or prefix) or --duid (a client), or both, and optionally --since/--until.\n" +
			"Prints the matching bindings as they were at --since (replayed from the newest\n" +
			"snapshot before it), then one line per change: time, log index, who made it\n" +
			"(client, reclaim, partner, failover, admin), the note (DHCP message and xid, BNDUPD\n" +
			"xid...), the status before -> after, and the client and lifetime after.\n\n" +
			"Example: tandem log history --data-dir /var/lib/tandem --resource 2001:db8:1::1005 \\\n" +
			"           --since 2026-11-27T10:00:00Z --until 2026-11-27T10:05:00Z\n\n" +
			logOfflineNote,
		Flags: append(append(o.flags(), ff.flags()...), jsonFlag(&asJSON)),
		Action: func(c *cli.Context) error {
			f, err := ff.parse()
			if err != nil {
				return err
			}
			if !f.narrows() {
				return cli.Exit("log history needs --resource or --duid (or both); for everything use `tandem log dump`", exitUsage)
			}
			r, err := o.open(e, c)
			if err != nil {
				return err
			}
			defer r.Close()
			h, err := logHistory(e, r, f)
			if err != nil {
				return err
			}
			h.DataDir = o.dataDir
			if asJSON {
				return writeJSON(e.stdout, h)
			}
			return writeHistoryText(e.stdout, h)
		},
	}
}

func logHistory(e *env, r *raftstore.LogReader, f *entryFilter) (*jsonHistory, error) {
	h := &jsonHistory{Initial: []jsonBinding{}, Events: []jsonHistoryEvent{}, Damaged: []jsonDamaged{}}
	cur := map[fsm.Resource]fsm.Status{}
	var from uint64
	if !f.since.IsZero() {
		// The state just before --since, so the first change has a "before".
		res, err := r.Replay(raftstore.ReplayTarget{Until: f.since.Add(-time.Nanosecond)})
		if err != nil {
			e.warnf("cannot rebuild the state at --since (%v): the first change of each lease shows no \"before\"", err)
		} else {
			v := res.State.View()
			from = v.Stats().LastIndex + 1
			keep := func(b *fsm.Binding) {
				if (f.resource == nil || b.Resource == *f.resource) && (f.duid == "" || b.DUID == f.duid) {
					h.Initial = append(h.Initial, bindingJSON(*b))
					cur[b.Resource] = b.Status
					if f.duid != "" {
						if f.seen == nil {
							f.seen = map[fsm.Resource]struct{}{}
						}
						f.seen[b.Resource] = struct{}{}
					}
				}
			}
			if f.resource != nil {
				if b, ok := v.Get(*f.resource); ok {
					keep(&b)
				}
			} else {
				v.Ascend(fsm.Resource{}, func(b *fsm.Binding) bool { keep(b); return true })
			}
		}
	}
	err := r.Entries(from, 0, func(le *raftstore.LogEntry) error {
		if le.Err != nil {
			h.Damaged = append(h.Damaged, jsonDamaged{Index: le.Index, Error: le.Err.Error()})
			e.warnf("entry %d is damaged and was skipped: %v", le.Index, le.Err)
			return nil
		}
		m := f.apply(le)
		if m == nil {
			// Track statuses before --since too (when no replay was possible).
			if le.Cmd != nil && le.Cmd.Type == fsm.CmdTxn && !f.since.IsZero() && time.Unix(0, le.Cmd.Time).Before(f.since) {
				for _, op := range le.Cmd.Ops {
					if op.Delete {
						delete(cur, op.Resource)
					} else {
						cur[op.Resource] = op.Binding.Status
					}
				}
			}
			return nil
		}
		for _, op := range m.Cmd.Ops {
			ev := jsonHistoryEvent{Index: m.Index, Time: fmtUnixNano(m.Cmd.Time), Origin: m.Cmd.Origin.String(),
				Note: m.Cmd.Note, Op: "put", Resource: resourceJSON(op.Resource)}
			if s, ok := cur[op.Resource]; ok {
				ev.Before = s.String()
			}
			if op.Delete {
				ev.Op = "delete"
				delete(cur, op.Resource)
			} else {
				b := bindingJSON(op.Binding)
				ev.Binding, ev.After = &b, op.Binding.Status.String()
				cur[op.Resource] = op.Binding.Status
			}
			h.Events = append(h.Events, ev)
		}
		return nil
	})
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("cannot read the log: %v", err), exitFailure)
	}
	return h, nil
}

func writeHistoryText(w io.Writer, h *jsonHistory) error {
	bw := bufio.NewWriter(w)
	if len(h.Initial) > 0 {
		fmt.Fprintln(bw, "At --since:")
		tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
		for _, b := range h.Initial {
			fmt.Fprintf(tw, "  %s %s\t%s\t%s\tiaid %d\tvalid until %s\n", b.Type, leaseName(b), b.State, orDash(b.DUID), b.IAID, orDash(b.ValidUntil))
		}
		tw.Flush()
		fmt.Fprintln(bw)
	}
	if len(h.Events) == 0 {
		fmt.Fprintln(bw, "No changes match.")
		return bw.Flush()
	}
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tINDEX\tORIGIN\tRESOURCE\tCHANGE\tDUID\tVALID UNTIL\tNOTE")
	for _, ev := range h.Events {
		change := orDash(ev.Before) + " -> "
		duid, until := "-", "-"
		if ev.Op == "delete" {
			change += "(deleted)"
		} else {
			change += ev.After
			duid, until = orDash(ev.Binding.DUID), orDash(ev.Binding.ValidUntil)
		}
		res := ev.Resource.Type + " " + ev.Resource.Address + ev.Resource.Prefix
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time, ev.Index, ev.Origin, res, change, duid, until, orDash(ev.Note))
	}
	tw.Flush()
	fmt.Fprintf(bw, "%d changes.\n", len(h.Events))
	return bw.Flush()
}

func leaseName(b jsonBinding) string {
	if b.Address != "" {
		return b.Address
	}
	return b.Prefix
}

// --- log states ---

// jsonStateChange is one failover state transition of this server or of
// its partner, as recorded in the log.
type jsonStateChange struct {
	Index        uint64 `json:"index"`
	Time         string `json:"time"`
	State        string `json:"state"`
	Previous     string `json:"previous_state,omitempty"`
	PartnerState string `json:"partner_state,omitempty"`
	PartnerDown  string `json:"partner_down_time,omitempty"`
	Held         bool   `json:"held_in_startup"`
	Note         string `json:"note,omitempty"`
}

func logStatesCommand(e *env) *cli.Command {
	var (
		o            logOpts
		since, until string
		asJSON       bool
	)
	return &cli.Command{
		Name:  "states",
		Usage: "the failover endpoint's state transitions over time (own and partner state)",
		Description: "Prints one line per recorded change of this server's failover state, of its\n" +
			"partner's state as it knew it, of the partner-down time, or of the hold after a\n" +
			"restore. The periodic \"still operating\" checkpoints are left out.\n\n" +
			logOfflineNote,
		Flags: append(o.flags(),
			&cli.StringFlag{Name: "since", Destination: &since, Usage: "only changes at or after this RFC 3339 time"},
			&cli.StringFlag{Name: "until", Destination: &until, Usage: "only changes at or before this RFC 3339 time"},
			jsonFlag(&asJSON)),
		Action: func(c *cli.Context) error {
			ff := filterFlags{since: since, until: until}
			f, err := ff.parse()
			if err != nil {
				return err
			}
			r, err := o.open(e, c)
			if err != nil {
				return err
			}
			defer r.Close()
			changes, err := logStates(e, r, f)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, changes)
			}
			return writeStatesText(e.stdout, changes)
		},
	}
}

func stateName(s uint8) string {
	if s == 0 {
		return ""
	}
	return wire.ServerState(s).String()
}

func logStates(e *env, r *raftstore.LogReader, f *entryFilter) ([]jsonStateChange, error) {
	out := []jsonStateChange{}
	var prev *fsm.EndpointState
	err := r.Entries(0, 0, func(le *raftstore.LogEntry) error {
		if le.Err != nil {
			e.warnf("entry %d is damaged and was skipped: %v", le.Index, le.Err)
			return nil
		}
		if le.Cmd == nil || le.Cmd.Type != fsm.CmdSetEndpoint || le.Cmd.Endpoint == nil {
			return nil
		}
		ep := *le.Cmd.Endpoint
		changed := prev == nil || ep.State != prev.State || ep.PartnerState != prev.PartnerState ||
			ep.PartnerDownTime != prev.PartnerDownTime || ep.HeldInStartup != prev.HeldInStartup
		prev = &ep
		if !changed || !f.inTime(le.Cmd.Time) {
			return nil
		}
		out = append(out, jsonStateChange{Index: le.Index, Time: fmtUnixNano(le.Cmd.Time), State: stateName(ep.State),
			Previous: stateName(ep.PreviousState), PartnerState: stateName(ep.PartnerState),
			PartnerDown: fmtUnix(ep.PartnerDownTime), Held: ep.HeldInStartup, Note: le.Cmd.Note})
		return nil
	})
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("cannot read the log: %v", err), exitFailure)
	}
	return out, nil
}

func writeStatesText(w io.Writer, changes []jsonStateChange) error {
	if len(changes) == 0 {
		_, err := fmt.Fprintln(w, "No failover state changes recorded (a standalone server, or the log was compacted: see `tandem log info`).")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tINDEX\tSTATE\tFROM\tPARTNER\tPARTNER-DOWN SINCE\tHELD")
	for _, c := range changes {
		held := ""
		if c.Held {
			held = "held"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", c.Time, c.Index, c.State, orDash(c.Previous), orDash(c.PartnerState), orDash(c.PartnerDown), held)
	}
	return tw.Flush()
}

// encodeFiltered writes le through f to enc (the dump's filtered path).
func encodeFiltered(enc *json.Encoder, f *entryFilter, le *raftstore.LogEntry) (bool, error) {
	m := f.apply(le)
	if m == nil {
		return false, nil
	}
	return true, enc.Encode(logEntryJSON(m))
}
