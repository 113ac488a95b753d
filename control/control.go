// Package control is the daemon's admin API: HTTP/JSON on a unix socket
// (mode 0600), optionally also on a TCP listener for remote administration
// (TLS only; a client is admitted with a certificate from a configured CA or
// a bearer token: see ListenRemote), and the client the `tandem` admin
// commands use.
//
// It owns the URL paths and the JSON shapes operators and scripts rely on
// (lease objects with type, address or prefix, duid, iaid, state,
// valid_until, ...) and the lease file formats (leasefile.go). It must
// never change the binding database itself: it reads through a Backend,
// and lease changes (leases.go) go to a LeaseAdmin (the DHCP server), which
// commits them through the same log as DHCP traffic.
package control

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Resource is the JSON form of a leasable resource.
type Resource struct {
	Type    string `json:"type"`              // "na", "ta" or "pd"
	Address string `json:"address,omitempty"` // na, ta
	Prefix  string `json:"prefix,omitempty"`  // pd, CIDR
}

// ResourceOf converts r.
func ResourceOf(r fsm.Resource) Resource {
	j := Resource{Type: r.Type.String()}
	if r.Type == fsm.IAPD {
		j.Prefix = r.Prefix().String()
	} else {
		j.Address = r.Addr().String()
	}
	return j
}

// Lease is the JSON form of one binding, used by every command that prints
// bindings (lease list, log dump, log replay).
type Lease struct {
	Resource
	State string `json:"state"` // RFC 8156 binding-status name
	DUID  string `json:"duid"`  // lowercase hex, no separators
	IAID  uint32 `json:"iaid"`
	// ValidUntil is when the lease ends: StateExpirationTime of an ACTIVE
	// binding. Left out in other states, where StateExpirationTime is when
	// the state times out, not a lease end.
	ValidUntil           string   `json:"valid_until,omitempty"`
	PreferredLifetime    uint32   `json:"preferred_lifetime"`
	ValidLifetime        uint32   `json:"valid_lifetime"`
	CLTT                 string   `json:"cltt,omitempty"`
	StartTimeOfState     string   `json:"start_time_of_state,omitempty"`
	StateExpirationTime  string   `json:"state_expiration_time,omitempty"`
	PartnerLifetime      string   `json:"partner_lifetime,omitempty"`
	AckedPartnerLifetime string   `json:"acked_partner_lifetime,omitempty"`
	ExpirationTime       string   `json:"expiration_time,omitempty"`
	PartnerRawCLTTime    string   `json:"partner_raw_clt_time,omitempty"`
	Flags                []string `json:"flags,omitempty"`
	// Rev is the log index that last wrote the binding (left out inside a
	// log entry's ops, where it is not known yet).
	Rev  uint64 `json:"rev,omitempty"`
	Owed bool   `json:"owed"`
}

// UnixTime formats Unix seconds as RFC 3339 in UTC; "" for 0 (unset).
func UnixTime(t int64) string {
	if t == 0 {
		return ""
	}
	return time.Unix(t, 0).UTC().Format(time.RFC3339)
}

// LeaseFromBinding converts a binding to its JSON form.
func LeaseFromBinding(b *fsm.Binding) Lease {
	j := Lease{
		Resource:             ResourceOf(b.Resource),
		State:                b.Status.String(),
		DUID:                 b.DUIDHex(),
		IAID:                 b.IAID,
		PreferredLifetime:    b.PreferredLifetime,
		ValidLifetime:        b.ValidLifetime,
		CLTT:                 UnixTime(b.CLTT),
		StartTimeOfState:     UnixTime(b.StartTimeOfState),
		StateExpirationTime:  UnixTime(b.StateExpirationTime),
		PartnerLifetime:      UnixTime(b.PartnerLifetime),
		AckedPartnerLifetime: UnixTime(b.AckedPartnerLifetime),
		ExpirationTime:       UnixTime(b.ExpirationTime),
		PartnerRawCLTTime:    UnixTime(b.PartnerRawCLTT),
		Flags:                b.Flags.Names(),
		Rev:                  b.Rev,
		Owed:                 b.Owed(),
	}
	if b.Status == fsm.StatusActive {
		j.ValidUntil = j.StateExpirationTime
	}
	return j
}

// Status is the JSON form of `tandem status`.
type Status struct {
	Version    string            `json:"version"`
	ServerDUID string            `json:"server_duid"`
	Uptime     string            `json:"uptime"`
	Store      StoreStatus       `json:"store"`
	Bindings   map[string]int    `json:"bindings"` // "na/ACTIVE": n
	Pools      []PoolStatus      `json:"pools"`
	Counters   map[string]uint64 `json:"counters"`
	// HeldInStartup: the server was restored from a snapshot and answers no
	// client until `tandem failover continue` (standalone or failover).
	HeldInStartup bool `json:"held_in_startup"`
	// Failover is filled by the failover endpoint (nil when standalone).
	Failover any `json:"failover,omitempty"`
}

// StoreStatus describes the raft log.
type StoreStatus struct {
	DataDir       string `json:"data_dir"`
	AppliedIndex  uint64 `json:"applied_index"`
	FirstLogIndex uint64 `json:"first_log_index"`
	LastLogIndex  uint64 `json:"last_log_index"`
	LastSnapshot  uint64 `json:"last_snapshot_index"`
	DBBytes       int64  `json:"db_bytes"`
}

// PoolStatus is one pool's utilisation.
type PoolStatus struct {
	Subnet string  `json:"subnet"`
	Type   string  `json:"type"`
	Range  string  `json:"range"`
	Used   uint64  `json:"used"`
	Total  string  `json:"total"` // decimal; may exceed 2^53
	Ratio  float64 `json:"utilisation"`
}

// Backend is what the API reads.
type Backend interface {
	State() *fsm.State
	Status() Status
}

// PartnerDowner is implemented by a backend with a failover endpoint.
type PartnerDowner interface {
	// PartnerDown tells the endpoint its partner is down (RFC 8156 §8.4);
	// it returns once the decision is persisted, or why it was refused.
	PartnerDown() error
	// HasFailover reports whether a failover endpoint runs at all.
	HasFailover() bool
}

// Snapshotter is implemented by a backend that can stream a snapshot.
type Snapshotter interface {
	// SaveSnapshot writes a consistent point-in-time snapshot of the
	// binding database to w in the fsm snapshot format.
	SaveSnapshot(w io.Writer) (*fsm.SnapshotHeader, error)
}

// Continuer is implemented by a backend that can be held after a snapshot
// restore.
type Continuer interface {
	// Continue releases the hold a snapshot restore set; it returns once
	// the release is persisted, or why it was refused (not held).
	Continue() error
}

// LeaseFilter selects leases.
type LeaseFilter struct {
	Type   string       // "na", "pd" or ""
	State  string       // binding-status name or ""
	DUID   string       // lowercase hex or ""
	Subnet netip.Prefix // zero: any
	After  string       // resource string to start after (paging), "" from the start
	Limit  int          // 0: no limit
}

// Handler serves the API.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("POST /v1/failover/partner-down", func(w http.ResponseWriter, r *http.Request) {
		pd, ok := b.(PartnerDowner)
		if !ok || !pd.HasFailover() {
			writeJSON(w, http.StatusConflict, map[string]string{"error": "this server runs standalone: there is no failover partner"})
			return
		}
		if err := pd.PartnerDown(); err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("POST /v1/failover/continue", func(w http.ResponseWriter, r *http.Request) {
		c, ok := b.(Continuer)
		if !ok {
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "this daemon cannot be held: nothing to continue"})
			return
		}
		if err := c.Continue(); err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, b.Status())
	})
	// The snapshot streams from a copy-on-write view: DHCP service goes on
	// meanwhile. An error after the first byte cannot change the status
	// code; it truncates the stream, which the client's verification catches.
	mux.HandleFunc("POST /v1/snapshot", func(w http.ResponseWriter, r *http.Request) {
		s, ok := b.(Snapshotter)
		if !ok {
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "this daemon cannot save snapshots"})
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := s.SaveSnapshot(w); err != nil {
			panic(http.ErrAbortHandler) // close the connection: the client sees a truncated stream
		}
	})
	mux.HandleFunc("GET /v1/leases", func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeLeases(w, b.State().View(), f)
	})
	registerLeaseRoutes(mux, b) // leases.go
	return mux
}

func parseFilter(q url.Values) (LeaseFilter, error) {
	f := LeaseFilter{Type: strings.ToLower(q.Get("type")), State: strings.ToUpper(q.Get("state")), DUID: strings.ToLower(q.Get("duid")),
		After: q.Get("after")}
	if f.Type != "" {
		if _, err := fsm.ParseIAType(f.Type); err != nil {
			return f, err
		}
	}
	if f.State != "" {
		if _, err := fsm.ParseStatus(f.State); err != nil {
			return f, err
		}
	}
	if f.After != "" {
		if _, err := fsm.ParseResource(f.After); err != nil {
			return f, fmt.Errorf("after: %w", err)
		}
	}
	if s := q.Get("subnet"); s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return f, fmt.Errorf("subnet: %q is not a prefix", s)
		}
		f.Subnet = p
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return f, fmt.Errorf("limit: %q is not a count", s)
		}
		f.Limit = n
	}
	return f, nil
}

// writeLeases streams the matching leases as a JSON array from a View, so a
// million bindings never sit in memory twice.
func writeLeases(w http.ResponseWriter, v *fsm.View, f LeaseFilter) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	_, _ = w.Write([]byte("["))
	n := 0
	var from fsm.Resource
	if f.After != "" {
		from, _ = fsm.ParseResource(f.After) // checked by parseFilter
	}
	v.Ascend(from, func(b *fsm.Binding) bool {
		if f.After != "" && b.Resource == from {
			return true
		}
		if !f.match(b) {
			return true
		}
		if n > 0 {
			_, _ = w.Write([]byte(","))
		}
		_ = enc.Encode(LeaseFromBinding(b))
		n++
		return f.Limit == 0 || n < f.Limit
	})
	_, _ = w.Write([]byte("]\n"))
}

func (f *LeaseFilter) match(b *fsm.Binding) bool {
	if f.Type != "" && b.Resource.Type.String() != f.Type {
		return false
	}
	if f.State != "" && b.Status.String() != f.State {
		return false
	}
	if f.DUID != "" && hex.EncodeToString([]byte(b.DUID)) != f.DUID {
		return false
	}
	if f.Subnet.IsValid() && (int(b.Resource.Len) < f.Subnet.Bits() || !f.Subnet.Contains(b.Resource.Addr())) {
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Listen creates the unix socket at path with mode 0600 (its directory is
// created if missing). A stale socket left by a dead daemon is replaced; a
// live one is an error.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: a file that is not a socket is in the way: is control-socket right? (remove the file if it is really stale)", path)
		}
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use by a running daemon", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket %s: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}

// Serve serves the API on l until ctx is done.
func Serve(ctx context.Context, l net.Listener, b Backend) error {
	return serveHTTP(ctx, l, Handler(b), nil)
}
