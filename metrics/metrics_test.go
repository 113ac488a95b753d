package metrics

import (
	"net/netip"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tandem-dhcp/tandem/failover"
	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/server"
)

func TestName(t *testing.T) {
	for kea, want := range map[string]string{"pkt6-received": "tandem_pkt6_received_total", "v6-allocation-fail": "tandem_v6_allocation_fail_total"} {
		if got := Name(kea, true); got != want {
			t.Errorf("Name(%q) = %q, want %q", kea, got, want)
		}
	}
	if got := Name("assigned-nas", false); got != "tandem_assigned_nas" {
		t.Errorf("gauge name %q", got)
	}
}

func gather(t *testing.T, r *Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range mfs {
		out[f.GetName()] = f
	}
	return out
}

// The failover gauges follow the endpoint's Status at each scrape; the
// last-contact age is absent until the partner was ever heard.
func TestFailoverGauges(t *testing.T) {
	st := failover.Status{Role: "secondary", State: "COMMUNICATIONS-INTERRUPTED", StateCode: 3, CommunicationsOK: false,
		MCLT: "1h0m0s", SecondsInState: 42, UnackedUpdates: 2, OwedUpdates: 5, ClockSkewSeconds: -1}
	r := New()
	err := r.Register(Sources{
		Counters: func(fn func(string, string, uint64)) { fn("pkt6-received", "packets received", 9) },
		Pools: func() []server.PoolUsage {
			return []server.PoolUsage{{Subnet: netip.MustParsePrefix("2001:db8:1::/64"), Type: fsm.IANA,
				First: netip.MustParseAddr("2001:db8:1::1"), Last: netip.MustParseAddr("2001:db8:1::4"), Used: 1, Total: 4, Active: 3, Abandoned: 1}}
		},
		Failover: func() failover.Status { return st },
	})
	if err != nil {
		t.Fatal(err)
	}
	r.ObserveCommit(3 * time.Millisecond)
	mf := gather(t, r)
	want := map[string]float64{"tandem_pkt6_received_total": 9, "tandem_failover_state": 3, "tandem_failover_partner_state": 0,
		"tandem_failover_state_seconds": 42, "tandem_failover_unacked_updates": 2, "tandem_failover_owed_updates": 5,
		"tandem_failover_clock_skew_seconds": -1, "tandem_failover_connection_up": 0, "tandem_failover_mclt_seconds": 3600,
		"tandem_assigned_nas": 3, "tandem_declined_addresses": 1, "tandem_assigned_pds": 0, "tandem_pool_utilisation_ratio": 0.25}
	for name, v := range want {
		f := mf[name]
		if f == nil || len(f.Metric) != 1 {
			t.Errorf("%s: %v", name, f)
			continue
		}
		m := f.Metric[0]
		got := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		if got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	if f := mf["tandem_failover_state_info"]; f == nil || len(f.Metric[0].Label) != 3 || f.Metric[0].Label[0].GetValue() != "unknown" {
		t.Errorf("state info: %v", f)
	}
	if mf["tandem_failover_last_contact_age_seconds"] != nil {
		t.Error("last contact age exported although the partner was never heard")
	}
	if h := mf["tandem_raft_commit_duration_seconds"]; h == nil || h.Metric[0].GetHistogram().GetSampleCount() != 1 {
		t.Errorf("commit histogram: %v", h)
	}

	ago := int64(17)
	st.SecondsSinceContact, st.PartnerState, st.PartnerStateCode, st.CommunicationsOK = &ago, "NORMAL", 2, true
	mf = gather(t, r)
	if v := mf["tandem_failover_last_contact_age_seconds"].Metric[0].GetGauge().GetValue(); v != 17 {
		t.Errorf("last contact age %v, want 17", v)
	}
	if v := mf["tandem_failover_connection_up"].Metric[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("connection up %v", v)
	}
	if mf["tandem_failover_rejected_connections_total"] != nil {
		t.Error("rejected connections exported although none were refused")
	}

	st.RejectedConnections = map[string]uint64{"not-partner": 1000, "mclt": 2}
	mf = gather(t, r)
	got := map[string]float64{}
	if f := mf["tandem_failover_rejected_connections_total"]; f != nil {
		for _, m := range f.Metric {
			got[m.Label[0].GetName()+"="+m.Label[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["reason=not-partner"] != 1000 || got["reason=mclt"] != 2 {
		t.Errorf("tandem_failover_rejected_connections_total: %v", got)
	}
}

func TestRegisterNeedsSources(t *testing.T) {
	if err := New().Register(Sources{}); err == nil {
		t.Fatal("Register without counters and pools succeeded")
	}
}
