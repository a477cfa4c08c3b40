package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/hwprofiles"
	"github.com/edgedrun/edged/inference"
)

// powerWindow is how long images per joule is averaged over: one instant's watts
// swing with every batch.
const powerWindow = 10 * time.Second

// powerDoc is the board power part of /v1/status (Jetson boards with INA3221 rails).
type powerDoc struct {
	BoardWatts float64            `json:"board_watts"`
	TotalFrom  string             `json:"total_from"`
	RailsWatts map[string]float64 `json:"rails_watts"`
	// EnergyJoules is the board energy since edged started.
	EnergyJoules float64 `json:"energy_joules"`
	// ImagesPerJoule is frames published per joule of board energy over the last
	// powerWindow or more; 0 until one has passed.
	ImagesPerJoule float64 `json:"images_per_joule"`
	PowerMode      string  `json:"power_mode,omitempty"`
}

// efficiency turns published frames and the meter's energy into images per joule,
// over windows of at least powerWindow.
type efficiency struct {
	mu       sync.Mutex
	at       time.Time
	frames   uint64
	joules   float64
	perJoule float64
}

func (e *efficiency) update(now time.Time, frames uint64, joules float64) float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.at.IsZero() || joules < e.joules || frames < e.frames:
		e.at, e.frames, e.joules = now, frames, joules
	case now.Sub(e.at) >= powerWindow && joules > e.joules:
		e.perJoule = float64(frames-e.frames) / (joules - e.joules)
		e.at, e.frames, e.joules = now, frames, joules
	}
	return e.perJoule
}

// powerStatus is nil off Jetson boards.
func (d *daemon) powerStatus() *powerDoc {
	if d.power == nil {
		return nil
	}
	total, rails, ok := d.power.Watts()
	doc := &powerDoc{TotalFrom: d.power.InputRail(), RailsWatts: rails, EnergyJoules: d.power.Joules()}
	if doc.TotalFrom == "" {
		doc.TotalFrom = "sum"
	}
	if m, found, err := hwprofiles.ReadPowerMode(os.DirFS("/")); err == nil && found {
		doc.PowerMode = m.String()
	}
	if !ok {
		return doc
	}
	doc.BoardWatts = total
	var published uint64
	for _, s := range d.running.Load().Sources {
		if c, ok := d.pipe.Counts(s.Name); ok {
			published += c.Published
		}
	}
	doc.ImagesPerJoule = d.eff.update(time.Now(), published, doc.EnergyJoules)
	return doc
}

// checkHardware warns at start about what the profile expects and the board lacks: an
// execution provider whose libraries are missing (it falls back, never crashes), and a
// power mode other than the one the profile was tuned for.
func checkHardware(cfg *config.Config, prof *hwprofiles.Profile, lib inference.LibraryChoice, log *slog.Logger) {
	root := os.DirFS("/")
	dirs := append([]string{filepath.Dir(lib.Path)}, filepath.SplitList(os.Getenv("LD_LIBRARY_PATH"))...)
	checks := hwprofiles.CheckProviders(root, cfg.Runtime.ExecutionProviders, dirs)
	for i, c := range checks {
		if !c.OK() {
			log.Warn("execution provider libraries missing; it will not load", "provider", c.Provider,
				"missing", strings.Join(c.Missing, ", "), "falls_back_to", hwprofiles.FallsBackTo(checks, i))
		}
	}
	if m, ok, err := hwprofiles.ReadPowerMode(root); err == nil && ok && prof.PowerMode != "" && m.Name != prof.PowerMode {
		log.Warn("power mode differs from the one the hardware profile was tuned for", "mode", m.String(), "profile", prof.Name, "profile_mode", prof.PowerMode)
	}
}
