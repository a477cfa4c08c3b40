package pipeline

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

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
	c     window.Config
	hop   float64
	names int // features per window, to size each frame's map once
	// For block readings: each sample's values, and the block's value names by
	// channel and index, made once.
	one       map[string]float64
	blockKeys [][]string
	// pending holds the frames of windows completed by one reading, reused.
	pending []*drivers.Reading
	// samples counts the samples taken; resets are kept by the windower.
	samples atomic.Uint64
}

func newWindowing(c window.Config) (*windowing, error) {
	w, err := window.New(c)
	if err != nil {
		return nil, err
	}
	wg := &windowing{w: w, c: c, hop: float64(c.Hop), names: len(window.FeatureNames(c))}
	if c.Block > 0 {
		wg.one = make(map[string]float64, len(c.Channels)+1)
		for _, ch := range c.Channels {
			keys := make([]string, c.Block)
			for i := range keys {
				keys[i] = fmt.Sprintf("%s.%d", ch, i)
			}
			wg.blockKeys = append(wg.blockKeys, keys)
		}
	}
	return wg, nil
}

// frame makes the frame of the window just completed.
func (wg *windowing) frame(truth string) {
	out := drivers.AcquireReading()
	if out.Scalars == nil {
		out.Scalars = make(map[string]float64, wg.names)
	}
	wg.w.Features(out.Scalars)
	out.CapturedAt = wg.w.Window().End
	out.Truth = truth
	wg.pending = append(wg.pending, out)
}

// addBlock feeds a block reading's samples, oldest first, making a frame for each
// window they complete.
func (wg *windowing) addBlock(at time.Time, seq uint64, values map[string]float64, truth string) {
	newest, ok := values[wg.c.Counter]
	if !ok {
		wg.w.Add(at, seq, values) // counted as a missing channel
		return
	}
	wrap := float64(wg.c.CounterWrap)
	if wrap == 0 {
		wrap = 1 << 16
	}
	for i := range wg.c.Block {
		clear(wg.one)
		for ch, name := range wg.c.Channels {
			if v, ok := values[wg.blockKeys[ch][i]]; ok {
				wg.one[name] = v
			}
		}
		wg.one[wg.c.Counter] = math.Mod(newest-float64(wg.c.Block-1-i)+wrap, wrap)
		if wg.w.Add(at, seq, wg.one) {
			wg.frame(truth)
		}
	}
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
	// A block may complete more than one window; their frames are emitted in order
	// once the windower is released.
	wg.mu.Lock()
	if wg.c.Block > 0 {
		wg.addBlock(at, r.Seq, r.Scalars, r.Truth)
	} else if wg.w.Add(at, r.Seq, r.Scalars) {
		wg.frame(r.Truth)
	}
	outs := wg.pending
	wg.pending = nil
	wg.mu.Unlock()
	r.Release()
	if len(outs) == 0 {
		return e.samplePressure(e.emitter.Pressure())
	}
	var p drivers.Pressure
	for _, out := range outs {
		p = e.emitter.Emit(ctx, out)
	}
	return e.samplePressure(p)
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
