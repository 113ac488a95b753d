package control

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-dhcp/tandem/internal/testpki"
)

// remoteFixture is a running remote listener and the files clients need.
type remoteFixture struct {
	addr     string // https://127.0.0.1:port
	serverCA string
	token    string // token file with the right token
	client   testpki.Pair
	foreign  testpki.Pair // a client certificate from another CA
	wrongTok string       // token file with another token
}

func tokenFile(t *testing.T, tok string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// startRemote runs ListenRemote on loopback with a client CA (if withCA) and
// a token (if withToken).
func startRemote(t *testing.T, withCA, withToken bool) remoteFixture {
	t.Helper()
	srvCA, adminCA, otherCA := testpki.NewCA(t, "server"), testpki.NewCA(t, "admins"), testpki.NewCA(t, "other")
	f := remoteFixture{serverCA: srvCA.CertFile, client: adminCA.Issue(t, "alice"), foreign: otherCA.Issue(t, "mallory"),
		token: tokenFile(t, "s3cret-token", 0o600), wrongTok: tokenFile(t, "guessed-token", 0o600)}
	srv := srvCA.Issue(t, "tandem", "127.0.0.1")
	cfg := RemoteConfig{Addr: "127.0.0.1:0", CertFile: srv.CertFile, KeyFile: srv.KeyFile}
	if withCA {
		cfg.ClientCAFile = adminCA.CertFile
	}
	if withToken {
		cfg.TokenFile = f.token
	}
	r, err := ListenRemote(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = "https://" + r.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, newBackend(t)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

func status(t *testing.T, cfg RemoteClientConfig) error {
	t.Helper()
	c, err := NewRemoteClient(cfg)
	if err != nil {
		t.Fatalf("NewRemoteClient: %v", err)
	}
	st, err := c.Status(context.Background())
	if err == nil && st.Counters["pkt6-received"] != 7 {
		t.Fatalf("status over TLS: %+v", st)
	}
	return err
}

// forcedGet GETs /v1/status presenting pair's certificate whatever CAs the
// server asks for (Go's own client would not send a certificate the server
// cannot verify, so this is what a foreign client certificate looks like).
func forcedGet(t *testing.T, f remoteFixture, pair testpki.Pair, token string) (int, error) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(f.serverCA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, f.addr+"/v1/status", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestRemoteRefusesToStartWithoutClientAuth(t *testing.T) {
	ca := testpki.NewCA(t, "server")
	srv := ca.Issue(t, "tandem", "127.0.0.1")
	_, err := ListenRemote(RemoteConfig{Addr: "127.0.0.1:0", CertFile: srv.CertFile, KeyFile: srv.KeyFile})
	if !errors.Is(err, ErrNoClientAuth) {
		t.Fatalf("no client CA, no token: %v, want ErrNoClientAuth", err)
	}
	_, err = ListenRemote(RemoteConfig{Addr: "127.0.0.1:0", CertFile: srv.CertFile, KeyFile: srv.KeyFile,
		TokenFile: tokenFile(t, "tok", 0o644)})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable token file: %v", err)
	}
	_, err = ListenRemote(RemoteConfig{Addr: "127.0.0.1:0", CertFile: srv.CertFile, KeyFile: srv.KeyFile,
		TokenFile: tokenFile(t, " ", 0o600)})
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token: %v", err)
	}
}

func TestRemoteToken(t *testing.T) {
	f := startRemote(t, false, true)
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA, TokenFile: f.token}); err != nil {
		t.Fatalf("right token: %v", err)
	}
	err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA, TokenFile: f.wrongTok})
	if err == nil || !strings.Contains(err.Error(), "not authenticated") {
		t.Fatalf("wrong token: %v", err)
	}
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA}); err == nil || !strings.Contains(err.Error(), "not authenticated") {
		t.Fatalf("no credentials: %v", err)
	}
	// Without a client CA a client certificate proves nothing.
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA, CertFile: f.client.CertFile, KeyFile: f.client.KeyFile}); err == nil {
		t.Fatal("a client certificate was accepted by a token-only listener")
	}
	// The client checks the daemon's certificate.
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.client.CertFile, TokenFile: f.token}); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("daemon certificate from an unknown CA: %v", err)
	}
}

func TestRemoteClientCertificate(t *testing.T) {
	f := startRemote(t, true, false)
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA, CertFile: f.client.CertFile, KeyFile: f.client.KeyFile}); err != nil {
		t.Fatalf("client certificate from the client CA: %v", err)
	}
	if code, err := forcedGet(t, f, f.client, ""); err != nil || code != http.StatusOK {
		t.Fatalf("raw client with the right certificate: %d %v", code, err)
	}
	if code, err := forcedGet(t, f, f.foreign, ""); err == nil {
		t.Fatalf("a client certificate from another CA was accepted: HTTP %d", code)
	}
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA}); err == nil || !strings.Contains(err.Error(), "not authenticated") {
		t.Fatalf("no client certificate: %v", err)
	}
	// No token file configured: any token is refused.
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA, TokenFile: f.token}); err == nil {
		t.Fatal("a token was accepted by a certificate-only listener")
	}
}

func TestRemoteEither(t *testing.T) {
	f := startRemote(t, true, true)
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA, TokenFile: f.token}); err != nil {
		t.Fatalf("token: %v", err)
	}
	if err := status(t, RemoteClientConfig{Address: f.addr, CAFile: f.serverCA, CertFile: f.client.CertFile, KeyFile: f.client.KeyFile}); err != nil {
		t.Fatalf("client certificate: %v", err)
	}
	// A foreign certificate fails the handshake, even with the right token.
	if code, err := forcedGet(t, f, f.foreign, "s3cret-token"); err == nil {
		t.Fatalf("a foreign client certificate passed the handshake: HTTP %d", code)
	}
}

func TestRemoteClientAddress(t *testing.T) {
	for _, a := range []string{"http://127.0.0.1:1", "127.0.0.1:9548", "https://", "https://h:1/v1"} {
		if _, err := NewRemoteClient(RemoteClientConfig{Address: a}); err == nil {
			t.Errorf("address %q accepted", a)
		}
	}
}
