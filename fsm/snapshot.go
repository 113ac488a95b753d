package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// Snapshot format (version 1), all integers big-endian:
//
//	header:   [8]byte "TANDEMSN", u16 version, u16 reserved (0),
//	          u64 raft index, u64 raft term, i64 time of the last command (Unix ns),
//	          i64 created (Unix ns), u64 binding count,
//	          u16 length + server DUID, u16 length + endpoint record,
//	          u32 CRC-32C of the header bytes before it
//	records:  binding count times: uvarint length, then resource, binding
//	          fields (as in commands) and uvarint Rev; in strictly increasing
//	          resource order
//	trailer:  [8]byte "TANDEMEN", u64 binding count,
//	          u32 CRC-32C of every byte before it (header, records, trailer magic and count)
//
// Bindings are written one at a time from a copy-on-write View, so a snapshot
// of a million bindings never holds a second copy of the database in memory.
// The header's CRC lets inspect tell a damaged header from a damaged body.

// SnapshotVersion is the snapshot format this build writes and reads.
const SnapshotVersion = 1

var (
	snapMagic    = [8]byte{'T', 'A', 'N', 'D', 'E', 'M', 'S', 'N'}
	snapEndMagic = [8]byte{'T', 'A', 'N', 'D', 'E', 'M', 'E', 'N'}
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)
)

// maxRecordLen bounds one snapshot record (a binding is under 200 bytes).
const maxRecordLen = 4096

// SnapshotHeader is what a snapshot says about itself.
type SnapshotHeader struct {
	Version    uint16
	Index      uint64
	Term       uint64
	LastTime   int64 // Unix ns of the last command applied before the snapshot
	Created    int64 // Unix ns when the snapshot was written
	Count      uint64
	ServerDUID []byte
	Endpoint   EndpointState
}

// WriteSnapshot streams v to w with the given creation time (Unix ns). It
// does not close w.
func WriteSnapshot(w io.Writer, v *View, created int64) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	h := &SnapshotHeader{Version: SnapshotVersion, Index: v.t.lastIndex, Term: v.t.lastTerm, LastTime: v.t.lastTime,
		Created: created, Count: uint64(v.t.bindings.Len()), ServerDUID: v.t.serverDUID, Endpoint: v.t.endpoint}
	if _, err := bw.Write(appendHeader(make([]byte, 0, 256), h)); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}

	var (
		rec  = make([]byte, 0, 256)
		lenb [binary.MaxVarintLen64]byte
		err  error
		n    uint64
	)
	v.t.bindings.Ascend(func(b *Binding) bool {
		rec = appendRecord(rec[:0], b)
		k := binary.PutUvarint(lenb[:], uint64(len(rec)))
		if _, err = bw.Write(lenb[:k]); err == nil {
			_, err = bw.Write(rec)
		}
		n++
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("write snapshot record %d: %w", n, err)
	}
	return finishSnapshot(w, bw, crc, n)
}

// appendHeader appends h's header bytes (with the header CRC) to hb. The
// version written is always SnapshotVersion.
func appendHeader(hb []byte, h *SnapshotHeader) []byte {
	start := len(hb)
	hb = append(hb, snapMagic[:]...)
	hb = binary.BigEndian.AppendUint16(hb, SnapshotVersion)
	hb = binary.BigEndian.AppendUint16(hb, 0)
	hb = binary.BigEndian.AppendUint64(hb, h.Index)
	hb = binary.BigEndian.AppendUint64(hb, h.Term)
	hb = binary.BigEndian.AppendUint64(hb, uint64(h.LastTime))
	hb = binary.BigEndian.AppendUint64(hb, uint64(h.Created))
	hb = binary.BigEndian.AppendUint64(hb, h.Count)
	hb = binary.BigEndian.AppendUint16(hb, uint16(len(h.ServerDUID)))
	hb = append(hb, h.ServerDUID...)
	ep := appendEndpoint(nil, &h.Endpoint)
	hb = binary.BigEndian.AppendUint16(hb, uint16(len(ep)))
	hb = append(hb, ep...)
	return binary.BigEndian.AppendUint32(hb, crc32.Checksum(hb[start:], castagnoli))
}

// finishSnapshot writes the trailer for n bindings through bw, flushes it,
// and writes the checksum of everything before it to w (unhashed).
func finishSnapshot(w io.Writer, bw *bufio.Writer, crc hash.Hash32, n uint64) error {
	tr := append(snapEndMagic[:0:0], snapEndMagic[:]...)
	tr = binary.BigEndian.AppendUint64(tr, n)
	if _, err := bw.Write(tr); err != nil {
		return fmt.Errorf("write snapshot trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if _, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return fmt.Errorf("write snapshot checksum: %w", err)
	}
	return nil
}

// CopySnapshot copies the snapshot read from r to w, verifying it exactly as
// Restore does (header, every record, order, counts, both checksums), after
// edit (if not nil) changed the header: only LastTime, Created, ServerDUID and
// Endpoint may be edited; the copy gets new checksums. It uses constant
// memory. It returns the header written. On error, w holds an incomplete copy
// that must be discarded: the bytes after a damaged record are never written,
// but a damage found only by the final checksum is known after the copy.
func CopySnapshot(w io.Writer, r io.Reader, edit func(*SnapshotHeader)) (*SnapshotHeader, error) {
	sr := newSnapReader(r)
	h, err := sr.header()
	if err != nil {
		return nil, err
	}
	out := *h
	if edit != nil {
		edit(&out)
	}
	out.Version, out.Index, out.Term, out.Count = SnapshotVersion, h.Index, h.Term, h.Count
	if len(out.ServerDUID) > MaxDUIDLen {
		return nil, fmt.Errorf("copy snapshot: server DUID of %d bytes", len(out.ServerDUID))
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	if _, err := bw.Write(appendHeader(make([]byte, 0, 256), &out)); err != nil {
		return nil, fmt.Errorf("write snapshot header: %w", err)
	}
	var (
		b, prev Binding
		rec     = make([]byte, 0, 256)
		lenb    [binary.MaxVarintLen64]byte
	)
	for i := uint64(0); i < h.Count; i++ {
		if err := sr.next(i, &b); err != nil {
			return nil, err
		}
		if i > 0 && prev.Resource.Compare(b.Resource) >= 0 {
			return nil, fmt.Errorf("%w: binding %d (%v) out of order after %v", ErrCorruptSnapshot, i, b.Resource, prev.Resource)
		}
		prev = b
		rec = appendRecord(rec[:0], &b)
		k := binary.PutUvarint(lenb[:], uint64(len(rec)))
		if _, err := bw.Write(lenb[:k]); err != nil {
			return nil, fmt.Errorf("write snapshot record %d: %w", i, err)
		}
		if _, err := bw.Write(rec); err != nil {
			return nil, fmt.Errorf("write snapshot record %d: %w", i, err)
		}
	}
	if err := sr.trailer(h.Count); err != nil {
		return nil, err
	}
	if err := finishSnapshot(w, bw, crc, h.Count); err != nil {
		return nil, err
	}
	return &out, nil
}

func appendRecord(b []byte, x *Binding) []byte {
	b = appendResource(b, x.Resource)
	b = appendBindingFields(b, x)
	return binary.AppendUvarint(b, x.Rev)
}

// snapReader reads a snapshot stream, hashing what it reads.
type snapReader struct {
	br   *bufio.Reader
	crc  hash.Hash32
	size int64
	rec  []byte
}

func newSnapReader(r io.Reader) *snapReader {
	return &snapReader{br: bufio.NewReaderSize(r, 256<<10), crc: crc32.New(castagnoli), rec: make([]byte, 0, 256)}
}

func (s *snapReader) full(b []byte, what string) error {
	n, err := io.ReadFull(s.br, b)
	s.size += int64(n)
	s.crc.Write(b[:n])
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated at byte %d reading %s: the file is incomplete", ErrCorruptSnapshot, s.size, what)
		}
		return fmt.Errorf("read snapshot %s: %w", what, err)
	}
	return nil
}

func (s *snapReader) header() (*SnapshotHeader, error) {
	fixed := make([]byte, 8+2+2+8*5+2)
	if err := s.full(fixed[:8], "magic"); err != nil {
		if errors.Is(err, ErrCorruptSnapshot) {
			return nil, fmt.Errorf("%w: file is shorter than a snapshot header", ErrForeignSnapshot)
		}
		return nil, err
	}
	if [8]byte(fixed[:8]) != snapMagic {
		return nil, fmt.Errorf("%w: bad magic %q (want %q)", ErrForeignSnapshot, fixed[:8], snapMagic[:])
	}
	if err := s.full(fixed[8:], "header"); err != nil {
		return nil, err
	}
	h := &SnapshotHeader{Version: binary.BigEndian.Uint16(fixed[8:])}
	if h.Version == 0 {
		return nil, fmt.Errorf("%w: snapshot format version 0", ErrCorruptSnapshot)
	}
	if h.Version > SnapshotVersion {
		return nil, fmt.Errorf("%w: snapshot format version %d (this build reads 1..%d): use a newer Tandem",
			ErrUnsupportedVersion, h.Version, SnapshotVersion)
	}
	h.Index = binary.BigEndian.Uint64(fixed[12:])
	h.Term = binary.BigEndian.Uint64(fixed[20:])
	h.LastTime = int64(binary.BigEndian.Uint64(fixed[28:]))
	h.Created = int64(binary.BigEndian.Uint64(fixed[36:]))
	h.Count = binary.BigEndian.Uint64(fixed[44:])
	duidLen := int(binary.BigEndian.Uint16(fixed[52:]))
	if duidLen > MaxDUIDLen {
		return nil, fmt.Errorf("%w: server DUID length %d in header", ErrCorruptSnapshot, duidLen)
	}
	rest := make([]byte, duidLen+2)
	if err := s.full(rest, "server DUID"); err != nil {
		return nil, err
	}
	if duidLen > 0 {
		h.ServerDUID = rest[:duidLen:duidLen]
	}
	epLen := int(binary.BigEndian.Uint16(rest[duidLen:]))
	if epLen > 256 {
		return nil, fmt.Errorf("%w: endpoint record length %d in header", ErrCorruptSnapshot, epLen)
	}
	ep := make([]byte, epLen)
	if err := s.full(ep, "endpoint record"); err != nil {
		return nil, err
	}
	want := s.crc.Sum32()
	var sum [4]byte
	if err := s.full(sum[:], "header checksum"); err != nil {
		return nil, err
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return nil, fmt.Errorf("%w: header checksum %08x, computed %08x: the header is damaged", ErrCorruptSnapshot, got, want)
	}
	d := decoder{buf: ep}
	e := d.endpoint()
	if d.err == nil && d.off != len(ep) {
		d.fail("%d trailing bytes in endpoint record", len(ep)-d.off)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: endpoint record: %v", ErrCorruptSnapshot, d.err)
	}
	h.Endpoint = *e
	return h, nil
}

// next reads the record of binding number i into b.
func (s *snapReader) next(i uint64, b *Binding) error {
	n, err := binary.ReadUvarint(byteCounter{s})
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated at byte %d before binding %d: the file is incomplete", ErrCorruptSnapshot, s.size, i)
		}
		if errors.Is(err, errVarintOverflow) {
			return fmt.Errorf("%w: binding %d: bad record length: %v", ErrCorruptSnapshot, i, err)
		}
		return fmt.Errorf("read snapshot binding %d: %w", i, err)
	}
	if n == 0 || n > maxRecordLen {
		return fmt.Errorf("%w: binding %d at byte %d: record length %d", ErrCorruptSnapshot, i, s.size, n)
	}
	if uint64(cap(s.rec)) < n {
		s.rec = make([]byte, 0, maxRecordLen)
	}
	s.rec = s.rec[:n]
	if err := s.full(s.rec, "a binding"); err != nil {
		return fmt.Errorf("binding %d: %w", i, err)
	}
	d := decoder{buf: s.rec}
	*b = Binding{Resource: d.resource()}
	d.bindingFields(b)
	b.Rev = d.uvarint("revision")
	if d.err == nil && d.off != len(s.rec) {
		d.fail("%d trailing bytes", len(s.rec)-d.off)
	}
	if d.err == nil {
		if err := b.validate(); err != nil {
			d.err = err
		}
	}
	if d.err != nil {
		return fmt.Errorf("%w: binding %d (ending at byte %d): %v", ErrCorruptSnapshot, i, s.size, d.err)
	}
	return nil
}

// trailer checks the trailer and that nothing follows it.
func (s *snapReader) trailer(count uint64) error {
	var tr [16]byte
	if err := s.full(tr[:], "trailer"); err != nil {
		return err
	}
	if [8]byte(tr[:8]) != snapEndMagic {
		return fmt.Errorf("%w: no trailer after %d bindings (the header count or the body is damaged)", ErrCorruptSnapshot, count)
	}
	if c := binary.BigEndian.Uint64(tr[8:]); c != count {
		return fmt.Errorf("%w: trailer counts %d bindings, header %d", ErrCorruptSnapshot, c, count)
	}
	want := s.crc.Sum32()
	var sum [4]byte
	if err := s.full(sum[:], "checksum"); err != nil {
		return err
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return fmt.Errorf("%w: checksum %08x, computed %08x: the file is damaged", ErrCorruptSnapshot, got, want)
	}
	switch _, err := s.br.ReadByte(); {
	case err == nil:
		return fmt.Errorf("%w: data after the trailer", ErrCorruptSnapshot)
	case err != io.EOF:
		return fmt.Errorf("read snapshot: %w", err)
	}
	return nil
}

// errVarintOverflow is what binary.ReadUvarint returns for a too-long varint.
var errVarintOverflow = func() error {
	_, err := binary.ReadUvarint(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}))
	return err
}()

type byteCounter struct{ s *snapReader }

func (c byteCounter) ReadByte() (byte, error) {
	b, err := c.s.br.ReadByte()
	if err == nil {
		c.s.size++
		c.s.crc.Write([]byte{b})
	}
	return b, err
}

// Restore replaces the whole database with the snapshot read from r. The
// snapshot is read and verified completely (magic, version, header and body
// checksums, counts, record order) before anything is replaced: on error the
// database is unchanged. Called only from the single apply goroutine.
func (s *State) Restore(r io.Reader) (*SnapshotHeader, error) {
	t, h, err := readTables(r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.obs = s.t.obs
	s.t = t
	for _, o := range t.obs {
		o.Reset(&View{t: t.clone()})
	}
	return h, nil
}

// ReadSnapshot reads and verifies a snapshot into a new State.
func ReadSnapshot(r io.Reader) (*State, *SnapshotHeader, error) {
	t, h, err := readTables(r)
	if err != nil {
		return nil, nil, err
	}
	return &State{t: t}, h, nil
}

func readTables(r io.Reader) (*tables, *SnapshotHeader, error) {
	sr := newSnapReader(r)
	h, err := sr.header()
	if err != nil {
		return nil, nil, err
	}
	t := newTables()
	var prev *Binding
	for i := uint64(0); i < h.Count; i++ {
		b := new(Binding)
		if err := sr.next(i, b); err != nil {
			return nil, nil, err
		}
		if prev != nil && prev.Resource.Compare(b.Resource) >= 0 {
			return nil, nil, fmt.Errorf("%w: binding %d (%v) out of order after %v", ErrCorruptSnapshot, i, b.Resource, prev.Resource)
		}
		t.put(b)
		prev = b
	}
	if err := sr.trailer(h.Count); err != nil {
		return nil, nil, err
	}
	t.serverDUID = h.ServerDUID
	t.endpoint = h.Endpoint
	t.lastIndex, t.lastTerm, t.lastTime = h.Index, h.Term, h.LastTime
	return t, h, nil
}

// SnapshotInfo is what InspectSnapshot learns about a snapshot.
type SnapshotInfo struct {
	Header *SnapshotHeader // nil if the header itself could not be read
	Size   int64           // bytes read
	Counts Counts          // bindings read, by type and status
	Read   uint64          // number of bindings read
	// Err is nil when the whole file verified; otherwise what is wrong.
	Err error
}

// InspectSnapshot reads a snapshot through without building a database and
// reports what it holds and whether it verifies. It uses constant memory.
func InspectSnapshot(r io.Reader) *SnapshotInfo {
	sr := newSnapReader(r)
	info := &SnapshotInfo{}
	defer func() { info.Size = sr.size }()
	h, err := sr.header()
	if err != nil {
		info.Err = err
		return info
	}
	info.Header = h
	var b, prev Binding
	for i := uint64(0); i < h.Count; i++ {
		if err := sr.next(i, &b); err != nil {
			info.Err = err
			return info
		}
		if i > 0 && prev.Resource.Compare(b.Resource) >= 0 {
			info.Err = fmt.Errorf("%w: binding %d (%v) out of order after %v", ErrCorruptSnapshot, i, b.Resource, prev.Resource)
			return info
		}
		prev = b
		info.Counts[b.Resource.Type][b.Status]++
		info.Read++
	}
	info.Err = sr.trailer(h.Count)
	return info
}

// ReadSnapshotHeader reads and verifies only the header of a snapshot.
func ReadSnapshotHeader(r io.Reader) (*SnapshotHeader, error) {
	return newSnapReader(r).header()
}
