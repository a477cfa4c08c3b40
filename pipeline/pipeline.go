// Package pipeline carries readings from drivers to verdicts: a lock-free ring per
// source with a backpressure policy, a rate controller that slows the source while the
// pipeline is behind, workers that gather frames into batches, drop the ones past their
// deadline, preprocess, infer behind a circuit breaker and postprocess, and the hand-off
// of results to the publisher. It accounts for every frame: for each source,
// accepted = published + dropped{full,stale,error,shutdown} + in flight, at every moment.
//
// Models are swapped by name while frames flow (SwapModel): each batch pins the model
// generation it was gathered for and runs on it to the end, frames taken after a swap
// run on the new model, and the old one is given up once its last batch is handed over.
package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/publish"
	"github.com/edgedrun/edged/window"
)

// Sink takes results. Publish may block to push back on the workers; it must not drop a
// result silently. ctx carries the frame's deadline (see Deadline); it ends only with
// the pipeline, never at the deadline, since a late verdict is still delivered.
type Sink interface {
	Publish(ctx context.Context, r *publish.Result) error
}

// Identity names this box in every result.
type Identity struct {
	Node string
}

// Backpressure policies, as in the config's sources[].backpressure.
const (
	Block      = "block"
	DropOldest = "drop_oldest"
	DropNewest = "drop_newest"
	Latest     = "latest"
)

// Policies lists the backpressure policies, in the order the config's docs give them.
var Policies = []string{Block, DropOldest, DropNewest, Latest}

// Fail-safe actions of an inspection, as in the config's inspections[].fail_safe.
const (
	Divert = "divert"
	Reject = "reject"
	Pass   = "pass"
)

// FailSafes lists the fail-safe actions.
var FailSafes = []string{Divert, Reject, Pass}

// Source is one driver with its common settings.
type Source struct {
	Spec   drivers.Spec
	Driver drivers.Driver
	// Backpressure is one of Block (the default), DropOldest, DropNewest, Latest.
	Backpressure string
	// Window, when set, assembles the driver's samples into windows before the ring:
	// each completed window is one frame, holding the window's features by name.
	Window *window.Config
}

// Model is a loaded model with what it needs around it. The inspections that run a
// model name share one *Model; SwapModel replaces it for all of them.
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
	// FailSafe is the action an UNKNOWN result carries: Divert (the default), Reject, Pass.
	FailSafe string
}

// Config wires a pipeline.
type Config struct {
	Identity Identity
	// RingSize is each source's ring capacity, rounded up to a power of two.
	RingSize int
	// Workers per source.
	Workers int
	// MaxBatch is the most frames a worker runs through a model at once; a model that
	// takes fewer (a fixed batch of one) caps it. 0 or 1 means one frame at a time.
	MaxBatch int
	// MaxWait is how long a worker holding fewer than MaxBatch frames waits for more.
	MaxWait time.Duration
	// DrainTimeout bounds how long Run spends finishing queued frames after ctx ends;
	// what is left then is counted as dropped for shutdown.
	DrainTimeout time.Duration
	// Breaker configures the breaker around each model's runs; its Name is set per
	// model ("inference:<model>"). The zero value takes the breaker package's defaults.
	Breaker breaker.Config
	// Breakers holds the breaker metrics of the process; nil makes a set on Registerer.
	Breakers *breaker.Metrics
	// ControlInterval is the rate controller's tick; 0 means 100ms.
	ControlInterval time.Duration
	Sink            Sink
	Registerer      prometheus.Registerer
	Log             *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Pipeline runs sources and inspections until its context ends.
type Pipeline struct {
	cfg     Config
	sources []*source
	bySrc   map[string]*source
	byIns   map[string]*inspection
	// holders serve each model name to its inspections; the map is fixed at New.
	holders map[string]*holder
	// mu orders the changes of models and thresholds (SwapModel, SetInspection), so
	// a swap builds each postprocessor with the threshold in force.
	mu      sync.Mutex
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
	q           *MPMC[*drivers.Reading]
	inspections []*inspection
	// batch is the most frames one model run takes for this source: the smallest of
	// the config's MaxBatch and what each inspection's model accepts.
	batch int
	log   *slog.Logger
	seq   atomic.Uint64

	policy atomic.Int32 // index into Policies
	budget atomic.Int64 // verdict budget in ns; 0 means none

	// Accounting: in flight is accepted minus every outcome. accepted is raised before
	// a frame can reach an outcome and read after the outcomes (see counts), so a
	// snapshot never shows a frame unaccounted for.
	accepted, published, droppedFull, droppedStale, errs, droppedShutdown atomic.Uint64
	// late counts frames published after their deadline: misses the stale check could
	// not foresee. Together with droppedStale it is the deadline miss count.
	late atomic.Uint64
	up   atomic.Bool
	// fault is why the driver last said it is down, or why its Run ended.
	fault atomic.Pointer[string]
	// win assembles samples into windows for windowed sources; nil otherwise.
	win *windowing
	// blocked counts emits waiting for room under the Block policy.
	blocked atomic.Int64
	// limit is the rate controller's answer (math.Float64bits of Hz; 0 means none) and
	// arrival its measured rate of accepted frames.
	limit, arrival atomic.Uint64
	// inferNS is a moving average of one model run of this source, used to drop
	// frames that would finish past their deadline before running them.
	inferNS atomic.Int64
	// prepNS and finishNS add up the time the workers' two stages spent working (preprocessing
	// frames; running, postprocessing and handing over batches), each stage counted
	// separately; workers is their count. The rate controller reads the busier stage's
	// share of each tick to tell the workers' capacity from what they happened to do.
	prepNS, finishNS atomic.Int64
	workers          int
	ctl              control
}

type inspection struct {
	name string
	src  *source
	// h serves the inspection's model; idx is the inspection's index among h.ins.
	h   *holder
	idx int
	// threshold is the configured override (0: the manifest's), under Pipeline.mu.
	threshold float32
	failSafe  atomic.Pointer[string]
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
	if cfg.MaxBatch < 1 {
		cfg.MaxBatch = 1
	}
	if cfg.MaxWait < 0 {
		return nil, fmt.Errorf("pipeline: max wait %v is below 0", cfg.MaxWait)
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
	if cfg.ControlInterval <= 0 {
		cfg.ControlInterval = 100 * time.Millisecond
	}
	if cfg.Breakers == nil {
		m, err := breaker.NewMetrics(cfg.Registerer)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		cfg.Breakers = m
	}
	p := &Pipeline{
		cfg: cfg, bySrc: map[string]*source{}, byIns: map[string]*inspection{},
		holders: map[string]*holder{}, now: cfg.Now,
	}
	if p.now == nil {
		p.now = time.Now
	}
	for _, s := range sources {
		if _, dup := p.bySrc[s.Spec.Name]; dup {
			return nil, fmt.Errorf("pipeline: source %q twice", s.Spec.Name)
		}
		src := &source{
			spec: s.Spec, driver: s.Driver, q: NewMPMC[*drivers.Reading](cfg.RingSize),
			batch: cfg.MaxBatch, workers: cfg.Workers, log: cfg.Log.With("source", s.Spec.Name),
		}
		if err := src.set(s.Backpressure, s.Spec.Budget); err != nil {
			return nil, fmt.Errorf("pipeline: source %q: %w", s.Spec.Name, err)
		}
		if s.Window != nil {
			w, err := newWindowing(*s.Window)
			if err != nil {
				return nil, fmt.Errorf("pipeline: source %q: window: %w", s.Spec.Name, err)
			}
			src.win = w
		}
		p.sources = append(p.sources, src)
		p.bySrc[s.Spec.Name] = src
	}
	for _, in := range inspections {
		src, ok := p.bySrc[in.Source]
		if !ok {
			return nil, fmt.Errorf("pipeline: inspection %q: source %q is not configured", in.Name, in.Source)
		}
		if _, dup := p.byIns[in.Name]; dup {
			return nil, fmt.Errorf("pipeline: inspection %q twice", in.Name)
		}
		if in.Model == nil || in.Model.Session == nil || in.Model.Manifest == nil {
			return nil, fmt.Errorf("pipeline: inspection %q has no model loaded", in.Name)
		}
		m := in.Model.Manifest
		h, ok := p.holders[m.Name]
		if !ok {
			h = &holder{name: m.Name}
			p.holders[m.Name] = h
		} else if other := h.ins[0]; h.cur.Load().model != in.Model {
			// A swap replaces a model by name for every inspection at once, so one
			// name has one loaded model.
			return nil, fmt.Errorf("pipeline: inspection %q: model %q is loaded twice (inspection %q has another copy)", in.Name, m.Name, other.name)
		}
		ins := &inspection{name: in.Name, src: src, h: h, idx: len(h.ins), threshold: in.Threshold}
		if err := ins.setFailSafe(in.FailSafe); err != nil {
			return nil, fmt.Errorf("pipeline: inspection %q: %w", in.Name, err)
		}
		h.ins = append(h.ins, ins)
		if !ok {
			// A placeholder until every inspection of the name is known (below).
			h.cur.Store(&generation{model: in.Model})
		}
		src.inspections = append(src.inspections, ins)
		src.batch = min(src.batch, max(1, in.Model.Session.MaxBatch()))
		p.byIns[in.Name] = ins
	}
	for _, s := range p.sources {
		if len(s.inspections) == 0 {
			return nil, fmt.Errorf("pipeline: source %q feeds no inspection", s.spec.Name)
		}
	}
	for _, h := range p.holders {
		g, err := p.newGeneration(h, h.cur.Load().model)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		h.cur.Store(g)
	}
	m, err := newMetrics(cfg.Registerer, p)
	if err != nil {
		return nil, err
	}
	p.metrics = m
	for _, h := range p.holders {
		r := h.cur.Load().ref
		p.metrics.modelInfo.WithLabelValues(r.Name, r.Version, r.SHA256).Set(1)
	}
	return p, nil
}

func (s *source) set(policy string, budget time.Duration) error {
	if policy == "" {
		policy = Block
	}
	i := slices.Index(Policies, policy)
	if i < 0 {
		return fmt.Errorf("backpressure %q is not one of %v", policy, Policies)
	}
	if budget < 0 {
		return fmt.Errorf("verdict budget %v is below 0", budget)
	}
	s.policy.Store(int32(i))
	s.budget.Store(int64(budget))
	return nil
}

func (in *inspection) setFailSafe(failSafe string) error {
	if failSafe == "" {
		failSafe = Divert
	}
	if !slices.Contains(FailSafes, failSafe) {
		return fmt.Errorf("fail-safe %q is not one of %v", failSafe, FailSafes)
	}
	in.failSafe.Store(&failSafe)
	return nil
}

// SourceSettings are what a config reload may change of a running source.
type SourceSettings struct {
	Backpressure string
	Budget       time.Duration
}

// InspectionSettings are what a config reload may change of a running inspection.
type InspectionSettings struct {
	Threshold float32
	FailSafe  string
}

// CheckSource reports whether SetSource would take the settings, changing nothing.
func (p *Pipeline) CheckSource(name string, st SourceSettings) error {
	if _, ok := p.bySrc[name]; !ok {
		return fmt.Errorf("source %q is not running", name)
	}
	if st.Backpressure != "" && !slices.Contains(Policies, st.Backpressure) {
		return fmt.Errorf("source %q: backpressure %q is not one of %v", name, st.Backpressure, Policies)
	}
	if st.Budget < 0 {
		return fmt.Errorf("source %q: verdict budget %v is below 0", name, st.Budget)
	}
	return nil
}

// SetSource changes a running source's policy and verdict budget; frames emitted from
// then on follow them.
func (p *Pipeline) SetSource(name string, st SourceSettings) error {
	if err := p.CheckSource(name, st); err != nil {
		return err
	}
	return p.bySrc[name].set(st.Backpressure, st.Budget)
}

// CheckInspection reports whether SetInspection would take the settings, changing nothing.
func (p *Pipeline) CheckInspection(name string, st InspectionSettings) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.checkInspection(name, st)
	return err
}

// checkInspection returns the postprocessor the settings make for the model now
// serving the inspection; p.mu is held.
func (p *Pipeline) checkInspection(name string, st InspectionSettings) (*inference.Postprocessor, error) {
	in, ok := p.byIns[name]
	if !ok {
		return nil, fmt.Errorf("inspection %q is not running", name)
	}
	if st.FailSafe != "" && !slices.Contains(FailSafes, st.FailSafe) {
		return nil, fmt.Errorf("inspection %q: fail-safe %q is not one of %v", name, st.FailSafe, FailSafes)
	}
	mf := in.h.cur.Load().model.Manifest
	post, err := inference.NewPostprocessor(mf.Postprocess, st.Threshold)
	if err != nil {
		return nil, fmt.Errorf("inspection %q: model %q version %q: %w", name, mf.Name, mf.Version, err)
	}
	return post, nil
}

// SetInspection changes a running inspection's threshold and fail-safe action; batches
// postprocessed from then on use them. The threshold holds for the model now serving
// and for any model swapped in later.
func (p *Pipeline) SetInspection(name string, st InspectionSettings) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	post, err := p.checkInspection(name, st)
	if err != nil {
		return err
	}
	in := p.byIns[name]
	if err := in.setFailSafe(st.FailSafe); err != nil {
		return err
	}
	in.threshold = st.Threshold
	in.h.cur.Load().post[in.idx].Store(post)
	return nil
}

// Counts returns the accounting snapshot of a source.
func (p *Pipeline) Counts(sourceName string) (Counts, bool) {
	s, ok := p.bySrc[sourceName]
	if !ok {
		return Counts{}, false
	}
	return s.counts(), true
}

// RateLimit returns the rate controller's current limit for a source in Hz (0: none)
// and the measured rate of accepted frames.
func (p *Pipeline) RateLimit(sourceName string) (limit, arrival float64, ok bool) {
	s, ok := p.bySrc[sourceName]
	if !ok {
		return 0, 0, false
	}
	return math.Float64frombits(s.limit.Load()), math.Float64frombits(s.arrival.Load()), true
}

// BreakerStates returns the state of each model's inference breaker, by model name.
func (p *Pipeline) BreakerStates() map[string]breaker.State {
	out := make(map[string]breaker.State, len(p.holders))
	for name, h := range p.holders {
		out[name] = h.cur.Load().br.State()
	}
	return out
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

// Health reports whether a source's driver says its device is up, and the last fault
// it gave (kept after recovery, for the status page); ok is false for an unknown source.
func (p *Pipeline) Health(source string) (up bool, fault string, ok bool) {
	s, ok := p.bySrc[source]
	if !ok {
		return false, "", false
	}
	if f := s.fault.Load(); f != nil {
		fault = *f
	}
	return s.up.Load(), fault, true
}

// Run starts every driver, worker and the rate controller, and returns after ctx ends,
// the drivers have stopped and the rings are drained (or DrainTimeout passed).
func (p *Pipeline) Run(ctx context.Context) error {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var drv, work sync.WaitGroup
	ctlCtx, stopCtl := context.WithCancel(ctx)
	defer stopCtl()
	ctlDone := make(chan struct{})
	go func() { defer close(ctlDone); p.control(ctlCtx) }()
	for _, s := range p.sources {
		drv.Go(func() {
			var em drivers.Emitter = &emitter{p: p, s: s}
			if s.win != nil {
				em = &windowEmitter{emitter: em.(*emitter)}
			}
			err := s.driver.Run(ctx, em)
			s.up.Store(false)
			if err != nil {
				why := "driver stopped: " + err.Error()
				s.fault.Store(&why)
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
	<-ctlDone
	for _, s := range p.sources {
		s.q.Close()
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
	// The source's budget, not the driver's copy of it, so a reload takes effect at once.
	if b := time.Duration(s.budget.Load()); b > 0 {
		r.Deadline = r.CapturedAt.Add(b)
	}
	if r.TraceID == "" {
		r.TraceID = newID()
	}
	s.accepted.Add(1)
	ok := true
	switch Policies[s.policy.Load()] {
	case DropNewest:
		if !s.q.TryPush(r) {
			ok = false
			s.drop(r, &s.droppedFull, "frame dropped: ring full")
		}
	case DropOldest:
		ok = s.pushEvicting(r, s.q.Cap())
	case Latest:
		ok = s.pushEvicting(r, 1)
	default: // Block
		if !s.q.TryPush(r) {
			s.blocked.Add(1)
			err := s.q.Push(ctx, r)
			s.blocked.Add(-1)
			if err != nil {
				ok = false
				s.drop(r, &s.droppedShutdown, "frame dropped: stopping while waiting for room")
			}
		}
	}
	return drivers.Pressure{Accepted: ok, Occupancy: s.occupancy(), MaxRateHz: math.Float64frombits(s.limit.Load())}
}

// pushEvicting makes room by dropping the oldest waiting frames until fewer than keep
// wait, then pushes r. Evicted frames count as dropped for a full ring.
func (s *source) pushEvicting(r *drivers.Reading, keep int) bool {
	// Bounded: each round either pushes or evicts one frame, and producers racing for
	// the freed slot are few.
	for range 4 * s.q.Cap() {
		if s.q.Len() < keep && s.q.TryPush(r) {
			return true
		}
		if old, ok := s.q.TryPop(); ok {
			s.drop(old, &s.droppedFull, "frame dropped: a newer frame took its place")
		} else if s.q.Closed() {
			break
		}
	}
	s.drop(r, &s.droppedShutdown, "frame dropped: the ring is closed")
	return false
}

// drop counts a frame under an outcome and releases it.
func (s *source) drop(r *drivers.Reading, counter *atomic.Uint64, why string) {
	counter.Add(1)
	if s.debug() {
		s.log.Debug(why, "trace_id", r.TraceID, "seq", r.Seq)
	}
	r.Release()
}

// debug reports whether debug lines are logged, so the per-frame ones cost nothing
// (not even their arguments) when they are not.
func (s *source) debug() bool { return s.log.Enabled(context.Background(), slog.LevelDebug) }

func (s *source) occupancy() float64 { return float64(s.q.Len()) / float64(s.q.Cap()) }

// Pressure implements drivers.PressureReader.
func (e *emitter) Pressure() drivers.Pressure {
	return drivers.Pressure{Accepted: true, Occupancy: e.s.occupancy(), MaxRateHz: math.Float64frombits(e.s.limit.Load())}
}

func (e *emitter) Health(up bool, err error) {
	if !up {
		why := "down"
		if err != nil {
			why = err.Error()
		}
		e.s.fault.Store(&why)
	}
	was := e.s.up.Swap(up)
	switch {
	case up && !was:
		e.s.log.Info("driver up")
	case !up && was:
		e.s.log.Warn("driver down", "err", err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// newID is 128 random bits in hex, the width of a W3C trace id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
