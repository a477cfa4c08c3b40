package window

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func validConfig() Config {
	return Config{
		Channels: []string{"acc_x", "acc_y"},
		Length:   2048,
		Hop:      512,
		RateHz:   2048,
		MaxGap:   4,
		Features: []string{"rms", "kurtosis", "band"},
		Bands:    [][2]float64{{0, 50}, {50, 200}, {200, 500}},
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   string // "" for valid; else a substring of the error
	}{
		{"valid", func(*Config) {}, ""},
		{"raw only", func(c *Config) { c.Features, c.Bands = nil, nil }, ""},
		{"no overlap", func(c *Config) { c.Hop = c.Length }, ""},
		{"smallest", func(c *Config) { c.Length, c.Hop, c.MaxGap, c.Bands = 16, 1, 0, [][2]float64{{0, 1024}} }, ""},
		{"largest", func(c *Config) { c.Length = 65536 }, ""},
		{"top band beyond nyquist", func(c *Config) { c.Bands = [][2]float64{{500, 1e6}} }, ""},
		{"fractional band", func(c *Config) { c.Bands = [][2]float64{{12.5, 25}} }, ""},
		{"max gap just below length", func(c *Config) { c.MaxGap = c.Length - 1 }, ""},

		{"no channels", func(c *Config) { c.Channels = nil }, "channels: empty"},
		{"empty channel", func(c *Config) { c.Channels = []string{"a", ""} }, "channels[1]: empty name"},
		{"duplicate channel", func(c *Config) { c.Channels = []string{"a", "a"} }, `channels[1]: "a" is listed twice`},
		{"length not power of two", func(c *Config) { c.Length = 100 }, "length: 100 is not a power of two in 16..65536"},
		{"length too small", func(c *Config) { c.Length, c.Hop = 8, 8 }, "length: 8 is not a power of two in 16..65536"},
		{"length too large", func(c *Config) { c.Length = 131072 }, "length: 131072 is not a power of two in 16..65536"},
		{"length zero", func(c *Config) { c.Length = 0 }, "length: 0 is not a power of two"},
		{"hop zero", func(c *Config) { c.Hop = 0 }, "hop: 0 is out of range 1..length (2048)"},
		{"hop above length", func(c *Config) { c.Hop = 2049 }, "hop: 2049 is out of range 1..length (2048)"},
		{"rate zero", func(c *Config) { c.RateHz = 0 }, "rate_hz: 0 is not a positive number"},
		{"rate negative", func(c *Config) { c.RateHz = -5 }, "rate_hz: -5 is not a positive number"},
		{"max gap negative", func(c *Config) { c.MaxGap = -1 }, "max_gap: -1 is out of range 0..length-1 (2047)"},
		{"max gap a window", func(c *Config) { c.MaxGap = 2048 }, "max_gap: 2048 is out of range 0..length-1 (2047)"},
		{"unknown feature", func(c *Config) { c.Features = []string{"rms", "energy"} }, `features[1]: "energy" is not one of mean, std, rms, peak, crest, kurtosis, skewness, band`},
		{"duplicate feature", func(c *Config) { c.Features = []string{"rms", "band", "rms"} }, `features[2]: "rms" is listed twice`},
		{"band without bands", func(c *Config) { c.Bands = nil }, `bands: empty while features holds "band"`},
		{"bands without band", func(c *Config) { c.Features = []string{"rms"} }, `bands: 3 bands set but features lacks "band"`},
		{"band reversed", func(c *Config) { c.Bands = [][2]float64{{200, 50}} }, "bands[0]: [200, 50) needs 0 <= lo < hi"},
		{"band empty", func(c *Config) { c.Bands = [][2]float64{{50, 50}} }, "bands[0]: [50, 50) needs 0 <= lo < hi"},
		{"band negative", func(c *Config) { c.Bands = [][2]float64{{-10, 50}} }, "bands[0]: [-10, 50) needs 0 <= lo < hi"},
		{"band duplicate", func(c *Config) { c.Bands = [][2]float64{{0, 50}, {0, 50}} }, "bands[1]: [0, 50) is listed twice"},
		{"band between bins", func(c *Config) { c.Bands = [][2]float64{{10.2, 10.7}} }, "bands[0]: [10.2, 10.7) holds no spectrum bin (bins every 1 Hz up to 1024 Hz)"},
		{"band above nyquist", func(c *Config) { c.Bands = [][2]float64{{1100, 1200}} }, "bands[0]: [1100, 1200) holds no spectrum bin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate() = %q, want it to contain %q", err, tc.want)
			}
			if _, nerr := New(c); (nerr == nil) != (err == nil) {
				t.Fatalf("New() error %v disagrees with Validate() error %v", nerr, err)
			}
		})
	}
}

func TestValidateReportsEveryFault(t *testing.T) {
	err := Config{Length: 100, RateHz: -1, Features: []string{"x"}}.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, want := range []string{"channels:", "length:", "hop:", "rate_hz:", "features[0]:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, lacks %q", err, want)
		}
	}
}

func TestFeatureNames(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		want []string
	}{
		{"raw only", Config{Channels: []string{"a"}}, nil},
		{
			"order of features and bands, channel by channel",
			Config{
				Channels: []string{"acc_x", "acc_y"},
				Features: []string{"rms", "band", "kurtosis"},
				Bands:    [][2]float64{{0, 50}, {12.5, 25}, {200, 1000.25}},
			},
			[]string{
				"acc_x.rms", "acc_x.band_0_50", "acc_x.band_12p5_25", "acc_x.band_200_1000p25", "acc_x.kurtosis",
				"acc_y.rms", "acc_y.band_0_50", "acc_y.band_12p5_25", "acc_y.band_200_1000p25", "acc_y.kurtosis",
			},
		},
		{
			"every statistic",
			Config{Channels: []string{"t"}, Features: []string{"mean", "std", "rms", "peak", "crest", "kurtosis", "skewness"}},
			[]string{"t.mean", "t.std", "t.rms", "t.peak", "t.crest", "t.kurtosis", "t.skewness"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := FeatureNames(tc.c); !slices.Equal(got, tc.want) {
				t.Fatalf("FeatureNames() = %q, want %q", got, tc.want)
			}
		})
	}
}

// The YAML keys are the names Validate's errors use, and a config block decodes strictly.
func TestYAMLKeys(t *testing.T) {
	const doc = `
channels: [acc_x, acc_y]
length: 2048
hop: 512
rate_hz: 2048
max_gap: 4
features: [rms, kurtosis, band]
bands: [[0, 50], [50, 200], [200, 500]]
`
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := validConfig()
	if !slices.Equal(c.Channels, want.Channels) || c.Length != want.Length || c.Hop != want.Hop ||
		c.RateHz != want.RateHz || c.MaxGap != want.MaxGap || !slices.Equal(c.Features, want.Features) ||
		!slices.Equal(c.Bands, want.Bands) {
		t.Fatalf("decoded %+v, want %+v", c, want)
	}
}
