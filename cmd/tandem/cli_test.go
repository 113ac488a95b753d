package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	r := mustRun(t, "version")
	if !strings.Contains(r.stdout, "tandem "+testVersion) || !strings.Contains(r.stdout, runtime.Version()) {
		t.Errorf("version output lacks the version set with -ldflags or the Go version:\n%s", r.stdout)
	}
	r = mustRun(t, "version", "--json")
	var v jsonVersion
	decodeJSON(t, r.stdout, &v)
	if v.Version != testVersion || v.GoVersion != runtime.Version() {
		t.Errorf("version --json = %+v", v)
	}
	if r := mustRun(t, "--version"); !strings.Contains(r.stdout, testVersion) {
		t.Errorf("--version: %q", r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"log", "dump", "--bogus"}, []string{"flag provided but not defined: -bogus", "USAGE:", "tandem log dump"}},
		{[]string{"--bogus", "version"}, []string{"flag provided but not defined", "USAGE:"}},
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`, "tandem --help"}},
		{[]string{"log", "frobnicate"}, []string{`unknown command "frobnicate"`, "tandem log --help"}},
		{[]string{"--log-format", "xml", "version"}, []string{"--log-format", "console or json"}},
		{[]string{"--log-level", "loud", "version"}, []string{"--log-level", "debug, info, warn or error"}},
		{[]string{"snapshot", "inspect"}, []string{"exactly one FILE"}},
		{[]string{"version", "extra"}, []string{"takes no arguments"}},
		{[]string{"log", "info"}, []string{"--data-dir is required"}},
	} {
		r := tandem(t, tc.args...)
		if r.code != exitUsage {
			t.Errorf("tandem %q: exit %d, want %d\nstderr: %s", tc.args, r.code, exitUsage, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("tandem %q: stderr lacks %q:\n%s", tc.args, w, r.stderr)
			}
		}
	}
	// Help is not an error.
	if r := mustRun(t, "log", "--help"); !strings.Contains(r.stdout, "replay") {
		t.Errorf("log --help does not list replay:\n%s", r.stdout)
	}
	if r := mustRun(t, "help", "snapshot"); !strings.Contains(r.stdout, "inspect") {
		t.Errorf("help snapshot does not list inspect:\n%s", r.stdout)
	}
	if r := mustRun(t, "log"); !strings.Contains(r.stdout, "dump") {
		t.Errorf("log with no subcommand does not show its help:\n%s", r.stdout)
	}
}

func TestDebugLogging(t *testing.T) {
	r := mustRun(t, "--log-level", "debug", "--log-format", "json", "log", "info", "--data-dir", fx.dir)
	var line map[string]any
	first, _, _ := strings.Cut(r.stderr, "\n")
	decodeJSON(t, first, &line)
	if line["level"] != "debug" || line["msg"] != "opened log read-only" {
		t.Errorf("debug log line = %v", line)
	}
	// At the default level the diagnostic logger prints nothing here.
	if r := mustRun(t, "log", "info", "--data-dir", fx.dir); r.stderr != "" {
		t.Errorf("stderr at info level: %q", r.stderr)
	}
}

func TestReorderArgs(t *testing.T) {
	app := newApp(&env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	for _, tc := range []struct{ in, want []string }{
		{[]string{"tandem", "snapshot", "inspect", "F", "--json"}, []string{"tandem", "snapshot", "inspect", "--json", "F"}},
		{[]string{"tandem", "--log-level", "debug", "log", "dump", "--data-dir", "D", "--from", "3"},
			[]string{"tandem", "--log-level", "debug", "log", "dump", "--data-dir", "D", "--from", "3"}},
		{[]string{"tandem", "log", "replay", "x", "--until=2026-01-01T00:00:00Z", "--data-dir", "D"},
			[]string{"tandem", "log", "replay", "--until=2026-01-01T00:00:00Z", "--data-dir", "D", "x"}},
		{[]string{"tandem", "snapshot", "inspect", "--", "-odd-name", "--json"}, []string{"tandem", "snapshot", "inspect", "--", "-odd-name", "--json"}},
		{[]string{"tandem"}, []string{"tandem"}},
	} {
		if got := reorderArgs(app, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBindingJSON(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	b := fsm.Binding{
		Resource: fsm.AddrResource(fsm.IANA, netip.MustParseAddr("2001:db8::1")), Status: fsm.StatusActive,
		DUID: "\x00\x01\xAB\xCD", IAID: 42, PreferredLifetime: 1800, ValidLifetime: 3600,
		CLTT: now.Unix(), StartTimeOfState: now.Unix(), StateExpirationTime: now.Unix() + 3600,
		PartnerLifetime: now.Unix() + 5400, Rev: 17,
	}
	got := marshalMap(t, bindingJSON(b))
	want := map[string]any{
		"type": "na", "address": "2001:db8::1", "state": "ACTIVE", "duid": "0001abcd", "iaid": 42.0,
		"valid_until": "2026-11-27T11:00:00Z", "preferred_lifetime": 1800.0, "valid_lifetime": 3600.0,
		"cltt": "2026-11-27T10:00:00Z", "start_time_of_state": "2026-11-27T10:00:00Z",
		"state_expiration_time": "2026-11-27T11:00:00Z", "partner_lifetime": "2026-11-27T11:30:00Z",
		"rev": 17.0, "owed": true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bindingJSON(ACTIVE na) =\n%v\nwant\n%v", got, want)
	}

	p := fsm.Binding{
		Resource: fsm.PrefixResource(netip.MustParsePrefix("2001:db8:8000::/56")), Status: fsm.StatusFreeBackup,
		Flags: fsm.FlagResent, StateExpirationTime: now.Unix(),
	}
	got = marshalMap(t, bindingJSON(p))
	want = map[string]any{
		"type": "pd", "prefix": "2001:db8:8000::/56", "state": "FREE-BACKUP", "duid": "", "iaid": 0.0,
		"preferred_lifetime": 0.0, "valid_lifetime": 0.0, "state_expiration_time": "2026-11-27T10:00:00Z",
		"flags": []any{"resent"}, "owed": false,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bindingJSON(FREE-BACKUP pd) =\n%v\nwant\n%v", got, want)
	}
}

func TestCountsJSONHasEveryKey(t *testing.T) {
	var c fsm.Counts
	c[fsm.IAPD][fsm.StatusAbandoned] = 3
	m := countsJSON(c)
	if len(m) != 3 || len(m["ta"]) != 8 || m["pd"]["ABANDONED"] != 3 || m["na"]["ACTIVE"] != 0 {
		t.Errorf("countsJSON = %v", m)
	}
}

func marshalMap(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCompletion: the scripts are printed, and the binary answers the
// completion requests they make with the next words.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh"} {
		r := mustRun(t, "completion", sh)
		if !strings.Contains(r.stdout, "--generate-bash-completion") || !strings.Contains(r.stdout, "tandem") {
			t.Errorf("completion %s:\n%s", sh, r.stdout)
		}
	}
	r := mustRun(t, "log", "--generate-bash-completion")
	for _, w := range []string{"info", "dump", "replay", "history", "states"} {
		if !strings.Contains("\n"+r.stdout, "\n"+w+"\n") {
			t.Errorf("log completions lack %q:\n%s", w, r.stdout)
		}
	}
	r = mustRun(t, "log", "history", "--re", "--generate-bash-completion")
	if !strings.Contains(r.stdout, "--resource") {
		t.Errorf("flag completion for --re: %q", r.stdout)
	}
}
