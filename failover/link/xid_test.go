package link

import (
	"testing"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

// TestXIDWrapUpdReq is digest conformance item 5 for UPDREQ (TestXIDWrap
// covers UPDREQALL and BNDUPD over a live link): an UPDREQ's
// transaction-id stays reserved while the 24-bit counter wraps, and only
// its UPDDONE releases it (not a BNDREPLY or POOLRESP
// with the same id).
func TestXIDWrapUpdReq(t *testing.T) {
	var x xids
	x.init()
	x.next = 41
	req := x.alloc()
	if req != 41 || !x.hold(req, wire.MsgUpdReq) {
		t.Fatalf("UPDREQ id %d not held", req)
	}
	if x.hold(req, wire.MsgBndUpd) {
		t.Fatal("a second outstanding message got the UPDREQ's id")
	}
	// A full wrap of the counter: the id never comes back, 0 never appears.
	for i := 0; i < int(wire.MaxXID)+10; i++ {
		id := x.alloc()
		if id == req || id == 0 || id > wire.MaxXID {
			t.Fatalf("after %d ids: got %#x (the UPDREQ holds %#x)", i, id, req)
		}
	}
	// Answers of another type do not release it.
	for _, resp := range []wire.MsgType{wire.MsgBndReply, wire.MsgPoolResp} {
		if x.answer(req, resp) {
			t.Fatalf("%v released the UPDREQ's id", resp)
		}
	}
	x.next = req
	if id := x.alloc(); id == req {
		t.Fatal("id reused before UPDDONE")
	}
	if !x.answer(req, wire.MsgUpdDone) {
		t.Fatal("UPDDONE did not match the UPDREQ")
	}
	if x.answer(req, wire.MsgUpdDone) {
		t.Fatal("a second UPDDONE matched the same UPDREQ")
	}
	x.next = req
	if id := x.alloc(); id != req {
		t.Fatalf("after UPDDONE the id %d is free again, got %d", req, id)
	}
}
