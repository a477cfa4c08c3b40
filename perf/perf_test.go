package perf

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models/demo"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A short run checks the benchmark itself: both loops run, every frame is published
// and acknowledged, and the figures are sane. Speed targets live in `make bench`.
func TestRunSmall(t *testing.T) {
	o := orttest.Open(t)
	m, onnx, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Frames, opts.Rounds, opts.Distinct = 300, 1, 8
	rep, err := Run(context.Background(), o, m, onnx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BareFPS <= 0 || rep.PipelineFPS <= 0 || rep.Ratio <= 0 || rep.RenderFPS <= 0 {
		t.Fatalf("report %+v", rep)
	}
	t.Logf("bare %.0f/s pipeline %.0f/s ratio %.3f allocs/frame %.1f", rep.BareFPS, rep.PipelineFPS, rep.Ratio, rep.PipelineAllocs)
}

// BenchmarkPipeline reports the full pipeline's and the bare loop's rates and their
// ratio from one run.
func BenchmarkPipeline(b *testing.B) {
	o := orttest.Open(b)
	m, onnx, err := demo.Load()
	if err != nil {
		b.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Frames = max(b.N, 200)
	opts.Rounds = 1
	rep, err := Run(context.Background(), o, m, onnx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rep.PipelineFPS, "frames/s")
	b.ReportMetric(rep.BareFPS, "bare-frames/s")
	b.ReportMetric(rep.Ratio, "ratio")
	b.ReportMetric(rep.PipelineAllocs, "allocs/frame")
}
