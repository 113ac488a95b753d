package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/internal/clock"
)

// maxWindowQueue bounds the send-queue room reserved for the partner's
// BNDUPD window (a partner may advertise up to 2^32-1).
const maxWindowQueue = 1 << 16

// maxBatch bounds the bytes the writer gathers into one Write.
const maxBatch = 64 << 10

// outFrame is one framed message waiting to be written. The writer patches
// the sent-time (bytes 6..9 of a failover frame) just before writing.
type outFrame struct {
	typ wire.MsgType
	b   []byte
}

// frame encodes and frames m (its SentTime is ignored: the writer sets it).
func frame(m *wire.Message) (outFrame, error) {
	mm := *m
	if mm.Type.HasSentTime() {
		mm.SentTime = 0
	}
	b, err := mm.AppendFrame(nil)
	if err != nil {
		return outFrame{}, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return outFrame{typ: m.Type, b: b}, nil
}

// inbound is one event from a session's reader, in stream order: a
// message, a message that did not decode, or the end of the stream.
type inbound struct {
	m         *wire.Message
	at        time.Time
	decodeErr error
	readErr   error // wraps ErrConnectionLost; the last event
}

// session is one established connection (the handshake is done).
//
// Ownership: conn is read only by readLoop and written only by writeLoop;
// everything else about the session's life (timers, dispatch, Handler
// calls) belongs to Run's goroutine. stop may be called from any of them;
// the first call wins.
type session struct {
	l       *Link
	conn    net.Conn
	rd      *wire.Reader // the handshake's reader: it may hold buffered bytes
	remote  string
	partner wire.ConnectInfo
	tls     bool
	skew    time.Duration // measured during the handshake
	// sendEvery is FO_SEND_TIME: the partner's keepalive time divided by
	// ContactPerKeepalive (RFC 8156 §6.6).
	sendEvery time.Duration

	out chan outFrame
	in  chan inbound

	once  sync.Once
	done  chan struct{} // closed by stop
	err   error         // why; set before done is closed
	final *outFrame     // written after the queue, before closing; set before done is closed
	guard clock.Timer   // closes conn if the final write hangs

	lastSent atomic.Int64 // clock UnixNano of the last write
	lastRecv atomic.Int64 // clock UnixNano of the last frame read
}

func (l *Link) newSession(conn net.Conn, rd *wire.Reader, ci wire.ConnectInfo, tls bool, skew time.Duration) *session {
	s := &session{
		l: l, conn: conn, rd: rd, remote: conn.RemoteAddr().String(), partner: ci, tls: tls, skew: skew,
		// Room for the partner's whole BNDUPD window on top of the rest, so
		// that flow control, not the queue, is what makes SendBndUpd wait.
		out:  make(chan outFrame, l.cfg.SendQueueLen+int(min(ci.MaxUnackedBndUpd, maxWindowQueue))),
		in:   make(chan inbound),
		done: make(chan struct{}),
	}
	s.sendEvery = time.Duration(ci.KeepaliveTime) * time.Second / time.Duration(l.cfg.ContactPerKeepalive)
	return s
}

// stop ends the session with err. With final, the writer first writes what
// is queued and final, then closes the connection (bounded by
// HandshakeTimeout); without, the connection is closed at once.
func (s *session) stop(err error, final *outFrame) {
	s.once.Do(func() {
		s.err = err
		s.final = final
		if final != nil {
			s.guard = s.l.clk.AfterFunc(s.l.cfg.HandshakeTimeout, func() { s.conn.Close() })
		}
		close(s.done)
		if final == nil {
			s.conn.Close()
		}
	})
}

// disconnect returns a DISCONNECT frame with st.
func (s *session) disconnect(st wire.Status) *outFrame {
	f, err := frame(wire.NewDisconnect(s.l.NewXID(), 0, st))
	if err != nil {
		return nil
	}
	return &f
}

// enqueue queues a message the link itself sends (STATE, CONTACT).
func (s *session) enqueue(m *wire.Message) error {
	f, err := frame(m)
	if err != nil {
		return err
	}
	select {
	case s.out <- f:
		return nil
	default:
		return ErrSendQueueFull
	}
}

// readLoop is the session's reader goroutine: it reads and decodes frames
// and hands them, in order, to Run's goroutine. It records the receive time
// right after each frame is read (RFC 8156 §7.1) and keeps lastRecv for the
// keepalive timer, so a busy Run goroutine does not delay the reset.
func (s *session) readLoop() {
	defer s.l.wg.Done()
	for {
		b, err := s.rd.ReadFrame()
		at := s.l.clk.Now()
		var ev inbound
		if err != nil {
			if errors.Is(err, io.EOF) {
				ev.readErr = fmt.Errorf("%w: the partner closed the connection", ErrConnectionLost)
			} else {
				ev.readErr = fmt.Errorf("%w: %v", ErrConnectionLost, err)
			}
		} else {
			s.lastRecv.Store(at.UnixNano())
			ev.m, ev.decodeErr = wire.DecodeMessage(b)
			ev.at = at
		}
		select {
		case s.in <- ev:
		case <-s.done:
			return
		}
		if ev.readErr != nil {
			return
		}
	}
}

// writeLoop is the session's writer goroutine, the only writer of conn
// after the handshake. It batches queued frames into one Write, stamping
// each sent-time with the clock just before the write.
func (s *session) writeLoop() {
	defer s.l.wg.Done()
	defer s.conn.Close() // every exit follows a stop: the session is over
	var batch []outFrame
	var buf []byte
	for {
		select {
		case f := <-s.out:
			batch = append(batch[:0], f)
			size := len(f.b)
			last := f.typ == wire.MsgDisconnect
		gather:
			for !last && size < maxBatch {
				select {
				case f := <-s.out:
					batch = append(batch, f)
					size += len(f.b)
					last = f.typ == wire.MsgDisconnect
				default:
					break gather
				}
			}
			var disc outFrame
			if last {
				// A DISCONNECT from Send: end the session first, so that the
				// partner closing in response is not reported as a lost
				// connection; the done branch writes it last.
				disc, batch = batch[len(batch)-1], batch[:len(batch)-1]
			}
			if len(batch) > 0 {
				var err error
				if buf, err = s.write(buf, batch); err != nil {
					s.stop(fmt.Errorf("%w: write: %v", ErrConnectionLost, err), nil)
					return
				}
			}
			if last {
				s.stop(ErrLocalDisconnect, &disc)
			}
		case <-s.done:
			if s.final != nil {
				batch = batch[:0]
			drain:
				for {
					select {
					case f := <-s.out:
						batch = append(batch, f)
					default:
						break drain
					}
				}
				batch = append(batch, *s.final)
				s.write(buf, batch)
				s.guard.Stop()
			}
			return
		}
	}
}

// write stamps and writes frames in one Write and counts them.
func (s *session) write(buf []byte, frames []outFrame) ([]byte, error) {
	now := s.l.clk.Now()
	ft := wire.ToFOTime(now)
	buf = buf[:0]
	for _, f := range frames {
		if f.typ.HasSentTime() {
			binary.BigEndian.PutUint32(f.b[2+4:], ft)
		}
		buf = append(buf, f.b...)
	}
	if _, err := s.conn.Write(buf); err != nil {
		return buf, err
	}
	s.lastSent.Store(now.UnixNano())
	s.l.mu.Lock()
	for _, f := range frames {
		s.l.stats.sent[f.typ]++
	}
	s.l.mu.Unlock()
	return buf, nil
}
