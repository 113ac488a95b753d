package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestAppendFrame(t *testing.T) {
	got, err := AppendFrame([]byte{0xaa}, []byte{1, 2, 3})
	if err != nil || !bytes.Equal(got, []byte{0xaa, 0x00, 0x03, 1, 2, 3}) {
		t.Fatalf("AppendFrame = %x, %v", got, err)
	}
	got, err = AppendFrame(nil, make([]byte, 65535))
	if err != nil || len(got) != 65537 || got[0] != 0xff || got[1] != 0xff {
		t.Fatalf("65535-byte message: len %d, %v", len(got), err)
	}
	got, err = AppendFrame([]byte{0xaa}, make([]byte, 65536))
	if !errors.Is(err, ErrFrameTooLarge) || !bytes.Equal(got, []byte{0xaa}) {
		t.Fatalf("65536-byte message: %x, %v", got, err)
	}
	if got, err := AppendFrame(nil, nil); err != nil || !bytes.Equal(got, []byte{0, 0}) {
		t.Fatalf("empty message: %x, %v", got, err)
	}
}

// countWriter counts Write calls.
type countWriter struct {
	bytes.Buffer
	writes int
}

func (w *countWriter) Write(p []byte) (int, error) { w.writes++; return w.Buffer.Write(p) }

func TestWriter(t *testing.T) {
	var out countWriter
	w := NewWriter(&out)
	if err := w.WriteFrame([]byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessage(NewStartTLS(1)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(make([]byte, 65536)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	if err := w.WriteMessage(NewMessage(MsgContact, 1<<24, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("invalid message: %v", err)
	}
	want := []byte{0, 2, 1, 2, 0, 4, 23, 0, 0, 1}
	if !bytes.Equal(out.Bytes(), want) || out.writes != 2 {
		t.Fatalf("wrote %x in %d writes, want %x in 2", out.Bytes(), out.writes, want)
	}
}

func TestReader(t *testing.T) {
	stream := []byte{0, 3, 1, 2, 3, 0, 0, 0, 1, 9}
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	} {
		t.Run(name, func(t *testing.T) {
			r := NewReader(wrap(bytes.NewReader(stream)))
			for _, want := range [][]byte{{1, 2, 3}, {}, {9}} {
				got, err := r.ReadFrame()
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("ReadFrame = %x, %v; want %x", got, err, want)
				}
			}
			for range 2 { // io.EOF is sticky
				if got, err := r.ReadFrame(); err != io.EOF || got != nil {
					t.Fatalf("at end: %x, %v; want io.EOF", got, err)
				}
			}
		})
	}
}

// TestReaderTruncation cuts a stream of three frames at every position:
// the complete frames come out, then io.EOF at a boundary or
// io.ErrUnexpectedEOF inside a frame.
func TestReaderTruncation(t *testing.T) {
	var stream []byte
	var ends []int
	for _, m := range [][]byte{{1, 2, 3}, nil, bytes.Repeat([]byte{7}, 300)} {
		stream, _ = AppendFrame(stream, m)
		ends = append(ends, len(stream))
	}
	for cut := 0; cut <= len(stream); cut++ {
		r := NewReader(iotest.HalfReader(bytes.NewReader(stream[:cut])))
		complete := 0
		for _, e := range ends {
			if e <= cut {
				complete++
			}
		}
		for i := range complete {
			if _, err := r.ReadFrame(); err != nil {
				t.Fatalf("cut %d: frame %d: %v", cut, i, err)
			}
		}
		_, err := r.ReadFrame()
		atBoundary := cut == 0 || (complete > 0 && ends[complete-1] == cut)
		switch {
		case atBoundary && err != io.EOF:
			t.Fatalf("cut %d at a boundary: %v, want io.EOF", cut, err)
		case !atBoundary && (!errors.Is(err, io.ErrUnexpectedEOF) || err == io.ErrUnexpectedEOF):
			t.Fatalf("cut %d inside a frame: %v, want a wrapped io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func TestReaderLimit(t *testing.T) {
	stream := []byte{0, 5, 1, 2, 3, 4, 5, 0, 6, 1, 2, 3, 4, 5, 6, 0, 1, 1}
	r := NewReader(bytes.NewReader(stream))
	r.SetMaxFrameSize(5)
	if got, err := r.ReadFrame(); err != nil || len(got) != 5 {
		t.Fatalf("5-byte frame: %x, %v", got, err)
	}
	_, err := r.ReadFrame()
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("6-byte frame with limit 5: %v", err)
	}
	if _, err2 := r.ReadFrame(); err2 != err {
		t.Fatalf("error not sticky: %v then %v", err, err2)
	}
	if cap(r.buf) > 5 {
		t.Fatalf("buffer of %d bytes for frames of at most 5", cap(r.buf))
	}
	r.SetMaxFrameSize(1 << 20)
	if r.MaxFrameSize() != MaxMessageSize {
		t.Fatalf("limit %d, want clamp to %d", r.MaxFrameSize(), MaxMessageSize)
	}
	r.SetMaxFrameSize(-1)
	if r.MaxFrameSize() != 0 {
		t.Fatalf("limit %d, want 0", r.MaxFrameSize())
	}
}

// TestReaderAllocation: the buffer is reused, and never larger than the
// largest frame read.
func TestReaderAllocation(t *testing.T) {
	frame, _ := AppendFrame(nil, bytes.Repeat([]byte{1}, 100))
	src := bytes.NewReader(nil)
	r := NewReader(src)
	src.Reset(frame)
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if cap(r.buf) != 100 {
		t.Fatalf("buffer cap %d after a 100-byte frame", cap(r.buf))
	}
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(frame)
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame, want 0", allocs)
	}
	// A length prefix promising more than arrives allocates only what the
	// prefix says, and reports truncation.
	r = NewReader(bytes.NewReader([]byte{0x01, 0x00, 1, 2}))
	if _, err := r.ReadFrame(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	if cap(r.buf) != 256 {
		t.Fatalf("buffer cap %d for a 256-byte frame", cap(r.buf))
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestReaderError(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(errReader{boom})
	if _, err := r.ReadFrame(); !errors.Is(err, boom) {
		t.Fatalf("error %v does not wrap the read error", err)
	}
	r = NewReader(io.MultiReader(bytes.NewReader([]byte{0, 4, 1}), errReader{boom}))
	if _, err := r.ReadFrame(); !errors.Is(err, boom) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("mid-frame error %v", err)
	}
	// A bad message in a good frame leaves the Reader usable.
	r = NewReader(bytes.NewReader([]byte{0, 1, 99, 0, 4, 23, 0, 0, 1}))
	if _, err := r.ReadMessage(); !errors.Is(err, ErrUnknownMessageType) {
		t.Fatalf("bad message: %v", err)
	}
	if m, err := r.ReadMessage(); err != nil || m.Type != MsgStartTLS {
		t.Fatalf("next message: %v, %v", m, err)
	}
}

func TestReaderBuffered(t *testing.T) {
	r := NewReader(bytes.NewReader([]byte{0, 4, 7, 0, 0, 1, 0x16, 0x03}))
	if m, err := r.ReadMessage(); err != nil || m.Type != MsgReply {
		t.Fatalf("REPLY: %v, %v", m, err)
	}
	if r.Buffered() != 2 {
		t.Fatalf("Buffered = %d, want the 2 early TLS bytes", r.Buffered())
	}
}
