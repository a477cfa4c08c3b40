//go:build cgo

package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgedrun/edged/models"
)

// ORT is the ONNX Runtime backend. ONNX Runtime has one environment per process, so at
// most one ORT is open at a time.
type ORT struct {
	lib     LibraryChoice
	version string
}

var (
	ortMu   sync.Mutex
	ortOpen bool
)

// ErrORTOpen is returned by OpenORT while another ORT backend is open.
var ErrORTOpen = errors.New("onnx runtime is already open in this process")

// OpenORT loads the ONNX Runtime library found by FindORTLibrary(configured) and
// initialises its environment.
func OpenORT(configured string) (*ORT, error) {
	lib, err := FindORTLibrary(configured)
	if err != nil {
		return nil, err
	}
	ortMu.Lock()
	defer ortMu.Unlock()
	if ortOpen {
		return nil, ErrORTOpen
	}
	ort.SetSharedLibraryPath(lib.Path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("load ONNX Runtime %s (from %s): %v; the library must be ONNX Runtime 1.24 for %s (run `make ort`)",
			lib.Path, lib.From, err, ortArchDir())
	}
	ortOpen = true
	return &ORT{lib: lib, version: ort.GetVersion()}, nil
}

// Name implements Backend.
func (o *ORT) Name() string { return "onnxruntime" }

// Library says which library file is in use and why it was chosen.
func (o *ORT) Library() LibraryChoice { return o.lib }

// Version is the loaded ONNX Runtime's version.
func (o *ORT) Version() string { return o.version }

// Close destroys the environment; every session must be closed first.
func (o *ORT) Close() error {
	ortMu.Lock()
	defer ortMu.Unlock()
	if !ortOpen {
		return nil
	}
	ortOpen = false
	return ort.DestroyEnvironment()
}

type ortSession struct {
	sess      *ort.DynamicAdvancedSession
	inShape   []int64 // per-frame shape with the batch dim first
	outShape  []int64
	inLen     int
	outLen    int
	maxBatch  int
	closeOnce sync.Once
}

// Load implements Backend.
func (o *ORT) Load(m *models.Manifest, onnx []byte, opts SessionOptions) (Session, error) {
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(onnx)
	if err != nil {
		return nil, fmt.Errorf("model %s %s: onnx runtime cannot read it: %v", m.Name, m.Version, err)
	}
	if err := checkIO("input", m.Inputs, ins); err != nil {
		return nil, fmt.Errorf("model %s %s: %w", m.Name, m.Version, err)
	}
	if err := checkIO("output", m.Outputs, outs); err != nil {
		return nil, fmt.Errorf("model %s %s: %w", m.Name, m.Version, err)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if opts.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
			return nil, fmt.Errorf("intra-op threads %d: %w", opts.IntraOpThreads, err)
		}
	}
	if opts.InterOpThreads > 0 {
		if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
			return nil, fmt.Errorf("inter-op threads %d: %w", opts.InterOpThreads, err)
		}
	}
	spin := "0"
	if opts.Spinning {
		spin = "1"
	}
	for _, k := range []string{"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"} {
		if err := so.AddSessionConfigEntry(k, spin); err != nil {
			return nil, fmt.Errorf("session option %s: %w", k, err)
		}
	}
	appendProviders(so, opts)
	in, out := m.Inputs[0], m.Outputs[0]
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(onnx, []string{in.Name}, []string{out.Name}, so)
	if err != nil {
		return nil, fmt.Errorf("model %s %s: create session: %v", m.Name, m.Version, err)
	}
	s := &ortSession{sess: sess, inShape: in.Shape, outShape: out.Shape, maxBatch: 1 << 10}
	s.inLen = frameLen(in.Shape)
	s.outLen = frameLen(out.Shape)
	if in.Shape[0] > 0 {
		s.maxBatch = int(in.Shape[0])
	}
	return s, nil
}

// frameLen is the element count of one frame: the product of all but the batch dim.
func frameLen(shape []int64) int {
	n := 1
	for _, d := range shape[1:] {
		n *= int(d)
	}
	return n
}

// checkIO compares the manifest's tensors with what the model really declares, so a
// model whose inputs do not match the config is refused at load, not at the first frame.
func checkIO(kind string, want []models.Tensor, have []ort.InputOutputInfo) error {
	if len(have) != len(want) {
		return fmt.Errorf("the model has %d %ss %s, the manifest declares %d", len(have), kind, ioNames(have), len(want))
	}
	for i, w := range want {
		h := have[i]
		if h.Name != w.Name {
			return fmt.Errorf("%s %d is named %q in the model, %q in the manifest", kind, i, h.Name, w.Name)
		}
		if h.DataType != ort.TensorElementDataTypeFloat {
			return fmt.Errorf("%s %q has element type %v, want float32", kind, h.Name, h.DataType)
		}
		if len(h.Dimensions) != len(w.Shape) {
			return fmt.Errorf("%s %q has shape %v in the model, %v in the manifest", kind, h.Name, h.Dimensions, w.Shape)
		}
		for j, d := range w.Shape {
			md := h.Dimensions[j]
			if j == 0 && d < 0 && md <= 0 {
				continue // dynamic batch on both sides
			}
			if md != d {
				return fmt.Errorf("%s %q has shape %v in the model, %v in the manifest", kind, h.Name, h.Dimensions, w.Shape)
			}
		}
		if j := firstDynamic(w.Shape[1:]); j >= 0 {
			return fmt.Errorf("%s %q: only the batch dimension may be dynamic, shape %v", kind, h.Name, w.Shape)
		}
	}
	return nil
}

func firstDynamic(dims []int64) int {
	for i, d := range dims {
		if d <= 0 {
			return i
		}
	}
	return -1
}

func ioNames(io []ort.InputOutputInfo) string {
	names := make([]string, len(io))
	for i, x := range io {
		names[i] = fmt.Sprintf("%q%v", x.Name, x.Dimensions)
	}
	return "[" + strings.Join(names, " ") + "]"
}

func (s *ortSession) MaxBatch() int { return s.maxBatch }

func (s *ortSession) NewBatch(n int) (*Batch, error) {
	if n < 1 || n > s.maxBatch {
		return nil, fmt.Errorf("batch of %d: the model takes 1..%d", n, s.maxBatch)
	}
	inShape := append([]int64{int64(n)}, s.inShape[1:]...)
	outShape := append([]int64{int64(n)}, s.outShape[1:]...)
	in, err := ort.NewEmptyTensor[float32](ort.NewShape(inShape...))
	if err != nil {
		return nil, fmt.Errorf("input tensor %v: %w", inShape, err)
	}
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(outShape...))
	if err != nil {
		in.Destroy()
		return nil, fmt.Errorf("output tensor %v: %w", outShape, err)
	}
	b := &Batch{
		N: n, Input: in.GetData(), Output: out.GetData(),
		InputLen: s.inLen, OutputLen: s.outLen, owner: s,
	}
	// views[k-1] are tensors over the first k frames of the same memory, made on a
	// batch's first run with k frames, so partial batches copy nothing and, after the
	// first of each size, allocate nothing.
	type view struct{ in, out []ort.Value }
	views := make([]*view, n)
	views[n-1] = &view{in: []ort.Value{in}, out: []ort.Value{out}}
	b.run = func(_ context.Context, k int) error {
		v := views[k-1]
		if v == nil {
			vi, err := ort.NewTensor(ort.NewShape(append([]int64{int64(k)}, s.inShape[1:]...)...), b.Input[:k*s.inLen])
			if err != nil {
				return fmt.Errorf("input view of %d frames: %w", k, err)
			}
			vo, err := ort.NewTensor(ort.NewShape(append([]int64{int64(k)}, s.outShape[1:]...)...), b.Output[:k*s.outLen])
			if err != nil {
				vi.Destroy()
				return fmt.Errorf("output view of %d frames: %w", k, err)
			}
			v = &view{in: []ort.Value{vi}, out: []ort.Value{vo}}
			views[k-1] = v
		}
		return s.sess.Run(v.in, v.out)
	}
	b.close = func() error {
		var errs []error
		for _, v := range views {
			if v != nil {
				errs = append(errs, v.in[0].Destroy(), v.out[0].Destroy())
			}
		}
		return errors.Join(errs...)
	}
	return b, nil
}

// Run implements Session. ONNX Runtime cannot be interrupted mid-run through this
// binding, so ctx is checked before the run starts.
func (s *ortSession) Run(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.run == nil || b.owner != Session(s) {
		return errors.New("run: batch is closed or not from this session")
	}
	if err := b.run(ctx, b.Used()); err != nil {
		return fmt.Errorf("onnx runtime run: %w", err)
	}
	return nil
}

func (s *ortSession) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.sess.Destroy() })
	return err
}

// appendProviders asks for the accelerators in order. ONNX Runtime runs what they cannot
// on the CPU, which is always there, so a provider that fails to load only costs speed:
// warn, naming why, and go on.
func appendProviders(so *ort.SessionOptions, opts SessionOptions) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range opts.ExecutionProviders {
		var err error
		switch p {
		case "CPU":
			continue
		case "CUDA":
			var o *ort.CUDAProviderOptions
			if o, err = ort.NewCUDAProviderOptions(); err == nil {
				err = so.AppendExecutionProviderCUDA(o)
				o.Destroy()
			}
		case "TensorRT":
			var o *ort.TensorRTProviderOptions
			if o, err = ort.NewTensorRTProviderOptions(); err == nil {
				err = so.AppendExecutionProviderTensorRT(o)
				o.Destroy()
			}
		default:
			err = fmt.Errorf("unknown execution provider %q", p)
		}
		if err != nil {
			log.Warn("execution provider unavailable; running on the next one", "provider", p, "err", err)
			continue
		}
		log.Info("execution provider enabled", "provider", p)
	}
}
