package health

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/alert"
	"github.com/edgedrun/edged/publish"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type passed struct {
	mu sync.Mutex
	n  int
}

func (p *passed) Publish(context.Context, *publish.Result) error {
	p.mu.Lock()
	p.n++
	p.mu.Unlock()
	return nil
}

func TestSinkRaisesAndClears(t *testing.T) {
	got := make(chan Message, 8)
	next := &passed{}
	reg := prometheus.NewRegistry()
	s, err := NewSink(Config{
		Rules: map[string]Rule{"spindle-health": {Kind: "vibration", Hysteresis: alert.Hysteresis{Enter: 1, Leave: 0.8, MinDuration: 2 * time.Second}}},
		Publish: func(_ context.Context, kind string, m Message) error {
			if kind != "vibration" {
				t.Errorf("kind %q", kind)
			}
			got <- m
			return nil
		},
		Next: next, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	t0 := time.Unix(1700000000, 0)
	res := func(sec int, verdict string, score float64) *publish.Result {
		return &publish.Result{Inspection: "spindle-health", Source: "spindle", Verdict: verdict, Score: score,
			Scores: map[string]float64{"anomaly": score}, CapturedAt: t0.Add(time.Duration(sec) * time.Second), TraceID: "t"}
	}
	for i, r := range []*publish.Result{
		res(0, "OK", 0.3), res(1, "OK", 0.4), res(2, "NG", 1.5), res(3, "NG", 1.6),
		res(4, "UNKNOWN", 0),                                    // no evidence: neither raises nor breaks the run
		res(5, "NG", 2.0),                                       // held 3 s at or above 1: raised
		res(6, "OK", 0.5), res(7, "OK", 0.4), res(8, "OK", 0.3), // held 2 s below 0.8: cleared
		{Inspection: "other", Source: "cam", Verdict: "NG", Score: 0.99},
	} {
		if err := s.Publish(context.Background(), r); err != nil {
			t.Fatalf("result %d: %v", i, err)
		}
	}
	var ms []Message
	for len(ms) < 2 {
		select {
		case m := <-got:
			ms = append(ms, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("alerts %+v, want raised then cleared", ms)
		}
	}
	if ms[0].State != StateRaised || ms[0].Score != 2.0 || !ms[0].Since.Equal(t0.Add(5*time.Second)) || ms[0].Source != "spindle" {
		t.Errorf("first alert %+v, want raised at 5 s with score 2", ms[0])
	}
	if ms[1].State != StateCleared || !ms[1].Since.Equal(t0.Add(8*time.Second)) {
		t.Errorf("second alert %+v, want cleared at 8 s", ms[1])
	}
	if next.n != 10 {
		t.Errorf("%d results passed on, want all 10", next.n)
	}
	if v := testutil.ToFloat64(s.changes.WithLabelValues("spindle-health", "vibration", StateRaised)); v != 1 {
		t.Errorf("raised count %v", v)
	}
	if v := testutil.ToFloat64(s.active.WithLabelValues("spindle-health", "vibration")); v != 0 {
		t.Errorf("active %v after clearing", v)
	}
	if v := testutil.ToFloat64(s.score.WithLabelValues("spindle")); v != 0.3 {
		t.Errorf("anomaly score %v, want the last, 0.3", v)
	}
	h := s.Machines()["spindle"]
	if h.Alert || h.Score != 0.3 || !(h.Index > 0 && h.Index < 1) {
		t.Errorf("health %+v: want no alert, the last score, an index between 0 and 1 after the fault", h)
	}
	if _, ok := s.Machines()["cam"]; ok {
		t.Error("a source without a rule has a health entry")
	}
}

func TestSinkHealthIndex(t *testing.T) {
	s, err := NewSink(Config{
		Rules:   map[string]Rule{"i": {Kind: "vibration", Hysteresis: alert.Hysteresis{Enter: 2, Leave: 1}}},
		Publish: func(context.Context, string, Message) error { return nil },
		Next:    &passed{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	r := func(score float64) *publish.Result {
		t0 = t0.Add(time.Second)
		return &publish.Result{Inspection: "i", Source: "m", Verdict: "OK", Score: score, Scores: map[string]float64{"anomaly": score}, CapturedAt: t0}
	}
	_ = s.Publish(context.Background(), r(0.2))
	if h := s.Machines()["m"]; h.Index < 0.89 || h.Index > 0.91 {
		t.Errorf("index %v after a score of 0.2 at enter 2, want 0.9", h.Index)
	}
	prev := 1.0
	for range 30 {
		_ = s.Publish(context.Background(), r(1.9))
		h := s.Machines()["m"]
		if h.Index > prev {
			t.Fatalf("index rose from %v to %v under rising scores", prev, h.Index)
		}
		prev = h.Index
	}
	if prev > 0.15 {
		t.Errorf("index %v after 30 windows just under the alert level, want near 0", prev)
	}
	if _, err := NewSink(Config{Rules: map[string]Rule{"i": {Hysteresis: alert.Hysteresis{Enter: 1, Leave: 2}}}, Publish: func(context.Context, string, Message) error { return nil }, Next: &passed{}}); err == nil {
		t.Error("a rule with leave above enter and no kind was accepted")
	}
}
