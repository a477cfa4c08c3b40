package window

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)

// at is the capture time of sample i at rate Hz.
func at(i int, rate float64) time.Time {
	return t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
}

func mustNew(t testing.TB, c Config) *Windower {
	t.Helper()
	w, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return w
}

// rampConfig has one channel whose value the tests set to the sample's index, so a
// window's raw values say which samples it holds.
func rampConfig(length, hop, maxGap int) Config {
	return Config{Channels: []string{"v"}, Length: length, Hop: hop, RateHz: 1000, MaxGap: maxGap}
}

func raw(w *Windower) []float32 {
	dst := make([]float32, w.nch*w.n)
	w.Raw(dst)
	return dst
}

// checkRamp checks that the window holds the consecutive samples first..first+n-1.
func checkRamp(t *testing.T, w *Windower, first int) {
	t.Helper()
	got := raw(w)
	for i, v := range got {
		if v != float32(first+i) {
			t.Fatalf("window sample %d = %v, want %d (window %+v)", i, v, first+i, w.Window())
		}
	}
	win := w.Window()
	last := first + w.n - 1
	if !win.Start.Equal(at(first, 1000)) || !win.End.Equal(at(last, 1000)) || win.Seq != uint64(last) {
		t.Fatalf("Window() = %+v, want start %v, end %v, seq %d", win, at(first, 1000), at(last, 1000), last)
	}
}

func TestWindowsOverlapAndNot(t *testing.T) {
	for _, hop := range []int{1, 4, 15, 16} {
		t.Run(fmt.Sprintf("length 16 hop %d", hop), func(t *testing.T) {
			w := mustNew(t, rampConfig(16, hop, 0))
			var starts []int
			for i := range 200 {
				if w.Add(at(i, 1000), uint64(i), map[string]float64{"v": float64(i)}) {
					first := i - 15
					checkRamp(t, w, first)
					if f := w.Window().Filled; f != 0 {
						t.Fatalf("Filled = %d without gaps", f)
					}
					starts = append(starts, first)
				} else if (w.Window() != Window{}) {
					t.Fatalf("sample %d: Window() = %+v after an Add that completed none", i, w.Window())
				}
			}
			// The first window is complete at the 16th sample, the next ones every hop.
			if len(starts) == 0 || starts[0] != 0 {
				t.Fatalf("window starts %v, want the first at 0", starts)
			}
			for k := 1; k < len(starts); k++ {
				if starts[k]-starts[k-1] != hop {
					t.Fatalf("window starts %v are not %d apart", starts, hop)
				}
			}
			if want := (200-16)/hop + 1; len(starts) != want {
				t.Fatalf("%d windows, want %d", len(starts), want)
			}
		})
	}
}

func TestGapFilledByInterpolation(t *testing.T) {
	w := mustNew(t, rampConfig(16, 4, 4))
	// Samples 0..19, then 20, 21, 22 lost, then 23 on: values on a ramp, so interpolation
	// recovers them exactly and every window must read as the plain ramp.
	var filledSeen []int
	for i := range 60 {
		if i >= 20 && i <= 22 {
			continue
		}
		if !w.Add(at(i, 1000), uint64(i), map[string]float64{"v": float64(i)}) {
			continue
		}
		first := i - 15
		checkRamp(t, w, first)
		// The filled samples 20..22 are in windows starting at 7..20.
		want := 0
		for s := 20; s <= 22; s++ {
			if s >= first && s <= i {
				want++
			}
		}
		if got := w.Window().Filled; got != want {
			t.Fatalf("window %d..%d: Filled = %d, want %d", first, i, got, want)
		}
		filledSeen = append(filledSeen, w.Window().Filled)
	}
	if r := w.Resets(); r["gap"]+r["clock"]+r["restart"]+r["missing_channel"] != 0 {
		t.Fatalf("Resets() = %v after a gap within max_gap", r)
	}
	t.Logf("filled per window: %v", filledSeen)
}

// Where filled samples cross several window boundaries, one window is reported, ending
// at the real sample, and the next one a hop later.
func TestGapFillCrossingWindowBoundaries(t *testing.T) {
	w := mustNew(t, rampConfig(16, 2, 5))
	var ends []int
	for i := range 40 {
		if i >= 25 && i <= 29 {
			continue
		}
		if w.Add(at(i, 1000), uint64(i), map[string]float64{"v": float64(i)}) {
			checkRamp(t, w, i-15)
			ends = append(ends, i)
		}
	}
	want := []int{15, 17, 19, 21, 23, 30, 32, 34, 36, 38}
	if fmt.Sprint(ends) != fmt.Sprint(want) {
		t.Fatalf("windows end at %v, want %v", ends, want)
	}
}

func TestRestarts(t *testing.T) {
	vals := func(v float64) map[string]float64 { return map[string]float64{"v": v} }
	ms := time.Millisecond
	cases := []struct {
		name   string
		maxGap int
		// after is the sample that follows sample 19 (seq 19, at 19 ms).
		seq    uint64
		at     time.Duration
		values map[string]float64
		reason string // "" for none
	}{
		{"next", 0, 20, 20 * ms, vals(20), ""},
		{"gap of one, max_gap 0", 0, 21, 21 * ms, vals(21), "gap"},
		{"gap above max_gap", 3, 24, 24 * ms, vals(24), "gap"},
		{"gap at max_gap", 3, 23, 23 * ms, vals(23), ""},
		{"seq backwards", 3, 5, 20 * ms, vals(20), "restart"},
		{"seq repeated", 3, 19, 20 * ms, vals(20), "restart"},
		{"seq to zero", 3, 0, 20 * ms, vals(20), "restart"},
		{"time backwards", 3, 20, 18 * ms, vals(20), "clock"},
		{"time jump", 0, 20, 19*ms + 2*ms + 1, vals(20), "clock"},
		{"time step at the limit", 0, 20, 19*ms + 2*ms, vals(20), ""},
		{"time jump with max_gap", 3, 20, 19*ms + 5*ms + 1, vals(20), "clock"},
		{"time stands still", 0, 20, 19 * ms, vals(20), ""},
		{"missing channel", 0, 20, 20 * ms, map[string]float64{"w": 1}, "missing_channel"},
		{"NaN", 0, 20, 20 * ms, vals(math.NaN()), "missing_channel"},
		{"Inf", 0, 20, 20 * ms, vals(math.Inf(-1)), "missing_channel"},
		{"extra names ignored", 0, 20, 20 * ms, map[string]float64{"v": 20, "w": 1}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := mustNew(t, rampConfig(16, 4, tc.maxGap))
			for i := range 20 {
				w.Add(at(i, 1000), uint64(i), vals(float64(i)))
			}
			w.Add(t0.Add(tc.at), tc.seq, tc.values)
			want := map[string]uint64{"gap": 0, "restart": 0, "clock": 0, "missing_channel": 0}
			if tc.reason != "" {
				want[tc.reason] = 1
			}
			if got := w.Resets(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("Resets() = %v, want %v", got, want)
			}
			if tc.reason == "" {
				return
			}
			// After a restart, no window until the new run has 16 samples of its own; the
			// restarting sample begins the run unless it was unusable.
			begins := tc.reason != "missing_channel"
			seq, tm := tc.seq, t0.Add(tc.at)
			need := 15
			if !begins {
				need = 16
			}
			for k := 1; k <= need; k++ {
				seq++
				tm = tm.Add(ms)
				done := w.Add(tm, seq, vals(1000+float64(k)))
				if done != (k == need) {
					t.Fatalf("sample %d of the new run: Add() = %v", k, done)
				}
			}
			win := w.Window()
			if win.Seq != seq || !win.End.Equal(tm) || !win.Start.Equal(tm.Add(-15*ms)) {
				t.Fatalf("first window of the new run: %+v, want seq %d, %v..%v", win, seq, tm.Add(-15*ms), tm)
			}
			for i, v := range raw(w) {
				if begins && i == 0 {
					if v != float32(tc.values["v"]) {
						t.Fatalf("first sample of the new run = %v, want the restarting sample %v", v, tc.values["v"])
					}
					continue
				}
				if v < 1000 {
					t.Fatalf("window after restart holds %v from the old run: %v", v, raw(w))
				}
			}
			if r := w.Resets(); fmt.Sprint(r) != fmt.Sprint(want) {
				t.Fatalf("Resets() = %v after the new run, want %v", r, want)
			}
		})
	}
}

// A long stream of runs separated by every kind of break, each run's values far from
// every other's: no window may hold samples of two runs, every window holds exactly
// Length samples, and each run long enough yields its windows.
func TestNeverMixesRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 1))
	for _, hop := range []int{1, 5, 16, 32} {
		t.Run(fmt.Sprintf("hop %d", hop), func(t *testing.T) {
			const length, maxGap, rate = 32, 3, 1000.0
			c := Config{Channels: []string{"a", "b"}, Length: length, Hop: hop, RateHz: rate, MaxGap: maxGap,
				Features: []string{"mean", "peak"}}
			w := mustNew(t, c)
			var (
				seq     uint64 = 100
				tm             = t0
				run            = 0
				windows        = 0
				feats          = map[string]float64{}
				period         = time.Second / time.Duration(rate)
			)
			value := func() float64 { return float64(run)*1000 + rng.Float64()*10 }
			for range 20000 {
				switch p := rng.IntN(1000); {
				case p < 5: // lost samples beyond max_gap
					seq += uint64(maxGap + 1 + rng.IntN(50))
					tm = tm.Add(period * time.Duration(maxGap+2+rng.IntN(50)))
					run++
				case p < 10: // the source restarted
					seq = uint64(rng.IntN(int(seq)))
					tm = tm.Add(period)
					run++
				case p < 13: // clock stepped back
					seq++
					tm = tm.Add(-time.Duration(rng.IntN(1000)) * time.Millisecond)
					run++
				case p < 16: // connection lost for a while: time jumps, seq does not
					seq++
					tm = tm.Add(time.Duration(1+rng.IntN(10)) * time.Second)
					run++
				case p < 19: // a sample lacks a channel: it belongs to no run
					seq++
					tm = tm.Add(period)
					w.Add(tm, seq, map[string]float64{"a": 1})
					run++
					continue
				case p < 40: // small gap, filled: same run, interpolated between its values
					g := 1 + rng.IntN(maxGap)
					seq += uint64(g + 1)
					tm = tm.Add(period * time.Duration(g+1))
				default:
					seq++
					tm = tm.Add(period)
				}
				v := value()
				if !w.Add(tm, seq, map[string]float64{"a": v, "b": -v}) {
					continue
				}
				windows++
				got := raw(w)
				for i, x := range got {
					ch, want := i/length, float32(run*1000)
					if ch == 1 {
						x = -x
					}
					if x < want || x > want+10 {
						t.Fatalf("window %d (run %d) holds %v at [%d][%d]: not from this run", windows, run, got[i], ch, i%length)
					}
				}
				win := w.Window()
				if win.Seq != seq || !win.End.Equal(tm) || win.Start.After(win.End) {
					t.Fatalf("Window() = %+v, last sample seq %d at %v", win, seq, tm)
				}
				w.Features(feats)
				if m := feats["a.mean"]; m < float64(run*1000) || m > float64(run*1000+10) {
					t.Fatalf("a.mean = %v in run %d", m, run)
				}
			}
			r := w.Resets()
			t.Logf("%d runs, %d windows, resets %v", run+1, windows, r)
			if r["gap"] == 0 || r["restart"] == 0 || r["clock"] == 0 || r["missing_channel"] == 0 || windows < 100 {
				t.Fatalf("the stream did not exercise every break: resets %v, %d windows", r, windows)
			}
			if total := r["gap"] + r["restart"] + r["clock"] + r["missing_channel"]; total > uint64(run) {
				t.Fatalf("%d resets for %d breaks", total, run)
			}
		})
	}
}

func TestRawLayout(t *testing.T) {
	c := Config{Channels: []string{"x", "y", "z"}, Length: 16, Hop: 16, RateHz: 100}
	w := mustNew(t, c)
	// Start mid-ring so the copy has to unwrap it.
	for i := range 16 + 7 {
		w.Add(at(i, 100), uint64(i), map[string]float64{"x": float64(i), "y": float64(100 + i), "z": float64(-i)})
	}
	for i := 23; ; i++ {
		if w.Add(at(i, 100), uint64(i), map[string]float64{"x": float64(i), "y": float64(100 + i), "z": float64(-i)}) {
			break
		}
	}
	got := raw(w)
	if len(got) != 3*16 {
		t.Fatalf("len = %d", len(got))
	}
	first := 16
	for i := range 16 {
		s := first + i
		if got[0*16+i] != float32(s) || got[1*16+i] != float32(100+s) || got[2*16+i] != float32(-s) {
			t.Fatalf("sample %d: x,y,z = %v,%v,%v; want %d,%d,%d", i, got[i], got[16+i], got[32+i], s, 100+s, -s)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Raw into a wrong-sized slice did not panic")
		}
	}()
	w.Raw(make([]float32, 16))
}

func TestNoWindowMeansZeros(t *testing.T) {
	c := Config{Channels: []string{"x"}, Length: 16, Hop: 16, RateHz: 100, Features: []string{"mean"}}
	w := mustNew(t, c)
	for i := range 20 {
		w.Add(at(i, 100), uint64(i), map[string]float64{"x": 5})
	}
	if (w.Window() != Window{}) {
		t.Fatalf("Window() = %+v between windows", w.Window())
	}
	dst := []float32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	w.Raw(dst)
	f := map[string]float64{"x.mean": 3}
	w.Features(f)
	for _, v := range dst {
		if v != 0 {
			t.Fatalf("Raw between windows = %v", dst)
		}
	}
	if f["x.mean"] != 0 {
		t.Fatalf("Features between windows = %v", f)
	}
}

// New keeps its own copy of the config's slices.
func TestNewCopiesConfig(t *testing.T) {
	c := Config{Channels: []string{"x"}, Length: 16, Hop: 16, RateHz: 100}
	w := mustNew(t, c)
	c.Channels[0] = "y"
	for i := range 16 {
		w.Add(at(i, 100), uint64(i), map[string]float64{"x": 1})
	}
	if r := w.Resets(); r["missing_channel"] != 0 {
		t.Fatalf("the caller's change reached the Windower: %v", r)
	}
}

// windowOf feeds a Windower a signal of exactly one window and returns its features.
func windowOf(t testing.TB, c Config, signal func(i int) float64) map[string]float64 {
	t.Helper()
	w := mustNew(t, c)
	for i := range c.Length {
		if w.Add(at(i, c.RateHz), uint64(i), map[string]float64{c.Channels[0]: signal(i)}) != (i == c.Length-1) {
			t.Fatalf("sample %d did not complete a window as it should", i)
		}
	}
	f := map[string]float64{}
	w.Features(f)
	return f
}

func near(t *testing.T, name string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol || math.IsNaN(got) {
		t.Errorf("%s = %.6g, want %.6g ± %.3g", name, got, want, tol)
	}
}

var allStats = []string{"mean", "std", "rms", "peak", "crest", "kurtosis", "skewness"}

func TestFeaturesOfSine(t *testing.T) {
	const rate, n, amp = 2048.0, 2048, 3.0
	c := Config{Channels: []string{"s"}, Length: n, Hop: n, RateHz: rate, Features: allStats}
	// 64 Hz: a whole number of cycles, and samples that land on the crests.
	f := windowOf(t, c, func(i int) float64 { return amp * math.Sin(2*math.Pi*64*float64(i)/rate) })
	near(t, "mean", f["s.mean"], 0, 1e-9)
	near(t, "std", f["s.std"], amp/math.Sqrt2, 1e-9)
	near(t, "rms", f["s.rms"], amp/math.Sqrt2, 1e-9)
	near(t, "peak", f["s.peak"], amp, 1e-9)
	near(t, "crest", f["s.crest"], math.Sqrt2, 1e-9)
	near(t, "kurtosis", f["s.kurtosis"], 1.5, 1e-9)
	near(t, "skewness", f["s.skewness"], 0, 1e-9)

	// An offset moves mean and rms but not the shape.
	f = windowOf(t, c, func(i int) float64 { return 10 + amp*math.Sin(2*math.Pi*64*float64(i)/rate) })
	near(t, "mean with offset", f["s.mean"], 10, 1e-9)
	near(t, "std with offset", f["s.std"], amp/math.Sqrt2, 1e-9)
	near(t, "rms with offset", f["s.rms"], math.Sqrt(100+amp*amp/2), 1e-9)
	near(t, "kurtosis with offset", f["s.kurtosis"], 1.5, 1e-9)

	// Not a whole number of cycles: close, not exact.
	f = windowOf(t, c, func(i int) float64 { return amp * math.Sin(2*math.Pi*100.37*float64(i)/rate+0.3) })
	near(t, "rms, fractional cycles", f["s.rms"], amp/math.Sqrt2, 0.01*amp)
	near(t, "kurtosis, fractional cycles", f["s.kurtosis"], 1.5, 0.01)
	near(t, "crest, fractional cycles", f["s.crest"], math.Sqrt2, 0.01)
}

func TestFeaturesOfNoise(t *testing.T) {
	const n = 8192
	c := Config{Channels: []string{"s"}, Length: n, Hop: n, RateHz: 1000, Features: allStats}
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 7))
		f := windowOf(t, c, func(int) float64 { return 0.5 + 2*rng.NormFloat64() })
		// Standard errors at n = 8192: kurtosis sqrt(24/n) = 0.054, skewness sqrt(6/n) = 0.027.
		near(t, "kurtosis", f["s.kurtosis"], 3, 0.25)
		near(t, "skewness", f["s.skewness"], 0, 0.12)
		near(t, "std", f["s.std"], 2, 0.1)
		near(t, "mean", f["s.mean"], 0.5, 0.1)
	}
}

func TestFeaturesOfConstant(t *testing.T) {
	c := Config{Channels: []string{"s"}, Length: 16, Hop: 16, RateHz: 100, Features: allStats}
	for _, v := range []float64{0, 7} {
		f := windowOf(t, c, func(int) float64 { return v })
		for _, name := range FeatureNames(c) {
			if math.IsNaN(f[name]) || math.IsInf(f[name], 0) {
				t.Fatalf("constant %v: %s = %v", v, name, f[name])
			}
		}
		near(t, "mean", f["s.mean"], v, 0)
		near(t, "kurtosis", f["s.kurtosis"], 0, 0)
	}
}

func TestBandEnergy(t *testing.T) {
	const rate, n, amp = 2048.0, 2048, 2.0
	bands := [][2]float64{{0, 50}, {50, 200}, {200, 500}, {500, 1024.5}}
	c := Config{Channels: []string{"s"}, Length: n, Hop: n, RateHz: rate, Features: []string{"band", "std"}, Bands: bands}
	names := FeatureNames(c)
	cases := []struct {
		name   string
		freq   float64
		offset float64
		band   int
	}{
		{"on a bin", 120, 0, 1},
		{"between bins", 120.5, 0, 1},
		{"off bin, low band", 23.37, 0, 0},
		{"high band", 700.2, 0, 3},
		{"three bins above a band edge", 203, 0, 2},
		{"with an offset", 333.3, 5, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := windowOf(t, c, func(i int) float64 {
				return tc.offset + amp*math.Sin(2*math.Pi*tc.freq*float64(i)/rate+0.7)
			})
			var sumSq float64
			for bi := range bands {
				got := f[names[bi]]
				sumSq += got * got
				if bi == tc.band {
					// Within 2%: the tone is inside the band, away from its edges by many bins.
					near(t, names[bi], got, amp/math.Sqrt2, 0.02*amp/math.Sqrt2)
				} else {
					// Hann's leakage falls to far below 1% of the tone a few bins away.
					near(t, names[bi], got, 0, 0.01*amp)
				}
			}
			// The bands cover 0..RateHz/2, so together they hold the whole variance.
			near(t, "bands summed in squares", math.Sqrt(sumSq), f["s.std"], 0.02*f["s.std"])
		})
	}
	// A tone on a band edge: Hann spreads it over three bins, one of them below the
	// edge, so the bands split it (1/6 and 5/6 of its power) and keep it whole together.
	f := windowOf(t, c, func(i int) float64 { return amp * math.Sin(2*math.Pi*200*float64(i)/rate) })
	lo, hi := f["s.band_50_200"], f["s.band_200_500"]
	near(t, "edge tone, lower band", lo, amp/math.Sqrt2*math.Sqrt(1.0/6), 0.01)
	near(t, "edge tone, upper band", hi, amp/math.Sqrt2*math.Sqrt(5.0/6), 0.01)
	near(t, "edge tone, both bands", math.Hypot(lo, hi), amp/math.Sqrt2, 0.01)
}

// Two tones in two bands read their own amplitudes, and white noise spreads over the
// bands in proportion to their width.
func TestBandEnergyMixture(t *testing.T) {
	const rate, n = 2048.0, 4096
	bands := [][2]float64{{0, 256}, {256, 512}, {512, 1024.5}}
	c := Config{Channels: []string{"s"}, Length: n, Hop: n, RateHz: rate, Features: []string{"band"}, Bands: bands}
	f := windowOf(t, c, func(i int) float64 {
		x := float64(i) / rate
		return 1.0*math.Sin(2*math.Pi*100.3*x) + 0.25*math.Sin(2*math.Pi*700.9*x+1)
	})
	near(t, "band_0_256", f["s.band_0_256"], 1/math.Sqrt2, 0.02/math.Sqrt2)
	near(t, "band_256_512", f["s.band_256_512"], 0, 0.01)
	near(t, "band_512_1024p5", f["s.band_512_1024p5"], 0.25/math.Sqrt2, 0.02*0.25/math.Sqrt2)

	rng := rand.New(rand.NewPCG(3, 3))
	f = windowOf(t, c, func(int) float64 { return rng.NormFloat64() })
	// Noise of variance 1 over 0..1024 Hz: a band of width b holds b/1024 of it.
	near(t, "noise band_0_256", f["s.band_0_256"], math.Sqrt(0.25), 0.05)
	near(t, "noise band_256_512", f["s.band_256_512"], math.Sqrt(0.25), 0.05)
	near(t, "noise band_512_1024p5", f["s.band_512_1024p5"], math.Sqrt(0.5), 0.05)
}

// Features of a window describe that window only: after a hop, the values follow the
// new samples.
func TestFeaturesFollowTheWindow(t *testing.T) {
	c := Config{Channels: []string{"a", "b"}, Length: 64, Hop: 16, RateHz: 64, Features: []string{"mean", "peak"}}
	w := mustNew(t, c)
	f := map[string]float64{}
	for i := range 200 {
		if !w.Add(at(i, 64), uint64(i), map[string]float64{"a": float64(i), "b": -2 * float64(i)}) {
			continue
		}
		w.Features(f)
		first := float64(i - 63)
		near(t, "a.mean", f["a.mean"], first+31.5, 1e-9)
		near(t, "a.peak", f["a.peak"], float64(i), 0)
		near(t, "b.mean", f["b.mean"], -2*(first+31.5), 1e-9)
		near(t, "b.peak", f["b.peak"], 2*float64(i), 0)
	}
}

func TestNoAllocations(t *testing.T) {
	c := validConfig()
	c.Features = append(allStats, "band")
	c.Hop = 64
	w := mustNew(t, c)
	vals := map[string]float64{"acc_x": 0, "acc_y": 0}
	i := 0
	add := func() bool {
		i++
		// Every 100th sample comes after a filled gap of 3, so filling is measured too.
		if i%100 == 0 {
			i += 3
		}
		x := float64(i) / 2048
		vals["acc_x"] = math.Sin(2 * math.Pi * 100 * x)
		vals["acc_y"] = math.Cos(2 * math.Pi * 300 * x)
		return w.Add(at(i, 2048), uint64(i), vals)
	}
	for range 3 * c.Length {
		add()
	}
	if a := testing.AllocsPerRun(10000, func() { add() }); a != 0 {
		t.Errorf("Add: %v allocations per sample", a)
	}
	for !add() {
	}
	dst := map[string]float64{}
	w.Features(dst)
	if a := testing.AllocsPerRun(100, func() { w.Features(dst) }); a != 0 {
		t.Errorf("Features into a reused map: %v allocations", a)
	}
	rawDst := make([]float32, 2*c.Length)
	if a := testing.AllocsPerRun(100, func() { w.Raw(rawDst) }); a != 0 {
		t.Errorf("Raw: %v allocations", a)
	}
	if len(dst) != len(FeatureNames(c)) {
		t.Fatalf("Features wrote %d values, FeatureNames has %d", len(dst), len(FeatureNames(c)))
	}
}

func BenchmarkAdd(b *testing.B) {
	c := Config{Channels: []string{"acc_x", "acc_y"}, Length: 2048, Hop: 512, RateHz: 2048, MaxGap: 4}
	w := mustNew(b, c)
	vals := map[string]float64{"acc_x": 0, "acc_y": 0}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		vals["acc_x"] = float64(i & 1023)
		vals["acc_y"] = float64(i & 511)
		w.Add(t0.Add(time.Duration(i)*488281), uint64(i), vals)
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkFeatures(b *testing.B) {
	c := Config{
		Channels: []string{"acc_x", "acc_y"}, Length: 2048, Hop: 2048, RateHz: 2048,
		Features: append(allStats, "band"),
		Bands:    [][2]float64{{0, 50}, {50, 200}, {200, 500}},
	}
	w := mustNew(b, c)
	rng := rand.New(rand.NewPCG(1, 1))
	vals := map[string]float64{}
	for i := range c.Length {
		vals["acc_x"], vals["acc_y"] = rng.NormFloat64(), rng.NormFloat64()
		w.Add(at(i, c.RateHz), uint64(i), vals)
	}
	dst := map[string]float64{}
	b.ReportAllocs()
	for b.Loop() {
		w.Features(dst)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "windows/s")
}

// TestCounter: samples polled over a protocol come twice or are missed, at times that
// jitter; sequenced and timed by the device's counter, they make the same windows as
// the device's own stream, across the counter's wrap.
func TestCounter(t *testing.T) {
	c := Config{Channels: []string{"a"}, Length: 16, Hop: 16, RateHz: 100, MaxGap: 1, Features: []string{"mean"}, Counter: "n"}
	w, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	var windows []Window
	poll := uint64(0)
	// Device samples 0..99 with the counter starting near the wrap; each is polled
	// twice, at jittered times, except one in sixteen, which both polls miss.
	missed := 0
	for i := range 100 {
		count := (65530 + i) % 65536
		polls := 2
		if i%16 == 7 {
			polls = 0 // missed entirely: a gap of one, filled
			missed++
		}
		for range polls {
			poll++
			jitter := time.Duration(poll%3) * 2 * time.Millisecond
			at := t0.Add(time.Duration(i)*10*time.Millisecond + jitter)
			if w.Add(at, poll, map[string]float64{"a": float64(i), "n": float64(count)}) {
				windows = append(windows, w.Window())
			}
		}
	}
	if n := w.Resets(); n["gap"]+n["restart"]+n["clock"]+n["missing_channel"] != 0 {
		t.Errorf("resets %v, want none: jitter and repeats are the poll's, not the device's", n)
	}
	if want := uint64(100 - missed); w.Repeats() != want {
		t.Errorf("repeats %d, want %d (every sample read twice but the missed ones)", w.Repeats(), want)
	}
	if len(windows) != 6 {
		t.Fatalf("%d windows, want 6 of 16 samples from 100", len(windows))
	}
	for k, win := range windows {
		// Window k ends at sample 16k+15, timed by the counter from the first poll
		// (2 ms late), not by each poll's own jitter.
		want := t0.Add(2*time.Millisecond + time.Duration(16*k+15)*10*time.Millisecond)
		if d := win.End.Sub(want); d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("window %d ends at %v, want %v", k, win.End.Sub(t0), want.Sub(t0))
		}
	}
	// A device that restarts its count starts a new run.
	w.Add(t0.Add(2*time.Second), poll+1, map[string]float64{"a": 1, "n": 3})
	if w.Resets()["restart"] != 1 {
		t.Errorf("resets %v after the counter went back, want one restart", w.Resets())
	}
	if err := (Config{Channels: []string{"a"}, Length: 16, Hop: 16, RateHz: 100, Features: []string{"mean"}, Counter: "a"}).Validate(); err == nil {
		t.Error("a counter that is also a channel was accepted")
	}
}
