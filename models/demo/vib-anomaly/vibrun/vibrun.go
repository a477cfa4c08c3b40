// Package vibrun simulates the vibration runs the vib-anomaly demo model is trained and
// evaluated on: the simulator's signal (drivers/sim) cut into windows and turned into
// features by package window, exactly as edged does on a line, with the simulator's
// ground truth per window. The data generator (gen) and the Go evaluation test share it,
// so both see the same windows and features.
package vibrun

import (
	"fmt"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/window"
)

// FaultKinds are the simulator's fault kinds the model must detect.
var FaultKinds = []string{sim.FaultImbalance, sim.FaultMisalignment, sim.FaultOuterRace, sim.FaultInnerRace}

// WindowConfig is the windowing and the features vib-anomaly 1.0.0 was trained on; an
// inspection running the model must use the same. One-second windows (1 Hz bins) with
// half overlap. The bands split the spectrum where the faults put their energy at the
// simulator's shaft speed (24.5 Hz +-3 % under load changes) and its 6205 bearing:
// 1x (20..30), 2x (30..60), the outer-race frequency BPFO 87.8 Hz with 3x (60..100),
// the inner-race frequency BPFI 132.7 Hz with its shaft sidebands (100..160), the
// higher harmonics (160..400) and the bearing resonance the impacts ring (400..1024).
func WindowConfig() window.Config {
	return window.Config{
		Channels: []string{"acc_x", "acc_y"},
		Length:   2048,
		Hop:      1024,
		RateHz:   2048,
		Features: []string{"rms", "peak", "crest", "kurtosis", "band"},
		Bands:    [][2]float64{{0, 20}, {20, 30}, {30, 60}, {60, 100}, {100, 160}, {160, 400}, {400, 1024}},
	}
}

// Run is one simulated machine run.
type Run struct {
	Kind   string        // a fault kind, or "none" for a healthy run
	Seed   int64         // the simulator's seed
	Length time.Duration // how long the run lasts
	Onset  time.Duration // fault onset from the start
	Grow   time.Duration // onset to full severity
}

// FaultRun is the faulty run the calibration data and the evaluation use: healthy for
// a minute, the fault growing linearly to full severity over the next five, then two
// minutes at full severity.
func FaultRun(kind string, seed int64) Run {
	return Run{Kind: kind, Seed: seed, Length: 8 * time.Minute, Onset: time.Minute, Grow: 5 * time.Minute}
}

// Window is one complete window of a run.
type Window struct {
	T        time.Duration      // time of the window's last sample from the run's start
	Truth    string             // the simulator's label at that sample: "ok" or the fault kind
	Severity float64            // the fault's severity at that sample, 0..1
	Features map[string]float64 // window.FeatureNames(WindowConfig()) and their values; reused between calls
}

// VibrationConfig is the simulator's configuration for r: its defaults (2048 Hz, two
// channels, a 24.5 Hz shaft on 6205 bearings, 0.05 g noise, a load change every 20 s)
// with r's seed and fault.
func VibrationConfig(r Run) sim.VibrationConfig {
	c := *sim.DefaultVibrationConfig()
	c.Seed = r.Seed
	c.Fault = sim.Fault{Kind: r.Kind, Onset: config.Duration(r.Onset), Grow: config.Duration(r.Grow)}
	return c
}

// Simulate runs r through the simulator and the windower and calls fn for every
// complete window, in order.
func Simulate(r Run, fn func(Window)) error {
	cfg := WindowConfig()
	g, err := sim.NewVibrationGenerator(VibrationConfig(r))
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	w, err := window.New(cfg)
	if err != nil {
		return fmt.Errorf("window: %w", err)
	}
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	sample := make([]float64, len(cfg.Channels))
	values := make(map[string]float64, len(cfg.Channels))
	win := Window{Features: make(map[string]float64)}
	n := int64(r.Length.Seconds() * cfg.RateHz)
	for seq := uint64(1); int64(seq) <= n; seq++ {
		t, truth, sev := g.Next(sample)
		for i, c := range cfg.Channels {
			values[c] = sample[i]
		}
		if !w.Add(start.Add(t), seq, values) {
			continue
		}
		win.T, win.Truth, win.Severity = t, truth, sev
		w.Features(win.Features)
		fn(win)
	}
	if resets := w.Resets(); len(resets) > 0 {
		for reason, k := range resets {
			if k > 0 {
				return fmt.Errorf("the windower restarted on a clean stream (%s: %d)", reason, k)
			}
		}
	}
	return nil
}
