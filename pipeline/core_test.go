package pipeline

import (
	"bytes"
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/publish"
)

// faulty wraps a real session: it can fail every run or make each run slower, to play
// a device that went away or a model that outgrew the box.
type faulty struct {
	inference.Session
	fail   atomic.Bool
	expire atomic.Bool  // answer as a run whose deadline passed before it started
	delay  atomic.Int64 // ns added to each run
	runs   atomic.Int64
}

var errInjected = errors.New("injected fault: accelerator lost")

func (f *faulty) Run(ctx context.Context, b *inference.Batch) error {
	f.runs.Add(1)
	if d := time.Duration(f.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	if f.fail.Load() {
		return errInjected
	}
	if f.expire.Load() {
		return context.DeadlineExceeded
	}
	return f.Session.Run(ctx, b)
}

// gate is a driver that emits one prepared frame each time the test asks, so a test
// can put frames into the ring in a known order before any worker runs.
type gate struct {
	imgs  []*drivers.Image
	truth []string
	emit  chan chan drivers.Pressure
}

func newGate(t *testing.T) *gate {
	t.Helper()
	g, err := sim.NewGenerator(sim.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	gt := &gate{emit: make(chan chan drivers.Pressure)}
	for range 8 {
		buf := make([]byte, w*h)
		gt.truth = append(gt.truth, g.Next(buf))
		gt.imgs = append(gt.imgs, &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: buf})
	}
	return gt
}

func (g *gate) Run(ctx context.Context, e drivers.Emitter) error {
	var n int
	for {
		select {
		case <-ctx.Done():
			return nil
		case reply := <-g.emit:
			n++
			r := &drivers.Reading{Image: g.imgs[n%len(g.imgs)], Truth: g.truth[n%len(g.imgs)]}
			reply <- e.Emit(ctx, r)
		}
	}
}

// send emits one frame and returns the pipeline's answer.
func (g *gate) send(t *testing.T) drivers.Pressure {
	t.Helper()
	reply := make(chan drivers.Pressure, 1)
	select {
	case g.emit <- reply:
	case <-time.After(10 * time.Second):
		t.Fatal("driver not running")
	}
	select {
	case p := <-reply:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("Emit blocked for 10s")
	}
	return drivers.Pressure{}
}

// stall is a sink that holds every result until released, so frames pile up in the
// ring behind the one being published.
type stall struct {
	sink
	release chan struct{}
	entered chan struct{}
	once    sync.Once
}

func newStall() *stall {
	return &stall{release: make(chan struct{}), entered: make(chan struct{})}
}

func (s *stall) Publish(ctx context.Context, r *publish.Result) error {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.sink.Publish(ctx, r)
}

type harness struct {
	t      *testing.T
	p      *Pipeline
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config, src Source, ins ...Inspection) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	cfg.Registerer = h.reg
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if src.Spec.Name == "" {
		src.Spec.Name = "cam"
	}
	for i := range ins {
		if ins[i].Name == "" {
			ins[i].Name = "el"
		}
		ins[i].Source = src.Spec.Name
	}
	p, err := New(cfg, []Source{src}, ins)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- p.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Error(err)
		}
		h.done <- nil // later calls return at once
	case <-time.After(30 * time.Second):
		h.t.Fatal("pipeline did not stop within 30s")
	}
	c, _ := h.p.Counts("cam")
	if !c.Balanced() || c.InFlight != 0 {
		h.t.Errorf("after stop: %+v", c)
	}
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPolicies fills a ring of 4 behind a stalled sink with 12 frames and checks which
// frames each policy keeps.
func TestPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy string
		// seqs published, in order: the one stuck in the sink, the one in the worker's
		// second slot, then the ring's.
		want []uint64
	}{
		{DropNewest, []uint64{1, 2, 3, 4, 5, 6}},
		{DropOldest, []uint64{1, 2, 9, 10, 11, 12}},
		{Latest, []uint64{1, 2, 12}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			g, st := newGate(t), newStall()
			h := start(t, Config{RingSize: 4, Sink: st}, Source{Spec: drivers.Spec{Budget: time.Minute}, Driver: g, Backpressure: tc.policy},
				Inspection{Model: model(t)})
			g.send(t)
			<-st.entered // frame 1 is in the sink
			g.send(t)
			// Frame 2 waits in the worker's second slot; the ring is empty again.
			waitFor(t, "frame 2 taken", 5*time.Second, func() bool { return h.p.bySrc["cam"].q.Len() == 0 })
			for range 10 {
				g.send(t)
			}
			close(st.release)
			waitFor(t, "ring drained", 10*time.Second, func() bool {
				c, _ := h.p.Counts("cam")
				return c.InFlight == 0
			})
			h.stop()
			var got []uint64
			for _, r := range st.results {
				got = append(got, r.Seq)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("published seqs %v, want %v", got, tc.want)
			}
			c, _ := h.p.Counts("cam")
			if c.Accepted != 12 || c.DroppedFull != 12-uint64(len(tc.want)) {
				t.Errorf("counts %+v", c)
			}
		})
	}
}

// TestBlockWaitsForRoom: under block, Emit waits while the ring is full and nothing is
// dropped; the driver is told to slow down.
func TestBlockWaitsForRoom(t *testing.T) {
	g, st := newGate(t), newStall()
	h := start(t, Config{RingSize: 2, Sink: st}, Source{Spec: drivers.Spec{Budget: time.Minute}, Driver: g, Backpressure: Block},
		Inspection{Model: model(t)})
	g.send(t)
	<-st.entered
	g.send(t)
	waitFor(t, "frame 2 taken", 5*time.Second, func() bool { return h.p.bySrc["cam"].q.Len() == 0 })
	g.send(t)
	if p := g.send(t); !p.Accepted || !p.SlowDown() {
		t.Errorf("ring at its capacity: pressure %+v", p)
	}
	blocked := make(chan drivers.Pressure, 1)
	go func() { blocked <- g.send(t) }()
	waitFor(t, "emit blocks", 5*time.Second, func() bool { return h.p.bySrc["cam"].blocked.Load() == 1 })
	select {
	case p := <-blocked:
		t.Fatalf("emit into a full ring returned %+v", p)
	default:
	}
	close(st.release)
	if p := <-blocked; !p.Accepted {
		t.Errorf("blocked emit: %+v", p)
	}
	h.stop()
	c, _ := h.p.Counts("cam")
	if c.Accepted != 5 || c.Published != 5 || c.DroppedFull != 0 {
		t.Errorf("counts %+v", c)
	}
}

// TestBatching: frames queued behind a stalled sink run as batches up to max_batch,
// with verdicts as good as one at a time.
func TestBatching(t *testing.T) {
	s := &sink{}
	p, reg := run(t, Config{RingSize: 64, MaxBatch: 8, MaxWait: 5 * time.Millisecond, Sink: s},
		&burst{n: 400, budget: time.Minute, policy: Block, done: make(chan struct{})})
	c, _ := p.Counts("cam")
	if c.Published != 400 {
		t.Fatalf("counts %+v", c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var runs uint64
	var frames float64
	for _, mf := range mfs {
		if mf.GetName() == "edged_batch_size" {
			h := mf.GetMetric()[0].GetHistogram()
			runs, frames = h.GetSampleCount(), h.GetSampleSum()
		}
	}
	if frames != 400 || runs == 0 || runs >= 400 {
		t.Errorf("batch size histogram: %d runs for %v frames; want fewer runs than frames", runs, frames)
	}
	t.Logf("400 frames in %d runs (%.1f per run)", runs, frames/float64(runs))
	correct := 0
	for _, r := range s.results {
		if (r.Truth == sim.LabelOK) == (r.Verdict == inference.VerdictOK) {
			correct++
		}
		if r.LatencyMS.Infer <= 0 || r.LatencyMS.Total < r.LatencyMS.Queue {
			t.Fatalf("latency %+v", r.LatencyMS)
		}
	}
	if acc := float64(correct) / 400; acc < 0.95 {
		t.Errorf("accuracy %.3f in batches", acc)
	}
}

// TestBatchOffForFixedBatchModels: a model that takes one frame caps the batch at one.
func TestBatchOffForFixedBatchModels(t *testing.T) {
	m := model(t)
	h := start(t, Config{RingSize: 8, MaxBatch: 8, Sink: &sink{}}, Source{Driver: newGate(t)},
		Inspection{Model: &Model{Manifest: m.Manifest, Session: fixedOne{m.Session}}})
	if b := h.p.bySrc["cam"].batch; b != 1 {
		t.Errorf("batch %d for a model of fixed batch 1", b)
	}
}

type fixedOne struct{ inference.Session }

func (fixedOne) MaxBatch() int { return 1 }

// TestBreakerDegradesAndRecovers: a failing model opens the inference breaker; frames
// then get UNKNOWN with reason degraded and the fail-safe action without the model
// being asked; once the model works again, half-open probes close the breaker.
func TestBreakerDegradesAndRecovers(t *testing.T) {
	m := model(t)
	f := &faulty{Session: m.Session}
	g, s := newGate(t), &sink{}
	h := start(t, Config{
		RingSize: 8, Sink: s,
		Breaker: breaker.Config{Window: time.Second, Bucket: 100 * time.Millisecond, FailureRatio: 0.35, MinCalls: 8, OpenTimeout: 300 * time.Millisecond, HalfOpenProbes: 2},
	}, Source{Spec: drivers.Spec{Budget: time.Minute}, Driver: g, Backpressure: Block},
		Inspection{Model: &Model{Manifest: m.Manifest, Session: f}, FailSafe: Reject})
	br := h.p.byIns["el"].h.cur.Load().br

	sendWait := func() {
		t.Helper()
		g.send(t)
		waitFor(t, "frame done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	}
	for range 3 {
		sendWait()
	}
	f.fail.Store(true)
	for range 5 {
		sendWait()
	}
	if st := br.State(); st != breaker.Open {
		t.Fatalf("breaker %v after 5 failures of 8 runs", st)
	}
	runs := f.runs.Load()
	for range 4 {
		sendWait()
	}
	if f.runs.Load() != runs {
		t.Errorf("the model ran %d times with the breaker open", f.runs.Load()-runs)
	}
	if v := testutil.ToFloat64(h.p.metrics.unknown.WithLabelValues("el", publish.ReasonDegraded)); v != 4 {
		t.Errorf("edged_unknown_verdicts_total{reason=degraded} %v, want 4", v)
	}
	f.fail.Store(false)
	time.Sleep(350 * time.Millisecond) // past the open timeout: the breaker lets probes through
	for range 3 {
		sendWait()
	}
	if st := br.State(); st != breaker.Closed {
		t.Fatalf("breaker %v after the model recovered", st)
	}
	h.stop()

	var degraded, failed, judged int
	for _, r := range s.results {
		switch {
		case r.Reason == publish.ReasonDegraded && r.Verdict == publish.VerdictUnknown && r.Action == Reject:
			degraded++
		case r.Reason == publish.ReasonError && r.Verdict == publish.VerdictUnknown && r.Action == Reject:
			failed++
		case r.Reason == "" && r.Action == "" && r.Verdict != publish.VerdictUnknown:
			judged++
		default:
			t.Errorf("result %+v", r)
		}
	}
	if degraded != 4 || failed != 5 || judged != 6 {
		t.Errorf("degraded %d, failed %d, judged %d; want 4, 5, 6", degraded, failed, judged)
	}
	c, _ := h.p.Counts("cam")
	if c.Errors != 5 || c.Published != 10 {
		t.Errorf("counts %+v: failed runs are errors, degraded frames are published", c)
	}
}

// TestRateControllerConverges: a source ten times faster than a slowed model is held
// near what the model gets through, without drops under block; when the model speeds
// up again the limit rises and is lifted.
func TestRateControllerConverges(t *testing.T) {
	m := model(t)
	f := &faulty{Session: m.Session}
	f.delay.Store(int64(20 * time.Millisecond)) // about 50 frames/s
	cfg := sim.DefaultConfig()
	cfg.RateHz = 500
	drv, err := sim.New(drivers.Spec{Name: "cam", Budget: 2 * time.Second}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, Config{RingSize: 16, Sink: &sink{}, ControlInterval: 50 * time.Millisecond},
		Source{Spec: drivers.Spec{Name: "cam", Budget: 2 * time.Second}, Driver: drv, Backpressure: Block},
		Inspection{Model: &Model{Manifest: m.Manifest, Session: f}})

	service := func(d time.Duration) float64 {
		c0, _ := h.p.Counts("cam")
		time.Sleep(d)
		c1, _ := h.p.Counts("cam")
		return float64(c1.Published-c0.Published) / d.Seconds()
	}
	waitFor(t, "limit set", 5*time.Second, func() bool { l, _, _ := h.p.RateLimit("cam"); return l > 0 })
	time.Sleep(time.Second)
	svc := service(time.Second)
	limit, arrival, _ := h.p.RateLimit("cam")
	t.Logf("slow model: served %.1f/s, limit %.1f Hz, arrival %.1f/s, driver at %.1f Hz", svc, limit, arrival, drv.RateHz())
	if limit > 1.5*svc || limit < 0.5*svc || drv.RateHz() > 1.5*svc {
		t.Errorf("limit %.1f Hz, driver %.1f Hz against %.1f served/s", limit, drv.RateHz(), svc)
	}
	if c, _ := h.p.Counts("cam"); c.DroppedFull != 0 {
		t.Errorf("block dropped frames: %+v", c)
	}

	f.delay.Store(0)
	waitFor(t, "rate recovers", 15*time.Second, func() bool {
		l, _, _ := h.p.RateLimit("cam")
		return l == 0 || l > 10*svc
	})
	limit, arrival, _ = h.p.RateLimit("cam")
	t.Logf("model fast again: limit %.1f Hz, arrival %.1f/s, driver at %.1f Hz", limit, arrival, drv.RateHz())
}

// TestLiveSettings: a reload changes the policy, budget, threshold and fail-safe of a
// running pipeline, and refuses bad values without changing anything.
func TestLiveSettings(t *testing.T) {
	g, s := newGate(t), &sink{}
	h := start(t, Config{RingSize: 8, Sink: s}, Source{Spec: drivers.Spec{Budget: time.Minute}, Driver: g},
		Inspection{Model: model(t)})
	if err := h.p.SetSource("cam", SourceSettings{Backpressure: "sometimes"}); err == nil {
		t.Error("bad policy taken")
	}
	if err := h.p.SetInspection("el", InspectionSettings{Threshold: 2}); err == nil {
		t.Error("bad threshold taken")
	}
	if err := h.p.SetInspection("nope", InspectionSettings{}); err == nil {
		t.Error("unknown inspection taken")
	}
	if Policies[h.p.bySrc["cam"].policy.Load()] != Block || *h.p.byIns["el"].failSafe.Load() != Divert {
		t.Fatal("a refused change changed something")
	}
	if err := h.p.SetSource("cam", SourceSettings{Backpressure: Latest, Budget: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	g.send(t)
	waitFor(t, "frame done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	if c, _ := h.p.Counts("cam"); c.DroppedStale != 1 {
		t.Errorf("a 1ns budget did not make the frame stale: %+v", c)
	}
	// A threshold just above 0 makes every frame NG.
	if err := h.p.SetSource("cam", SourceSettings{Backpressure: Block, Budget: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := h.p.SetInspection("el", InspectionSettings{Threshold: 1e-6, FailSafe: Pass}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		g.send(t)
	}
	waitFor(t, "frames done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	h.stop()
	if len(s.results) != 4 {
		t.Fatalf("%d results", len(s.results))
	}
	for _, r := range s.results {
		if r.Verdict != publish.VerdictNG {
			t.Errorf("verdict %s with threshold 1e-6 (scores %v)", r.Verdict, r.Scores)
		}
	}
}

func TestFrameCtx(t *testing.T) {
	now := time.Unix(100, 0)
	parent, cancel := context.WithCancel(context.Background())
	c := &frameCtx{Context: parent, deadline: now.Add(time.Second), now: func() time.Time { return now }}
	if d, ok := c.Deadline(); !ok || !d.Equal(now.Add(time.Second)) {
		t.Errorf("deadline %v %v", d, ok)
	}
	if c.Err() != nil {
		t.Error("err before the deadline")
	}
	now = now.Add(2 * time.Second)
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Errorf("err past the deadline: %v", c.Err())
	}
	select {
	case <-c.Done():
		t.Error("done closed by the deadline; it must close only with the parent")
	default:
	}
	cancel()
	<-c.Done()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("err after cancel: %v", c.Err())
	}
}

// TestRateControllerStalledModel: a model that stops answering halves the source's
// limit every tick down to the floor, rather than keeping the capacity it had.
func TestRateControllerStalledModel(t *testing.T) {
	s := &source{q: NewMPMC[*drivers.Reading](8), workers: 1}
	s.policy.Store(0) // block
	at := time.Unix(0, 0)
	s.ctl.at = at
	step := func(accepted, published uint64, busy time.Duration) {
		at = at.Add(100 * time.Millisecond)
		s.accepted.Add(accepted)
		s.published.Add(published)
		s.finishNS.Add(int64(busy))
		s.tick(at)
	}
	// Healthy and saturated: 100 frames in each 100 ms tick, the worker always busy.
	for range 10 {
		for range 8 {
			s.q.TryPush(&drivers.Reading{})
		}
		step(100, 100, 100*time.Millisecond)
		for range 8 {
			s.q.TryPop()
		}
	}
	limit := func() float64 { return math.Float64frombits(s.limit.Load()) }
	if l := limit(); l < 800 || l > 1000 {
		t.Fatalf("limit %v Hz for a model finishing 1000 frames/s", l)
	}
	// The model stalls with frames waiting: nothing finishes.
	for range 8 {
		s.q.TryPush(&drivers.Reading{})
	}
	prev := limit()
	for range 5 {
		step(0, 0, 0)
		if l := limit(); l > prev/2+1e-9 && l > minRate {
			t.Fatalf("limit %v Hz after %v: not halved while nothing finishes", l, prev)
		}
		prev = limit()
	}
	for range 20 {
		step(0, 0, 0)
	}
	if l := limit(); l != minRate {
		t.Errorf("limit %v Hz after a long stall, want the floor %v", l, minRate)
	}
}

// TestDeadlinePassingAtTheRun: a batch whose deadline passes between the stale check
// and the model run is counted stale, gets no result, and tells the breaker nothing.
func TestDeadlinePassingAtTheRun(t *testing.T) {
	m := model(t)
	f := &faulty{Session: m.Session}
	f.expire.Store(true)
	g, s := newGate(t), &sink{}
	h := start(t, Config{RingSize: 8, Sink: s}, Source{Spec: drivers.Spec{Budget: time.Minute}, Driver: g},
		Inspection{Model: &Model{Manifest: m.Manifest, Session: f}})
	for range 3 {
		g.send(t)
	}
	waitFor(t, "frames done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	h.stop()
	c, _ := h.p.Counts("cam")
	if c.DroppedStale != 3 || c.Published != 0 || c.Errors != 0 || len(s.results) != 0 {
		t.Errorf("counts %+v, %d results; want 3 stale and no result", c, len(s.results))
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "edged_breaker_calls_total" {
			for _, m := range mf.GetMetric() {
				if m.GetCounter().GetValue() != 0 {
					t.Errorf("breaker heard of runs that were not made: %v", m)
				}
			}
		}
	}
}

// TestNGResultsCarryTheirImage: an NG result holds a copy of its frame's image (the
// reading's buffer goes back to its pool), and no other result holds one.
func TestNGResultsCarryTheirImage(t *testing.T) {
	g, s := newGate(t), &sink{}
	h := start(t, Config{RingSize: 8, Sink: s}, Source{Spec: drivers.Spec{Budget: time.Minute}, Driver: g},
		Inspection{Model: model(t)})
	for _, threshold := range []float32{1e-6, 0.999999} {
		if err := h.p.SetInspection("el", InspectionSettings{Threshold: threshold}); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			g.send(t)
		}
		waitFor(t, "frames done", 5*time.Second, func() bool { c, _ := h.p.Counts("cam"); return c.InFlight == 0 })
	}
	h.stop()
	if len(s.results) != 8 {
		t.Fatalf("%d results", len(s.results))
	}
	ng := 0
	for _, r := range s.results {
		if (r.Verdict == publish.VerdictNG) != (r.Image != nil) {
			t.Fatalf("verdict %s with image %v", r.Verdict, r.Image != nil)
		}
		if r.Image == nil {
			continue
		}
		ng++
		src := g.imgs[r.Seq%uint64(len(g.imgs))]
		if r.Image.Format != string(drivers.FormatGray8) || r.Image.Width != src.Width || r.Image.Height != src.Height {
			t.Errorf("image %s %dx%d, frame %s %dx%d", r.Image.Format, r.Image.Width, r.Image.Height, src.Format, src.Width, src.Height)
		}
		if !bytes.Equal(r.Image.Data, src.Data) || &r.Image.Data[0] == &src.Data[0] {
			t.Errorf("seq %d: the image is not a copy of its frame", r.Seq)
		}
	}
	if ng < 4 {
		t.Errorf("%d NG results, want at least the 4 at threshold 1e-6", ng)
	}
}
