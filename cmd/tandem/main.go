// Command tandem is Tandem's one binary: the DHCPv6 failover server and its
// operator tools.
//
// This package is wiring and presentation only: every rule about leases,
// logs and snapshots lives in fsm/ and raftstore/ (and later server/ and
// failover/). Each command prints human text by default and one JSON object
// (or NDJSON for streams) with --json; errors go to stderr as one "error: ..."
// line that says what to do, never a Go stack trace.
//
// Exit status: 0 success, 1 the command failed (the message says why),
// 2 bad usage (unknown flag or command, conflicting flags), 70 internal error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitInternal = 70 // EX_SOFTWARE
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// env is what every command's action needs: where to write and how to log.
type env struct {
	stdout io.Writer
	stderr io.Writer
	log    *zap.Logger
}

// warnf writes one operator-facing "warning: ..." line to stderr. Warnings
// are part of a command's output (damaged entries, clamped ranges), not
// diagnostics, so they do not go through the logger.
func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "warning: "+format+"\n", args...)
}

// run runs the CLI with args (args[0] is the program name) and returns the
// exit status. It never lets a panic's stack trace reach the operator.
func run(args []string, stdout, stderr io.Writer) (code int) {
	e := &env{stdout: stdout, stderr: stderr, log: zap.NewNop()}
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "error: internal error: %v: this is a bug in tandem; please report it with the command line you ran\n", p)
			code = exitInternal
		}
	}()
	app := newApp(e)
	err := app.Run(reorderArgs(app, args))
	_ = e.log.Sync()
	return exitStatus(err, stderr)
}

// exitStatus prints err (if any) and returns the status to exit with.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(stderr, "error: %s\n", msg)
	}
	return code
}

func newApp(e *env) *cli.App {
	var logLevel, logFormat string
	app := &cli.App{
		Name:    "tandem",
		Usage:   "DHCPv6 failover server (RFC 8415, RFC 8156) and its operator tools",
		Version: version,
		Description: "Each command prints text for people, or with --json one JSON object (log dump: one per line)\n" +
			"for scripts. Times are RFC 3339 in UTC.\n\n" +
			"Exit status: 0 success; 1 the command failed (stderr says why and what to do);\n" +
			"2 bad usage; 70 internal error (a bug: please report it).",
		Writer:    e.stdout,
		ErrWriter: e.stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:        "log-level",
				Value:       "info",
				Usage:       "diagnostic log level: debug, info, warn or error",
				EnvVars:     []string{"TANDEM_LOG_LEVEL"},
				Destination: &logLevel,
			},
			&cli.StringFlag{
				Name:        "log-format",
				Usage:       "diagnostic log format: console or json (default: console when stderr is a terminal, else json)",
				EnvVars:     []string{"TANDEM_LOG_FORMAT"},
				Destination: &logFormat,
			},
		},
		Before: func(c *cli.Context) error {
			if logFormat == "" {
				logFormat = "json"
				if isTerminal(e.stderr) {
					logFormat = "console"
				}
			}
			l, err := newLogger(logLevel, logFormat, e.stderr)
			if err != nil {
				return cli.Exit(err.Error(), exitUsage)
			}
			e.log = l
			return nil
		},
		Action:          groupAction,
		OnUsageError:    usageError,
		ExitErrHandler:  func(*cli.Context, error) {}, // run prints errors and picks the status
		HideHelpCommand: true,                         // replaced by helpCommand, which also lists a group's subcommands
		Commands: []*cli.Command{
			helpCommand(),
			versionCommand(e),
			serveCommand(e),
			statusCommand(e),
			leaseCommand(e),
			configCommand(e),
			failoverCommand(e),
			snapshotCommand(e),
			logCommand(e),
			completionCommand(e),
		},
		EnableBashCompletion: true,
	}
	setUsageErrors(app.Commands)
	return app
}

// helpCommand is `tandem help [COMMAND...]`: the same as `tandem COMMAND... --help`.
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		Aliases:   []string{"h"},
		Usage:     "show help for tandem or for a command (tandem help log dump)",
		ArgsUsage: "[COMMAND...]",
		Action: func(c *cli.Context) error {
			if !c.Args().Present() {
				return cli.ShowAppHelp(c)
			}
			args := append([]string{c.App.Name}, c.Args().Slice()...)
			return c.App.Run(append(args, "--help"))
		},
	}
}

// setUsageErrors gives every command the same handling of bad flags.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		c.HideHelpCommand = true
		if len(c.Subcommands) > 0 && c.Action == nil {
			c.Action = groupAction
		}
		setUsageErrors(c.Subcommands)
	}
}

// groupAction runs for the app or a command group (tandem log) given no
// subcommand, or an unknown one: show help, and fail for an unknown name.
func groupAction(c *cli.Context) error {
	if c.Args().Present() {
		name := c.Args().First()
		path := "tandem"
		if c.Command != nil && c.Command.Name != "" {
			path = c.Command.HelpName
		}
		return cli.Exit(fmt.Sprintf("unknown command %q: run '%s --help' for the list of commands", name, path), exitUsage)
	}
	if c.Command == nil || c.Command.Name == "" {
		return cli.ShowAppHelp(c)
	}
	return cli.ShowSubcommandHelp(c)
}

// usageError shows the command's help on stderr, then fails with status 2.
func usageError(c *cli.Context, err error, _ bool) error {
	w := c.App.ErrWriter
	if errors.Is(err, flag.ErrHelp) {
		w, err = c.App.Writer, nil // --help asked for: help on stdout, success
	}
	switch {
	case c.Command == nil || c.Command.Name == "":
		cli.HelpPrinter(w, cli.AppHelpTemplate, c.App)
	case len(c.Command.Subcommands) > 0:
		cli.HelpPrinter(w, cli.SubcommandHelpTemplate, c.Command)
	default:
		cli.HelpPrinter(w, cli.CommandHelpTemplate, c.Command)
	}
	if err == nil {
		return nil
	}
	return cli.Exit(err.Error(), exitUsage)
}

// reorderArgs moves flags given after positional arguments (tandem snapshot
// inspect FILE --json) in front of them, because urfave/cli v2 stops parsing
// flags at the first positional argument. Everything after "--" is left as it is.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	flags := app.Flags
	cmds := app.Commands
	i := 1
	// Walk down the command path: flags of each level, then a command name.
	for i < len(args) {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if isFlagArg(a) {
			out = append(out, a)
			i++
			if takesValue(flags, a) && i < len(args) {
				out = append(out, args[i])
				i++
			}
			continue
		}
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(a) {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		out = append(out, a)
		i++
		flags, cmds = next.Flags, next.Subcommands
		if len(cmds) == 0 {
			break
		}
	}
	// The leaf command's own arguments: flags first, positionals after.
	var fl, pos []string
	for i < len(args) {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i:]...)
			break
		}
		if isFlagArg(a) {
			fl = append(fl, a)
			i++
			if takesValue(flags, a) && i < len(args) {
				fl = append(fl, args[i])
				i++
			}
			continue
		}
		pos = append(pos, a)
		i++
	}
	out = append(out, fl...)
	return append(out, pos...)
}

func isFlagArg(a string) bool { return len(a) > 1 && a[0] == '-' }

// takesValue reports whether flag argument a (e.g. "--from" or "-from")
// needs the next argument as its value.
func takesValue(flags []cli.Flag, a string) bool {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if _, ok := f.(*cli.BoolFlag); ok {
				return false
			}
			return true
		}
	}
	return false // unknown: the parser reports it
}
