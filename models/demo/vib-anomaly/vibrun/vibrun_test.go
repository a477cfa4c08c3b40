package vibrun

import (
	"maps"
	"testing"
	"time"

	"github.com/edgedrun/edged/window"
)

// TestSimulate checks what training and evaluation both rest on: every window of a
// clean run arrives, with every feature, the same for the same seed, and labelled
// healthy until the fault's onset and faulty after it.
func TestSimulate(t *testing.T) {
	r := Run{Kind: FaultKinds[2], Seed: 7, Length: 40 * time.Second, Onset: 20 * time.Second, Grow: time.Minute}
	cfg := WindowConfig()
	names := window.FeatureNames(cfg)
	var first []map[string]float64
	for pass := range 2 {
		var got []map[string]float64
		err := Simulate(r, func(w Window) {
			if len(w.Features) != len(names) {
				t.Fatalf("window at %v has %d features, want %d", w.T, len(w.Features), len(names))
			}
			before := w.T < r.Onset
			if before && (w.Truth != "ok" || w.Severity != 0) || w.T > r.Onset && (w.Truth != r.Kind || w.Severity <= 0) {
				t.Fatalf("window at %v: truth %q severity %v, onset %v", w.T, w.Truth, w.Severity, r.Onset)
			}
			got = append(got, maps.Clone(w.Features))
		})
		if err != nil {
			t.Fatal(err)
		}
		samples := int(r.Length.Seconds() * cfg.RateHz)
		if want := (samples-cfg.Length)/cfg.Hop + 1; len(got) != want {
			t.Fatalf("%d windows from %d samples, want %d", len(got), samples, want)
		}
		if pass == 0 {
			first = got
			continue
		}
		for i := range got {
			if !maps.Equal(got[i], first[i]) {
				t.Fatalf("window %d differs between two runs of seed %d", i, r.Seed)
			}
		}
	}
}
