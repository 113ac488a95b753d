package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Command encoding (format version 1)
//
// A command is one raft log entry. The encoding is a hand-written, versioned
// binary format built from unsigned and zig-zag varints (encoding/binary):
//
//	u8       format version (1)
//	u8       command type
//	varint   time: Unix nanoseconds at which the command was made (the "now" of Apply)
//	u8       origin
//	uvarint  note length, note bytes (UTF-8, at most MaxNoteLen)
//	...      body, by type (below)
//	u32      CRC-32C (Castagnoli) of all the bytes before it, big-endian
//
// Why this and not protobuf, gob or JSON: the log holds one entry per DHCP
// transaction, so size and encode/decode cost are paid on every client
// packet and again on every replay; varints make a typical single-lease
// transaction about 100 bytes. The format is deterministic (the same command
// always gives the same bytes), needs no code generation and no dependency,
// and the leading version byte lets a later release read old logs and refuse
// newer ones with a clear message. Every length is checked against the bytes
// that remain, so a damaged entry gives an error, never a panic or a large
// allocation. raft-boltdb keeps no checksum of its own, so the CRC is what
// turns a damaged entry into a clear error instead of a silently different
// binding.
//
// Bodies:
//
//	CmdTxn:         uvarint op count, then each op:
//	                  u8 op flags (bit 0 delete, bit 1 has precondition)
//	                  resource (u8 type, u8 length, ceil(length/8) address bytes)
//	                  [uvarint expected revision]   if bit 1
//	                  [binding fields]              unless delete
//	CmdSetServerDUID: uvarint length, DUID bytes
//	CmdSetEndpoint:   endpoint record (see appendEndpoint)
//	CmdNoop:          nothing
//
// Binding fields: u8 status, u8 flags, uvarint IAID, uvarint DUID length, DUID,
// uvarint preferred, uvarint valid, then 7 zig-zag varint times: CLTT,
// start-time-of-state, state-expiration-time, partner-lifetime,
// acked-partner-lifetime, expiration-time, partner-raw-clt-time.

// FormatVersion is the command encoding version this build writes. It reads
// versions 1..FormatVersion.
const FormatVersion = 1

// MaxNoteLen bounds Command.Note.
const MaxNoteLen = 1024

// CmdType is the kind of a command.
type CmdType uint8

// Command types.
const (
	// CmdTxn changes one or more bindings atomically: all preconditions hold and
	// every op is applied, or none is.
	CmdTxn CmdType = 1
	// CmdSetServerDUID records the server DUID. It is applied only if none is
	// recorded yet; the DUID then never changes.
	CmdSetServerDUID CmdType = 2
	// CmdSetEndpoint replaces the failover endpoint's persistent record.
	CmdSetEndpoint CmdType = 3
	// CmdNoop changes nothing (used to mark a point in the log).
	CmdNoop CmdType = 4

	maxCmdType = CmdNoop
)

// String names the command type.
func (t CmdType) String() string {
	switch t {
	case CmdTxn:
		return "txn"
	case CmdSetServerDUID:
		return "set-server-duid"
	case CmdSetEndpoint:
		return "set-endpoint"
	case CmdNoop:
		return "noop"
	}
	return fmt.Sprintf("cmd(%d)", uint8(t))
}

// Origin says what caused a command; it is kept for log forensics.
type Origin uint8

// Origins.
const (
	OriginUnknown  Origin = 0
	OriginClient   Origin = 1 // a DHCPv6 client transaction
	OriginPartner  Origin = 2 // a binding update from the failover partner
	OriginReclaim  Origin = 3 // lease expiry and reclamation
	OriginAdmin    Origin = 4 // an operator command
	OriginFailover Origin = 5 // the failover endpoint's own bookkeeping
	OriginServer   Origin = 6 // server start-up
)

var originNames = [...]string{"unknown", "client", "partner", "reclaim", "admin", "failover", "server"}

// String names the origin.
func (o Origin) String() string {
	if int(o) < len(originNames) {
		return originNames[o]
	}
	return fmt.Sprintf("origin(%d)", uint8(o))
}

// AnyRev as Op.IfRev means "no precondition".
const AnyRev = ^uint64(0)

// Op is one change inside a CmdTxn.
type Op struct {
	// Resource is the binding's key.
	Resource Resource
	// IfRev is a precondition: the binding's current Rev must equal it, where 0
	// means "must not exist". AnyRev disables the check. This is how concurrent
	// allocators avoid handing one resource to two clients.
	IfRev uint64
	// Delete removes the binding instead of writing Binding.
	Delete bool
	// Binding is the new value (Binding.Resource must equal Resource; Rev is ignored).
	Binding Binding
}

// Command is a decoded log entry.
type Command struct {
	Type CmdType
	// Time is the Unix time in nanoseconds at which the command was made; Apply
	// uses it and never a clock.
	Time   int64
	Origin Origin
	// Note is free text for forensics, e.g. the DHCP message type and transaction id.
	Note string

	Ops        []Op           // CmdTxn
	ServerDUID []byte         // CmdSetServerDUID
	Endpoint   *EndpointState // CmdSetEndpoint
}

// Encode returns the command's encoding.
func (c *Command) Encode() ([]byte, error) {
	return c.AppendEncode(make([]byte, 0, 32+len(c.Ops)*80))
}

// AppendEncode appends the command's encoding to b.
func (c *Command) AppendEncode(b []byte) ([]byte, error) {
	if c.Type == 0 || c.Type > maxCmdType {
		return nil, fmt.Errorf("%w: unknown command type %d", ErrInvalidCommand, c.Type)
	}
	if len(c.Note) > MaxNoteLen {
		return nil, fmt.Errorf("%w: note of %d bytes (max %d)", ErrInvalidCommand, len(c.Note), MaxNoteLen)
	}
	start := len(b)
	b = append(b, FormatVersion, byte(c.Type))
	b = binary.AppendVarint(b, c.Time)
	b = append(b, byte(c.Origin))
	b = appendBytes(b, []byte(c.Note))
	switch c.Type {
	case CmdTxn:
		b = binary.AppendUvarint(b, uint64(len(c.Ops)))
		for i := range c.Ops {
			op := &c.Ops[i]
			if !op.Resource.Valid() {
				return nil, fmt.Errorf("%w: op %d: bad resource %v", ErrInvalidCommand, i, op.Resource)
			}
			var f byte
			if op.Delete {
				f |= 1
			}
			if op.IfRev != AnyRev {
				f |= 2
			}
			b = append(b, f)
			b = appendResource(b, op.Resource)
			if op.IfRev != AnyRev {
				b = binary.AppendUvarint(b, op.IfRev)
			}
			if !op.Delete {
				if op.Binding.Resource != op.Resource {
					return nil, fmt.Errorf("%w: op %d: binding resource %v differs from op resource %v",
						ErrInvalidCommand, i, op.Binding.Resource, op.Resource)
				}
				if err := op.Binding.validate(); err != nil {
					return nil, fmt.Errorf("op %d: %w", i, err)
				}
				b = appendBindingFields(b, &op.Binding)
			}
		}
	case CmdSetServerDUID:
		if len(c.ServerDUID) == 0 || len(c.ServerDUID) > MaxDUIDLen {
			return nil, fmt.Errorf("%w: server DUID of %d bytes", ErrInvalidCommand, len(c.ServerDUID))
		}
		b = appendBytes(b, c.ServerDUID)
	case CmdSetEndpoint:
		if c.Endpoint == nil {
			return nil, fmt.Errorf("%w: set-endpoint without a record", ErrInvalidCommand)
		}
		b = appendEndpoint(b, c.Endpoint)
	case CmdNoop:
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli)), nil
}

// DecodeCommand decodes one log entry. Any damage gives an error wrapping
// ErrCorruptEntry (or ErrUnsupportedVersion) that says what is wrong.
func DecodeCommand(data []byte) (*Command, error) {
	if len(data) > 0 && data[0] == 0 {
		return nil, fmt.Errorf("%w: format version 0", ErrCorruptEntry)
	}
	if len(data) > 0 && data[0] > FormatVersion {
		return nil, fmt.Errorf("%w: entry format version %d (this build reads 1..%d): upgrade Tandem to read this log",
			ErrUnsupportedVersion, data[0], FormatVersion)
	}
	if len(data) < 4+4 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than any command", ErrCorruptEntry, len(data))
	}
	body := data[:len(data)-4]
	if want, got := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(data[len(body):]); want != got {
		return nil, fmt.Errorf("%w: checksum %08x, computed %08x: the entry is damaged", ErrCorruptEntry, got, want)
	}
	d := decoder{buf: body}
	d.u8("format version")
	c := &Command{Type: CmdType(d.u8("command type"))}
	c.Time = d.varint("time")
	c.Origin = Origin(d.u8("origin"))
	c.Note = string(d.bytes("note", MaxNoteLen))
	if d.err != nil {
		return nil, d.err
	}
	switch c.Type {
	case CmdTxn:
		// Each op takes at least 3 bytes, which bounds the allocation.
		n := d.count("op count", 3)
		if n > 0 {
			c.Ops = make([]Op, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			op := &c.Ops[i]
			f := d.u8("op flags")
			if f&^3 != 0 {
				d.fail("op %d: unknown op flags %#x", i, f)
				break
			}
			op.Delete = f&1 != 0
			op.Resource = d.resource()
			op.IfRev = AnyRev
			if f&2 != 0 {
				op.IfRev = d.uvarint("expected revision")
			}
			if !op.Delete {
				op.Binding.Resource = op.Resource
				d.bindingFields(&op.Binding)
				if d.err == nil {
					if err := op.Binding.validate(); err != nil {
						d.fail("op %d: %v", i, err)
					}
				}
			}
		}
	case CmdSetServerDUID:
		c.ServerDUID = bytes.Clone(d.bytes("server DUID", MaxDUIDLen))
		if d.err == nil && len(c.ServerDUID) == 0 {
			d.fail("empty server DUID")
		}
	case CmdSetEndpoint:
		c.Endpoint = d.endpoint()
	case CmdNoop:
	default:
		d.fail("unknown command type %d", c.Type)
	}
	if d.err == nil && d.off != len(d.buf) {
		d.fail("%d trailing bytes", len(d.buf)-d.off)
	}
	if d.err != nil {
		return nil, d.err
	}
	return c, nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendResource(b []byte, r Resource) []byte {
	b = append(b, byte(r.Type), r.Len)
	return append(b, r.IP[:(int(r.Len)+7)/8]...)
}

func appendBindingFields(b []byte, x *Binding) []byte {
	b = append(b, byte(x.Status), byte(x.Flags))
	b = binary.AppendUvarint(b, uint64(x.IAID))
	b = appendBytes(b, []byte(x.DUID))
	b = binary.AppendUvarint(b, uint64(x.PreferredLifetime))
	b = binary.AppendUvarint(b, uint64(x.ValidLifetime))
	for _, t := range [...]int64{x.CLTT, x.StartTimeOfState, x.StateExpirationTime, x.PartnerLifetime,
		x.AckedPartnerLifetime, x.ExpirationTime, x.PartnerRawCLTT} {
		b = binary.AppendVarint(b, t)
	}
	return b
}

// Endpoint record: u8 record version (1), u8 flags (bit 0 communicated, bit 1
// held in startup), u8 state, u8 previous state, u8 partner state, then zig-zag
// varints: state since, partner state since, last contact, last operating,
// partner-down time.
func appendEndpoint(b []byte, e *EndpointState) []byte {
	var f byte
	if e.Communicated {
		f |= 1
	}
	if e.HeldInStartup {
		f |= 2
	}
	b = append(b, 1, f, e.State, e.PreviousState, e.PartnerState)
	for _, t := range [...]int64{e.StateSince, e.PartnerStateSince, e.LastContact, e.LastOperating, e.PartnerDownTime} {
		b = binary.AppendVarint(b, t)
	}
	return b
}

// decoder reads from buf, recording the first error; after an error every
// read returns zero values.
type decoder struct {
	buf []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w at byte %d: %s", ErrCorruptEntry, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) u8(what string) uint8 {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.buf) {
		d.fail("truncated reading %s", what)
		return 0
	}
	v := d.buf[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:])
	if n <= 0 {
		d.fail("bad varint reading %s", what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf[d.off:])
	if n <= 0 {
		d.fail("bad varint reading %s", what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint(what)
	if v > 1<<32-1 {
		d.fail("%s %d does not fit in 32 bits", what, v)
		return 0
	}
	return uint32(v)
}

// count reads an element count and checks that count*minSize bytes remain.
func (d *decoder) count(what string, minSize int) int {
	v := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if v > uint64(len(d.buf)-d.off)/uint64(minSize) {
		d.fail("%s %d larger than the %d bytes left allow", what, v, len(d.buf)-d.off)
		return 0
	}
	return int(v)
}

func (d *decoder) bytes(what string, max int) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail("%s of %d bytes (max %d)", what, n, max)
		return nil
	}
	if n > uint64(len(d.buf)-d.off) {
		d.fail("truncated reading %s (%d bytes, %d left)", what, n, len(d.buf)-d.off)
		return nil
	}
	v := d.buf[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return v
}

func (d *decoder) resource() Resource {
	var r Resource
	r.Type = IAType(d.u8("resource type"))
	r.Len = d.u8("resource length")
	if d.err != nil {
		return r
	}
	if !r.Type.Valid() || r.Len > 128 {
		d.fail("bad resource type %d / length %d", r.Type, r.Len)
		return r
	}
	n := (int(r.Len) + 7) / 8
	if n > len(d.buf)-d.off {
		d.fail("truncated reading resource address")
		return r
	}
	copy(r.IP[:], d.buf[d.off:d.off+n])
	d.off += n
	if !r.Valid() {
		d.fail("bad resource %v (host bits set or wrong length for type)", r)
	}
	return r
}

func (d *decoder) bindingFields(x *Binding) {
	x.Status = Status(d.u8("status"))
	x.Flags = Flags(d.u8("flags"))
	x.IAID = d.u32("IAID")
	x.DUID = string(d.bytes("client DUID", MaxDUIDLen))
	x.PreferredLifetime = d.u32("preferred lifetime")
	x.ValidLifetime = d.u32("valid lifetime")
	for _, p := range [...]*int64{&x.CLTT, &x.StartTimeOfState, &x.StateExpirationTime, &x.PartnerLifetime,
		&x.AckedPartnerLifetime, &x.ExpirationTime, &x.PartnerRawCLTT} {
		*p = d.varint("time")
	}
}

func (d *decoder) endpoint() *EndpointState {
	if v := d.u8("endpoint record version"); d.err == nil && v != 1 {
		d.fail("endpoint record version %d (this build reads 1)", v)
		return nil
	}
	f := d.u8("endpoint flags")
	e := &EndpointState{Communicated: f&1 != 0, HeldInStartup: f&2 != 0}
	e.State = d.u8("state")
	e.PreviousState = d.u8("previous state")
	e.PartnerState = d.u8("partner state")
	for _, p := range [...]*int64{&e.StateSince, &e.PartnerStateSince, &e.LastContact, &e.LastOperating, &e.PartnerDownTime} {
		*p = d.varint("endpoint time")
	}
	if d.err == nil && f&^3 != 0 {
		d.fail("unknown endpoint flags %#x", f)
	}
	return e
}
