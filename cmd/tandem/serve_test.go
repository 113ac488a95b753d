package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const serveTestConfig = `data-dir = %q
control-socket = %q

[dhcp]
interfaces = ["lo"]

[[subnet]]
prefix = "2001:db8:1::/64"
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
`

func writeConfig(t *testing.T, extra string) string {
	dir := t.TempDir()
	p := filepath.Join(dir, "tandem.toml")
	body := strings.Replace(strings.Replace(serveTestConfig, "%q", `"`+filepath.Join(dir, "data")+`"`, 1), "%q", `"`+filepath.Join(dir, "s.sock")+`"`, 1)
	if err := os.WriteFile(p, []byte(body+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCheck(t *testing.T) {
	good := writeConfig(t, "")
	if r := mustRun(t, "config", "check", good); !strings.Contains(r.stdout, "ok (1 subnets") {
		t.Fatalf("config check output: %q", r.stdout)
	}
	bad := writeConfig(t, "\n[dhcp2]\nx = 1\n")
	r := tandem(t, "config", "check", bad)
	if r.code != exitFailure || !strings.Contains(r.stderr, bad+":") || !strings.Contains(r.stderr, "unknown key") {
		t.Fatalf("bad config: code %d stderr %q", r.code, r.stderr)
	}
}

func TestServeBadConfig(t *testing.T) {
	r := tandem(t, "serve", "--config", filepath.Join(t.TempDir(), "missing.toml"))
	if r.code != exitFailure || !strings.Contains(r.stderr, "missing.toml") {
		t.Fatalf("serve with a missing config: code %d stderr %q", r.code, r.stderr)
	}
}

// TestServeExitsWhenDHCPCannotStart: a DHCP socket that cannot be opened
// (an interface that does not exist) stops the whole daemon with an error,
// instead of leaving a control socket that answers while no DHCP is served.
func TestServeExitsWhenDHCPCannotStart(t *testing.T) {
	p := writeConfig(t, "")
	b, _ := os.ReadFile(p)
	os.WriteFile(p, []byte(strings.Replace(string(b), `interfaces = ["lo"]`, `interfaces = ["nosuch0"]`, 1)), 0o644)
	r := tandem(t, "serve", "--config", p)
	if r.code != exitFailure || !(strings.Contains(r.stderr, "nosuch0") || strings.Contains(r.stderr, "547")) {
		t.Fatalf("serve with a missing interface: code %d after %v, stderr %q", r.code, r.took, r.stderr)
	}
}
