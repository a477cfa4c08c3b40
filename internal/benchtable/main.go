// Command benchtable reads `go test -bench` output on stdin and prints the ratios
// edged's benchmarks are judged by, each against the baseline measured in the same
// run: rings against channels, batching against one frame at a time, the publisher
// against bare paho. Each figure is the median over the runs (-count) of a benchmark.
// `make bench` pipes into it.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// comparison is one row: the metric of a benchmark over the same metric of its baseline.
type comparison struct {
	what, bench, baseline, unit string
	// target is the least ratio the issue asks for; 0 when the figure is only reported.
	target float64
	// atMost, when above 0, is the largest ratio allowed instead (lower is better).
	atMost float64
}

var comparisons = []comparison{
	{"SPSC ring vs buffered channel, 1 producer", "RingSPSC", "ChannelSPSC", "msgs/s", 3, 0},
	{"MPMC ring vs buffered channel, 4 producers", "RingMPSC", "ChannelMPSC", "msgs/s", 1.5, 0},
	{"pipeline, max_batch 8 vs 1 (demo model)", "PipelineBatch8", "PipelineBatch1", "frames/s", 0, 0},
	{"publisher with spool vs bare paho", "PublisherVsBarePaho/spool", "PublisherVsBarePaho/spool", "ratio", 0, 0},
	{"publisher without spool vs bare paho", "PublisherVsBarePaho/nospool", "PublisherVsBarePaho/nospool", "ratio", 0, 0},
	{"Modbus driver vs bare goburrow loop, 10 registers, libmodbus", "ModbusDriverPoll", "ModbusBareGoburrow", "reads/s", 0.9, 0},
	{"p99 latency with a swap every 100 ms vs steady", "SwapLatency", "SwapLatency", "p99-ratio", 0, 2},
}

// allocsOf names the benchmarks whose allocations per operation are shown, with the
// most allowed (-1: only shown).
var allocsOf = []struct {
	bench string
	max   float64
}{
	{"RingSPSC", 0}, {"RingMPSC", 0}, {"ChannelSPSC", -1}, {"ChannelMPSC", -1},
	{"PipelineBatch1", -1}, {"PipelineBatch8", -1},
}

func main() {
	runs, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(2)
	}
	ok := print(os.Stdout, runs)
	if !ok {
		os.Exit(1)
	}
}

// runs maps benchmark name (without "Benchmark" and the -N cpu suffix) to unit to the
// values of each run.
type runs map[string]map[string][]float64

func parse(r io.Reader) (runs, error) {
	out := runs{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		if out[name] == nil {
			out[name] = map[string][]float64{}
		}
		// f[1] is the iteration count; then value-unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: value %q: %w", f[0], f[i], err)
			}
			out[name][f[i+1]] = append(out[name][f[i+1]], v)
		}
	}
	return out, sc.Err()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func print(w io.Writer, rs runs) bool {
	ok := true
	fmt.Fprintf(w, "\n%-46s %16s %16s %8s %8s %5s\n", "comparison (median of runs)", "value", "baseline", "ratio", "target", "runs")
	for _, c := range comparisons {
		v, b := rs[c.bench][c.unit], rs[c.baseline][c.unit]
		if len(v) == 0 || len(b) == 0 {
			fmt.Fprintf(w, "%-46s %16s\n", c.what, "not run")
			continue
		}
		ratio := median(v) / median(b)
		value, base := fmt.Sprintf("%.0f %s", median(v), c.unit), fmt.Sprintf("%.0f", median(b))
		if c.bench == c.baseline {
			// A benchmark that measures its own baseline reports the ratio directly.
			ratio, value, base = median(v), "", "(same run)"
		}
		target, mark := "report", ""
		if c.atMost > 0 {
			target = fmt.Sprintf("<= %.1f", c.atMost)
			if ratio > c.atMost {
				mark, ok = "  MISSED", false
			}
		}
		if c.target > 0 {
			target = fmt.Sprintf(">= %.1f", c.target)
			if ratio < c.target {
				mark, ok = "  MISSED", false
			}
		}
		fmt.Fprintf(w, "%-46s %16s %16s %8.2f %8s %5d%s\n", c.what, value, base, ratio, target, len(v), mark)
	}
	fmt.Fprintf(w, "\n%-46s %16s %8s\n", "allocations", "allocs/op", "most")
	for _, a := range allocsOf {
		v := rs[a.bench]["allocs/op"]
		if len(v) == 0 {
			continue
		}
		most, mark := "-", ""
		if a.max >= 0 {
			most = fmt.Sprintf("%.0f", a.max)
			if median(v) > a.max {
				mark, ok = "  MISSED", false
			}
		}
		fmt.Fprintf(w, "%-46s %16.1f %8s%s\n", a.bench, median(v), most, mark)
	}
	return ok
}
