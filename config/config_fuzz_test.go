package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary documents to Parse: it must never panic, and
// every error it returns must be an *Error (alone or joined) naming the file
// and either a line or a key, so that an operator can find the mistake.
// A document that parses must validate again unchanged (Validate is
// idempotent: Parse left nothing half-checked).
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(goodFailover))
	for _, p := range []string{"../deploy/primary.toml", "../deploy/secondary.toml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(""))
	f.Add([]byte("[dhcp]\nworkers = -1\n"))
	f.Add([]byte("[[subnet]]\nprefix = \"2001:db8::/129\"\n"))
	f.Add([]byte("data-dir = \"\x00\"\n[failover]\nmclt = \"1h\"\n"))
	f.Add([]byte("a = {b = [1, \"x\", {c = 1979-05-27T07:32:00Z}]}\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		const path = "fuzz.toml"
		c, err := Parse(path, doc)
		if err == nil {
			if c == nil {
				t.Fatal("no config and no error")
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse accepted a config that Validate then refuses: %v", err)
			}
			return
		}
		if c != nil {
			t.Fatalf("config together with error %v", err)
		}
		for _, e := range leafErrors(err) {
			var ce *Error
			if !errors.As(e, &ce) {
				t.Fatalf("error %q (%T) is not a *config.Error", e, e)
			}
			if ce.File != path {
				t.Fatalf("error %q names file %q, want %q", e, ce.File, path)
			}
			if ce.Line <= 0 && ce.Key == "" {
				t.Fatalf("error %q names neither a line nor a key", e)
			}
			if !strings.HasPrefix(ce.Error(), path) {
				t.Fatalf("error text %q does not start with the file", ce.Error())
			}
		}
	})
}

// leafErrors flattens errors.Join trees.
func leafErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	return []error{err}
}
