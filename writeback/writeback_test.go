package writeback

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/publish"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a device that takes writes: it records them, after delay, and refuses
// targets that do not start with "ok:" when checked.
type recorder struct {
	mu     sync.Mutex
	writes []drivers.Write
	delay  time.Duration
	err    error
	done   chan struct{}
}

func newRecorder() *recorder { return &recorder{done: make(chan struct{}, 1024)} }

func (r *recorder) Write(ctx context.Context, w drivers.Write) error {
	defer func() { r.done <- struct{}{} }()
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.writes = append(r.writes, w)
	return nil
}

func (r *recorder) CheckWrite(w drivers.Write) error {
	if !strings.HasPrefix(w.Target, "ok:") {
		return errors.New("target " + w.Target + " is not addressable")
	}
	return nil
}

func (r *recorder) got() []drivers.Write {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]drivers.Write(nil), r.writes...)
}

func (r *recorder) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("a write did not come within 5s")
		}
	}
}

// collected is the next sink: it keeps results.
type collected struct {
	mu sync.Mutex
	rs []*publish.Result
}

func (c *collected) Publish(_ context.Context, r *publish.Result) error {
	c.mu.Lock()
	c.rs = append(c.rs, r)
	c.mu.Unlock()
	return nil
}

func start(t *testing.T, cfg Config) (*Sink, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, reg
}

func result(ins, verdict, action string, deadline time.Time) *publish.Result {
	return &publish.Result{Inspection: ins, Verdict: verdict, Action: action, Label: "scratch", Seq: 42, PartID: "P-7", Deadline: deadline, TraceID: "t1"}
}

func TestRoutesVerdicts(t *testing.T) {
	plc := newRecorder()
	next := &collected{}
	rules := Rules{
		OnNG: []Action{{Writer: "plc", Target: "ok:reject", Value: true}, {Writer: "plc", Target: "ok:msg", Value: "{part_id} {verdict} {label} {seq} {inspection}"}},
		OnOK: []Action{{Writer: "plc", Target: "ok:reject", Value: false}},
	}
	s, reg := start(t, Config{Rules: map[string]Rules{"press": rules, "divert": {OnNG: rules.OnNG[:1], OnDivert: []Action{{Writer: "plc", Target: "ok:divert", Value: int64(2)}}}}, Writers: map[string]drivers.Writer{"plc": plc}, Next: next})
	far := time.Now().Add(time.Minute)
	for _, tc := range []struct {
		r    *publish.Result
		want []drivers.Write
	}{
		{result("press", publish.VerdictNG, "", far), []drivers.Write{{Target: "ok:reject", Value: true}, {Target: "ok:msg", Value: "P-7 NG scratch 42 press"}}},
		{result("press", publish.VerdictOK, "", far), []drivers.Write{{Target: "ok:reject", Value: false}}},
		{result("press", publish.VerdictUnknown, "reject", far), []drivers.Write{{Target: "ok:reject", Value: true}, {Target: "ok:msg", Value: "P-7 UNKNOWN scratch 42 press"}}},
		{result("press", publish.VerdictUnknown, "pass", far), []drivers.Write{{Target: "ok:reject", Value: false}}},
		// divert without on_divert writes on_ng: a part nobody judged does not pass.
		{result("press", publish.VerdictUnknown, "divert", far), []drivers.Write{{Target: "ok:reject", Value: true}, {Target: "ok:msg", Value: "P-7 UNKNOWN scratch 42 press"}}},
		{result("divert", publish.VerdictUnknown, "divert", far), []drivers.Write{{Target: "ok:divert", Value: int64(2)}}},
		{result("other", publish.VerdictNG, "", far), nil},
	} {
		before := len(plc.got())
		if err := s.Publish(context.Background(), tc.r); err != nil {
			t.Fatal(err)
		}
		plc.wait(t, len(tc.want))
		got := plc.got()[before:]
		if len(got) != len(tc.want) {
			t.Fatalf("%s %s %s: writes %v, want %v", tc.r.Inspection, tc.r.Verdict, tc.r.Action, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s %s %s: write %d is %v, want %v", tc.r.Inspection, tc.r.Verdict, tc.r.Action, i, got[i], tc.want[i])
			}
		}
	}
	if len(next.rs) != 7 {
		t.Errorf("%d results handed on, want 7", len(next.rs))
	}
	if n := testutil.ToFloat64(s.total.WithLabelValues("press", "plc", ResultOK)); n != 8 {
		t.Errorf("edged_writeback_total{result=ok} = %v, want 8", n)
	}
	if n, err := testutil.GatherAndCount(reg, "edged_writeback_total"); err != nil || n == 0 {
		t.Errorf("metric not registered: %d, %v", n, err)
	}
}

func TestLateWritesAreNotAttempted(t *testing.T) {
	plc := newRecorder()
	plc.delay = 30 * time.Millisecond
	next := &collected{}
	s, _ := start(t, Config{Rules: map[string]Rules{"press": {OnNG: []Action{{Writer: "plc", Target: "ok:reject", Value: true}}}}, Writers: map[string]drivers.Writer{"plc": plc}, Next: next})
	// Deadline already passed: not attempted.
	if err := s.Publish(context.Background(), result("press", publish.VerdictNG, "", time.Now().Add(-time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	// A write the writer can make in time teaches it that writes take ~30ms.
	if err := s.Publish(context.Background(), result("press", publish.VerdictNG, "", time.Now().Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	plc.wait(t, 1)
	// 10ms left, writes take 30ms: skipped before it is tried.
	if err := s.Publish(context.Background(), result("press", publish.VerdictNG, "", time.Now().Add(10*time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	waitCount(t, s, "press", "plc", ResultLate, 2)
	if got := len(plc.got()); got != 1 {
		t.Errorf("%d writes made, want 1", got)
	}
	if n := testutil.ToFloat64(s.total.WithLabelValues("press", "plc", ResultOK)); n != 1 {
		t.Errorf("ok writes %v, want 1", n)
	}
	if len(next.rs) != 3 {
		t.Errorf("%d results handed on, want 3: a late write never holds back the verdict", len(next.rs))
	}
}

func TestWriteErrorsAndOverflow(t *testing.T) {
	plc := newRecorder()
	plc.err = errors.New("connection refused")
	s, _ := start(t, Config{Rules: map[string]Rules{"press": {OnNG: []Action{{Writer: "plc", Target: "ok:reject", Value: true}}}}, Writers: map[string]drivers.Writer{"plc": plc}, Next: &collected{}, QueueSize: 1})
	if err := s.Publish(context.Background(), result("press", publish.VerdictNG, "", time.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	waitCount(t, s, "press", "plc", ResultError, 1)

	// A stuck device: the queue of one fills and further writes overflow, while
	// Publish returns at once.
	slow := newRecorder()
	slow.delay = time.Minute
	s2, _ := start(t, Config{Rules: map[string]Rules{"press": {OnNG: []Action{{Writer: "plc", Target: "ok:reject", Value: true}}}}, Writers: map[string]drivers.Writer{"plc": slow}, Next: &collected{}, QueueSize: 1})
	begin := time.Now()
	for range 5 {
		if err := s2.Publish(context.Background(), result("press", publish.VerdictNG, "", time.Now().Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("Publish waited %v for a stuck device", took)
	}
	if n := testutil.ToFloat64(s2.total.WithLabelValues("press", "plc", ResultOverflow)); n < 3 {
		t.Errorf("overflow count %v, want at least 3 of 5 with a queue of 1 and a stuck device", n)
	}
}

func TestNewRefusesBadActions(t *testing.T) {
	plc := newRecorder()
	for _, tc := range []struct {
		name    string
		writers map[string]drivers.Writer
		action  Action
		want    string
	}{
		{"unknown writer", map[string]drivers.Writer{"plc": plc}, Action{Writer: "cam", Target: "ok:x", Value: true}, `writer "cam" is not a source that can write (writers: plc)`},
		{"no writers", nil, Action{Writer: "cam", Target: "ok:x", Value: true}, "(writers: none)"},
		{"bad target", map[string]drivers.Writer{"plc": plc}, Action{Writer: "plc", Target: "coil:x", Value: true}, `inspection "press" on_ng[0]: writer "plc": target coil:x is not addressable`},
	} {
		_, err := New(Config{Rules: map[string]Rules{"press": {OnNG: []Action{tc.action}}}, Writers: tc.writers, Next: &collected{}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one holding %q", tc.name, err, tc.want)
		}
	}
}

func waitCount(t *testing.T, s *Sink, ins, w, result string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(s.total.WithLabelValues(ins, w, result)) < want {
		if time.Now().After(deadline) {
			t.Fatalf("edged_writeback_total{result=%q} = %v after 5s, want %v", result, testutil.ToFloat64(s.total.WithLabelValues(ins, w, result)), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
