package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tandem-dhcp/tandem/failover/machine"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/progress"
	"github.com/tandem-dhcp/tandem/raftstore"
)

// needOneFile fails with a usage error unless exactly one FILE was given.
func needOneFile(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit(fmt.Sprintf("%s needs exactly one FILE (got %d arguments): run '%s --help'",
			c.Command.HelpName, c.NArg(), c.Command.HelpName), exitUsage)
	}
	return nil
}

func snapshotSaveCommand(e *env) *cli.Command {
	var asJSON bool
	return &cli.Command{
		Name:      "save",
		Usage:     "save a snapshot of a running daemon's lease database to a file",
		ArgsUsage: "FILE",
		Description: "Asks the daemon on the control socket for a consistent point-in-time snapshot (DHCP service\n" +
			"goes on meanwhile), writes it to FILE.tmp, fsyncs it, reads it back and verifies every\n" +
			"checksum, and only then renames it to FILE (replacing an older FILE atomically). A failed\n" +
			"save leaves FILE as it was. Prints the raft index and term, binding count, size and time.\n" +
			"Restore it with `tandem snapshot restore FILE --data-dir DIR` (daemon stopped).",
		Flags: append(clientFlags(), jsonFlag(&asJSON)),
		Action: func(c *cli.Context) error {
			if err := needOneFile(c); err != nil {
				return err
			}
			return snapshotSave(e, c, c.Args().First(), asJSON)
		},
	}
}

type jsonSnapshotSave struct {
	File       string  `json:"file"`
	Index      uint64  `json:"index"`
	Term       uint64  `json:"term"`
	Bindings   uint64  `json:"bindings"`
	Bytes      int64   `json:"bytes"`
	DurationMS float64 `json:"duration_ms"`
}

func snapshotSave(e *env, c *cli.Context, file string, asJSON bool) error {
	start := time.Now()
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	out, err := createAtomic(file)
	if err != nil {
		return cli.Exit(err.Error()+": snapshot save writes FILE.tmp and renames it to FILE; give the name of the snapshot file to write", exitFailure)
	}
	fail := func(msg string) error {
		out.abort()
		return cli.Exit(msg+": nothing was written to "+file, exitFailure)
	}
	n, err := cl.SaveSnapshot(c.Context, out)
	if err != nil {
		return fail(err.Error())
	}
	if err := out.sync(); err != nil {
		return fail(err.Error())
	}
	rf, err := os.Open(out.tmpName())
	if err != nil {
		return fail(fmt.Sprintf("read back %s: %v", out.tmpName(), err))
	}
	info := fsm.InspectSnapshot(rf)
	rf.Close()
	if info.Err != nil {
		return fail(fmt.Sprintf("the snapshot received from the daemon does not verify (%v); try again, and check the daemon's log", info.Err))
	}
	if err := out.commit(); err != nil {
		return fail(err.Error())
	}
	h, took := info.Header, time.Since(start)
	if asJSON {
		return writeJSON(e.stdout, jsonSnapshotSave{File: file, Index: h.Index, Term: h.Term, Bindings: h.Count, Bytes: n,
			DurationMS: float64(took.Microseconds()) / 1000})
	}
	fmt.Fprintf(e.stdout, "saved %s: raft index %d, term %d, %d bindings, %d bytes, verified, in %v\n",
		file, h.Index, h.Term, h.Count, n, took.Round(time.Millisecond))
	return nil
}

func snapshotRestoreCommand(e *env) *cli.Command {
	var asJSON bool
	return &cli.Command{
		Name:      "restore",
		Usage:     "replace a stopped server's data dir by the state in a snapshot",
		ArgsUsage: "FILE",
		Description: "Offline: the daemon using --data-dir must be stopped (refused while it runs). FILE is a file\n" +
			"written by `tandem snapshot save`, or a raft snapshot directory (one that holds state.bin).\n\n" +
			"FILE is read and verified completely before anything is touched. A new data dir is built\n" +
			"next to DIR (DIR.restore-<time>.tmp: a fresh raft log, the snapshot installed at its raft\n" +
			"index), fsynced, and swapped with DIR in one atomic rename. The whole old DIR is renamed to\n" +
			"DIR.before-restore-<UTC time> and never deleted: remove it yourself once the restored server\n" +
			"runs well. A crash during the restore leaves DIR either the old data or the restored data.\n\n" +
			"The restored server is HELD: it starts in failover STARTUP (standalone: the same) and answers\n" +
			"no client until `tandem failover continue`, so it never serves a stale database by surprise.\n" +
			"Its failover record is also marked as not having talked to its partner, so when released it\n" +
			"asks the partner for every binding (UPDREQALL), including those made after the snapshot.\n" +
			"--no-hold skips the hold (it still asks for every binding). See docs/operations.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "the data dir to replace (data-dir in the configuration); required"},
			&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"},
			&cli.BoolFlag{Name: "no-hold", Usage: "start serving at once instead of waiting for `tandem failover continue`"},
			jsonFlag(&asJSON),
		},
		Action: func(c *cli.Context) error {
			if err := needOneFile(c); err != nil {
				return err
			}
			return snapshotRestore(e, c, c.Args().First(), asJSON)
		},
	}
}

type jsonSnapshotRestore struct {
	File     string `json:"file"`
	DataDir  string `json:"data_dir"`
	Previous string `json:"previous,omitempty"`
	Index    uint64 `json:"index"`
	Term     uint64 `json:"term"`
	Bindings uint64 `json:"bindings"`
	Held     bool   `json:"held_in_startup"`
}

func snapshotRestore(e *env, c *cli.Context, arg string, asJSON bool) error {
	dir, hold := c.String("data-dir"), !c.Bool("no-hold")
	if dir == "" {
		return cli.Exit(fmt.Sprintf("%s needs --data-dir DIR (data-dir in the configuration): run '%s --help'", c.Command.HelpName, c.Command.HelpName), exitUsage)
	}
	// 1. The whole file verifies.
	rc, path, err := openSnapshotArg(arg)
	if err != nil {
		return err
	}
	vbar := progress.New(e.stderr, "verifying", snapshotSize(path))
	info := fsm.InspectSnapshot(&progressReader{r: rc, bar: vbar})
	vbar.Done()
	rc.Close()
	if info.Err != nil {
		return cli.Exit(snapshotErrorMessage(path, info.Err)+": nothing was changed", exitFailure)
	}
	// 2. No daemon holds the data dir.
	if err := raftstore.CheckUnlocked(dir); err != nil {
		return cli.Exit(restoreErr(err, dir), exitFailure)
	}
	h := info.Header
	if err := confirm(e, c, fmt.Sprintf("Replace the data dir %s by the snapshot %s (raft index %d, %d bindings, last command %s)?\n"+
		"The current %s is kept as %s.before-restore-<time>.",
		dir, path, h.Index, h.Count, orDash(fmtUnixNano(h.LastTime)), dir, dir)); err != nil {
		return err
	}
	// 3. Restore (verifies again while copying; locks the dir itself).
	rc, _, err = openSnapshotArg(arg)
	if err != nil {
		return err
	}
	defer rc.Close()
	rbar := progress.New(e.stderr, "restoring", snapshotSize(path))
	res, err := raftstore.Restore(raftstore.Config{DataDir: dir}, &progressReader{r: rc, bar: rbar}, func(h *fsm.SnapshotHeader) {
		h.Endpoint = machine.Restored(h.Endpoint, hold)
	})
	rbar.Done()
	if err != nil {
		return cli.Exit(restoreErr(err, dir), exitFailure)
	}
	h = res.Header
	if asJSON {
		return writeJSON(e.stdout, jsonSnapshotRestore{File: path, DataDir: dir, Previous: res.Previous, Index: h.Index, Term: h.Term,
			Bindings: h.Count, Held: h.Endpoint.HeldInStartup})
	}
	fmt.Fprintf(e.stdout, "restored %s into %s: raft index %d, term %d, %d bindings\n", path, dir, h.Index, h.Term, h.Count)
	if res.Previous != "" {
		fmt.Fprintf(e.stdout, "the previous data dir is kept in %s (delete it once the restored server runs well)\n", res.Previous)
	}
	if hold {
		fmt.Fprintln(e.stdout, "the server is HELD: start it, check `tandem status` (and the partner's), then run `tandem failover continue`")
	}
	return nil
}

// restoreErr says what to do about a failed restore.
func restoreErr(err error, dir string) string {
	switch {
	case errors.Is(err, raftstore.ErrLocked):
		return fmt.Sprintf("%v: a daemon runs on %s: stop it (e.g. systemctl stop tandem) before restoring; nothing was changed", err, dir)
	case errors.Is(err, fsm.ErrCorruptSnapshot), errors.Is(err, fsm.ErrForeignSnapshot), errors.Is(err, fsm.ErrUnsupportedVersion):
		return fmt.Sprintf("%v: nothing was changed", err)
	}
	return fmt.Sprintf("restore %s: %v", dir, err)
}

// progressReader advances a progress bar by the bytes read through it.
type progressReader struct {
	r   io.Reader
	bar *progress.Bar
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.bar.Add(int64(n))
	return n, err
}

// snapshotSize is the size of a snapshot file (or of a snapshot directory's
// state.bin), 0 when unknown (the bar then shows a count only).
func snapshotSize(path string) int64 {
	fi, err := os.Stat(path)
	if err == nil && fi.IsDir() {
		fi, err = os.Stat(filepath.Join(path, "state.bin"))
	}
	if err != nil {
		return 0
	}
	return fi.Size()
}
