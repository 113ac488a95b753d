package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Framing (RFC 5460 §5.1, used by RFC 8156 §5.1): every message on the TCP
// stream is preceded by a 2-octet, big-endian message-size that counts the
// message octets only.

// frameHeaderLen is the size of the message-size prefix.
const frameHeaderLen = 2

// Reader reads framed messages from a byte stream. It is not safe for
// concurrent use.
//
// Invariants: it never allocates a buffer larger than the largest frame
// length it has read (and never above its limit); the slice ReadFrame
// returns is reused by the next call; once ReadFrame has returned an error,
// every later call returns the same error (the stream position is no longer
// known to be at a frame boundary).
type Reader struct {
	br  *bufio.Reader
	max int
	buf []byte
	hdr [frameHeaderLen]byte
	err error
}

// NewReader returns a Reader over r with the protocol maximum frame size,
// MaxMessageSize.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReader(r), max: MaxMessageSize}
}

// SetMaxFrameSize sets the largest frame (message) length ReadFrame accepts;
// values outside 0..MaxMessageSize are clamped to that range. A longer frame
// gives ErrFrameTooLarge before any of its body is read.
func (r *Reader) SetMaxFrameSize(n int) {
	r.max = min(max(n, 0), MaxMessageSize)
}

// MaxFrameSize returns the current limit.
func (r *Reader) MaxFrameSize() int { return r.max }

// ReadFrame reads the next frame and returns its message bytes, which stay
// valid only until the next call. It returns io.EOF, unwrapped, only when the
// stream ends exactly at a frame boundary; a stream that ends inside a frame
// gives an error wrapping io.ErrUnexpectedEOF; a frame over the limit gives
// an error wrapping ErrFrameTooLarge. Other read errors are returned wrapped.
func (r *Reader) ReadFrame() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	n, err := io.ReadFull(r.br, r.hdr[:])
	switch {
	case err == io.EOF && n == 0:
		r.err = io.EOF
		return nil, r.err
	case errors.Is(err, io.ErrUnexpectedEOF):
		r.err = fmt.Errorf("failover frame: stream ended inside the message-size field: %w", io.ErrUnexpectedEOF)
		return nil, r.err
	case err != nil:
		r.err = fmt.Errorf("failover frame: reading message-size: %w", err)
		return nil, r.err
	}
	size := int(binary.BigEndian.Uint16(r.hdr[:]))
	if size > r.max {
		r.err = fmt.Errorf("%w: message-size %d exceeds the limit of %d bytes", ErrFrameTooLarge, size, r.max)
		return nil, r.err
	}
	if cap(r.buf) < size {
		r.buf = make([]byte, size)
	}
	msg := r.buf[:size]
	if n, err := io.ReadFull(r.br, msg); err != nil {
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			r.err = fmt.Errorf("failover frame: stream ended after %d of %d message bytes: %w", n, size, io.ErrUnexpectedEOF)
		} else {
			r.err = fmt.Errorf("failover frame: reading %d-byte message: %w", size, err)
		}
		return nil, r.err
	}
	return msg, nil
}

// Buffered returns the number of bytes read from the underlying reader but
// not yet returned in a frame. Before switching the connection to TLS after
// STARTTLS/REPLY, a caller must check that it is 0 (a peer that sent TLS
// bytes early would otherwise lose them to this Reader's buffer), and then
// read further frames through a new Reader on the TLS connection.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// ReadMessage reads the next frame and decodes it. A decoding error leaves
// the Reader usable (the frame was consumed whole); a framing error does not.
func (r *Reader) ReadMessage() (*Message, error) {
	b, err := r.ReadFrame()
	if err != nil {
		return nil, err
	}
	return DecodeMessage(b)
}

// AppendFrame appends the message-size prefix and msg to dst. It refuses a
// message longer than MaxMessageSize with ErrFrameTooLarge and then returns
// dst unchanged.
func AppendFrame(dst, msg []byte) ([]byte, error) {
	if len(msg) > MaxMessageSize {
		return dst, fmt.Errorf("%w: a %d-byte message exceeds the protocol maximum of %d", ErrFrameTooLarge, len(msg), MaxMessageSize)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...), nil
}

// Writer writes framed messages to a byte stream, each frame with a single
// Write call so that a frame is never interleaved with other writes to the
// same io.Writer made through the same Writer. It is not safe for concurrent
// use; it reuses one buffer.
type Writer struct {
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame frames msg and writes it. It writes nothing and returns
// ErrFrameTooLarge for a message over MaxMessageSize.
func (w *Writer) WriteFrame(msg []byte) error {
	b, err := AppendFrame(w.buf[:0], msg)
	if err != nil {
		return err
	}
	w.buf = b
	_, err = w.w.Write(b)
	return err
}

// WriteMessage encodes m, frames it and writes it. It writes nothing if m
// cannot be encoded.
func (w *Writer) WriteMessage(m *Message) error {
	b, err := m.AppendFrame(w.buf[:0])
	if err != nil {
		return err
	}
	w.buf = b
	_, err = w.w.Write(b)
	return err
}
