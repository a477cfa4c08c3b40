package alert

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestHysteresis(t *testing.T) {
	h := Hysteresis{Enter: 1, Leave: 0.8, MinDuration: 3 * time.Second}
	t0 := time.Unix(1700000000, 0)
	var s State
	steps := []struct {
		at      int // seconds after t0
		score   float64
		active  bool
		changed bool
	}{
		{0, 0.5, false, false},
		{1, 1.2, false, false}, // above enter: the clock starts
		{2, 1.3, false, false},
		{3, 0.9, false, false}, // one window below enter: the run is broken
		{4, 1.1, false, false}, // starts again
		{6, 1.4, false, false},
		{7, 1.0, true, true},  // held 3 s at or above enter: raised
		{8, 0.9, true, false}, // between leave and enter: stays raised
		{9, 0.7, true, false}, // below leave: the clock starts
		{10, 0.85, true, false},
		{11, 0.6, true, false}, // starts again
		{14, 0.5, false, true}, // held 3 s below leave: cleared
		{15, math.NaN(), false, false},
		{16, 0.99, false, false},
	}
	for _, st := range steps {
		active, changed := s.Update(h, t0.Add(time.Duration(st.at)*time.Second), st.score)
		if active != st.active || changed != st.changed {
			t.Fatalf("at %ds score %v: active %v changed %v, want %v %v", st.at, st.score, active, changed, st.active, st.changed)
		}
	}
	if !s.Since().Equal(t0.Add(14 * time.Second)) {
		t.Errorf("since %v, want the clearing time", s.Since())
	}
}

func TestHysteresisNoMinDuration(t *testing.T) {
	h := Hysteresis{Enter: 2, Leave: 1}
	var s State
	now := time.Now()
	if a, c := s.Update(h, now, 2); !a || !c {
		t.Errorf("score at enter with no min duration: %v %v, want raised at once", a, c)
	}
	if a, c := s.Update(h, now, 1); !a || c {
		t.Errorf("score at leave: %v %v, want still raised (clears below leave)", a, c)
	}
	if a, c := s.Update(h, now, 0.99); a || !c {
		t.Errorf("score below leave: %v %v, want cleared", a, c)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		h    Hysteresis
		want string
	}{
		{Hysteresis{Enter: 0, Leave: 0}, "enter: 0"},
		{Hysteresis{Enter: math.NaN(), Leave: 0}, "enter: NaN"},
		{Hysteresis{Enter: 1, Leave: 2}, "leave: 2 is not a score from 0 up to enter (1)"},
		{Hysteresis{Enter: 1, Leave: -1}, "leave: -1"},
		{Hysteresis{Enter: 1, Leave: 0.5, MinDuration: -time.Second}, "min_duration: -1s"},
	} {
		if err := tc.h.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.h, err, tc.want)
		}
	}
	if err := (Hysteresis{Enter: 1, Leave: 1, MinDuration: time.Second}).Validate(); err != nil {
		t.Errorf("leave == enter refused: %v", err)
	}
}
