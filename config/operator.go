package config

import (
	"fmt"
	"net/netip"
	"os"
)

// Metrics is the [metrics] table: the Prometheus endpoint.
//
//	[metrics]
//	listen = "[::1]:9547"     # serves GET /metrics; absent: no listener
type Metrics struct {
	// Listen is the TCP address (IP literal and port) of the plain-HTTP
	// /metrics listener. Empty (the default) turns it off.
	Listen string `toml:"listen"`

	// ParsedListen is Listen parsed (set by Validate).
	ParsedListen netip.AddrPort `toml:"-"`
}

// Control is the [control] table: the control API over TCP for remote
// administration (the unix control-socket is always there).
//
//	[control]
//	listen = "[2001:db8:1::1]:9548"
//	tls-cert = "/etc/tandem/control.crt"   # this server's certificate and key (required)
//	tls-key = "/etc/tandem/control.key"
//	tls-client-ca = "/etc/tandem/admin-ca.crt"   # clients with a certificate from this CA are admitted
//	token-file = "/etc/tandem/control.token"     # and/or clients sending this bearer token (file mode 0600)
//
// At least one of tls-client-ca and token-file is required: the listener
// never serves unauthenticated clients.
type Control struct {
	Listen      string `toml:"listen"`
	TLSCert     string `toml:"tls-cert"`
	TLSKey      string `toml:"tls-key"`
	TLSClientCA string `toml:"tls-client-ca"`
	TokenFile   string `toml:"token-file"`

	// ParsedListen is Listen parsed (set by Validate).
	ParsedListen netip.AddrPort `toml:"-"`
}

// parseListen accepts an IP literal with a port: "[::1]:9547", "127.0.0.1:9547".
func parseListen(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address and port (write e.g. \"[::1]:9547\")", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q has port 0", s)
	}
	return ap, nil
}

// validateOperator checks [metrics] and [control].
func (c *Config) validateOperator() []error {
	var errs []error
	add := func(k, format string, args ...any) { errs = append(errs, c.errAt(k, format, args...)) }
	if c.Metrics.Listen != "" {
		ap, err := parseListen(c.Metrics.Listen)
		if err != nil {
			add("metrics.listen", "%v", err)
		}
		c.Metrics.ParsedListen = ap
	}
	r := &c.Control
	if r.Listen == "" {
		for _, k := range []struct{ key, v string }{{"tls-cert", r.TLSCert}, {"tls-key", r.TLSKey}, {"tls-client-ca", r.TLSClientCA}, {"token-file", r.TokenFile}} {
			if k.v != "" {
				add("control."+k.key, "set, but control.listen is not: the remote control listener is off")
			}
		}
		return errs
	}
	ap, err := parseListen(r.Listen)
	if err != nil {
		add("control.listen", "%v", err)
	}
	r.ParsedListen = ap
	if ap.IsValid() && c.Metrics.ParsedListen == ap {
		add("control.listen", "%v is also metrics.listen", ap)
	}
	file := func(key, path string) {
		if path == "" {
			return
		}
		if st, err := os.Stat(path); err != nil {
			add("control."+key, "%v", err)
		} else if st.IsDir() {
			add("control."+key, "%s is a directory", path)
		} else if key == "token-file" && st.Mode().Perm()&0o077 != 0 {
			add("control."+key, "%s has mode %04o: a token file must be readable by its owner only (chmod 600)", path, st.Mode().Perm())
		}
	}
	for _, k := range []struct{ key, v string }{{"tls-cert", r.TLSCert}, {"tls-key", r.TLSKey}} {
		if k.v == "" {
			add("control."+k.key, "required with control.listen: the remote control API is served over TLS only")
		}
		file(k.key, k.v)
	}
	if r.TLSClientCA == "" && r.TokenFile == "" {
		add("control.listen", "needs tls-client-ca (client certificates) or token-file (a bearer token), or both: the remote control API never serves unauthenticated clients")
	}
	file("tls-client-ca", r.TLSClientCA)
	file("token-file", r.TokenFile)
	return errs
}
