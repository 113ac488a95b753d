package main

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

type jsonVersion struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

func versionCommand(e *env) *cli.Command {
	var asJSON bool
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of tandem and of the Go toolchain that built it",
		Flags: []cli.Flag{jsonFlag(&asJSON)},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			v := jsonVersion{Version: version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
			if asJSON {
				return writeJSON(e.stdout, v)
			}
			_, err := fmt.Fprintf(e.stdout, "tandem %s\n%s %s/%s\n", v.Version, v.GoVersion, v.OS, v.Arch)
			return err
		},
	}
}

// jsonFlag is the --json flag every command has.
func jsonFlag(dst *bool) cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON instead of text", Destination: dst}
}

// noArgs fails when a command that takes no arguments got some.
func noArgs(c *cli.Context) error {
	if c.Args().Present() {
		return cli.Exit(fmt.Sprintf("%s takes no arguments (got %q): run '%s --help'",
			c.Command.HelpName, c.Args().Slice(), c.Command.HelpName), exitUsage)
	}
	return nil
}
