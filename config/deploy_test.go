package config

import (
	"path/filepath"
	"testing"
)

// TestDeployExamples: the commented example configs in deploy/ load, and
// form a pair: same relationship, MCLT and subnets, opposite roles, each
// one's peer the other's local address.
func TestDeployExamples(t *testing.T) {
	pri, err := Load(filepath.Join("..", "deploy", "primary.toml"))
	if err != nil {
		t.Fatal(err)
	}
	sec, err := Load(filepath.Join("..", "deploy", "secondary.toml"))
	if err != nil {
		t.Fatal(err)
	}
	p, s := pri.Failover, sec.Failover
	if p == nil || s == nil {
		t.Fatal("deploy examples have no [failover] table")
	}
	if p.Role != "primary" || s.Role != "secondary" {
		t.Errorf("roles %q and %q", p.Role, s.Role)
	}
	if p.Relationship != s.Relationship || p.MCLT != s.MCLT {
		t.Errorf("relationship %q/%q, mclt %v/%v must match", p.Relationship, s.Relationship, p.MCLT, s.MCLT)
	}
	if p.Peer != s.Local || s.Peer != p.Local {
		t.Errorf("addresses do not pair: primary local %v peer %v, secondary local %v peer %v", p.Local, p.Peer, s.Local, s.Peer)
	}
	if len(pri.Subnets) != len(sec.Subnets) {
		t.Fatalf("%d and %d subnets", len(pri.Subnets), len(sec.Subnets))
	}
	for i := range pri.Subnets {
		a, b := pri.Subnets[i], sec.Subnets[i]
		if a.Prefix != b.Prefix || len(a.Pools) != len(b.Pools) || len(a.PDPools) != len(b.PDPools) {
			t.Errorf("subnet %d differs: %+v vs %+v", i, a, b)
		}
	}
}
