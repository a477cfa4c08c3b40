package breaker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait; generous for -race on a loaded machine.
const waitTimeout = 5 * time.Second

var errBroker = errors.New("broker unreachable")

// short is a breaker that decides within a test's patience.
func short() Config {
	return Config{Name: "test", Window: 400 * time.Millisecond, Bucket: 50 * time.Millisecond, OpenTimeout: 100 * time.Millisecond}
}

func newBreaker(t *testing.T, cfg Config) (*Breaker, *prometheus.Registry, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	var mu sync.Mutex
	cfg.Log = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	return b, reg, &logs
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// calls makes n calls that end with err, each reported at once; it fails the test if
// one is refused.
func calls(t *testing.T, b *Breaker, n int, err error) {
	t.Helper()
	for i := range n {
		done, refused := b.Allow()
		if refused != nil {
			t.Fatalf("call %d of %d refused: %v", i+1, n, refused)
		}
		done(err)
	}
}

// waitState polls until b reaches want.
func waitState(t *testing.T, b *Breaker, want State) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for b.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("breaker still %s after %s, want %s", b.State(), waitTimeout, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestOpensOnFailureRatio(t *testing.T) {
	type step struct {
		n   int
		err error
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  State
	}{
		{"above the ratio", []step{{12, nil}, {8, errBroker}}, Open},
		{"exactly the ratio", []step{{13, nil}, {7, errBroker}}, Closed},
		{"one failure past the ratio", []step{{13, nil}, {7, errBroker}, {1, errBroker}}, Open},
		{"below min calls", []step{{19, errBroker}}, Closed},
		{"at min calls", []step{{20, errBroker}}, Open},
		{"successes only", []step{{100, nil}}, Closed},
		// Given-up calls count neither way: 7 failures of 20 counted calls.
		{"canceled not counted", []step{{13, nil}, {10, context.Canceled}, {7, errBroker}}, Closed},
		{"canceled below min calls", []step{{10, context.Canceled}, {19, errBroker}}, Closed},
		{"wrapped cancel", []step{{13, nil}, {5, fmt.Errorf("publish: %w", context.Canceled)}, {7, errBroker}}, Closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A long window: these calls must all fall into it.
			cfg := short()
			cfg.Window, cfg.Bucket, cfg.OpenTimeout = 10*time.Second, time.Second, time.Minute
			b, _, _ := newBreaker(t, cfg)
			for _, s := range tc.steps {
				calls(t, b, s.n, s.err)
			}
			if got := b.State(); got != tc.want {
				t.Errorf("state %s, want %s", got, tc.want)
			}
		})
	}
}

// TestWindowSlides: failures older than the window no longer count. The same calls
// trip a breaker whose window still holds the first burst.
func TestWindowSlides(t *testing.T) {
	run := func(t *testing.T, ageOut bool) State {
		b, _, _ := newBreaker(t, short())
		calls(t, b, 15, errBroker) // below MinCalls: no decision yet
		if ageOut {
			deadline := time.Now().Add(waitTimeout)
			for b.windowCounts().TotalFailures > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("failures still in the window after %s: %+v", waitTimeout, b.windowCounts())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		// 10 failures of 30 calls is 33%: below the ratio on its own, 25 of 45 (56%)
		// with the first burst.
		calls(t, b, 20, nil)
		for range 10 {
			if done, err := b.Allow(); err == nil {
				done(errBroker)
			}
		}
		return b.State()
	}
	if got := run(t, true); got != Closed {
		t.Errorf("after the burst aged out: %s, want closed", got)
	}
	if got := run(t, false); got != Open {
		t.Errorf("with the burst in the window: %s, want open", got)
	}
}

// TestPendingCalls: calls still awaiting their outcome do not count, and outcomes of
// calls let through before a state change do not count after it.
func TestPendingCalls(t *testing.T) {
	b, _, _ := newBreaker(t, short())
	var pending []func(error)
	for range 20 {
		done, err := b.Allow()
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, done)
	}
	// 15 failures of 35 calls let through would be 43%; of 15 answered, too few.
	calls(t, b, 15, errBroker)
	if b.State() != Closed {
		t.Fatal("opened on 15 failures with 20 calls unanswered")
	}
	calls(t, b, 5, errBroker)
	if b.State() != Open {
		t.Fatal("20 failures did not open it")
	}
	for _, done := range pending {
		done(nil)
	}
	if b.State() != Open {
		t.Fatal("late successes of calls from before it opened closed it")
	}
}

func TestOpenRefuses(t *testing.T) {
	cfg := short()
	cfg.OpenTimeout = time.Minute // stays open for the test
	b, reg, _ := newBreaker(t, cfg)
	calls(t, b, 20, errBroker)
	opened := time.Now()

	done, err := b.Allow()
	if done != nil || !errors.Is(err, ErrOpen) {
		t.Fatalf("Allow while open = (%v, %v), want a refusal wrapping ErrOpen", done != nil, err)
	}
	var oe *OpenError
	if !errors.As(err, &oe) || oe.State != Open || oe.Name != "test" {
		t.Fatalf("refusal %#v, want an *OpenError for an open breaker", err)
	}
	if d := oe.Until.Sub(opened); d < 59*time.Second || d > time.Minute {
		t.Errorf("refusal says half-open in %s, want about a minute", d)
	}
	if !strings.Contains(err.Error(), `circuit breaker "test" is open for another`) {
		t.Errorf("refusal text %q", err)
	}
	ran := false
	if err := b.Do(func() error { ran = true; return nil }); !errors.Is(err, ErrOpen) || ran {
		t.Errorf("Do while open = %v, ran %v; want ErrOpen without running", err, ran)
	}
	// Record while open is what the breaker would have refused: not counted.
	b.Record(errBroker)
	if got := counter(t, reg, "edged_breaker_calls_total", "name", "test", "result", "rejected"); got != 2 {
		t.Errorf("rejected = %v, want 2", got)
	}
	if got := counter(t, reg, "edged_breaker_calls_total", "name", "test", "result", "failure"); got != 20 {
		t.Errorf("failure = %v, want 20", got)
	}
}

func TestHalfOpen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		probes []error
		want   State
	}{
		{"probes succeed", []error{nil, nil, nil}, Closed},
		{"first probe fails", []error{errBroker}, Open},
		{"last probe fails", []error{nil, nil, errBroker}, Open},
		// A given-up probe frees its place for another.
		{"canceled probe", []error{nil, context.Canceled, nil, nil}, Closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, reg, logs := newBreaker(t, short())
			calls(t, b, 20, errBroker)
			waitState(t, b, HalfOpen)

			var dones []func(error)
			for range 3 {
				done, err := b.Allow()
				if err != nil {
					t.Fatalf("probe refused: %v", err)
				}
				dones = append(dones, done)
			}
			// Every probe is out: the next call waits on their outcome.
			_, err := b.Allow()
			var oe *OpenError
			if !errors.As(err, &oe) || oe.State != HalfOpen || !oe.Until.IsZero() || !errors.Is(err, ErrOpen) {
				t.Fatalf("fourth call while half-open: %v, want a half-open refusal", err)
			}
			for i, perr := range tc.probes {
				if i >= len(dones) {
					done, err := b.Allow()
					if err != nil {
						t.Fatalf("probe %d refused: %v", i, err)
					}
					dones = append(dones, done)
				}
				dones[i](perr)
			}
			if got := b.State(); got != tc.want {
				t.Fatalf("after the probes: %s, want %s", got, tc.want)
			}
			if got := counter(t, reg, "edged_breaker_transitions_total", "name", "test", "to", tc.want.String()); got < 1 {
				t.Errorf("transitions to %s = %v", tc.want, got)
			}
			if tc.want == Closed {
				if !strings.Contains(logs.String(), "circuit breaker closed") {
					t.Errorf("no log line for closing:\n%s", logs)
				}
				// Closed again: a fresh window.
				calls(t, b, 19, errBroker)
				if b.State() != Closed {
					t.Error("the window before opening was not cleared")
				}
			} else {
				if !strings.Contains(logs.String(), "circuit breaker open again") {
					t.Errorf("no log line for reopening:\n%s", logs)
				}
				// Reopened: a full OpenTimeout again, then half-open again.
				waitState(t, b, HalfOpen)
			}
		})
	}
}

// TestRecord: an outcome without a call counts in the window, and as a probe.
func TestRecord(t *testing.T) {
	b, _, _ := newBreaker(t, short())
	for range 20 {
		b.Record(errBroker)
	}
	if b.State() != Open {
		t.Fatal("20 recorded failures did not open it")
	}
	waitState(t, b, HalfOpen)
	b.Record(errBroker)
	if b.State() != Open {
		t.Fatal("a recorded failure while half-open did not reopen it")
	}
}

func TestDoneOnce(t *testing.T) {
	b, reg, _ := newBreaker(t, short())
	done, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	for range 30 {
		done(errBroker)
	}
	if b.State() != Closed {
		t.Error("one call reported many times opened it")
	}
	if got := counter(t, reg, "edged_breaker_calls_total", "name", "test", "result", "failure"); got != 1 {
		t.Errorf("failure = %v, want 1", got)
	}
}

func TestDo(t *testing.T) {
	b, reg, _ := newBreaker(t, short())
	if err := b.Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.Do(func() error { return errBroker }); !errors.Is(err, errBroker) {
		t.Fatalf("Do = %v, want the call's error", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Do swallowed the panic")
			}
		}()
		_ = b.Do(func() error { panic("boom") })
	}()
	for result, want := range map[string]float64{"success": 1, "failure": 2, "rejected": 0} {
		if got := counter(t, reg, "edged_breaker_calls_total", "name", "test", "result", result); got != want {
			t.Errorf("%s = %v, want %v", result, got, want)
		}
	}
}

// TestMetrics follows one breaker through closed, open, half-open and closed again.
func TestMetrics(t *testing.T) {
	b, reg, logs := newBreaker(t, short())
	state := func() float64 { return gauge(t, reg, "edged_breaker_state", "name", "test") }
	if got := state(); got != 0 {
		t.Fatalf("state %v, want 0 (closed)", got)
	}
	for _, to := range []string{"open", "half_open", "closed"} {
		if got := counter(t, reg, "edged_breaker_transitions_total", "name", "test", "to", to); got != 0 {
			t.Errorf("transitions to %s = %v before any", to, got)
		}
	}
	calls(t, b, 10, nil)
	calls(t, b, 10, errBroker)
	if got := state(); got != 2 {
		t.Fatalf("state %v, want 2 (open)", got)
	}
	if _, err := b.Allow(); err == nil {
		t.Fatal("allowed while open")
	}
	// The gauge turns half-open with the timeout, read at the scrape.
	deadline := time.Now().Add(waitTimeout)
	for state() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("state %v after %s, want 1 (half-open)", state(), waitTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	calls(t, b, 3, nil)
	if got := state(); got != 0 {
		t.Fatalf("state %v after the probes, want 0", got)
	}
	for labels, want := range map[[2]string]float64{
		{"to", "open"}:         1,
		{"to", "half_open"}:    1,
		{"to", "closed"}:       1,
		{"result", "success"}:  13,
		{"result", "failure"}:  10,
		{"result", "rejected"}: 1,
	} {
		name := "edged_breaker_transitions_total"
		if labels[0] == "result" {
			name = "edged_breaker_calls_total"
		}
		if got := counter(t, reg, name, "name", "test", labels[0], labels[1]); got != want {
			t.Errorf("%s{%s=%s} = %v, want %v", name, labels[0], labels[1], got, want)
		}
	}
	out := logs.String()
	for _, want := range []string{
		`level=WARN msg="circuit breaker open: too many calls failed; refusing calls" breaker=test from=closed to=open failures=10 calls=20 failure_ratio=0.50 threshold=0.35`,
		`level=INFO msg="circuit breaker half-open: letting probes through" breaker=test from=open to=half_open probes=3`,
		`level=INFO msg="circuit breaker closed: the probes succeeded" breaker=test from=half_open to=closed probes=3 failed_rounds=0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	// A rebuilt breaker of the same name takes over the gauge; the counters go on.
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := New(Config{Name: "x"}, m)
	b2, _ := New(Config{Name: "x", OpenTimeout: time.Minute}, m)
	calls(t, b2, 20, errBroker)
	if b1.State() != Closed || len(m.breakers) != 1 || m.breakers["x"] != b2 {
		t.Errorf("rebuilt breaker not the one reported: %v", m.breakers)
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("a second set registered the same metrics")
	}
	// Without metrics a breaker still works.
	b, err := New(Config{Name: "plain"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"zero is the defaults", Config{Name: "p"}, ""},
		{"short", short(), ""},
		{"ratio above 1", Config{Name: "publisher", FailureRatio: 1.5}, `breaker "publisher": failure_ratio 1.5 is out of range (0,1)`},
		{"ratio 1", Config{Name: "p", FailureRatio: 1}, `breaker "p": failure_ratio 1 is out of range (0,1)`},
		{"negative ratio", Config{Name: "p", FailureRatio: -0.1}, `breaker "p": failure_ratio -0.1 is out of range (0,1)`},
		{"negative window", Config{Name: "p", Window: -time.Second}, `breaker "p": window -1s is negative`},
		{"negative open timeout", Config{Name: "p", OpenTimeout: -time.Second}, `breaker "p": open_timeout -1s is negative`},
		{"negative bucket", Config{Name: "p", Bucket: -time.Second}, `breaker "p": bucket -1s is negative`},
		{"one bucket", Config{Name: "p", Window: time.Second, Bucket: time.Second}, `breaker "p": window 1s must hold at least 2 buckets of 1s`},
		{"window below the default bucket", Config{Name: "p", Window: 400 * time.Millisecond}, `breaker "p": window 400ms must hold at least 2 buckets of 1s`},
		{"too many buckets", Config{Name: "p", Window: time.Hour, Bucket: time.Millisecond}, `breaker "p": window 1h0m0s holds 3600000 buckets of 1ms; at most 10000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			b, nerr := New(tc.cfg, nil)
			if tc.want == "" {
				if err != nil || nerr != nil {
					t.Fatalf("Validate() = %v, New = %v; want valid", err, nerr)
				}
				if b.Config().MinCalls == 0 || b.Config().HalfOpenProbes == 0 || b.Config().FailureRatio == 0 {
					t.Errorf("defaults not applied: %+v", b.Config())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to contain %q", err, tc.want)
			}
			if nerr == nil || b != nil {
				t.Error("New accepted the config")
			}
		})
	}
	d := Config{}.WithDefaults()
	if d.Window != 10*time.Second || d.Bucket != time.Second || d.OpenTimeout != 5*time.Second ||
		d.FailureRatio != 0.35 || d.MinCalls != 20 || d.HalfOpenProbes != 3 {
		t.Errorf("defaults %+v", d)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", HalfOpen: "half_open", Open: "open", 7: "State(7)"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}

// TestConcurrent: calls and their outcomes from many goroutines, with the state and
// the metrics read meanwhile; for the race detector.
func TestConcurrent(t *testing.T) {
	b, reg, _ := newBreaker(t, short())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				done, err := b.Allow()
				if err != nil {
					continue
				}
				if (g+i)%3 == 0 {
					done(errBroker)
				} else {
					done(nil)
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			_ = b.State()
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}

// windowCounts are the outcomes in the window now.
func (b *Breaker) windowCounts() gobreaker.Counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cb.State() // slides the window to now
	return b.cb.Counts()
}

func counter(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	m := find(t, reg, name, labels...)
	return m.GetCounter().GetValue()
}

func gauge(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	m := find(t, reg, name, labels...)
	return m.GetGauge().GetValue()
}

func find(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			return m
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return nil
}
