// Package modbus provides the Modbus TCP client driver: it polls a PLC's coils, discrete
// inputs, holding and input registers in as few requests as the register map allows,
// emits one reading of named, scaled values per poll, and writes coils and holding
// registers (the reject gate) on the same connection.
package modbus

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// Function is the Modbus table a register lives in.
type Function string

// The four Modbus tables.
const (
	Holding  Function = "holding"
	Input    Function = "input"
	Coil     Function = "coil"
	Discrete Function = "discrete"
)

// bits reports whether the table holds single bits rather than 16-bit words.
func (f Function) bits() bool { return f == Coil || f == Discrete }

// Type is how a register's words are read as a number.
type Type string

// Value types; Bool is the only one for coils and discrete inputs.
const (
	Int16   Type = "int16"
	Uint16  Type = "uint16"
	Int32   Type = "int32"
	Uint32  Type = "uint32"
	Float32 Type = "float32"
	Float64 Type = "float64"
	Bool    Type = "bool"
)

// words is how many 16-bit registers a value of the type takes; 0 for an unknown type.
func (t Type) words() int {
	switch t {
	case Int16, Uint16:
		return 1
	case Int32, Uint32, Float32:
		return 2
	case Float64:
		return 4
	}
	return 0
}

// Order is a byte order (within a register) or word order (across the registers of a
// 32- or 64-bit value). Devices disagree on both, so both are settings.
type Order string

// Orders; big is the Modbus specification's, little the "swapped" layouts many PLCs use.
const (
	Big    Order = "big"
	Little Order = "little"
)

// Register is one value read from the device.
type Register struct {
	// Name is the scalar's name in the reading.
	Name string `yaml:"name"`
	// Address is the zero-based protocol address (holding 40001 is address 0).
	Address int `yaml:"address"`
	// Function is the table: holding (the default), input, coil or discrete.
	Function Function `yaml:"function"`
	// Type is int16, uint16 (the default), int32, uint32, float32 or float64 for
	// registers; empty or bool for coils and discrete inputs, emitted as 0 or 1.
	Type Type `yaml:"type"`
	// Scale and Offset turn the raw value into the engineering value:
	// raw*scale+offset. Scale is 1 when not set.
	Scale  *float64 `yaml:"scale"`
	Offset float64  `yaml:"offset"`
	// ByteOrder and WordOrder override the device's orders for this register.
	ByteOrder Order `yaml:"byte_order"`
	WordOrder Order `yaml:"word_order"`
	// Count, above 1, reads that many consecutive values of the type from Address
	// on (a waveform block), named "<name>.0" to "<name>.<count-1>".
	Count int `yaml:"count"`
}

// maxCount bounds a register's count: a block no request planner could cover is a
// typo, not a waveform.
const maxCount = 2000

// expand turns each register with a count into its single values, named by index.
func expand(regs []Register) []Register {
	var out []Register
	for _, r := range regs {
		if r.Count <= 1 {
			r.Count = 0
			out = append(out, r)
			continue
		}
		w := r.width()
		for i := range r.Count {
			e := r
			e.Name = fmt.Sprintf("%s.%d", r.Name, i)
			e.Address = r.Address + i*w
			e.Count = 0
			out = append(out, e)
		}
	}
	return out
}

// function is the register's table with the default applied.
func (r *Register) function() Function {
	if r.Function == "" {
		return Holding
	}
	return r.Function
}

// typ is the register's value type with the default applied.
func (r *Register) typ() Type {
	switch {
	case r.function().bits():
		return Bool
	case r.Type == "":
		return Uint16
	}
	return r.Type
}

// width is how many registers (or bits) the value takes.
func (r *Register) width() int {
	if r.function().bits() {
		return 1
	}
	return r.typ().words()
}

func (r *Register) scale() float64 {
	if r.Scale == nil {
		return 1
	}
	return *r.Scale
}

// Config is the `modbus:` block of a source: one device (one unit id behind one TCP
// address) and the registers read from it on every poll.
type Config struct {
	// Address is host:port of the Modbus TCP server (a PLC, a gateway).
	Address string `yaml:"address"`
	// UnitID addresses the device behind a gateway; most PLCs answer any, 1 is usual.
	UnitID int `yaml:"unit_id"`
	// PollInterval is the time between the starts of two polls; backpressure stretches it.
	PollInterval config.Duration `yaml:"poll_interval"`
	// Timeout bounds connecting and each request.
	Timeout config.Duration `yaml:"timeout"`
	// MaxGap is how many unused registers (or bits, for coils and discrete inputs) a
	// request reads through to merge two ranges into one request.
	MaxGap int `yaml:"max_gap"`
	// ByteOrder and WordOrder are the device's orders; each register may override them.
	ByteOrder Order `yaml:"byte_order"`
	WordOrder Order `yaml:"word_order"`
	// BackoffMin and BackoffMax bound the wait before reconnecting: it doubles on each
	// failed try, with jitter, up to BackoffMax.
	BackoffMin config.Duration `yaml:"backoff_min"`
	BackoffMax config.Duration `yaml:"backoff_max"`
	// Registers are the values each poll reads.
	Registers []Register `yaml:"registers"`
}

// Limits of the settings.
const (
	maxUnitID       = 247
	maxPollInterval = time.Hour
	maxTimeout      = time.Minute
	maxGapLimit     = maxBits
	maxBackoff      = time.Hour
)

// DefaultConfig is unit 1 polled every 100ms, with a 1s timeout and big-endian orders.
func DefaultConfig() *Config {
	return &Config{
		UnitID:       1,
		PollInterval: config.Duration(100 * time.Millisecond),
		Timeout:      config.Duration(time.Second),
		MaxGap:       8,
		ByteOrder:    Big,
		WordOrder:    Big,
		BackoffMin:   config.Duration(100 * time.Millisecond),
		BackoffMax:   config.Duration(10 * time.Second),
	}
}

func checkOrder(key string, o Order, allowEmpty bool) error {
	if o == Big || o == Little || (allowEmpty && o == "") {
		return nil
	}
	return fmt.Errorf("%s: %q is not big or little", key, string(o))
}

// Validate names each bad field and its value. Registers may overlap (one register
// read as two types is fine); their names must not repeat.
func (c *Config) Validate() error {
	var errs []error
	if c.Address == "" {
		errs = append(errs, errors.New("address: missing; want host:port of the Modbus TCP server"))
	} else if host, port, err := net.SplitHostPort(c.Address); err != nil || host == "" {
		errs = append(errs, fmt.Errorf("address: %q is not host:port", c.Address))
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		errs = append(errs, fmt.Errorf("address: port %q in %q is not 1..65535", port, c.Address))
	}
	if c.UnitID < 0 || c.UnitID > maxUnitID {
		errs = append(errs, fmt.Errorf("unit_id: %d is out of range 0..%d", c.UnitID, maxUnitID))
	}
	if d := c.PollInterval.Std(); d <= 0 || d > maxPollInterval {
		errs = append(errs, fmt.Errorf("poll_interval: %v is out of range (0s,%v]", d, maxPollInterval))
	}
	if d := c.Timeout.Std(); d <= 0 || d > maxTimeout {
		errs = append(errs, fmt.Errorf("timeout: %v is out of range (0s,%v]", d, maxTimeout))
	}
	if c.MaxGap < 0 || c.MaxGap > maxGapLimit {
		errs = append(errs, fmt.Errorf("max_gap: %d is out of range 0..%d", c.MaxGap, maxGapLimit))
	}
	if err := checkOrder("byte_order", c.ByteOrder, false); err != nil {
		errs = append(errs, err)
	}
	if err := checkOrder("word_order", c.WordOrder, false); err != nil {
		errs = append(errs, err)
	}
	if d := c.BackoffMin.Std(); d <= 0 || d > maxBackoff {
		errs = append(errs, fmt.Errorf("backoff_min: %v is out of range (0s,%v]", d, maxBackoff))
	}
	if d := c.BackoffMax.Std(); d < c.BackoffMin.Std() || d > maxBackoff {
		errs = append(errs, fmt.Errorf("backoff_max: %v is out of range [backoff_min %v,%v]", d, c.BackoffMin, maxBackoff))
	}
	if len(c.Registers) == 0 {
		errs = append(errs, errors.New("registers: empty; list at least one register to read"))
	}
	names := map[string]int{}
	for i := range c.Registers {
		errs = append(errs, c.Registers[i].validate(i, names)...)
	}
	return errors.Join(errs...)
}

func (r *Register) validate(i int, names map[string]int) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("registers[%d].%s", i, fmt.Sprintf(format, args...)))
	}
	if r.Name == "" {
		fail("name: missing")
	} else if j, dup := names[r.Name]; dup {
		fail("name: %q is already the name of registers[%d]", r.Name, j)
	} else {
		names[r.Name] = i
	}
	switch r.Function {
	case "", Holding, Input, Coil, Discrete:
	default:
		fail("function: %q is not holding, input, coil or discrete", string(r.Function))
	}
	fn := r.function()
	switch {
	case fn.bits() && r.Type != "" && r.Type != Bool:
		fail("type: %q is not bool; a %s is one bit", string(r.Type), fn)
	case !fn.bits() && r.Type != "" && r.Type.words() == 0:
		fail("type: %q is not int16, uint16, int32, uint32, float32 or float64", string(r.Type))
	}
	if r.Count < 0 || r.Count > maxCount {
		fail("count: %d is out of range 0..%d", r.Count, maxCount)
	}
	n := max(1, r.Count)
	if r.Address < 0 || r.Address > 65535 {
		fail("address: %d is out of range 0..65535", r.Address)
	} else if w := r.width(); w > 0 && r.Address+n*w-1 > 65535 {
		if n == 1 {
			fail("address: %d leaves no room for the %d registers of a %s (last address 65535)", r.Address, w, r.typ())
		} else {
			fail("address: %d leaves no room for %d values of %d registers (%s; last address 65535)", r.Address, n, w, r.typ())
		}
	}
	if r.Scale != nil && (math.IsNaN(*r.Scale) || math.IsInf(*r.Scale, 0)) {
		fail("scale: %v is not a finite number", *r.Scale)
	}
	if math.IsNaN(r.Offset) || math.IsInf(r.Offset, 0) {
		fail("offset: %v is not a finite number", r.Offset)
	}
	if err := checkOrder("byte_order", r.ByteOrder, true); err != nil {
		fail("%v", err)
	}
	if err := checkOrder("word_order", r.WordOrder, true); err != nil {
		fail("%v", err)
	}
	return errs
}

func init() {
	drivers.Register("modbus", drivers.Factory{
		NewConfig: func() any { return DefaultConfig() },
		New: func(spec drivers.Spec, cfg any) (drivers.Driver, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("modbus: config is %T, not *modbus.Config", cfg)
			}
			return New(spec, c)
		},
	})
}
