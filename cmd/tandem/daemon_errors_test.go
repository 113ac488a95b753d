package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// daemonCommands are the commands that talk to a running daemon, with
// arguments that are valid apart from the daemon itself.
var daemonCommands = [][]string{
	{"status"},
	{"lease", "list"},
	{"lease", "get", "2001:db8:1::1005"},
	{"lease", "export", "-o", "/dev/null"},
	{"failover", "partner-down", "--yes"},
	{"failover", "continue", "--yes"},
	{"snapshot", "save", "/tmp/tandem-test-never-written.snap"},
}

// TestDaemonCommandsNoDaemon: every daemon command, pointed at a socket
// nothing listens on, fails with status 1 and says what to check.
func TestDaemonCommandsNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nobody-here.sock")
	for _, args := range daemonCommands {
		r := tandem(t, append(args, "--socket", sock)...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "no tandem daemon is listening on "+sock) ||
			!strings.Contains(r.stderr, "--socket") {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

// TestDaemonCommandsPermissionDenied: the control socket is 0600 and the
// daemon's; another user gets "permission denied" naming the socket, from
// every command.
func TestDaemonCommandsPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the client as another user")
	}
	sock := startLeaseDaemon(t)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: mode %v, err %v; want 0600", sock, fi.Mode().Perm(), err)
	}
	bin := filepath.Join(t.TempDir(), "tandem")
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// Let nobody reach the binary and the socket's directory (not the socket).
	for _, p := range []string{filepath.Dir(bin), filepath.Dir(filepath.Dir(bin)), filepath.Dir(sock), filepath.Dir(filepath.Dir(sock))} {
		os.Chmod(p, 0o755)
	}
	for _, args := range daemonCommands {
		cmd := exec.Command(bin, append(args, "--socket", sock)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stderr bytes.Buffer
		cmd.Stderr, cmd.Env, cmd.Dir = &stderr, cleanEnv(), "/"
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != exitFailure || !strings.Contains(stderr.String(), "permission denied on "+sock) {
			t.Errorf("%q as nobody: %v, stderr %q", args, err, stderr.String())
		}
	}
}

// TestOutputToDevice: an output that is a device is written as it is (lease
// export) or refused (snapshot save), never replaced by a renamed temp file.
func TestOutputToDevice(t *testing.T) {
	sock := startLeaseDaemon(t)
	mustRun(t, "lease", "export", "-o", "/dev/null", "--socket", sock)
	r := tandem(t, "snapshot", "save", "/dev/null", "--socket", sock)
	if r.code != exitFailure || !strings.Contains(r.stderr, "not a regular file") {
		t.Errorf("snapshot save /dev/null: exit %d, stderr %q", r.code, r.stderr)
	}
	if fi, err := os.Stat("/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a character device: %v %v", fi.Mode(), err)
	}
	if _, err := os.Stat("/dev/null.tmp"); err == nil {
		t.Errorf("/dev/null.tmp was created")
		os.Remove("/dev/null.tmp")
	}
}
