package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
)

// seedMessages returns the golden messages and a few hand-built ones.
func seedMessages(f *testing.F) [][]byte {
	var out [][]byte
	for _, g := range goldens() {
		out = append(out, hx(f, g.hex))
	}
	out = append(out,
		bndupd(cd(opt(68, []byte{0, 'r'}), opt(129, be32(7), []byte{1, 2}), opt(47, addr2, []byte{12, 0}), iana(1, leaseOK),
			opt(25, be32(2), be32(0), be32(0), lonePfx(bsOK, stosOK, opt(39, []byte{0, 0}), opt(116, opt(117, []byte{0}), opt(119, be16(3))))))),
		cat(fohdr(MsgBndReply), opt(45, opt(1, goldenDUID), opt(13, be16(17)), iana(1, opt(13, be16(19)), leaseOK))),
		cat(fohdr(MsgState), stateOpts(4, 1), opt(125, be32(9))),
		cat(fohdr(MsgContact), opt(999, []byte{1, 2})),
		cat([]byte{byte(MsgStartTLS), 0, 0, 1}, opt(13, []byte{0})),
	)
	return out
}

// checkDecode is the FuzzDecodeMessage property: DecodeMessage never
// panics; an error is classified and comes without a message; a decoded
// message encodes to bytes of the same length that decode to an equal
// message and re-encode to the same bytes.
func checkDecode(t *testing.T, data []byte) {
	m, err := DecodeMessage(data)
	if err != nil {
		if m != nil {
			t.Fatalf("message and error %v", err)
		}
		var e *Error
		if !errors.As(err, &e) || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownMessageType)) {
			t.Fatalf("unclassified error %T %v", err, err)
		}
		return
	}
	enc, err := m.Encode()
	if err != nil {
		t.Fatalf("decoded message does not encode: %v\ninput %x\nmessage %s", err, data, dump(m))
	}
	if len(enc) != len(data) {
		t.Fatalf("re-encoding changed the size from %d to %d\ninput %x\noutput %x", len(data), len(enc), data, enc)
	}
	m2, err := DecodeMessage(enc)
	if err != nil {
		t.Fatalf("re-encoded message does not decode: %v\ninput %x\noutput %x", err, data, enc)
	}
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("round trip changed the message\n  %s\n  %s", dump(m), dump(m2))
	}
	enc2, err := m2.Encode()
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not canonical (%v)\n  %x\n  %x", err, enc, enc2)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, b := range seedMessages(f) {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(MsgReply), 0, 0, 0})
	f.Fuzz(checkDecode)
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// FuzzReadFrame: the Reader splits any byte stream exactly as the framing
// rules say, with the right error at the end, under any limit and read
// chunking; every frame also goes through the message property.
func FuzzReadFrame(f *testing.F) {
	var stream []byte
	for _, b := range seedMessages(f) {
		one, _ := AppendFrame(nil, b)
		f.Add(one, uint16(65535), uint8(0))
		stream = append(stream, one...)
	}
	f.Add(stream, uint16(65535), uint8(3))
	f.Add(stream, uint16(20), uint8(255))
	f.Add(stream[:len(stream)-1], uint16(65535), uint8(7))
	f.Add([]byte{0}, uint16(1), uint8(0))
	f.Add([]byte{0xff, 0xff, 1}, uint16(65535), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16, chunk uint8) {
		r := NewReader(&chunkReader{r: bytes.NewReader(data), n: int(chunk) + 1})
		r.SetMaxFrameSize(int(limit))
		pos := 0
		var reframed []byte
		for {
			frame, err := r.ReadFrame()
			if err != nil {
				rest := data[pos:]
				var want error
				switch {
				case len(rest) == 0:
					want = io.EOF
				case len(rest) == 1:
					want = io.ErrUnexpectedEOF
				case int(binary.BigEndian.Uint16(rest)) > int(limit):
					want = ErrFrameTooLarge
				default:
					want = io.ErrUnexpectedEOF
				}
				if !errors.Is(err, want) || (want == io.EOF && err != io.EOF) {
					t.Fatalf("at %d/%d: error %v, want %v", pos, len(data), err, want)
				}
				if _, err2 := r.ReadFrame(); err2 != err {
					t.Fatalf("error not sticky: %v then %v", err, err2)
				}
				break
			}
			size := int(binary.BigEndian.Uint16(data[pos:]))
			if len(frame) != size || size > int(limit) || !bytes.Equal(frame, data[pos+2:pos+2+size]) {
				t.Fatalf("at %d: frame of %d bytes, prefix says %d (limit %d)", pos, len(frame), size, limit)
			}
			if cap(r.buf) > int(limit) {
				t.Fatalf("buffer of %d bytes with limit %d", cap(r.buf), limit)
			}
			reframed, err = AppendFrame(reframed, frame)
			if err != nil {
				t.Fatal(err)
			}
			checkDecode(t, frame)
			pos += 2 + size
		}
		if !bytes.Equal(reframed, data[:pos]) {
			t.Fatalf("re-framing the frames does not give back the stream")
		}
	})
}
