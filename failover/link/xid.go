package link

import "github.com/tandem-dhcp/tandem/failover/wire"

// xids hands out transaction-ids and remembers which of ours are
// outstanding (RFC 8156 §5.4): a BNDUPD until its BNDREPLY, an UPDREQ or
// UPDREQALL until UPDDONE, a POOLREQ until POOLRESP. It is guarded by
// Link.mu.
//
// Invariant: next never returns 0 or an outstanding id, so an id stays
// unique among outstanding messages even after the 24-bit counter wraps
// while an UPDREQALL is open for hours.
type xids struct {
	next        uint32                  // the candidate for the next id, 0..wire.MaxXID
	outstanding map[uint32]wire.MsgType // id -> type of our request awaiting an answer
	bndupds     int                     // how many outstanding are BNDUPDs
}

func (x *xids) init() { x.outstanding = map[uint32]wire.MsgType{} }

// alloc returns a fresh id. With at most 2^24-2 ids outstanding (flow
// control keeps it to a handful) the loop ends.
func (x *xids) alloc() uint32 {
	for {
		id := x.next & wire.MaxXID
		x.next = (id + 1) & wire.MaxXID
		if id == 0 {
			continue
		}
		if _, held := x.outstanding[id]; !held {
			return id
		}
	}
}

// hold records an outstanding request; false if id is already outstanding.
func (x *xids) hold(id uint32, t wire.MsgType) bool {
	if _, held := x.outstanding[id]; held {
		return false
	}
	x.outstanding[id] = t
	if t == wire.MsgBndUpd {
		x.bndupds++
	}
	return true
}

// answer releases the request id answered by a message of type resp, and
// reports whether there was such a request.
func (x *xids) answer(id uint32, resp wire.MsgType) bool {
	t, held := x.outstanding[id]
	if !held || requestFor(resp) != t && !(resp == wire.MsgUpdDone && t == wire.MsgUpdReqAll) {
		return false
	}
	delete(x.outstanding, id)
	if t == wire.MsgBndUpd {
		x.bndupds--
	}
	return true
}

// reset forgets every outstanding request (the connection is gone: the
// partner will answer none of them).
func (x *xids) reset() {
	clear(x.outstanding)
	x.bndupds = 0
}

// requestFor returns the request type a response answers (0 for messages
// that are not responses we track).
func requestFor(resp wire.MsgType) wire.MsgType {
	switch resp {
	case wire.MsgBndReply:
		return wire.MsgBndUpd
	case wire.MsgUpdDone:
		return wire.MsgUpdReq
	case wire.MsgPoolResp:
		return wire.MsgPoolReq
	}
	return 0
}

// tracked reports whether t is a request whose id stays outstanding.
func tracked(t wire.MsgType) bool {
	switch t {
	case wire.MsgBndUpd, wire.MsgUpdReq, wire.MsgUpdReqAll, wire.MsgPoolReq:
		return true
	}
	return false
}

// release forgets an id held by hold that was never sent.
func (x *xids) release(id uint32) {
	if t, held := x.outstanding[id]; held {
		delete(x.outstanding, id)
		if t == wire.MsgBndUpd {
			x.bndupds--
		}
	}
}
