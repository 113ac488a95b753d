package role

import "testing"

func TestRole(t *testing.T) {
	for _, r := range []Role{Primary, Secondary} {
		got, err := Parse(r.String())
		if err != nil || got != r {
			t.Errorf("Parse(%q) = %v, %v", r.String(), got, err)
		}
		if r.Partner() == r || r.Partner().Partner() != r {
			t.Errorf("%v.Partner() = %v", r, r.Partner())
		}
	}
	if r, err := Parse("PRIMARY"); err != nil || r != Primary {
		t.Errorf("Parse is not case-insensitive: %v %v", r, err)
	}
	if _, err := Parse("tertiary"); err == nil {
		t.Error("Parse accepted tertiary")
	}
	if Role(0).String() != "role(0)" {
		t.Errorf("zero role prints %q", Role(0).String())
	}
}
