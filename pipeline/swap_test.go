package pipeline

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
	"github.com/edgedrun/edged/publish"
)

// loadVersion loads the bundled model called name on o as the given version, after
// edit (if any) changed its manifest. The session is closed when the test ends, unless
// closed before (a second Close does nothing).
func loadVersion(tb testing.TB, o *inference.ORT, name, version string, edit func(*models.Manifest)) *Model {
	tb.Helper()
	m, onnx, err := demo.LoadNamed(name)
	if err != nil {
		tb.Fatal(err)
	}
	m.Version = version
	if edit != nil {
		edit(m)
	}
	s, err := o.Load(m, onnx, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return &Model{Manifest: m, Session: s}
}

// waitIdle waits for a retired model to be given up by its last batch.
func waitIdle(tb testing.TB, idle <-chan struct{}, what string) {
	tb.Helper()
	select {
	case <-idle:
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s: the old model still in use 10s after the swap", what)
	}
}

// pacer emits n simulator frames, numbered 1..n, keeping at most cap(window) of them
// in the pipeline: a steady load that keeps queues short, so a frame's fate is decided
// soon after it is emitted. before runs just before each emit.
type pacer struct {
	n      int
	window chan struct{}
	before func(seq uint64)
	imgs   [][]byte
	w, h   int
	done   chan struct{}
}

func newPacer(tb testing.TB, n, window int) *pacer {
	tb.Helper()
	g, err := sim.NewGenerator(sim.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	p := &pacer{n: n, window: make(chan struct{}, window), done: make(chan struct{})}
	p.w, p.h = g.Size()
	for range 16 {
		buf := make([]byte, p.w*p.h)
		g.Next(buf)
		p.imgs = append(p.imgs, buf)
	}
	return p
}

func (p *pacer) Run(ctx context.Context, e drivers.Emitter) error {
	e.Health(true, nil)
	defer close(p.done)
	for i := range p.n {
		select {
		case p.window <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		r := drivers.AcquireReading()
		copy(r.SetImage(drivers.FormatGray8, p.w, p.h, p.w*p.h), p.imgs[i%len(p.imgs)])
		r.Seq = uint64(i + 1)
		r.CapturedAt = time.Now()
		if p.before != nil {
			p.before(r.Seq)
		}
		e.Emit(ctx, r)
	}
	return nil
}

// judged is what a swap test keeps of one result.
type judged struct {
	seq        uint64
	inspection string
	model      publish.ModelRef
	verdict    string
	// started is how many swaps had begun when the result was handed over.
	started int64
	total   float64 // latency_ms.total
}

// swapSink records results and frees the pacer's window once per frame (on the
// results of inspection lead).
type swapSink struct {
	lead    string
	window  chan struct{}
	started *atomic.Int64
	mu      sync.Mutex
	got     []judged
	frames  atomic.Int64
}

func (s *swapSink) Publish(_ context.Context, r *publish.Result) error {
	j := judged{seq: r.Seq, inspection: r.Inspection, model: r.Model, verdict: r.Verdict, total: r.LatencyMS.Total}
	if s.started != nil {
		j.started = s.started.Load()
	}
	s.mu.Lock()
	s.got = append(s.got, j)
	s.mu.Unlock()
	if r.Inspection == s.lead {
		s.frames.Add(1)
		<-s.window
	}
	return nil
}

func (s *swapSink) results() []judged {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]judged(nil), s.got...)
}

// modelInfo returns the edged_model_info series: "name version sha256" -> value.
func modelInfo(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "edged_model_info" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out[l["name"]+" "+l["version"]+" "+l["sha256"]] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestSwapUnderLoadNoDrop swaps el-defect 20 times between versions "1" and "2" (a
// fresh session each time; the old one closed once idle) under a steady load read by
// two inspections. Every frame is published, none dropped or failed; every result
// names one of the two versions; and a frame emitted after a swap returned is judged
// by the version that swap put in (checked for each frame whose result was handed
// over before the next swap began, which the pacing makes most frames).
func TestSwapUnderLoadNoDrop(t *testing.T) {
	const (
		frames = 2400
		swaps  = 20
	)
	o := orttest.Open(t)
	first := loadVersion(t, o, demo.Name, "1", nil)
	version := func(k int64) string { return fmt.Sprint(1 + k%2) } // the version after swap k

	var started, finished atomic.Int64
	emitted := make([]int64, frames+1) // by seq: swaps finished when it was emitted
	drv := newPacer(t, frames, 16)
	drv.before = func(seq uint64) { emitted[seq] = finished.Load() }
	s := &swapSink{lead: "el", window: drv.window, started: &started}
	h := start(t, Config{RingSize: 1024, Workers: 2, MaxBatch: 4, MaxWait: time.Millisecond, Sink: s},
		Source{Spec: drivers.Spec{Name: "cam"}, Driver: drv, Backpressure: Block},
		Inspection{Name: "el", Model: first}, Inspection{Name: "el2", Model: first})

	for k := int64(1); k <= swaps; k++ {
		// Let a share of the frames through on the model now serving.
		want := k * frames / (swaps + 2)
		waitFor(t, fmt.Sprintf("frames before swap %d", k), 30*time.Second, func() bool { return s.frames.Load() >= want })
		next := loadVersion(t, o, demo.Name, version(k), nil)
		started.Add(1)
		old, idle, err := h.p.SwapModel(next)
		if err != nil {
			t.Fatalf("swap %d: %v", k, err)
		}
		finished.Add(1)
		if got := old.Manifest.Version; got != version(k-1) {
			t.Fatalf("swap %d replaced version %s, want %s", k, got, version(k-1))
		}
		if m, _ := h.p.Model(demo.Name); m != next {
			t.Fatalf("swap %d: Model returns version %s", k, m.Manifest.Version)
		}
		info := modelInfo(t, h.reg)
		if len(info) != 1 || info[demo.Name+" "+version(k)+" "+next.Manifest.SHA256] != 1 {
			t.Fatalf("after swap %d edged_model_info is %v", k, info)
		}
		waitIdle(t, idle, fmt.Sprintf("swap %d", k))
		if err := old.Session.Close(); err != nil {
			t.Fatalf("close version %s: %v", old.Manifest.Version, err)
		}
	}
	select {
	case <-drv.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the driver did not emit every frame within 60s")
	}
	waitFor(t, "every frame judged", 30*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	h.stop()

	c, _ := h.p.Counts("cam")
	if c.Accepted != frames || c.Published != frames || c.DroppedFull+c.DroppedStale+c.Errors+c.DroppedShutdown != 0 {
		t.Errorf("counts %+v: want all %d frames published and none dropped", c, frames)
	}
	res := s.results()
	if len(res) != 2*frames {
		t.Fatalf("%d results for %d frames and 2 inspections", len(res), frames)
	}
	checked := make([]int, swaps+1)
	for _, r := range res {
		if r.model.Name != demo.Name || (r.model.Version != "1" && r.model.Version != "2") {
			t.Fatalf("result of frame %d names model %+v", r.seq, r.model)
		}
		if r.verdict == publish.VerdictUnknown {
			t.Errorf("frame %d: UNKNOWN on %s", r.seq, r.inspection)
		}
		k := emitted[r.seq]
		if r.started != k {
			continue // a later swap began before the result: either version may be right
		}
		checked[k]++
		if r.model.Version != version(k) {
			t.Errorf("frame %d emitted after swap %d returned ran on version %s, want %s (%s)", r.seq, k, r.model.Version, version(k), r.inspection)
		}
	}
	for k, n := range checked {
		if n == 0 {
			t.Errorf("no frame was emitted after swap %d and judged before the next: the check saw nothing", k)
		}
	}
	t.Logf("frames checked against the swap before them, by swap: %v", checked)
}

// TestSwapWaitsForPinnedBatch: a batch gathered before a swap finishes on the old model,
// and idle closes only once its results are handed over; a free slot does not hold a
// retired model.
func TestSwapWaitsForPinnedBatch(t *testing.T) {
	o := orttest.Open(t)
	v1, v2, v3 := loadVersion(t, o, demo.Name, "1", nil), loadVersion(t, o, demo.Name, "2", nil), loadVersion(t, o, demo.Name, "3", nil)
	g, st := newGate(t), newStall()
	h := start(t, Config{RingSize: 8, Sink: st}, Source{Driver: g}, Inspection{Model: v1})

	g.send(t)
	select {
	case <-st.entered: // the frame's result is in the sink: its batch holds version 1
	case <-time.After(10 * time.Second):
		t.Fatal("no result reached the sink within 10s")
	}
	old, idle, err := h.p.SwapModel(v2)
	if err != nil {
		t.Fatal(err)
	}
	if old != v1 {
		t.Fatalf("swap replaced version %s", old.Manifest.Version)
	}
	select {
	case <-idle:
		t.Fatal("idle closed while a batch on version 1 was being handed over")
	default:
	}
	close(st.release)
	waitIdle(t, idle, "version 1")
	if err := v1.Session.Close(); err != nil {
		t.Fatal(err)
	}

	// Nothing is pinned now, and no batch was ever made for version 2 (the worker's
	// free slots still hold version 1's): the swap to 3 leaves version 2 idle at once.
	waitFor(t, "frame done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	_, idle, err = h.p.SwapModel(v3)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-idle:
	default:
		t.Fatal("idle not closed although no batch was gathered on version 2")
	}
	if err := v2.Session.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		g.send(t)
	}
	waitFor(t, "frames done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	h.stop()
	var versions []string
	for _, r := range st.results {
		versions = append(versions, r.Model.Version)
		if r.Verdict == publish.VerdictUnknown {
			t.Errorf("UNKNOWN result: %+v", r)
		}
	}
	if strings.Join(versions, ",") != "1,3,3,3" {
		t.Errorf("results ran on versions %v, want 1 then 3 3 3", versions)
	}
}

// TestCheckModelRefusals: models that cannot serve every inspection of their name are
// refused by CheckModel and SwapModel with the inspection named, and the model now
// serving stays.
func TestCheckModelRefusals(t *testing.T) {
	o := orttest.Open(t)
	el := loadVersion(t, o, demo.Name, "1", nil)
	press := loadVersion(t, o, demo.PressFit, "1", nil)
	vib := loadVersion(t, o, demo.VibAnomaly, "1", nil)
	p, err := New(Config{RingSize: 8, Workers: 1, Sink: &sink{}, Registerer: prometheus.NewRegistry()},
		[]Source{{Spec: drivers.Spec{Name: "cam"}, Driver: newGate(t)}, {Spec: drivers.Spec{Name: "press"}, Driver: newGate(t)}, {Spec: drivers.Spec{Name: "vib"}, Driver: newGate(t)}},
		[]Inspection{
			{Name: "cell", Source: "cam", Model: el},
			{Name: "fit", Source: "press", Model: press},
			{Name: "bearing", Source: "vib", Model: vib, Threshold: 3},
		})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		model *Model
		want  []string
	}{
		{"scalars model for an image inspection",
			loadVersion(t, o, demo.PressFit, "2", func(m *models.Manifest) { m.Name = demo.Name }),
			[]string{`inspection "cell"`, `preprocess kind "scalars"`, `"image"`}},
		{"a feature the serving model lacks",
			loadVersion(t, o, demo.PressFit, "2", func(m *models.Manifest) { m.Preprocess.Features = []string{"force_kn", "depth_um"} }),
			[]string{`inspection "fit"`, `feature "depth_um"`}},
		{"threshold override invalid for the new postprocess",
			loadVersion(t, o, demo.VibAnomaly, "2", func(m *models.Manifest) {
				m.Postprocess = models.Postprocess{Kind: models.PostprocessSoftmax, Labels: []string{"ok", "anomaly"}, OKLabels: []string{"ok"}, Threshold: 0.5}
			}),
			[]string{`inspection "bearing"`, `threshold 3`, `not in (0,1)`}},
		{"preprocessing that does not fill the model input",
			loadVersion(t, o, demo.Name, "2", func(m *models.Manifest) { m.Preprocess.Width, m.Preprocess.Height = 32, 32 }),
			[]string{`inspection "cell"`, `4096 values per frame`, `makes 1024`}},
		{"unknown model name",
			loadVersion(t, o, demo.Name, "2", func(m *models.Manifest) { m.Name = "solder-joint" }),
			[]string{`model "solder-joint"`, `no inspection runs`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serving, _ := p.Model(tc.model.Manifest.Name)
			for what, err := range map[string]error{"CheckModel": p.CheckModel(tc.model), "SwapModel": swapErr(p, tc.model)} {
				if err == nil {
					t.Fatalf("%s took it", what)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s error %q does not say %s", what, err, w)
					}
				}
			}
			if now, _ := p.Model(tc.model.Manifest.Name); now != serving {
				t.Error("a refused swap changed the model serving")
			}
		})
	}
	if _, _, err := p.SwapModel(el); err == nil {
		t.Error("swapping in the session already serving was taken")
	}
	ok := loadVersion(t, o, demo.Name, "2", nil)
	if err := p.CheckModel(ok); err != nil {
		t.Errorf("a second version of the same model refused: %v", err)
	}
}

func swapErr(p *Pipeline, m *Model) error {
	_, _, err := p.SwapModel(m)
	return err
}

// TestSwapGivesAFreshBreaker: a new model starts with a closed breaker even when the one
// it replaces tripped it, and its frames are judged at once (see generation.br).
func TestSwapGivesAFreshBreaker(t *testing.T) {
	o := orttest.Open(t)
	v1 := loadVersion(t, o, demo.Name, "1", nil)
	broken := &faulty{Session: v1.Session}
	broken.fail.Store(true)
	g, s := newGate(t), &sink{}
	h := start(t, Config{
		RingSize: 8, Sink: s,
		Breaker: breaker.Config{Window: 10 * time.Second, Bucket: time.Second, FailureRatio: 0.5, MinCalls: 4, OpenTimeout: time.Hour, HalfOpenProbes: 1},
	}, Source{Driver: g}, Inspection{Model: &Model{Manifest: v1.Manifest, Session: broken}, FailSafe: Reject})
	for range 4 {
		g.send(t)
	}
	waitFor(t, "frames done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	if st := h.p.BreakerStates()[demo.Name]; st != breaker.Open {
		t.Fatalf("breaker %v after 4 failed runs", st)
	}
	_, idle, err := h.p.SwapModel(loadVersion(t, o, demo.Name, "2", nil))
	if err != nil {
		t.Fatal(err)
	}
	waitIdle(t, idle, "version 1")
	if st := h.p.BreakerStates()[demo.Name]; st != breaker.Closed {
		t.Fatalf("breaker %v right after the swap", st)
	}
	for range 3 {
		g.send(t)
	}
	waitFor(t, "frames done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	h.stop()
	if len(s.results) != 7 {
		t.Fatalf("%d results", len(s.results))
	}
	for i, r := range s.results {
		want, unknown := "1", true
		if i >= 4 {
			want, unknown = "2", false
		}
		if r.Model.Version != want || (r.Verdict == publish.VerdictUnknown) != unknown {
			t.Errorf("result %d: version %s verdict %s reason %q", i, r.Model.Version, r.Verdict, r.Reason)
		}
	}
}

// TestSwapKeepsThreshold: the threshold a reload set holds for the model swapped in,
// and a reload after the swap applies to the new model.
func TestSwapKeepsThreshold(t *testing.T) {
	o := orttest.Open(t)
	p, err := New(Config{RingSize: 8, Workers: 1, Sink: &sink{}, Registerer: prometheus.NewRegistry()},
		[]Source{{Spec: drivers.Spec{Name: "cam"}, Driver: newGate(t)}},
		[]Inspection{{Name: "el", Source: "cam", Model: loadVersion(t, o, demo.Name, "1", nil), Threshold: 0.9}})
	if err != nil {
		t.Fatal(err)
	}
	threshold := func() float32 { in := p.byIns["el"]; return in.h.cur.Load().post[in.idx].Load().Threshold() }
	if err := p.SetInspection("el", InspectionSettings{Threshold: 0.3}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.SwapModel(loadVersion(t, o, demo.Name, "2", nil)); err != nil {
		t.Fatal(err)
	}
	if got := threshold(); got != 0.3 {
		t.Errorf("threshold %v after the swap, want the reloaded 0.3", got)
	}
	if err := p.SetInspection("el", InspectionSettings{Threshold: 0.7}); err != nil {
		t.Fatal(err)
	}
	if got := threshold(); got != 0.7 {
		t.Errorf("threshold %v after a reload on the new model, want 0.7", got)
	}
	if v := testutil.ToFloat64(p.metrics.modelInfo.WithLabelValues(demo.Name, "2", p.holders[demo.Name].cur.Load().ref.SHA256)); v != 1 {
		t.Errorf("edged_model_info of version 2 is %v", v)
	}
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count open files: %v", err)
	}
	return len(fds)
}

// TestSwapLeaksNothing: 200 swaps, each to a fresh session with the old one closed once
// idle, frames judged in between, leave no goroutine and no open file behind.
func TestSwapLeaksNothing(t *testing.T) {
	const swaps = 200
	ignore := goleak.IgnoreCurrent()
	o := orttest.Open(t)
	g, s := newGate(t), &sink{}
	cur := loadVersion(t, o, demo.Name, "0", nil)
	h := start(t, Config{RingSize: 8, Sink: s}, Source{Driver: g}, Inspection{Model: cur})
	var fds0 int
	for k := 1; k <= swaps; k++ {
		g.send(t)
		next := loadVersion(t, o, demo.Name, fmt.Sprint(k), nil)
		old, idle, err := h.p.SwapModel(next)
		if err != nil {
			t.Fatalf("swap %d: %v", k, err)
		}
		waitIdle(t, idle, fmt.Sprintf("swap %d", k))
		if err := old.Session.Close(); err != nil {
			t.Fatalf("swap %d: close: %v", k, err)
		}
		if k == 10 { // after the runtime's own first-use files are open
			fds0 = openFiles(t)
		}
	}
	if n := openFiles(t); n > fds0+3 {
		t.Errorf("open files grew from %d to %d over %d swaps", fds0, n, swaps-10)
	}
	waitFor(t, "frames done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	h.stop()
	if c, _ := h.p.Counts("cam"); c.Published != swaps {
		t.Errorf("counts %+v, want %d published", c, swaps)
	}
	for i, r := range s.results {
		if r.Verdict == publish.VerdictUnknown {
			t.Errorf("result %d UNKNOWN: %+v", i, r)
		}
	}
	goleak.VerifyNone(t, ignore)
}
