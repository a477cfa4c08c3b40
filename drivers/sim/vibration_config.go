package sim

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/edgedrun/edged/config/units"
	"github.com/edgedrun/edged/drivers"
)

// Fault kinds the vibration simulator grows; FaultNone is a healthy machine.
const (
	FaultNone         = "none"
	FaultImbalance    = "imbalance"
	FaultMisalignment = "misalignment"
	FaultOuterRace    = "outer_race"
	FaultInnerRace    = "inner_race"
)

// FaultKinds lists the values fault.kind takes.
var FaultKinds = []string{FaultNone, FaultImbalance, FaultMisalignment, FaultOuterRace, FaultInnerRace}

// VibrationConfig is the `sim_vibration:` block of a source: a motor on rolling
// bearings watched by radial accelerometers.
type VibrationConfig struct {
	// RateHz is the sample rate of every channel.
	RateHz float64 `yaml:"rate_hz"`
	// Seed makes the signal reproducible: the same config gives the same samples.
	Seed int64 `yaml:"seed"`
	// Channels names the accelerometers (acceleration in g), spread evenly over half a
	// turn around the shaft: two are at 0° (vertical, the load zone) and 90°.
	Channels []string `yaml:"channels"`
	// ShaftHz is the nominal shaft speed.
	ShaftHz float64 `yaml:"shaft_hz"`
	// Bearing is the geometry that sets the defect frequencies.
	Bearing Bearing `yaml:"bearing"`
	// Fault is the defect that appears and grows.
	Fault Fault `yaml:"fault"`
	// Noise is the RMS of the white noise on each channel, in g.
	Noise float64 `yaml:"noise"`
	// LoadChangeEvery is how often the load changes (amplitude x0.8..1.2, speed
	// x0.97..1.03, reached over a ramp); 0 keeps the load constant.
	LoadChangeEvery units.Duration `yaml:"load_change_every"`
	// ModbusListen, when set (host:port), also serves the sample of the moment over
	// Modbus TCP: holding registers 0.. are the channels in mg (int16), register 100
	// counts samples (uint16, wraps).
	ModbusListen string `yaml:"modbus_listen"`
}

// Bearing is a rolling-element bearing's geometry.
type Bearing struct {
	Balls      int     `yaml:"balls"`
	BallMM     float64 `yaml:"ball_mm"`
	PitchMM    float64 `yaml:"pitch_mm"`
	ContactDeg float64 `yaml:"contact_deg"`
}

// Fault is a defect that begins at Onset and grows linearly to full severity over Grow.
type Fault struct {
	// Kind is one of FaultKinds; empty means none.
	Kind string `yaml:"kind"`
	// Onset is the time from the start of the run until the fault begins.
	Onset units.Duration `yaml:"onset"`
	// Grow is the time from onset to full severity; 0 is full severity at once.
	Grow units.Duration `yaml:"grow"`
}

// BPFO is the ball pass frequency of the outer race in Hz: how often a ball rolls
// over one point of the stationary outer ring.
func (b Bearing) BPFO(shaftHz float64) float64 {
	return float64(b.Balls) / 2 * shaftHz * (1 - b.BallMM/b.PitchMM*math.Cos(b.ContactDeg*math.Pi/180))
}

// BPFI is the ball pass frequency of the inner race in Hz: how often a ball rolls over
// one point of the rotating inner ring.
func (b Bearing) BPFI(shaftHz float64) float64 {
	return float64(b.Balls) / 2 * shaftHz * (1 + b.BallMM/b.PitchMM*math.Cos(b.ContactDeg*math.Pi/180))
}

// Bearing6205 is a 6205 deep-groove ball bearing, common on small motors.
var Bearing6205 = Bearing{Balls: 9, BallMM: 7.94, PitchMM: 39.04, ContactDeg: 0}

// DefaultVibrationConfig is a healthy 1470 rpm motor on 6205 bearings, sampled at
// 2048 Hz on two radial accelerometers.
func DefaultVibrationConfig() *VibrationConfig {
	return &VibrationConfig{
		RateHz:          2048,
		Seed:            1,
		Channels:        []string{"acc_x", "acc_y"},
		ShaftHz:         24.5,
		Bearing:         Bearing6205,
		Fault:           Fault{Kind: FaultNone, Grow: units.Duration(10 * time.Minute)},
		Noise:           0.05,
		LoadChangeEvery: units.Duration(20 * time.Second),
	}
}

// Limits of the vibration simulator's settings.
const (
	maxVibRateHz   = 100000
	maxVibChannels = 16 // register 100 is the counter, so channels must stay below it
	maxShaftHz     = 500
	minLoadChange  = 100 * time.Millisecond
)

// Validate names each bad field and its value.
func (c *VibrationConfig) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	// Written as !(in range) so that NaN, which compares false, is refused too.
	if !(c.RateHz > 0 && c.RateHz <= maxVibRateHz) {
		bad("rate_hz: %v is out of range (0,%d]", c.RateHz, maxVibRateHz)
	}
	if len(c.Channels) == 0 || len(c.Channels) > maxVibChannels {
		bad("channels: %d names, want 1..%d", len(c.Channels), maxVibChannels)
	}
	for i, ch := range c.Channels {
		if ch == "" {
			bad("channels[%d]: empty name", i)
		} else if j := slices.Index(c.Channels, ch); j < i {
			bad("channels[%d]: %q repeats channels[%d]", i, ch, j)
		}
	}
	if !(c.ShaftHz > 0 && c.ShaftHz <= maxShaftHz) {
		bad("shaft_hz: %v is out of range (0,%d]", c.ShaftHz, maxShaftHz)
	}
	b := c.Bearing
	if b.Balls < 3 || b.Balls > 64 {
		bad("bearing.balls: %d is out of range 3..64", b.Balls)
	}
	if !(b.BallMM > 0 && b.BallMM <= 1000) {
		bad("bearing.ball_mm: %v is out of range (0,1000]", b.BallMM)
	}
	if !(b.PitchMM > b.BallMM && b.PitchMM <= 10000) {
		bad("bearing.pitch_mm: %v is not above bearing.ball_mm %v (and at most 10000)", b.PitchMM, b.BallMM)
	}
	if !(b.ContactDeg >= 0 && b.ContactDeg < 90) {
		bad("bearing.contact_deg: %v is out of range [0,90)", b.ContactDeg)
	}
	if c.Fault.Kind != "" && !slices.Contains(FaultKinds, c.Fault.Kind) {
		bad("fault.kind: %q is not one of %v", c.Fault.Kind, FaultKinds)
	}
	if c.Fault.Onset < 0 {
		bad("fault.onset: %v is negative", c.Fault.Onset)
	}
	if c.Fault.Grow < 0 {
		bad("fault.grow: %v is negative", c.Fault.Grow)
	}
	if !(c.Noise >= 0 && c.Noise <= 10) {
		bad("noise: %v is out of range 0..10 g", c.Noise)
	}
	if e := c.LoadChangeEvery.Std(); e != 0 && e < minLoadChange {
		bad("load_change_every: %v is below %v (0 turns load changes off)", e, minLoadChange)
	}
	if c.ModbusListen != "" {
		if err := checkListen(c.ModbusListen); err != nil {
			bad("modbus_listen: %q: %w", c.ModbusListen, err)
		}
	}
	return errors.Join(errs...)
}

// checkListen wants host:port with a port the clients can be told: port 0 would pick
// one nobody learns, since the Modbus server does not report it.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not in 1..65535", port)
	}
	return nil
}

func init() {
	drivers.Register("sim_vibration", drivers.Factory{
		NewConfig: func() any { return DefaultVibrationConfig() },
		New: func(spec drivers.Spec, cfg any) (drivers.Driver, error) {
			c, ok := cfg.(*VibrationConfig)
			if !ok {
				return nil, fmt.Errorf("sim_vibration: config is %T, not *sim.VibrationConfig", cfg)
			}
			return NewVibration(spec, c)
		},
	})
}
