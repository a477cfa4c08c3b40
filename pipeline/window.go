package pipeline

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/window"
)

// windowing assembles a sample stream (a vibration channel read thousands of times a
// second) into windows in front of the source's ring: the ring, the workers and the
// frame accounting see one frame per window, holding the window's features by name,
// so a scalar model judges windows like any other frame, with the same backpressure,
// deadlines and delivery.
type windowing struct {
	mu    sync.Mutex
	w     *window.Windower
	hop   float64
	names int // features per window, to size each frame's map once
	// samples counts the samples taken; resets are kept by the windower.
	samples atomic.Uint64
}

func newWindowing(c window.Config) (*windowing, error) {
	w, err := window.New(c)
	if err != nil {
		return nil, err
	}
	return &windowing{w: w, hop: float64(c.Hop), names: len(window.FeatureNames(c))}, nil
}

// resets returns the windower's restarts by reason.
func (wg *windowing) resets() map[string]uint64 {
	wg.mu.Lock()
	defer wg.mu.Unlock()
	return wg.w.Resets()
}

// windowEmitter is the emitter a windowed source's driver gets: it takes samples,
// and emits a frame into the ring each time a window completes.
type windowEmitter struct {
	*emitter
}

// Emit takes one sample. The sample reading is released here; a completed window
// becomes a new reading whose time is the window's end and whose truth is the last
// sample's.
func (e *windowEmitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	wg := e.s.win
	wg.samples.Add(1)
	at := r.CapturedAt
	if at.IsZero() {
		at = e.p.now()
	}
	wg.mu.Lock()
	done := wg.w.Add(at, r.Seq, r.Scalars)
	var out *drivers.Reading
	if done {
		out = drivers.AcquireReading()
		if out.Scalars == nil {
			out.Scalars = make(map[string]float64, wg.names)
		}
		wg.w.Features(out.Scalars)
		out.CapturedAt = wg.w.Window().End
		out.Truth = r.Truth
	}
	wg.mu.Unlock()
	r.Release()
	if out == nil {
		return e.samplePressure(e.emitter.Pressure())
	}
	return e.samplePressure(e.emitter.Emit(ctx, out))
}

// Pressure implements drivers.PressureReader in samples.
func (e *windowEmitter) Pressure() drivers.Pressure { return e.samplePressure(e.emitter.Pressure()) }

// samplePressure turns the ring's pressure into the driver's terms: the rate
// controller limits windows per second, and a window takes hop samples.
func (e *windowEmitter) samplePressure(p drivers.Pressure) drivers.Pressure {
	p.MaxRateHz *= e.s.win.hop
	return p
}

var (
	_ drivers.Emitter        = (*windowEmitter)(nil)
	_ drivers.PressureReader = (*windowEmitter)(nil)
)
