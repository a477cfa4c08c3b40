package swap

import (
	"context"
	"fmt"
	"math"

	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/pipeline"
)

// batch makes the batch the warm-up and golden runs share, and checks the golden frames
// fit the model's per-frame sizes before anything runs.
func (m *Manager) batch(next *pipeline.Model) (*inference.Batch, error) {
	n := min(m.cfg.MaxBatch, max(1, next.Session.MaxBatch()))
	b, err := next.Session.NewBatch(n)
	if err != nil {
		return nil, fmt.Errorf("batch of %d frames: %w", n, err)
	}
	for i, g := range next.Manifest.Golden {
		if len(g.Input) != b.InputLen || len(g.Output) != b.OutputLen {
			b.Close()
			return nil, fmt.Errorf("golden[%d] has %d input and %d output values, the model takes %d and gives %d per frame",
				i, len(g.Input), len(g.Output), b.InputLen, b.OutputLen)
		}
	}
	return b, nil
}

// warmup runs full batches so the runtime has planned and allocated for serving's size
// before the first frame; the golden inputs go in when there are any, as they look like
// real frames, else zeros. An output that is not finite fails the model.
func (m *Manager) warmup(ctx context.Context, next *pipeline.Model, b *inference.Batch) error {
	golden := next.Manifest.Golden
	for i := range b.N {
		in, _ := b.Frame(i)
		if len(golden) > 0 {
			copy(in, golden[i%len(golden)].Input)
		} else {
			clear(in)
		}
	}
	if err := b.Use(b.N); err != nil {
		return err
	}
	for run := range m.cfg.WarmupRuns {
		if err := next.Session.Run(ctx, b); err != nil {
			return fmt.Errorf("run %d of %d (batch of %d): %w", run+1, m.cfg.WarmupRuns, b.N, err)
		}
		for i := range b.N {
			_, out := b.Frame(i)
			for j, v := range out {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return fmt.Errorf("run %d: frame %d output[%d] is %v", run+1, i, j, v)
				}
			}
		}
	}
	return nil
}

// golden runs the manifest's golden frames and compares each output value with the
// expected one within the frame's tolerance.
func golden(ctx context.Context, next *pipeline.Model, b *inference.Batch) error {
	g := next.Manifest.Golden
	for start := 0; start < len(g); start += b.N {
		k := min(b.N, len(g)-start)
		for i := range k {
			in, _ := b.Frame(i)
			copy(in, g[start+i].Input)
		}
		if err := b.Use(k); err != nil {
			return err
		}
		if err := next.Session.Run(ctx, b); err != nil {
			return fmt.Errorf("frames %d..%d: %w", start, start+k-1, err)
		}
		for i := range k {
			_, out := b.Frame(i)
			want := g[start+i]
			for j, v := range out {
				w := want.Output[j]
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return fmt.Errorf("frame %d output[%d] is %v, want %v", start+i, j, v, w)
				}
				if d := math.Abs(float64(v) - float64(w)); !(d <= float64(want.Tolerance)) {
					return fmt.Errorf("frame %d output[%d] is %v, want %v within %v", start+i, j, v, w, want.Tolerance)
				}
			}
		}
	}
	return nil
}
