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
