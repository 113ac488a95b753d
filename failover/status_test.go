package failover

import (
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/failover/wire"
)

// TestStatusTimesAndCodes: Status reports the RFC 8156 state codes, the
// time in state and the time since the partner's last message on the
// endpoint's clock, and the latter keeps growing while the partner is gone.
func TestStatusTimesAndCodes(t *testing.T) {
	p := upPair(t)
	waitFor(t, "the secondary's STATE NORMAL at the primary", func() bool { return p.pri.ep.Status().PartnerState == "NORMAL" })
	st := p.pri.ep.Status()
	if st.StateCode != uint8(wire.StateNormal) || st.PartnerStateCode != uint8(wire.StateNormal) || !st.CommunicationsOK {
		t.Fatalf("NORMAL pair: %+v", st)
	}
	if st.SecondsSinceContact == nil {
		t.Fatal("connected pair: no last contact")
	}
	in0 := st.SecondsInState
	p.advance(30 * time.Second)
	st = p.pri.ep.Status()
	if st.SecondsInState < in0+30 {
		t.Errorf("seconds in state %d after 30s more, was %d", st.SecondsInState, in0)
	}
	if s := *st.SecondsSinceContact; s < 0 || s > int64(testKeepalive/time.Second) {
		t.Errorf("seconds since contact %d on a live link (keepalive %v)", s, testKeepalive)
	}

	p.partition()
	p.waitStates("COMMUNICATIONS-INTERRUPTED", "COMMUNICATIONS-INTERRUPTED")
	st = p.pri.ep.Status()
	if st.StateCode != uint8(wire.StateCommInterrupted) || st.PartnerStateCode != 0 || st.CommunicationsOK {
		t.Fatalf("after the partition: %+v", st)
	}
	since, in := *st.SecondsSinceContact, st.SecondsInState
	if since < int64(testKeepalive/time.Second) {
		t.Errorf("seconds since contact %d after a keepalive expiry (%v)", since, testKeepalive)
	}
	p.clk.Advance(7 * time.Second)
	st = p.pri.ep.Status()
	if *st.SecondsSinceContact != since+7 || st.SecondsInState != in+7 {
		t.Errorf("7s later: since contact %d (was %d), in state %d (was %d)", *st.SecondsSinceContact, since, st.SecondsInState, in)
	}
}
