package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
)

func snapshotCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "save, restore and inspect snapshots of the lease database",
		Subcommands: []*cli.Command{
			snapshotSaveCommand(e),
			snapshotRestoreCommand(e),
			snapshotInspectCommand(e),
		},
	}
}

func snapshotInspectCommand(e *env) *cli.Command {
	var asJSON bool
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what a snapshot holds and verify its checksums",
		ArgsUsage: "FILE",
		Description: "FILE is a Tandem snapshot file, or a raft snapshot directory (one that holds\n" +
			"state.bin; `tandem log info` lists a data dir's kept snapshots). The whole file is read\n" +
			"and verified in constant memory; nothing is changed.\n\n" +
			"Prints the header (format version, raft index and term, time of the last command,\n" +
			"creation time, size, server DUID, failover endpoint record), binding counts by IA\n" +
			"type and RFC 8156 state, and whether the checksums verify.\n\n" +
			"Exit status 1 when the snapshot does not verify (damaged, not a Tandem snapshot, or\n" +
			"written by a newer Tandem); the summary is still printed, the reason goes to stderr.",
		Flags: []cli.Flag{jsonFlag(&asJSON)},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit(fmt.Sprintf("%s needs exactly one FILE (got %d arguments): run '%s --help'",
					c.Command.HelpName, c.NArg(), c.Command.HelpName), exitUsage)
			}
			return snapshotInspect(e, c.Args().First(), asJSON)
		},
	}
}

// openSnapshotArg opens FILE (a snapshot file or a raft snapshot dir) with
// errors that say what to do; path is the file actually read.
func openSnapshotArg(arg string) (rc io.ReadCloser, path string, err error) {
	path = arg
	if fi, err := os.Stat(arg); err == nil && fi.IsDir() {
		path = filepath.Join(arg, "state.bin")
	}
	rc, err = raftstore.OpenSnapshotFile(arg)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist) && path != arg:
			return nil, path, cli.Exit(fmt.Sprintf("%s is a directory without state.bin: give a snapshot file, or a raft snapshot directory (`tandem log info --data-dir DIR` lists the kept ones and their paths)", arg), exitFailure)
		case errors.Is(err, os.ErrNotExist):
			return nil, path, cli.Exit(fmt.Sprintf("%s does not exist: check the path", arg), exitFailure)
		}
		return nil, path, cli.Exit(fmt.Sprintf("cannot open snapshot: %v", err), exitFailure)
	}
	return rc, path, nil
}

func snapshotInspect(e *env, arg string, asJSON bool) error {
	rc, path, err := openSnapshotArg(arg)
	if err != nil {
		return err
	}
	defer rc.Close()
	e.log.Debug("inspecting snapshot", zap.String("path", path))
	info := fsm.InspectSnapshot(rc)
	size := info.Size
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}

	if asJSON {
		err = writeJSON(e.stdout, inspectJSON(path, size, info))
	} else {
		err = writeInspectText(e.stdout, path, size, info)
	}
	if err != nil {
		return err
	}
	if info.Err != nil {
		return cli.Exit(snapshotErrorMessage(path, info.Err), exitFailure)
	}
	return nil
}

// snapshotErrorMessage says what is wrong with the snapshot at path and what to do.
func snapshotErrorMessage(path string, err error) string {
	switch {
	case errors.Is(err, fsm.ErrForeignSnapshot):
		return fmt.Sprintf("%s: %v: give a snapshot file written by Tandem, or a raft snapshot directory (`tandem log info --data-dir DIR` lists the kept ones and their paths)", path, err)
	case errors.Is(err, fsm.ErrUnsupportedVersion):
		return fmt.Sprintf("%s: %v", path, err)
	case errors.Is(err, fsm.ErrCorruptSnapshot):
		return fmt.Sprintf("%s: the snapshot is damaged (%v): do not restore from it; use another kept snapshot (`tandem log info --data-dir DIR` lists them) or take a new one from the running server", path, err)
	}
	return fmt.Sprintf("%s: cannot read the snapshot: %v", path, err)
}

func inspectJSON(path string, size int64, info *fsm.SnapshotInfo) jsonSnapshotInspect {
	j := jsonSnapshotInspect{
		File:         path,
		SizeBytes:    size,
		BindingsRead: info.Read,
		Counts:       countsJSON(info.Counts),
		ChecksumOK:   info.Err == nil,
	}
	if info.Err != nil {
		j.Error = strOrNil(info.Err.Error())
	}
	if h := info.Header; h != nil {
		j.Version, j.Index, j.Term, j.Bindings = &h.Version, &h.Index, &h.Term, &h.Count
		j.LastCommandTime = strOrNil(fmtUnixNano(h.LastTime))
		j.Created = strOrNil(fmtUnixNano(h.Created))
		j.ServerDUID = strOrNil(duidHex(h.ServerDUID))
		ep := endpointJSON(h.Endpoint)
		j.Endpoint = &ep
	}
	return j
}

func writeInspectText(w io.Writer, path string, size int64, info *fsm.SnapshotInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "File:\t%s\n", path)
	if h := info.Header; h != nil {
		fmt.Fprintf(tw, "Format version:\t%d\n", h.Version)
		fmt.Fprintf(tw, "Raft index:\t%d\n", h.Index)
		fmt.Fprintf(tw, "Raft term:\t%d\n", h.Term)
		fmt.Fprintf(tw, "Last command:\t%s\n", orDash(fmtUnixNano(h.LastTime)))
		fmt.Fprintf(tw, "Created:\t%s\n", orDash(fmtUnixNano(h.Created)))
	}
	fmt.Fprintf(tw, "Size:\t%d bytes\n", size)
	if h := info.Header; h != nil {
		fmt.Fprintf(tw, "Server DUID:\t%s\n", orDash(duidHex(h.ServerDUID)))
		fmt.Fprintf(tw, "Endpoint:\t%s\n", endpointText(h.Endpoint))
		if info.Err != nil && info.Read != h.Count {
			fmt.Fprintf(tw, "Bindings:\t%d in the header, %d read before the damage\n", h.Count, info.Read)
		} else {
			fmt.Fprintf(tw, "Bindings:\t%d\n", h.Count)
		}
	}
	check := "ok"
	if info.Err != nil {
		check = "BAD: " + info.Err.Error()
	}
	fmt.Fprintf(tw, "Checksum:\t%s\n", check)
	if err := tw.Flush(); err != nil {
		return err
	}
	if info.Header == nil {
		return nil
	}
	return writeCountsTable(w, info.Counts, "  ")
}

// endpointText is the endpoint record on one line.
func endpointText(ep fsm.EndpointState) string {
	j := endpointJSON(ep)
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	return fmt.Sprintf("state %d (previous %d) since %s; partner state %d since %s; last contact %s; last operating %s; partner down %s; communicated %s; held in startup %s",
		j.State, j.PreviousState, orDash(j.StateSince), j.PartnerState, orDash(j.PartnerStateSince),
		orDash(j.LastContact), orDash(j.LastOperating), orDash(j.PartnerDownTime),
		yn(j.Communicated), yn(j.HeldInStartup))
}

// writeCountsTable prints a table of counts: one row per IA type that has
// bindings, one column per state that any type has.
func writeCountsTable(w io.Writer, c fsm.Counts, indent string) error {
	var cols []fsm.Status
	for _, s := range statuses {
		for _, t := range iaTypes {
			if c[t][s] != 0 {
				cols = append(cols, s)
				break
			}
		}
	}
	if len(cols) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	hdr := []string{indent + "TYPE"}
	for _, s := range cols {
		hdr = append(hdr, s.String())
	}
	fmt.Fprintln(tw, strings.Join(append(hdr, "TOTAL"), "\t"))
	for _, t := range iaTypes {
		row := []string{indent + t.String()}
		n := 0
		for _, s := range cols {
			row = append(row, fmt.Sprint(c[t][s]))
			n += c[t][s]
		}
		if n == 0 {
			continue
		}
		fmt.Fprintln(tw, strings.Join(append(row, fmt.Sprint(n)), "\t"))
	}
	return tw.Flush()
}

// countsText is counts on one line: "na: ACTIVE 20, RELEASED 5; pd: ACTIVE 11".
func countsText(c fsm.Counts) string {
	var parts []string
	for _, t := range iaTypes {
		var ss []string
		for _, s := range statuses {
			if c[t][s] != 0 {
				ss = append(ss, fmt.Sprintf("%v %d", s, c[t][s]))
			}
		}
		if len(ss) > 0 {
			parts = append(parts, t.String()+": "+strings.Join(ss, ", "))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}
