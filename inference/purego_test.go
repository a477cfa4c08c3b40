package inference_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/onnxbuild"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
)

// cross/test-riscv64.sh runs TestPureGoDemoModels under qemu-riscv64 with
// EDGED_CROSS_OUT naming a file: the run writes its inputs and outputs there, and a
// native run of TestPureGoMatchesORT with EDGED_PUREGO_WANT naming that file checks the
// outputs against ONNX Runtime on the same inputs.
const (
	envPureGoOut  = "EDGED_CROSS_OUT"
	envPureGoWant = "EDGED_PUREGO_WANT"
)

// pgRecord is one run of every demo model: the preprocessed inputs and the outputs.
type pgRecord struct {
	GOARCH  string     `json:"goarch"`
	Backend string     `json:"backend"`
	Models  []pgFrames `json:"models"`
}

type pgFrames struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Frames  int       `json:"frames"`
	Input   []float32 `json:"input"`
	Output  []float32 `json:"output"`
}

// pgFramesPerModel keeps the emulated run short: el-defect is about 10 million
// multiply-adds a frame.
const pgFramesPerModel = 6

// pgInputs makes each demo model's input frames through edged's own preprocessing:
// simulator images from a seed never used for training, and scalar readings spread
// over three standard deviations around each model's training mean.
func pgInputs(t testing.TB) []pgFrames {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.Seed = 20261129
	cfg.DefectRate = 0.5
	g, err := sim.NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	rng := rand.New(rand.NewPCG(7, 11))
	var out []pgFrames
	for _, name := range demo.Names() {
		m, _, err := demo.LoadNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		pre, err := inference.NewPreprocessor(m.Preprocess)
		if err != nil {
			t.Fatal(err)
		}
		n := pgFrameLen(m.Inputs[0].Shape)
		f := pgFrames{Name: m.Name, Version: m.Version, Frames: pgFramesPerModel, Input: make([]float32, pgFramesPerModel*n)}
		for i := range pgFramesPerModel {
			r := &drivers.Reading{}
			if m.Preprocess.Kind != models.PreprocessScalars {
				pix := make([]byte, w*h)
				g.Next(pix)
				r.Image = &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: pix}
			} else {
				r.Scalars = map[string]float64{}
				for j, feat := range m.Preprocess.Features {
					r.Scalars[feat] = float64(m.Preprocess.Mean[j]) + (6*rng.Float64()-3)*float64(m.Preprocess.Std[j])
				}
			}
			if err := pre.FillReading(f.Input[i*n:(i+1)*n], r); err != nil {
				t.Fatalf("model %s frame %d: %v", name, i, err)
			}
		}
		out = append(out, f)
	}
	return out
}

func pgFrameLen(shape []int64) int {
	n := 1
	for _, d := range shape[1:] {
		n *= int(d)
	}
	return n
}

// runFrames loads a model on be and infers the frames' inputs in one batch.
func runFrames(t *testing.T, be inference.Backend, f pgFrames, opts inference.SessionOptions) []float32 {
	t.Helper()
	m, onnx, err := demo.LoadNamed(f.Name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := be.Load(m, onnx, opts)
	if err != nil {
		t.Fatalf("%s: %v", be.Name(), err)
	}
	defer s.Close()
	b, err := s.NewBatch(f.Frames)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	copy(b.Input, f.Input)
	if err := s.Run(context.Background(), b); err != nil {
		t.Fatalf("%s %s on %s: %v", f.Name, f.Version, be.Name(), err)
	}
	return append([]float32(nil), b.Output...)
}

// maxDiff is the largest absolute difference between a and b and its index; NaN or
// a length mismatch count as infinitely far.
func maxDiff(a, b []float32) (float64, int) {
	if len(a) != len(b) {
		return math.Inf(1), -1
	}
	worst, at := 0.0, -1
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if math.IsNaN(d) {
			return math.Inf(1), i
		}
		if d > worst || at < 0 {
			worst, at = d, i
		}
	}
	return worst, at
}

// Every demo model runs on the pure-Go backend, one frame at a time and as a batch
// over two goroutines, with the same outputs either way. On an emulated riscv64 run
// the record goes to EDGED_CROSS_OUT for the native comparison with ONNX Runtime.
func TestPureGoDemoModels(t *testing.T) {
	pg := inference.OpenPureGo()
	defer pg.Close()
	rec := pgRecord{GOARCH: runtime.GOARCH, Backend: pg.Name()}
	for _, f := range pgInputs(t) {
		batched := runFrames(t, pg, f, inference.SessionOptions{IntraOpThreads: 2})
		n := len(f.Input) / f.Frames
		for i := range f.Frames {
			one := f
			one.Frames, one.Input = 1, f.Input[i*n:(i+1)*n]
			got := runFrames(t, pg, one, inference.SessionOptions{IntraOpThreads: 1})
			k := len(got)
			if d, at := maxDiff(got, batched[i*k:(i+1)*k]); d != 0 {
				t.Errorf("%s frame %d: alone and in a batch differ by %g at %d", f.Name, i, d, at)
			}
		}
		for i, v := range batched {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Errorf("%s: output %d is %v", f.Name, i, v)
			}
		}
		f.Output = batched
		rec.Models = append(rec.Models, f)
		t.Logf("%s %s: %d frames, first output %v", f.Name, f.Version, f.Frames, batched[:len(batched)/f.Frames])
	}
	if path := os.Getenv(envPureGoOut); path != "" {
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The pure-Go backend, through edged's own pre- and post-processing, keeps the demo
// model's verdicts on held-out simulator images.
func TestPureGoDemoAccuracy(t *testing.T) {
	m, onnx, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	s, err := inference.OpenPureGo().Load(m, onnx, inference.SessionOptions{IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pre, err := inference.NewPreprocessor(m.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	post, err := inference.NewPostprocessor(m.Postprocess, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sim.DefaultConfig()
	cfg.Seed = 20261127 // never used for training or validation
	cfg.DefectRate = 0.5
	g, err := sim.NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	// Few images: the interpreter under -race, or under emulation, takes a good
	// fraction of a second for each. TestPureGoMatchesORT holds the outputs to
	// ONNX Runtime's; this holds the verdicts to the truth.
	n := 64
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		n = 32
	}
	b, err := s.NewBatch(16)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pix := make([]byte, w*h)
	truth := make([]string, b.N)
	right := 0
	var v inference.Verdict
	for done := 0; done < n; done += b.N {
		for i := range b.N {
			truth[i] = g.Next(pix)
			in, _ := b.Frame(i)
			if err := pre.Fill(in, &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: pix}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Run(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		for i := range b.N {
			_, out := b.Frame(i)
			if err := post.Apply(out, &v); err != nil {
				t.Fatal(err)
			}
			if (v.Verdict == inference.VerdictNG) == (truth[i] != sim.LabelOK) {
				right++
			}
		}
	}
	acc := float64(right) / float64(n)
	t.Logf("pure-Go el-defect: verdict accuracy %.3f on %d held-out images", acc, n)
	if acc < 0.9 {
		t.Errorf("verdict accuracy %.3f on %d held-out images, want at least 0.9", acc, n)
	}
}

func TestPureGoRefusesWhatItCannotRun(t *testing.T) {
	pg := inference.OpenPureGo()
	checkLoadRefuses(t, pg, loadCase{func(m *models.Manifest) { m.Outputs = append(m.Outputs, m.Outputs[0]) }, "one input and one output"})
	m, onnx, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	// A later default-domain opset import overrides the first; 18 moved ReduceMean's
	// axes into an input, which the interpreter does not read.
	opset18 := append([]byte(nil), onnx...)
	opset18 = append(opset18, 0x42, 0x02, 0x10, 18) // field 8 (opset_import) { version: 18 }
	if _, err := pg.Load(m, opset18, inference.SessionOptions{}); err == nil || !strings.Contains(err.Error(), "opset 18") {
		t.Errorf("opset 18: %v", err)
	}
	// onnxbuild's linear model multiplies with MatMul, which no demo model uses.
	lin, err := onnxbuild.Linear("x", []int64{4}, "y", 2, make([]float32, 8), make([]float32, 2))
	if err != nil {
		t.Fatal(err)
	}
	lm := &models.Manifest{Name: "linear", Version: "1",
		Inputs:  []models.Tensor{{Name: "x", DType: "float32", Shape: []int64{-1, 4}}},
		Outputs: []models.Tensor{{Name: "y", DType: "float32", Shape: []int64{-1, 2}}}}
	if _, err := pg.Load(lm, lin, inference.SessionOptions{}); err == nil || !strings.Contains(err.Error(), "operator MatMul is not supported") ||
		!strings.Contains(err.Error(), "model linear 1") {
		t.Errorf("MatMul model: %v", err)
	}
}

func TestPureGoSessionContract(t *testing.T) {
	m, onnx, err := demo.LoadNamed(demo.VibISO)
	if err != nil {
		t.Fatal(err)
	}
	pg := inference.OpenPureGo()
	s, err := pg.Load(m, onnx, inference.SessionOptions{ExecutionProviders: []string{"TensorRT", "CUDA", "CPU"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.MaxBatch() < 64 {
		t.Errorf("max batch %d for a dynamic batch", s.MaxBatch())
	}
	if _, err := s.NewBatch(0); err == nil {
		t.Error("a batch of 0 frames was made")
	}
	b, err := s.NewBatch(4)
	if err != nil {
		t.Fatal(err)
	}
	if b.InputLen != 3 || b.OutputLen != 2 || len(b.Input) != 12 || len(b.Output) != 8 {
		t.Fatalf("batch sizes: in %d/%d out %d/%d", b.InputLen, len(b.Input), b.OutputLen, len(b.Output))
	}
	// A partial batch leaves the later frames' outputs alone.
	for i := range b.Output {
		b.Output[i] = 42
	}
	if err := b.Use(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if b.Output[3] == 42 || b.Output[4] != 42 || b.Output[7] != 42 {
		t.Errorf("partial batch of 2 wrote %v", b.Output)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx, b); !errors.Is(err, context.Canceled) {
		t.Errorf("run with a cancelled context: %v", err)
	}
	other, err := pg.Load(m, onnx, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Run(context.Background(), b); err == nil {
		t.Error("a session ran another session's batch")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background(), b); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("run after close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Run(context.Background(), b); err == nil {
		t.Error("a closed batch ran")
	}
}

func TestOpenBackendNames(t *testing.T) {
	be, err := inference.Open(inference.BackendPureGo, "")
	if err != nil || be.Name() != "purego" {
		t.Fatalf("open purego: %v %v", be, err)
	}
	if info := inference.Describe(be); info.Name != "purego" || !strings.Contains(info.Version, "opsets") || info.Library.Path != "" {
		t.Errorf("describe purego: %+v", info)
	}
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := inference.Open("tensorflow", ""); err == nil || !strings.Contains(err.Error(), `runtime.backend "tensorflow"`) {
		t.Errorf("unknown backend: %v", err)
	}
	ops := inference.PureGoOperators()
	if len(ops) == 0 || !strings.Contains(strings.Join(ops, " "), "Conv") {
		t.Errorf("operators: %v", ops)
	}
}

// BenchmarkPureGo runs each demo model on the pure-Go backend alone, one thread, so
// it also runs on boards and under emulation where ONNX Runtime does not.
func BenchmarkPureGo(b *testing.B) {
	pg := inference.OpenPureGo()
	for _, f := range pgInputs(b) {
		b.Run(f.Name, func(b *testing.B) {
			m, onnx, err := demo.LoadNamed(f.Name)
			if err != nil {
				b.Fatal(err)
			}
			s, err := pg.Load(m, onnx, inference.SessionOptions{IntraOpThreads: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			bt, err := s.NewBatch(f.Frames)
			if err != nil {
				b.Fatal(err)
			}
			defer bt.Close()
			copy(bt.Input, f.Input)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(4 * len(bt.Input)))
			for b.Loop() {
				if err := s.Run(ctx, bt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*f.Frames)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}
