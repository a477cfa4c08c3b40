// Package writeback routes verdicts to the line: for each result it writes the values
// its inspection names for that verdict (the reject gate's coil, a result register, an
// OPC UA node) through the drivers that can write, before handing the result on to the
// publisher.
//
// Writes are deadline-aware. A reject that lands after the part has passed the gate
// does nothing useful and may hit the next part, so a write that cannot land before the
// frame's deadline (by the writer's recent write times) is not attempted; it is counted
// as late. Each writer has its own bounded queue and goroutine, so a slow PLC never holds
// up inference, and one PLC's fault never delays another's writes.
package writeback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/publish"
)

// Next takes results after their writes are queued: the publisher.
type Next interface {
	Publish(ctx context.Context, r *publish.Result) error
}

// Action is one value to write for a verdict.
type Action struct {
	// Writer is the name of the source whose driver writes.
	Writer string
	// Target is the address in the writer's syntax.
	Target string
	// Value is a bool, int64, float64 or string; a string may hold the placeholders
	// {part_id}, {verdict}, {label}, {seq} and {inspection}.
	Value any
}

// Rules are what one inspection writes, by verdict.
type Rules struct {
	// OnNG is written for NG, and for UNKNOWN with the fail-safe reject.
	OnNG []Action
	// OnOK is written for OK, and for UNKNOWN with the fail-safe pass.
	OnOK []Action
	// OnDivert is written for UNKNOWN with the fail-safe divert; empty, OnNG is.
	OnDivert []Action
}

// Write outcomes, as in edged_writeback_total{result}.
const (
	ResultOK       = "ok"
	ResultError    = "error"
	ResultLate     = "late"
	ResultOverflow = "overflow"
)

// Config wires a Sink.
type Config struct {
	// Rules by inspection name; inspections without rules write nothing.
	Rules map[string]Rules
	// Writers by source name: every writer an action names must be here.
	Writers map[string]drivers.Writer
	// Next takes every result after its writes are queued.
	Next Next
	// QueueSize bounds the writes waiting per writer; 0 means 256.
	QueueSize int
	// Registerer takes the metrics; nil keeps them private.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Sink writes verdicts to devices, then hands results to Next.
type Sink struct {
	cfg     Config
	now     func() time.Time
	log     *slog.Logger
	writers map[string]*writer
	total   *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

// job is one write waiting for its writer.
type job struct {
	inspection string
	action     *Action
	value      any
	deadline   time.Time
	traceID    string
}

// writer is one device's queue and its recent write time.
type writer struct {
	name  string
	w     drivers.Writer
	queue chan job
	mu    sync.Mutex
	// est is a moving estimate of how long a write takes, to tell ahead of time
	// whether one can land before its deadline.
	est time.Duration
}

// New checks every action against its writer (it must exist, write, and accept the
// target and value) and builds the sink. Nothing runs until Run.
func New(cfg Config) (*Sink, error) {
	if cfg.Next == nil {
		return nil, errors.New("writeback: no next sink")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 256
	}
	s := &Sink{cfg: cfg, now: cfg.Now, log: cfg.Log, writers: map[string]*writer{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	var errs []error
	for ins, r := range cfg.Rules {
		for kind, as := range map[string][]Action{"on_ng": r.OnNG, "on_ok": r.OnOK, "on_divert": r.OnDivert} {
			for i, a := range as {
				if err := s.check(a); err != nil {
					errs = append(errs, fmt.Errorf("inspection %q %s[%d]: %w", ins, kind, i, err))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.total = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_writeback_total",
		Help: "Verdict writes to devices by inspection, writer and result: ok, error, late (not attempted: it could not land before the frame's deadline), overflow (the writer's queue was full).",
	}, []string{"inspection", "writer", "result"})
	s.seconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "edged_writeback_seconds",
		Help:    "Time a verdict write to a device took, by writer.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1},
	}, []string{"writer"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.total, s.seconds} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("writeback metrics: %w", err)
			}
		}
	}
	return s, nil
}

// check validates one action and makes its writer's queue.
func (s *Sink) check(a Action) error {
	d, ok := s.cfg.Writers[a.Writer]
	if !ok || d == nil {
		return fmt.Errorf("writer %q is not a source that can write (writers: %s)", a.Writer, s.writerNames())
	}
	if c, ok := d.(drivers.WriteChecker); ok {
		// Placeholders make a string at write time; check with a sample that keeps
		// the value's type.
		if err := c.CheckWrite(drivers.Write{Target: a.Target, Value: sample(a.Value)}); err != nil {
			return fmt.Errorf("writer %q: %w", a.Writer, err)
		}
	}
	if _, ok := s.writers[a.Writer]; !ok {
		s.writers[a.Writer] = &writer{name: a.Writer, w: d, queue: make(chan job, s.cfg.QueueSize)}
	}
	return nil
}

func (s *Sink) writerNames() string {
	var ns []string
	for n, w := range s.cfg.Writers {
		if w != nil {
			ns = append(ns, n)
		}
	}
	if len(ns) == 0 {
		return "none"
	}
	slices.Sort(ns)
	return strings.Join(ns, ", ")
}

// Run writes queued values until ctx ends, one goroutine per writer. Writes still
// queued then are counted as errors: the devices' drivers have stopped.
func (s *Sink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range s.writers {
		wg.Go(func() { s.serve(ctx, w) })
	}
	wg.Wait()
	for _, w := range s.writers {
		for {
			select {
			case j := <-w.queue:
				s.total.WithLabelValues(j.inspection, w.name, ResultError).Inc()
				continue
			default:
			}
			break
		}
	}
	return nil
}

func (s *Sink) serve(ctx context.Context, w *writer) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-w.queue:
			s.do(ctx, w, j)
		}
	}
}

// do writes one value unless it would land after its deadline.
func (s *Sink) do(ctx context.Context, w *writer, j job) {
	now := s.now()
	w.mu.Lock()
	est := w.est
	w.mu.Unlock()
	if !j.deadline.IsZero() && now.Add(est).After(j.deadline) {
		s.total.WithLabelValues(j.inspection, w.name, ResultLate).Inc()
		s.log.Warn("verdict write skipped: it could not land before the part passes the gate",
			"trace_id", j.traceID, "inspection", j.inspection, "writer", w.name, "target", j.action.Target,
			"late_by", now.Add(est).Sub(j.deadline).String(), "typical_write", est.String())
		return
	}
	wctx := ctx
	if !j.deadline.IsZero() {
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, j.deadline)
		defer cancel()
	}
	err := w.w.Write(wctx, drivers.Write{Target: j.action.Target, Value: j.value})
	took := s.now().Sub(now)
	s.seconds.WithLabelValues(w.name).Observe(took.Seconds())
	if err != nil {
		result := ResultError
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			result = ResultLate
		}
		s.total.WithLabelValues(j.inspection, w.name, result).Inc()
		s.log.Warn("verdict write failed", "trace_id", j.traceID, "inspection", j.inspection, "writer", w.name, "target", j.action.Target, "err", err)
		return
	}
	w.mu.Lock()
	// A slow write raises the estimate at once; fast ones lower it gradually, so one
	// lucky write does not let late writes through.
	if took > w.est {
		w.est = took
	} else {
		w.est = (7*w.est + took) / 8
	}
	w.mu.Unlock()
	s.total.WithLabelValues(j.inspection, w.name, ResultOK).Inc()
}

// Publish queues the writes r's verdict calls for, then hands r to the next sink.
// It never waits for a device.
func (s *Sink) Publish(ctx context.Context, r *publish.Result) error {
	if rules, ok := s.cfg.Rules[r.Inspection]; ok {
		as := actionsFor(rules, r)
		for i := range as {
			s.enqueue(r, &as[i])
		}
	}
	return s.cfg.Next.Publish(ctx, r)
}

func (s *Sink) enqueue(r *publish.Result, a *Action) {
	w := s.writers[a.Writer]
	j := job{inspection: r.Inspection, action: a, value: expand(a.Value, r), deadline: r.Deadline, traceID: r.TraceID}
	select {
	case w.queue <- j:
	default:
		s.total.WithLabelValues(r.Inspection, a.Writer, ResultOverflow).Inc()
		s.log.Warn("verdict write dropped: the writer's queue is full (the device is slower than the line)",
			"trace_id", r.TraceID, "inspection", r.Inspection, "writer", a.Writer, "target", a.Target, "queue", cap(w.queue))
	}
}

// actionsFor picks the list of writes for r's verdict.
func actionsFor(rules Rules, r *publish.Result) []Action {
	switch r.Verdict {
	case publish.VerdictNG:
		return rules.OnNG
	case publish.VerdictOK:
		return rules.OnOK
	}
	switch r.Action {
	case "reject":
		return rules.OnNG
	case "pass":
		return rules.OnOK
	}
	if len(rules.OnDivert) > 0 {
		return rules.OnDivert
	}
	return rules.OnNG
}

// expand fills the placeholders of a string value from r.
func expand(v any, r *publish.Result) any {
	str, ok := v.(string)
	if !ok || !strings.Contains(str, "{") {
		return v
	}
	return strings.NewReplacer(
		"{part_id}", r.PartID,
		"{verdict}", r.Verdict,
		"{label}", r.Label,
		"{seq}", strconv.FormatUint(r.Seq, 10),
		"{inspection}", r.Inspection,
	).Replace(str)
}

// sample is a value of v's type for checking: placeholders expanded with examples.
func sample(v any) any {
	return expand(v, &publish.Result{PartID: "P1", Verdict: publish.VerdictNG, Label: "ng", Seq: 1, Inspection: "i"})
}
