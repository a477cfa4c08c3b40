package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file holds what the overload, shutdown and outage tests share: a config writer
// for loaded lines, a watcher that checks the accounting invariants in every scrape and
// samples the process's memory, and small statistics.

// soak reports whether the long forms run (make soak sets EDGED_SOAK=1).
func soak() bool { return os.Getenv("EDGED_SOAK") == "1" }

// soakOr is short in `make test` and long under `make soak`.
func soakOr(short, long time.Duration) time.Duration {
	if soak() {
		return long
	}
	return short
}

// loadLine is a simulated line whose config the test can rewrite (for a SIGHUP) with the
// same ports and folders.
type loadLine struct {
	*testLine
	broker   string // "embedded" or a URL
	embedded string // embedded broker's listen address
	spool    string

	RateHz       float64
	Width        int
	Height       int
	Cache        int
	Backpressure string
	Budget       string
	RingSize     int
	Workers      int
	MaxBatch     int
	IntraOp      int
	Shutdown     string
	// MQTTExtra is added inside the mqtt mapping, e.g. `, breaker: {...}`.
	MQTTExtra string
}

// newLoadLine returns a line with the defaults the load tests start from; set fields and
// call write.
func newLoadLine(t *testing.T, broker string) *loadLine {
	t.Helper()
	dir := t.TempDir()
	l := &loadLine{
		testLine: &testLine{site: "s1", line: "l1", node: "n1", httpAddr: freeAddr(t), modelsDir: filepath.Join(dir, "models"),
			config: filepath.Join(dir, "edged.yaml")},
		broker: broker, embedded: freeAddr(t), spool: filepath.Join(dir, "spool"),
		RateHz: 100, Width: 128, Height: 128, Backpressure: "block", Budget: "2s",
		RingSize: 64, Workers: 1, MaxBatch: 8, IntraOp: 1, Shutdown: "10s",
	}
	l.brokerURL = broker
	if broker == "embedded" {
		l.brokerURL = "tcp://" + l.embedded
	}
	return l
}

// write (re)writes the config file from l's fields.
func (l *loadLine) write(t *testing.T) {
	t.Helper()
	cfg := fmt.Sprintf(`node: {site: %s, line: %s, name: %s}
log: {level: info, format: json}
http: {listen: "%s"}
mqtt: {broker: "%s", embedded_listen: "%s", connect_timeout: 2s, spool: {dir: "%s"}%s}
models: {dir: "%s"}
shutdown_timeout: %s
runtime: {intra_op_threads: %d}
pipeline: {ring_size: %d, workers: %d, max_batch: %d}
sources:
  - name: cam
    type: sim
    verdict_budget: %s
    backpressure: %s
    sim: {rate_hz: %s, seed: 42, defect_rate: 0.2, width: %d, height: %d, cache: %d}
inspections:
  - name: el
    source: cam
    model: el-defect
`, l.site, l.line, l.node, l.httpAddr, l.broker, l.embedded, l.spool, l.MQTTExtra, l.modelsDir, l.Shutdown,
		l.IntraOp, l.RingSize, l.Workers, l.MaxBatch, l.Budget, l.Backpressure,
		strconv.FormatFloat(l.RateHz, 'f', -1, 64), l.Width, l.Height, l.Cache)
	// Written whole and renamed, so a reload never reads half a file.
	tmp := l.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, l.config); err != nil {
		t.Fatal(err)
	}
}

func (l *loadLine) budget(t *testing.T) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(l.Budget)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// sample is one scrape with the process's resident memory at that moment.
type sample struct {
	at    time.Time
	m     map[string]float64
	rssKB int64
}

// watcher scrapes a running edged, checks the accounting in every scrape and keeps the
// samples. It runs on the test's goroutine: the test calls step between its own actions.
type watcher struct {
	p        *proc
	addr     string
	maxInFly float64 // most frames that may be in flight at once
	samples  []sample
}

func newWatcher(p *proc, l *loadLine) *watcher {
	// A frame is in flight from the emit that accepted it until its outcome: in the ring,
	// in one of a worker's two batches (one gathered while the other runs, up to the
	// publisher taking it), or in the one emit per source that waits for room under
	// block. The ring's size is rounded up to a power of two.
	ring := 1
	for ring < l.RingSize {
		ring <<= 1
	}
	return &watcher{p: p, addr: l.httpAddr, maxInFly: float64(ring + 2*l.Workers*l.MaxBatch + 1)}
}

// step scrapes once and checks the invariants: conservation, in flight within what the
// pipeline can hold, and counters that never go back.
func (w *watcher) step(t *testing.T) sample {
	t.Helper()
	s := sample{at: time.Now(), m: scrape(t, w.addr), rssKB: rssKB(t, w.p)}
	checkConservation(t, s.m)
	if fl := s.m[`edged_frames_in_flight{source="cam"}`]; fl < 0 || fl > w.maxInFly {
		t.Fatalf("%v frames in flight; the ring and workers hold at most %v", fl, w.maxInFly)
	}
	if n := len(w.samples); n > 0 {
		prev := w.samples[n-1].m
		for _, o := range outcomes {
			if frames(s.m, o) < frames(prev, o) {
				t.Fatalf("frames_total{outcome=%q} went back from %v to %v", o, frames(prev, o), frames(s.m, o))
			}
		}
	}
	w.samples = append(w.samples, s)
	return s
}

var outcomes = []string{"accepted", "published", "dropped_full", "dropped_stale", "error", "dropped_shutdown"}

// run steps every interval for d.
func (w *watcher) run(t *testing.T, d, interval time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		w.step(t)
		time.Sleep(interval)
	}
}

// rate is the per-second rate of outcome between the samples nearest to from and to.
func (w *watcher) rate(outcome string, from, to time.Time) float64 {
	a, b := w.at(from), w.at(to)
	if !b.at.After(a.at) {
		return 0
	}
	return (frames(b.m, outcome) - frames(a.m, outcome)) / b.at.Sub(a.at).Seconds()
}

// at is the first sample taken at or after when (the last if none).
func (w *watcher) at(when time.Time) sample {
	for _, s := range w.samples {
		if !s.at.Before(when) {
			return s
		}
	}
	return w.samples[len(w.samples)-1]
}

// rssKB reads the process's resident set from /proc (0 once it has exited).
func rssKB(t *testing.T, p *proc) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return n
		}
	}
	return 0
}

// memReport is the process's memory over a run (the samples from some time on), in
// MiB. Resident memory is taken apart, because edged runs its GC at GOGC=400: the Go heap
// climbs for tens of seconds toward each GC target (five times the live heap) before it
// levels off, which over a short run looks like growth whether or not anything leaks.
// So the bounded-memory invariant is checked as its parts:
//   - the peak RSS, under a stated bound;
//   - RSS outside the Go heap (ONNX Runtime's allocations, stacks, the runtime's own
//     books, mapped files): flat, the last third against the middle third;
//   - the Go heap: what the GC finds live (its target / (1 + GOGC/100)) must not grow
//     from the first GC after warm-up to the last; only measurable with two GCs or more.
//
// The plain RSS thirds are reported alongside.
type memReport struct {
	peak, middle, last         float64 // RSS: peak, highest in the middle and last thirds
	nonHeapMiddle, nonHeapLast float64 // RSS less the Go heap's resident pages: highest per third
	gcs                        int     // GC cycles completed in the window
	liveFirst, liveLast        float64 // live heap at the first and last GC in the window
}

// goHeapKB is the Go heap's resident part as a scrape shows it: heap pages obtained from
// the OS and not released, plus the GC's metadata, which grows with the heap.
func goHeapKB(m map[string]float64) int64 {
	return int64((m["go_memstats_heap_sys_bytes"] - m["go_memstats_heap_released_bytes"] + m["go_memstats_gc_sys_bytes"]) / 1024)
}

func (w *watcher) memory(from time.Time) memReport {
	var xs []sample
	for _, s := range w.samples {
		if !s.at.Before(from) && s.rssKB > 0 {
			xs = append(xs, s)
		}
	}
	var r memReport
	if len(xs) < 3 {
		return r
	}
	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	highest := func(ss []sample, f func(sample) int64) float64 {
		var hi int64
		for _, s := range ss {
			hi = max(hi, f(s))
		}
		return mib(hi)
	}
	rss := func(s sample) int64 { return s.rssKB }
	nonHeap := func(s sample) int64 { return s.rssKB - goHeapKB(s.m) }
	third := len(xs) / 3
	r.peak = highest(xs, rss)
	r.middle, r.last = highest(xs[third:2*third], rss), highest(xs[2*third:], rss)
	r.nonHeapMiddle, r.nonHeapLast = highest(xs[third:2*third], nonHeap), highest(xs[2*third:], nonHeap)
	// The GC target changes only at a GC; the first sample after each GC has its target.
	live := func(m map[string]float64) float64 {
		return m["go_memstats_next_gc_bytes"] / (1 + m["go_gc_gogc_percent"]/100) / (1 << 20)
	}
	for i := 1; i < len(xs); i++ {
		if xs[i].m["go_gc_duration_seconds_count"] > xs[i-1].m["go_gc_duration_seconds_count"] {
			r.gcs += int(xs[i].m["go_gc_duration_seconds_count"] - xs[i-1].m["go_gc_duration_seconds_count"])
			if r.liveFirst == 0 {
				r.liveFirst = live(xs[i].m)
			}
			r.liveLast = live(xs[i].m)
		}
	}
	return r
}

// percentile is the p-th percentile (0..100) of xs by the nearest-rank method.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// latencies returns latency_ms.total of the results captured at or after from.
func (c *collector) latencies(t *testing.T, from time.Time) []float64 {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []float64
	for _, r := range c.results {
		at, err := time.Parse(time.RFC3339Nano, r["captured_at"].(string))
		if err != nil {
			t.Fatalf("captured_at: %v", err)
		}
		if at.Before(from) {
			continue
		}
		out = append(out, r["latency_ms"].(map[string]any)["total"].(float64))
	}
	return out
}

// seqSet is the set of seqs received.
func (c *collector) seqSet() map[uint64]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[uint64]int{}
	for _, r := range c.results {
		seen[uint64(r["seq"].(float64))]++
	}
	return seen
}

// stopLine reads the "edged stopped" log line: for each of its fields written as
// "k=v k=v" (the source, mqtt, spool), the numbers by key.
func stopLine(t *testing.T, out string) map[string]map[string]int64 {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `"msg":"edged stopped"`) {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("stop line %s: %v", line, err)
		}
		fields := map[string]map[string]int64{}
		for k, v := range rec {
			s, ok := v.(string)
			if !ok || !strings.Contains(s, "=") {
				continue
			}
			kv := map[string]int64{}
			for _, f := range strings.Fields(s) {
				name, val, _ := strings.Cut(f, "=")
				n, err := strconv.ParseInt(val, 10, 64)
				if err != nil {
					t.Fatalf("stop line field %s: %q: %v", k, f, err)
				}
				kv[name] = n
			}
			fields[k] = kv
		}
		return fields
	}
	t.Fatalf("no \"edged stopped\" line in the output")
	return nil
}

// readyStatus is /readyz's status code (0 if the request failed).
func readyStatus(addr string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// plainBin is edged built without the race detector, once per test binary, for
// figures (memory, throughput) that should be the product's and not the race
// detector's: -race multiplies resident memory several times over.
var plainBin struct {
	once sync.Once
	path string
	took time.Duration
	err  error
}

func buildPlain(t *testing.T) string {
	t.Helper()
	plainBin.once.Do(func() {
		start := time.Now()
		plainBin.path = filepath.Join(filepath.Dir(edgedBin), "edged-norace")
		out, err := exec.Command("go", "build", "-o", plainBin.path, ".").CombinedOutput()
		if err != nil {
			plainBin.err = fmt.Errorf("go build (no -race): %v\n%s", err, out)
		}
		plainBin.took = time.Since(start)
	})
	if plainBin.err != nil {
		t.Fatal(plainBin.err)
	}
	t.Logf("edged without -race built in %v", plainBin.took.Round(time.Millisecond))
	return plainBin.path
}

// startBin starts bin (not edgedBin) the way startEdged does. The tests in this package
// run one at a time (none calls t.Parallel), so swapping the binary startEdged runs for
// the call is safe.
func startBin(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	saved := edgedBin
	edgedBin = bin
	defer func() { edgedBin = saved }()
	return startEdged(t, args...)
}
