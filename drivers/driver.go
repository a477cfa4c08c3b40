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
}
