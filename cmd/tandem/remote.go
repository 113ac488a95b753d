package main

import (
	"github.com/urfave/cli/v2"

	"github.com/tandem-dhcp/tandem/control"
)

// clientFlags are the flags of every command that talks to a running
// daemon: the local control socket, or with --address its remote control
// listener (TLS, authenticated by a client certificate or a bearer token).
func clientFlags() []cli.Flag {
	return []cli.Flag{socketFlag(),
		&cli.StringFlag{Name: "address", Usage: "the daemon's remote control listener, https://HOST:PORT (instead of --socket)", EnvVars: []string{"TANDEM_ADDRESS"}},
		&cli.StringFlag{Name: "tls-ca", Usage: "with --address: PEM CA that signed the daemon's certificate", EnvVars: []string{"TANDEM_TLS_CA"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "with --address: client certificate (PEM) for mutual TLS", EnvVars: []string{"TANDEM_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "with --address: the client certificate's key (PEM)", EnvVars: []string{"TANDEM_TLS_KEY"}},
		&cli.StringFlag{Name: "token-file", Usage: "with --address: file holding the bearer token (mode 0600)", EnvVars: []string{"TANDEM_TOKEN_FILE"}},
	}
}

// newClient returns the control client the flags select.
func newClient(c *cli.Context) (*control.Client, error) {
	addr := c.String("address")
	if addr == "" {
		for _, f := range []string{"tls-ca", "tls-cert", "tls-key", "token-file"} {
			if c.IsSet(f) {
				return nil, cli.Exit("--"+f+" applies only with --address https://HOST:PORT", exitUsage)
			}
		}
		return control.NewClient(c.String("socket")), nil
	}
	if c.IsSet("socket") {
		return nil, cli.Exit("give --socket or --address, not both", exitUsage)
	}
	if c.String("tls-cert") == "" && c.String("token-file") == "" {
		return nil, cli.Exit("--address needs credentials: --tls-cert and --tls-key, or --token-file", exitUsage)
	}
	cl, err := control.NewRemoteClient(control.RemoteClientConfig{Address: addr, CAFile: c.String("tls-ca"),
		CertFile: c.String("tls-cert"), KeyFile: c.String("tls-key"), TokenFile: c.String("token-file")})
	if err != nil {
		return nil, cli.Exit(err.Error(), exitFailure)
	}
	return cl, nil
}
