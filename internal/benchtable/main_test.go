package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkRingSPSC-2      	 1000000	        10.0 ns/op	 100000000 msgs/s	       0 B/op	       0 allocs/op
BenchmarkRingSPSC-2      	 1000000	        12.0 ns/op	  80000000 msgs/s	       0 B/op	       0 allocs/op
BenchmarkRingSPSC-2      	 1000000	        11.0 ns/op	  90000000 msgs/s	       0 B/op	       0 allocs/op
BenchmarkChannelSPSC-2   	 1000000	        50.0 ns/op	  20000000 msgs/s	       0 B/op	       0 allocs/op
BenchmarkRingMPSC-2      	 1000000	        40.0 ns/op	  25000000 msgs/s	       0 B/op	       1 allocs/op
BenchmarkChannelMPSC-2   	 1000000	        50.0 ns/op	  20000000 msgs/s	       0 B/op	       0 allocs/op
BenchmarkPublisherVsBarePaho/spool-2 	 40000	 27000 ns/op	 0.968 ratio	 36653 results/s
PASS
`

// TestAtMost: a lower-is-better ratio fails above its bound and passes at or below it.
func TestAtMost(t *testing.T) {
	for _, c := range []struct {
		ratio string
		ok    bool
	}{{"1.4", true}, {"2.0", true}, {"2.6", false}} {
		rs, err := parse(strings.NewReader("BenchmarkSwapLatency-2 \t 1 \t 5 ns/op \t 1.1 steady-p99-ms \t " + c.ratio + " p99-ratio\n"))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		print(&out, rs)
		line := ""
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "p99 latency") {
				line = l
			}
		}
		if !strings.Contains(line, "<= 2.0") || strings.Contains(line, "MISSED") == c.ok {
			t.Errorf("ratio %s: line %q, want ok=%v", c.ratio, line, c.ok)
		}
	}
}

func TestTable(t *testing.T) {
	rs, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := median(rs["RingSPSC"]["msgs/s"]); got != 90000000 {
		t.Errorf("median %v", got)
	}
	var out bytes.Buffer
	ok := print(&out, rs)
	text := out.String()
	t.Log(text)
	if ok {
		t.Error("a ring at 1 alloc/op and MPSC at 1.25x passed")
	}
	for _, want := range []string{"4.50", "1.25", "MISSED", "0.97", "not run"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q", want)
		}
	}
}
