// Package pipeline carries readings from drivers to verdicts: a bounded ring per source,
// deadline checks before inference, workers that preprocess, infer and postprocess, and
// the hand-off of results to the publisher. It accounts for every frame: for each source,
// accepted = published + dropped{full,stale,error,shutdown} + in flight, at every moment.
package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/publish"
)

// Sink takes results. Publish may block to push back on the workers; it must not drop a
// result silently.
type Sink interface {
	Publish(ctx context.Context, r *publish.Result) error
}

// Identity names this box in every result.
type Identity struct {
	Node string
}

// Source is one driver with its common settings.
type Source struct {
	Spec   drivers.Spec
	Driver drivers.Driver
}

// Model is a loaded model with what it needs around it.
type Model struct {
	Manifest *models.Manifest
	Session  inference.Session
}

// Inspection runs one model on one source's frames.
type Inspection struct {
	Name   string
	Source string
	Model  *Model
	// Threshold overrides the manifest's NG threshold when above 0.
	Threshold float32
}

// Config wires a pipeline.
type Config struct {
	Identity Identity
	// RingSize is each source's ring capacity.
	RingSize int
	// Workers per source.
	Workers int
	// DrainTimeout bounds how long Run spends finishing queued frames after ctx ends;
	// what is left then is counted as dropped for shutdown.
	DrainTimeout time.Duration
	Sink         Sink
	Registerer   prometheus.Registerer
	Log          *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Pipeline runs sources and inspections until its context ends.
type Pipeline struct {
	cfg     Config
	sources []*source
	bySrc   map[string]*source
	metrics *metrics
	now     func() time.Time
}

// Frame outcomes, as in the edged_frames_total metric.
const (
	OutcomeAccepted        = "accepted"
	OutcomePublished       = "published"
	OutcomeDroppedFull     = "dropped_full"
	OutcomeDroppedStale    = "dropped_stale"
	OutcomeError           = "error"
	OutcomeDroppedShutdown = "dropped_shutdown"
)

// Counts is a snapshot of one source's frame accounting.
type Counts struct {
	Accepted, Published, DroppedFull, DroppedStale, Errors, DroppedShutdown, InFlight uint64
}

// Balanced reports whether the conservation equation holds for the snapshot.
func (c Counts) Balanced() bool {
	return c.Accepted == c.Published+c.DroppedFull+c.DroppedStale+c.Errors+c.DroppedShutdown+c.InFlight
}

type source struct {
	spec        drivers.Spec
	driver      drivers.Driver
	ring        *Ring
	inspections []*inspection
	log         *slog.Logger
	seq         atomic.Uint64

	// Accounting: in flight is accepted minus every outcome. accepted is raised before
	// a frame can reach an outcome and read after the outcomes (see counts), so a
	// snapshot never shows a frame unaccounted for.
	accepted, published, droppedFull, droppedStale, errs, droppedShutdown atomic.Uint64
	up                                                                    atomic.Bool
}

type inspection struct {
	name      string
	model     *Model
	post      *inference.Postprocessor
	modelInfo publish.ModelRef
}

// New checks the wiring and builds a pipeline; it starts nothing.
func New(cfg Config, sources []Source, inspections []Inspection) (*Pipeline, error) {
	if cfg.Sink == nil {
		return nil, errors.New("pipeline: no sink")
	}
	if cfg.RingSize < 1 {
		return nil, fmt.Errorf("pipeline: ring size %d is below 1", cfg.RingSize)
	}
	if cfg.Workers < 1 {
		return nil, fmt.Errorf("pipeline: workers %d is below 1", cfg.Workers)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	p := &Pipeline{cfg: cfg, bySrc: map[string]*source{}, now: cfg.Now}
	if p.now == nil {
		p.now = time.Now
	}
	for _, s := range sources {
		if _, dup := p.bySrc[s.Spec.Name]; dup {
			return nil, fmt.Errorf("pipeline: source %q twice", s.Spec.Name)
		}
		src := &source{spec: s.Spec, driver: s.Driver, ring: NewRing(cfg.RingSize), log: cfg.Log.With("source", s.Spec.Name)}
		p.sources = append(p.sources, src)
		p.bySrc[s.Spec.Name] = src
	}
	for _, in := range inspections {
		src, ok := p.bySrc[in.Source]
		if !ok {
			return nil, fmt.Errorf("pipeline: inspection %q: source %q is not configured", in.Name, in.Source)
		}
		if in.Model == nil || in.Model.Session == nil || in.Model.Manifest == nil {
			return nil, fmt.Errorf("pipeline: inspection %q has no model loaded", in.Name)
		}
		post, err := inference.NewPostprocessor(in.Model.Manifest.Postprocess, in.Threshold)
		if err != nil {
			return nil, fmt.Errorf("pipeline: inspection %q: %w", in.Name, err)
		}
		m := in.Model.Manifest
		src.inspections = append(src.inspections, &inspection{
			name: in.Name, model: in.Model, post: post,
			modelInfo: publish.ModelRef{Name: m.Name, Version: m.Version, SHA256: m.SHA256},
		})
	}
	for _, s := range p.sources {
		if len(s.inspections) == 0 {
			return nil, fmt.Errorf("pipeline: source %q feeds no inspection", s.spec.Name)
		}
	}
	m, err := newMetrics(cfg.Registerer, p)
	if err != nil {
		return nil, err
	}
	p.metrics = m
	for _, in := range inspections {
		mf := in.Model.Manifest
		p.metrics.modelInfo.WithLabelValues(mf.Name, mf.Version, mf.SHA256).Set(1)
	}
	return p, nil
}

// Counts returns the accounting snapshot of a source.
func (p *Pipeline) Counts(sourceName string) (Counts, bool) {
	s, ok := p.bySrc[sourceName]
	if !ok {
		return Counts{}, false
	}
	return s.counts(), true
}

func (s *source) counts() Counts {
	// Read the outcomes before accepted: a frame finishing in between then shows as
	// still in flight, never as lost.
	var c Counts
	c.Published = s.published.Load()
	c.DroppedFull = s.droppedFull.Load()
	c.DroppedStale = s.droppedStale.Load()
	c.Errors = s.errs.Load()
	c.DroppedShutdown = s.droppedShutdown.Load()
	c.Accepted = s.accepted.Load()
	c.InFlight = c.Accepted - (c.Published + c.DroppedFull + c.DroppedStale + c.Errors + c.DroppedShutdown)
	return c
}

// Run starts every driver and worker and returns after ctx ends, the drivers have
// stopped and the rings are drained (or DrainTimeout passed).
func (p *Pipeline) Run(ctx context.Context) error {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var drv, work sync.WaitGroup
	for _, s := range p.sources {
		drv.Go(func() {
			em := &emitter{p: p, s: s}
			err := s.driver.Run(ctx, em)
			s.up.Store(false)
			if err != nil {
				s.log.Error("driver stopped", "err", err)
				return
			}
			s.log.Debug("driver stopped")
		})
		for range p.cfg.Workers {
			work.Go(func() { p.worker(workCtx, s) })
		}
	}
	<-ctx.Done()
	drv.Wait()
	for _, s := range p.sources {
		s.ring.Close()
	}
	drained := make(chan struct{})
	go func() { work.Wait(); close(drained) }()
	t := time.NewTimer(p.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		p.cfg.Log.Warn("shutdown: frames still queued after the drain timeout; counting them as dropped", "drain_timeout", p.cfg.DrainTimeout)
		cancelWork()
		<-drained
	}
	return nil
}

// emitter is a source's Emitter.
type emitter struct {
	p *Pipeline
	s *source
}

func (e *emitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	s := e.s
	if r.Source == "" {
		r.Source = s.spec.Name
	}
	if r.Seq == 0 {
		r.Seq = s.seq.Add(1)
	}
	if r.CapturedAt.IsZero() {
		r.CapturedAt = e.p.now()
	}
	if r.Deadline.IsZero() && s.spec.Budget > 0 {
		r.Deadline = r.CapturedAt.Add(s.spec.Budget)
	}
	if r.TraceID == "" {
		r.TraceID = newID()
	}
	s.accepted.Add(1)
	ok, occ := s.ring.Push(r)
	if !ok {
		s.droppedFull.Add(1)
		s.log.Debug("frame dropped: ring full", "trace_id", r.TraceID, "seq", r.Seq)
	}
	return drivers.Pressure{Accepted: ok, Occupancy: occ}
}

// Pressure implements drivers.PressureReader.
func (e *emitter) Pressure() drivers.Pressure {
	return drivers.Pressure{Accepted: true, Occupancy: e.s.ring.Occupancy()}
}

func (e *emitter) Health(up bool, err error) {
	was := e.s.up.Swap(up)
	switch {
	case up && !was:
		e.s.log.Info("driver up")
	case !up && was:
		e.s.log.Warn("driver down", "err", err)
	}
}

// worker takes frames from one source's ring until it is closed and empty, or until
// ctx ends (then what is left is counted as dropped for shutdown).
//
// A worker is two goroutines joined by two slots: while the model runs on one frame,
// the next frame is already being preprocessed into the other slot, so on a box with a
// core to spare the model never waits for image work.
func (p *Pipeline) worker(ctx context.Context, s *source) {
	slots := make(chan *slot, 2)
	for range 2 {
		sl, err := newSlot(s.inspections)
		if err != nil {
			s.log.Error("worker cannot start: every frame of this source will be counted as an error", "err", err)
			p.drainAs(ctx, s, &s.errs)
			close(slots)
			for sl := range slots {
				sl.close()
			}
			return
		}
		slots <- sl
	}
	ready := make(chan *slot, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sl := range ready {
			p.finish(ctx, s, sl)
			slots <- sl
		}
	}()
	p.prepare(ctx, s, slots, ready)
	close(ready)
	<-done
	for range 2 {
		(<-slots).close()
	}
}

// prepare pops frames, drops stale ones, and preprocesses the rest into free slots.
func (p *Pipeline) prepare(ctx context.Context, s *source, slots chan *slot, ready chan<- *slot) {
	for {
		r, more := s.ring.Pop()
		if r == nil {
			if !more {
				return
			}
			select {
			case <-s.ring.Ready():
				continue
			case <-ctx.Done():
				p.drainAs(ctx, s, &s.droppedShutdown)
				return
			}
		}
		if ctx.Err() != nil {
			s.droppedShutdown.Add(1)
			continue
		}
		start := p.now()
		if !r.Deadline.IsZero() && start.After(r.Deadline) {
			s.droppedStale.Add(1)
			s.log.Debug("frame dropped: past its deadline", "trace_id", r.TraceID, "seq", r.Seq, "late", start.Sub(r.Deadline))
			continue
		}
		sl := <-slots
		sl.r, sl.start = r, start
		if err := sl.fill(r); err != nil {
			s.errs.Add(1)
			s.log.Error("preprocessing failed", "trace_id", r.TraceID, "seq", r.Seq, "err", err)
			sl.r = nil
			slots <- sl
			continue
		}
		ready <- sl
	}
}

// drainAs empties the ring after ctx ended or the worker failed, counting each frame
// under the given outcome.
func (p *Pipeline) drainAs(ctx context.Context, s *source, counter *atomic.Uint64) {
	for {
		r, more := s.ring.Pop()
		if r != nil {
			counter.Add(1)
			continue
		}
		if !more {
			return
		}
		select {
		case <-s.ring.Ready():
		case <-ctx.Done():
			// Past the drain deadline whatever is left counts as lost to shutdown.
			counter = &s.droppedShutdown
		}
	}
}

// slot holds one frame's preprocessed inputs, for every inspection of its source.
type slot struct {
	r       *drivers.Reading
	start   time.Time
	ins     []*inspection
	pre     []*inference.Preprocessor
	batches []*inference.Batch
	verdict inference.Verdict
}

func newSlot(ins []*inspection) (*slot, error) {
	sl := &slot{ins: ins}
	for _, in := range ins {
		pre, err := inference.NewPreprocessor(in.model.Manifest.Preprocess)
		if err != nil {
			sl.close()
			return nil, fmt.Errorf("inspection %q: %w", in.name, err)
		}
		b, err := in.model.Session.NewBatch(1)
		if err != nil {
			sl.close()
			return nil, fmt.Errorf("inspection %q: %w", in.name, err)
		}
		sl.pre, sl.batches = append(sl.pre, pre), append(sl.batches, b)
		if b.InputLen != pre.InputLen() {
			sl.close()
			return nil, fmt.Errorf("inspection %q: model input holds %d values per frame, preprocessing makes %d", in.name, b.InputLen, pre.InputLen())
		}
	}
	return sl, nil
}

func (sl *slot) fill(r *drivers.Reading) error {
	for i, b := range sl.batches {
		if err := sl.pre[i].Fill(b.Input[:b.InputLen], r.Image); err != nil {
			return fmt.Errorf("inspection %q: %w", sl.ins[i].name, err)
		}
	}
	return nil
}

func (sl *slot) close() {
	for _, b := range sl.batches {
		b.Close()
	}
}

// finish runs the models on a prepared slot and hands the results to the sink.
func (p *Pipeline) finish(ctx context.Context, s *source, sl *slot) {
	r := sl.r
	defer func() { sl.r = nil }()
	queue := sl.start.Sub(r.CapturedAt)
	for i, in := range sl.ins {
		res, err := p.infer(ctx, sl, i, r, queue)
		if err != nil {
			s.errs.Add(1)
			s.log.Error("inference failed", "trace_id", r.TraceID, "seq", r.Seq, "inspection", in.name, "err", err)
			return
		}
		if err := p.cfg.Sink.Publish(ctx, res); err != nil {
			// The sink only fails when ctx ends before it could take the result.
			s.droppedShutdown.Add(1)
			s.log.Warn("result not handed to the publisher", "trace_id", r.TraceID, "seq", r.Seq, "inspection", in.name, "err", err)
			return
		}
	}
	s.published.Add(1)
}

func (p *Pipeline) infer(ctx context.Context, sl *slot, i int, r *drivers.Reading, queue time.Duration) (*publish.Result, error) {
	in, b := sl.ins[i], sl.batches[i]
	t0 := p.now()
	if err := in.model.Session.Run(ctx, b); err != nil {
		return nil, err
	}
	v := &sl.verdict
	if err := in.post.Apply(b.Output[:b.OutputLen], v); err != nil {
		return nil, err
	}
	t1 := p.now()
	infer := t1.Sub(t0)
	p.metrics.inferSeconds.Observe(infer.Seconds())
	p.metrics.batchSize.Observe(1)
	p.metrics.verdicts.WithLabelValues(in.name, v.Verdict).Inc()
	labels := in.post.Labels()
	scores := make(map[string]float64, len(labels))
	for i, l := range labels {
		scores[l] = float64(v.Scores[i])
	}
	return &publish.Result{
		V:          publish.ResultVersion,
		ID:         newID(),
		TraceID:    r.TraceID,
		Node:       p.cfg.Identity.Node,
		Inspection: in.name,
		Source:     r.Source,
		Seq:        r.Seq,
		CapturedAt: r.CapturedAt,
		Verdict:    v.Verdict,
		Label:      v.Label,
		Score:      float64(v.Score),
		Scores:     scores,
		Model:      in.modelInfo,
		LatencyMS: publish.Latency{
			Queue: ms(queue),
			Infer: ms(infer),
			Total: ms(t1.Sub(r.CapturedAt)),
		},
		Truth: r.Truth,
	}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// newID is 128 random bits in hex, the width of a W3C trace id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
