package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tandem-dhcp/tandem/internal/netns"
	"github.com/tandem-dhcp/tandem/internal/testpki"
	"github.com/tandem-dhcp/tandem/metrics"
	"github.com/tandem-dhcp/tandem/server"
)

// freePort returns a port nothing listens on now (network "tcp" or "udp").
func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "tcp":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	default:
		c, err := net.ListenPacket("udp6", "[::]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
}

// opDaemon is a running `tandem serve` with the metrics and remote control
// listeners on.
type opDaemon struct {
	socket, metricsURL, address string
	dhcp                        netip.AddrPort
	serverCA, token, wrongToken string
	admin, foreign              testpki.Pair
	stderr                      *lockedBuffer
}

// lockedBuffer is a bytes.Buffer the daemon's stderr is copied into while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startOpDaemon(t *testing.T) *opDaemon {
	t.Helper()
	return startOpDaemonIn(t, "")
}

// startOpDaemonIn starts the daemon with its data dir in dataDir ("": a
// temp dir).
func startOpDaemonIn(t *testing.T, dataDir string) *opDaemon {
	t.Helper()
	dir := t.TempDir()
	if dataDir == "" {
		dataDir = filepath.Join(dir, "data")
	}
	srvCA, adminCA, otherCA := testpki.NewCA(t, "server"), testpki.NewCA(t, "admins"), testpki.NewCA(t, "other")
	srvCert := srvCA.Issue(t, "tandem", "127.0.0.1")
	d := &opDaemon{socket: filepath.Join(dir, "s.sock"), serverCA: srvCA.CertFile, admin: adminCA.Issue(t, "alice"),
		foreign: otherCA.Issue(t, "mallory"), token: filepath.Join(dir, "token"), wrongToken: filepath.Join(dir, "wrong")}
	os.WriteFile(d.token, []byte("the-right-token\n"), 0o600)
	os.WriteFile(d.wrongToken, []byte("a-guessed-token\n"), 0o600)
	udp, mport, cport := freePort(t, "udp"), freePort(t, "tcp"), freePort(t, "tcp")
	d.dhcp = netip.AddrPortFrom(netip.IPv6Loopback(), uint16(udp))
	d.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	d.address = fmt.Sprintf("https://127.0.0.1:%d", cport)
	cfg := fmt.Sprintf(`data-dir = %q
control-socket = %q

[dhcp]
interfaces = ["lo"]
port = %d

[[subnet]]
prefix = "2001:db8:1::/64"
pools = ["2001:db8:1::1000-2001:db8:1::10ff"]
pd-pools = [{ prefix = "2001:db8:8000::/40", delegated-length = 56 }]

[metrics]
listen = "127.0.0.1:%d"

[control]
listen = "127.0.0.1:%d"
tls-cert = %q
tls-key = %q
tls-client-ca = %q
token-file = %q
`, dataDir, d.socket, udp, mport, cport, srvCert.CertFile, srvCert.KeyFile, adminCA.CertFile, d.token)
	p := filepath.Join(dir, "tandem.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	dp := startDaemon(t, p, d.socket) // the control socket answers
	d.stderr = dp.stderr
	netns.WaitFor(t, 20*time.Second, "the metrics endpoint", func() bool {
		resp, err := http.Get(d.metricsURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return d
}

// scrape fetches and parses the metrics.
func (d *opDaemon) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(d.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the metrics: %v", err)
	}
	return mf
}

// value is the value of the metric name with the given labels (k, v pairs);
// ok is false if there is none.
func value(mf map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := mf[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// exchange sends msg to the daemon through a (pretend) relay on the
// subnet's link and returns the inner message of the Relay-Reply.
func (d *opDaemon) exchange(t *testing.T, msg *dhcpv6.Message) *dhcpv6.Message {
	t.Helper()
	r, err := d.tryExchange(msg, 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, d.stderr)
	}
	return r
}

// tryExchange is exchange returning an error, such as no answer within timeout.
func (d *opDaemon) tryExchange(msg *dhcpv6.Message, timeout time.Duration) (*dhcpv6.Message, error) {
	fw, err := dhcpv6.EncapsulateRelay(msg, dhcpv6.MessageTypeRelayForward, net.ParseIP("2001:db8:1::1"), net.ParseIP("fe80::1"))
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(d.dhcp))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write(fw.ToBytes()); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("no answer from the daemon: %w", err)
	}
	pkt, err := dhcpv6.FromBytes(buf[:n])
	if err != nil {
		return nil, err
	}
	rm, ok := pkt.(*dhcpv6.RelayMessage)
	if !ok {
		return nil, fmt.Errorf("answer is a %v, want a Relay-Reply", pkt.Type())
	}
	return rm.GetInnerMessage()
}

// TestMetricsEndpoint scrapes a running daemon: every server counter, the
// per-subnet gauges, pool utilisation and the commit histogram are there
// with their Kea-derived names, and they move with real DHCP traffic.
func TestMetricsEndpoint(t *testing.T) {
	d := startOpDaemon(t)
	before := d.scrape(t)
	var counters []string
	new(server.Metrics).Each(func(kea, _ string, _ uint64) {
		name := metrics.Name(kea, true)
		counters = append(counters, name)
		f := before[name]
		if f == nil || f.GetType() != dto.MetricType_COUNTER || !strings.Contains(f.GetHelp(), "Kea statistic "+kea) {
			t.Errorf("counter %s (Kea %s): %v", name, kea, f)
		}
	})
	if before["tandem_pkt6_received_total"] == nil {
		t.Fatal("tandem_pkt6_received_total missing")
	}
	const sn = "2001:db8:1::/64"
	for _, g := range []string{"tandem_assigned_nas", "tandem_assigned_pds", "tandem_declined_addresses"} {
		if v, ok := value(before, g, "subnet", sn); !ok || v != 0 {
			t.Errorf("%s{subnet=%q} = %v, %v; want 0 before any client", g, sn, v, ok)
		}
	}
	if v, ok := value(before, "tandem_pool_total_slots", "subnet", sn, "type", "na"); !ok || v != 256 {
		t.Errorf("NA pool total = %v, %v; want 256", v, ok)
	}
	if _, ok := value(before, "tandem_pool_utilisation_ratio", "type", "pd", "pool", "2001:db8:8000::-2001:db8:80ff:ffff:ffff:ffff:ffff:ffff/56"); !ok {
		t.Errorf("PD pool utilisation missing: %v", before["tandem_pool_utilisation_ratio"])
	}
	commits0, ok := value(before, "tandem_raft_commit_duration_seconds")
	if !ok || before["tandem_raft_commit_duration_seconds"].GetType() != dto.MetricType_HISTOGRAM {
		t.Fatal("tandem_raft_commit_duration_seconds histogram missing")
	}
	if _, ok := value(before, "tandem_failover_state"); ok {
		t.Error("a standalone server exports failover gauges")
	}

	// A client gets an address and a prefix with Rapid Commit, then declines the address.
	hw := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	cl := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: hw}
	sol, _ := dhcpv6.NewMessage()
	sol.MessageType = dhcpv6.MessageTypeSolicit
	sol.AddOption(dhcpv6.OptClientID(cl))
	sol.AddOption(dhcpv6.OptElapsedTime(0))
	sol.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	sol.AddOption(&dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}})
	sol.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 2}})
	reply := d.exchange(t, sol)
	if reply.MessageType != dhcpv6.MessageTypeReply || reply.Options.OneIANA() == nil || reply.Options.OneIANA().Options.OneAddress() == nil {
		t.Fatalf("answer to a Rapid Commit Solicit: %v", reply.Summary())
	}
	addr := reply.Options.OneIANA().Options.OneAddress().IPv6Addr
	mid := d.scrape(t)
	for name, want := range map[string]float64{"tandem_pkt6_received_total": 1, "tandem_pkt6_solicit_received_total": 1,
		"tandem_pkt6_reply_sent_total": 1, "tandem_pkt6_advertise_sent_total": 0} {
		if v, _ := value(mid, name); v != want {
			t.Errorf("after one exchange %s = %v, want %v", name, v, want)
		}
	}
	for name, want := range map[string]float64{"tandem_assigned_nas": 1, "tandem_assigned_pds": 1, "tandem_declined_addresses": 0} {
		if v, _ := value(mid, name, "subnet", sn); v != want {
			t.Errorf("after one exchange %s = %v, want %v", name, v, want)
		}
	}
	if v, _ := value(mid, "tandem_pool_used_slots", "type", "na"); v != 1 {
		t.Errorf("NA pool used slots = %v, want 1", v)
	}
	if v, _ := value(mid, "tandem_raft_commit_duration_seconds"); v <= commits0 {
		t.Errorf("commit histogram count %v -> %v: the lease commit was not observed", commits0, v)
	}

	dec, _ := dhcpv6.NewMessage()
	dec.MessageType = dhcpv6.MessageTypeDecline
	dec.AddOption(dhcpv6.OptClientID(cl))
	dec.AddOption(dhcpv6.OptServerID(reply.Options.ServerID()))
	dec.AddOption(dhcpv6.OptElapsedTime(0))
	ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}}
	ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: addr})
	dec.AddOption(ia)
	if r := d.exchange(t, dec); r.MessageType != dhcpv6.MessageTypeReply {
		t.Fatalf("answer to Decline: %v", r.Summary())
	}
	after := d.scrape(t)
	for name, want := range map[string]float64{"tandem_pkt6_received_total": 2, "tandem_pkt6_decline_received_total": 1,
		"tandem_declined_addresses_total": 1, "tandem_pkt6_reply_sent_total": 2} {
		if v, _ := value(after, name); v != want {
			t.Errorf("after the Decline %s = %v, want %v", name, v, want)
		}
	}
	for name, want := range map[string]float64{"tandem_assigned_nas": 0, "tandem_declined_addresses": 1} {
		if v, _ := value(after, name, "subnet", sn); v != want {
			t.Errorf("after the Decline %s = %v, want %v", name, v, want)
		}
	}
	if v, _ := value(after, "tandem_raft_applied_index"); v < 3 {
		t.Errorf("tandem_raft_applied_index = %v", v)
	}
}

// TestRemoteControl runs `tandem status` against the daemon's TLS listener:
// admitted with the token or a certificate from the client CA, refused
// without credentials, with a wrong token or a certificate from another CA.
func TestRemoteControl(t *testing.T) {
	d := startOpDaemon(t)
	ok := mustRun(t, "status", "--address", d.address, "--tls-ca", d.serverCA, "--token-file", d.token)
	if !strings.Contains(ok.stdout, "pools:") || !strings.Contains(ok.stdout, "applied index") {
		t.Fatalf("status over TLS with the token:\n%s", ok.stdout)
	}
	mustRun(t, "status", "--address", d.address, "--tls-ca", d.serverCA, "--tls-cert", d.admin.CertFile, "--tls-key", d.admin.KeyFile)
	mustRun(t, "lease", "list", "--address", d.address, "--tls-ca", d.serverCA, "--tls-cert", d.admin.CertFile, "--tls-key", d.admin.KeyFile)

	for name, args := range map[string][]string{
		"wrong token":     {"--token-file", d.wrongToken},
		"foreign CA cert": {"--tls-cert", d.foreign.CertFile, "--tls-key", d.foreign.KeyFile},
	} {
		r := tandem(t, append([]string{"status", "--address", d.address, "--tls-ca", d.serverCA}, args...)...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "not authenticated") {
			t.Errorf("%s: exit %d, stderr %q", name, r.code, r.stderr)
		}
	}
	if r := tandem(t, "status", "--address", d.address, "--tls-ca", d.serverCA); r.code != exitUsage || !strings.Contains(r.stderr, "needs credentials") {
		t.Errorf("no credentials: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := tandem(t, "status", "--address", d.address, "--token-file", d.token); r.code != exitFailure || !strings.Contains(r.stderr, "not trusted") {
		t.Errorf("daemon certificate not trusted: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := tandem(t, "status", "--token-file", d.token); r.code != exitUsage {
		t.Errorf("--token-file without --address: exit %d, stderr %q", r.code, r.stderr)
	}
	// The environment works as the flags do.
	cmd := exec.Command(binPath, "status")
	cmd.Env = append(cleanEnv(), "TANDEM_ADDRESS="+d.address, "TANDEM_TLS_CA="+d.serverCA, "TANDEM_TOKEN_FILE="+d.token)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "pools:") {
		t.Errorf("status from the environment: %v\n%s", err, out)
	}
	// The local socket still works, and shows the same daemon.
	if r := mustRun(t, "status", "--socket", d.socket); !strings.Contains(r.stdout, "pools:") {
		t.Errorf("status on the socket:\n%s", r.stdout)
	}
}
