package swap_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/swap"
)

// BenchmarkPush: a full push (verify, stream into the repository with fsync, load,
// check, warm-up, golden, activate, prune to 3) of a small model while the line runs.
// Reports the time of each step, so a slow disk or load shows where it costs.
func BenchmarkPush(b *testing.B) {
	l := newLine(b, lineOpts{})
	ctx := context.Background()
	ms := make([]*models.Manifest, b.N)
	bodies := make([][]byte, b.N)
	for i := range b.N {
		ms[i], bodies[i] = l.signed("b"+strconv.Itoa(i), good)
	}
	b.SetBytes(ms[0].Size)
	b.ReportAllocs()
	steps := map[string]float64{}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		rep, err := l.mgr.Push(ctx, pushReq(ms[i], bodies[i]))
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range rep.Steps {
			steps[s.Name] += s.TookMS
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pushes/s")
	for _, s := range []string{swap.StepInstalled, swap.StepLoaded, swap.StepWarmed, swap.StepActivated} {
		b.ReportMetric(steps[s]/float64(b.N), s+"_ms/op")
	}
}

// BenchmarkActivate: switching between two installed versions under a light frame
// load; each op is one swap (load, check, warm-up, golden, pointer fsync, swap).
func BenchmarkActivate(b *testing.B) {
	l := newLine(b, lineOpts{})
	ctx := context.Background()
	m, onnx := l.signed("2", good)
	if _, err := l.mgr.Push(ctx, pushReq(m, onnx)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		v := "1"
		if i%2 == 1 {
			v = "2"
		}
		if _, err := l.mgr.Activate(ctx, modelName, v, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "swaps/s")
}
