// Package e2e runs the real tandem binary against real DHCPv6 clients (ISC
// dhclient, dhcpcd, Kea's perfdhcp) in network namespaces joined by veth
// pairs that each test creates and removes. It needs root; without it every
// test skips with a message.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/control"
	"github.com/tandem-dhcp/tandem/internal/netns"
)

var tandemBin string

func TestMain(m *testing.M) {
	if os.Getenv("E2E_HELPER") != "" {
		os.Exit(m.Run()) // re-executed inside a namespace as a helper process
	}
	dir, err := os.MkdirTemp("", "tandem-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tandemBin = filepath.Join(dir, "tandem")
	cmd := exec.Command("go", "build", "-race", "-o", tandemBin, "../cmd/tandem")
	if os.Getenv("E2E_NORACE") != "" {
		cmd = exec.Command("go", "build", "-o", tandemBin, "../cmd/tandem")
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tandem:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// topo is a server namespace and a client namespace on one veth link.
type topo struct {
	srv, cli *netns.NS
	dir      string
}

const (
	srvIf   = "srv0"
	cliIf   = "cli0"
	srvAddr = "2001:db8:1::1/64"
)

func newTopo(t *testing.T) *topo {
	netns.Require(t)
	tp := &topo{srv: netns.New(t, "s"), cli: netns.New(t, "c"), dir: t.TempDir()}
	netns.Link(t, tp.srv, srvIf, srvAddr, tp.cli, cliIf, "")
	return tp
}

// config writes a tandem config for the server namespace and returns its path.
func (tp *topo) config(t *testing.T, extraSubnet string) string {
	cfg := fmt.Sprintf(`data-dir = %q
control-socket = %q

[log]
level = "info"
format = "json"

[dhcp]
interfaces = [%q]
dns-servers = ["2001:db8:1::53"]
domain-search = ["example.test"]

[[subnet]]
prefix = "2001:db8:1::/64"
interface = %q
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
pd-pools = [{ prefix = "2001:db8:8000::/40", delegated-length = 56 }]
preferred-lifetime = "40s"
valid-lifetime = "60s"
renew-time = "4s"
rebind-time = "30s"
%s`, filepath.Join(tp.dir, "data"), tp.socket(), srvIf, srvIf, extraSubnet)
	p := filepath.Join(tp.dir, "tandem.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (tp *topo) socket() string { return filepath.Join(tp.dir, "tandem.sock") }

// daemon is a running `tandem serve`.
type daemon struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs `tandem serve` in the server namespace and waits until its
// control socket answers.
func (tp *topo) start(t *testing.T, cfg string) *daemon {
	t.Helper()
	d := &daemon{out: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = tp.srv.Command(tandemBin, "serve", "--config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start tandem: %v", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("tandem output:\n%s", d.out.String())
		}
	})
	netns.WaitFor(t, 20*time.Second, "tandem control socket", func() bool {
		select {
		case <-d.done:
			t.Fatalf("tandem exited early:\n%s", d.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := control.NewClient(tp.socket()).Status(ctx)
		return err == nil
	})
	return d
}

// kill sends SIGKILL (a crash, not a shutdown) and waits for the exit.
func (d *daemon) kill() {
	if d.cmd.Process != nil {
		// `ip netns exec` execs the binary, so this pid is tandem itself.
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-d.done
}

func (tp *topo) leases(t *testing.T) []control.Lease {
	t.Helper()
	out, err := exec.Command(tandemBin, "lease", "list", "--socket", tp.socket(), "--json").Output()
	if err != nil {
		t.Fatalf("tandem lease list: %v", err)
	}
	var ls []control.Lease
	if err := json.Unmarshal(out, &ls); err != nil {
		t.Fatalf("lease list output is not a JSON array: %v\n%s", err, out)
	}
	return ls
}

func (tp *topo) status(t *testing.T) *control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := control.NewClient(tp.socket()).Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func findLease(ls []control.Lease, typ, prefixOf string) *control.Lease {
	for i := range ls {
		l := &ls[i]
		if l.Type != typ {
			continue
		}
		if strings.HasPrefix(l.Address, prefixOf) || strings.HasPrefix(l.Prefix, prefixOf) {
			return l
		}
	}
	return nil
}

// dhclient runs ISC dhclient -6 in the foreground in ns (no-op script, so
// nothing on the machine is reconfigured) until kill is called or the test
// ends. withPD also asks for a prefix. It returns the lease file.
func dhclient(t *testing.T, ns *netns.NS, dir string, withPD bool) (leaseFile string, kill func()) {
	t.Helper()
	leaseFile = filepath.Join(dir, "dhclient.leases")
	args := []string{"-6", "-d", "-v", "-N"}
	if withPD {
		args = append(args, "-P")
	}
	args = append(args, "-lf", leaseFile, "-pf", filepath.Join(dir, "dhclient.pid"), "-sf", "/bin/true", cliIf)
	cl := ns.Command("dhclient", args...)
	out := &syncBuffer{}
	cl.Stdout, cl.Stderr = out, out
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			_ = cl.Process.Kill()
			_ = cl.Wait()
			if t.Failed() {
				t.Logf("dhclient output:\n%s", out.String())
			}
		})
	}
	t.Cleanup(kill)
	return leaseFile, kill
}
