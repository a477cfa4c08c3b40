package config

import (
	"fmt"

	"github.com/edgedrun/edged/window"
)

// Window assembles a source's samples into windows before inference: each completed
// window is one frame holding its features by name ("acc_x.rms", "acc_x.band_20_30").
type Window struct {
	// Channels are the samples' value names that form the window, in order.
	Channels []string `yaml:"channels"`
	// Length is samples per window, a power of two; Hop the samples from one window's
	// start to the next (Length: no overlap).
	Length int `yaml:"length"`
	Hop    int `yaml:"hop"`
	// RateHz is the sample rate the driver gives.
	RateHz float64 `yaml:"rate_hz"`
	// MaxGap is how many missing samples are filled by interpolation; more start the
	// window over, so no window mixes two runs.
	MaxGap int `yaml:"max_gap"`
	// Features per channel: mean, std, rms, peak, crest, kurtosis, skewness, band.
	Features []string `yaml:"features"`
	// Bands are [lo, hi) Hz ranges whose spectral RMS the band feature gives.
	Bands [][2]float64 `yaml:"bands"`
}

// Config returns the windowing settings of the window package.
func (w *Window) Config() window.Config {
	return window.Config{
		Channels: w.Channels, Length: w.Length, Hop: w.Hop, RateHz: w.RateHz,
		MaxGap: w.MaxGap, Features: w.Features, Bands: w.Bands,
	}
}

func (v *validation) window(path string, w *Window) {
	if w == nil {
		return
	}
	if len(w.Features) == 0 {
		v.fail("%s.features: empty; name the features the model takes (mean, std, rms, peak, crest, kurtosis, skewness, band)", path)
	}
	if err := w.Config().Validate(); err != nil {
		for _, e := range splitErrors(err) {
			v.fail("%s.%v", path, e)
		}
	}
}

// splitErrors lists the errors errors.Join put together, so each gets its own line
// and path.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{fmt.Errorf("%w", err)}
}
