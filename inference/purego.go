package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edgedrun/edged/models"
)

// PureGo is the backend for targets ONNX Runtime does not ship for (riscv64) or
// builds without cgo. It is a small ONNX interpreter written for the operators of
// the bundled demo models (PureGoOperators lists them), float32 only, opsets 11..17;
// a model with any other operator is refused at Load with the operator's name.
//
// Why not a general pure-Go ONNX library: github.com/advancedclimatesystems/gonnx
// v1.1.0 lacks six of those operators (MaxPool, GlobalAveragePool, Clip, Log, Pow,
// ReduceMean), and, decisively, does not build for riscv64 at all: it computes on
// gorgonia.org/tensor, whose dependency github.com/chewxy/math32 v1.10.1 declares
// assembly functions with no riscv64 body ("missing function body" for Sqrt, Log,
// Exp). An interpreter of exactly the operators edged ships models for is short
// enough to check line by line, and every operator is tested against ONNX Runtime.
//
// Each frame of a batch runs on its own, in buffers planned at Load and made with the
// batch, so a run on one thread allocates nothing; frames of a batch run in parallel
// on up to IntraOpThreads goroutines, and ctx is honoured between frames.
type PureGo struct{}

// OpenPureGo returns the pure-Go backend. It holds no resources.
func OpenPureGo() *PureGo { return &PureGo{} }

// Name implements Backend.
func (*PureGo) Name() string { return BackendPureGo }

// Version says what the backend runs, for logs and status.
func (*PureGo) Version() string {
	return fmt.Sprintf("edged pure-Go interpreter (ONNX opsets %d..%d, %d operators)", pgMinOpset, pgMaxOpset, len(pgOperators))
}

// Close implements Backend.
func (*PureGo) Close() error { return nil }

type pgSession struct {
	plan     *plan
	inLen    int
	outLen   int
	maxBatch int
	threads  int
	closed   atomic.Bool
}

// Load implements Backend.
func (*PureGo) Load(m *models.Manifest, onnx []byte, opts SessionOptions) (Session, error) {
	om, err := parseONNX(onnx)
	if err != nil {
		return nil, fmt.Errorf("model %s %s: the pure-Go backend cannot read it: %w", m.Name, m.Version, err)
	}
	if len(m.Inputs) != 1 || len(m.Outputs) != 1 {
		return nil, fmt.Errorf("model %s %s: the manifest declares %d inputs and %d outputs; the pure-Go backend runs models of one input and one output",
			m.Name, m.Version, len(m.Inputs), len(m.Outputs))
	}
	inits := make(map[string]bool, len(om.graph.inits))
	for _, t := range om.graph.inits {
		inits[t.name] = true
	}
	var ins []onnxValueInfo
	for _, vi := range om.graph.inputs {
		if !inits[vi.name] { // before IR 4, initializers are listed as inputs too
			ins = append(ins, vi)
		}
	}
	if err := checkGraphIO("input", m.Inputs, ins); err != nil {
		return nil, fmt.Errorf("model %s %s: %w", m.Name, m.Version, err)
	}
	if err := checkGraphIO("output", m.Outputs, om.graph.outputs); err != nil {
		return nil, fmt.Errorf("model %s %s: %w", m.Name, m.Version, err)
	}
	in, out := m.Inputs[0], m.Outputs[0]
	pl, err := compile(om, in.Name, in.Shape, out.Name)
	if err != nil {
		return nil, fmt.Errorf("model %s %s: %w", m.Name, m.Version, err)
	}
	s := &pgSession{plan: pl, inLen: pgFrameLen(in.Shape), outLen: pgFrameLen(out.Shape), maxBatch: 1 << 10}
	if got := pl.vals[pl.output].size(); got != s.outLen {
		return nil, fmt.Errorf("model %s %s: the graph computes %d values per frame for output %q, the manifest's shape %v has %d",
			m.Name, m.Version, got, out.Name, out.Shape, s.outLen)
	}
	if in.Shape[0] > 0 {
		s.maxBatch = int(in.Shape[0])
	}
	s.threads = opts.IntraOpThreads
	if s.threads <= 0 {
		s.threads = runtime.GOMAXPROCS(0)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range opts.ExecutionProviders {
		if p != "CPU" {
			log.Warn("execution provider unavailable; the pure-Go backend runs on the CPU", "provider", p, "model", m.Name, "version", m.Version)
		}
	}
	return s, nil
}

// checkGraphIO is checkIO for the interpreter's view of the graph: the same rules, so
// a manifest is accepted or refused alike by either backend.
func checkGraphIO(kind string, want []models.Tensor, have []onnxValueInfo) error {
	if len(have) != len(want) {
		names := make([]string, len(have))
		for i, h := range have {
			names[i] = fmt.Sprintf("%q%v", h.name, h.dims)
		}
		return fmt.Errorf("the model has %d %ss %v, the manifest declares %d", len(have), kind, names, len(want))
	}
	for i, w := range want {
		h := have[i]
		if h.name != w.Name {
			return fmt.Errorf("%s %d is named %q in the model, %q in the manifest", kind, i, h.name, w.Name)
		}
		if h.elemType != onnxFloat {
			return fmt.Errorf("%s %q has element type %d, want float32", kind, h.name, h.elemType)
		}
		if len(h.dims) != len(w.Shape) {
			return fmt.Errorf("%s %q has shape %v in the model, %v in the manifest", kind, h.name, h.dims, w.Shape)
		}
		for j, d := range w.Shape {
			md := h.dims[j]
			if j == 0 && d < 0 && md <= 0 {
				continue
			}
			if md != d {
				return fmt.Errorf("%s %q has shape %v in the model, %v in the manifest", kind, h.name, h.dims, w.Shape)
			}
		}
		if slices.ContainsFunc(w.Shape[1:], func(d int64) bool { return d <= 0 }) {
			return fmt.Errorf("%s %q: only the batch dimension may be dynamic, shape %v", kind, h.name, w.Shape)
		}
	}
	return nil
}

// pgFrameLen is the element count of one frame: the product of all but the batch dim.
func pgFrameLen(shape []int64) int {
	n := 1
	for _, d := range shape[1:] {
		n *= int(d)
	}
	return n
}

func (s *pgSession) MaxBatch() int { return s.maxBatch }

func (s *pgSession) NewBatch(n int) (*Batch, error) {
	if n < 1 || n > s.maxBatch {
		return nil, fmt.Errorf("batch of %d: the model takes 1..%d", n, s.maxBatch)
	}
	b := &Batch{
		N: n, Input: make([]float32, n*s.inLen), Output: make([]float32, n*s.outLen),
		InputLen: s.inLen, OutputLen: s.outLen, owner: s,
	}
	// Each of the batch's workers has its own buffers, made once here: a batch belongs
	// to one goroutine at a time, so its runs never share them and never allocate them.
	states := make([]*frameState, min(s.threads, n))
	for i := range states {
		states[i] = s.plan.newState()
	}
	b.run = func(ctx context.Context, k int) error { return s.runFrames(ctx, b, states, k) }
	b.close = func() error { return nil }
	return b, nil
}

// runFrames infers the batch's first k frames, spread over up to len(states)
// goroutines that all end before it returns.
func (s *pgSession) runFrames(ctx context.Context, b *Batch, states []*frameState, k int) error {
	workers := min(len(states), k)
	if workers == 1 {
		return s.work(ctx, b, states[0], 0, 1, k)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(func() { errs[w] = s.work(ctx, b, states[w], w, workers, k) })
	}
	errs[0] = s.work(ctx, b, states[0], 0, workers, k)
	wg.Wait()
	return errors.Join(errs...)
}

// work infers frames w, w+workers, ... below k with one worker's buffers.
func (s *pgSession) work(ctx context.Context, b *Batch, st *frameState, w, workers, k int) error {
	for i := w; i < k; i += workers {
		if err := ctx.Err(); err != nil {
			return err
		}
		in, out := b.Frame(i)
		s.plan.run(st, in, out)
	}
	return nil
}

// Run implements Session.
func (s *pgSession) Run(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.run == nil || b.owner != Session(s) {
		return errors.New("run: batch is closed or not from this session")
	}
	if s.closed.Load() {
		return errors.New("run: the session is closed")
	}
	if err := b.run(ctx, b.Used()); err != nil {
		return fmt.Errorf("pure-Go run: %w", err)
	}
	return nil
}

// Close implements Session; the buffers go with the garbage collector.
func (s *pgSession) Close() error {
	s.closed.Store(true)
	return nil
}
