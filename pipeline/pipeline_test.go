package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/publish"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// model loads the bundled model on the real ONNX Runtime.
func model(t *testing.T) *Model {
	t.Helper()
	m, s := orttest.Demo(t, orttest.Open(t))
	return &Model{Manifest: m, Session: s}
}

// burst emits n simulator frames as fast as it can, ignoring pressure: an overload.
type burst struct {
	n      int
	budget time.Duration
	bad    bool   // emit frames with no image
	policy string // the source's backpressure; empty: drop_newest
	done   chan struct{}
}

func (b *burst) Run(ctx context.Context, e drivers.Emitter) error {
	g, err := sim.NewGenerator(sim.DefaultConfig())
	if err != nil {
		return err
	}
	w, h := g.Size()
	// Frames are rendered up front and reused (read-only) so emitting outpaces the model.
	imgs, truth := make([]*drivers.Image, 16), make([]string, 16)
	for i := range imgs {
		buf := make([]byte, w*h)
		truth[i] = g.Next(buf)
		imgs[i] = &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: buf}
	}
	e.Health(true, nil)
	for i := range b.n {
		r := &drivers.Reading{CapturedAt: time.Now()}
		if b.budget > 0 {
			r.Deadline = r.CapturedAt.Add(b.budget)
		}
		if !b.bad {
			r.Image, r.Truth = imgs[i%len(imgs)], truth[i%len(imgs)]
		}
		e.Emit(ctx, r)
	}
	close(b.done)
	<-ctx.Done()
	return nil
}

// sink records results; block makes it hold every Publish until the context ends.
type sink struct {
	mu      sync.Mutex
	results []*publish.Result
	block   bool
	calls   atomic.Int64
}

func (s *sink) Publish(ctx context.Context, r *publish.Result) error {
	s.calls.Add(1)
	if s.block {
		<-ctx.Done()
		return ctx.Err()
	}
	s.mu.Lock()
	s.results = append(s.results, r)
	s.mu.Unlock()
	return nil
}

func run(t *testing.T, cfg Config, drv *burst) (*Pipeline, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	cfg.Identity = Identity{Node: "n1"}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	policy := drv.policy
	if policy == "" {
		policy = DropNewest
	}
	p, err := New(cfg, []Source{{Spec: drivers.Spec{Name: "cam", Budget: drv.budget}, Driver: drv, Backpressure: policy}},
		[]Inspection{{Name: "el", Source: "cam", Model: model(t)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	// Watch the equation while frames flow, not only at the end.
	for {
		c, _ := p.Counts("cam")
		if !c.Balanced() {
			t.Errorf("unbalanced while running: %+v", c)
		}
		select {
		case <-drv.done:
		case <-time.After(time.Millisecond):
			continue
		}
		break
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return p, reg
}

func TestOverloadAccountsForEveryFrame(t *testing.T) {
	s := &sink{}
	p, reg := run(t, Config{RingSize: 8, Sink: s}, &burst{n: 500, budget: time.Minute, done: make(chan struct{})})
	c, _ := p.Counts("cam")
	if !c.Balanced() || c.InFlight != 0 || c.Accepted != 500 {
		t.Fatalf("counts after shutdown %+v", c)
	}
	if c.DroppedFull == 0 {
		t.Errorf("a burst of 500 into a ring of 8 dropped nothing: %+v", c)
	}
	if int(c.Published) != len(s.results) {
		t.Fatalf("published %d, sink received %d", c.Published, len(s.results))
	}
	if got := testutil.ToFloat64(collectorFor(reg, "edged_frames_total", "published")); got != float64(c.Published) {
		t.Errorf("metric published %v, counts %d", got, c.Published)
	}
	correct := 0
	for _, r := range s.results {
		if (r.Truth == sim.LabelOK) == (r.Verdict == inference.VerdictOK) {
			correct++
		}
		if r.Node != "n1" || r.Source != "cam" || r.Inspection != "el" || len(r.TraceID) != 32 || len(r.ID) != 32 || r.Seq == 0 {
			t.Fatalf("result fields: %+v", r)
		}
	}
	if acc := float64(correct) / float64(len(s.results)); acc < 0.95 {
		t.Errorf("accuracy %.3f", acc)
	}
}

func TestStaleFramesAreNeverInferred(t *testing.T) {
	s := &sink{}
	p, _ := run(t, Config{RingSize: 64, Sink: s}, &burst{n: 50, budget: time.Nanosecond, done: make(chan struct{})})
	c, _ := p.Counts("cam")
	if c.DroppedStale+c.DroppedFull != 50 || c.Published != 0 || s.calls.Load() != 0 || !c.Balanced() {
		t.Fatalf("counts %+v, sink calls %d", c, s.calls.Load())
	}
}

func TestBadFramesCountAsErrors(t *testing.T) {
	s := &sink{}
	p, _ := run(t, Config{RingSize: 64, Sink: s}, &burst{n: 20, budget: time.Minute, bad: true, done: make(chan struct{})})
	c, _ := p.Counts("cam")
	if c.Errors != 20 || c.Published != 0 || !c.Balanced() {
		t.Fatalf("counts %+v", c)
	}
	// Each still gets a result the line can act on.
	if len(s.results) != 20 {
		t.Fatalf("%d results for 20 bad frames", len(s.results))
	}
	for _, r := range s.results {
		if r.Verdict != publish.VerdictUnknown || r.Reason != publish.ReasonError || r.Action != Divert {
			t.Fatalf("result for a bad frame: %+v", r)
		}
	}
}

// A sink that never takes a result: shutdown still ends within the drain timeout, and
// every frame is accounted for as dropped at shutdown.
func TestDrainTimeoutCountsShutdownDrops(t *testing.T) {
	s := &sink{block: true}
	start := time.Now()
	p, _ := run(t, Config{RingSize: 16, Sink: s, DrainTimeout: 200 * time.Millisecond}, &burst{n: 16, budget: time.Minute, done: make(chan struct{})})
	if el := time.Since(start); el > 30*time.Second {
		t.Fatalf("shutdown took %v", el)
	}
	c, _ := p.Counts("cam")
	if c.Published != 0 || c.DroppedShutdown == 0 || !c.Balanced() || c.InFlight != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestNewRefusesBadWiring(t *testing.T) {
	m := model(t)
	src := []Source{{Spec: drivers.Spec{Name: "cam"}, Driver: &burst{}}}
	for _, tc := range []struct {
		cfg Config
		src []Source
		ins []Inspection
	}{
		{Config{RingSize: 8, Workers: 1}, src, []Inspection{{Name: "el", Source: "cam", Model: m}}},                                // no sink
		{Config{RingSize: 0, Workers: 1, Sink: &sink{}}, src, []Inspection{{Name: "el", Source: "cam", Model: m}}},                 // no ring
		{Config{RingSize: 8, Workers: 1, Sink: &sink{}}, src, []Inspection{{Name: "el", Source: "other", Model: m}}},               // unknown source
		{Config{RingSize: 8, Workers: 1, Sink: &sink{}}, src, nil},                                                                 // source feeds nothing
		{Config{RingSize: 8, Workers: 1, Sink: &sink{}}, src, []Inspection{{Name: "el", Source: "cam", Model: m, Threshold: 1.5}}}, // threshold
	} {
		if _, err := New(tc.cfg, tc.src, tc.ins); err == nil {
			t.Errorf("New(%+v, %d inspections) accepted bad wiring", tc.cfg, len(tc.ins))
		}
	}
}

// collectorFor extracts one frames_total series for testutil.
func collectorFor(reg *prometheus.Registry, name, outcome string) prometheus.Collector {
	return gathered{reg, name, outcome}
}

type gathered struct {
	reg           *prometheus.Registry
	name, outcome string
}

func (g gathered) Describe(chan<- *prometheus.Desc) {}

func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == g.outcome {
					ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
				}
			}
		}
	}
}
