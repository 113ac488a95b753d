package control

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

// Lease files: what `tandem lease export` writes and `tandem lease import`
// reads. Two formats hold every field of a binding:
//
//   - json: an array of Lease objects, one per line (exactly what
//     `tandem lease list --json` prints); import also takes one object per
//     line without the brackets (NDJSON). rev, owed and valid_until are
//     output only.
//   - csv: a header line, then one binding per line. The columns are
//     CSVColumns; the names that Kea's memfile lease6 CSV also uses have
//     Kea's meaning (address, prefix_len, duid, iaid, valid_lifetime,
//     pref_lifetime, expire) so that scripts written for Kea read them;
//     type and state are names ("na", "ACTIVE"), times are Unix seconds
//     (0 = unset), flags are separated by "|". Import finds columns by
//     name (any order); address, duid, iaid and state are required, the
//     others default to 0 / empty / "na".

// CSVColumns are the columns of a CSV lease file, in export order.
var CSVColumns = []string{"address", "prefix_len", "type", "duid", "iaid", "state", "valid_lifetime", "pref_lifetime",
	"expire", "cltt", "start_time_of_state", "partner_lifetime", "acked_partner_lifetime", "expiration_time",
	"partner_raw_cltt", "flags", "rev"}

// LeaseFormat is a lease file format.
type LeaseFormat string

// Lease file formats.
const (
	FormatCSV  LeaseFormat = "csv"
	FormatJSON LeaseFormat = "json"
)

// ParseLeaseFormat parses "csv" or "json".
func ParseLeaseFormat(s string) (LeaseFormat, error) {
	switch f := LeaseFormat(strings.ToLower(s)); f {
	case FormatCSV, FormatJSON:
		return f, nil
	}
	return "", fmt.Errorf("format %q: want csv or json", s)
}

// csvWriter writes bindings as CSV lines.
type csvWriter struct {
	w   *csv.Writer
	rec []string
}

func newCSVWriter(w io.Writer) (*csvWriter, error) {
	cw := &csvWriter{w: csv.NewWriter(w), rec: make([]string, len(CSVColumns))}
	return cw, cw.w.Write(CSVColumns)
}

func (cw *csvWriter) write(b *fsm.Binding) error {
	r := cw.rec
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	u := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
	r[0], r[1], r[2] = b.Resource.Addr().String(), strconv.Itoa(int(b.Resource.Len)), b.Resource.Type.String()
	r[3], r[4], r[5] = b.DUIDHex(), u(b.IAID), b.Status.String()
	r[6], r[7], r[8] = u(b.ValidLifetime), u(b.PreferredLifetime), i64(b.StateExpirationTime)
	r[9], r[10], r[11] = i64(b.CLTT), i64(b.StartTimeOfState), i64(b.PartnerLifetime)
	r[12], r[13], r[14] = i64(b.AckedPartnerLifetime), i64(b.ExpirationTime), i64(b.PartnerRawCLTT)
	r[15], r[16] = strings.Join(b.Flags.Names(), "|"), strconv.FormatUint(b.Rev, 10)
	return cw.w.Write(r)
}

// LineError is one bad record of a lease file.
type LineError struct {
	Line int
	Err  error
}

// LeaseFile is a parsed lease file: the bindings in file order and the line
// each one starts on.
type LeaseFile struct {
	Bindings []fsm.Binding
	Lines    []int32
	// Errors holds the first maxLineErrors bad records; Bad counts them all.
	Errors []LineError
	Bad    int
}

const maxLineErrors = 20

func (f *LeaseFile) bad(line int, err error) {
	f.Bad++
	if len(f.Errors) < maxLineErrors {
		f.Errors = append(f.Errors, LineError{Line: line, Err: err})
	}
}

// ReadLeaseFile parses a whole lease file. Bad records are collected (with
// their line numbers) and parsing goes on; a file that cannot be read at
// all (bad CSV header, broken JSON syntax) is an error. size, if known
// (else 0), is the file's size: it sizes the result once instead of
// growing it record by record.
func ReadLeaseFile(r io.Reader, format LeaseFormat, size int64) (*LeaseFile, error) {
	f := &LeaseFile{}
	if n := size / minRecordBytes; n > 0 {
		n = min(n, 1<<24)
		f.Bindings, f.Lines = make([]fsm.Binding, 0, n), make([]int32, 0, n)
	}
	if format == FormatCSV {
		return readCSV(r, f)
	}
	return readJSON(r, f)
}

// minRecordBytes is less than the shortest useful record (an address,
// a DUID, IAID and state are about 60 bytes in CSV).
const minRecordBytes = 48

func readCSV(r io.Reader, f *LeaseFile) (*LeaseFile, error) {
	cr := csv.NewReader(bufio.NewReaderSize(r, 1<<20))
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("line 1: no CSV header: %w", err)
	}
	// col[i] is the record index of CSVColumns[i], -1 when absent.
	col := make([]int, len(CSVColumns))
	for i, name := range CSVColumns {
		col[i] = -1
		for j, h := range head {
			if strings.EqualFold(strings.TrimSpace(h), name) {
				col[i] = j
			}
		}
	}
	for _, need := range []int{colAddress, colDUID, colIAID, colState} {
		if col[need] < 0 {
			return nil, fmt.Errorf("line 1: the CSV header has no %q column (columns: %s)", CSVColumns[need], strings.Join(CSVColumns, ","))
		}
	}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return f, nil
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				f.bad(pe.StartLine, pe.Err)
				continue
			}
			return nil, err
		}
		get := func(c int) string {
			if i := col[c]; i >= 0 && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		b, err := csvBinding(get)
		if err != nil {
			f.bad(line, err)
			continue
		}
		f.Bindings = append(f.Bindings, b)
		f.Lines = append(f.Lines, int32(line))
	}
}

// Indexes into CSVColumns.
const (
	colAddress = iota
	colPrefixLen
	colType
	colDUID
	colIAID
	colState
	colValid
	colPref
	colExpire // first time column
	colCLTT
	colStartOfState
	colPartnerLifetime
	colAckedPartnerLifetime
	colExpirationTime
	colPartnerRawCLTT // last time column
	colFlags
	colRev
)

func csvBinding(get func(int) string) (fsm.Binding, error) {
	var b fsm.Binding
	var err error
	typ := fsm.IANA
	if s := get(colType); s != "" {
		if typ, err = fsm.ParseIAType(s); err != nil {
			return b, err
		}
	}
	plen := 128
	if s := get(colPrefixLen); s != "" {
		if plen, err = strconv.Atoi(s); err != nil || plen < 0 || plen > 128 {
			return b, fmt.Errorf("prefix_len %q: want 0..128", s)
		}
	}
	if b.Resource, err = resourceOf(typ, get(colAddress), plen); err != nil {
		return b, err
	}
	if err := fillCommon(&b, get(colDUID), get(colState)); err != nil {
		return b, err
	}
	iaid, err := strconv.ParseUint(get(colIAID), 10, 32)
	if err != nil {
		return b, fmt.Errorf("iaid %q: want 0..4294967295", get(colIAID))
	}
	b.IAID = uint32(iaid)
	for c, to := range [...]*uint32{colValid: &b.ValidLifetime, colPref: &b.PreferredLifetime} {
		if to == nil {
			continue
		}
		if s := get(c); s != "" {
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return b, fmt.Errorf("%s %q: want seconds", CSVColumns[c], s)
			}
			*to = uint32(v)
		}
	}
	times := [...]*int64{&b.StateExpirationTime, &b.CLTT, &b.StartTimeOfState, &b.PartnerLifetime,
		&b.AckedPartnerLifetime, &b.ExpirationTime, &b.PartnerRawCLTT}
	for k, to := range times {
		c := colExpire + k
		if s := get(c); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				return b, fmt.Errorf("%s %q: want Unix seconds", CSVColumns[c], s)
			}
			*to = v
		}
	}
	if s := get(colFlags); s != "" {
		if b.Flags, err = parseFlags(strings.Split(s, "|")); err != nil {
			return b, err
		}
	}
	return b, nil
}

// resourceOf builds a resource of type t from an address (or prefix start) and length.
func resourceOf(t fsm.IAType, addr string, plen int) (fsm.Resource, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return fsm.Resource{}, fmt.Errorf("address %q: not an IPv6 address", addr)
	}
	if t != fsm.IAPD {
		if plen != 128 {
			return fsm.Resource{}, fmt.Errorf("an %s address has prefix_len 128, not %d", t, plen)
		}
		return fsm.AddrResource(t, a), nil
	}
	p := netip.PrefixFrom(a, plen)
	if p.Masked() != p {
		return fsm.Resource{}, fmt.Errorf("prefix %v has bits set beyond /%d", p, plen)
	}
	return fsm.PrefixResource(p), nil
}

// ParseDUID parses a DUID in hex, with or without ':' or '-' separators.
func ParseDUID(s string) (string, error) {
	h := s
	if strings.ContainsAny(s, ":-") {
		h = strings.NewReplacer(":", "", "-", "").Replace(s)
	}
	d, err := hex.DecodeString(h)
	if err != nil || len(d) == 0 || len(d) > fsm.MaxDUIDLen {
		return "", fmt.Errorf("duid %q: want 1 to %d bytes of hex", s, fsm.MaxDUIDLen)
	}
	return string(d), nil
}

func fillCommon(b *fsm.Binding, duid, state string) error {
	st, err := fsm.ParseStatus(state)
	if err != nil {
		return err
	}
	b.Status = st
	if duid != "" {
		if b.DUID, err = ParseDUID(duid); err != nil {
			return err
		}
	}
	if st == fsm.StatusActive && b.DUID == "" {
		return errors.New("an ACTIVE lease needs a duid")
	}
	return nil
}

func parseFlags(names []string) (fsm.Flags, error) {
	var f fsm.Flags
	for _, n := range names {
		switch strings.TrimSpace(n) {
		case "update-owed":
			f |= fsm.FlagUpdateOwed
		case "resent":
			f |= fsm.FlagResent
		case "":
		default:
			return 0, fmt.Errorf("unknown flag %q (update-owed, resent)", n)
		}
	}
	return f, nil
}

// BindingOf converts the JSON form back to a binding (Rev, Owed and
// ValidUntil are ignored: they are derived).
func BindingOf(l *Lease) (fsm.Binding, error) {
	var b fsm.Binding
	t, err := fsm.ParseIAType(l.Type)
	if err != nil {
		return b, err
	}
	if t == fsm.IAPD {
		p, err := netip.ParsePrefix(l.Prefix)
		if err != nil {
			return b, fmt.Errorf("prefix %q: not a prefix", l.Prefix)
		}
		b.Resource, err = resourceOf(t, p.Addr().String(), p.Bits())
		if err != nil {
			return b, err
		}
	} else if b.Resource, err = resourceOf(t, l.Address, 128); err != nil {
		return b, err
	}
	if err := fillCommon(&b, l.DUID, l.State); err != nil {
		return b, err
	}
	b.IAID, b.PreferredLifetime, b.ValidLifetime = l.IAID, l.PreferredLifetime, l.ValidLifetime
	for _, t := range []struct {
		name, v string
		to      *int64
	}{{"cltt", l.CLTT, &b.CLTT}, {"start_time_of_state", l.StartTimeOfState, &b.StartTimeOfState},
		{"state_expiration_time", l.StateExpirationTime, &b.StateExpirationTime},
		{"partner_lifetime", l.PartnerLifetime, &b.PartnerLifetime},
		{"acked_partner_lifetime", l.AckedPartnerLifetime, &b.AckedPartnerLifetime},
		{"expiration_time", l.ExpirationTime, &b.ExpirationTime},
		{"partner_raw_clt_time", l.PartnerRawCLTTime, &b.PartnerRawCLTT}} {
		if t.v == "" {
			continue
		}
		tm, err := time.Parse(time.RFC3339, t.v)
		if err != nil {
			return b, fmt.Errorf("%s %q: want RFC 3339", t.name, t.v)
		}
		*t.to = tm.Unix()
	}
	if b.Flags, err = parseFlags(l.Flags); err != nil {
		return b, err
	}
	return b, nil
}

// newlines records the offsets of the newlines read through it, so that a
// JSON decoder's input offset can be turned into a line number.
type newlines struct {
	r   io.Reader
	off int64
	at  []int64
}

func (n *newlines) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	for i, c := range p[:k] {
		if c == '\n' {
			n.at = append(n.at, n.off+int64(i))
		}
	}
	n.off += int64(k)
	return k, err
}

// line returns the 1-based line of offset off.
func (n *newlines) line(off int64) int {
	return sort.Search(len(n.at), func(i int) bool { return n.at[i] >= off }) + 1
}

func readJSON(r io.Reader, f *LeaseFile) (*LeaseFile, error) {
	nl := &newlines{r: r}
	br := bufio.NewReaderSize(nl, 1<<20)
	skipped := int64(0)
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			return f, nil // empty: no leases
		}
		if err != nil {
			return nil, err
		}
		if !isBlank(c) {
			_ = br.UnreadByte()
			if c != '[' && c != '{' {
				return nil, fmt.Errorf("line %d: want a JSON array of leases or one lease object per line", nl.line(skipped))
			}
			break
		}
		skipped++
	}
	dec := json.NewDecoder(br)
	// start returns the line where the next value begins: the decoder's
	// offset is the end of the previous token, then blanks and a comma.
	start := func() int {
		off := skipped + dec.InputOffset()
		if buf, ok := dec.Buffered().(*bytes.Reader); ok {
			for {
				c, err := buf.ReadByte()
				if err != nil || !(isBlank(c) || c == ',') {
					break
				}
				off++
			}
		}
		return nl.line(off)
	}
	arr := false
	if c, _ := br.Peek(1); len(c) == 1 && c[0] == '[' {
		arr = true
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
	}
	for dec.More() {
		line := start()
		var l Lease
		if err := dec.Decode(&l); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				f.bad(line, fmt.Errorf("field %s: %v", te.Field, err))
				continue
			}
			return nil, fmt.Errorf("line %d: not JSON: %w", line, err)
		}
		f.add(line, &l)
	}
	if arr {
		if t, err := dec.Token(); err != nil || t != json.Delim(']') {
			return nil, fmt.Errorf("line %d: the lease array does not end with ]", start())
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("line %d: data after the leases", start())
	}
	return f, nil
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func (f *LeaseFile) add(line int, l *Lease) {
	b, err := BindingOf(l)
	if err != nil {
		f.bad(line, err)
		return
	}
	f.Bindings = append(f.Bindings, b)
	f.Lines = append(f.Lines, int32(line))
}
