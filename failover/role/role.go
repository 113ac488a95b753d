// Package role names a failover endpoint's role in its relationship. It is
// the one definition the link, the state machine and the binding-update
// rules share; it owns nothing else.
package role

import (
	"fmt"
	"strings"
)

// Role is this server's role in the failover relationship. The zero value
// is invalid, so a configuration must say which.
type Role uint8

// Roles.
const (
	Primary   Role = 1
	Secondary Role = 2
)

// String returns "primary" or "secondary".
func (r Role) String() string {
	switch r {
	case Primary:
		return "primary"
	case Secondary:
		return "secondary"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Partner returns the other role.
func (r Role) Partner() Role {
	if r == Primary {
		return Secondary
	}
	return Primary
}

// Parse parses "primary" or "secondary" (any case).
func Parse(s string) (Role, error) {
	switch strings.ToLower(s) {
	case "primary":
		return Primary, nil
	case "secondary":
		return Secondary, nil
	}
	return 0, fmt.Errorf("role %q is not primary or secondary", s)
}
