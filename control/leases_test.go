package control

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/internal/clock"
	"github.com/tandem-dhcp/tandem/raftstore"
	"github.com/tandem-dhcp/tandem/server"
)

// adminBackend is a real DHCP server on a real raftstore, as the daemon has.
type adminBackend struct {
	*server.Server
	st *raftstore.Store
}

func (b adminBackend) State() *fsm.State { return b.st.State() }
func (b adminBackend) Status() Status    { return Status{Version: "test"} }

var lt0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newAdminBackend(t testing.TB) adminBackend {
	t.Helper()
	clk := clock.NewFake(lt0)
	st, err := raftstore.Open(raftstore.Config{DataDir: t.TempDir(), Clock: clk, OpenTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Clock: clk, Subnets: []server.SubnetConfig{{
		Prefix:            netip.MustParsePrefix("2001:db8:1::/64"),
		Pools:             []server.AddressRange{{First: netip.MustParseAddr("2001:db8:1::1000"), Last: netip.MustParseAddr("2001:db8:1::ffff:ffff")}},
		PDPools:           []server.PDPool{{Prefix: netip.MustParsePrefix("2001:db8:8000::/40"), DelegatedLength: 56}},
		PreferredLifetime: 2 * time.Hour, ValidLifetime: 3 * time.Hour,
	}}}, st)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return adminBackend{Server: srv, st: st}
}

func u32(v uint32) *uint32 { return &v }
func str(v string) *string { return &v }

func TestLeaseGetAddUpdateDelete(t *testing.T) {
	b := newAdminBackend(t)
	c := NewClient(serveTB(t, b))
	ctx := context.Background()
	r, _ := ParseResourceArg("2001:db8:1::1001", "")

	if _, err := c.Lease(ctx, r); !IsNotFound(err) || !strings.Contains(err.Error(), "no lease for na 2001:db8:1::1001") {
		t.Fatalf("get before add: %v", err)
	}
	l, err := c.AddLease(ctx, LeaseChange{Resource: ResourceOf(r), DUID: str("00:03:00:01:aa:bb"), IAID: u32(7), ValidLifetime: u32(600)})
	if err != nil {
		t.Fatal(err)
	}
	if l.State != "ACTIVE" || l.DUID != "00030001aabb" || l.IAID != 7 || l.ValidLifetime != 600 || l.PreferredLifetime != 600 ||
		l.ValidUntil != "2026-03-01T12:10:00Z" || l.Rev == 0 {
		t.Fatalf("added: %+v", l)
	}
	got, err := c.Lease(ctx, r)
	if err != nil || got.Rev != l.Rev || got.DUID != l.DUID {
		t.Fatalf("get: %+v, %v", got, err)
	}
	// By client, through the fsm client index.
	for _, tc := range []struct {
		typ  string
		iaid *uint32
		n    int
	}{{"", nil, 1}, {"na", u32(7), 1}, {"", u32(7), 1}, {"pd", nil, 0}, {"", u32(8), 0}} {
		ls, err := c.ClientLeases(ctx, "00030001aabb", tc.typ, tc.iaid)
		if err != nil || len(ls) != tc.n {
			t.Errorf("client leases type %q iaid %v: %d, %v", tc.typ, tc.iaid, len(ls), err)
		}
	}
	for _, tc := range []struct {
		lc   LeaseChange
		code int
		want string
	}{
		{LeaseChange{Resource: ResourceOf(r), DUID: str("01"), IAID: u32(1)}, http.StatusConflict, "lease exists"},
		{LeaseChange{Resource: Resource{Type: "na", Address: "2001:db8:2::1"}, DUID: str("01"), IAID: u32(1)}, http.StatusUnprocessableEntity, "not in any configured pool"},
		{LeaseChange{Resource: Resource{Type: "na", Address: "2001:db8:1::1002"}, DUID: str("zz"), IAID: u32(1)}, http.StatusBadRequest, "hex"},
		{LeaseChange{Resource: Resource{Type: "na", Address: "2001:db8:1::1002"}, IAID: u32(1)}, http.StatusBadRequest, "duid and iaid"},
		{LeaseChange{Resource: Resource{Type: "xx", Address: "2001:db8:1::1002"}, DUID: str("01"), IAID: u32(1)}, http.StatusBadRequest, "unknown IA type"},
		{LeaseChange{Resource: Resource{Type: "na", Address: "2001:db8:1::1002"}, DUID: str("01"), IAID: u32(1), State: "bogus"}, http.StatusBadRequest, "unknown binding status"},
	} {
		_, err := c.AddLease(ctx, tc.lc)
		ae, ok := err.(*APIError)
		if !ok || ae.Status != tc.code || !strings.Contains(ae.Msg, tc.want) {
			t.Errorf("add %+v: %v, want %d %q", tc.lc, err, tc.code, tc.want)
		}
	}
	up, err := c.UpdateLease(ctx, r, LeaseChange{ValidLifetime: u32(7200), IAID: u32(9)})
	if err != nil || up.ValidLifetime != 7200 || up.IAID != 9 || up.Rev <= l.Rev {
		t.Fatalf("update: %+v, %v", up, err)
	}
	if _, err := c.UpdateLease(ctx, r, LeaseChange{State: "EXPIRED"}); err == nil || !strings.Contains(err.Error(), "ACTIVE, RELEASED or ABANDONED") {
		t.Fatalf("update to EXPIRED: %v", err)
	}
	missing, _ := ParseResourceArg("2001:db8:1::1003", "")
	if _, err := c.UpdateLease(ctx, missing, LeaseChange{IAID: u32(1)}); !IsNotFound(err) {
		t.Fatalf("update of a missing lease: %v", err)
	}
	pdr, _ := ParseResourceArg("2001:db8:8000:100::/56", "")
	pl, err := c.AddLease(ctx, LeaseChange{Resource: ResourceOf(pdr), DUID: str("0001"), IAID: u32(1)})
	if err != nil || pl.Prefix != "2001:db8:8000:100::/56" || pl.ValidLifetime != 3*3600 {
		t.Fatalf("add prefix: %+v, %v", pl, err)
	}
	if got, err := c.Lease(ctx, pdr); err != nil || got.Prefix != pl.Prefix {
		t.Fatalf("get prefix: %+v, %v", got, err)
	}
	dr, err := c.DeleteLease(ctx, r, false)
	if err != nil || dr.Action != "deleted" || dr.Lease.IAID != 9 {
		t.Fatalf("delete: %+v, %v", dr, err)
	}
	if _, err := c.DeleteLease(ctx, r, false); !IsNotFound(err) {
		t.Fatalf("delete again: %v", err)
	}

	// A backend that cannot change leases says so.
	ro := NewClient(serveTB(t, newBackend(t)))
	if _, err := ro.AddLease(ctx, LeaseChange{Resource: ResourceOf(r), DUID: str("01"), IAID: u32(1)}); err == nil || !strings.Contains(err.Error(), "cannot change leases") {
		t.Fatalf("read-only backend: %v", err)
	}
	// No daemon.
	if _, err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Lease(ctx, r); err == nil || !strings.Contains(err.Error(), "no tandem daemon is listening") {
		t.Fatalf("no daemon: %v", err)
	}
}

// fill stores n bindings of every kind (NA in several states, PD) through AdminImport.
func fill(t testing.TB, b adminBackend, n int) {
	t.Helper()
	bs := make([]fsm.Binding, 0, n)
	base := netip.MustParseAddr("2001:db8:1::1:0").As16()
	for i := 0; len(bs) < n; i++ {
		var bd fsm.Binding
		if i%20 == 19 { // at most 65536 /56s in the /40
			k := i / 20
			bd.Resource = fsm.PrefixResource(netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x80, byte(k >> 8), byte(k)}), 56))
		} else {
			a := base
			v := i + 0x10000
			a[12], a[13], a[14], a[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
			bd.Resource = fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a))
		}
		bd.Status = []fsm.Status{fsm.StatusActive, fsm.StatusActive, fsm.StatusFree, fsm.StatusReleased, fsm.StatusAbandoned}[i%5]
		if bd.Status != fsm.StatusFree || i%2 == 0 {
			bd.DUID = fmt.Sprintf("\x00\x03\x00\x01%08x", i)
		}
		bd.IAID, bd.PreferredLifetime, bd.ValidLifetime = uint32(i), 1800, 3600
		bd.CLTT, bd.StartTimeOfState, bd.StateExpirationTime = lt0.Unix()-int64(i%1000), lt0.Unix(), lt0.Unix()+3600+int64(i)
		if i%7 == 0 {
			bd.AckedPartnerLifetime, bd.ExpirationTime, bd.PartnerRawCLTT = lt0.Unix()+100, lt0.Unix()+200, lt0.Unix()-5
		}
		bs = append(bs, bd)
	}
	if res, err := b.AdminImport(context.Background(), bs, server.ImportOptions{}); err != nil {
		t.Fatal(err, res.Problems)
	}
}

// withoutRev drops what differs between two servers holding the same
// bindings: the log index that wrote each (the last CSV column, "rev" in JSON).
func withoutRev(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if i := strings.Index(line, `,"rev":`); i >= 0 {
			j := i + len(`,"rev":`)
			for j < len(line) && line[j] >= '0' && line[j] <= '9' {
				j++
			}
			line = line[:i] + line[j:]
		} else if i := strings.LastIndexByte(line, ','); i >= 0 && !strings.HasPrefix(line, "address,") {
			line = line[:i] + "\n"
		}
		b.WriteString(line)
	}
	return b.String()
}

func TestExportImportRoundTrip(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	src := newAdminBackend(t)
	fill(t, src, n)
	sc := NewClient(serveTB(t, src))
	ctx := context.Background()
	for _, format := range []LeaseFormat{FormatCSV, FormatJSON} {
		t.Run(string(format), func(t *testing.T) {
			var out bytes.Buffer
			total := -1
			if err := sc.Export(ctx, LeaseFilter{}, format, &out, func(n int) { total = n }); err != nil {
				t.Fatal(err)
			}
			if total != n || bytes.Count(out.Bytes(), []byte("\n")) != n+1 {
				t.Fatalf("export: total %d, %d lines for %d bindings", total, bytes.Count(out.Bytes(), []byte("\n")), n)
			}
			dst := newAdminBackend(t)
			dc := NewClient(serveTB(t, dst))
			var events int
			rep, err := dc.Import(ctx, bytes.NewReader(out.Bytes()), ImportRequest{Format: format, Name: "rt", Size: int64(out.Len())},
				func(ev ImportEvent) { events++ })
			if err != nil || rep.Error != "" || rep.Applied != n || rep.Batches != (n+999)/1000 {
				t.Fatalf("import: %+v, %v", rep, err)
			}
			if events < 2 {
				t.Errorf("%d progress events", events)
			}
			var again bytes.Buffer
			if err := dc.Export(ctx, LeaseFilter{}, format, &again, nil); err != nil {
				t.Fatal(err)
			}
			if a, b := withoutRev(out.String()), withoutRev(again.String()); a != b {
				i := 0
				for i < len(a) && i < len(b) && a[i] == b[i] {
					i++
				}
				t.Fatalf("export after import differs at byte %d:\n%.300s\nvs\n%.300s", i, a[max(i-100, 0):], b[max(i-100, 0):])
			}
			var d1, d2 strings.Builder
			src.State().View().Dump(&d1)
			dst.State().View().Dump(&d2)
			strip := regexp.MustCompile(` rev=\d+`)
			a := strings.SplitN(strip.ReplaceAllString(d1.String(), ""), "server-duid", 2)[0]
			b := strings.SplitN(strip.ReplaceAllString(d2.String(), ""), "server-duid", 2)[0]
			if a != b {
				t.Fatal("the imported binding table differs from the exported one")
			}
			// Importing it again refuses, listing the first conflicts by line.
			rep, err = dc.Import(ctx, bytes.NewReader(out.Bytes()), ImportRequest{Format: format}, nil)
			firstLine := 2 // after the CSV header; a JSON export's first lease is on the '[' line
			if format == FormatJSON {
				firstLine = 1
			}
			if err != nil || rep.Refused != n || len(rep.Problems) != 20 || rep.Problems[0].Line != firstLine || !strings.Contains(rep.Error, "nothing was changed") ||
				!strings.Contains(rep.Problems[0].Error, "--replace") {
				t.Fatalf("second import: %+v, %v", rep, err)
			}
		})
	}
}

func TestImportErrorsNameTheLine(t *testing.T) {
	b := newAdminBackend(t)
	c := NewClient(serveTB(t, b))
	ctx := context.Background()
	head := strings.Join(CSVColumns, ",") + "\n"
	row := func(addr, duid, iaid, state string) string {
		return fmt.Sprintf("%s,128,na,%s,%s,%s,3600,1800,1772370000,0,0,0,0,0,0,,0\n", addr, duid, iaid, state)
	}
	csvFile := head +
		row("2001:db8:1::1000", "0001", "1", "ACTIVE") + // line 2: good
		row("2001:db8:1::zz", "0001", "1", "ACTIVE") + // 3: address
		row("2001:db8:1::1001", "0001", "x", "ACTIVE") + // 4: iaid
		row("2001:db8:1::1002", "", "1", "ACTIVE") + // 5: ACTIVE without duid
		row("2001:db8:1::1003", "0001", "1", "SLEEPING") + // 6: state
		"2001:db8:1::1004,128,na,0001,1,ACTIVE,3600,1800,-5,0,0,0,0,0,0,,0\n" + // 7: expire
		row("2001:db8:1::1005", "0001", "1", "FREE") // 8: good
	for _, tc := range []struct {
		name, body string
		format     LeaseFormat
		lines      []int
		texts      []string
	}{
		{"csv syntax", csvFile, FormatCSV, []int{3, 4, 5, 6, 7}, []string{"not an IPv6 address", "iaid", "needs a duid", "unknown binding status", "expire"}},
		{"csv pool and duplicate", head + row("2001:db8:1::1000", "0001", "1", "ACTIVE") + row("2001:db8:9::1", "0001", "1", "ACTIVE") +
			row("2001:db8:1::1000", "0002", "2", "ACTIVE"), FormatCSV, []int{3, 4}, []string{"not in any configured pool", "also record 1"}},
		{"json array", `[{"type":"na","address":"2001:db8:1::1000","state":"ACTIVE","duid":"01","iaid":1}
,{"type":"na","address":"2001:db8:1::1001","state":"ACTIVE","duid":"01","iaid":"one"}
,{"type":"pd","prefix":"2001:db8:8000:101::/56","state":"ACTIVE","duid":"01","iaid":1}
,{"type":"na","address":"2001:db8:1::1003","state":"ACTIVE","duid":"01","iaid":1,"cltt":"yesterday"}
]
`, FormatJSON, []int{2, 3, 4}, []string{"iaid", "bits set beyond", "cltt"}},
		{"json pretty", "[\n  {\n    \"type\": \"na\", \"address\": \"2001:db8:1::1000\", \"state\": \"ACTIVE\", \"duid\": \"01\", \"iaid\": 1\n  },\n  {\n    \"type\": \"na\", \"address\": \"2001:db8:1::1001\", \"state\": \"NOPE\", \"duid\": \"01\", \"iaid\": 1\n  }\n]\n",
			FormatJSON, []int{5}, []string{"unknown binding status"}}, // the line of its '{'

		{"ndjson", `{"type":"na","address":"2001:db8:1::1000","state":"ACTIVE","duid":"01","iaid":1}
{"type":"na","address":"2001:db8:1::1000","state":"ACTIVE","duid":"01","iaid":1}
`, FormatJSON, []int{2}, []string{"also record 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx, _, _ := b.State().Applied()
			rep, err := c.Import(ctx, strings.NewReader(tc.body), ImportRequest{Format: tc.format}, nil)
			if err != nil || rep.Error == "" || len(rep.Problems) != len(tc.lines) {
				t.Fatalf("import: %+v, %v", rep, err)
			}
			for i, p := range rep.Problems {
				if p.Line != tc.lines[i] || !strings.Contains(p.Error, tc.texts[i]) {
					t.Errorf("problem %d: line %d %q, want line %d %q", i, p.Line, p.Error, tc.lines[i], tc.texts[i])
				}
			}
			if i2, _, _ := b.State().Applied(); i2 != idx || b.State().Stats().Bindings != 0 {
				t.Fatal("a refused import changed something")
			}
		})
	}
	for _, tc := range []struct{ body, want string }{
		{"address,duid\n", `no "iaid" column`},
		{"<xml/>", "line 1: want a JSON array"},
		{"[{\"type\":\"na\"}", "does not end with ]"},
		{"[{\"type\":", "not JSON"},
	} {
		format := FormatCSV
		if !strings.HasPrefix(tc.body, "address") {
			format = FormatJSON
		}
		rep, err := c.Import(ctx, strings.NewReader(tc.body), ImportRequest{Format: format}, nil)
		if err != nil || !strings.Contains(rep.Error, tc.want) {
			t.Errorf("import %q: %+v, %v; want %q", tc.body, rep, err, tc.want)
		}
	}
}

// BenchmarkImport1M measures `lease import` of 1,000,000 bindings through
// the control API into a real store (fsync per batch), CSV and JSON: the
// daemon's parse, check and store of the whole file.
//
//	go test -run '^$' -bench BenchmarkImport1M -benchtime 1x -count 3 ./control/
func BenchmarkImport1M(b *testing.B) {
	const n = 1_000_000
	src := newAdminBackend(b)
	fill(b, src, n)
	sc := NewClient(serveTB(b, src))
	for _, format := range []LeaseFormat{FormatCSV, FormatJSON} {
		var file bytes.Buffer
		if err := sc.Export(context.Background(), LeaseFilter{}, format, &file, nil); err != nil {
			b.Fatal(err)
		}
		b.Run(string(format), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dst := newAdminBackend(b)
				dc := NewClient(serveTB(b, dst))
				b.StartTimer()
				start, cpu0 := time.Now(), cpuTime()
				rep, err := dc.Import(context.Background(), bytes.NewReader(file.Bytes()), ImportRequest{Format: format, Size: int64(file.Len())}, nil)
				if err != nil || rep.Error != "" || rep.Applied != n {
					b.Fatalf("%+v %v", rep, err)
				}
				b.ReportMetric(float64(n)/time.Since(start).Seconds(), "bindings/s")
				b.ReportMetric((cpuTime() - cpu0).Seconds(), "cpu-s")
				b.ReportMetric(float64(file.Len())/n, "bytes/binding")
			}
		})
	}
	start := time.Now()
	if err := sc.Export(context.Background(), LeaseFilter{}, FormatCSV, discard{}, nil); err != nil {
		b.Fatal(err)
	}
	b.Logf("export of %d bindings as CSV: %v", n, time.Since(start))
}

// cpuTime is the process's user+system CPU time (the machine is shared:
// wall time alone says little).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// serveTB is serve for tests and benchmarks.
func serveTB(t testing.TB, b Backend) string {
	path := filepath.Join(t.TempDir(), "tandem.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, b) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}
