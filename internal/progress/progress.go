// Package progress draws a one-line progress indicator for long operator
// commands (snapshot restore, lease import/export, log replay) on a
// terminal, and nothing at all otherwise, so scripts and logs stay clean.
//
// A Bar is used by one goroutine (the one doing the work); Add and Set are
// cheap enough to call per item: the line is redrawn at most every
// Interval. It must never write to stdout (which carries the command's
// output): it is given stderr.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Interval is the minimum time between redraws.
const Interval = 200 * time.Millisecond

// Bar is a progress line: "label  [=====>    ]  45%  450000/1000000  12.3k/s".
// With an unknown total (0) it shows the count and the rate only.
type Bar struct {
	w       io.Writer
	label   string
	total   int64
	n       int64
	start   time.Time
	last    time.Time
	now     func() time.Time
	drawn   bool
	enabled bool
}

// New returns a bar writing to w when w is a terminal (and enabled is
// true); otherwise a Bar whose methods do nothing.
func New(w io.Writer, label string, total int64) *Bar {
	return newBar(w, label, total, isTerminal(w), time.Now)
}

func newBar(w io.Writer, label string, total int64, enabled bool, now func() time.Time) *Bar {
	t := now()
	return &Bar{w: w, label: label, total: total, start: t, now: now, enabled: enabled}
}

// SetTotal changes the total (when it becomes known).
func (b *Bar) SetTotal(total int64) { b.total = total }

// Add advances the count by n.
func (b *Bar) Add(n int64) { b.Set(b.n + n) }

// Set sets the count.
func (b *Bar) Set(n int64) {
	b.n = n
	if !b.enabled {
		return
	}
	if t := b.now(); t.Sub(b.last) >= Interval {
		b.last = t
		b.draw(t)
	}
}

// Done draws the final state and ends the line.
func (b *Bar) Done() {
	if !b.enabled {
		return
	}
	b.draw(b.now())
	fmt.Fprintln(b.w)
	b.drawn = false
}

func (b *Bar) draw(t time.Time) {
	el := t.Sub(b.start).Seconds()
	rate := ""
	if el > 0 {
		rate = human(float64(b.n)/el) + "/s"
	}
	var line string
	if b.total > 0 {
		frac := float64(b.n) / float64(b.total)
		frac = min(max(frac, 0), 1)
		const width = 30
		fill := int(frac * width)
		bar := strings.Repeat("=", fill)
		if fill < width {
			bar += ">" + strings.Repeat(" ", width-fill-1)
		}
		line = fmt.Sprintf("%s [%s] %3.0f%%  %d/%d  %s", b.label, bar, frac*100, b.n, b.total, rate)
	} else {
		line = fmt.Sprintf("%s  %d  %s", b.label, b.n, rate)
	}
	fmt.Fprintf(b.w, "\r%s\x1b[K", line)
	b.drawn = true
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
