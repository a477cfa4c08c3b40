// Package drivertest provides the conformance suite every driver passes, and a
// recording emitter for drivers' own tests. The suite holds a driver to the contract in
// package drivers: Run returns nil soon after its context ends, even while an emit is
// blocked; readings carry their source, sequence and times; a polling driver keeps to
// the rate the pipeline allows; after the device goes away and comes back, the driver
// says so through Health and reads again without a restart; and no goroutine outlives
// Run.
package drivertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/drivers"
)

// Harness is one driver under test with the device it talks to.
type Harness struct {
	// New builds a fresh driver for the device, through its registry factory, with a
	// config as a user writes it. Its spec's Budget should be at least a second.
	New func(t testing.TB) drivers.Driver
	// Stop makes the device unreachable (kills the server) and Start brings it back on
	// the same address. Both nil for drivers without a device; the reconnect test is
	// then left out.
	Stop, Start func(t testing.TB)
	// Trigger makes the device produce one reading (a trigger tag change, an image
	// drop, an upload). Nil for drivers that poll or stream on their own.
	Trigger func(t testing.TB)
	// Wait bounds each wait for the driver; 0 means 20s. Drivers whose device takes
	// long to restart (certificates made on first start) set more.
	Wait time.Duration
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("drivertest: Harness.New is nil")
	}
	if h.Wait == 0 {
		h.Wait = 20 * time.Second
	}
	t.Run("emits", func(t *testing.T) { testEmits(t, h) })
	t.Run("cancel", func(t *testing.T) { testCancel(t, h) })
	t.Run("cancel-while-blocked", func(t *testing.T) { testCancelBlocked(t, h) })
	if h.Trigger == nil {
		t.Run("backpressure", func(t *testing.T) { testBackpressure(t, h) })
	}
	if h.Stop != nil && h.Start != nil {
		t.Run("reconnect", func(t *testing.T) { testReconnect(t, h) })
	}
}

// Build makes a driver as edged does from a config file: the type's factory, the
// driver's block decoded strictly (unknown keys are errors) over the defaults, the
// config's Validate, then New. doc is the block's YAML; empty keeps the defaults.
func Build(tb testing.TB, typ string, spec drivers.Spec, doc string) drivers.Driver {
	tb.Helper()
	f, err := drivers.Lookup(typ)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := f.NewConfig()
	if doc != "" {
		dec := yaml.NewDecoder(strings.NewReader(doc))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil {
			tb.Fatalf("%s config: %v", typ, err)
		}
	}
	if v, ok := cfg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			tb.Fatalf("%s config: %v", typ, err)
		}
	}
	d, err := f.New(spec, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// Start runs d in the background until the test ends, or until the returned stop is
// called (safe more than once); either way it wants Run to return nil within 5s of
// its context ending.
func Start(tb testing.TB, d drivers.Driver, e drivers.Emitter) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, e) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run returned %v after its context ended, want nil", err)
				}
			case <-time.After(5 * time.Second):
				tb.Error("Run did not return within 5s of its context ending")
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// begin runs a fresh driver for one subtest, its emitter blocking when block is set.
// When the subtest ends, Run is stopped (if stop was not called before), the readings
// are released, and no goroutine the driver started may be left.
func begin(t *testing.T, h Harness, block bool) (*Emitter, func()) {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	d := h.New(t)
	e := NewEmitter()
	t.Cleanup(e.Close)
	e.Block(block)
	return e, Start(t, d, e)
}

// produce makes the driver emit: triggers for triggered drivers, nothing for the rest.
func produce(t testing.TB, h Harness, e *Emitter, n int) {
	t.Helper()
	if h.Trigger == nil {
		e.WaitReadings(t, n, h.Wait)
		return
	}
	deadline := time.Now().Add(h.Wait)
	for i := len(e.Readings()); i < n; i = len(e.Readings()) {
		if time.Now().After(deadline) {
			t.Fatalf("%d readings after triggers for %v, want %d", i, h.Wait, n)
		}
		h.Trigger(t)
		e.WaitReadings(t, i+1, h.Wait)
	}
}

func testEmits(t *testing.T, h Harness) {
	e, _ := begin(t, h, false)
	e.WaitHealth(t, true, h.Wait)
	produce(t, h, e, 3)
	rs := e.Readings()
	for i, x := range rs {
		if x.Source == "" {
			t.Errorf("reading %d has no source name", i)
		}
		if x.CapturedAt.IsZero() {
			t.Errorf("reading %d has no capture time", i)
		}
		if !x.Deadline.IsZero() && !x.Deadline.After(x.CapturedAt) {
			t.Errorf("reading %d: deadline %v is not after capture %v", i, x.Deadline, x.CapturedAt)
		}
		if x.Image == nil && len(x.Scalars) == 0 {
			t.Errorf("reading %d carries neither an image nor values", i)
		}
		if i > 0 && x.Seq <= rs[i-1].Seq {
			t.Errorf("reading %d: seq %d after %d, want it to grow", i, x.Seq, rs[i-1].Seq)
		}
	}
}

func testCancel(t *testing.T, h Harness) {
	e, stop := begin(t, h, false)
	e.WaitHealth(t, true, h.Wait)
	stop()
	// Once Run has returned, the driver emits nothing more.
	n := len(e.Readings())
	if h.Trigger != nil {
		h.Trigger(t)
	}
	time.Sleep(200 * time.Millisecond)
	if m := len(e.Readings()); m != n {
		t.Errorf("%d readings emitted after Run returned", m-n)
	}
}

func testCancelBlocked(t *testing.T, h Harness) {
	e, stop := begin(t, h, true)
	if h.Trigger != nil {
		e.WaitHealth(t, true, h.Wait)
		h.Trigger(t)
	}
	e.WaitBlocked(t, h.Wait)
	stop()
}

func testBackpressure(t *testing.T, h Harness) {
	e, _ := begin(t, h, false)
	e.WaitReadings(t, 1, h.Wait)
	// The pipeline allows 4 readings a second; over 2.5 s the driver may emit 10, plus
	// a few already under way when the limit came.
	const limitHz, window, slack = 4.0, 2500 * time.Millisecond, 4
	e.SetPressure(drivers.Pressure{Accepted: true, Occupancy: 0.9, MaxRateHz: limitHz})
	produce(t, h, e, len(e.Readings())+1) // the next emit sees the limit
	n := len(e.Readings())
	time.Sleep(window)
	got := len(e.Readings()) - n
	if max := int(limitHz*window.Seconds()) + slack; got > max {
		t.Errorf("%d readings in %v at a limit of %v Hz, want at most %d", got, window, limitHz, max)
	}
	// With the limit lifted the driver speeds up again.
	e.SetPressure(drivers.Pressure{Accepted: true})
	produce(t, h, e, len(e.Readings())+2)
}

func testReconnect(t *testing.T, h Harness) {
	e, _ := begin(t, h, false)
	e.WaitHealth(t, true, h.Wait)
	produce(t, h, e, 1)
	h.Stop(t)
	e.WaitHealth(t, false, h.Wait)
	if err := e.LastHealthErr(); err == nil {
		t.Error("Health(false) came without an error saying why")
	}
	h.Start(t)
	e.WaitHealth(t, true, h.Wait)
	n := len(e.Readings())
	produce(t, h, e, n+2)
}

// Emitter records what a driver emits and reports, and answers with a pressure the
// test sets. Readings are kept (and released at Close) so tests can look at them.
type Emitter struct {
	mu       sync.Mutex
	cond     *sync.Cond
	readings []*drivers.Reading
	health   []healthReport
	pressure drivers.Pressure
	blocking bool
	blocked  int
	keep     int
}

type healthReport struct {
	up  bool
	err error
}

// NewEmitter returns an emitter that takes every reading.
func NewEmitter() *Emitter {
	e := &Emitter{pressure: drivers.Pressure{Accepted: true}, keep: 1 << 16}
	e.cond = sync.NewCond(&e.mu)
	return e
}

// Emit records r, or with Block set waits until ctx ends and drops it.
func (e *Emitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	e.mu.Lock()
	if e.blocking {
		e.blocked++
		e.cond.Broadcast()
		e.mu.Unlock()
		<-ctx.Done()
		r.Release()
		return drivers.Pressure{Occupancy: 1}
	}
	p := e.pressure
	if !p.Accepted {
		e.mu.Unlock()
		r.Release()
		return p
	}
	if len(e.readings) >= e.keep {
		e.readings[0].Release()
		e.readings = slices.Delete(e.readings, 0, 1)
	}
	e.readings = append(e.readings, r)
	e.cond.Broadcast()
	e.mu.Unlock()
	return p
}

// Pressure answers what the next Emit would.
func (e *Emitter) Pressure() drivers.Pressure {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pressure
}

// Health records a health report.
func (e *Emitter) Health(up bool, err error) {
	e.mu.Lock()
	e.health = append(e.health, healthReport{up, err})
	e.cond.Broadcast()
	e.mu.Unlock()
}

// SetPressure sets what later emits answer. Accepted false makes the emitter drop the
// readings, as a full pipeline does.
func (e *Emitter) SetPressure(p drivers.Pressure) {
	e.mu.Lock()
	e.pressure = p
	e.mu.Unlock()
}

// Block makes later emits wait until their context ends, as a full ring with the block
// policy does.
func (e *Emitter) Block(on bool) {
	e.mu.Lock()
	e.blocking = on
	e.mu.Unlock()
}

// Readings returns the readings kept so far, oldest first.
func (e *Emitter) Readings() []*drivers.Reading {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.readings)
}

// Up reports the last health the driver gave (false before any).
func (e *Emitter) Up() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.health) > 0 && e.health[len(e.health)-1].up
}

// LastHealthErr returns the error of the last health report.
func (e *Emitter) LastHealthErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.health) == 0 {
		return nil
	}
	return e.health[len(e.health)-1].err
}

// Close releases the readings kept.
func (e *Emitter) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.readings {
		r.Release()
	}
	e.readings = nil
}

// WaitReadings waits until at least n readings were kept.
func (e *Emitter) WaitReadings(t testing.TB, n int, limit time.Duration) {
	t.Helper()
	if err := e.wait(limit, func() bool { return len(e.readings) >= n }); err != nil {
		e.mu.Lock()
		got := len(e.readings)
		e.mu.Unlock()
		t.Fatalf("%d readings after %v, want %d (last health error: %v)", got, limit, n, e.LastHealthErr())
	}
}

// WaitHealth waits until the driver's last health report says up.
func (e *Emitter) WaitHealth(t testing.TB, up bool, limit time.Duration) {
	t.Helper()
	if err := e.wait(limit, func() bool { return len(e.health) > 0 && e.health[len(e.health)-1].up == up }); err != nil {
		t.Fatalf("no Health(%v) within %v (last health error: %v)", up, limit, e.LastHealthErr())
	}
}

// WaitBlocked waits until an emit is blocked (see Block).
func (e *Emitter) WaitBlocked(t testing.TB, limit time.Duration) {
	t.Helper()
	if err := e.wait(limit, func() bool { return e.blocked > 0 }); err != nil {
		t.Fatalf("no emit within %v", limit)
	}
}

var errTimeout = errors.New("timed out")

// wait waits for cond, checked under e.mu, for at most limit.
func (e *Emitter) wait(limit time.Duration, cond func() bool) error {
	timer := time.AfterFunc(limit, func() {
		e.mu.Lock()
		e.cond.Broadcast()
		e.mu.Unlock()
	})
	defer timer.Stop()
	end := time.Now().Add(limit)
	e.mu.Lock()
	defer e.mu.Unlock()
	for !cond() {
		if !time.Now().Before(end) {
			return fmt.Errorf("%w after %v", errTimeout, limit)
		}
		e.cond.Wait()
	}
	return nil
}

var (
	_ drivers.Emitter        = (*Emitter)(nil)
	_ drivers.PressureReader = (*Emitter)(nil)
)
