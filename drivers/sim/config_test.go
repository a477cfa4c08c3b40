package sim

import (
	"math"
	"strings"
	"testing"
)

func TestConfigValidateNamesFieldAndValue(t *testing.T) {
	for _, tc := range []struct {
		edit func(c *Config)
		want string
	}{
		{func(c *Config) { c.RateHz = math.NaN() }, "rate_hz: NaN"},
		{func(c *Config) { c.RateHz = 0 }, "rate_hz: 0"},
		{func(c *Config) { c.DefectRate = math.NaN() }, "defect_rate: NaN"},
		{func(c *Config) { c.DefectRate = 1.5 }, "defect_rate: 1.5"},
		{func(c *Config) { c.Width = 8 }, "width: 8"},
		{func(c *Config) { c.Defects = []string{"scratch"} }, `defects[0]: "scratch"`},
		{func(c *Config) { c.Defects = nil }, "defects: empty"},
	} {
		c := DefaultConfig()
		tc.edit(c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}
