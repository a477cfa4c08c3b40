// Package alert provides alerts that do not flap: a score (an anomaly model's, per
// window) raises an alert only after it has stayed at or above an enter level for a
// minimum time, and clears it only after it has stayed below a lower leave level as
// long. One noisy window neither raises nor clears anything, and a score hovering at
// the threshold does not toggle the alert on every window.
package alert

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Hysteresis is when an alert is raised and cleared.
type Hysteresis struct {
	// Enter is the score at or above which an alert is raised, once it has held for
	// MinDuration.
	Enter float64
	// Leave is the score below which a raised alert clears, once it has held for
	// MinDuration; at most Enter.
	Leave float64
	// MinDuration is how long a score must stay past a level before the state
	// changes; 0 changes at once.
	MinDuration time.Duration
}

// Validate names each bad field and its value.
func (h Hysteresis) Validate() error {
	var errs []error
	if math.IsNaN(h.Enter) || math.IsInf(h.Enter, 0) || h.Enter <= 0 {
		errs = append(errs, fmt.Errorf("enter: %v is not a positive score", h.Enter))
	}
	if math.IsNaN(h.Leave) || math.IsInf(h.Leave, 0) || h.Leave < 0 || h.Leave > h.Enter {
		errs = append(errs, fmt.Errorf("leave: %v is not a score from 0 up to enter (%v)", h.Leave, h.Enter))
	}
	if h.MinDuration < 0 {
		errs = append(errs, fmt.Errorf("min_duration: %v is negative", h.MinDuration))
	}
	return errors.Join(errs...)
}

// State is one alert's state: raised or not, and since when the score has been past
// the level that would change it. The zero value is a cleared alert.
type State struct {
	active bool
	// pending is when the score first crossed the level that would change the state,
	// in the current unbroken run; zero when it has not.
	pending time.Time
	since   time.Time
}

// Update takes the score at t and reports whether the alert is raised, and whether
// this update changed it. Times are the scores' own (capture times), so a backlog
// worked off quickly is judged by when the scores were measured, not by when they
// arrived. A NaN score counts as no evidence either way.
func (s *State) Update(h Hysteresis, t time.Time, score float64) (active, changed bool) {
	if math.IsNaN(score) {
		return s.active, false
	}
	crossing := score >= h.Enter
	if s.active {
		crossing = score < h.Leave
	}
	if !crossing {
		s.pending = time.Time{}
		return s.active, false
	}
	if s.pending.IsZero() {
		s.pending = t
	}
	if t.Sub(s.pending) < h.MinDuration {
		return s.active, false
	}
	s.active = !s.active
	s.since = t
	s.pending = time.Time{}
	return s.active, true
}

// Active reports whether the alert is raised.
func (s *State) Active() bool { return s.active }

// Since is when the alert last changed; zero before it ever did.
func (s *State) Since() time.Time { return s.since }
