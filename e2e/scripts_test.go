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

// TestPairUpDownScripts runs the README's demonstration, scripts/pair-up,
// with its own namespace prefix and state directory, checks that both
// servers reached NORMAL and every client got an address and a prefix that
// both servers list, then runs scripts/pair-down and checks that nothing it
// made is left.
func TestPairUpDownScripts(t *testing.T) {
	netns.Require(t)
	netns.RequireTool(t, "dhclient")
	prefix := fmt.Sprintf("tu%d-", os.Getpid()%100000) // namespaces of this run only
	dir := filepath.Join(t.TempDir(), "pair")
	env := append(os.Environ(), "TANDEM_PAIR_PREFIX="+prefix, "TANDEM_PAIR_DIR="+dir, "CLIENTS=2", "TIMEOUT=45")
	down := func() string {
		cmd := exec.Command("../scripts/pair-down")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("pair-down: %v\n%s", err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { down() }) // idempotent: also after a failed pair-up

	up := exec.Command("../scripts/pair-up")
	up.Env = env
	out, err := up.CombinedOutput()
	if err != nil {
		t.Fatalf("pair-up: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"both servers are NORMAL", "primary in NORMAL", "secondary in NORMAL"} {
		if !strings.Contains(s, want) {
			t.Errorf("pair-up output lacks %q\n%s", want, s)
		}
	}
	addrs := regexp.MustCompile(`client \d+ \(\S+\): address (\S+) prefix (\S+)`).FindAllStringSubmatch(s, -1)
	if len(addrs) != 2 {
		t.Fatalf("want 2 clients with leases, got %d\n%s", len(addrs), s)
	}
	for _, m := range addrs {
		if m[2] == "none" {
			t.Errorf("client with address %s got no prefix", m[1])
		}
		// Listed by both servers' lease lists (printed twice each: primary, secondary).
		if n := strings.Count(s, "na   "+m[1]+" "); n != 2 {
			t.Errorf("address %s listed %d times in the two lease lists, want 2\n%s", m[1], n, s)
		}
	}

	out2 := down()
	if !strings.Contains(out2, "pair-down: done") {
		t.Errorf("pair-down output: %s", out2)
	}
	ls, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(ls), prefix) {
		t.Errorf("namespaces left after pair-down:\n%s", ls)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s left after pair-down (err %v)", dir, err)
	}
	if m, _ := filepath.Glob("/etc/netns/" + prefix + "*"); len(m) > 0 {
		t.Errorf("/etc/netns entries left: %v", m)
	}
}
