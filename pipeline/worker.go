package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/publish"
)

// worker takes frames from one source's ring until it is closed and empty, or until
// ctx ends (then what is left is counted as dropped for shutdown).
//
// A worker is two goroutines joined by two slots: while the model runs on one batch,
// the next batch is being gathered and preprocessed into the other slot, so on a box
// with a core to spare the model never waits for image work. The slots go round
// through two single-producer, single-consumer rings: free ones from the finishing
// stage to the gathering one, filled ones back.
func (p *Pipeline) worker(ctx context.Context, s *source) {
	free, ready := NewSPSC[*slot](2), NewSPSC[*slot](2)
	var made []*slot
	defer func() {
		for _, sl := range made {
			sl.close()
		}
	}()
	for range 2 {
		sl, err := newSlot(s, s.batch)
		if err != nil {
			s.log.Error("worker cannot start: every frame of this source will be counted as an error", "err", err)
			p.drainAs(ctx, s, &s.errs)
			return
		}
		made = append(made, sl)
		_ = free.Push(context.Background(), sl) // room for both slots; free is never closed
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// Background: the gathering stage closes ready when it is done, and
			// whatever it handed over before must still be finished.
			sl, err := ready.Pop(context.Background())
			if err != nil {
				return // closed and drained
			}
			p.finish(ctx, s, sl)
			_ = free.Push(context.Background(), sl) // room for both slots; never closed
		}
	}()
	p.gather(ctx, s, free, ready)
	ready.Close()
	<-done
}

// gather fills free slots with batches: it waits for a first frame, then takes more
// until the batch is full or MaxWait has passed since the first, preprocessing each
// frame as it comes. Stale frames are dropped here, before any work is spent on them.
//
// The first frame pins the models now serving the slot's inspections, and the batch
// runs on them to the end. A swap while the batch is gathered ends the batch: the frame
// in hand is carried to the next one, so a frame taken after a swap never runs on the
// model it replaced.
func (p *Pipeline) gather(ctx context.Context, s *source, free, ready *SPSC[*slot]) {
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	var sl *slot
	var carry *drivers.Reading
	for {
		if sl == nil {
			// Background: the finishing stage hands every slot back, and this stage
			// must not leave one filled and unfinished.
			var err error
			if sl, err = free.Pop(context.Background()); err != nil {
				return // not closed while this stage runs; nothing to hand over
			}
			sl.reset()
		}
		r := carry
		carry = nil
		if r == nil {
			var ok bool
			if r, ok = p.next(ctx, s, nil); !ok {
				return // the slot is empty and unpinned
			}
		}
		sl.pin(s)
		p.add(s, sl, r)
		if s.batch > 1 && p.cfg.MaxWait > 0 {
			wait.Reset(p.cfg.MaxWait)
		}
		for sl.len() < s.batch {
			r, ok := s.q.TryPop()
			if !ok {
				if s.batch == 1 || p.cfg.MaxWait <= 0 || s.q.Closed() {
					break
				}
				r, ok = p.next(ctx, s, wait.C)
				if !ok {
					break
				}
			}
			if sl.swapped() {
				carry = r
				break
			}
			p.add(s, sl, r)
		}
		wait.Stop()
		if sl.len() == 0 {
			sl.unpin()
			continue // every frame was stale or failed; the slot is still free
		}
		_ = ready.Push(context.Background(), sl) // closed only after this returns
		sl = nil
	}
}

// next waits for a frame. It returns false when the ring is closed and empty, when ctx
// ends (the ring's rest is then counted as dropped for shutdown), or when timeout fires.
func (p *Pipeline) next(ctx context.Context, s *source, timeout <-chan time.Time) (*drivers.Reading, bool) {
	for {
		if r, ok := s.q.TryPop(); ok {
			if ctx.Err() != nil {
				s.drop(r, &s.droppedShutdown, "frame dropped: stopping")
				continue
			}
			return r, true
		}
		if s.q.Closed() && s.q.Len() == 0 {
			return nil, false
		}
		select {
		case <-s.q.Ready():
		case <-timeout:
			return nil, false
		case <-ctx.Done():
			p.drainAs(ctx, s, &s.droppedShutdown)
			return nil, false
		}
	}
}

// add puts a frame into the slot unless it is already past its deadline or cannot be
// preprocessed; those reach their outcome here.
func (p *Pipeline) add(s *source, sl *slot, r *drivers.Reading) {
	now := p.now()
	defer func() { s.prepNS.Add(int64(p.now().Sub(now))) }()
	if !r.Deadline.IsZero() && now.After(r.Deadline) {
		s.droppedStale.Add(1)
		if s.debug() {
			s.log.Debug("frame dropped: past its deadline", "trace_id", r.TraceID, "seq", r.Seq, "late", now.Sub(r.Deadline))
		}
		r.Release()
		return
	}
	if err := sl.fill(r, now); err != nil {
		s.log.Error("preprocessing failed", "trace_id", r.TraceID, "seq", r.Seq, "err", err)
		sl.failed = append(sl.failed, failedFrame{r: r, start: now, err: err})
	}
}

// drainAs empties the ring after ctx ended or the worker failed, counting each frame
// under the given outcome.
func (p *Pipeline) drainAs(ctx context.Context, s *source, counter *atomic.Uint64) {
	for {
		if r, ok := s.q.TryPop(); ok {
			counter.Add(1)
			r.Release()
			continue
		}
		if s.q.Closed() && s.q.Len() == 0 {
			return
		}
		select {
		case <-s.q.Ready():
		case <-ctx.Done():
			// Past the drain deadline whatever is left counts as lost to shutdown.
			counter = &s.droppedShutdown
		}
	}
}

// slot holds one batch: the frames, and for every inspection of the source their
// preprocessed inputs back to back.
type slot struct {
	frames []frame
	failed []failedFrame
	ins    []*inspection
	// gens[i] is the model generation inspection i's preprocessor and batch were made
	// for; between pin and unpin, the one the batch runs on.
	gens    []*generation
	pinned  bool
	pre     []*inference.Preprocessor
	batches []*inference.Batch
	ctx     frameCtx
	verdict inference.Verdict
	// Per inspection: why it has no verdict for the batch, and its model's run time.
	why   []string
	infer []time.Duration
}

type frame struct {
	r     *drivers.Reading
	start time.Time // when the frame left the ring
}

type failedFrame struct {
	r     *drivers.Reading
	start time.Time
	err   error
}

func newSlot(s *source, n int) (*slot, error) {
	ins := s.inspections
	sl := &slot{
		ins: ins, frames: make([]frame, 0, n), why: make([]string, len(ins)), infer: make([]time.Duration, len(ins)),
		gens: make([]*generation, len(ins)),
		pre:  make([]*inference.Preprocessor, len(ins)), batches: make([]*inference.Batch, len(ins)),
	}
	for i, in := range ins {
		if err := sl.build(i, in.h.cur.Load()); err != nil {
			sl.close()
			return nil, err
		}
	}
	return sl, nil
}

// build makes inspection i's preprocessor and batch for generation g, closing the
// batch made for an earlier one. ONNX Runtime tensors do not belong to a session, so
// that batch may be closed after its session was.
func (sl *slot) build(i int, g *generation) error {
	in, mf := sl.ins[i], g.model.Manifest
	pre := sl.pre[i]
	if prev := sl.gens[i]; pre == nil || prev == nil || !reflect.DeepEqual(prev.model.Manifest.Preprocess, mf.Preprocess) {
		// A new version usually preprocesses as the old one did; keeping the
		// preprocessor then keeps its resize tables, which the first frames after a
		// swap would otherwise pay for.
		pre = nil
	}
	sl.gens[i] = g
	_ = sl.batches[i].Close() // a nil batch closes as a no-op
	sl.pre[i], sl.batches[i] = nil, nil
	if pre == nil {
		var err error
		if pre, err = inference.NewPreprocessor(mf.Preprocess); err != nil {
			return fmt.Errorf("inspection %q: model %q version %q: %w", in.name, mf.Name, mf.Version, err)
		}
	}
	b, err := g.model.Session.NewBatch(cap(sl.frames))
	if err != nil {
		return fmt.Errorf("inspection %q: model %q version %q: %w", in.name, mf.Name, mf.Version, err)
	}
	if b.InputLen != pre.InputLen() {
		_ = b.Close()
		return fmt.Errorf("inspection %q: model %q version %q: model input holds %d values per frame, preprocessing makes %d", in.name, mf.Name, mf.Version, b.InputLen, pre.InputLen())
	}
	sl.pre[i], sl.batches[i] = pre, b
	return nil
}

// pin takes the models now serving the slot's inspections for the batch about to be
// gathered, remaking a batch whose model was swapped since it was made. Only slots
// holding frames pin: a free slot's batch may outlive its session, never delay its
// closing.
func (sl *slot) pin(s *source) {
	for i, in := range sl.ins {
		g := in.h.pin()
		if g == sl.gens[i] && sl.batches[i] != nil {
			continue
		}
		if err := sl.build(i, g); err != nil {
			// The frames of this batch then fail to preprocess and are published as
			// UNKNOWN with the reason error; the next batch tries again.
			s.log.Error("cannot prepare a batch for the swapped-in model", "err", err)
		}
	}
	sl.pinned = true
}

// unpin lets go of the models the batch ran on, once its results were handed over.
func (sl *slot) unpin() {
	if !sl.pinned {
		return
	}
	for i, in := range sl.ins {
		in.h.unpin(sl.gens[i])
	}
	sl.pinned = false
}

// swapped reports whether a model of the slot's inspections was swapped since the
// batch was pinned.
func (sl *slot) swapped() bool {
	for i, in := range sl.ins {
		if in.h.cur.Load() != sl.gens[i] {
			return true
		}
	}
	return false
}

func (sl *slot) len() int { return len(sl.frames) + len(sl.failed) }

func (sl *slot) reset() {
	clear(sl.frames)
	clear(sl.failed)
	sl.frames, sl.failed = sl.frames[:0], sl.failed[:0]
}

// fill preprocesses r into the next frame of every inspection's batch.
func (sl *slot) fill(r *drivers.Reading, now time.Time) error {
	i := len(sl.frames)
	for j, b := range sl.batches {
		if b == nil {
			mf := sl.gens[j].model.Manifest
			return fmt.Errorf("inspection %q: no batch for model %q version %q", sl.ins[j].name, mf.Name, mf.Version)
		}
		in, _ := b.Frame(i)
		if err := sl.pre[j].FillReading(in, r); err != nil {
			return fmt.Errorf("inspection %q: %w", sl.ins[j].name, err)
		}
	}
	sl.frames = append(sl.frames, frame{r: r, start: now})
	return nil
}

// remove takes frame i out of the batch by moving the last frame into its place.
func (sl *slot) remove(i int) {
	last := len(sl.frames) - 1
	if i != last {
		for _, b := range sl.batches {
			if b == nil {
				continue
			}
			dst, _ := b.Frame(i)
			src, _ := b.Frame(last)
			copy(dst, src)
		}
		sl.frames[i] = sl.frames[last]
	}
	sl.frames[last] = frame{}
	sl.frames = sl.frames[:last]
}

func (sl *slot) close() {
	for _, b := range sl.batches {
		b.Close()
	}
}

// frameCtx carries a batch's deadline (its earliest frame's) to the model and the
// sink without allocating a context per batch. Err reports the deadline once passed,
// so a model run checks it before starting; Done closes only with the parent, so the
// deadline never cancels a wait: a late verdict is still handed over and delivered.
type frameCtx struct {
	context.Context
	deadline time.Time
	now      func() time.Time
}

func (c *frameCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *frameCtx) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !c.deadline.IsZero() && c.now().After(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// finish runs the models on a gathered batch and hands the results to the sink.
func (p *Pipeline) finish(ctx context.Context, s *source, sl *slot) {
	begin := p.now()
	defer func() { s.finishNS.Add(int64(p.now().Sub(begin))) }()
	// After every result is handed over (or the frames dropped): the models may go.
	defer sl.unpin()
	for _, f := range sl.failed {
		p.unknown(ctx, s, sl, f.r, f.start, publish.ReasonError)
		s.errs.Add(1)
		f.r.Release()
	}
	// Frames whose verdict would come too late are dropped before the run: past the
	// deadline now, or by the time a run usually takes.
	now := p.now()
	est := time.Duration(s.inferNS.Load())
	for i := len(sl.frames) - 1; i >= 0; i-- {
		r := sl.frames[i].r
		if !r.Deadline.IsZero() && now.Add(est).After(r.Deadline) {
			s.droppedStale.Add(1)
			if s.debug() {
				s.log.Debug("frame dropped: its verdict would miss the deadline", "trace_id", r.TraceID, "seq", r.Seq, "left", r.Deadline.Sub(now), "run_estimate", est)
			}
			r.Release()
			sl.remove(i)
		}
	}
	n := len(sl.frames)
	if n == 0 {
		return
	}
	sl.ctx = frameCtx{Context: ctx, now: p.now}
	for _, f := range sl.frames {
		if d := f.r.Deadline; !d.IsZero() && (sl.ctx.deadline.IsZero() || d.Before(sl.ctx.deadline)) {
			sl.ctx.deadline = d
		}
	}
	// why[i] is why inspection i has no verdict for this batch ("" when it has).
	failed, skip := false, (*atomic.Uint64)(nil)
	for i, in := range sl.ins {
		sl.why[i] = p.run(&sl.ctx, s, sl, i, in, n)
		switch sl.why[i] {
		case publish.ReasonError:
			failed = true
		case whyStale:
			skip = &s.droppedStale
		case whyStopped:
			skip = &s.droppedShutdown
		}
	}
	if skip != nil {
		// The deadline passed (or edged is stopping) between the check above and the
		// run: the frames were not inferred, and go as stale frames do, without a result.
		for _, f := range sl.frames {
			skip.Add(1)
			f.r.Release()
		}
		clear(sl.frames)
		sl.frames = sl.frames[:0]
		return
	}
	for k, f := range sl.frames {
		r := f.r
		ok := true
		for i, in := range sl.ins {
			var res *publish.Result
			if sl.why[i] != "" {
				res = p.unknownResult(s, in, sl.gens[i].ref, r, f.start, sl.why[i])
			} else {
				res = p.result(sl, i, k)
			}
			if err := p.cfg.Sink.Publish(&sl.ctx, res); err != nil {
				// The sink only fails when ctx ends before it could take the result.
				s.log.Warn("result not handed to the publisher", "trace_id", r.TraceID, "seq", r.Seq, "inspection", in.name, "err", err)
				ok = false
				break
			}
		}
		switch {
		case !ok:
			s.droppedShutdown.Add(1)
		case failed:
			s.errs.Add(1)
		default:
			if !r.Deadline.IsZero() && p.now().After(r.Deadline) {
				s.late.Add(1)
			}
			s.published.Add(1)
		}
		r.Release()
	}
	clear(sl.frames)
	sl.frames = sl.frames[:0]
}

// Why a batch has no model outputs, besides the reasons an UNKNOWN result gives: the
// run was not made, the frames' deadline having passed or edged stopping.
const (
	whyStale   = "stale"
	whyStopped = "stopped"
)

// run infers inspection i's batch behind its model's breaker. It returns "" when the
// outputs are there, publish.ReasonDegraded when the breaker refused the run,
// publish.ReasonError when the run failed, and whyStale or whyStopped when the run was
// not made.
func (p *Pipeline) run(ctx context.Context, s *source, sl *slot, i int, in *inspection, n int) string {
	b, g := sl.batches[i], sl.gens[i]
	if b == nil {
		return publish.ReasonError // the frames failed to preprocess and were logged then
	}
	if err := b.Use(n); err != nil {
		s.log.Error("batch refused the frame count", "inspection", in.name, "err", err)
		return publish.ReasonError
	}
	done, err := g.br.Allow()
	if err != nil {
		return publish.ReasonDegraded
	}
	t0 := p.now()
	err = g.model.Session.Run(ctx, b)
	infer := p.now().Sub(t0)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// The model was not asked: tell the breaker the call was given up, which it
		// counts neither as a success nor as a failure.
		done(context.Canceled)
		if errors.Is(err, context.DeadlineExceeded) {
			return whyStale
		}
		return whyStopped
	}
	done(err)
	if err != nil {
		ids := make([]string, n)
		for k := range n {
			ids[k] = sl.frames[k].r.TraceID
		}
		s.log.Error("inference failed", "inspection", in.name, "model", g.ref.Name, "version", g.ref.Version, "frames", n, "trace_id", strings.Join(ids, ","), "err", err)
		return publish.ReasonError
	}
	// A moving average over about eight runs.
	old := s.inferNS.Load()
	s.inferNS.Store(old + (int64(infer)-old)/8)
	sl.infer[i] = infer
	p.metrics.inferSeconds.Observe(infer.Seconds())
	p.metrics.batchSize.Observe(float64(n))
	return ""
}

// result builds inspection i's result for the batch's frame k from its outputs.
func (p *Pipeline) result(sl *slot, i, k int) *publish.Result {
	in, b, f, g := sl.ins[i], sl.batches[i], sl.frames[k], sl.gens[i]
	r := f.r
	_, out := b.Frame(k)
	post := g.post[in.idx].Load()
	v := &sl.verdict
	if err := post.Apply(out, v); err != nil {
		return p.unknownResult(nil, in, g.ref, r, f.start, publish.ReasonError)
	}
	now := p.now()
	p.metrics.verdicts.WithLabelValues(in.name, v.Verdict).Inc()
	labels := post.Labels()
	scores := make(map[string]float64, len(labels))
	for j, l := range labels {
		scores[l] = float64(v.Scores[j])
	}
	res := p.base(in, g.ref, r, f.start, now)
	res.Verdict, res.Label, res.Score, res.Scores = v.Verdict, v.Label, float64(v.Score), scores
	res.LatencyMS.Infer = ms(sl.infer[i])
	if v.Verdict == publish.VerdictNG && r.Image != nil && len(r.Image.Data) > 0 {
		// The reading's buffer goes back to its pool once the frame is done; the
		// rejects the line page shows need their own copy. Only NG frames pay for it.
		res.Image = &publish.Image{Format: string(r.Image.Format), Width: r.Image.Width, Height: r.Image.Height, Data: bytes.Clone(r.Image.Data)}
	}
	return res
}

// unknown publishes an UNKNOWN result for every inspection of a frame.
func (p *Pipeline) unknown(ctx context.Context, s *source, sl *slot, r *drivers.Reading, start time.Time, reason string) {
	for i, in := range sl.ins {
		if err := p.cfg.Sink.Publish(ctx, p.unknownResult(s, in, sl.gens[i].ref, r, start, reason)); err != nil {
			s.log.Warn("result not handed to the publisher", "trace_id", r.TraceID, "seq", r.Seq, "inspection", in.name, "err", err)
			return
		}
	}
}

// unknownResult is the result of a frame the model did not judge: verdict UNKNOWN, the
// reason, and the inspection's fail-safe action for the part.
func (p *Pipeline) unknownResult(s *source, in *inspection, ref publish.ModelRef, r *drivers.Reading, start time.Time, reason string) *publish.Result {
	res := p.base(in, ref, r, start, p.now())
	res.Verdict, res.Reason, res.Action = publish.VerdictUnknown, reason, *in.failSafe.Load()
	p.metrics.verdicts.WithLabelValues(in.name, publish.VerdictUnknown).Inc()
	p.metrics.unknown.WithLabelValues(in.name, reason).Inc()
	if reason == publish.ReasonDegraded && s != nil && s.debug() {
		s.log.Debug("model breaker open: frame gets the fail-safe action", "trace_id", r.TraceID, "seq", r.Seq, "inspection", in.name, "action", res.Action)
	}
	return res
}

// base is a result of frame r for inspection in, judged by the model ref names.
func (p *Pipeline) base(in *inspection, ref publish.ModelRef, r *drivers.Reading, start, now time.Time) *publish.Result {
	return &publish.Result{
		V:          publish.ResultVersion,
		ID:         newID(),
		TraceID:    r.TraceID,
		Node:       p.cfg.Identity.Node,
		Inspection: in.name,
		Source:     r.Source,
		Seq:        r.Seq,
		CapturedAt: r.CapturedAt,
		Model:      ref,
		LatencyMS: publish.Latency{
			Queue: ms(start.Sub(r.CapturedAt)),
			Total: ms(now.Sub(r.CapturedAt)),
		},
		Truth:    r.Truth,
		PartID:   r.PartID,
		Deadline: r.Deadline,
	}
}
