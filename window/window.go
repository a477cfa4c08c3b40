package window

import (
	"fmt"
	"math"
	"slices"
	"time"

	"gonum.org/v1/gonum/dsp/fourier"
)

// Reasons a Windower restarts, as Resets counts them.
const (
	reasonGap            = "gap"
	reasonRestart        = "restart"
	reasonClock          = "clock"
	reasonMissingChannel = "missing_channel"
)

var reasons = [...]string{reasonGap, reasonRestart, reasonClock, reasonMissingChannel}

const (
	rGap = iota
	rRestart
	rClock
	rMissing
)

// Window describes the window that Add last completed.
type Window struct {
	Start, End time.Time // capture times of its first and last sample
	Seq        uint64    // sequence number of its last sample
	Filled     int       // samples in it filled by interpolation
}

// feature kinds, resolved once in New so Features does no string work.
const (
	kMean = iota
	kStd
	kRMS
	kPeak
	kCrest
	kKurtosis
	kSkewness
	kBand
)

var kindOf = map[string]int{
	featMean: kMean, featStd: kStd, featRMS: kRMS, featPeak: kPeak, featCrest: kCrest,
	featKurtosis: kKurtosis, featSkewness: kSkewness, featBand: kBand,
}

// output is one value Features writes.
type output struct {
	name string
	kind int
	band int // index into the bands, for kBand
}

// Windower assembles one source's samples into windows. It is not safe for concurrent
// use. All memory is allocated by New, so Add, Features (into a map that already holds
// the names) and Raw allocate nothing.
type Windower struct {
	c       Config
	n, mask int
	nch     int
	maxJump time.Duration // the largest step between two capture times within one run

	// Rings of the last n samples: samples is channel-major (samples[ch*n+i]); pos is
	// the next slot to write, so once a run holds n samples, pos is its oldest.
	samples []float64
	times   []time.Time
	filled  []bool
	pos     int
	// count is the samples of the current run in the rings (at most n): slots beyond
	// it hold an earlier run and are never part of a window.
	count     int
	sinceEmit int // samples since the last window (at most n)
	filledIn  int // filled samples among the last count

	hasPrev  bool
	prevSeq  uint64
	prevT    time.Time
	prevVals []float64
	cur      []float64

	// With Config.Counter: the device counter's last raw value, the count it has
	// reached unwrapped, and the time of count 0 of the current run.
	hasCount  bool
	lastRaw   uint64
	count64   uint64
	countBase time.Time
	repeats   uint64

	ready  bool // Add has just completed a window
	win    Window
	resets [len(reasons)]uint64

	// Features.
	outs      [][]output // per channel
	scratch   []float64  // one channel, oldest first
	wantBands bool
	fft       *fourier.FFT
	coef      []complex128
	hann      []float64
	powNorm   float64  // turns |X_k|^2 into one-sided mean square
	bins      [][2]int // per band, [klo, khi)
	bandVals  []float64
}

// New returns a Windower for c, or c's validation error.
func New(c Config) (*Windower, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("window config: %w", err)
	}
	// The caller keeps its slices; ours must not change under us.
	c.Channels = slices.Clone(c.Channels)
	c.Features = slices.Clone(c.Features)
	c.Bands = slices.Clone(c.Bands)
	n, nch := c.Length, len(c.Channels)
	w := &Windower{
		c:        c,
		n:        n,
		mask:     n - 1,
		nch:      nch,
		maxJump:  time.Duration(float64(c.MaxGap+2) * float64(time.Second) / c.RateHz),
		samples:  make([]float64, nch*n),
		times:    make([]time.Time, n),
		filled:   make([]bool, n),
		prevVals: make([]float64, nch),
		cur:      make([]float64, nch),
		outs:     make([][]output, nch),
		scratch:  make([]float64, n),
	}
	for ch, name := range c.Channels {
		for _, f := range c.Features {
			if f != featBand {
				w.outs[ch] = append(w.outs[ch], output{name: name + "." + f, kind: kindOf[f]})
				continue
			}
			for bi, b := range c.Bands {
				w.outs[ch] = append(w.outs[ch], output{name: name + "." + bandName(b), kind: kBand, band: bi})
			}
		}
	}
	if slices.Contains(c.Features, featBand) {
		w.wantBands = true
		w.fft = fourier.NewFFT(n)
		w.coef = make([]complex128, n/2+1)
		w.hann = make([]float64, n)
		var sumSq float64
		for i := range w.hann {
			// The periodic form, whose DFT has exactly three nonzero bins: the one a
			// spectrum wants, as opposed to the symmetric form a filter wants.
			w.hann[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(n))
			sumSq += w.hann[i] * w.hann[i]
		}
		// With this factor the one-sided powers of all bins add up to the mean square of
		// the (Hann-weighted) window, so a band's RMS is in the signal's unit and a sine
		// of amplitude A reads A/sqrt2 in the band holding its frequency: corrected for
		// the window's energy, which is what a sum over bins needs (correcting for the
		// amplitude instead would read sqrt(1.5) too high, Hann spreading a tone over
		// three bins).
		w.powNorm = 1 / (float64(n) * sumSq)
		w.bins = make([][2]int, len(c.Bands))
		for i, b := range c.Bands {
			klo, khi := binRange(b, n, c.RateHz)
			w.bins[i] = [2]int{klo, khi}
		}
		w.bandVals = make([]float64, len(c.Bands))
	}
	return w, nil
}

// Add takes one sample: its capture time, its sequence number and its values, which must
// hold every channel (other names are ignored). It returns true when a window is
// complete; Window, Features and Raw then describe it until the next Add.
//
// A sample missing a channel (or holding NaN or ±Inf for one), a sequence number that does
// not advance (a restarted source), a capture time going backwards or advancing by more
// than (MaxGap+2)/RateHz, or a sequence gap above MaxGap restarts: the samples so far are
// dropped and the reason is counted (Resets). A sample that restarts for any reason but a
// missing channel begins the new run. A gap of up to MaxGap samples is filled by linear
// interpolation between the samples on either side. Where the filled samples cross window
// boundaries, one window is completed, ending at this sample, and the next follows Hop
// samples later.
func (w *Windower) Add(t time.Time, seq uint64, values map[string]float64) bool {
	w.ready = false
	if w.c.Counter != "" {
		var ok bool
		if t, seq, ok = w.byCounter(t, values); !ok {
			return false
		}
	}
	for i, name := range w.c.Channels {
		v, ok := values[name]
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			// The sample is unusable, and the next one has nothing to interpolate from.
			w.restart(rMissing)
			w.hasPrev = false
			return false
		}
		w.cur[i] = v
	}
	if w.hasPrev {
		dt := t.Sub(w.prevT)
		reason := -1
		switch {
		case seq <= w.prevSeq:
			reason = rRestart
		case dt < 0:
			reason = rClock
		case seq-w.prevSeq-1 > uint64(w.c.MaxGap):
			reason = rGap
		case dt > w.maxJump:
			reason = rClock
		}
		if reason >= 0 {
			w.restart(reason)
		} else if gap := int(seq - w.prevSeq - 1); gap > 0 {
			w.fill(gap, dt)
		}
	}
	w.push(w.cur, t, false)
	copy(w.prevVals, w.cur)
	w.prevT, w.prevSeq, w.hasPrev = t, seq, true
	if w.count < w.n || w.sinceEmit < w.c.Hop {
		return false
	}
	w.sinceEmit = 0
	w.ready = true
	w.win = Window{Start: w.times[w.pos], End: t, Seq: seq, Filled: w.filledIn}
	return true
}

// byCounter sequences and times a sample by the device's counter: a repeated count, or
// one up to Block behind (a waveform block overlapping the last), is a sample already
// taken (ok false); a count further back, by less than half the wrap, is a restarted
// device, which the sequence rule then restarts the run on.
func (w *Windower) byCounter(t time.Time, values map[string]float64) (time.Time, uint64, bool) {
	v, ok := values[w.c.Counter]
	if !ok || math.IsNaN(v) || v < 0 {
		return t, 0, true // the channel check below restarts on the missing value
	}
	wrap := w.c.CounterWrap
	if wrap == 0 {
		wrap = 1 << 16
	}
	raw := uint64(v) % wrap
	if !w.hasCount {
		w.hasCount, w.lastRaw, w.count64 = true, raw, raw
		w.countBase = t.Add(-w.period(raw))
		return t, w.count64, true
	}
	step := (raw + wrap - w.lastRaw) % wrap
	behind := (w.lastRaw + wrap - raw) % wrap
	switch {
	case step == 0, behind <= uint64(w.c.Block):
		// Read before: a poll faster than the device, or a block overlapping the
		// previous one.
		w.repeats++
		return t, 0, false
	case step > wrap/2:
		// Back by less than half the wrap: the device restarted its count. A new
		// run, timed from now.
		w.lastRaw = raw
		w.count64 = 0
		w.countBase = t
		return t, w.count64, true
	}
	w.lastRaw = raw
	w.count64 += step
	return w.countBase.Add(w.period(w.count64)), w.count64, true
}

func (w *Windower) period(n uint64) time.Duration {
	return time.Duration(float64(n) / w.c.RateHz * float64(time.Second))
}

// Repeats counts the samples dropped because the device's counter had not moved.
func (w *Windower) Repeats() uint64 { return w.repeats }

// restart drops the run so far. The rings keep their bytes, but count says none of them
// belong to the new run, so no window can hold them.
func (w *Windower) restart(reason int) {
	w.resets[reason]++
	w.count, w.sinceEmit, w.filledIn = 0, 0, 0
}

// fill pushes gap samples on the straight line from the previous sample to w.cur.
func (w *Windower) fill(gap int, dt time.Duration) {
	steps := float64(gap + 1)
	for k := 1; k <= gap; k++ {
		f := float64(k) / steps
		for ch := range w.nch {
			w.samples[ch*w.n+w.pos] = w.prevVals[ch] + (w.cur[ch]-w.prevVals[ch])*f
		}
		w.advance(w.prevT.Add(time.Duration(float64(dt)*f)), true)
	}
}

// push writes one sample at pos.
func (w *Windower) push(vals []float64, t time.Time, filled bool) {
	for ch, v := range vals {
		w.samples[ch*w.n+w.pos] = v
	}
	w.advance(t, filled)
}

// advance records the time and origin of the sample just written at pos and moves on.
func (w *Windower) advance(t time.Time, filled bool) {
	if w.count == w.n && w.filled[w.pos] {
		w.filledIn-- // the run's oldest sample leaves the window
	}
	w.times[w.pos] = t
	w.filled[w.pos] = filled
	if filled {
		w.filledIn++
	}
	w.pos = (w.pos + 1) & w.mask
	w.count = min(w.count+1, w.n)
	w.sinceEmit = min(w.sinceEmit+1, w.n)
}

// Window returns the window Add just completed; the zero Window when the last Add did
// not complete one.
func (w *Windower) Window() Window {
	if !w.ready {
		return Window{}
	}
	return w.win
}

// Resets returns how many times the Windower restarted, by reason: "gap", "restart",
// "clock", "missing_channel" (all four present).
func (w *Windower) Resets() map[string]uint64 {
	m := make(map[string]uint64, len(reasons))
	for i, r := range reasons {
		m[r] = w.resets[i]
	}
	return m
}

// Raw writes the window's samples into dst, channel-major (dst[ch*Length+i], oldest
// first); zeros when the last Add did not complete a window. It panics when len(dst) is
// not Channels*Length, as a copy into the wrong shape is a programming error.
func (w *Windower) Raw(dst []float32) {
	if len(dst) != w.nch*w.n {
		panic(fmt.Sprintf("window: Raw needs len(dst) = %d channels * %d samples, got %d", w.nch, w.n, len(dst)))
	}
	if !w.ready {
		clear(dst)
		return
	}
	for ch := range w.nch {
		ring := w.samples[ch*w.n : (ch+1)*w.n]
		out := dst[ch*w.n : (ch+1)*w.n]
		for i, v := range ring[w.pos:] {
			out[i] = float32(v)
		}
		tail := out[w.n-w.pos:]
		for i, v := range ring[:w.pos] {
			tail[i] = float32(v)
		}
	}
}

// Features writes the values FeatureNames names into dst; zeros when the last Add did not
// complete a window. Into a map that already holds the names it allocates nothing.
//
// Over the window's n samples x of one channel: mean; std, the population standard
// deviation; rms, sqrt(mean(x^2)), the offset included; peak, max |x|; crest, peak/rms;
// kurtosis, m4/m2^2 (3 for Gaussian noise, 1.5 for a sine); skewness, m3/m2^1.5 (m_k the
// central moments). A value that is undefined for a constant signal (crest, kurtosis,
// skewness) is 0, so a model never sees NaN. Each band is the RMS of the spectrum in
// [lo, hi): the mean is removed (an accelerometer's offset or gravity would otherwise
// fill the lowest band), the window weighted by a Hann window, and the one-sided power of
// the bins whose centre lies in the band summed, scaled so that a sine of amplitude A
// reads A/sqrt2 and bands that cover 0..RateHz/2 add up, in squares, to std^2.
func (w *Windower) Features(dst map[string]float64) {
	for ch := range w.nch {
		outs := w.outs[ch]
		if len(outs) == 0 {
			continue
		}
		if !w.ready {
			for _, o := range outs {
				dst[o.name] = 0
			}
			continue
		}
		x := w.scratch
		ring := w.samples[ch*w.n : (ch+1)*w.n]
		copy(x, ring[w.pos:])
		copy(x[w.n-w.pos:], ring[:w.pos])
		s := moments(x)
		if w.wantBands {
			w.bands(x, s.mean)
		}
		for _, o := range outs {
			var v float64
			switch o.kind {
			case kMean:
				v = s.mean
			case kStd:
				v = math.Sqrt(s.m2)
			case kRMS:
				v = s.rms
			case kPeak:
				v = s.peak
			case kCrest:
				v = ratio(s.peak, s.rms)
			case kKurtosis:
				v = ratio(s.m4, s.m2*s.m2)
			case kSkewness:
				v = ratio(s.m3, s.m2*math.Sqrt(s.m2))
			case kBand:
				v = w.bandVals[o.band]
			}
			dst[o.name] = v
		}
	}
}

// ratio is a/b, or 0 where b is 0: the shape of a flat signal is undefined, and a NaN
// would poison whatever consumes it.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

type stats struct {
	mean, rms, peak float64
	m2, m3, m4      float64 // central moments
}

func moments(x []float64) stats {
	var s stats
	var sum, sumSq float64
	for _, v := range x {
		sum += v
		sumSq += v * v
		if a := math.Abs(v); a > s.peak {
			s.peak = a
		}
	}
	n := float64(len(x))
	s.mean = sum / n
	s.rms = math.Sqrt(sumSq / n)
	// A second pass about the mean: the one-pass formulas lose the digits of a small
	// vibration riding on a large offset.
	for _, v := range x {
		d := v - s.mean
		d2 := d * d
		s.m2 += d2
		s.m3 += d2 * d
		s.m4 += d2 * d2
	}
	s.m2 /= n
	s.m3 /= n
	s.m4 /= n
	return s
}

// bands fills bandVals from x (overwritten).
func (w *Windower) bands(x []float64, mean float64) {
	for i, v := range x {
		x[i] = (v - mean) * w.hann[i]
	}
	w.fft.Coefficients(w.coef, x)
	last := len(w.coef) - 1
	for bi, b := range w.bins {
		var p float64
		for k := b[0]; k < b[1]; k++ {
			c := w.coef[k]
			pk := real(c)*real(c) + imag(c)*imag(c)
			if k != 0 && k != last {
				pk *= 2 // one-sided: the negative frequency's share
			}
			p += pk
		}
		w.bandVals[bi] = math.Sqrt(p * w.powNorm)
	}
}
