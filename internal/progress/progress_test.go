package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestQuietWhenNotTerminal(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "import", 100)
	for i := 0; i < 100; i++ {
		b.Add(1)
	}
	b.Done()
	if buf.Len() != 0 {
		t.Errorf("wrote %q to a non-terminal", buf.String())
	}
}

func TestDrawsAtMostEveryInterval(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	b := newBar(&buf, "restore", 1000, true, func() time.Time { return now })
	b.Set(1) // first draw
	for i := 2; i <= 500; i++ {
		b.Set(int64(i)) // same instant: no redraw
	}
	if n := strings.Count(buf.String(), "\r"); n != 1 {
		t.Fatalf("%d draws at one instant, want 1: %q", n, buf.String())
	}
	now = now.Add(time.Second)
	b.Set(500)
	b.Done()
	out := buf.String()
	if !strings.Contains(out, " 50%  500/1000") || !strings.HasSuffix(out, "\n") || !strings.Contains(out, "/s") {
		t.Errorf("output %q", out)
	}
}

func TestUnknownTotal(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	b := newBar(&buf, "export", 0, true, func() time.Time { return now })
	now = now.Add(2 * time.Second)
	b.Set(4000)
	if !strings.Contains(buf.String(), "export  4000  2.0k/s") {
		t.Errorf("output %q", buf.String())
	}
}
