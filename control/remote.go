package control

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// ErrNoClientAuth is returned by ListenRemote when neither a client CA nor a
// token file is configured: the remote listener never serves anonymous
// clients.
var ErrNoClientAuth = errors.New("remote control needs a client CA (mutual TLS) or a token file, or both")

// RemoteConfig configures the control API's TCP listener for remote
// administration. It is always TLS; a client is admitted when it presents
// a certificate that chains to ClientCAFile, or sends the bearer token held
// in TokenFile.
type RemoteConfig struct {
	// Addr is the TCP address to listen on ("[2001:db8::1]:9548").
	Addr string
	// CertFile and KeyFile are this server's PEM certificate and key. Required.
	CertFile, KeyFile string
	// ClientCAFile is a PEM bundle: clients with a certificate signed by it
	// are admitted. A client certificate from another CA fails the handshake.
	ClientCAFile string
	// TokenFile holds the bearer token (surrounding white space ignored); it
	// must not be readable by group or others (mode 0600 or stricter).
	TokenFile string
	// Logger receives one line per refused request. Default: no-op.
	Logger *zap.Logger
}

// Remote is the TLS control listener. Serve runs it; Close (or Serve's
// context) stops it.
type Remote struct {
	l     net.Listener
	token []byte // nil: tokens are not accepted
	log   *zap.Logger
}

// ReadTokenFile reads a bearer token from path, refusing a file that group
// or others may read and an empty token.
func ReadTokenFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("token file %s has mode %04o: it must be readable by its owner only (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s: the token must be one line without spaces", path)
	}
	return tok, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// ListenRemote checks cfg, loads the certificates and the token, and opens
// the TLS listener. It refuses to start without a way to authenticate
// clients (ErrNoClientAuth).
func ListenRemote(cfg RemoteConfig) (*Remote, error) {
	if cfg.ClientCAFile == "" && cfg.TokenFile == "" {
		return nil, ErrNoClientAuth
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("remote control: a server certificate and key are required (it is served over TLS only)")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("remote control certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if cfg.ClientCAFile != "" {
		if tc.ClientCAs, err = loadPool(cfg.ClientCAFile); err != nil {
			return nil, fmt.Errorf("remote control client CA: %w", err)
		}
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	r := &Remote{log: cfg.Logger.Named("control")}
	if cfg.TokenFile != "" {
		tok, err := ReadTokenFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("remote control: %w", err)
		}
		r.token = []byte(tok)
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("remote control listener %s: %w", cfg.Addr, err)
	}
	r.l = tls.NewListener(l, tc)
	return r, nil
}

// Addr is the listening address.
func (r *Remote) Addr() net.Addr { return r.l.Addr() }

// Serve serves the control API to authenticated clients until ctx is done.
func (r *Remote) Serve(ctx context.Context, b Backend) error {
	return serveHTTP(ctx, r.l, r.authenticate(Handler(b)), zap.NewStdLog(r.log))
}

// authenticate admits a request with a verified client certificate or the
// right bearer token; every other request gets 401 and nothing else.
func (r *Remote) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.TLS != nil && len(req.TLS.VerifiedChains) > 0 {
			next.ServeHTTP(w, req)
			return
		}
		if r.token != nil {
			if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok &&
				subtle.ConstantTimeCompare([]byte(tok), r.token) == 1 {
				next.ServeHTTP(w, req)
				return
			}
		}
		r.log.Warn("remote control request refused: no valid client certificate or token",
			zap.String("remote", req.RemoteAddr), zap.String("path", req.URL.Path))
		w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not authenticated: give a client certificate signed by the daemon's client CA (--tls-cert, --tls-key) or the daemon's token (--token-file)"})
	})
}

// RemoteClientConfig configures a client of a remote control listener.
type RemoteClientConfig struct {
	// Address is "https://host:port".
	Address string
	// CAFile verifies the daemon's certificate (default: the system roots).
	CAFile string
	// CertFile and KeyFile are the client certificate for mutual TLS (optional).
	CertFile, KeyFile string
	// TokenFile holds the bearer token (optional; mode 0600).
	TokenFile string
}

// NewRemoteClient returns a client for a daemon's remote control listener.
func NewRemoteClient(cfg RemoteClientConfig) (*Client, error) {
	u, err := url.Parse(cfg.Address)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--address %q: want https://HOST:PORT", cfg.Address)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	if cfg.CAFile != "" {
		if tc.RootCAs, err = loadPool(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	c := &Client{base: "https://" + u.Host, where: u.Host,
		hc: &http.Client{Transport: &http.Transport{TLSClientConfig: tc, TLSHandshakeTimeout: 10 * time.Second}, Timeout: 5 * time.Minute}}
	if cfg.TokenFile != "" {
		if c.token, err = ReadTokenFile(cfg.TokenFile); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// remoteDialErr turns a TCP or TLS failure into advice.
func (c *Client) remoteDialErr(err error) error {
	var cv *tls.CertificateVerificationError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing listens on %s: is [control] listen set in the daemon's configuration? is --address right?", c.where)
	case errors.As(err, &cv):
		return fmt.Errorf("%s: the daemon's certificate is not trusted: give its CA with --tls-ca (%v)", c.where, cv.Err)
	case strings.Contains(err.Error(), "tls: "):
		return fmt.Errorf("%s: TLS refused: %w (a client certificate must be signed by the daemon's tls-client-ca)", c.where, err)
	}
	return fmt.Errorf("control API at %s: %w", c.where, err)
}

// serveHTTP serves h on l until ctx is done.
// errLog (nil: the standard logger) receives the server's own errors, such
// as failed TLS handshakes.
func serveHTTP(ctx context.Context, l net.Listener, h http.Handler, errLog *log.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: errLog}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
