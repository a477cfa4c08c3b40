package sim

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"math/cmplx"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/dsp/fourier"
	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/config/units"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestBearingFrequencies(t *testing.T) {
	// Textbook values for a 6205 at 1470 rpm (SKF's calculator gives 3.585 and 5.415
	// times the shaft speed).
	b := Bearing6205
	if got := b.BPFO(24.5); math.Abs(got-87.9) > 0.1 {
		t.Errorf("BPFO(24.5) = %.3f Hz, want ~87.9", got)
	}
	if got := b.BPFI(24.5); math.Abs(got-132.6) > 0.1 {
		t.Errorf("BPFI(24.5) = %.3f Hz, want ~132.6", got)
	}
	// BPFO + BPFI = balls × shaft speed, whatever the geometry.
	b.ContactDeg = 15
	if got := b.BPFO(10) + b.BPFI(10); math.Abs(got-90) > 1e-9 {
		t.Errorf("BPFO+BPFI at 10 Hz = %v, want 90", got)
	}
	if b.BPFO(10) <= Bearing6205.BPFO(10) {
		t.Error("a contact angle should raise BPFO (cos a < 1)")
	}
}

func vibCfg(mod func(*VibrationConfig)) VibrationConfig {
	c := DefaultVibrationConfig()
	c.LoadChangeEvery = 0 // exact frequencies for the spectra
	if mod != nil {
		mod(c)
	}
	return *c
}

// samples returns channel ch of n samples, and the truths and severities.
func samples(t testing.TB, c VibrationConfig, n, ch int) ([]float64, []string, []float64) {
	t.Helper()
	g, err := NewVibrationGenerator(c)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float64, n)
	truth := make([]string, n)
	sev := make([]float64, n)
	dst := make([]float64, len(c.Channels))
	for i := range n {
		_, truth[i], sev[i] = g.Next(dst)
		x[i] = dst[ch]
	}
	return x, truth, sev
}

func TestVibrationDeterminism(t *testing.T) {
	for _, kind := range FaultKinds {
		c := vibCfg(func(c *VibrationConfig) {
			c.Fault = Fault{Kind: kind, Onset: units.Duration(time.Second), Grow: units.Duration(time.Second)}
			c.LoadChangeEvery = units.Duration(500 * time.Millisecond)
			c.Seed = 42
		})
		a, _, _ := samples(t, c, 8192, 0)
		b, _, _ := samples(t, c, 8192, 0)
		if !slices.Equal(a, b) {
			t.Errorf("%s: two generators with seed 42 differ", kind)
		}
		c.Seed = 43
		if d, _, _ := samples(t, c, 8192, 0); slices.Equal(a, d) {
			t.Errorf("%s: seeds 42 and 43 give the same samples", kind)
		}
		// Before onset a faulty machine is the healthy one, sample for sample: the
		// fault adds its own signal and changes nothing else.
		c.Seed = 42
		c.Fault.Kind = FaultNone
		h, _, _ := samples(t, c, 2048, 0)
		if !slices.Equal(a[:2048], h) {
			t.Errorf("%s: differs from the healthy machine before onset", kind)
		}
	}
}

// spectrum is the one-sided amplitude spectrum (g peak) of x under a Hann window,
// with its bin width.
func spectrum(x []float64, rate float64) ([]float64, float64) {
	n := len(x)
	w := make([]float64, n)
	for i, v := range x {
		w[i] = v * 0.5 * (1 - math.Cos(2*math.Pi*float64(i)/float64(n)))
	}
	coef := fourier.NewFFT(n).Coefficients(nil, w)
	amp := make([]float64, len(coef))
	for i, c := range coef {
		// Hann's coherent gain is 1/2; one-sided doubles.
		amp[i] = 4 * cmplx.Abs(c) / float64(n)
	}
	return amp, rate / float64(n)
}

// peak is the highest amplitude within ±tol Hz of f.
func peak(amp []float64, df, f, tol float64) float64 {
	lo, hi := int(math.Floor((f-tol)/df)), int(math.Ceil((f+tol)/df))
	m := 0.0
	for i := max(lo, 0); i <= hi && i < len(amp); i++ {
		m = max(m, amp[i])
	}
	return m
}

// bandRMS is the RMS the spectrum holds in [lo, hi) Hz.
func bandRMS(amp []float64, df, lo, hi float64) float64 {
	s := 0.0
	for i := int(lo / df); float64(i)*df < hi && i < len(amp); i++ {
		s += amp[i] * amp[i] / 2
	}
	// Hann spreads a line over ~1.5 bins of noise bandwidth.
	return math.Sqrt(s / 1.5)
}

func median(x []float64) float64 {
	y := slices.Clone(x)
	sort.Float64s(y)
	return y[len(y)/2]
}

// envelope is the spectrum of the squared signal band-passed to [lo, hi) Hz: impacts
// that ring the resonance show as lines at their repetition rate.
func envelope(x []float64, rate, lo, hi float64) ([]float64, float64) {
	n := len(x)
	fft := fourier.NewFFT(n)
	coef := fft.Coefficients(nil, x)
	for i := range coef {
		if f := fft.Freq(i) * rate; f < lo || f >= hi {
			coef[i] = 0
		}
	}
	bp := fft.Sequence(nil, coef)
	mean := 0.0
	for i, v := range bp {
		bp[i] = v * v
		mean += bp[i]
	}
	mean /= float64(n)
	for i := range bp {
		bp[i] -= mean
	}
	return spectrum(bp, rate)
}

// argmax is the frequency of the highest bin in [lo, hi) Hz.
func argmax(amp []float64, df, lo, hi float64) float64 {
	best, at := -1.0, 0.0
	for i := int(lo / df); float64(i)*df < hi; i++ {
		if amp[i] > best {
			best, at = amp[i], float64(i)*df
		}
	}
	return at
}

const specN = 16384 // 8 s at 2048 Hz: 0.125 Hz bins

func TestVibrationHealthySpectrum(t *testing.T) {
	c := vibCfg(nil)
	for ch, name := range c.Channels {
		x, truth, sev := samples(t, c, specN, ch)
		if truth[specN-1] != LabelOK || sev[specN-1] != 0 {
			t.Fatalf("healthy machine says %q severity %v", truth[specN-1], sev[specN-1])
		}
		amp, df := spectrum(x, c.RateHz)
		floor := median(amp[int(10/df):int(1000/df)])
		a1, a2, a3 := peak(amp, df, 24.5, 0.3), peak(amp, df, 49, 0.3), peak(amp, df, 73.5, 0.3)
		t.Logf("%s: 1x %.4f g, 2x %.4f g, 3x %.4f g, noise floor %.5f g/bin", name, a1, a2, a3, floor)
		if a1 < 10*floor {
			t.Errorf("%s: 1x %.4f g does not stand out of the floor %.5f", name, a1, floor)
		}
		if !(a2 > 3*floor && a2 < a1) {
			t.Errorf("%s: 2x %.4f g, want a small line under 1x %.4f", name, a2, a1)
		}
		if !(a3 > 2*floor && a3 < a2*1.5) {
			t.Errorf("%s: 3x %.4f g, want a smaller line", name, a3)
		}
		if rms := math.Sqrt(meanSq(x)); math.Abs(rms-0.055) > 0.015 {
			t.Errorf("%s: RMS %.4f g, want about 0.055 (noise 0.05 plus the lines)", name, rms)
		}
	}
}

func meanSq(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v * v
	}
	return s / float64(len(x))
}

// faultFeatures measures what each fault should raise on one stretch of channel 0.
type faultFeatures struct {
	x1, x2, bpfo, bpfi, resonance float64
	envPeakOuter, envPeakInner    float64 // frequency of the envelope's peak in 50..200 Hz
	envAt, envSide, envFloor      float64 // envelope amplitude at BPFI, at BPFI±1x, median
}

func measure(x []float64, c VibrationConfig) faultFeatures {
	amp, df := spectrum(x, c.RateHz)
	bpfo, bpfi := c.Bearing.BPFO(c.ShaftHz), c.Bearing.BPFI(c.ShaftHz)
	fr := resonanceNyq * c.RateHz
	env, edf := envelope(x, c.RateHz, fr-150, fr+150)
	return faultFeatures{
		x1:           peak(amp, df, c.ShaftHz, 0.3),
		x2:           peak(amp, df, 2*c.ShaftHz, 0.3),
		bpfo:         peak(amp, df, bpfo, 0.5),
		bpfi:         peak(amp, df, bpfi, 0.5),
		resonance:    bandRMS(amp, df, fr-150, fr+150),
		envPeakOuter: argmax(env, edf, 50, 200),
		envPeakInner: argmax(env, edf, 100, 200),
		envAt:        peak(env, edf, bpfi, 0.5),
		envSide:      min(peak(env, edf, bpfi-c.ShaftHz, 0.5), peak(env, edf, bpfi+c.ShaftHz, 0.5)),
		envFloor:     median(env[int(20/edf):int(300/edf)]),
	}
}

func TestVibrationFaults(t *testing.T) {
	base := vibCfg(nil)
	hx, _, _ := samples(t, base, specN, 0)
	h := measure(hx, base)
	bpfo, bpfi := base.Bearing.BPFO(base.ShaftHz), base.Bearing.BPFI(base.ShaftHz)
	t.Logf("healthy: %+v", h)
	for _, tc := range []struct {
		kind  string
		check func(t *testing.T, f faultFeatures)
	}{
		{FaultImbalance, func(t *testing.T, f faultFeatures) {
			if f.x1 < 5*h.x1 {
				t.Errorf("1x %.4f g, want at least 5x healthy %.4f", f.x1, h.x1)
			}
			if f.x2 > 1.5*h.x2 {
				t.Errorf("2x %.4f g grew from %.4f; imbalance is a 1x fault", f.x2, h.x2)
			}
		}},
		{FaultMisalignment, func(t *testing.T, f faultFeatures) {
			if f.x2 < 5*h.x2 {
				t.Errorf("2x %.4f g, want at least 5x healthy %.4f", f.x2, h.x2)
			}
			if f.x1 <= h.x1 {
				t.Errorf("1x %.4f g, want above healthy %.4f", f.x1, h.x1)
			}
		}},
		{FaultOuterRace, func(t *testing.T, f faultFeatures) {
			if f.resonance < 3*h.resonance {
				t.Errorf("resonance band %.4f g RMS, want at least 3x healthy %.4f", f.resonance, h.resonance)
			}
			if f.bpfo < 2*h.bpfo {
				t.Errorf("BPFO line %.4f g, want at least 2x healthy %.4f", f.bpfo, h.bpfo)
			}
			if math.Abs(f.envPeakOuter-bpfo) > 0.5 {
				t.Errorf("envelope peaks at %.2f Hz, want BPFO %.2f", f.envPeakOuter, bpfo)
			}
		}},
		{FaultInnerRace, func(t *testing.T, f faultFeatures) {
			if f.resonance < 3*h.resonance {
				t.Errorf("resonance band %.4f g RMS, want at least 3x healthy %.4f", f.resonance, h.resonance)
			}
			if f.bpfi < 2*h.bpfi {
				t.Errorf("BPFI line %.4f g, want at least 2x healthy %.4f", f.bpfi, h.bpfi)
			}
			if math.Abs(f.envPeakInner-bpfi) > 0.5 {
				t.Errorf("envelope peaks at %.2f Hz in 100..200, want BPFI %.2f", f.envPeakInner, bpfi)
			}
			if f.envSide < 5*f.envFloor {
				t.Errorf("sidebands at BPFI±1x %.4g, want well above the envelope floor %.4g", f.envSide, f.envFloor)
			}
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			c := base
			c.Fault = Fault{Kind: tc.kind} // full severity from the start
			x, truth, sev := samples(t, c, specN, 0)
			if truth[0] != tc.kind || sev[0] != 1 {
				t.Fatalf("sample 0 says %q severity %v, want %q 1", truth[0], sev[0], tc.kind)
			}
			f := measure(x, c)
			t.Logf("%+v", f)
			tc.check(t, f)
		})
	}
}

// TestVibrationFaultGrows checks the label switches at onset and that what the fault
// raises grows with its severity, stretch by stretch.
func TestVibrationFaultGrows(t *testing.T) {
	const stretch = 4096 // 2 s
	metric := map[string]func(faultFeatures) float64{
		FaultImbalance:    func(f faultFeatures) float64 { return f.x1 },
		FaultMisalignment: func(f faultFeatures) float64 { return f.x2 },
		FaultOuterRace:    func(f faultFeatures) float64 { return f.resonance },
		FaultInnerRace:    func(f faultFeatures) float64 { return f.resonance },
	}
	for _, kind := range FaultKinds[1:] {
		t.Run(kind, func(t *testing.T) {
			c := vibCfg(func(c *VibrationConfig) {
				c.Fault = Fault{Kind: kind, Onset: units.Duration(2 * time.Second), Grow: units.Duration(8 * time.Second)}
			})
			x, truth, sev := samples(t, c, 6*stretch, 0)
			onset := int(2 * c.RateHz)
			if truth[onset-1] != LabelOK || truth[onset] != kind {
				t.Errorf("truth around onset: %q, %q; want %q, %q", truth[onset-1], truth[onset], LabelOK, kind)
			}
			if sev[onset] != 0 || math.Abs(sev[onset+4096]-0.25) > 1e-9 || sev[len(sev)-1] != 1 {
				t.Errorf("severity at onset %v, 2 s later %v, at the end %v; want 0, 0.25, 1", sev[onset], sev[onset+4096], sev[len(sev)-1])
			}
			var got []float64
			for i := 0; i < len(x); i += stretch {
				got = append(got, metric[kind](measure(x[i:i+stretch], c)))
			}
			t.Logf("by 2 s stretch: %.4f", got)
			// Stretch 0 is before onset; 1..4 grow; 5 is at full severity.
			for i := 2; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Errorf("stretch %d: %.4f, not above stretch %d: %.4f", i, got[i], i-1, got[i-1])
				}
			}
			if got[5] < 3*got[0] {
				t.Errorf("full severity %.4f, want at least 3x the healthy stretch %.4f", got[5], got[0])
			}
		})
	}
}

func TestVibrationLoadChanges(t *testing.T) {
	c := vibCfg(func(c *VibrationConfig) {
		c.LoadChangeEvery = units.Duration(time.Second)
		c.Noise = 0
	})
	x, _, _ := samples(t, c, 10*2048, 0)
	// The RMS of each second follows the load: it must vary, within the 0.8..1.2 range.
	var rms []float64
	for i := 0; i < len(x); i += 2048 {
		rms = append(rms, math.Sqrt(meanSq(x[i:i+2048])))
	}
	lo, hi := slices.Min(rms), slices.Max(rms)
	t.Logf("RMS by second: %.4f", rms)
	if hi/lo < 1.05 || hi/lo > 1.6 {
		t.Errorf("RMS varies %.3fx over the load changes, want 1.05..1.6", hi/lo)
	}
}

func TestVibrationNoAllocs(t *testing.T) {
	for _, kind := range FaultKinds {
		g, err := NewVibrationGenerator(vibCfg(func(c *VibrationConfig) { c.Fault.Kind = kind; c.LoadChangeEvery = units.Duration(time.Second) }))
		if err != nil {
			t.Fatal(err)
		}
		dst := make([]float64, 2)
		if a := testing.AllocsPerRun(10000, func() { g.Next(dst) }); a != 0 {
			t.Errorf("%s: %v allocations per sample, want 0", kind, a)
		}
	}
}

func BenchmarkVibration(b *testing.B) {
	for _, kind := range []string{FaultNone, FaultInnerRace} {
		b.Run(kind, func(b *testing.B) {
			c := DefaultVibrationConfig()
			c.Fault.Kind = kind
			g, err := NewVibrationGenerator(*c)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]float64, len(c.Channels))
			b.ReportAllocs()
			for b.Loop() {
				g.Next(dst)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

func TestVibrationConfigValidate(t *testing.T) {
	if err := DefaultVibrationConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tc := range []struct {
		mod  func(*VibrationConfig)
		want string
	}{
		{func(c *VibrationConfig) { c.RateHz = 0 }, "rate_hz: 0 is out of range (0,100000]"},
		{func(c *VibrationConfig) { c.RateHz = math.NaN() }, "rate_hz: NaN is out of range"},
		{func(c *VibrationConfig) { c.Channels = nil }, "channels: 0 names, want 1..16"},
		{func(c *VibrationConfig) { c.Channels = []string{"a", ""} }, "channels[1]: empty name"},
		{func(c *VibrationConfig) { c.Channels = []string{"a", "a"} }, `channels[1]: "a" repeats channels[0]`},
		{func(c *VibrationConfig) { c.ShaftHz = -1 }, "shaft_hz: -1 is out of range (0,500]"},
		{func(c *VibrationConfig) { c.Bearing.Balls = 2 }, "bearing.balls: 2 is out of range 3..64"},
		{func(c *VibrationConfig) { c.Bearing.BallMM = 0 }, "bearing.ball_mm: 0 is out of range (0,1000]"},
		{func(c *VibrationConfig) { c.Bearing.PitchMM = 5 }, "bearing.pitch_mm: 5 is not above bearing.ball_mm 7.94"},
		{func(c *VibrationConfig) { c.Bearing.ContactDeg = 90 }, "bearing.contact_deg: 90 is out of range [0,90)"},
		{func(c *VibrationConfig) { c.Fault.Kind = "rust" }, `fault.kind: "rust" is not one of [none imbalance misalignment outer_race inner_race]`},
		{func(c *VibrationConfig) { c.Fault.Onset = units.Duration(-time.Second) }, "fault.onset: -1s is negative"},
		{func(c *VibrationConfig) { c.Fault.Grow = units.Duration(-time.Second) }, "fault.grow: -1s is negative"},
		{func(c *VibrationConfig) { c.Noise = -0.1 }, "noise: -0.1 is out of range 0..10 g"},
		{func(c *VibrationConfig) { c.LoadChangeEvery = units.Duration(time.Millisecond) }, "load_change_every: 1ms is below 100ms"},
		{func(c *VibrationConfig) { c.ModbusListen = "localhost" }, `modbus_listen: "localhost": address localhost: missing port in address`},
		{func(c *VibrationConfig) { c.ModbusListen = "127.0.0.1:0" }, `modbus_listen: "127.0.0.1:0": port "0" is not in 1..65535`},
	} {
		c := DefaultVibrationConfig()
		tc.mod(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
	// An empty kind is a healthy machine.
	c := DefaultVibrationConfig()
	c.Fault.Kind = ""
	if err := c.Validate(); err != nil {
		t.Errorf("empty fault.kind: %v", err)
	}
}

func TestWriteVibrationCSV(t *testing.T) {
	c := vibCfg(func(c *VibrationConfig) {
		c.Fault = Fault{Kind: FaultOuterRace, Onset: units.Duration(time.Second), Grow: units.Duration(time.Second)}
	})
	var a, b bytes.Buffer
	if err := WriteVibrationCSV(context.Background(), &a, 3*2048, &c); err != nil {
		t.Fatal(err)
	}
	if err := WriteVibrationCSV(context.Background(), &b, 3*2048, &c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the same config wrote different bytes")
	}
	lines := strings.Split(strings.TrimSuffix(a.String(), "\n"), "\n")
	if lines[0] != "t_s,acc_x,acc_y,truth,severity" {
		t.Errorf("header %q", lines[0])
	}
	if len(lines) != 3*2048+1 {
		t.Fatalf("%d lines, want %d", len(lines), 3*2048+1)
	}
	if got := lines[2048]; !strings.HasPrefix(got, "0.999512,") || !strings.HasSuffix(got, ",ok,0.000000") {
		t.Errorf("last line before onset: %q", got)
	}
	if got := lines[2049]; !strings.HasPrefix(got, "1.000000,") || !strings.HasSuffix(got, ",outer_race,0.000000") {
		t.Errorf("first line at onset: %q", got)
	}
	if got := lines[len(lines)-1]; !strings.HasSuffix(got, ",outer_race,1.000000") {
		t.Errorf("last line: %q", got)
	}
}

func newVibDriver(t testing.TB, mod func(*VibrationConfig)) *VibrationDriver {
	t.Helper()
	c := DefaultVibrationConfig()
	if mod != nil {
		mod(c)
	}
	d, err := NewVibration(drivers.Spec{Name: "motor", Budget: time.Second, Log: quiet}, c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestVibrationDriverEmits(t *testing.T) {
	c := vibCfg(func(c *VibrationConfig) {
		c.Fault = Fault{Kind: FaultImbalance, Onset: units.Duration(200 * time.Millisecond), Grow: units.Duration(time.Second)}
	})
	d := newVibDriver(t, func(v *VibrationConfig) { *v = c })
	e := drivertest.NewEmitter()
	defer e.Close()
	stop := drivertest.Start(t, d, e)
	const n = 1024 // 0.5 s
	began := time.Now()
	e.WaitReadings(t, n, 10*time.Second)
	elapsed := time.Since(began)
	stop()
	rs := e.Readings()
	// Real time: about RateHz readings a second (with a tick's slack).
	if rate := float64(len(rs)) / elapsed.Seconds(); rate > 1.5*c.RateHz {
		t.Errorf("%.0f readings/s, want about %v", rate, c.RateHz)
	}
	want, truths, _ := samples(t, c, len(rs), 0)
	start := rs[0].CapturedAt
	sawFault := false
	for i, r := range rs {
		if r.Seq != uint64(i)+1 {
			t.Fatalf("reading %d has seq %d, want %d: no sample may be skipped without pressure", i, r.Seq, i+1)
		}
		if dt := r.CapturedAt.Sub(start); (dt - time.Duration(float64(i)*1e9/c.RateHz)).Abs() > time.Microsecond {
			t.Fatalf("reading %d captured %v after the first, want %v", i, dt, time.Duration(float64(i)*1e9/c.RateHz))
		}
		if r.Scalars["acc_x"] != want[i] || len(r.Scalars) != 2 {
			t.Fatalf("reading %d: scalars %v, want acc_x %v from the generator", i, r.Scalars, want[i])
		}
		if r.Truth != truths[i] {
			t.Fatalf("reading %d: truth %q, want %q", i, r.Truth, truths[i])
		}
		sawFault = sawFault || r.Truth == FaultImbalance
		if r.Deadline != r.CapturedAt.Add(time.Second) {
			t.Fatalf("reading %d: deadline %v, want capture + budget", i, r.Deadline)
		}
	}
	if rs[0].Truth != LabelOK || !sawFault {
		t.Errorf("truth went from %q to fault: %v; want ok, then imbalance after 200ms", rs[0].Truth, sawFault)
	}
	if lim, late := d.Skipped(); lim != 0 {
		t.Errorf("%d samples skipped for a limit never set (%d late)", lim, late)
	}
}

// TestVibrationDriverLimit checks that under a rate limit the driver emits runs of
// consecutive samples, undistorted, with whole stretches skipped between them.
func TestVibrationDriverLimit(t *testing.T) {
	d := newVibDriver(t, nil)
	e := drivertest.NewEmitter()
	defer e.Close()
	e.SetPressure(drivers.Pressure{Accepted: true, Occupancy: 0.9, MaxRateHz: 200})
	stop := drivertest.Start(t, d, e)
	// The first reading learns the limit; then a run of 200 comes each second.
	e.WaitReadings(t, 1+2*200, 10*time.Second)
	stop()
	rs := e.Readings()[1:]
	var runs []int
	for i, r := range rs {
		if i == 0 || r.Seq != rs[i-1].Seq+1 {
			runs = append(runs, 0)
		} else if dt := r.CapturedAt.Sub(rs[i-1].CapturedAt); (dt - time.Second/2048).Abs() > time.Microsecond {
			t.Fatalf("consecutive readings %d apart in time, want one sample period", dt)
		}
		runs[len(runs)-1]++
	}
	t.Logf("runs: %v", runs)
	// The first run is complete from the first whole allowance on.
	for i, n := range runs[:len(runs)-1] {
		if n != 200 {
			t.Errorf("run %d has %d samples, want 200 (one second's allowance)", i, n)
		}
	}
	for i := 1; i < len(runs); i++ {
		// A gap of at least a second of samples less one run lies between runs.
		first := rs[sum(runs[:i])].Seq
		last := rs[sum(runs[:i])-1].Seq
		if gap := first - last - 1; gap < 2048-200-10 {
			t.Errorf("gap before run %d is %d samples, want about %d", i, gap, 2048-200)
		}
	}
	if lim, _ := d.Skipped(); lim == 0 {
		t.Error("no sample counted as skipped for the limit")
	}
}

func sum(x []int) int {
	s := 0
	for _, v := range x {
		s += v
	}
	return s
}

func TestVibrationConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			return drivertest.Build(t, "sim_vibration", drivers.Spec{Name: "motor", Budget: time.Second, Log: quiet}, "")
		},
	})
}

// quiet keeps the drivers' start lines out of the test output.
var quiet = slog.New(slog.DiscardHandler)

// TestVibrationConfigYAML decodes a block with every key strictly, as the config loader
// does, over the defaults: keys left out keep their default.
func TestVibrationConfigYAML(t *testing.T) {
	const block = `
rate_hz: 4096
seed: 7
channels: [de_x, de_y, nde_x]
shaft_hz: 29.5
bearing: {balls: 8, ball_mm: 7.94}
fault: {kind: inner_race, onset: 5m, grow: 1h}
noise: 0.02
load_change_every: 30s
modbus_listen: 127.0.0.1:5020
`
	c := DefaultVibrationConfig()
	dec := yaml.NewDecoder(strings.NewReader(block))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := VibrationConfig{
		RateHz: 4096, Seed: 7, Channels: []string{"de_x", "de_y", "nde_x"}, ShaftHz: 29.5,
		Bearing: Bearing{Balls: 8, BallMM: 7.94, PitchMM: 39.04},
		Fault:   Fault{Kind: FaultInnerRace, Onset: units.Duration(5 * time.Minute), Grow: units.Duration(time.Hour)},
		Noise:   0.02, LoadChangeEvery: units.Duration(30 * time.Second), ModbusListen: "127.0.0.1:5020",
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("decoded %+v, want %+v", *c, want)
	}
	dec = yaml.NewDecoder(strings.NewReader("fault: {kind: none, start: 1m}"))
	dec.KnownFields(true)
	if err := dec.Decode(DefaultVibrationConfig()); err == nil || !strings.Contains(err.Error(), "field start not found") {
		t.Errorf("unknown key fault.start: %v, want it refused", err)
	}
}
