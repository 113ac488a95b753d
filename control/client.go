package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// Client talks to a daemon's control socket, or to its remote control
// listener (NewRemoteClient).
type Client struct {
	path  string // unix socket; "" for a remote client
	base  string // URL prefix of every request
	where string // host:port of a remote daemon (for messages)
	token string // bearer token sent with every request, or ""
	hc    *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{path: path, base: "http://tandem", hc: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

// dialErr turns a connection failure into advice.
func (c *Client) dialErr(err error) error {
	if c.path == "" {
		return c.remoteDialErr(err)
	}
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no tandem daemon is listening on %s: is it running (tandem serve --config FILE)? is --socket right?", c.path)
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("permission denied on %s: the control socket is mode 0600; run this as the daemon's user (usually root)", c.path)
	}
	return fmt.Errorf("control socket %s: %w", c.path, err)
}

func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	return c.do(ctx, http.MethodGet, path, q, out)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerErr(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("bad answer from daemon: %w", err)
	}
	return nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.get(ctx, "/v1/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Leases returns the leases matching f.
func (c *Client) Leases(ctx context.Context, f LeaseFilter) ([]Lease, error) {
	q := filterQuery(f)
	out := []Lease{}
	if err := c.get(ctx, "/v1/leases", q, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// PartnerDown tells the daemon's failover endpoint that its partner is down
// and returns the status after the (persisted) transition.
func (c *Client) PartnerDown(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodPost, "/v1/failover/partner-down", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Continue releases the hold a snapshot restore set on the daemon and
// returns the status after the (persisted) release.
func (c *Client) Continue(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodPost, "/v1/failover/continue", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SaveSnapshot asks the daemon for a snapshot and copies it to w. It
// returns the bytes copied. The stream is not verified here: a daemon that
// fails half way closes the connection, so the caller must verify what it
// got (fsm.InspectSnapshot) before trusting it.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://tandem/v1/snapshot", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, c.dialErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, answerErr(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("snapshot stream from %s broke after %d bytes: %w", c.path, n, err)
	}
	return n, nil
}

// answerErr is the error a non-200 answer carries.
func answerErr(resp *http.Response) error {
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	return fmt.Errorf("daemon answered %s", resp.Status)
}
