// Package inference runs models: the Backend contract, the ONNX Runtime backend, and the
// pre- and post-processing that turn an image into a tensor and scores into a verdict.
package inference

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/edgedrun/edged/models"
)

// Backend loads models into sessions. A backend is process-wide and safe for concurrent
// use; Close releases it after every session is closed.
type Backend interface {
	// Name identifies the backend in logs and status ("onnxruntime").
	Name() string
	// Load builds a session for a model whose bytes were verified against m. It checks
	// the model's real inputs and outputs against the manifest.
	Load(m *models.Manifest, onnx []byte, opts SessionOptions) (Session, error)
	Close() error
}

// SessionOptions tune a session to the box (from the hardware profile).
type SessionOptions struct {
	IntraOpThreads int
	InterOpThreads int
	// Spinning lets idle intra-op threads spin for work: faster with spare cores,
	// wasteful on small boxes where the spinning thread steals from the pipeline.
	Spinning bool
	// ExecutionProviders in order of preference (TensorRT, CUDA, CPU). A provider whose
	// libraries are missing is skipped with a warning; CPU always remains.
	ExecutionProviders []string
	// Log receives the provider fallback warnings; nil discards them.
	Log *slog.Logger
}

// Session is a loaded model. Run is safe for concurrent use with distinct batches.
type Session interface {
	// NewBatch allocates reusable input and output buffers for n frames. The caller owns
	// the batch and must Close it before closing the session.
	NewBatch(n int) (*Batch, error)
	// Run infers the batch's inputs into its outputs.
	Run(ctx context.Context, b *Batch) error
	// MaxBatch is the largest batch the model accepts (1 for a fixed batch of one).
	MaxBatch() int
	Close() error
}

// Batch holds n frames' input tensor data back to back and the matching outputs. A
// batch belongs to one goroutine at a time.
type Batch struct {
	N      int
	Input  []float32 // N * the model's per-frame input size
	Output []float32 // N * the model's per-frame output size
	// InputLen and OutputLen are the per-frame sizes.
	InputLen, OutputLen int
	owner               Session
	close               func() error
	run                 func(ctx context.Context, n int) error
	// used is how many frames the next Run infers; 0 means N.
	used int
}

// Use sets how many of the batch's frames (the first k) the next runs infer, so a
// batch sized for the largest batch also runs a partial one without copying.
func (b *Batch) Use(k int) error {
	if k < 1 || k > b.N {
		return fmt.Errorf("batch: %d frames asked of a batch of %d", k, b.N)
	}
	b.used = k
	return nil
}

// Used is the number of frames the next Run infers.
func (b *Batch) Used() int {
	if b.used == 0 {
		return b.N
	}
	return b.used
}

// Frame returns frame i's input and output slices.
func (b *Batch) Frame(i int) (in, out []float32) {
	return b.Input[i*b.InputLen : (i+1)*b.InputLen], b.Output[i*b.OutputLen : (i+1)*b.OutputLen]
}

// Close releases the batch's buffers.
func (b *Batch) Close() error {
	if b == nil || b.close == nil {
		return nil
	}
	err := b.close()
	b.close, b.run = nil, nil
	b.Input, b.Output = nil, nil
	return err
}
