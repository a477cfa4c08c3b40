// Package sim provides the line simulators, deterministic from a seed and with ground
// truth attached: a driver that renders solar-cell electroluminescence (EL) images with
// a known share of defects (type sim), a driver that gives the vibration of a motor on
// rolling bearings whose fault appears and grows (type sim_vibration, optionally served
// over Modbus TCP), and the data-set writers behind `edged sim dump`.
package sim

import (
	"errors"
	"fmt"

	"github.com/edgedrun/edged/drivers"
)

// Labels a simulated cell can have; LabelOK is a good cell.
const (
	LabelOK           = "ok"
	LabelCrack        = "crack"
	LabelDarkSpot     = "dark_spot"
	LabelBrokenFinger = "broken_finger"
)

// DefectLabels are the defects the simulator renders.
var DefectLabels = []string{LabelCrack, LabelDarkSpot, LabelBrokenFinger}

// Config is the `sim:` block of a source.
type Config struct {
	// RateHz is the nominal image rate; backpressure lowers it for a while.
	RateHz float64 `yaml:"rate_hz"`
	// Seed makes the image sequence reproducible.
	Seed int64 `yaml:"seed"`
	// DefectRate is the share of cells with a defect, 0..1.
	DefectRate float64 `yaml:"defect_rate"`
	// Width and Height of the rendered image in pixels.
	Width  int `yaml:"width"`
	Height int `yaml:"height"`
	// Defects lists the defect kinds drawn, each equally likely.
	Defects []string `yaml:"defects"`
	// Cache, when above 0, renders that many images once and cycles through them, so
	// the simulator can drive a pipeline far past what rendering keeps up with: load
	// and overload tests. 0 renders every image.
	Cache int `yaml:"cache"`
}

// Limits of the simulator's settings.
const (
	maxRateHz = 100000
	maxCache  = 4096
)

// DefaultConfig is a 20 images/s line with 10% defective cells.
func DefaultConfig() *Config {
	return &Config{
		RateHz:     20,
		Seed:       1,
		DefectRate: 0.10,
		Width:      128,
		Height:     128,
		Defects:    append([]string(nil), DefectLabels...),
	}
}

// Validate names each bad field and its value.
func (c *Config) Validate() error {
	var errs []error
	// Written as !(in range) so that NaN, which compares false, is refused too.
	if !(c.RateHz > 0 && c.RateHz <= maxRateHz) {
		errs = append(errs, fmt.Errorf("rate_hz: %v is out of range (0,%d]", c.RateHz, maxRateHz))
	}
	if c.Cache < 0 || c.Cache > maxCache {
		errs = append(errs, fmt.Errorf("cache: %d is out of range 0..%d", c.Cache, maxCache))
	}
	if !(c.DefectRate >= 0 && c.DefectRate <= 1) {
		errs = append(errs, fmt.Errorf("defect_rate: %v is out of range 0..1", c.DefectRate))
	}
	if c.Width < 32 || c.Width > 4096 {
		errs = append(errs, fmt.Errorf("width: %d is out of range 32..4096", c.Width))
	}
	if c.Height < 32 || c.Height > 4096 {
		errs = append(errs, fmt.Errorf("height: %d is out of range 32..4096", c.Height))
	}
	if len(c.Defects) == 0 && c.DefectRate > 0 {
		errs = append(errs, errors.New("defects: empty while defect_rate is above 0"))
	}
	for i, d := range c.Defects {
		known := false
		for _, l := range DefectLabels {
			known = known || d == l
		}
		if !known {
			errs = append(errs, fmt.Errorf("defects[%d]: %q is not one of %v", i, d, DefectLabels))
		}
	}
	return errors.Join(errs...)
}

func init() {
	drivers.Register("sim", drivers.Factory{
		NewConfig: func() any { return DefaultConfig() },
		New: func(spec drivers.Spec, cfg any) (drivers.Driver, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("sim: config is %T, not *sim.Config", cfg)
			}
			return New(spec, c)
		},
	})
}
