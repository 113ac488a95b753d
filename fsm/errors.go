package fsm

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapped text says
// what exactly is wrong.
var (
	// ErrInvalidCommand: a command that is well formed on the wire but not
	// acceptable (bad resource, unknown status, duplicate resource in one txn).
	ErrInvalidCommand = errors.New("invalid command")
	// ErrCorruptEntry: bytes that do not decode as a command.
	ErrCorruptEntry = errors.New("corrupt log entry")
	// ErrUnsupportedVersion: an entry or snapshot written by a newer Tandem.
	ErrUnsupportedVersion = errors.New("unsupported format version")
	// ErrConflict: a txn precondition did not hold; nothing was changed.
	ErrConflict = errors.New("binding changed concurrently")
	// ErrCorruptSnapshot: a snapshot that fails its checks (bad magic is
	// ErrForeignSnapshot instead).
	ErrCorruptSnapshot = errors.New("corrupt snapshot")
	// ErrForeignSnapshot: a file that is not a Tandem snapshot at all.
	ErrForeignSnapshot = errors.New("not a Tandem snapshot")
)
