package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tandem-dhcp/tandem/internal/netns"
)

// TestChaosShort runs scripts/chaos for 4 rounds with a fixed seed: a pair
// under perfdhcp load and a recording client; seed 6 draws the partner link
// cut with the secondary killed while it is down, a link cut of 4 s, the
// primary killed for 7.8 s and the secondary for 8.2 s (`scripts/chaos
// -plan -seed 6 -rounds 4 -hold-max 9s`), so each server serves alone in
// COMMUNICATIONS-INTERRUPTED. auto-partner-down is off, to keep the run
// short. The recording clients ask for an address and a prefix each. The
// run must end clean: both servers NORMAL with nothing owed, the two lease
// databases agreeing on every ACTIVE binding, every address and prefix a
// recording client still holds bound to it on the server that granted it,
// none acknowledged to two clients at once, no server exit that was not a
// kill; and it must leave no namespace behind.
func TestChaosShort(t *testing.T) {
	netns.Require(t)
	netns.RequireTool(t, "perfdhcp")
	prefix := fmt.Sprintf("tx%d-", os.Getpid()%100000)
	dir := filepath.Join(t.TempDir(), "chaos")
	cmd := exec.Command("../scripts/chaos", "-rounds", "4", "-seed", "6", "-hold-max", "9s", "-gap-max", "3s",
		"-settle", "90s", "-clients", "100", "-auto-partner-down", "0s")
	cmd.Env = append(os.Environ(), "TANDEM_CHAOS_PREFIX="+prefix, "TANDEM_CHAOS_DIR="+dir)
	out, err := cmd.CombinedOutput()
	s := string(out)
	defer func() {
		ls, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(ls), prefix) {
			t.Errorf("namespaces left behind:\n%s", ls)
			down := exec.Command("../scripts/chaos", "-down")
			down.Env = cmd.Env
			_ = down.Run()
		}
	}()
	if err != nil {
		t.Fatalf("scripts/chaos: %v\n%s", err, s)
	}
	for _, want := range []string{"chaos: PASS: 4 rounds", "settled: both NORMAL, owed 0, unacked 0"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, role := range []string{"primary", "secondary"} {
		// The faults did what they were drawn to do: each server served
		// alone while its partner was killed.
		m := regexp.MustCompile(`(?m)^` + role + `: SIGKILLed \d+ times.*states seen: (.*)$`).FindStringSubmatch(s)
		if m == nil || !strings.Contains(m[1], "COMMUNICATIONS-INTERRUPTED") {
			t.Errorf("the %s never showed COMMUNICATIONS-INTERRUPTED (%v)", role, m)
		}
	}
	if strings.Contains(s, "VIOLATION") || strings.Contains(s, "DISPUTE") {
		t.Errorf("violations or disputes reported")
	}
	if strings.Contains(s, "recorder: 100 clients, 0 grants") || strings.Contains(s, " grants, 0 prefix grants") {
		t.Errorf("the recording clients got no address or no prefix: the checks were vacuous")
	}
	if t.Failed() {
		t.Logf("output:\n%s", s)
	}
}
