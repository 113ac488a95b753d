package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tandem-dhcp/tandem/control"
)

// startLeaseDaemon runs `tandem serve` (standalone, DHCP on lo, a pd-pool)
// and returns its control socket once it answers (startDaemon: stopped with
// SIGTERM when the test ends).
func startLeaseDaemon(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "tandem.sock")
	cfg := filepath.Join(dir, "tandem.toml")
	port := freePort(t, "udp")
	body := fmt.Sprintf(`data-dir = %q
control-socket = %q

[dhcp]
interfaces = ["lo"]
port = %d

[[subnet]]
prefix = "2001:db8:1::/64"
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
pd-pools = [{ prefix = "2001:db8:8000::/40", delegated-length = 56 }]
`, filepath.Join(dir, "data"), sock, port)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, cfg, sock).sock
}

func wantFail(t *testing.T, r result, code int, texts ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d; stderr: %s", r.code, code, r.stderr)
	}
	for _, s := range texts {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q: %s", s, r.stderr)
		}
	}
}

// TestLeaseCommandsAgainstDaemon runs every lease command against a real
// `tandem serve`.
func TestLeaseCommandsAgainstDaemon(t *testing.T) {
	sock := startLeaseDaemon(t)
	s := "--socket=" + sock

	r := mustRun(t, "lease", "add", "2001:db8:1::1001", "--duid", "00:03:00:01:aa:bb:cc", "--iaid", "7", "--valid", "1h", s)
	if !strings.Contains(r.stdout, "added na 2001:db8:1::1001: ACTIVE until") || !strings.Contains(r.stdout, "valid 3600s") {
		t.Errorf("add: %s", r.stdout)
	}
	r = mustRun(t, "lease", "get", "2001:db8:1::1001", s)
	for _, want := range []string{"na 2001:db8:1::1001", "ACTIVE", "00030001aabbcc", "iaid:                    7"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("get lacks %q:\n%s", want, r.stdout)
		}
	}
	var l control.Lease
	decodeJSON(t, mustRun(t, "lease", "get", "2001:db8:1::1001", "--json", s).stdout, &l)
	if l.DUID != "00030001aabbcc" || l.IAID != 7 || l.ValidLifetime != 3600 || l.Rev == 0 {
		t.Errorf("get --json: %+v", l)
	}
	var ls []control.Lease
	decodeJSON(t, mustRun(t, "lease", "get", "--duid", "00030001aabbcc", "--iaid", "7", "--json", s).stdout, &ls)
	if len(ls) != 1 || ls[0].Address != "2001:db8:1::1001" {
		t.Errorf("get by client: %+v", ls)
	}
	mustRun(t, "lease", "add", "2001:db8:8000:4200::/56", "--duid", "0001", "--iaid", "1", s)
	decodeJSON(t, mustRun(t, "lease", "get", "2001:db8:8000:4200::/56", "--json", s).stdout, &l)
	if l.Type != "pd" || l.Prefix != "2001:db8:8000:4200::/56" {
		t.Errorf("get prefix: %+v", l)
	}

	wantFail(t, tandem(t, "lease", "get", "2001:db8:1::1002", s), exitFailure, "no lease for na 2001:db8:1::1002")
	wantFail(t, tandem(t, "lease", "get", "--duid", "0009", s), exitFailure, "no lease for client 0009")
	wantFail(t, tandem(t, "lease", "add", "2001:db8:1::1001", "--duid", "01", "--iaid", "1", s), exitFailure, "lease exists", "use lease update")
	wantFail(t, tandem(t, "lease", "add", "2001:db8:2::1", "--duid", "01", "--iaid", "1", s), exitFailure, "not in any configured pool")
	wantFail(t, tandem(t, "lease", "add", "2001:db8:1::1002", "--iaid", "1", s), exitUsage, "--duid HEX --iaid N")
	wantFail(t, tandem(t, "lease", "add", "2001:db8:1::1002", "--duid", "xyz", "--iaid", "1", s), exitFailure, "want 1 to 130 bytes of hex")
	wantFail(t, tandem(t, "lease", "add", "not-an-address", "--duid", "01", "--iaid", "1", s), exitUsage, "bad IPv6 address")
	wantFail(t, tandem(t, "lease", "get", s), exitUsage, "ADDRESS|PREFIX")
	wantFail(t, tandem(t, "lease", "update", "2001:db8:1::1001", s), exitUsage, "nothing to change")
	wantFail(t, tandem(t, "lease", "update", "2001:db8:1::1002", "--iaid", "3", s), exitFailure, "no such lease")

	r = mustRun(t, "lease", "update", "2001:db8:1::1001", "--valid", "2h", "--iaid", "8", s)
	if !strings.Contains(r.stdout, "updated na 2001:db8:1::1001: ACTIVE") || !strings.Contains(r.stdout, "valid 7200s") {
		t.Errorf("update: %s", r.stdout)
	}
	r = mustRun(t, "lease", "update", "2001:db8:1::1001", "--state", "released", s)
	if !strings.Contains(r.stdout, ": FREE") { // standalone: a release frees at once
		t.Errorf("release: %s", r.stdout)
	}
	r = mustRun(t, "lease", "delete", "2001:db8:1::1001", s)
	if !strings.Contains(r.stdout, "deleted na 2001:db8:1::1001 (was FREE)") {
		t.Errorf("delete: %s", r.stdout)
	}
	wantFail(t, tandem(t, "lease", "delete", "2001:db8:1::1001", s), exitFailure, "no such lease")

	// Export and import through files.
	for i := 0; i < 50; i++ {
		mustRun(t, "lease", "add", fmt.Sprintf("2001:db8:1::2%03x", i), "--duid", fmt.Sprintf("0003%04x", i), "--iaid", "1", s)
	}
	dir := t.TempDir()
	csvFile, jsonFile := filepath.Join(dir, "leases.csv"), filepath.Join(dir, "leases.json")
	r = mustRun(t, "lease", "export", "-o", csvFile, s)
	if !strings.Contains(r.stderr, "exported 51 leases to "+csvFile+" (csv)") {
		t.Errorf("export: %s", r.stderr)
	}
	r = mustRun(t, "lease", "export", "-o", jsonFile, s)
	if !strings.Contains(r.stderr, "exported 51 leases to "+jsonFile+" (json)") {
		t.Errorf("export json: %s", r.stderr)
	}
	b, _ := os.ReadFile(csvFile)
	if !strings.HasPrefix(string(b), strings.Join(control.CSVColumns, ",")+"\n") || strings.Count(string(b), "\n") != 52 {
		t.Errorf("csv export:\n%s", b)
	}
	r = mustRun(t, "lease", "export", "--format", "json", "--type", "pd", s)
	decodeJSON(t, r.stdout, &ls)
	if len(ls) != 1 || ls[0].Type != "pd" {
		t.Errorf("export --type pd: %+v", ls)
	}
	wantFail(t, tandem(t, "lease", "import", csvFile, s), exitFailure, "leases.csv: line 2: lease exists", "--replace", "51 of 51 records have problems")
	r = mustRun(t, "lease", "import", csvFile, "--replace", "--dry-run", s)
	if !strings.Contains(r.stdout, "51 leases checked, 51 would replace existing ones; nothing changed (dry run)") {
		t.Errorf("dry run: %s", r.stdout)
	}
	r = mustRun(t, "lease", "import", jsonFile, "--replace", s)
	if !strings.Contains(r.stdout, "51 leases imported (51 replaced) in 1 log entries") {
		t.Errorf("import: %s", r.stdout)
	}
	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(bad, []byte(strings.Replace(string(b), ",ACTIVE,", ",SLEEPY,", 1)), 0o644)
	wantFail(t, tandem(t, "lease", "import", bad, s), exitFailure, "bad.csv: line 2: unknown binding status \"SLEEPY\"", "nothing was changed")
	wantFail(t, tandem(t, "lease", "import", filepath.Join(dir, "missing.csv"), s), exitFailure, "missing.csv")
	wantFail(t, tandem(t, "lease", "export", "--format", "xml", s), exitUsage, "csv or json")

	// No daemon, and a caller who may not open the socket.
	none := "--socket=" + filepath.Join(dir, "none.sock")
	wantFail(t, tandem(t, "lease", "get", "2001:db8:1::1001", none), exitFailure, "no tandem daemon is listening")
	wantFail(t, tandem(t, "lease", "add", "2001:db8:1::1001", "--duid", "01", "--iaid", "1", none), exitFailure, "no tandem daemon is listening")
	if os.Geteuid() == 0 {
		r := runAsNobody(t, "lease", "get", "2001:db8:1::2000", s)
		wantFail(t, r, exitFailure, "permission denied", "mode 0600")
	}
}

// runAsNobody runs a copy of the binary as uid/gid 65534.
func runAsNobody(t *testing.T, args ...string) result {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // the test's temp root is 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "tandem")
	src, err := os.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}
