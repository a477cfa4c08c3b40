package window

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Limits that Validate enforces; the README's configuration reference states the same ones.
const (
	minLength = 16
	maxLength = 1 << 16
)

// Feature names accepted in Config.Features.
const (
	featMean     = "mean"
	featStd      = "std"
	featRMS      = "rms"
	featPeak     = "peak"
	featCrest    = "crest"
	featKurtosis = "kurtosis"
	featSkewness = "skewness"
	featBand     = "band"
)

var knownFeatures = []string{
	featMean, featStd, featRMS, featPeak, featCrest,
	featKurtosis, featSkewness, featBand,
}

// Config says which scalars form a window, how long it is, how often one starts and
// what is computed from it. Its YAML keys are the ones Validate names in its errors.
type Config struct {
	// Channels are the reading's scalar names that form the window's channels, in order.
	Channels []string `yaml:"channels"`
	// Length is the number of samples per window: a power of two (the FFT's size) in
	// 16..65536.
	Length int `yaml:"length"`
	// Hop is the number of samples from one window's start to the next, 1..Length;
	// Length means windows do not overlap.
	Hop int `yaml:"hop"`
	// RateHz is the nominal sample rate: it turns sample counts into time (the clock
	// check) and bins into Hz (the bands).
	RateHz float64 `yaml:"rate_hz"`
	// MaxGap is the most missing samples (by sequence number) filled by linear
	// interpolation; a longer gap restarts the window. 0: any missing sample restarts.
	MaxGap int `yaml:"max_gap"`
	// Features are computed per channel: "mean", "std", "rms", "peak", "crest",
	// "kurtosis", "skewness", "band" (see Bands). Empty: none (raw windows only).
	Features []string `yaml:"features"`
	// Bands are Hz [lo, hi) ranges for "band": the RMS of the spectrum in each band.
	Bands [][2]float64 `yaml:"bands"`
	// Counter, when set, names a value holding the device's own sample counter, an
	// integer that wraps at CounterWrap (default 65536): samples are then sequenced
	// and timed by it (time = the run's first sample + count/RateHz) rather than by
	// the reading's sequence and capture time, and a sample read again (a poll faster
	// than the device samples) is dropped. For samples read over a polled protocol
	// (Modbus), where a poll's time is not the sample's.
	Counter string `yaml:"counter"`
	// CounterWrap is where Counter wraps to 0; 0 means 65536 (a 16-bit register).
	CounterWrap uint64 `yaml:"counter_wrap"`
	// Block, above 0, says each reading holds Block samples per channel, named
	// "<channel>.0" (oldest) to "<channel>.<Block-1>" (newest), with Counter the
	// newest's count: the waveform block a transmitter serves, read in one request.
	Block int `yaml:"block"`
}

// Validate returns every fault joined, each naming its field and the bad value, e.g.
// `length: 100 is not a power of two in 16..65536`.
func (c Config) Validate() error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.Channels) == 0 {
		fail("channels: empty; name at least one scalar")
	}
	if c.Counter != "" && slices.Contains(c.Channels, c.Counter) {
		fail("counter: %q is also a channel", c.Counter)
	}
	if c.CounterWrap == 1 {
		fail("counter_wrap: 1 leaves no counts")
	}
	if c.Block < 0 || c.Block > 65535 {
		fail("block: %d is out of range 0..65535", c.Block)
	} else if c.Block > 0 && c.Counter == "" {
		fail("block: %d needs counter, the newest sample's count, to place the block's samples", c.Block)
	}
	for i, ch := range c.Channels {
		switch {
		case ch == "":
			fail("channels[%d]: empty name", i)
		case slices.Index(c.Channels, ch) != i:
			fail("channels[%d]: %q is listed twice", i, ch)
		}
	}
	lengthOK := c.Length >= minLength && c.Length <= maxLength && c.Length&(c.Length-1) == 0
	if !lengthOK {
		fail("length: %d is not a power of two in %d..%d", c.Length, minLength, maxLength)
	}
	if c.Hop < 1 || (lengthOK && c.Hop > c.Length) {
		fail("hop: %d is out of range 1..length (%d)", c.Hop, c.Length)
	}
	rateOK := c.RateHz > 0 && !math.IsInf(c.RateHz, 0)
	if !rateOK {
		fail("rate_hz: %v is not a positive number", c.RateHz)
	}
	// A gap as long as the window would leave windows made of interpolation alone.
	if c.MaxGap < 0 || (lengthOK && c.MaxGap >= c.Length) {
		fail("max_gap: %d is out of range 0..length-1 (%d)", c.MaxGap, c.Length-1)
	}
	for i, f := range c.Features {
		switch {
		case !slices.Contains(knownFeatures, f):
			fail("features[%d]: %q is not one of %s", i, f, strings.Join(knownFeatures, ", "))
		case slices.Index(c.Features, f) != i:
			fail("features[%d]: %q is listed twice", i, f)
		}
	}
	wantBands := slices.Contains(c.Features, featBand)
	switch {
	case wantBands && len(c.Bands) == 0:
		fail("bands: empty while features holds %q", featBand)
	case !wantBands && len(c.Bands) > 0:
		// Bands that nothing computes are a config mistake, not something to ignore.
		fail("bands: %d bands set but features lacks %q", len(c.Bands), featBand)
	}
	for i, b := range c.Bands {
		lo, hi := b[0], b[1]
		switch {
		case math.IsNaN(lo) || math.IsInf(lo, 0) || math.IsNaN(hi) || math.IsInf(hi, 0):
			fail("bands[%d]: [%v, %v) is not finite", i, lo, hi)
		case lo < 0 || hi <= lo:
			fail("bands[%d]: [%v, %v) needs 0 <= lo < hi", i, lo, hi)
		case slices.Index(c.Bands, b) != i:
			fail("bands[%d]: [%v, %v) is listed twice", i, lo, hi)
		case lengthOK && rateOK:
			if klo, khi := binRange(b, c.Length, c.RateHz); klo >= khi {
				fail("bands[%d]: [%v, %v) holds no spectrum bin (bins every %v Hz up to %v Hz)",
					i, lo, hi, c.RateHz/float64(c.Length), c.RateHz/2)
			}
		}
	}
	return errors.Join(errs...)
}

// binRange returns the FFT bins [klo, khi) whose centre frequency k*rate/n lies in the
// band [lo, hi), limited to the one-sided spectrum 0..n/2.
func binRange(b [2]float64, n int, rate float64) (klo, khi int) {
	// The small slack keeps a bound that falls exactly on a bin (50 Hz at 1 Hz per bin)
	// from being pushed to the next one by rounding.
	const slack = 1e-9
	perBin := float64(n) / rate
	lo := math.Ceil(b[0]*perBin - slack)
	hi := math.Ceil(b[1]*perBin - slack)
	last := float64(n/2 + 1)
	lo = math.Max(0, math.Min(lo, last))
	hi = math.Max(0, math.Min(hi, last))
	return int(lo), int(hi)
}

// FeatureNames returns the names of the values Features writes: "<channel>.<feature>",
// bands as "<channel>.band_<lo>_<hi>" (Hz, integers when whole, else with "p" for the
// point: band_12p5_25), channel by channel, in the order Features and Bands give.
func FeatureNames(c Config) []string {
	var names []string
	for _, ch := range c.Channels {
		for _, f := range c.Features {
			if f != featBand {
				names = append(names, ch+"."+f)
				continue
			}
			for _, b := range c.Bands {
				names = append(names, ch+"."+bandName(b))
			}
		}
	}
	return names
}

func bandName(b [2]float64) string {
	return "band_" + hzName(b[0]) + "_" + hzName(b[1])
}

// hzName writes a frequency so that it is a valid identifier piece for models and
// metric-like consumers: no '.', which many of them treat as a separator.
func hzName(f float64) string {
	return strings.ReplaceAll(strconv.FormatFloat(f, 'f', -1, 64), ".", "p")
}
