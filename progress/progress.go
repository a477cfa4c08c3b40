// Package progress shows how far a long command has come: on a terminal, one line
// redrawn in place with a bar, the rate and the time left; elsewhere (a log file, a
// pipe, CI), plain lines at most every few seconds, so logs stay short and readable.
package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Bar reports the progress of one task of known size. It is safe for concurrent use.
type Bar struct {
	w     io.Writer
	tty   bool
	label string
	unit  string
	total int64
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	done   int64
	note   string
	start  time.Time
	shown  time.Time
	width  int // of the last line drawn on a terminal
	closed bool
}

// Options tune a Bar; the zero value suits most commands.
type Options struct {
	// Unit names what is counted ("images", "boxes"); "" shows bare numbers.
	Unit string
	// Terminal forces the redrawn line on (true) or off (false); nil detects whether
	// the writer is a terminal.
	Terminal *bool
	// Every is the least time between two plain lines; 0 means 5 s. On a terminal the
	// line is redrawn at most ten times a second.
	Every time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// New starts a bar for total steps of label, written to w.
func New(w io.Writer, label string, total int64, o Options) *Bar {
	b := &Bar{w: w, label: label, unit: o.Unit, total: total, every: o.Every, now: o.Now}
	if b.every <= 0 {
		b.every = 5 * time.Second
	}
	if b.now == nil {
		b.now = time.Now
	}
	if o.Terminal != nil {
		b.tty = *o.Terminal
	} else {
		b.tty = IsTerminal(w)
	}
	b.start = b.now()
	b.shown = b.start // the first plain line comes after Every, not at the first step
	return b
}

// Add counts n more steps done.
func (b *Bar) Add(n int64) { b.Set(-1, n, "") }

// Note counts n more steps done and shows what the last one was ("n07 activated").
// On a terminal only the latest note shows; in plain output each noted step gets its
// own line, since those are the lines a reader looks for.
func (b *Bar) Note(n int64, note string) { b.Set(-1, n, note) }

// Set sets the steps done to done when it is not negative, else adds add, with an
// optional note.
func (b *Bar) Set(done, add int64, note string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if done >= 0 {
		b.done = done
	} else {
		b.done += add
	}
	now := b.now()
	switch {
	case b.tty:
		if note != "" {
			b.note = note
		}
		if now.Sub(b.shown) >= 100*time.Millisecond || b.done >= b.total {
			b.draw(now)
		}
	case note != "":
		fmt.Fprintf(b.w, "%s %s: %s\n", b.label, b.count(), note)
		b.shown = now
	case now.Sub(b.shown) >= b.every:
		fmt.Fprintf(b.w, "%s %s%s\n", b.label, b.count(), b.rate(now))
		b.shown = now
	}
}

// Println prints a line of its own above the bar (a failure, the end of a stage): on a
// terminal the bar's line is cleared first and drawn again below it.
func (b *Bar) Println(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && !b.closed {
		fmt.Fprintf(b.w, "\r%s\r%s\n", strings.Repeat(" ", b.width), line)
		b.width = 0
		b.draw(b.now())
		return
	}
	fmt.Fprintln(b.w, line)
}

// Done ends the bar: the terminal line is drawn once more and ended, and plain output
// gets a last line with the total time.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	now := b.now()
	if b.tty {
		b.draw(now)
		fmt.Fprintln(b.w)
		return
	}
	fmt.Fprintf(b.w, "%s %s in %s\n", b.label, b.count(), now.Sub(b.start).Round(time.Millisecond))
}

func (b *Bar) count() string {
	s := fmt.Sprintf("%d/%d", b.done, b.total)
	if b.unit != "" {
		s += " " + b.unit
	}
	if b.total > 0 {
		s += fmt.Sprintf(" (%d%%)", b.done*100/b.total)
	}
	return s
}

func (b *Bar) rate(now time.Time) string {
	el := now.Sub(b.start)
	if b.done <= 0 || el <= 0 {
		return ""
	}
	per := float64(b.done) / el.Seconds()
	s := fmt.Sprintf(", %.1f/s", per)
	if left := b.total - b.done; left > 0 {
		s += ", " + (time.Duration(float64(left) / per * float64(time.Second))).Round(time.Second).String() + " left"
	}
	return s
}

const barWidth = 24

func (b *Bar) draw(now time.Time) {
	filled := 0
	if b.total > 0 {
		filled = int(min(b.done, b.total) * barWidth / b.total)
	}
	line := fmt.Sprintf("%s [%s%s] %s%s", b.label, strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), b.count(), b.rate(now))
	if b.note != "" {
		line += "  " + b.note
	}
	pad := ""
	if n := b.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n) // clear what a longer earlier line left
	}
	fmt.Fprintf(b.w, "\r%s%s", line, pad)
	b.width = len(line)
	b.shown = now
}
