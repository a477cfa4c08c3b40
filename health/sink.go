// Package health follows each machine's anomaly scores: it raises and clears the
// inspections' alerts through hysteresis (package alert), publishes each change, and
// keeps every watched source's last score and health index.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/alert"
	"github.com/edgedrun/edged/publish"
)

// Next takes results after the sink has looked at them: the publisher, or another
// sink in front of it.
type Next interface {
	Publish(ctx context.Context, r *publish.Result) error
}

// Rule raises alerts of Kind from one inspection's scores.
type Rule struct {
	// Kind is the alert topic's last level: edged/v1/.../alert/{kind}.
	Kind string
	alert.Hysteresis
}

// Message is an alert as published: the fields of the event on the alert topic.
type Message struct {
	Inspection string `json:"inspection"`
	Source     string `json:"source"`
	// State is "raised" or "cleared".
	State string  `json:"state"`
	Score float64 `json:"score"`
	Enter float64 `json:"enter"`
	Leave float64 `json:"leave"`
	// Since is the capture time of the score that changed the state.
	Since time.Time `json:"since"`
	// Health is the source's health index when the state changed.
	Health  float64 `json:"health"`
	TraceID string  `json:"trace_id"`
}

// States an alert message carries.
const (
	StateRaised  = "raised"
	StateCleared = "cleared"
)

// Config wires a Sink.
type Config struct {
	// Rules by inspection name; other inspections pass through.
	Rules map[string]Rule
	// Publish sends one alert; it may block, the sink calls it from its own goroutine.
	Publish func(ctx context.Context, kind string, m Message) error
	Next    Next
	// Queue bounds the alerts waiting for Publish; 0 means 64. Alerts past it are
	// dropped and counted: the state changes themselves are few by design.
	Queue      int
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// healthAlpha is the weight of each new score in a source's health index: about the
// last twenty windows count.
const healthAlpha = 0.1

// Sink tracks each rule's alert over the results that pass, publishes the changes,
// and keeps each source's anomaly score and health index.
type Sink struct {
	cfg   Config
	log   *slog.Logger
	queue chan queued

	mu     sync.Mutex
	states map[string]*alert.State // by inspection
	health map[string]*Status      // by source

	score, index *prometheus.GaugeVec
	active       *prometheus.GaugeVec
	changes      *prometheus.CounterVec
	dropped      prometheus.Counter
}

type queued struct {
	kind string
	m    Message
}

// Status is a source's standing as its scores say.
type Status struct {
	// Score is the last anomaly score.
	Score float64 `json:"score"`
	// Index runs from 1 (scores far below the alert's enter level) to 0 (at or above
	// it), over a moving average of the scores, so it trends rather than jumps.
	Index float64 `json:"index"`
	// Alert is whether an alert on the source is raised, and Since when it changed.
	Alert bool      `json:"alert"`
	Since time.Time `json:"since,omitzero"`
	ewma  float64
	seen  bool
	enter float64
}

// NewSink checks the rules and builds the sink; nothing runs until Run.
func NewSink(cfg Config) (*Sink, error) {
	if cfg.Next == nil || cfg.Publish == nil {
		return nil, errors.New("alert: sink needs Next and Publish")
	}
	var errs []error
	for ins, r := range cfg.Rules {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("inspection %q alert: %w", ins, err))
		}
		if r.Kind == "" {
			errs = append(errs, fmt.Errorf("inspection %q alert: kind is empty", ins))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 64
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Sink{
		cfg: cfg, log: cfg.Log, queue: make(chan queued, cfg.Queue),
		states: map[string]*alert.State{}, health: map[string]*Status{},
		score: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_anomaly_score", Help: "The last anomaly score of each source with an alert rule.",
		}, []string{"source"}),
		index: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_health_index", Help: "Each source's health index: 1 with scores far below the alert level, 0 at or above it (moving average).",
		}, []string{"source"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_alert_active", Help: "1 while an inspection's alert is raised.",
		}, []string{"inspection", "kind"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_alerts_total", Help: "Alert state changes by inspection, kind and state (raised, cleared).",
		}, []string{"inspection", "kind", "state"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_alert_publish_dropped_total", Help: "Alert messages not published because the alert queue was full.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.score, s.index, s.active, s.changes, s.dropped} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("alert metrics: %w", err)
			}
		}
	}
	for ins, r := range cfg.Rules {
		s.active.WithLabelValues(ins, r.Kind).Set(0)
	}
	return s, nil
}

// Run publishes queued alerts until ctx ends.
func (s *Sink) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case q := <-s.queue:
			if err := s.cfg.Publish(ctx, q.kind, q.m); err != nil && ctx.Err() == nil {
				s.log.Warn("alert not published", "kind", q.kind, "inspection", q.m.Inspection, "state", q.m.State, "err", err)
			}
		}
	}
}

// Publish updates the alert of r's inspection, then hands r on. It never waits for
// the broker.
func (s *Sink) Publish(ctx context.Context, r *publish.Result) error {
	if rule, ok := s.cfg.Rules[r.Inspection]; ok {
		s.observe(rule, r)
	}
	return s.cfg.Next.Publish(ctx, r)
}

// anomalyScore is what a result says about how unusual its frame was: a score
// model's score, a softmax model's defect probability, NaN when the model said
// nothing (UNKNOWN).
func anomalyScore(r *publish.Result) float64 {
	switch r.Verdict {
	case publish.VerdictUnknown:
		return math.NaN()
	case publish.VerdictNG:
		return r.Score
	}
	if len(r.Scores) == 1 { // a score model: the raw score whatever the verdict
		return r.Score
	}
	return 1 - r.Score
}

func (s *Sink) observe(rule Rule, r *publish.Result) {
	score := anomalyScore(r)
	s.mu.Lock()
	st, ok := s.states[r.Inspection]
	if !ok {
		st = &alert.State{}
		s.states[r.Inspection] = st
	}
	h, ok := s.health[r.Source]
	if !ok {
		h = &Status{Index: 1, enter: rule.Enter}
		s.health[r.Source] = h
	}
	if !math.IsNaN(score) {
		h.Score = score
		if !h.seen {
			h.ewma, h.seen = score, true
		} else {
			h.ewma += healthAlpha * (score - h.ewma)
		}
		h.Index = max(0, min(1, 1-h.ewma/h.enter))
	}
	active, changed := st.Update(rule.Hysteresis, r.CapturedAt, score)
	if changed {
		h.Alert, h.Since = active, st.Since()
	}
	index := h.Index
	s.mu.Unlock()

	if !math.IsNaN(score) {
		s.score.WithLabelValues(r.Source).Set(score)
		s.index.WithLabelValues(r.Source).Set(index)
	}
	if !changed {
		return
	}
	state := StateCleared
	if active {
		state = StateRaised
	}
	s.active.WithLabelValues(r.Inspection, rule.Kind).Set(b2f(active))
	s.changes.WithLabelValues(r.Inspection, rule.Kind, state).Inc()
	s.log.Warn("alert "+state, "kind", rule.Kind, "inspection", r.Inspection, "source", r.Source, "score", score, "health", index, "trace_id", r.TraceID)
	m := Message{Inspection: r.Inspection, Source: r.Source, State: state, Score: score, Enter: rule.Enter, Leave: rule.Leave,
		Since: r.CapturedAt.UTC(), Health: index, TraceID: r.TraceID}
	select {
	case s.queue <- queued{rule.Kind, m}:
	default:
		s.dropped.Inc()
	}
}

// Machines returns each watched source's health, by source name.
func (s *Sink) Machines() map[string]Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Status, len(s.health))
	for name, h := range s.health {
		out[name] = *h
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
