package modbus

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

func validConfig() *Config {
	c := DefaultConfig()
	c.Address = "10.0.0.5:502"
	c.Registers = []Register{
		{Name: "speed", Address: 100, Function: Holding, Type: Float32},
		{Name: "count", Address: 0, Function: Input},
		{Name: "gate", Address: 17, Function: Coil},
	}
	return c
}

func TestValidate(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name  string
		edit  func(c *Config)
		wants []string // substrings of the error; none means valid
	}{
		{"valid", func(c *Config) {}, nil},
		{"overlapping registers of different types are fine", func(c *Config) {
			c.Registers = append(c.Registers, Register{Name: "speed_raw", Address: 100, Type: Uint32})
		}, nil},
		{"bool type on a coil is fine", func(c *Config) { c.Registers[2].Type = Bool }, nil},
		{"address missing", func(c *Config) { c.Address = "" }, []string{"address: missing"}},
		{"address without port", func(c *Config) { c.Address = "plc1" }, []string{`address: "plc1" is not host:port`}},
		{"address bad port", func(c *Config) { c.Address = "plc1:99999" }, []string{`address: port "99999" in "plc1:99999" is not 1..65535`}},
		{"unit id too high", func(c *Config) { c.UnitID = 248 }, []string{"unit_id: 248 is out of range 0..247"}},
		{"unit id negative", func(c *Config) { c.UnitID = -1 }, []string{"unit_id: -1 is out of range 0..247"}},
		{"poll interval zero", func(c *Config) { c.PollInterval = 0 }, []string{"poll_interval: 0s is out of range"}},
		{"timeout negative", func(c *Config) { c.Timeout = config.Duration(-time.Second) }, []string{"timeout: -1s is out of range"}},
		{"max gap negative", func(c *Config) { c.MaxGap = -1 }, []string{"max_gap: -1 is out of range 0..2000"}},
		{"byte order", func(c *Config) { c.ByteOrder = "middle" }, []string{`byte_order: "middle" is not big or little`}},
		{"word order", func(c *Config) { c.WordOrder = "" }, []string{`word_order: "" is not big or little`}},
		{"backoff max below min", func(c *Config) { c.BackoffMax = config.Duration(time.Millisecond) }, []string{"backoff_max: 1ms is out of range [backoff_min 100ms"}},
		{"backoff min zero", func(c *Config) { c.BackoffMin = 0 }, []string{"backoff_min: 0s is out of range"}},
		{"no registers", func(c *Config) { c.Registers = nil }, []string{"registers: empty"}},
		{"address out of range", func(c *Config) { c.Registers[0].Address = 70000 }, []string{"registers[0].address: 70000 is out of range 0..65535"}},
		{"address negative", func(c *Config) { c.Registers[1].Address = -3 }, []string{"registers[1].address: -3 is out of range 0..65535"}},
		{"wide value past the top", func(c *Config) { c.Registers[0].Address = 65535 }, []string{"registers[0].address: 65535 leaves no room for the 2 registers of a float32"}},
		{"name missing", func(c *Config) { c.Registers[1].Name = "" }, []string{"registers[1].name: missing"}},
		{"name repeated", func(c *Config) { c.Registers[2].Name = "speed" }, []string{`registers[2].name: "speed" is already the name of registers[0]`}},
		{"function unknown", func(c *Config) { c.Registers[0].Function = "analog" }, []string{`registers[0].function: "analog" is not holding, input, coil or discrete`}},
		{"type unknown", func(c *Config) { c.Registers[0].Type = "int8" }, []string{`registers[0].type: "int8" is not int16, uint16, int32, uint32, float32 or float64`}},
		{"type on a coil", func(c *Config) { c.Registers[2].Type = Float32 }, []string{`registers[2].type: "float32" is not bool; a coil is one bit`}},
		{"bool on a register", func(c *Config) { c.Registers[0].Type = Bool }, []string{`registers[0].type: "bool" is not int16`}},
		{"scale NaN", func(c *Config) { c.Registers[0].Scale = &nan }, []string{"registers[0].scale: NaN is not a finite number"}},
		{"offset Inf", func(c *Config) { c.Registers[1].Offset = math.Inf(1) }, []string{"registers[1].offset: +Inf is not a finite number"}},
		{"register byte order", func(c *Config) { c.Registers[0].ByteOrder = "BIG" }, []string{`registers[0].byte_order: "BIG" is not big or little`}},
		{"several faults at once", func(c *Config) {
			c.UnitID = 300
			c.Registers[0].Address = 70000
			c.Registers[1].Function = "x"
		}, []string{"unit_id: 300", "registers[0].address: 70000", `registers[1].function: "x"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.edit(c)
			err := c.Validate()
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.wants)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// TestConfigYAML decodes a block as a user writes it, strictly, over the defaults.
func TestConfigYAML(t *testing.T) {
	const block = `
address: plc1.line3:502
unit_id: 3
poll_interval: 50ms
byte_order: big
word_order: little
registers:
  - {name: temp, address: 100, type: float32, scale: 0.1, offset: -40}
  - {name: count, address: 7, function: input, type: uint32, word_order: big}
  - {name: gate, address: 17, function: coil}
`
	f, err := drivers.Lookup("modbus")
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.NewConfig()
	dec := yaml.NewDecoder(strings.NewReader(block))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.(*Config)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Timeout.Std() != time.Second || c.MaxGap != 8 || c.BackoffMax.Std() != 10*time.Second || c.UnitID != 3 {
		t.Errorf("defaults not kept: %+v", c)
	}
	if c.Registers[0].scale() != 0.1 || c.Registers[1].scale() != 1 || c.Registers[0].Offset != -40 {
		t.Errorf("scale/offset: %+v", c.Registers)
	}
	ps := compile(c.Registers, c.ByteOrder, c.WordOrder)
	if ps[0].wordOrder != Little || ps[1].wordOrder != Big || ps[2].typ != Bool {
		t.Errorf("compiled points: %+v", ps)
	}
	if _, err := f.New(drivers.Spec{Name: "line3"}, c); err != nil {
		t.Fatal(err)
	}
	if _, err := f.New(drivers.Spec{Name: "line3"}, struct{}{}); err == nil {
		t.Fatal("New took a foreign config")
	}
	bad := DefaultConfig()
	if _, err := New(drivers.Spec{Name: "line3"}, bad); err == nil || !strings.Contains(err.Error(), `source "line3": address: missing`) {
		t.Fatalf("New with a bad config = %v", err)
	}
}

// TestConfigFile loads a whole config file with a modbus source, as `edged validate`
// does: faults carry the full path, unknown keys in a register are refused.
func TestConfigFile(t *testing.T) {
	const file = `
sources:
  - name: press
    type: modbus
    modbus:
      address: 10.0.0.5:502
      registers:
        - {name: temp, address: %s, type: float32, %s: 0.1}
inspections:
  - name: el-defect
    source: press
    model: el-defect
`
	for _, c := range []struct {
		addr, key, want string
	}{
		{"100", "scale", ""},
		{"70000", "scale", "sources[0].modbus.registers[0].address: 70000 is out of range 0..65535"},
		{"100", "scal", `sources[0].modbus.registers[0]: unknown key "scal"`},
	} {
		_, err := config.Parse([]byte(fmt.Sprintf(file, c.addr, c.key)))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("address %s, key %s: %v", c.addr, c.key, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("address %s, key %s: %v, want %q", c.addr, c.key, err, c.want)
		}
	}
}
