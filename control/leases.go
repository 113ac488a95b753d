package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/server"
)

// Lease routes (beside GET /v1/leases in control.go):
//
//	GET    /v1/leases/{type}/{resource...}  one lease: /v1/leases/na/2001:db8::1, /v1/leases/pd/2001:db8:8000::/56
//	GET    /v1/clients/{duid}?type=&iaid=   a client's leases (the fsm client index)
//	POST   /v1/leases                       add (LeaseChange with type and address or prefix)
//	PATCH  /v1/leases/{type}/{resource...}  update (LeaseChange)
//	DELETE /v1/leases/{type}/{resource...}?force=1
//	GET    /v1/leases/export?format=csv|json&<list filters>
//	POST   /v1/leases/import?format=csv|json&replace=1&dry_run=1&name=FILE  body: the file;
//	       answer: NDJSON ImportEvents, the last one with the report
//
// Changes go through a LeaseAdmin (the DHCP server): never straight to the
// fsm, so they are in the raft log with Origin admin and reach a failover
// partner like any other change.

// LeaseAdmin is implemented by a backend that lets operators change
// bindings (*server.Server implements it).
type LeaseAdmin interface {
	AdminPut(ctx context.Context, c server.AdminChange) (server.AdminResult, error)
	AdminDelete(ctx context.Context, r fsm.Resource, force bool, note string) (server.AdminResult, error)
	AdminImport(ctx context.Context, bs []fsm.Binding, opt server.ImportOptions) (server.ImportResult, error)
}

// LeaseChange is the body of an add (POST /v1/leases: Resource, DUID and
// IAID required) or an update (PATCH: only the fields to change).
type LeaseChange struct {
	Resource
	DUID              *string `json:"duid,omitempty"` // hex
	IAID              *uint32 `json:"iaid,omitempty"`
	State             string  `json:"state,omitempty"` // ACTIVE, RELEASED, ABANDONED
	PreferredLifetime *uint32 `json:"preferred_lifetime,omitempty"`
	ValidLifetime     *uint32 `json:"valid_lifetime,omitempty"`
	Force             bool    `json:"force,omitempty"`
}

// DeleteResult is the answer to a DELETE.
type DeleteResult struct {
	// Action is "deleted", or "released" when failover turned the delete of
	// an ACTIVE lease into a release owed to the partner.
	Action string `json:"action"`
	Lease  Lease  `json:"lease"`
}

// ImportProblem is one refused record of an import.
type ImportProblem struct {
	Line     int    `json:"line,omitempty"`
	Resource string `json:"resource,omitempty"`
	Error    string `json:"error"`
}

// ImportReport is the outcome of an import.
type ImportReport struct {
	Records  int             `json:"records"`
	Replaced int             `json:"replaced"`
	Applied  int             `json:"applied"`
	Batches  int             `json:"batches"`
	DryRun   bool            `json:"dry_run,omitempty"`
	Refused  int             `json:"refused,omitempty"`
	Problems []ImportProblem `json:"problems,omitempty"`
	Error    string          `json:"error,omitempty"`
	Seconds  float64         `json:"seconds"`
}

// ImportEvent is one line of an import's answer: progress while storing
// ("phase": "store"), then the final report.
type ImportEvent struct {
	Phase  string        `json:"phase"` // "check", "store" or "done"
	Done   int           `json:"done,omitempty"`
	Total  int           `json:"total,omitempty"`
	Report *ImportReport `json:"report,omitempty"`
}

func registerLeaseRoutes(mux *http.ServeMux, b Backend) {
	mux.HandleFunc("GET /v1/leases/{type}/{res...}", func(w http.ResponseWriter, r *http.Request) {
		res, ok := pathResource(w, r)
		if !ok {
			return
		}
		l, found := b.State().Get(res)
		if !found {
			writeErr(w, http.StatusNotFound, fmt.Sprintf("no lease for %v", res))
			return
		}
		writeJSON(w, http.StatusOK, LeaseFromBinding(&l))
	})
	mux.HandleFunc("GET /v1/clients/{duid}", func(w http.ResponseWriter, r *http.Request) {
		duid, err := ParseDUID(r.PathValue("duid"))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		q := r.URL.Query()
		var bs []fsm.Binding
		if s := q.Get("iaid"); s != "" {
			iaid, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				writeErr(w, http.StatusBadRequest, fmt.Sprintf("iaid %q: want 0..4294967295", s))
				return
			}
			ts := []fsm.IAType{fsm.IANA, fsm.IATA, fsm.IAPD}
			if q.Get("type") != "" {
				t, err := fsm.ParseIAType(q.Get("type"))
				if err != nil {
					writeErr(w, http.StatusBadRequest, err.Error())
					return
				}
				ts = []fsm.IAType{t}
			}
			for _, t := range ts {
				bs = append(bs, b.State().Client(duid, t, uint32(iaid))...)
			}
		} else {
			for _, x := range b.State().ClientAll(duid) {
				if q.Get("type") == "" || x.Resource.Type.String() == strings.ToLower(q.Get("type")) {
					bs = append(bs, x)
				}
			}
		}
		out := make([]Lease, 0, len(bs))
		for i := range bs {
			out = append(out, LeaseFromBinding(&bs[i]))
		}
		writeJSON(w, http.StatusOK, out)
	})
	admin := func(w http.ResponseWriter) (LeaseAdmin, bool) {
		a, ok := b.(LeaseAdmin)
		if !ok {
			writeErr(w, http.StatusNotImplemented, "this daemon cannot change leases")
		}
		return a, ok
	}
	mux.HandleFunc("POST /v1/leases", func(w http.ResponseWriter, r *http.Request) {
		a, ok := admin(w)
		if !ok {
			return
		}
		var lc LeaseChange
		if err := decodeBody(r, &lc); err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		res, err := resourceOfJSON(lc.Resource)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		if lc.DUID == nil || lc.IAID == nil {
			writeErr(w, http.StatusBadRequest, "an added lease needs its client: duid and iaid")
			return
		}
		putLease(w, r, a, res, lc, true)
	})
	mux.HandleFunc("PATCH /v1/leases/{type}/{res...}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := admin(w)
		if !ok {
			return
		}
		res, ok := pathResource(w, r)
		if !ok {
			return
		}
		var lc LeaseChange
		if err := decodeBody(r, &lc); err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		putLease(w, r, a, res, lc, false)
	})
	mux.HandleFunc("DELETE /v1/leases/{type}/{res...}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := admin(w)
		if !ok {
			return
		}
		res, ok := pathResource(w, r)
		if !ok {
			return
		}
		force := r.URL.Query().Get("force") == "1"
		note := fmt.Sprintf("delete %v", res)
		if force {
			note += " (forced)"
		}
		out, err := a.AdminDelete(r.Context(), res, force, note)
		if err != nil {
			writeErr(w, adminStatus(err), err.Error())
			return
		}
		dr := DeleteResult{Action: "deleted", Lease: LeaseFromBinding(&out.Binding)}
		if out.Released {
			dr.Action = "released"
		}
		writeJSON(w, http.StatusOK, dr)
	})
	mux.HandleFunc("GET /v1/leases/export", func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r.URL.Query())
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		format, err := ParseLeaseFormat(r.URL.Query().Get("format"))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		v := b.State().View()
		w.Header().Set("X-Tandem-Total", strconv.Itoa(v.Len()))
		if format == FormatJSON {
			writeLeases(w, v, f)
			return
		}
		w.Header().Set("Content-Type", "text/csv")
		bw := bufio.NewWriterSize(w, 256<<10)
		cw, err := newCSVWriter(bw)
		n := 0
		var from fsm.Resource
		if f.After != "" {
			from, _ = fsm.ParseResource(f.After) // checked by parseFilter
		}
		v.Ascend(from, func(b *fsm.Binding) bool {
			if err != nil {
				return false
			}
			if (f.After == "" || b.Resource != from) && f.match(b) {
				err = cw.write(b)
				n++
			}
			return f.Limit == 0 || n < f.Limit
		})
		cw.w.Flush()
		_ = bw.Flush()
	})
	mux.HandleFunc("POST /v1/leases/import", func(w http.ResponseWriter, r *http.Request) {
		a, ok := admin(w)
		if !ok {
			return
		}
		q := r.URL.Query()
		format, err := ParseLeaseFormat(q.Get("format"))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		importLeases(w, r, a, format, q.Get("replace") == "1", q.Get("dry_run") == "1", q.Get("name"))
	})
}

func putLease(w http.ResponseWriter, r *http.Request, a LeaseAdmin, res fsm.Resource, lc LeaseChange, create bool) {
	c := server.AdminChange{Resource: res, Create: create, IAID: lc.IAID, Force: lc.Force}
	var what []string
	if lc.DUID != nil {
		d, err := ParseDUID(*lc.DUID)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		c.DUID = &d
		what = append(what, "duid="+*lc.DUID)
	}
	if lc.IAID != nil {
		what = append(what, fmt.Sprintf("iaid=%d", *lc.IAID))
	}
	if lc.State != "" {
		st, err := fsm.ParseStatus(lc.State)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		c.Status = st
		what = append(what, "state="+st.String())
	}
	if lc.PreferredLifetime != nil {
		d := time.Duration(*lc.PreferredLifetime) * time.Second
		c.Preferred = &d
		what = append(what, fmt.Sprintf("preferred=%ds", *lc.PreferredLifetime))
	}
	if lc.ValidLifetime != nil {
		d := time.Duration(*lc.ValidLifetime) * time.Second
		c.Valid = &d
		what = append(what, fmt.Sprintf("valid=%ds", *lc.ValidLifetime))
	}
	if lc.Force {
		what = append(what, "forced")
	}
	verb := "update"
	if create {
		verb = "add"
	}
	c.Note = strings.TrimSpace(fmt.Sprintf("%s %v %s", verb, res, strings.Join(what, " ")))
	out, err := a.AdminPut(r.Context(), c)
	if err != nil {
		writeErr(w, adminStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, LeaseFromBinding(&out.Binding))
}

// importLeases parses the body, has the admin check and store it, and
// answers with NDJSON progress events and the report.
func importLeases(w http.ResponseWriter, r *http.Request, a LeaseAdmin, format LeaseFormat, replace, dryRun bool, name string) {
	start := time.Now()
	w.Header().Set("Content-Type", "application/x-ndjson")
	fl, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(ev ImportEvent) {
		_ = enc.Encode(ev)
		if fl != nil {
			fl.Flush()
		}
	}
	rep := &ImportReport{DryRun: dryRun}
	done := func() {
		rep.Seconds = time.Since(start).Seconds()
		send(ImportEvent{Phase: "done", Report: rep})
	}
	file, err := ReadLeaseFile(r.Body, format, max(r.ContentLength, 0))
	if err != nil {
		rep.Error = err.Error()
		done()
		return
	}
	rep.Records = len(file.Bindings) + file.Bad
	if file.Bad > 0 {
		rep.Refused = file.Bad
		for _, e := range file.Errors {
			rep.Problems = append(rep.Problems, ImportProblem{Line: e.Line, Error: e.Err.Error()})
		}
		rep.Error = fmt.Sprintf("%d of %d records cannot be read; nothing was changed", file.Bad, rep.Records)
		done()
		return
	}
	total := len(file.Bindings)
	send(ImportEvent{Phase: "check", Total: total})
	last := time.Now()
	res, err := a.AdminImport(r.Context(), file.Bindings, server.ImportOptions{Replace: replace, DryRun: dryRun, Note: name,
		Progress: func(n int) {
			if time.Since(last) >= 100*time.Millisecond || n == total {
				last = time.Now()
				send(ImportEvent{Phase: "store", Done: n, Total: total})
			}
		}})
	rep.Replaced, rep.Applied, rep.Batches, rep.Refused = res.Replaced, res.Applied, res.Batches, res.Refused
	for _, p := range res.Problems {
		rep.Problems = append(rep.Problems, ImportProblem{Line: int(file.Lines[p.Index]), Resource: p.Resource.String(), Error: p.Err.Error()})
	}
	if err != nil {
		rep.Error = err.Error()
	}
	done()
}

// adminStatus is the HTTP status of an admin error.
func adminStatus(err error) int {
	switch {
	case errors.Is(err, server.ErrNoBinding):
		return http.StatusNotFound
	case errors.Is(err, server.ErrLeaseExists), errors.Is(err, server.ErrNotOurs), errors.Is(err, server.ErrBusy):
		return http.StatusConflict
	case errors.Is(err, server.ErrNotInPool), errors.Is(err, server.ErrBadChange):
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

// pathResource reads {type}/{res...} of the URL.
func pathResource(w http.ResponseWriter, r *http.Request) (fsm.Resource, bool) {
	res, err := fsm.ParseResource(r.PathValue("type") + " " + r.PathValue("res"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return res, false
	}
	return res, true
}

func resourceOfJSON(j Resource) (fsm.Resource, error) {
	v := j.Address
	if j.Type == "pd" {
		v = j.Prefix
	}
	if j.Type == "" || v == "" {
		return fsm.Resource{}, errors.New("the lease needs type and address (na) or prefix (pd)")
	}
	return fsm.ParseResource(j.Type + " " + v)
}

// ParseResourceArg parses an operator's ADDRESS or PREFIX argument: a
// prefix (with '/') is a pd resource, an address one of type t ("" = na).
func ParseResourceArg(s, t string) (fsm.Resource, error) {
	if strings.Contains(s, "/") {
		if t != "" && t != "pd" {
			return fsm.Resource{}, fmt.Errorf("%q is a prefix: only --type pd", s)
		}
		return fsm.ParseResource("pd " + s)
	}
	if t == "" {
		t = "na"
	}
	if t == "pd" {
		return fsm.Resource{}, fmt.Errorf("%q: a delegated prefix is written PREFIX/LEN", s)
	}
	return fsm.ParseResource(t + " " + s)
}

func leasePath(r fsm.Resource) string {
	if r.Type == fsm.IAPD {
		return "/v1/leases/pd/" + r.Prefix().String()
	}
	return "/v1/leases/" + r.Type.String() + "/" + r.Addr().String()
}

// --- client ---

// send does one request with an optional JSON body and decodes a 2xx
// answer into out (when not nil); other answers become their error text.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	u := "http://tandem" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if sr, ok := body.(*sizedReader); ok {
		req.ContentLength = sr.n
		req.Body = io.NopCloser(sr.r)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.dialErr(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, &APIError{Status: resp.StatusCode, Msg: e.Error}
		}
		return nil, &APIError{Status: resp.StatusCode, Msg: "daemon answered " + resp.Status}
	}
	return resp, nil
}

// APIError is a refusal by the daemon.
type APIError struct {
	Status int // HTTP status: 404 not found, 409 conflict, 422 not acceptable
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// IsNotFound reports whether err is the daemon saying there is no such lease.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

func (c *Client) sendJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = strings.NewReader(string(b))
	}
	resp, err := c.send(ctx, method, path, q, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("bad answer from daemon: %w", err)
	}
	return nil
}

// Lease returns the lease of r.
func (c *Client) Lease(ctx context.Context, r fsm.Resource) (*Lease, error) {
	var l Lease
	if err := c.sendJSON(ctx, http.MethodGet, leasePath(r), nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// ClientLeases returns the leases of a client (duid in hex), optionally of
// one IA type ("" any) and IAID (nil any).
func (c *Client) ClientLeases(ctx context.Context, duid, typ string, iaid *uint32) ([]Lease, error) {
	q := url.Values{}
	if typ != "" {
		q.Set("type", typ)
	}
	if iaid != nil {
		q.Set("iaid", strconv.FormatUint(uint64(*iaid), 10))
	}
	out := []Lease{}
	err := c.sendJSON(ctx, http.MethodGet, "/v1/clients/"+url.PathEscape(duid), q, nil, &out)
	return out, err
}

// AddLease adds a lease (lc has the resource, duid and iaid).
func (c *Client) AddLease(ctx context.Context, lc LeaseChange) (*Lease, error) {
	var l Lease
	if err := c.sendJSON(ctx, http.MethodPost, "/v1/leases", nil, lc, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// UpdateLease changes the lease of r.
func (c *Client) UpdateLease(ctx context.Context, r fsm.Resource, lc LeaseChange) (*Lease, error) {
	var l Lease
	if err := c.sendJSON(ctx, http.MethodPatch, leasePath(r), nil, lc, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// DeleteLease deletes (or under failover releases) the lease of r.
func (c *Client) DeleteLease(ctx context.Context, r fsm.Resource, force bool) (*DeleteResult, error) {
	q := url.Values{}
	if force {
		q.Set("force", "1")
	}
	var dr DeleteResult
	if err := c.sendJSON(ctx, http.MethodDelete, leasePath(r), q, nil, &dr); err != nil {
		return nil, err
	}
	return &dr, nil
}

// Export streams the leases matching f in format to w. total, when not
// nil, is called first with the number of bindings in the table.
func (c *Client) Export(ctx context.Context, f LeaseFilter, format LeaseFormat, w io.Writer, total func(int)) error {
	q := filterQuery(f)
	q.Set("format", string(format))
	resp, err := c.send(ctx, http.MethodGet, "/v1/leases/export", q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if total != nil {
		n, _ := strconv.Atoi(resp.Header.Get("X-Tandem-Total"))
		total(n)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("export interrupted: %w", err)
	}
	return nil
}

func filterQuery(f LeaseFilter) url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("type", f.Type)
	set("state", f.State)
	set("duid", f.DUID)
	set("after", f.After)
	if f.Subnet.IsValid() {
		q.Set("subnet", f.Subnet.String())
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// ImportRequest says how to import a lease file.
type ImportRequest struct {
	Format  LeaseFormat
	Replace bool
	DryRun  bool
	Name    string // for the log notes
	Size    int64  // the body's length, if known (the daemon sizes its buffers by it)
}

// Import sends a lease file and returns the daemon's report (its Error set
// when the import was refused or stopped). progress, when not nil, gets
// the store-phase events.
func (c *Client) Import(ctx context.Context, body io.Reader, ir ImportRequest, progress func(ImportEvent)) (*ImportReport, error) {
	q := url.Values{"format": {string(ir.Format)}}
	if ir.Replace {
		q.Set("replace", "1")
	}
	if ir.DryRun {
		q.Set("dry_run", "1")
	}
	if ir.Name != "" {
		q.Set("name", ir.Name)
	}
	if ir.Size > 0 {
		body = &sizedReader{r: body, n: ir.Size}
	}
	resp, err := c.send(ctx, http.MethodPost, "/v1/leases/import", q, body, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev ImportEvent
		if err := dec.Decode(&ev); err != nil {
			return nil, fmt.Errorf("the daemon's answer ended early (%v): check `tandem lease list` and its log", err)
		}
		if ev.Report != nil {
			return ev.Report, nil
		}
		if progress != nil {
			progress(ev)
		}
	}
}

// sizedReader is a request body of known length.
type sizedReader struct {
	r io.Reader
	n int64
}

func (s *sizedReader) Read(p []byte) (int, error) { return s.r.Read(p) }
