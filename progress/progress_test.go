package progress

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

// TestPlain: outside a terminal, a line at most every Every, one per noted step, and
// a last line with the total time; no carriage returns.
func TestPlain(t *testing.T) {
	var out bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	b := New(&out, "dump", 100, Options{Unit: "images", Terminal: no(), Every: 5 * time.Second, Now: c.now})
	for range 100 {
		c.add(200 * time.Millisecond)
		b.Add(1)
	}
	b.Note(0, "checked")
	b.Done()
	b.Done()
	b.Add(5) // after Done: ignored
	text := out.String()
	if strings.Contains(text, "\r") {
		t.Fatalf("carriage return in plain output:\n%q", text)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	// 20 s of work at one line per 5 s: 4 or 5 progress lines, the note, the end.
	if len(lines) < 5 || len(lines) > 7 {
		t.Fatalf("%d lines:\n%s", len(lines), text)
	}
	if !strings.Contains(lines[0], "dump 25/100 images (25%), 5.0/s, 15s left") {
		t.Errorf("first line %q", lines[0])
	}
	if want := "dump 100/100 images (100%): checked"; lines[len(lines)-2] != want {
		t.Errorf("note line %q, want %q", lines[len(lines)-2], want)
	}
	if want := "dump 100/100 images (100%) in 20s"; lines[len(lines)-1] != want {
		t.Errorf("last line %q, want %q", lines[len(lines)-1], want)
	}
}

// TestTerminal: on a terminal one line is redrawn in place, no more than ten times a
// second, with the latest note, and ended with a newline.
func TestTerminal(t *testing.T) {
	var out bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	b := New(&out, "push", 20, Options{Unit: "boxes", Terminal: yes(), Now: c.now})
	for i := range 20 {
		c.add(10 * time.Millisecond)
		b.Note(1, "n"+strings.Repeat("x", 20-i)+" activated")
	}
	b.Done()
	text := out.String()
	if strings.Count(text, "\n") != 1 || !strings.HasSuffix(text, "\n") {
		t.Fatalf("want one line ended once:\n%q", text)
	}
	draws := strings.Count(text, "\r")
	// 200 ms of notes: a draw at most every 100 ms, plus the one at 20/20 and Done's.
	if draws < 2 || draws > 5 {
		t.Errorf("%d draws:\n%q", draws, text)
	}
	last := text[strings.LastIndex(text, "\r")+1:]
	if !strings.HasPrefix(last, "push [########################] 20/20 boxes (100%)") || !strings.Contains(last, "nx activated") {
		t.Errorf("last draw %q", last)
	}
}

// TestTerminalPads: a line shorter than the one it replaces is padded with spaces, so
// nothing of the longer one is left on screen.
func TestTerminalPads(t *testing.T) {
	var out bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	b := New(&out, "push", 2, Options{Terminal: yes(), Now: c.now})
	c.add(time.Second)
	b.Note(0, "a long note about the first box")
	c.add(time.Second)
	b.Note(0, "short")
	draws := strings.Split(out.String(), "\r")[1:]
	if len(draws) != 2 {
		t.Fatalf("draws %q", draws)
	}
	if len(draws[1]) != len(draws[0]) || !strings.HasSuffix(draws[1], "short"+strings.Repeat(" ", len("a long note about the first box")-len("short"))) {
		t.Errorf("second draw %q does not cover the first %q", draws[1], draws[0])
	}
}

func TestIsTerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) {
		t.Error("a buffer taken for a terminal")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Errorf("%s taken for a terminal", os.DevNull)
	}
}

// TestPrintln: a line of its own goes above the bar on a terminal, and as it is in
// plain output.
func TestPrintln(t *testing.T) {
	var tty, plain bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	bt := New(&tty, "push", 3, Options{Terminal: yes(), Now: c.now})
	bp := New(&plain, "push", 3, Options{Terminal: no(), Now: c.now})
	for _, b := range []*Bar{bt, bp} {
		c.add(time.Second)
		b.Note(1, "n01 activated")
		b.Println("n02 failed: golden output off")
	}
	if got := plain.String(); got != "push 1/3 (33%): n01 activated\nn02 failed: golden output off\n" {
		t.Errorf("plain %q", got)
	}
	got := tty.String()
	i := strings.Index(got, "n02 failed: golden output off\n")
	if i < 0 || !strings.HasPrefix(got[i+len("n02 failed: golden output off\n"):], "\rpush [") {
		t.Errorf("terminal %q: want the line, then the bar drawn again", got)
	}
}
