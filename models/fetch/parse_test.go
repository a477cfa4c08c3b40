package fetch

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 0-9/10", 0, 10, true},
		{"bytes 100-999/1000", 100, 1000, true},
		{"bytes 5-9/*", 5, -1, true},
		{"bytes 9-5/10", 0, 0, false},
		{"bytes 0-9/9", 0, 0, false},
		{"bytes -1-9/10", 0, 0, false},
		{"bytes 0-9", 0, 0, false},
		{"items 0-9/10", 0, 0, false},
		{"bytes */10", 0, 0, false},
		{"", 0, 0, false},
	} {
		start, total, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || tc.ok && (start != tc.start || total != tc.total) {
			t.Errorf("%q: %d %d %v, want %d %d ok=%v", tc.in, start, total, err, tc.start, tc.total, tc.ok)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":      0,
		"0":     0,
		"-3":    0,
		"7":     7 * time.Second,
		"86400": MaxBackoff,
		"soon":  0,
		now.Add(10 * time.Second).Format(http.TimeFormat): 10 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
		now.Add(time.Hour).Format(http.TimeFormat):        MaxBackoff,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}

// FuzzParseContentRange feeds the parser server bytes: it must not panic, and what it
// accepts must be a range inside the total it names.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes 9-5/10", "bytes 0-9223372036854775807/1", "bytes --/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, err := parseContentRange(s)
		if err != nil {
			if !strings.Contains(err.Error(), "content-range") {
				t.Errorf("error %q does not name the header", err)
			}
			return
		}
		if start < 0 || total != -1 && total <= start {
			t.Errorf("%q: accepted start %d total %d", s, start, total)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s, now); d < 0 || d > MaxBackoff {
			t.Errorf("%q: %v is outside 0..%v", s, d, MaxBackoff)
		}
	})
}
