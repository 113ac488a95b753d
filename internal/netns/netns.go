// Package netns is test support for tests that run real DHCPv6 clients and
// servers: it creates network namespaces joined by veth pairs (or a bridge),
// runs commands inside them, and removes everything it made when the test
// ends, also when the test fails. It needs root and iproute2; Require skips
// the test loudly otherwise.
//
// It never touches the root namespace's interfaces: every link lives in a
// namespace the test created, and traffic stays there.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Require skips t unless the process is root and `ip` is installed.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to create network namespaces (CI runs as root: scripts/test)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIPPED: iproute2 (ip) is not installed")
	}
}

// RequireTool skips t unless the named binary is on PATH.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (.ci/run installs it)", name)
		}
		t.Skipf("SKIPPED: %s is not installed", name)
	}
	return p
}

// NS is a network namespace made for one test.
type NS struct {
	Name string
	t    testing.TB
}

func uniq() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// New creates a namespace (name prefix + random suffix), brings up lo,
// enables IPv6 without DAD or router advertisements, and a private
// /etc/netns/NAME/resolv.conf so DHCP clients cannot rewrite the host's.
// Cleanup kills every process left inside and deletes the namespace.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	ns := &NS{Name: "tnd" + prefix + uniq(), t: t}
	if len(ns.Name) > 15 {
		ns.Name = ns.Name[:15]
	}
	etc := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatalf("netns: %v", err)
	}
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("# private to test namespace\n"), 0o644); err != nil {
		t.Fatalf("netns: %v", err)
	}
	mustRun(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { ns.destroy() })
	for _, kv := range []string{
		"net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
		"net.ipv6.conf.all.forwarding=0",
	} {
		ns.MustRun("sysctl", "-q", "-w", kv)
	}
	ns.MustRun("ip", "link", "set", "lo", "up")
	return ns
}

func (ns *NS) destroy() {
	if out, err := exec.Command("ip", "netns", "pids", ns.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	// Processes take a moment to die; the namespace disappears when the last leaves.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "pids", ns.Name).Output()
		if len(bytes.TrimSpace(out)) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = exec.Command("ip", "netns", "del", ns.Name).Run()
	_ = os.RemoveAll(filepath.Join("/etc/netns", ns.Name))
}

// Command returns a command that runs inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	return string(out), err
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(name string, args ...string) string {
	ns.t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		ns.t.Fatalf("in %s: %s %s: %v\n%s", ns.Name, name, strings.Join(args, " "), err, out)
	}
	return out
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Link makes a veth pair: ifA in a, ifB in b, both up; addrA/addrB (CIDR,
// may be "") are added without DAD. It waits until both have a usable
// link-local address.
func Link(t testing.TB, a *NS, ifA, addrA string, b *NS, ifB, addrB string) {
	t.Helper()
	tmpA, tmpB := "tv"+uniq(), "tv"+uniq()
	mustRun(t, "ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB)
	mustRun(t, "ip", "link", "set", tmpA, "netns", a.Name)
	mustRun(t, "ip", "link", "set", tmpB, "netns", b.Name)
	for _, x := range []struct {
		ns        *NS
		tmp, name string
		addr      string
	}{{a, tmpA, ifA, addrA}, {b, tmpB, ifB, addrB}} {
		x.ns.MustRun("ip", "link", "set", x.tmp, "name", x.name)
		x.ns.MustRun("sysctl", "-q", "-w", "net.ipv6.conf."+x.name+".accept_dad=0")
		x.ns.MustRun("ip", "link", "set", x.name, "up")
		if x.addr != "" {
			x.ns.MustRun("ip", "-6", "addr", "add", x.addr, "dev", x.name, "nodad")
		}
	}
	a.WaitLinkLocal(ifA)
	b.WaitLinkLocal(ifB)
}

// Bridge makes a bridge in ns (no STP, no multicast snooping, so ff02::1:2
// reaches every port) and returns its name.
func (ns *NS) Bridge(name string) string {
	ns.MustRun("ip", "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	ns.MustRun("ip", "link", "set", name, "up")
	return name
}

// Attach moves interface ifn (in ns) into bridge br (in ns).
func (ns *NS) Attach(ifn, br string) {
	ns.MustRun("ip", "link", "set", ifn, "master", br)
}

// WaitLinkLocal waits until ifn has a non-tentative fe80:: address.
func (ns *NS) WaitLinkLocal(ifn string) {
	ns.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := ns.Run("ip", "-6", "addr", "show", "dev", ifn, "scope", "link")
		if strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative") {
			return
		}
		if time.Now().After(deadline) {
			ns.t.Fatalf("%s/%s: no usable link-local address after 10s:\n%s", ns.Name, ifn, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitFor polls cond every 20ms until it is true or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// String returns the namespace name.
func (ns *NS) String() string { return fmt.Sprintf("netns %s", ns.Name) }
