package wire

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Callers test them with errors.Is; the wrapped text says
// exactly what is wrong (message type, option, enclosing option, offset).
var (
	// ErrMalformed: bytes that are not a valid failover message, or a Message
	// that cannot be encoded as one. Every decoding and encoding error except
	// ErrUnknownMessageType and ErrFrameTooLarge matches it, including the
	// more specific ErrMissingOption, ErrDuplicateOption, ErrWrongContainer
	// and ErrTooDeep.
	ErrMalformed = errors.New("malformed failover message")
	// ErrUnknownMessageType: a msg-type this package does not handle (not
	// REPLY, STARTTLS or 24-35).
	ErrUnknownMessageType = errors.New("unknown message type")
	// ErrMissingOption: an option the message must carry is absent.
	ErrMissingOption = errors.New("missing required option")
	// ErrDuplicateOption: an option that may appear once appears again (or
	// two IAs with the same IAID, or the same lease twice).
	ErrDuplicateOption = errors.New("duplicate option")
	// ErrWrongContainer: a known option where it does not belong (for example
	// OPTION_F_BINDING_STATUS at the top level, or OPTION_CLT_TIME directly in
	// OPTION_CLIENT_DATA).
	ErrWrongContainer = errors.New("option not allowed here")
	// ErrTooDeep: a container option nested deeper than MaxDepth.
	ErrTooDeep = errors.New("options nested too deep")
	// ErrFrameTooLarge: a frame longer than the reader's limit, or a message
	// longer than MaxMessageSize to be framed.
	ErrFrameTooLarge = errors.New("frame too large")
)

// Error is the error DecodeMessage and Encode return. It always wraps Kind,
// and also ErrMalformed unless Kind is ErrUnknownMessageType or
// ErrFrameTooLarge.
type Error struct {
	Kind    error      // one of the sentinels above
	MsgType MsgType    // the message being decoded or encoded (0 if not known yet)
	Option  OptionCode // the offending option (0: none, e.g. a header problem)
	In      OptionCode // the enclosing option (0: top level of the message)
	// Offset is the byte offset in the message (0 = msg-type) of the
	// offending option header or field, or -1 when not known: always when
	// encoding, and for rules about the whole message or a container's
	// required contents, which are checked on the typed value.
	Offset int
	Detail string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.MsgType != 0 {
		b.WriteString(": ")
		b.WriteString(e.MsgType.String())
	}
	if e.Option != 0 {
		b.WriteString(": ")
		b.WriteString(e.Option.String())
	}
	if e.In != 0 {
		b.WriteString(" in ")
		b.WriteString(e.In.String())
	} else if e.Option != 0 {
		b.WriteString(" at top level")
	}
	if e.Offset >= 0 {
		fmt.Fprintf(&b, " at offset %d", e.Offset)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns Kind and, for structural problems, ErrMalformed.
func (e *Error) Unwrap() []error {
	if e.Kind == ErrMalformed || e.Kind == ErrUnknownMessageType || e.Kind == ErrFrameTooLarge {
		return []error{e.Kind}
	}
	return []error{e.Kind, ErrMalformed}
}
