package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandem-dhcp/tandem/control"
)

// topo is the chaos layout, pair-up's with a dedicated partner link:
//
//	P+"br"   bridge br0: the client link (ports pri, sec, cli)
//	P+"pri"  primary: eth0 2001:db8:1::1 on br0, fo0 2001:db8:ff::1
//	P+"sec"  secondary: eth0 2001:db8:1::2 on br0, fo0 2001:db8:ff::2
//	P+"cli"  perfdhcp and the recorder on eth0
//
// fo0 is a veth pair straight between the servers: the failover
// connection runs over it, so taking it down cuts the partner link and
// nothing else (both servers still reach the clients).
type topo struct {
	prefix, dir, bin string
	srv              [2]*server // primary, secondary
}

const (
	foAddrPri = "2001:db8:ff::1"
	foAddrSec = "2001:db8:ff::2"
)

// The pair's pd-pool: 128 prefixes for the recorder's clients (150 by
// default), split between the servers by proportional allocation
// (prefix-share 0.5, the default), with a rebalance threshold of 4.
const (
	pdPool      = "2001:db8:8000::/57"
	pdLength    = 64
	pdThreshold = 4
)

func (tp *topo) ns(n string) string { return tp.prefix + n }

// server is one `tandem serve` process, restarted after each kill.
type server struct {
	role, ns, dir string
	cmd           *exec.Cmd
	done          chan struct{}
	kills         int
	killing       atomic.Bool  // set by kill and stop before they signal
	unexpected    atomic.Int64 // exits nobody asked for (crashes)
}

func (s *server) socket() string { return filepath.Join(s.dir, "tandem.sock") }

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (tp *topo) nsRun(ns string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// names lists the namespaces this layout makes.
func (tp *topo) names() []string {
	return []string{tp.ns("br"), tp.ns("pri"), tp.ns("sec"), tp.ns("cli")}
}

func (tp *topo) up() error {
	for _, n := range tp.names() {
		if _, err := os.Stat("/var/run/netns/" + n); err == nil {
			return fmt.Errorf("namespace %s exists: run scripts/chaos -down first", n)
		}
	}
	for _, n := range tp.names() {
		if err := os.MkdirAll("/etc/netns/"+n, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile("/etc/netns/"+n+"/resolv.conf", []byte("# private resolv.conf (scripts/chaos)\n"), 0o644); err != nil {
			return err
		}
		if err := run("ip", "netns", "add", n); err != nil {
			return err
		}
		for _, kv := range []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
			"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
			// fo0 keeps its address while it is down, as a cable pull would.
			"net.ipv6.conf.all.keep_addr_on_down=1", "net.ipv6.conf.default.keep_addr_on_down=1"} {
			if err := tp.nsRun(n, "sysctl", "-q", "-w", kv); err != nil {
				return err
			}
		}
		if err := run("ip", "-n", n, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	br := tp.ns("br")
	if err := run("ip", "-n", br, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
		return err
	}
	if err := run("ip", "-n", br, "link", "set", "br0", "up"); err != nil {
		return err
	}
	for _, x := range []struct{ ns, port, addr string }{
		{tp.ns("pri"), "pri", "2001:db8:1::1/64"},
		{tp.ns("sec"), "sec", "2001:db8:1::2/64"},
		{tp.ns("cli"), "cli", ""},
	} {
		if err := tp.veth(x.ns, "eth0", x.addr, br, x.port, ""); err != nil {
			return err
		}
		if err := run("ip", "-n", br, "link", "set", x.port, "master", "br0"); err != nil {
			return err
		}
	}
	if err := tp.veth(tp.ns("pri"), "fo0", foAddrPri+"/64", tp.ns("sec"), "fo0", foAddrSec+"/64"); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range []string{tp.ns("pri"), tp.ns("sec"), tp.ns("cli")} {
		for {
			out, _ := exec.Command("ip", "-n", n, "-6", "addr", "show", "dev", "eth0", "scope", "link").Output()
			if strings.Contains(string(out), "fe80::") && !strings.Contains(string(out), "tentative") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s/eth0: no usable link-local address", n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// veth makes a veth pair ifA (in nsA) -- ifB (in nsB), up, with optional addresses.
func (tp *topo) veth(nsA, ifA, addrA, nsB, ifB, addrB string) error {
	tmpA, tmpB := fmt.Sprintf("tch%da", os.Getpid()), fmt.Sprintf("tch%db", os.Getpid())
	if err := run("ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB); err != nil {
		return err
	}
	for _, x := range []struct{ ns, tmp, name, addr string }{{nsA, tmpA, ifA, addrA}, {nsB, tmpB, ifB, addrB}} {
		if err := run("ip", "link", "set", x.tmp, "netns", x.ns); err != nil {
			return err
		}
		if err := run("ip", "-n", x.ns, "link", "set", x.tmp, "name", x.name); err != nil {
			return err
		}
		if err := run("ip", "-n", x.ns, "link", "set", x.name, "up"); err != nil {
			return err
		}
		if x.addr != "" {
			if err := run("ip", "-n", x.ns, "-6", "addr", "add", x.addr, "dev", x.name, "nodad"); err != nil {
				return err
			}
		}
	}
	return nil
}

// down kills every process in the layout's namespaces and deletes them
// (and their /etc/netns entries). Safe to call twice or on a partial layout.
func (tp *topo) down() []string {
	var removed []string
	for _, n := range tp.names() {
		if _, err := os.Stat("/var/run/netns/" + n); err != nil {
			_ = os.RemoveAll("/etc/netns/" + n)
			continue
		}
		for i := 0; i < 50; i++ {
			out, _ := exec.Command("ip", "netns", "pids", n).Output()
			f := strings.Fields(string(out))
			if len(f) == 0 {
				break
			}
			for _, p := range f {
				if pid, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := run("ip", "netns", "del", n); err == nil {
			removed = append(removed, n)
		}
		_ = os.RemoveAll("/etc/netns/" + n)
	}
	return removed
}

// serverConfig is pair-up's configuration with chaos-friendly timers: a
// short MCLT (so RECOVER-WAIT and the MCLT cap pass quickly), a 3 s
// keepalive, and auto-partner-down so long outages reach PARTNER-DOWN and
// the recovery paths. The pools are small so that resources are reused
// while the load runs: 2048 addresses (perfdhcp and the recorder), and a
// /57 of /64s (128 prefixes, fewer than the recorder's 150 clients: only
// the recorder asks for prefixes, so the pool runs out) with a
// rebalance threshold of 4 prefixes, so that the primary's gives and
// take-backs of FREE-BACKUP prefixes happen on every return to NORMAL.
func (tp *topo) serverConfig(s *server, local, peer string, o options) string {
	apd := ""
	if o.autoPartnerDown > 0 {
		apd = fmt.Sprintf("auto-partner-down = %q\n", fmt.Sprintf("%ds", int(o.autoPartnerDown.Seconds())))
	}
	return fmt.Sprintf(`# Written by scripts/chaos: the %s of the chaos pair.
data-dir = %q
control-socket = %q

[log]
level = "info"
format = "json"

[dhcp]
interfaces = ["eth0"]

[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth0"
pools = ["2001:db8:1::1000-2001:db8:1::17ff"]
pd-pools = [{ prefix = %q, delegated-length = %d }]
preferred-lifetime = "3m"
valid-lifetime = "5m"

[failover]
relationship = "chaos"
role = %q
local = "[%s]:647"
peer = "[%s]:647"
mclt = "%ds"
keepalive-time = "3s"
connect-retry-max = "2s"
prefix-rebalance-threshold = %d
%s`, s.role, filepath.Join(s.dir, "data"), s.socket(), pdPool, pdLength, s.role, local, peer, int(o.mclt.Seconds()), pdThreshold, apd)
}

func (tp *topo) prepareServers(o options) error {
	tp.srv[0] = &server{role: "primary", ns: tp.ns("pri"), dir: filepath.Join(tp.dir, "primary")}
	tp.srv[1] = &server{role: "secondary", ns: tp.ns("sec"), dir: filepath.Join(tp.dir, "secondary")}
	for i, s := range tp.srv {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return err
		}
		local, peer := foAddrPri, foAddrSec
		if i == 1 {
			local, peer = peer, local
		}
		if err := os.WriteFile(filepath.Join(s.dir, "tandem.toml"), []byte(tp.serverConfig(s, local, peer, o)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// start runs `tandem serve` in s's namespace (its own session, output
// appended to tandem.log). It does not wait for the control socket.
func (tp *topo) start(s *server) error {
	f, err := os.OpenFile(filepath.Join(s.dir, "tandem.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	// `ip netns exec` execs tandem, so the pid is tandem's own.
	cmd := exec.Command("ip", "netns", "exec", s.ns, tp.bin, "serve", "--config", filepath.Join(s.dir, "tandem.toml"))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.role, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	s.killing.Store(false)
	go func(done chan struct{}) {
		_ = cmd.Wait()
		if !s.killing.Load() {
			s.unexpected.Add(1)
		}
		close(done)
	}(s.done)
	return nil
}

func (s *server) alive() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL (a crash) and waits for the exit.
func (s *server) kill() {
	if !s.alive() {
		return
	}
	s.killing.Store(true)
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.kills++
}

// foStatus is the part of the failover status the chaos run reads.
type foStatus struct {
	State   string `json:"state"`
	Owed    int    `json:"owed_updates"`
	Unacked int    `json:"unacked_updates"`
}

type srvStatus struct {
	DUID string
	FO   foStatus
}

func (s *server) status(ctx context.Context) (srvStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := control.NewClient(s.socket()).Status(ctx)
	if err != nil {
		return srvStatus{}, err
	}
	var fs foStatus
	b, _ := json.Marshal(st.Failover)
	_ = json.Unmarshal(b, &fs)
	return srvStatus{DUID: st.ServerDUID, FO: fs}, nil
}

func (s *server) leases(ctx context.Context) ([]control.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return control.NewClient(s.socket()).Leases(ctx, control.LeaseFilter{})
}

// link sets the partner link (fo0 on the primary's side) up or down.
func (tp *topo) link(up bool) error {
	st := "down"
	if up {
		st = "up"
	}
	return run("ip", "-n", tp.ns("pri"), "link", "set", "fo0", st)
}
