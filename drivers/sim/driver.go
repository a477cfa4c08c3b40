package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/edgedrun/edged/drivers"
)

// maxCatchUp is how far behind its schedule the simulator may fall and still send the
// missed ticks back to back.
const maxCatchUp = 10 * time.Millisecond

// Driver is the simulated line: a camera at the end of a conveyor that sees one solar
// cell per tick and knows which cells are defective.
type Driver struct {
	spec    drivers.Spec
	cfg     Config
	rate    atomic.Uint64 // math.Float64bits of the current rate in Hz
	nominal atomic.Uint64 // math.Float64bits of the configured rate; Reconfigure changes it
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
	d.nominal.Store(math.Float64bits(cfg.RateHz))
	return d, nil
}

var _ drivers.Reconfigurer = (*Driver)(nil)

// Reconfigure takes a changed config while the line runs: the rate changes at the next
// tick. Any other change (seed, image size, defects) needs a restart, since it would
// break the image sequence; those keys are returned.
func (d *Driver) Reconfigure(cfg any) (restart []string, err error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("sim: source %q: config is %T, not *sim.Config", d.spec.Name, cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("sim: source %q: %w", d.spec.Name, err)
	}
	old := d.cfg
	if c.Seed != old.Seed {
		restart = append(restart, "seed")
	}
	if c.DefectRate != old.DefectRate {
		restart = append(restart, "defect_rate")
	}
	if c.Width != old.Width || c.Height != old.Height {
		restart = append(restart, "width/height")
	}
	if !slices.Equal(c.Defects, old.Defects) {
		restart = append(restart, "defects")
	}
	d.nominal.Store(math.Float64bits(c.RateHz))
	return restart, nil
}

// RateHz is the rate the driver emits at now: the configured rate, or less while the
// pipeline's rate controller asks for less. It is safe to call at any time.
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
	var cache [][]byte
	var cacheTruth []string
	for range d.cfg.Cache {
		buf := make([]byte, w*h)
		cacheTruth = append(cacheTruth, g.Next(buf))
		cache = append(cache, buf)
		if ctx.Err() != nil {
			return nil
		}
	}
	nominal := math.Float64frombits(d.nominal.Load())
	d.setRate(nominal)
	// The spec's logger is the daemon's (its format and level); without one the
	// default logger is read here, not in New, so one set up after the config was
	// loaded is the one used.
	base := d.spec.Log
	if base == nil {
		base = slog.Default()
	}
	log := base.With("source", d.spec.Name, "driver", "sim")
	e.Health(true, nil)
	log.Info("simulated line started", "rate_hz", nominal, "seed", d.cfg.Seed, "defect_rate", d.cfg.DefectRate)

	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	var seq uint64
	limited := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		now := time.Now()
		seq++
		// The pipeline owns the reading after Emit and releases it (and its pooled
		// image buffer) once the frame's outcome is known.
		r := drivers.AcquireReading()
		var truth string
		if cache != nil {
			i := int((seq - 1) % uint64(len(cache)))
			copy(r.SetImage(drivers.FormatGray8, w, h, w*h), cache[i])
			truth = cacheTruth[i]
		} else {
			truth = g.Next(r.SetImage(drivers.FormatGray8, w, h, w*h))
		}
		r.Source, r.Seq, r.CapturedAt, r.Truth = d.spec.Name, seq, now, truth
		if d.spec.Budget > 0 {
			r.Deadline = now.Add(d.spec.Budget)
		}
		p := e.Emit(ctx, r)

		// The pace: the configured rate, or the pipeline's limit when that is lower.
		nominal = math.Float64frombits(d.nominal.Load())
		rate := nominal
		if p.MaxRateHz > 0 && p.MaxRateHz < rate {
			rate = p.MaxRateHz
		}
		if l := rate < nominal; l != limited {
			limited = l
			log.Debug("simulated line rate changed", "rate_hz", rate, "nominal_hz", nominal, "occupancy", p.Occupancy, "accepted", p.Accepted)
		}
		d.setRate(rate)
		interval := time.Duration(float64(time.Second) / rate)

		// Ticks are scheduled from the previous tick, not from now, so rendering time
		// and timer latency do not lower the rate: at thousands of images a second the
		// timer fires late by more than an interval, and the ticks due meanwhile go out
		// back to back. After a longer stall (maxCatchUp) the schedule restarts from now
		// rather than bursting.
		next = next.Add(interval)
		if lag := time.Since(next); lag > max(interval, maxCatchUp) {
			next = time.Now()
		}
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		timer.Reset(0)
	}
}
