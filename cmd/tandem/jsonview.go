package main

// JSON shapes printed by --json (and by log dump). Keys are snake_case and
// stable: scripts may rely on them. Later commands (lease list, status)
// reuse bindingJSON, endpointJSON and countsJSON so a binding looks the same
// everywhere.
//
// Conventions: times are RFC 3339 strings in UTC; a binding time that is not
// set (0) is left out; DUIDs are lowercase hex without separators; binding
// states are the RFC 8156 names (ACTIVE, FREE-BACKUP, ...).

import (
	"encoding/hex"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/tandem-dhcp/tandem/control"
	"github.com/tandem-dhcp/tandem/fsm"
)

// The binding and resource shapes are control's, so a lease looks the same
// in lease list, log dump and log replay.
type (
	jsonResource = control.Resource
	jsonBinding  = control.Lease
)

func resourceJSON(r fsm.Resource) jsonResource { return control.ResourceOf(r) }

// bindingJSON converts b to its JSON shape.
func bindingJSON(b fsm.Binding) jsonBinding { return control.LeaseFromBinding(&b) }

// jsonEndpoint is the failover endpoint's persistent record. Server states
// are the RFC 8156 numeric codes (0 = none).
type jsonEndpoint struct {
	State             uint8  `json:"state"`
	PreviousState     uint8  `json:"previous_state"`
	StateSince        string `json:"state_since,omitempty"`
	PartnerState      uint8  `json:"partner_state"`
	PartnerStateSince string `json:"partner_state_since,omitempty"`
	LastContact       string `json:"last_contact,omitempty"`
	LastOperating     string `json:"last_operating,omitempty"`
	PartnerDownTime   string `json:"partner_down_time,omitempty"`
	Communicated      bool   `json:"communicated"`
	HeldInStartup     bool   `json:"held_in_startup"`
}

func endpointJSON(e fsm.EndpointState) jsonEndpoint {
	return jsonEndpoint{
		State:             e.State,
		PreviousState:     e.PreviousState,
		StateSince:        fmtUnix(e.StateSince),
		PartnerState:      e.PartnerState,
		PartnerStateSince: fmtUnix(e.PartnerStateSince),
		LastContact:       fmtUnix(e.LastContact),
		LastOperating:     fmtUnix(e.LastOperating),
		PartnerDownTime:   fmtUnix(e.PartnerDownTime),
		Communicated:      e.Communicated,
		HeldInStartup:     e.HeldInStartup,
	}
}

// iaTypes and statuses list the keys of countsJSON, in output order.
var (
	iaTypes  = []fsm.IAType{fsm.IANA, fsm.IATA, fsm.IAPD}
	statuses = []fsm.Status{fsm.StatusActive, fsm.StatusExpired, fsm.StatusReleased, fsm.StatusPendingFree,
		fsm.StatusFree, fsm.StatusFreeBackup, fsm.StatusAbandoned, fsm.StatusReset}
)

// countsJSON returns {"na": {"ACTIVE": n, ...}, "ta": {...}, "pd": {...}}
// with every type and every status present (zeros included), so a script
// can index it without checking.
func countsJSON(c fsm.Counts) map[string]map[string]int {
	out := make(map[string]map[string]int, len(iaTypes))
	for _, t := range iaTypes {
		m := make(map[string]int, len(statuses))
		for _, s := range statuses {
			m[s.String()] = c[t][s]
		}
		out[t.String()] = m
	}
	return out
}

// duidHex is lowercase hex without separators ("" for none).
func duidHex(b []byte) string { return hex.EncodeToString(b) }

// --- snapshot inspect ---

// jsonSnapshotInspect is `tandem snapshot inspect --json`. Header fields are
// null when the header itself could not be read.
type jsonSnapshotInspect struct {
	File            string                    `json:"file"`
	Version         *uint16                   `json:"version"`
	Index           *uint64                   `json:"index"`
	Term            *uint64                   `json:"term"`
	LastCommandTime *string                   `json:"last_command_time"`
	Created         *string                   `json:"created"`
	SizeBytes       int64                     `json:"size_bytes"`
	Bindings        *uint64                   `json:"bindings"`      // count in the header
	BindingsRead    uint64                    `json:"bindings_read"` // records that decoded
	Counts          map[string]map[string]int `json:"counts"`
	ServerDUID      *string                   `json:"server_duid"`
	Endpoint        *jsonEndpoint             `json:"endpoint"`
	ChecksumOK      bool                      `json:"checksum_ok"`
	Error           *string                   `json:"error"`
}

// --- log info ---

// jsonLogInfo is `tandem log info --json`.
type jsonLogInfo struct {
	DataDir         string             `json:"data_dir"`
	DBBytes         int64              `json:"db_bytes"`
	FirstIndex      uint64             `json:"first_index"`
	LastIndex       uint64             `json:"last_index"`
	Entries         uint64             `json:"entries"`
	FirstAppendedAt *string            `json:"first_appended_at"`
	LastAppendedAt  *string            `json:"last_appended_at"`
	Snapshots       []jsonSnapshotInfo `json:"snapshots"` // newest first
}

// jsonSnapshotInfo is one snapshot kept in a data dir. Header fields are
// null when Error is set.
type jsonSnapshotInfo struct {
	ID              string  `json:"id"`
	Index           uint64  `json:"index"`
	Term            uint64  `json:"term"`
	SizeBytes       int64   `json:"size_bytes"`
	Path            string  `json:"path"`
	Created         *string `json:"created"`
	LastCommandTime *string `json:"last_command_time"`
	Bindings        *uint64 `json:"bindings"`
	Error           *string `json:"error"`
}

// --- log dump ---

// jsonLogEntry is one line of `tandem log dump`. Which keys are present
// depends on the entry: non-command entries have only index, term, type
// and appended_at; a damaged entry has index and error (and term, type,
// appended_at when they could be read).
type jsonLogEntry struct {
	Index      uint64        `json:"index"`
	Term       uint64        `json:"term,omitempty"`
	Type       string        `json:"type,omitempty"`
	AppendedAt string        `json:"appended_at,omitempty"`
	Time       string        `json:"time,omitempty"`
	Origin     string        `json:"origin,omitempty"`
	Note       string        `json:"note,omitempty"`
	Command    string        `json:"command,omitempty"`
	Ops        []jsonOp      `json:"ops,omitempty"`
	ServerDUID string        `json:"server_duid,omitempty"`
	Endpoint   *jsonEndpoint `json:"endpoint,omitempty"`
	Error      string        `json:"error,omitempty"`
}

// jsonOp is one op of a txn. IfRev is the precondition (0: the binding must
// not exist); absent when the op has none.
type jsonOp struct {
	Op       string       `json:"op"` // "put" or "delete"
	Resource jsonResource `json:"resource"`
	IfRev    *uint64      `json:"if_rev,omitempty"`
	Binding  *jsonBinding `json:"binding,omitempty"`
}

// logTypeName names a raft log entry type: command, noop, barrier,
// configuration, add-peer, remove-peer.
func logTypeName(t raft.LogType) string {
	switch t {
	case raft.LogCommand:
		return "command"
	case raft.LogNoop:
		return "noop"
	case raft.LogAddPeerDeprecated:
		return "add-peer"
	case raft.LogRemovePeerDeprecated:
		return "remove-peer"
	case raft.LogBarrier:
		return "barrier"
	case raft.LogConfiguration:
		return "configuration"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// commandJSON fills the command fields of j from c.
func commandJSON(j *jsonLogEntry, c *fsm.Command) {
	j.Time = fmtUnixNano(c.Time)
	j.Origin = c.Origin.String()
	j.Note = c.Note
	j.Command = c.Type.String()
	switch c.Type {
	case fsm.CmdTxn:
		j.Ops = make([]jsonOp, len(c.Ops))
		for i := range c.Ops {
			op := &c.Ops[i]
			o := jsonOp{Op: "put", Resource: resourceJSON(op.Resource)}
			if op.IfRev != fsm.AnyRev {
				rev := op.IfRev
				o.IfRev = &rev
			}
			if op.Delete {
				o.Op = "delete"
			} else {
				b := bindingJSON(op.Binding)
				o.Binding = &b
			}
			j.Ops[i] = o
		}
	case fsm.CmdSetServerDUID:
		j.ServerDUID = duidHex(c.ServerDUID)
	case fsm.CmdSetEndpoint:
		if c.Endpoint != nil {
			e := endpointJSON(*c.Endpoint)
			j.Endpoint = &e
		}
	}
}

// --- log replay ---

// jsonReplay is `tandem log replay --json`.
type jsonReplay struct {
	DataDir string `json:"data_dir"`
	// The state is as of this entry (the last command applied, or the
	// snapshot's index) and the time carried by that command.
	AsOfIndex uint64  `json:"as_of_index"`
	AsOfTerm  uint64  `json:"as_of_term"`
	AsOfTime  *string `json:"as_of_time"`
	// What was asked for (null when not given).
	TargetLastIndex *uint64 `json:"target_last_index"`
	TargetUntil     *string `json:"target_until"`
	// FromSnapshot is the snapshot the replay started from; null: from the
	// empty state at the start of the log.
	FromSnapshot *jsonSnapshotRef          `json:"from_snapshot"`
	Applied      int                       `json:"applied"`
	Damaged      []jsonDamaged             `json:"damaged"`
	Total        int                       `json:"total"`
	Counts       map[string]map[string]int `json:"counts"`
	Bindings     []jsonBinding             `json:"bindings"` // in resource order
	ServerDUID   *string                   `json:"server_duid"`
	Endpoint     jsonEndpoint              `json:"endpoint"`
}

type jsonSnapshotRef struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
}

// jsonDamaged is a log entry that could not be read or decoded.
type jsonDamaged struct {
	Index uint64 `json:"index"`
	Error string `json:"error"`
}
