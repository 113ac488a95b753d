package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMetricsAndControlTables(t *testing.T) {
	c, err := Parse("tandem.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "" || c.Control.Listen != "" {
		t.Fatalf("listeners on by default: %+v %+v", c.Metrics, c.Control)
	}

	dir := t.TempDir()
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, ca, tok, loose := file("c.crt", 0o644), file("c.key", 0o600), file("ca.crt", 0o644), file("tok", 0o600), file("loose", 0o644)
	doc := good + fmt.Sprintf(`
[metrics]
listen = "[::1]:9547"

[control]
listen = "[2001:db8:1::1]:9548"
tls-cert = %q
tls-key = %q
tls-client-ca = %q
token-file = %q
`, cert, key, ca, tok)
	c, err = Parse("tandem.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.ParsedListen.String() != "[::1]:9547" || c.Control.ParsedListen.Port() != 9548 {
		t.Fatalf("parsed: %v %v", c.Metrics.ParsedListen, c.Control.ParsedListen)
	}

	line := strings.Count(good, "\n") + 3 // the line of [metrics] listen
	for _, tc := range []struct{ name, doc, want string }{
		{"bad metrics address", good + "\n[metrics]\nlisten = \"localhost:9547\"\n", fmt.Sprintf("tandem.toml:%d: metrics.listen: \"localhost:9547\" is not an IP address and port", line)},
		{"metrics port 0", good + "\n[metrics]\nlisten = \"[::1]:0\"\n", "metrics.listen: \"[::1]:0\" has port 0"},
		{"unknown metrics key", good + "\n[metrics]\npath = \"/m\"\n", "metrics.path: unknown key"},
		{"no client auth", good + fmt.Sprintf("\n[control]\nlisten = \"[::1]:9548\"\ntls-cert = %q\ntls-key = %q\n", cert, key), fmt.Sprintf("tandem.toml:%d: control.listen: needs tls-client-ca", line)},
		{"no server cert", good + fmt.Sprintf("\n[control]\nlisten = \"[::1]:9548\"\ntoken-file = %q\n", tok), "control.tls-cert: required with control.listen"},
		{"loose token file", good + fmt.Sprintf("\n[control]\nlisten = \"[::1]:9548\"\ntls-cert = %q\ntls-key = %q\ntoken-file = %q\n", cert, key, loose), "control.token-file: " + loose + " has mode 0644"},
		{"missing file", good + fmt.Sprintf("\n[control]\nlisten = \"[::1]:9548\"\ntls-cert = %q\ntls-key = %q\ntls-client-ca = \"/nonexistent/ca\"\n", cert, key), "control.tls-client-ca: stat /nonexistent/ca"},
		{"keys without listen", good + fmt.Sprintf("\n[control]\ntoken-file = %q\n", tok), "control.token-file: set, but control.listen is not"},
		{"same address", good + fmt.Sprintf("\n[metrics]\nlisten = \"[::1]:9547\"\n[control]\nlisten = \"[::1]:9547\"\ntls-cert = %q\ntls-key = %q\ntoken-file = %q\n", cert, key, tok), "control.listen: [::1]:9547 is also metrics.listen"},
	} {
		_, err := Parse("tandem.toml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
