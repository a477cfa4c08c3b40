package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/edgedrun/edged/drivers"
)

// The signal model. Amplitudes are in g, peak. The healthy machine has a small residual
// imbalance (1x), some 2x and a few smaller harmonics; faults add to it, scaled by
// their severity (0 at onset, 1 after Grow) and by the load:
//   - imbalance: a force rotating with the shaft, so 1x on every radial sensor, 90°
//     apart between sensors 90° apart;
//   - misalignment: 2x above all, some 1x and 3x, fixed in direction;
//   - outer race: an impact each time a ball passes the defect in the load zone (BPFO),
//     ringing a structural resonance, plus a small line at BPFO;
//   - inner race: the same at BPFI, but the defect turns with the shaft and is struck
//     hard only while it passes through the load zone, which modulates the impacts at
//     shaft speed (sidebands BPFI ± 1x).
const (
	healthy1x = 0.03
	imbalance = 0.30 // imbalance 1x at full severity: ~0.17 g RMS, ISO 10816 zone D
	misalign2 = 0.20
	misalign1 = 0.06
	misalign3 = 0.04
	outerHit  = 1.2 // peak of one outer-race impact's ringing at full severity
	outerLine = 0.03
	innerHit  = 1.0 // inner-race impacts cross one more interface on their way out
	innerLine = 0.025

	// The resonance the impacts ring: ~3 kHz on a real housing, kept below Nyquist
	// so the sampled signal still shows it (700 Hz at 2048 Hz).
	resonanceHz   = 3000
	resonanceNyq  = 0.34 // at most this share of the sample rate
	resonanceZeta = 0.05
	// Ball slip makes bearing impacts not quite periodic: each interval varies by
	// this share (standard deviation), which smears the high harmonics as on a real
	// bearing but leaves the envelope's line at the defect frequency.
	slipJitter = 0.01

	// A load change is reached over this ramp (or half the interval, if shorter).
	loadRamp = 2 * time.Second
)

// healthyHarmonics are the amplitudes of 2x..5x on the healthy machine.
var healthyHarmonics = [4]float64{0.012, 0.006, 0.004, 0.002}

type faultCode int

// faultNames are the labels by faultCode; FaultKinds is exported, and so not trusted
// to stay in this order.
var faultNames = [...]string{FaultNone, FaultImbalance, FaultMisalignment, FaultOuterRace, FaultInnerRace}

const (
	codeNone faultCode = iota
	codeImbalance
	codeMisalignment
	codeOuter
	codeInner
)

// resonator is a lightly damped two-pole filter: the housing ringing after an impact.
type resonator struct {
	a1, a2, gain float64
	y1, y2       float64
}

func newResonator(hz, rate float64) resonator {
	w := 2 * math.Pi * hz / rate
	r := math.Exp(-resonanceZeta * w)
	// gain makes an impulse of 1 ring with a first peak near 1.
	return resonator{a1: 2 * r * math.Cos(w), a2: -r * r, gain: math.Sin(w)}
}

func (r *resonator) step(u float64) float64 {
	y := r.a1*r.y1 + r.a2*r.y2 + u*r.gain
	r.y2, r.y1 = r.y1, y
	return y
}

// VibrationGenerator makes the samples of a simulated motor: deterministic from the
// seed, with no allocation per sample. It is not safe for concurrent use.
type VibrationGenerator struct {
	rate, dt float64
	k        int64 // index of the next sample
	n        int

	// Separate streams, so that the noise and the load history are the same whatever
	// the fault: a faulty run differs from the healthy one with the same seed only by
	// the fault's own signal.
	noise, load, slip *rand.Rand

	// Per channel: the sensor's direction (cos, sin), how strongly it sees forces fixed
	// in the load direction, and the resonance it rings at.
	ca, sa, fixedGain []float64
	res               []resonator

	noiseRMS float64
	shaftHz  float64
	phase    float64 // shaft angle, radians in [0, 2π)
	// Phases (cos, sin) of the healthy harmonics and of the fault's own components.
	h1, imb              [2]float64
	hx                   [4][2]float64
	mis1, mis2, mis3     [2]float64
	innerZone            float64 // shaft angle at which the inner-race defect is loaded
	defectRatio          float64 // defect frequency / shaft frequency
	defectPhase, nextHit float64 // cycles of the defect frequency since the last impact

	code             faultCode
	onsetK, growK    int64
	loadEvery        int64 // samples between load changes; 0 none
	rampK            int64
	ampF, spdF       float64
	ampFrom, spdFrom float64
	ampTo, spdTo     float64
	rampStart        int64
}

// NewVibrationGenerator validates c and builds its generator.
func NewVibrationGenerator(c VibrationConfig) (*VibrationGenerator, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	n := len(c.Channels)
	seed := uint64(c.Seed)
	g := &VibrationGenerator{
		rate:     c.RateHz,
		dt:       1 / c.RateHz,
		n:        n,
		noise:    rand.New(rand.NewPCG(seed, 0x6e6f697365)),
		load:     rand.New(rand.NewPCG(seed, 0x6c6f6164)),
		slip:     rand.New(rand.NewPCG(seed, 0x736c6970)),
		ca:       make([]float64, n),
		sa:       make([]float64, n),
		shaftHz:  c.ShaftHz,
		noiseRMS: c.Noise,
		ampF:     1, spdF: 1, ampFrom: 1, spdFrom: 1, ampTo: 1, spdTo: 1,
	}
	g.fixedGain = make([]float64, n)
	g.res = make([]resonator, n)
	fr := math.Min(resonanceHz, resonanceNyq*c.RateHz)
	for i := range n {
		a := float64(i) * math.Pi / float64(n)
		g.sa[i], g.ca[i] = math.Sincos(a)
		// The load zone is at 0° (sensor 0): forces fixed in that direction reach a
		// sensor at 90° only through the housing's stiffness, weaker.
		g.fixedGain[i] = 0.4 + 0.6*math.Abs(g.ca[i])
		// Each sensor's mounting rings at its own frequency.
		g.res[i] = newResonator(fr*(1+0.06*float64(i)), c.RateHz)
	}
	// The machine's own phases come from the seed, from a stream of their own.
	m := rand.New(rand.NewPCG(seed, 0x6d616368))
	ph := func() [2]float64 { s, c := math.Sincos(2 * math.Pi * m.Float64()); return [2]float64{c, s} }
	g.h1, g.imb = ph(), ph()
	for i := range g.hx {
		g.hx[i] = ph()
	}
	g.mis1, g.mis2, g.mis3 = ph(), ph(), ph()
	g.innerZone = 2 * math.Pi * m.Float64()

	switch c.Fault.Kind {
	case FaultImbalance:
		g.code = codeImbalance
	case FaultMisalignment:
		g.code = codeMisalignment
	case FaultOuterRace:
		g.code = codeOuter
		g.defectRatio = c.Bearing.BPFO(1)
	case FaultInnerRace:
		g.code = codeInner
		g.defectRatio = c.Bearing.BPFI(1)
	}
	g.nextHit = 1
	g.onsetK = int64(math.Round(c.Fault.Onset.Std().Seconds() * c.RateHz))
	g.growK = int64(math.Round(c.Fault.Grow.Std().Seconds() * c.RateHz))
	if every := c.LoadChangeEvery.Std(); every > 0 {
		g.loadEvery = max(1, int64(math.Round(every.Seconds()*c.RateHz)))
		g.rampK = max(1, int64(math.Round(min(loadRamp, every/2).Seconds()*c.RateHz)))
	}
	return g, nil
}

// Channels is the number of values each sample has.
func (g *VibrationGenerator) Channels() int { return g.n }

// Next fills dst (one value per channel, in g) with the next sample and returns its
// time from the start, the ground truth ("ok" before the fault's onset, then its kind)
// and the fault's severity 0..1.
func (g *VibrationGenerator) Next(dst []float64) (t time.Duration, truth string, severity float64) {
	k := g.k
	g.k++
	t = time.Duration(math.Round(float64(k) * 1e9 / g.rate))

	if g.loadEvery > 0 {
		if k > 0 && k%g.loadEvery == 0 {
			g.ampFrom, g.spdFrom = g.ampF, g.spdF
			g.ampTo = 0.8 + 0.4*g.load.Float64()
			g.spdTo = 0.97 + 0.06*g.load.Float64()
			g.rampStart = k
		}
		if d := k - g.rampStart; g.rampStart > 0 && d <= g.rampK {
			x := float64(d) / float64(g.rampK)
			g.ampF = g.ampFrom + (g.ampTo-g.ampFrom)*x
			g.spdF = g.spdFrom + (g.spdTo-g.spdFrom)*x
		}
	}
	f := g.shaftHz * g.spdF
	g.phase += 2 * math.Pi * f * g.dt
	if g.phase >= 2*math.Pi {
		g.phase -= 2 * math.Pi
	}

	truth = LabelOK
	if g.code != codeNone && k >= g.onsetK {
		truth = faultNames[g.code]
		severity = 1
		if g.growK > 0 {
			severity = min(1, float64(k-g.onsetK)/float64(g.growK))
		}
	}

	// Harmonics of the shaft angle by rotation, one Sincos per sample.
	s1, c1 := math.Sincos(g.phase)
	var hc, hs [6]float64 // cos, sin of h·phase, h = 0..5
	hc[0], hs[0] = 1, 0
	for h := 1; h < 6; h++ {
		hc[h] = hc[h-1]*c1 - hs[h-1]*s1
		hs[h] = hs[h-1]*c1 + hc[h-1]*s1
	}
	// cos(h·phase + θ) from the phase's (cos θ, sin θ).
	at := func(h int, p [2]float64) float64 { return hc[h]*p[0] - hs[h]*p[1] }

	// A rotating force of amplitude A at angle h·phase+θ reads A·cos(h·phase+θ-α) on
	// a sensor at α; it is kept as its (cos, sin) parts: rc·cos α + rs·sin α.
	rc := healthy1x * at(1, g.h1)
	rs := healthy1x * (hs[1]*g.h1[0] + hc[1]*g.h1[1])
	var fixed, hit float64 // a force fixed in the load direction; the impact this sample
	for i, a := range healthyHarmonics {
		fixed += a * at(i+2, g.hx[i])
	}
	switch g.code {
	case codeImbalance:
		rc += severity * imbalance * at(1, g.imb)
		rs += severity * imbalance * (hs[1]*g.imb[0] + hc[1]*g.imb[1])
	case codeMisalignment:
		fixed += severity * (misalign1*at(1, g.mis1) + misalign2*at(2, g.mis2) + misalign3*at(3, g.mis3))
	case codeOuter, codeInner:
		fd := g.defectRatio * f
		g.defectPhase += fd * g.dt
		if g.defectPhase >= g.nextHit {
			g.defectPhase -= g.nextHit
			g.nextHit = 1 + slipJitter*g.slip.NormFloat64()
			hit = 1
		}
		line := math.Sin(2 * math.Pi * g.defectPhase)
		if g.code == codeOuter {
			hit *= severity * outerHit
			fixed += severity * outerLine * line
		} else {
			// cos² of half the angle from the load zone: 1 in it, 0 opposite.
			zone := 0.5 * (1 + math.Cos(g.phase-g.innerZone))
			hit *= severity * innerHit * zone
			fixed += severity * innerLine * zone * line
		}
	}
	amp := g.ampF
	for i := range g.n {
		v := amp * (rc*g.ca[i] + rs*g.sa[i] + fixed*g.fixedGain[i])
		v += amp * g.res[i].step(hit*g.fixedGain[i])
		// The draw happens even at zero noise, so the stream does not depend on the level.
		dst[i] = v + g.noiseRMS*g.noise.NormFloat64()
	}
	return t, truth, severity
}

// vibTick is how often the driver wakes to emit the samples that came due: small
// enough that readings leave within a few ms of their capture time, large enough that
// a 2 kHz source does not wake the scheduler per sample.
const vibTick = 5 * time.Millisecond

// vibMaxLate is how far behind real time a sample may be emitted; older ones, after a
// stall, are generated (the signal goes on) but skipped, and show as a sequence gap.
const vibMaxLate = time.Second

// vibRun is the length of a run of consecutive samples under a rate limit, in seconds
// of the limit's allowance: a limit of L Hz lets L·vibRun samples through in a row,
// then skips until the allowance is back.
const vibRun = 1.0

// VibrationDriver is the simulated motor as a source (type "sim_vibration"): one
// reading per sample, Scalars holding the channels by name, paced to real time.
//
// A sample stream is never slowed down: emitting the samples late or further apart
// would change the signal the model sees. Under a rate limit (Pressure.MaxRateHz
// below the sample rate) the driver instead emits runs of consecutive samples and
// skips whole stretches between them: the skipped samples are generated all the same,
// so the signal goes on in time, and the sequence numbers jump over them, so the
// windowing sees a gap and restarts rather than putting two runs into one window.
// Samples more than a second late after a stall are skipped the same way.
type VibrationDriver struct {
	spec drivers.Spec
	cfg  VibrationConfig

	skippedLimit, skippedLate atomic.Uint64
}

var _ drivers.Driver = (*VibrationDriver)(nil)

// NewVibration builds a vibration simulator for a source; it starts nothing.
func NewVibration(spec drivers.Spec, cfg *VibrationConfig) (*VibrationDriver, error) {
	if spec.Name == "" {
		return nil, errors.New("sim_vibration: source name is empty")
	}
	if cfg == nil {
		return nil, fmt.Errorf("sim_vibration: source %q: nil config", spec.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim_vibration: source %q: %w", spec.Name, err)
	}
	d := &VibrationDriver{spec: spec, cfg: *cfg}
	d.cfg.Channels = append([]string(nil), cfg.Channels...)
	return d, nil
}

// Skipped returns how many samples were generated but not emitted, because of the
// pipeline's rate limit and because they were too late.
func (d *VibrationDriver) Skipped() (limit, late uint64) {
	return d.skippedLimit.Load(), d.skippedLate.Load()
}

// limiter lets runs of consecutive samples through at a rate limit, from an allowance
// that fills with the samples' own time (so a stall does not earn a burst).
type limiter struct {
	limit    float64 // Hz; 0 none
	run      int     // samples per run
	left     int     // samples left in the current run
	tokens   float64
	lastT    time.Duration
	rateHz   float64
	limiting bool
}

// set takes the pipeline's latest limit.
func (l *limiter) set(maxRateHz float64, t time.Duration) {
	on := maxRateHz > 0 && maxRateHz < l.rateHz
	if !on {
		l.limiting, l.limit = false, 0
		return
	}
	if !l.limiting {
		// A fresh limit starts with no allowance: the samples just emitted spent it.
		l.limiting, l.tokens, l.left, l.lastT = true, 0, 0, t
	}
	l.limit = maxRateHz
	l.run = max(1, int(maxRateHz*vibRun))
}

// pass says whether the sample at t goes out.
func (l *limiter) pass(t time.Duration) bool {
	if !l.limiting {
		return true
	}
	l.tokens = min(l.tokens+(t-l.lastT).Seconds()*l.limit, float64(l.run))
	l.lastT = t
	if l.left > 0 {
		l.left--
		return true
	}
	if l.tokens >= float64(l.run) {
		l.tokens -= float64(l.run)
		l.left = l.run - 1
		return true
	}
	return false
}

// Run emits the samples as they come due until ctx ends, then returns nil. Each Run
// starts the signal from the seed again, with the fault's onset counted from then.
func (d *VibrationDriver) Run(ctx context.Context, e drivers.Emitter) error {
	g, err := NewVibrationGenerator(d.cfg)
	if err != nil {
		return fmt.Errorf("sim_vibration: source %q: %w", d.spec.Name, err)
	}
	base := d.spec.Log
	if base == nil {
		base = slog.Default()
	}
	log := base.With("source", d.spec.Name, "driver", "sim_vibration")
	n, rate := len(d.cfg.Channels), d.cfg.RateHz

	// Samples are generated a tick ahead when served over Modbus, so a poll finds
	// the sample of its moment, not the one of the last tick.
	start := time.Now()
	var lead int64
	var srv *vibServer
	if d.cfg.ModbusListen != "" {
		lead = int64(math.Ceil(rate*vibTick.Seconds())) + 1
		srv = newVibServer(d.cfg.ModbusListen, n, rate, lead, start, log)
		defer srv.stop()
	}
	size := 2*lead + 2
	vals := make([]float64, size*int64(n))
	times := make([]time.Duration, size)
	truths := make([]string, size)

	e.Health(true, nil)
	log.Info("simulated motor started", "rate_hz", rate, "seed", d.cfg.Seed, "shaft_hz", d.cfg.ShaftHz,
		"fault", d.cfg.Fault.Kind, "onset", d.cfg.Fault.Onset, "grow", d.cfg.Fault.Grow, "modbus_listen", d.cfg.ModbusListen)

	lim := limiter{rateHz: rate}
	var gen, sent int64 // samples generated; samples emitted or skipped
	emit := func(k int64) {
		i := k % size
		t := times[i]
		if time.Since(start)-t > vibMaxLate {
			d.skippedLate.Add(1)
			lim.pass(t) // the allowance follows the signal's time either way
			return
		}
		if !lim.pass(t) {
			d.skippedLimit.Add(1)
			return
		}
		r := drivers.AcquireReading()
		if r.Scalars == nil {
			r.Scalars = make(map[string]float64, n)
		}
		for c, name := range d.cfg.Channels {
			r.Scalars[name] = vals[i*int64(n)+int64(c)]
		}
		r.Source, r.Seq, r.CapturedAt, r.Truth = d.spec.Name, uint64(k)+1, start.Add(t), truths[i]
		if d.spec.Budget > 0 {
			r.Deadline = r.CapturedAt.Add(d.spec.Budget)
		}
		// The pipeline owns the reading now and releases it.
		p := e.Emit(ctx, r)
		was := lim.limiting
		lim.set(p.MaxRateHz, t)
		if lim.limiting != was {
			log.Debug("simulated motor rate limit changed", "max_rate_hz", p.MaxRateHz, "run", lim.run, "occupancy", p.Occupancy)
		}
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if srv != nil {
			srv.tryStart()
		}
		// Samples with t <= elapsed are due.
		due := int64(time.Since(start).Seconds()*rate) + 1
		for gen < due+lead {
			if gen-sent >= size {
				// Only after a stall: make room by sending the oldest, which is due.
				emit(sent)
				sent++
				if ctx.Err() != nil {
					return nil
				}
			}
			i := gen % size
			times[i], truths[i], _ = g.Next(vals[i*int64(n) : (i+1)*int64(n)])
			if srv != nil {
				srv.put(gen, vals[i*int64(n):(i+1)*int64(n)])
			}
			gen++
		}
		for ; sent < due; sent++ {
			emit(sent)
			if ctx.Err() != nil {
				return nil
			}
		}
		timer.Reset(vibTick)
	}
}

// WriteVibrationCSV writes the first n samples of cfg's signal as CSV: a header
// "t_s,<channels...>,truth,severity", then one line per sample. The same config gives
// the same bytes.
func WriteVibrationCSV(ctx context.Context, w io.Writer, n int64, cfg *VibrationConfig) error {
	if n <= 0 {
		return fmt.Errorf("vibration csv: n %d is not positive", n)
	}
	g, err := NewVibrationGenerator(*cfg)
	if err != nil {
		return fmt.Errorf("vibration csv: %w", err)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	line := []byte("t_s")
	for _, ch := range cfg.Channels {
		line = append(line, ',')
		line = append(line, ch...)
	}
	line = append(line, ",truth,severity\n"...)
	if _, err := bw.Write(line); err != nil {
		return fmt.Errorf("vibration csv: %w", err)
	}
	vals := make([]float64, len(cfg.Channels))
	for k := range n {
		if k%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("vibration csv: stopped after %d of %d samples: %w", k, n, err)
			}
		}
		t, truth, sev := g.Next(vals)
		line = strconv.AppendFloat(line[:0], t.Seconds(), 'f', 6, 64)
		for _, v := range vals {
			line = append(line, ',')
			line = strconv.AppendFloat(line, v, 'f', 6, 64)
		}
		line = append(line, ',')
		line = append(line, truth...)
		line = append(line, ',')
		line = strconv.AppendFloat(line, sev, 'f', 6, 64)
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("vibration csv: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("vibration csv: %w", err)
	}
	return nil
}
