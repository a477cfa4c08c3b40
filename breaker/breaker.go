// Package breaker provides a circuit breaker over a sliding window: it opens when too
// large a share of the recent calls failed, refuses calls while open, and after a pause
// lets a few probe calls through, whose outcome closes it again or reopens it. A call's
// outcome may be reported long after the call was let through (an MQTT publish and its
// acknowledgement), so the breaker fits calls that are not a single function call.
//
// It wraps github.com/sony/gobreaker/v2 (its two-step breaker and rolling window) and
// adds what edged needs around it: validated settings with defaults, a failure-ratio
// rule with a minimum number of calls, metrics, and log lines that say why the state
// changed.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Defaults for the zero values of Config.
const (
	DefaultWindow         = 10 * time.Second
	DefaultBucket         = time.Second
	DefaultOpenTimeout    = 5 * time.Second
	DefaultFailureRatio   = 0.35
	DefaultMinCalls       = 20
	DefaultHalfOpenProbes = 3
)

// maxBuckets bounds the window's memory and the work of sliding it.
const maxBuckets = 10000

// ErrOpen is wrapped by the error of every call the breaker refuses.
var ErrOpen = errors.New("circuit breaker open")

// State is where a breaker stands. Its value is what edged_breaker_state reports.
type State int

const (
	// Closed lets every call through and counts outcomes.
	Closed State = 0
	// HalfOpen lets Config.HalfOpenProbes calls through; their success closes the
	// breaker, a failure reopens it.
	HalfOpen State = 1
	// Open refuses every call until Config.OpenTimeout has passed.
	Open State = 2
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half_open"
	case Open:
		return "open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Config configures a Breaker. Zero values take the defaults above.
type Config struct {
	// Name labels the breaker's metrics and log lines.
	Name string `yaml:"-"`
	// Window is how far back outcomes count; it slides by Bucket, and is rounded up
	// to a whole number of buckets.
	Window time.Duration `yaml:"window"`
	Bucket time.Duration `yaml:"bucket"`
	// OpenTimeout is how long the breaker stays open before it lets probes through.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// FailureRatio: the breaker opens when failures are more than this share of the
	// calls in the window (strictly more), and those calls number at least MinCalls.
	FailureRatio float64 `yaml:"failure_ratio"`
	MinCalls     uint32  `yaml:"min_calls"`
	// HalfOpenProbes is how many calls a half-open breaker lets through; all of them
	// must succeed for it to close.
	HalfOpenProbes uint32 `yaml:"half_open_probes"`
	// Log receives the state changes; nil discards them.
	Log *slog.Logger `yaml:"-"`
}

// WithDefaults returns c with its zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Bucket == 0 {
		c.Bucket = DefaultBucket
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = DefaultFailureRatio
	}
	if c.MinCalls == 0 {
		c.MinCalls = DefaultMinCalls
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = DefaultHalfOpenProbes
	}
	return c
}

// Validate checks c, zero values meaning the defaults, and names every bad value.
func (c Config) Validate() error {
	d := c.WithDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("breaker %q: "+format, append([]any{c.Name}, args...)...))
	}
	if math.IsNaN(d.FailureRatio) || d.FailureRatio <= 0 || d.FailureRatio >= 1 {
		bad("failure_ratio %v is out of range (0,1)", c.FailureRatio)
	}
	for _, f := range []struct {
		key string
		v   time.Duration
	}{{"window", c.Window}, {"bucket", c.Bucket}, {"open_timeout", c.OpenTimeout}} {
		if f.v < 0 {
			bad("%s %s is negative", f.key, f.v)
		}
	}
	if d.Window > 0 && d.Bucket > 0 {
		// One bucket would make gobreaker clear the whole window at once, forgetting
		// outcomes still to come for calls it let through.
		switch n := (d.Window + d.Bucket - 1) / d.Bucket; {
		case n < 2:
			bad("window %s must hold at least 2 buckets of %s", d.Window, d.Bucket)
		case n > maxBuckets:
			bad("window %s holds %d buckets of %s; at most %d", d.Window, n, d.Bucket, maxBuckets)
		}
	}
	return errors.Join(errs...)
}

// Breaker is a circuit breaker. Its methods are safe for concurrent use.
//
// Every call it lets through must be reported once, through the done function Allow
// returned (Do reports for its caller). A call reported with an error wrapping
// context.Canceled counts neither as a success nor as a failure: the caller gave it
// up, which says nothing about what it called. A call never reported keeps one of a
// half-open breaker's probes taken for good.
type Breaker struct {
	cfg Config
	log *slog.Logger
	// series are the breaker's own metrics, looked up once; nil without Metrics.
	series *series

	// mu is held around every call into cb, so that the callbacks cb makes under its
	// own lock see lastErr and tripped consistently.
	mu sync.Mutex
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
	// tripped is the window that opened the breaker; lastErr the failure reported
	// last, which reopens a half-open one.
	tripped  gobreaker.Counts
	lastErr  error
	openedAt time.Time // when it last opened
	since    time.Time // when it opened from closed: the outage's start
	reopened int       // failed half-open rounds since it last closed
}

// New returns a closed breaker. m may be nil for no metrics; with m, a breaker with the
// name of an earlier one (a rebuilt one) replaces it in edged_breaker_state.
func New(cfg Config, m *Metrics) (*Breaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	b := &Breaker{cfg: cfg, log: cfg.Log}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:          cfg.Name,
		MaxRequests:   cfg.HalfOpenProbes,
		Interval:      cfg.Window,
		BucketPeriod:  cfg.Bucket,
		Timeout:       cfg.OpenTimeout,
		ReadyToTrip:   b.readyToTrip,
		OnStateChange: b.changed,
		IsExcluded:    func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	if m != nil {
		b.series = m.add(b)
	}
	return b, nil
}

// Config returns the breaker's settings, defaults filled in.
func (b *Breaker) Config() Config { return b.cfg }

// Allow asks to make a call. When the breaker lets it through, done must be called
// once with the call's outcome (nil for success), now or later, from any goroutine;
// otherwise err is an *OpenError, which wraps ErrOpen.
func (b *Breaker) Allow() (done func(err error), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	inner, err := b.cb.Allow()
	if err != nil {
		b.series.call(resultRejected)
		return nil, b.refusal()
	}
	reported := false
	return func(err error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if reported {
			return
		}
		reported = true
		b.report(inner, err)
	}, nil
}

// Record reports the outcome of a call made without asking Allow, such as a failed
// connection attempt that no call was waiting on. An open breaker ignores it, as it
// would have refused the call; a half-open one counts it as a probe.
func (b *Breaker) Record(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	inner, refused := b.cb.Allow()
	if refused != nil {
		return
	}
	b.report(inner, err)
}

// Do runs fn if the breaker lets the call through and reports its outcome; it returns
// fn's error, or an *OpenError without calling fn. A panic in fn counts as a failure
// and goes on.
func (b *Breaker) Do(fn func() error) error {
	done, err := b.Allow()
	if err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			done(fmt.Errorf("panic: %v", v))
			panic(v)
		}
	}()
	err = fn()
	done(err)
	return err
}

// State returns the breaker's state now; an open breaker whose OpenTimeout has passed
// is half-open.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fromGo(b.cb.State())
}

// report hands an outcome to cb; b.mu is held.
func (b *Breaker) report(inner func(error), err error) {
	switch {
	case errors.Is(err, context.Canceled):
	case err == nil:
		b.series.call(resultSuccess)
	default:
		b.series.call(resultFailure)
		b.lastErr = err
	}
	inner(err)
}

// refusal is the error of a refused call; b.mu is held.
func (b *Breaker) refusal() error {
	e := &OpenError{Name: b.cfg.Name, State: fromGo(b.cb.State())}
	if e.State == Open {
		e.Until = b.openedAt.Add(b.cfg.OpenTimeout)
	}
	return e
}

// readyToTrip is gobreaker's ReadyToTrip, called with the window's counts after each
// failure while closed. Calls still awaiting their outcome are not counted: a window
// full of unanswered calls says nothing yet.
func (b *Breaker) readyToTrip(c gobreaker.Counts) bool {
	calls := c.TotalSuccesses + c.TotalFailures
	// A ratio of counts, not failures > ratio*calls: 7 of 20 must compare equal to
	// 0.35 and not trip, which the product's rounding does not promise.
	if calls < b.cfg.MinCalls || float64(c.TotalFailures)/float64(calls) <= b.cfg.FailureRatio {
		return false
	}
	b.tripped = c
	return true
}

// changed is gobreaker's OnStateChange, called under cb's lock with b.mu held; cb has
// cleared its counts already, so the log line takes them from what b kept.
func (b *Breaker) changed(_ string, from, to gobreaker.State) {
	now := time.Now()
	f, t := fromGo(from), fromGo(to)
	b.series.transition(t)
	log := b.log.With("breaker", b.cfg.Name, "from", f.String(), "to", t.String())
	switch {
	case t == Open && f == Closed:
		b.openedAt, b.since, b.reopened = now, now, 0
		calls := b.tripped.TotalSuccesses + b.tripped.TotalFailures
		log.Warn("circuit breaker open: too many calls failed; refusing calls",
			"failures", b.tripped.TotalFailures, "calls", calls,
			"failure_ratio", fmt.Sprintf("%.2f", float64(b.tripped.TotalFailures)/float64(max(calls, 1))),
			"threshold", b.cfg.FailureRatio, "window", b.cfg.Window, "open_timeout", b.cfg.OpenTimeout, "err", b.lastErr)
	case t == Open:
		b.openedAt = now
		b.reopened++
		// One warning per outage: a long one would otherwise say this every
		// OpenTimeout.
		level := slog.LevelDebug
		if b.reopened == 1 {
			level = slog.LevelWarn
		}
		log.Log(context.Background(), level, "circuit breaker open again: a probe failed",
			"err", b.lastErr, "failed_rounds", b.reopened, "open_for", now.Sub(b.since).Round(time.Millisecond))
	case t == HalfOpen:
		level := slog.LevelDebug
		if b.reopened == 0 {
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "circuit breaker half-open: letting probes through", "probes", b.cfg.HalfOpenProbes)
	case t == Closed:
		log.Info("circuit breaker closed: the probes succeeded", "probes", b.cfg.HalfOpenProbes,
			"failed_rounds", b.reopened, "open_for", now.Sub(b.since).Round(time.Millisecond))
		b.reopened = 0
	}
}

func fromGo(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}

// OpenError is the error of a refused call. It wraps ErrOpen.
type OpenError struct {
	Name string
	// State is Open, or HalfOpen when every probe is already out.
	State State
	// Until is when an open breaker turns half-open; zero when State is HalfOpen,
	// where the probes' outcomes decide.
	Until time.Time
}

func (e *OpenError) Error() string {
	if e.State == HalfOpen {
		return fmt.Sprintf("circuit breaker %q is half-open and its probes are out", e.Name)
	}
	return fmt.Sprintf("circuit breaker %q is open for another %s", e.Name, max(time.Until(e.Until), 0).Round(time.Millisecond))
}

func (e *OpenError) Unwrap() error { return ErrOpen }
