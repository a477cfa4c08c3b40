// Package drivers defines the IOTDeviceDriver contract between line devices and the
// pipeline, and the registry that builds a driver from its type name.
//
// A driver's life: the registry's Factory makes a config value pre-filled with defaults,
// the config loader decodes the source's block (keyed by the type name) into it strictly
// and calls its Validate method, then Factory.New builds the driver, which has no side
// effects until Run. Run(ctx, emitter) owns every goroutine the driver starts, reconnects
// on transient faults, reports health through the emitter, and returns nil when ctx ends.
package drivers

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Driver reads one device and emits its readings into the pipeline.
type Driver interface {
	// Run reads the device until ctx ends and then returns nil. It returns an error only
	// for faults that retrying cannot mend (bad configuration found at start).
	Run(ctx context.Context, e Emitter) error
}

// Emitter is the pipeline's side of a source. Its methods are safe for concurrent use.
type Emitter interface {
	// Emit hands a reading to the pipeline, which owns it from then on. The answer says
	// whether it was taken and how full the pipeline is, so the driver can slow down.
	Emit(ctx context.Context, r *Reading) Pressure
	// Health reports whether the device is reachable; err says why not.
	Health(up bool, err error)
}

// PressureReader is implemented by emitters that can tell the pipeline's pressure
// without an emit, for drivers that wait for room rather than sleep a fixed interval.
type PressureReader interface {
	Pressure() Pressure
}

// Reconfigurer is implemented by drivers that take a changed config while running (a
// config reload): they apply what can change live, such as a rate or poll interval,
// and return the keys that changed but take a restart. cfg is a value from the type's
// Factory.NewConfig, already validated.
type Reconfigurer interface {
	Reconfigure(cfg any) (restart []string, err error)
}

// Writer is implemented by drivers that can set a value on their device: the reject
// gate's coil, a result register, an OPC UA node. Write is safe for concurrent use with
// Run and with itself; it fails fast while the device is unreachable, and gives up when
// ctx ends (ctx carries the deadline by which the part passes the gate).
type Writer interface {
	Write(ctx context.Context, w Write) error
}

// Write is one value to set on a device.
type Write struct {
	// Target is the address in the driver's own syntax: "coil:17" or "holding:40:uint16"
	// for Modbus, a node id such as "ns=2;s=Line1.Reject" for OPC UA.
	Target string
	// Value is a bool, int64, float64 or string; the driver converts it to the
	// target's type and fails, naming both, when it does not fit.
	Value any
}

// WriteChecker is implemented by Writers that can check a write's target and value
// without the device, so a config naming a target the driver cannot address is an
// error at start, not at the first rejected part.
type WriteChecker interface {
	CheckWrite(w Write) error
}

// Prober is implemented by drivers that can check their config against the device:
// the registers answer, the node ids exist, the credentials are accepted. `edged
// validate -probe` runs it; an unreachable device is an error naming it.
type Prober interface {
	Probe(ctx context.Context) error
}

// Pressure is the pipeline's answer to one Emit.
type Pressure struct {
	// Accepted is false when the reading was dropped because the pipeline was full.
	Accepted bool
	// Occupancy is the fill level of the source's ring after the emit, 0..1.
	Occupancy float64
	// MaxRateHz is the most readings per second the pipeline can take from this source
	// now, set by its rate controller from ring occupancy and deadline misses; 0 means
	// no limit. Drivers that set their own pace (a poll interval, an OPC UA sampling
	// interval, a camera's frame rate) keep at or below it, and go back to their
	// configured pace when it is 0 again.
	MaxRateHz float64
}

// SlowDownAt is the ring occupancy from which drivers should lower their rate.
const SlowDownAt = 0.75

// SlowDown reports whether the driver should lower its rate.
func (p Pressure) SlowDown() bool { return !p.Accepted || p.Occupancy >= SlowDownAt }

// ImageFormat names how Image.Data is encoded.
type ImageFormat string

// Image formats drivers may emit.
const (
	FormatGray8 ImageFormat = "gray8" // raw 8-bit luminance, row-major, Width*Height bytes
	FormatPNG   ImageFormat = "png"
	FormatJPEG  ImageFormat = "jpeg"
	FormatBMP   ImageFormat = "bmp"
)

// Image is a camera frame.
type Image struct {
	Format        ImageFormat
	Width, Height int // known for raw formats; 0 for encoded ones until decoded
	Data          []byte
}

// Reading is one sample from a source: what it saw, when, and by when a verdict is due.
type Reading struct {
	Source     string
	Seq        uint64
	CapturedAt time.Time
	// Deadline is CapturedAt plus the source's verdict budget; set by the driver or,
	// when zero, by the pipeline.
	Deadline time.Time
	// TraceID follows the reading into every log line and the published result; the
	// pipeline assigns one when the driver leaves it empty.
	TraceID string
	Image   *Image
	Scalars map[string]float64
	// Truth is the ground-truth label when the source knows it (the simulator does).
	Truth string
	// PartID names the part a triggered reading inspects (an OPC UA trigger's part id,
	// an uploaded image's part); it goes into the result and into write-back values.
	PartID string

	// Set for readings from AcquireReading: the image and buffer they own.
	pooled, released bool
	img              Image
	buf              *[]byte
}

// Spec holds the settings every source has, whatever its type.
type Spec struct {
	Name string
	// Budget is the time from capture by which the verdict is due.
	Budget time.Duration
	// Log is the logger for the driver's lines; nil means slog.Default().
	Log *slog.Logger
	// Registerer takes the driver's own metrics, labelled with the source name; nil
	// means the driver keeps none.
	Registerer prometheus.Registerer
	// Verdicts lets the driver wait for the verdicts on its readings; nil when the
	// daemon does not offer it (drivers then answer without the verdict).
	Verdicts Verdicts
}

// Verdict is one inspection's verdict on a reading, as published.
type Verdict struct {
	ID         string  `json:"id"`
	Inspection string  `json:"inspection"`
	Verdict    string  `json:"verdict"`
	Label      string  `json:"label"`
	Score      float64 `json:"score"`
	PartID     string  `json:"part_id,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	Action     string  `json:"action,omitempty"`
}

// Verdicts hands drivers the verdicts on readings they emitted, for sources that answer
// a request with the verdict (an upload that asks to wait for it).
type Verdicts interface {
	// Watch starts collecting the verdicts on the reading with this trace id; call it
	// before emitting the reading (set Reading.TraceID). wait blocks until every
	// inspection on the source has given its verdict, or ctx ends, and returns the
	// verdicts given so far with ctx's error in the second case. stop ends the watch;
	// it is safe to call more than once and must be called.
	Watch(source, traceID string) (wait func(ctx context.Context) ([]Verdict, error), stop func())
}
