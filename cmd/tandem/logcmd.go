package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/progress"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// logOpts are the flags every `tandem log` subcommand has.
type logOpts struct {
	dataDir string
	timeout time.Duration
}

func (o *logOpts) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{
			Name:        "data-dir",
			Usage:       "the data dir of the (stopped) server: the directory holding raft.db and snapshots/",
			EnvVars:     []string{"TANDEM_DATA_DIR"},
			Destination: &o.dataDir,
		},
		&cli.DurationFlag{
			Name:        "timeout",
			Value:       time.Second,
			Usage:       "how long to wait for raft.db's lock before giving up (a running server holds it)",
			Destination: &o.timeout,
		},
	}
}

const logOfflineNote = "The data dir is read offline and never changed: stop the server first (while it runs\n" +
	"it holds raft.db's lock and the command fails after --timeout, saying so)."

func logCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "log",
		Usage: "read a stopped server's raft log and snapshots (info, dump, replay)",
		Subcommands: []*cli.Command{
			logInfoCommand(e),
			logDumpCommand(e),
			logReplayCommand(e),
			logHistoryCommand(e),
			logStatesCommand(e),
		},
	}
}

// open checks the flags and opens the data dir's log read-only.
func (o *logOpts) open(e *env, c *cli.Context) (*raftstore.LogReader, error) {
	if err := noArgs(c); err != nil {
		return nil, err
	}
	if o.dataDir == "" {
		return nil, cli.Exit(fmt.Sprintf("%s: --data-dir is required: the directory holding raft.db and snapshots/ (or set TANDEM_DATA_DIR)",
			c.Command.HelpName), exitUsage)
	}
	if o.timeout <= 0 {
		return nil, cli.Exit(fmt.Sprintf("--timeout %v: must be positive (e.g. 1s)", o.timeout), exitUsage)
	}
	fi, err := os.Stat(o.dataDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, cli.Exit(fmt.Sprintf("data dir %s does not exist: check --data-dir (the directory holding raft.db and snapshots/)", o.dataDir), exitFailure)
	case err != nil:
		return nil, cli.Exit(fmt.Sprintf("data dir: %v", err), exitFailure)
	case !fi.IsDir():
		return nil, cli.Exit(fmt.Sprintf("%s is not a directory: --data-dir is the directory holding raft.db and snapshots/", o.dataDir), exitFailure)
	}
	start := time.Now()
	r, err := raftstore.OpenLog(o.dataDir, o.timeout)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("cannot open the log in %s: %v", o.dataDir, err), exitFailure)
	}
	e.log.Debug("opened log read-only", zap.String("data-dir", o.dataDir), zap.Duration("took", time.Since(start)))
	return r, nil
}

// --- log info ---

func logInfoCommand(e *env) *cli.Command {
	var (
		o      logOpts
		asJSON bool
	)
	return &cli.Command{
		Name:  "info",
		Usage: "show the log's size, index range and times, and the kept snapshots",
		Description: "Prints the data dir, raft.db's size, the first and last log index, the number of\n" +
			"entries, when the first and last were appended, and each kept snapshot (newest first:\n" +
			"id, index, term, size, created, bindings, or why its header cannot be read).\n\n" +
			logOfflineNote,
		Flags: append(o.flags(), jsonFlag(&asJSON)),
		Action: func(c *cli.Context) error {
			r, err := o.open(e, c)
			if err != nil {
				return err
			}
			defer r.Close()
			in, err := r.Info()
			if err != nil {
				return cli.Exit(fmt.Sprintf("cannot read the log in %s: %v", o.dataDir, err), exitFailure)
			}
			j := logInfoJSON(in)
			if asJSON {
				return writeJSON(e.stdout, j)
			}
			return writeLogInfoText(e.stdout, j)
		},
	}
}

func logInfoJSON(in *raftstore.LogInfo) jsonLogInfo {
	j := jsonLogInfo{
		DataDir:         in.DataDir,
		DBBytes:         in.DBBytes,
		FirstIndex:      in.FirstIndex,
		LastIndex:       in.LastIndex,
		FirstAppendedAt: strOrNil(fmtTime(in.FirstTime)),
		LastAppendedAt:  strOrNil(fmtTime(in.LastTime)),
		Snapshots:       make([]jsonSnapshotInfo, 0, len(in.Snapshots)),
	}
	if in.FirstIndex != 0 && in.LastIndex >= in.FirstIndex {
		j.Entries = in.LastIndex - in.FirstIndex + 1
	}
	for _, s := range in.Snapshots {
		js := jsonSnapshotInfo{ID: s.ID, Index: s.Index, Term: s.Term, SizeBytes: s.Size, Path: s.Path}
		if s.HeaderErr != nil {
			js.Error = strOrNil(s.HeaderErr.Error())
		} else if h := s.Header; h != nil {
			js.Created = strOrNil(fmtUnixNano(h.Created))
			js.LastCommandTime = strOrNil(fmtUnixNano(h.LastTime))
			count := h.Count
			js.Bindings = &count
		}
		j.Snapshots = append(j.Snapshots, js)
	}
	return j
}

func deref[T any](p *T, none string) string {
	if p == nil {
		return none
	}
	return fmt.Sprint(*p)
}

func writeLogInfoText(w io.Writer, j jsonLogInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Data dir:\t%s\n", j.DataDir)
	fmt.Fprintf(tw, "raft.db:\t%d bytes\n", j.DBBytes)
	if j.Entries == 0 {
		fmt.Fprintf(tw, "Log entries:\tnone\n")
	} else {
		fmt.Fprintf(tw, "Log entries:\t%d (index %d to %d)\n", j.Entries, j.FirstIndex, j.LastIndex)
		fmt.Fprintf(tw, "First appended:\t%s\n", deref(j.FirstAppendedAt, "unknown"))
		fmt.Fprintf(tw, "Last appended:\t%s\n", deref(j.LastAppendedAt, "unknown"))
	}
	fmt.Fprintf(tw, "Snapshots:\t%d\n", len(j.Snapshots))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(j.Snapshots) == 0 {
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tINDEX\tTERM\tSIZE\tCREATED\tLAST COMMAND\tBINDINGS")
	for _, s := range j.Snapshots {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t%s\t%s\n", s.ID, s.Index, s.Term, s.SizeBytes,
			deref(s.Created, "-"), deref(s.LastCommandTime, "-"), deref(s.Bindings, "-"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range j.Snapshots {
		if s.Error != nil {
			if _, err := fmt.Fprintf(w, "  snapshot %s: header unreadable: %s\n", s.ID, *s.Error); err != nil {
				return err
			}
		}
	}
	return nil
}

// --- log dump ---

func logDumpCommand(e *env) *cli.Command {
	var (
		o        logOpts
		ff       filterFlags
		from, to uint64
	)
	return &cli.Command{
		Name:  "dump",
		Usage: "print every log entry, decoded, as one JSON object per line (NDJSON)",
		Description: "Each line is one entry: index, term, type (command, noop, barrier, configuration),\n" +
			"appended_at; for commands also time, origin, note, command (txn, set-server-duid,\n" +
			"set-endpoint, noop) and its body: ops (op put/delete, resource, if_rev, binding),\n" +
			"server_duid or endpoint. Binding times that are not set are left out.\n\n" +
			"A damaged entry is printed as {\"index\":N,\"error\":\"...\"} with a\n" +
			"\"warning: entry N is damaged: ...\" line on stderr, and the dump goes on. The exit\n" +
			"status is 0 even then (check stderr or the error lines); it is 1 only when the log\n" +
			"cannot be opened or read at all.\n\n" +
			"The output is always NDJSON, so --json is accepted and changes nothing.\n\n" +
			"Filters: --since/--until keep the commands made in that time range; --resource and\n" +
			"--duid keep only the txns that touch that lease or client, each narrowed to the ops\n" +
			"that match (a delete matches --duid when the lease was that client's). For a readable\n" +
			"timeline of one lease or client use `tandem log history`.\n\n" +
			logOfflineNote,
		Flags: append(append(o.flags(),
			&cli.Uint64Flag{Name: "from", Usage: "first index to print", DefaultText: "the first in the log", Destination: &from},
			&cli.Uint64Flag{Name: "to", Usage: "last index to print", DefaultText: "the last in the log", Destination: &to},
			&cli.BoolFlag{Name: "json", Usage: "accepted for uniformity: the output is always NDJSON"},
		), ff.flags()...),
		Action: func(c *cli.Context) error {
			if to != 0 && from > to {
				return cli.Exit(fmt.Sprintf("--from %d is after --to %d", from, to), exitUsage)
			}
			f, err := ff.parse()
			if err != nil {
				return err
			}
			r, err := o.open(e, c)
			if err != nil {
				return err
			}
			defer r.Close()
			return logDump(e, r, from, to, f)
		},
	}
}

func logDump(e *env, r *raftstore.LogReader, from, to uint64, f *entryFilter) error {
	in, err := r.Info()
	if err != nil {
		return cli.Exit(fmt.Sprintf("cannot read the log: %v", err), exitFailure)
	}
	switch {
	case in.FirstIndex == 0:
		e.warnf("the log in %s is empty", in.DataDir)
		return nil
	case from != 0 && from < in.FirstIndex:
		e.warnf("the log starts at entry %d (older entries were compacted into a snapshot): dumping from %d", in.FirstIndex, in.FirstIndex)
	case from > in.LastIndex:
		e.warnf("the log ends at entry %d: nothing to dump from %d", in.LastIndex, from)
		return nil
	}
	bw := bufio.NewWriterSize(e.stdout, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	damaged, n := 0, 0
	err = r.Entries(from, to, func(le *raftstore.LogEntry) error {
		if le.Err != nil {
			damaged++
			e.warnf("entry %d is damaged: %v", le.Index, le.Err)
		}
		ok, err := encodeFiltered(enc, f, le)
		if ok {
			n++
		}
		return err
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("log dump stopped: %v", err), exitFailure)
	}
	e.log.Debug("log dumped", zap.Int("entries", n), zap.Int("damaged", damaged))
	if damaged > 0 {
		e.warnf("%d of %d entries are damaged (the lines with \"error\")", damaged, n)
	}
	return nil
}

func logEntryJSON(le *raftstore.LogEntry) jsonLogEntry {
	j := jsonLogEntry{Index: le.Index, Term: le.Term, AppendedAt: fmtTime(le.AppendedAt)}
	if le.Term != 0 {
		j.Type = logTypeName(le.Type)
	}
	if le.Err != nil {
		j.Error = le.Err.Error()
		return j
	}
	if le.Cmd != nil {
		commandJSON(&j, le.Cmd)
	}
	return j
}

// --- log replay ---

func logReplayCommand(e *env) *cli.Command {
	var (
		o         logOpts
		lastIndex uint64
		until     string
		asJSON    bool
	)
	return &cli.Command{
		Name:  "replay",
		Usage: "rebuild the binding table as it was at a log index or a time, and print it",
		Description: "Starts from the newest kept snapshot at or before the point and applies the log\n" +
			"entries after it. With neither --last-index nor --until: the whole log (the state the\n" +
			"server would start with). The two are mutually exclusive.\n\n" +
			"Prints one line per binding in resource order (type, address or prefix, state,\n" +
			"client DUID, IAID, valid until (ACTIVE only), CLTT), then a summary: where the\n" +
			"replay started, how many entries were applied, damaged entries, counts.\n" +
			"Damaged entries are skipped and reported on stderr with their index.\n" +
			"Fails (status 1) when the log was compacted past the point and no kept snapshot is\n" +
			"old enough.\n\n" +
			logOfflineNote,
		Flags: append(o.flags(),
			&cli.Uint64Flag{Name: "last-index", Usage: "replay up to and including this log index", Destination: &lastIndex},
			&cli.StringFlag{Name: "until", Usage: "replay the commands made at or before this RFC 3339 time (e.g. 2026-11-27T10:00:00Z)", Destination: &until},
			jsonFlag(&asJSON),
		),
		Action: func(c *cli.Context) error {
			var target raftstore.ReplayTarget
			if c.IsSet("last-index") && c.IsSet("until") {
				return cli.Exit("--last-index and --until are mutually exclusive: give one of them (or neither, for the whole log)", exitUsage)
			}
			if c.IsSet("last-index") {
				if lastIndex == 0 {
					return cli.Exit("--last-index must be at least 1", exitUsage)
				}
				target.LastIndex = lastIndex
			}
			if c.IsSet("until") {
				t, err := time.Parse(time.RFC3339Nano, until)
				if err != nil {
					return cli.Exit(fmt.Sprintf("--until %q is not an RFC 3339 time: write it like 2026-11-27T10:00:00Z or 2026-11-27T11:00:00+01:00", until), exitUsage)
				}
				target.Until = t
			}
			r, err := o.open(e, c)
			if err != nil {
				return err
			}
			defer r.Close()
			start := time.Now()
			bar := progress.New(e.stderr, "replaying", 0)
			target.Progress = func(index, last uint64) {
				bar.SetTotal(int64(last))
				bar.Set(int64(index))
			}
			res, err := r.Replay(target)
			bar.Done()
			if err != nil {
				return cli.Exit(fmt.Sprintf("cannot replay the log in %s: %v", o.dataDir, err), exitFailure)
			}
			e.log.Debug("replayed", zap.Int("applied", res.Applied), zap.Duration("took", time.Since(start)))
			for _, d := range res.Damaged {
				e.warnf("entry %d is damaged and was skipped: %v", d.Index, d.Err)
			}
			j := replayJSON(o.dataDir, target, res)
			if asJSON {
				return writeJSON(e.stdout, j)
			}
			return writeReplayText(e.stdout, j, res)
		},
	}
}

func replayJSON(dataDir string, target raftstore.ReplayTarget, res *raftstore.ReplayResult) jsonReplay {
	v := res.State.View()
	st := v.Stats()
	j := jsonReplay{
		DataDir:    dataDir,
		AsOfIndex:  st.LastIndex,
		AsOfTerm:   st.LastTerm,
		AsOfTime:   strOrNil(fmtUnixNano(st.LastTime)),
		Applied:    res.Applied,
		Damaged:    make([]jsonDamaged, 0, len(res.Damaged)),
		Total:      st.Bindings,
		Counts:     countsJSON(st.Counts),
		Bindings:   make([]jsonBinding, 0, st.Bindings),
		ServerDUID: strOrNil(duidHex(v.ServerDUID())),
		Endpoint:   endpointJSON(v.Endpoint()),
	}
	if target.LastIndex != 0 {
		li := target.LastIndex
		j.TargetLastIndex = &li
	}
	if !target.Until.IsZero() {
		j.TargetUntil = strOrNil(fmtTime(target.Until))
	}
	if s := res.FromSnapshot; s != nil {
		j.FromSnapshot = &jsonSnapshotRef{ID: s.ID, Index: s.Index, Term: s.Term}
	}
	for _, d := range res.Damaged {
		j.Damaged = append(j.Damaged, jsonDamaged{Index: d.Index, Error: d.Err.Error()})
	}
	v.Ascend(fsm.Resource{}, func(b *fsm.Binding) bool {
		j.Bindings = append(j.Bindings, bindingJSON(*b))
		return true
	})
	return j
}

func writeReplayText(w io.Writer, j jsonReplay, res *raftstore.ReplayResult) error {
	if len(j.Bindings) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TYPE\tADDRESS/PREFIX\tSTATE\tDUID\tIAID\tVALID UNTIL\tCLTT")
		for _, b := range j.Bindings {
			res := b.Address
			if res == "" {
				res = b.Prefix
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", b.Type, res, b.State, orDash(b.DUID), b.IAID,
				orDash(b.ValidUntil), orDash(b.CLTT))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	from := "the start of the log (no snapshot)"
	if s := res.FromSnapshot; s != nil {
		from = fmt.Sprintf("snapshot %s at index %d", s.ID, s.Index)
	}
	fmt.Fprintf(w, "As of index %d (term %d), last command at %s.\n", j.AsOfIndex, j.AsOfTerm, deref(j.AsOfTime, "-"))
	fmt.Fprintf(w, "Started from %s, applied %d log commands; damaged entries skipped: %d.\n", from, j.Applied, len(j.Damaged))
	_, err := fmt.Fprintf(w, "Bindings: %d (%s).\n", j.Total, countsText(res.State.Stats().Counts))
	return err
}
