package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/edgedrun/edged/drivers"
)

// Backpressure steps: each emit the pipeline answers with SlowDown stretches the
// interval by slowStep, up to maxStretch times the nominal one; each calm answer
// shrinks it by recoverStep back toward nominal. Recovery is gentler than the slowdown
// so the rate does not oscillate around the point where the ring starts to fill.
const (
	slowStep    = 1.5
	recoverStep = 1.2
	maxStretch  = 16
)

// Driver is the simulated line: a camera at the end of a conveyor that sees one solar
// cell per tick and knows which cells are defective.
type Driver struct {
	spec drivers.Spec
	cfg  Config
	rate atomic.Uint64 // math.Float64bits of the current rate in Hz
}

var _ drivers.Driver = (*Driver)(nil)

// New builds a simulator driver for a source; it starts nothing.
func New(spec drivers.Spec, cfg *Config) (*Driver, error) {
	if spec.Name == "" {
		return nil, errors.New("sim: source name is empty")
	}
	if cfg == nil {
		return nil, fmt.Errorf("sim: source %q: nil config", spec.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim: source %q: %w", spec.Name, err)
	}
	d := &Driver{spec: spec, cfg: *cfg}
	d.cfg.Defects = append([]string(nil), cfg.Defects...)
	d.setRate(cfg.RateHz)
	return d, nil
}

// RateHz is the rate the driver emits at now: the nominal rate, or less while the
// pipeline asks it to slow down. It is safe to call at any time.
func (d *Driver) RateHz() float64 { return math.Float64frombits(d.rate.Load()) }

func (d *Driver) setRate(hz float64) { d.rate.Store(math.Float64bits(hz)) }

// Run emits one image per tick until ctx ends, then returns nil. Each Run starts the
// image sequence from the seed again.
func (d *Driver) Run(ctx context.Context, e drivers.Emitter) error {
	g, err := NewGenerator(&d.cfg)
	if err != nil {
		return err
	}
	w, h := g.Size()
	nominal := time.Duration(float64(time.Second) / d.cfg.RateHz)
	interval := nominal
	d.setRate(d.cfg.RateHz)
	// The default logger is read here, not in New, so a logger set up after the
	// config was loaded is the one used.
	log := slog.Default().With("source", d.spec.Name, "driver", "sim")
	e.Health(true, nil)
	log.Info("simulated line started", "rate_hz", d.cfg.RateHz, "seed", d.cfg.Seed, "defect_rate", d.cfg.DefectRate)

	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	var seq uint64
	slowed := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		now := time.Now()
		seq++
		// The pipeline owns the reading after Emit, so every image gets its own buffer.
		buf := make([]byte, w*h)
		truth := g.Next(buf)
		r := &drivers.Reading{
			Source:     d.spec.Name,
			Seq:        seq,
			CapturedAt: now,
			Image:      &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: buf},
			Truth:      truth,
		}
		if d.spec.Budget > 0 {
			r.Deadline = now.Add(d.spec.Budget)
		}
		p := e.Emit(ctx, r)

		if p.SlowDown() {
			interval = min(time.Duration(float64(interval)*slowStep), nominal*maxStretch)
		} else {
			interval = max(time.Duration(float64(interval)/recoverStep), nominal)
		}
		if s := interval > nominal; s != slowed {
			slowed = s
			log.Debug("simulated line rate changed", "rate_hz", float64(time.Second)/float64(interval), "occupancy", p.Occupancy, "accepted", p.Accepted)
		}
		if interval == nominal {
			// Exactly the configured rate, not its round trip through a Duration.
			d.setRate(d.cfg.RateHz)
		} else {
			d.setRate(float64(time.Second) / float64(interval))
		}

		// Ticks are scheduled from the previous tick, not from now, so rendering time
		// does not lower the rate; after a stall the schedule restarts from now rather
		// than bursting to catch up.
		next = next.Add(interval)
		if lag := time.Since(next); lag > interval {
			next = time.Now()
		}
		timer.Reset(time.Until(next))
	}
}
