package sim

import (
	"bytes"
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// fakeEmitter is the pipeline's side of a source: it hands every reading to the test
// through a channel and answers with the pressure the test sets.
type fakeEmitter struct {
	readings chan *drivers.Reading
	limit    atomic.Uint64 // math.Float64bits of the MaxRateHz to answer with

	mu     sync.Mutex
	health []bool
}

func newFakeEmitter() *fakeEmitter {
	return &fakeEmitter{readings: make(chan *drivers.Reading, 4096)}
}

func (f *fakeEmitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	limit := math.Float64frombits(f.limit.Load())
	select {
	case f.readings <- r:
	default:
		return drivers.Pressure{Accepted: false, Occupancy: 1, MaxRateHz: limit}
	}
	return drivers.Pressure{Accepted: true, Occupancy: 0.1, MaxRateHz: limit}
}

func (f *fakeEmitter) Health(up bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.health = append(f.health, up)
}

// next waits for the next reading.
func (f *fakeEmitter) next(t *testing.T) *drivers.Reading {
	t.Helper()
	select {
	case r := <-f.readings:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no reading within 10s")
		return nil
	}
}

// drain discards the readings the test has not taken yet, so the next one was
// emitted after the driver's current state was reached.
func (f *fakeEmitter) drain() {
	for {
		select {
		case <-f.readings:
		default:
			return
		}
	}
}

func newDriver(t *testing.T, spec drivers.Spec, mod func(*Config)) *Driver {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(cfg)
	}
	d, err := New(spec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDriverReadings(t *testing.T) {
	const rate, n = 200, 60
	spec := drivers.Spec{Name: "line1-el", Budget: 150 * time.Millisecond}
	d := newDriver(t, spec, func(c *Config) { c.RateHz = rate; c.Seed = 9; c.DefectRate = 0.3 })
	e := newFakeEmitter()
	stop := drivertest.Start(t, d, e)

	want := newGen(t, func(c *Config) { c.Seed = 9; c.DefectRate = 0.3 })
	wantImg := make([]byte, 128*128)
	var first, last time.Time
	for i := uint64(1); i <= n; i++ {
		r := e.next(t)
		if r.Source != spec.Name || r.Seq != i {
			t.Fatalf("reading %d: source %q seq %d", i, r.Source, r.Seq)
		}
		if got := r.Deadline.Sub(r.CapturedAt); got != spec.Budget {
			t.Fatalf("reading %d: deadline is capture + %v, want + %v", i, got, spec.Budget)
		}
		im := r.Image
		if im == nil || im.Format != drivers.FormatGray8 || im.Width != 128 || im.Height != 128 || len(im.Data) != 128*128 {
			t.Fatalf("reading %d: image %+v", i, im)
		}
		// Same seed, same sequence as the generator on its own.
		label := want.Next(wantImg)
		if r.Truth != label || !bytes.Equal(im.Data, wantImg) {
			t.Fatalf("reading %d: truth %q and image differ from the generator's %q", i, r.Truth, label)
		}
		if i == 1 {
			first = r.CapturedAt
		}
		last = r.CapturedAt
	}
	stop()

	// The fake emitter never pushes back, so the rate stays nominal. Never faster is
	// the pacing; the lower bound is wide because rendering 200 images a second under
	// -race on a loaded 2-core machine (other test binaries beside it) falls behind.
	got := float64(n-1) / last.Sub(first).Seconds()
	if got < rate*0.3 || got > rate*1.1 {
		t.Errorf("emitted at %.1f Hz, want about %d", got, rate)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.health) == 0 || !e.health[0] {
		t.Errorf("health reports %v, want up first", e.health)
	}
}

func TestDriverFreshBuffers(t *testing.T) {
	d := newDriver(t, drivers.Spec{Name: "s"}, func(c *Config) { c.RateHz = 1000 })
	e := newFakeEmitter()
	drivertest.Start(t, d, e)
	a, b := e.next(t), e.next(t)
	if &a.Image.Data[0] == &b.Image.Data[0] {
		t.Fatal("two readings share an image buffer")
	}
	if !a.Deadline.IsZero() {
		t.Errorf("deadline %v set without a budget", a.Deadline)
	}
}

func TestDriverBackpressure(t *testing.T) {
	const nominal, limit = 500.0, 40.0
	d := newDriver(t, drivers.Spec{Name: "s"}, func(c *Config) { c.RateHz = nominal })
	if got := d.RateHz(); got != nominal {
		t.Fatalf("RateHz before Run = %v, want %v", got, nominal)
	}
	e := newFakeEmitter()
	e.limit.Store(math.Float64bits(limit))
	drivertest.Start(t, d, e)

	// The pipeline's limit holds from the tick after the first emit on.
	waitRate(t, d, limit)
	e.drain()
	t0 := e.next(t).CapturedAt
	const k = 5
	var tk time.Time
	for range k {
		tk = e.next(t).CapturedAt
	}
	if gap := tk.Sub(t0) / k; gap < time.Duration(float64(time.Second)/limit*0.9) {
		t.Errorf("under a %v Hz limit readings come every %v", limit, gap)
	}

	// A limit above the configured rate changes nothing; no limit restores it.
	for _, l := range []float64{2 * nominal, 0} {
		e.limit.Store(math.Float64bits(limit))
		waitRate(t, d, limit)
		e.limit.Store(math.Float64bits(l))
		waitRate(t, d, nominal)
		if got := d.RateHz(); got != nominal {
			t.Errorf("RateHz with limit %v = %v, want %v", l, got, nominal)
		}
	}
}

// waitRate polls the driver's rate, which it sets after each emit returns.
func waitRate(t *testing.T, d *Driver, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d.RateHz() != want {
		if time.Now().After(deadline) {
			t.Fatalf("RateHz = %v, want %v", d.RateHz(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDriverReconfigure(t *testing.T) {
	d := newDriver(t, drivers.Spec{Name: "s"}, func(c *Config) { c.RateHz = 5 })
	e := newFakeEmitter()
	drivertest.Start(t, d, e)
	e.next(t)
	c := DefaultConfig()
	c.RateHz = 800
	c.Seed = d.cfg.Seed + 1
	restart, err := d.Reconfigure(c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(restart, []string{"seed"}) {
		t.Errorf("restart keys %v, want [seed]", restart)
	}
	// The pending tick is still at the old pace; the one after is at the new rate.
	waitRate(t, d, 800)
	bad := DefaultConfig()
	bad.RateHz = -1
	if _, err := d.Reconfigure(bad); err == nil || !strings.Contains(err.Error(), "rate_hz") {
		t.Errorf("bad rate: %v", err)
	}
	if _, err := d.Reconfigure(struct{}{}); err == nil {
		t.Error("a config of another type was taken")
	}
}

func TestDriverCancel(t *testing.T) {
	d := newDriver(t, drivers.Spec{Name: "s"}, func(c *Config) { c.RateHz = 0.01 })
	e := newFakeEmitter()
	stop := drivertest.Start(t, d, e)
	e.next(t) // the first image comes at once, the next in 100s
	stop()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx, e); err != nil {
		t.Errorf("Run on a cancelled context = %v, want nil", err)
	}
}

func TestNewRejects(t *testing.T) {
	bad := DefaultConfig()
	bad.DefectRate = 2
	for name, tc := range map[string]struct {
		spec drivers.Spec
		cfg  *Config
	}{
		"no name":    {drivers.Spec{}, DefaultConfig()},
		"nil config": {drivers.Spec{Name: "s"}, nil},
		"bad config": {drivers.Spec{Name: "s"}, bad},
	} {
		if _, err := New(tc.spec, tc.cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestRegistered(t *testing.T) {
	f, err := drivers.Lookup("sim")
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.NewConfig()
	if err := cfg.(*Config).Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	d, err := f.New(drivers.Spec{Name: "s"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.(*Driver); !ok {
		t.Fatalf("factory built %T", d)
	}
	if _, err := f.New(drivers.Spec{Name: "s"}, struct{}{}); err == nil {
		t.Error("factory accepted a foreign config")
	}
}

func TestDriverCache(t *testing.T) {
	d := newDriver(t, drivers.Spec{Name: "s"}, func(c *Config) { c.RateHz = 5000; c.Cache = 3; c.DefectRate = 0.5 })
	e := newFakeEmitter()
	drivertest.Start(t, d, e)
	var got []*drivers.Reading
	for range 7 {
		got = append(got, e.next(t))
	}
	g, err := NewGenerator(&d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	for i, r := range got {
		if i < 3 {
			want := make([]byte, w*h)
			if truth := g.Next(want); truth != r.Truth || !bytes.Equal(want, r.Image.Data) {
				t.Fatalf("reading %d is not the generator's image %d", i, i)
			}
			continue
		}
		if c := got[i%3]; c.Truth != r.Truth || !bytes.Equal(c.Image.Data, r.Image.Data) {
			t.Fatalf("reading %d does not repeat cached image %d", i, i%3)
		}
		if &c0(got[i%3])[0] == &c0(r)[0] {
			t.Fatalf("reading %d shares its buffer with the cache", i)
		}
	}
}

func c0(r *drivers.Reading) []byte { return r.Image.Data }
