package link

import (
	"crypto/tls"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Role: Primary, Relationship: "r", Local: "2001:db8::1", Peer: "[2001:db8::2]", MCLT: time.Hour}
	r, err := c.resolve(true)
	if err != nil {
		t.Fatal(err)
	}
	if r.KeepaliveTime != 60*time.Second || r.ContactPerKeepalive != 4 || r.MaxUnackedBndUpd != DefaultMaxUnackedBndUpd ||
		r.RetryMin != time.Second || r.RetryMax != 30*time.Second || r.HandshakeTimeout != 10*time.Second ||
		r.MaxPendingConns != 64 || r.MaxSkew != 5*time.Second || r.Transport == nil || r.Clock == nil || r.Logger == nil {
		t.Fatalf("defaults: %+v", r.Config)
	}
	if r.local != netip.MustParseAddrPort("[2001:db8::1]:647") || r.peer != netip.MustParseAddrPort("[2001:db8::2]:647") {
		t.Fatalf("default port: %v %v", r.local, r.peer)
	}
	ci := r.connectInfo(true)
	if ci != (wire.ConnectInfo{Version: wire.Version1, MCLT: 3600, KeepaliveTime: 60, MaxUnackedBndUpd: DefaultMaxUnackedBndUpd, RelationshipName: "r"}) {
		t.Fatalf("CONNECT contents %+v", ci)
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	good := func() Config {
		return Config{Role: Secondary, Relationship: "r", Local: "[2001:db8::1]:647", Peer: "[2001:db8::2]:647", MCLT: time.Hour}
	}
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"Role", func(c *Config) { c.Role = 0 }},
		{"Relationship", func(c *Config) { c.Relationship = "" }},
		{"Relationship", func(c *Config) { c.Relationship = "a\x00b" }},
		{"Local", func(c *Config) { c.Local = "nonsense" }},
		{"Local", func(c *Config) { c.Local = "[::]:647" }},
		{"Peer", func(c *Config) { c.Peer = "[2001:db8::1]:647" }},
		{"MCLT", func(c *Config) { c.MCLT = 0 }},
		{"MCLT", func(c *Config) { c.MCLT = 1500 * time.Millisecond }},
		{"KeepaliveTime", func(c *Config) { c.KeepaliveTime = 500 * time.Millisecond }},
		{"ConnectFlags", func(c *Config) { c.ConnectFlags = 0x8000 }},
		{"RetryMax", func(c *Config) { c.RetryMin, c.RetryMax = time.Minute, time.Second }},
		{"MaxPendingConns", func(c *Config) { c.MaxPendingConns = -1 }},
		{"MaxSkew", func(c *Config) { c.MaxSkew = time.Millisecond }},
		{"TLS.CertFile", func(c *Config) { c.TLS = &TLSConfig{CertFile: "a.pem"} }},
		{"TLS.Server", func(c *Config) { c.TLS = &TLSConfig{} }},
		{"TLS.Server", func(c *Config) {
			c.TLS = &TLSConfig{Server: &tls.Config{Certificates: []tls.Certificate{{}}, ClientAuth: tls.VerifyClientCertIfGiven}}
		}},
		{"TLS.Client", func(c *Config) {
			c.Role = Primary
			c.TLS = &TLSConfig{Client: &tls.Config{Certificates: []tls.Certificate{{}}, InsecureSkipVerify: true}}
		}},
		{"TLS.Client", func(c *Config) { c.Role = Primary; c.TLS = &TLSConfig{Client: &tls.Config{}} }},
	}
	g := good()
	if err := g.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range cases {
		c := good()
		tc.mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: Validate() = %v", tc.field, err)
		}
	}
	if _, err := New(good(), nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without handler: %v", err)
	}
	bad := good()
	bad.TLS = &TLSConfig{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem", CAFile: "/nonexistent/ca.pem"}
	if _, err := New(bad, newRecorder(wire.StateNormal)); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "/nonexistent/c.pem") {
		t.Errorf("New with missing TLS files: %v", err)
	}
}

func TestTLSConfigHardened(t *testing.T) {
	ca := newCA(t, "ca")
	tc := tlsFor(t, ca, ca, "2001:db8::1")
	tc.Client.MinVersion = tls.VersionTLS10
	c := Config{Role: Primary, Relationship: "r", Local: "[2001:db8::1]:647", Peer: "[2001:db8::2]:647", MCLT: time.Hour, TLS: tc}
	r, err := c.resolve(true)
	if err != nil {
		t.Fatal(err)
	}
	if r.clientTLS.MinVersion != tls.VersionTLS12 || r.clientTLS.ServerName != "2001:db8::2" || r.clientTLS.Time == nil {
		t.Fatalf("client TLS: min %x name %q", r.clientTLS.MinVersion, r.clientTLS.ServerName)
	}
	if tc.Client.MinVersion != tls.VersionTLS10 {
		t.Fatal("the caller's tls.Config was modified")
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"[2001:db8::1]:647": "[2001:db8::1]:647",
		"[2001:db8::1]:9":   "[2001:db8::1]:9",
		"2001:db8::1":       "[2001:db8::1]:647",
		"[2001:db8::1]":     "[2001:db8::1]:647",
		"192.0.2.1":         "192.0.2.1:647",
		"192.0.2.1:80":      "192.0.2.1:80",
	} {
		got, err := ParseAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "host:647", "[192.0.2.1]", "2001:db8::1:647:x"} {
		if _, err := ParseAddr(bad); err == nil {
			t.Errorf("ParseAddr(%q) accepted", bad)
		}
	}
	if r, err := ParseRole("Secondary"); err != nil || r != Secondary {
		t.Errorf("ParseRole: %v %v", r, err)
	}
	if _, err := ParseRole("tertiary"); err == nil {
		t.Error("ParseRole(tertiary) accepted")
	}
}
