package machine

import (
	"fmt"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
	"github.com/tandem-dhcp/tandem/fsm"
)

// ActionKind says what the driver must do for one Action.
type ActionKind uint8

// Action kinds. The driver executes a batch of actions in order; see the
// package documentation for what each one requires.
const (
	// EnterState: the endpoint moved From -> To (Reason says why). For logs
	// and metrics only; one per hop, so one event may report several.
	EnterState ActionKind = iota + 1
	// Persist: commit Record to stable storage (the raft log) before
	// executing the next action. If it fails, stop: the machine is ahead of
	// storage.
	Persist
	// SendState: send a STATE message carrying State. Emitted only while
	// communications are OK, always after the Persist of the same batch.
	SendState
	// SendUpdReq: send UPDREQ; deliver the UPDDONE that answers it as
	// UpdDone(now, Req).
	SendUpdReq
	// SendUpdReqAll: send UPDREQALL; deliver its UPDDONE as UpdDone(now, Req).
	SendUpdReqAll
	// FlushUpdates: send a BNDUPD for every binding with an update owed to
	// the partner (entering NORMAL, RFC 8156 §8.8).
	FlushUpdates
	// SendPoolReq: send POOLREQ (secondary entering NORMAL, after the
	// FlushUpdates of the same batch, RFC 8156 §8.8).
	SendPoolReq
	// SetTimer: (re)arm timer Timer to fire at At, replacing any earlier
	// deadline of the same timer; when it fires call Timer(now, Timer).
	SetTimer
	// CancelTimer: disarm timer Timer.
	CancelTimer
	// Alarm: raise an operator alarm; Reason is the text.
	Alarm
	// DropConnection: close the partner connection (send DISCONNECT);
	// Reason says why. The link then reports the loss (CommDown).
	DropConnection
)

var actionKindNames = [...]string{
	EnterState:     "EnterState",
	Persist:        "Persist",
	SendState:      "SendState",
	SendUpdReq:     "SendUpdReq",
	SendUpdReqAll:  "SendUpdReqAll",
	FlushUpdates:   "FlushUpdates",
	SendPoolReq:    "SendPoolReq",
	SetTimer:       "SetTimer",
	CancelTimer:    "CancelTimer",
	Alarm:          "Alarm",
	DropConnection: "DropConnection",
}

// String returns the kind's name, e.g. "SendState".
func (k ActionKind) String() string {
	if k > 0 && int(k) < len(actionKindNames) {
		return actionKindNames[k]
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// TimerKind names one of the machine's timers. Each kind has at most one
// deadline at a time.
type TimerKind uint8

// Timers.
const (
	// TimerStartup is the STARTUP timer (RFC 8156 §8.3.2 step 3).
	TimerStartup TimerKind = iota + 1
	// TimerRecoverWait ends RECOVER-WAIT: TIME-OF-FAILURE (or the start
	// time) + MCLT (§8.6.2).
	TimerRecoverWait
	// TimerAutoPartnerDown is the optional auto-partner-down timer of
	// COMMUNICATIONS-INTERRUPTED (§8.9).
	TimerAutoPartnerDown
	// TimerCheckpoint persists LastOperating while the server is serving
	// clients, so that TIME-OF-FAILURE after a crash is bounded.
	TimerCheckpoint
	// TimerUpdateStall drops the connection when an UPDREQ or UPDREQALL has
	// seen no message from the partner for Config.UpdateStall (§8.5.2).
	TimerUpdateStall

	numTimers = int(TimerUpdateStall)
)

var timerNames = [...]string{
	TimerStartup:         "startup",
	TimerRecoverWait:     "recover-wait",
	TimerAutoPartnerDown: "auto-partner-down",
	TimerCheckpoint:      "checkpoint",
	TimerUpdateStall:     "update-stall",
}

// String returns the timer's name, e.g. "recover-wait".
func (k TimerKind) String() string {
	if k > 0 && int(k) < len(timerNames) {
		return timerNames[k]
	}
	return fmt.Sprintf("timer(%d)", uint8(k))
}

// Action is one thing the driver must do. Only the fields named for Kind
// are set.
type Action struct {
	Kind ActionKind
	// Record is the complete persistent record to store (Persist).
	Record fsm.EndpointState
	// State is the STATE message content (SendState).
	State wire.StateInfo
	// Req identifies an UPDREQ/UPDREQALL (SendUpdReq, SendUpdReqAll); pass
	// it back with the UPDDONE that answers it.
	Req uint64
	// Timer and At: which timer, and its deadline (SetTimer, CancelTimer).
	Timer TimerKind
	At    time.Time
	// From and To: the hop (EnterState).
	From, To wire.ServerState
	// Reason: why (EnterState, DropConnection) or the alarm text (Alarm).
	Reason string
}

// String is a short form for logs and test failures, e.g.
// "EnterState(COMMUNICATIONS-INTERRUPTED)", "SetTimer(startup)",
// "SendState(NORMAL)".
func (a Action) String() string {
	switch a.Kind {
	case EnterState:
		return fmt.Sprintf("EnterState(%v)", a.To)
	case Persist:
		return fmt.Sprintf("Persist(%v)", wire.ServerState(a.Record.State))
	case SendState:
		if a.State.Flags&wire.ServerFlagStartup != 0 {
			return fmt.Sprintf("SendState(STARTUP:%v)", a.State.State)
		}
		return fmt.Sprintf("SendState(%v)", a.State.State)
	case SetTimer, CancelTimer:
		return fmt.Sprintf("%v(%v)", a.Kind, a.Timer)
	}
	return a.Kind.String()
}
