//go:build cgo

package inference_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models/demo"
)

// BenchmarkBackends runs el-defect on the same batch of simulator images with ONNX
// Runtime and with the pure-Go backend, alternating in every iteration so that both
// see the same machine load, and reports each one's frames/s and their ratio.
func BenchmarkBackends(b *testing.B) {
	o := orttest.Open(b)
	pg := inference.OpenPureGo()
	m, onnx, err := demo.Load()
	if err != nil {
		b.Fatal(err)
	}
	pre, err := inference.NewPreprocessor(m.Preprocess)
	if err != nil {
		b.Fatal(err)
	}
	cfg := sim.DefaultConfig()
	cfg.DefectRate = 0.5
	g, err := sim.NewGenerator(cfg)
	if err != nil {
		b.Fatal(err)
	}
	w, h := g.Size()
	const frames = 16
	for _, threads := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("el-defect/batch=%d/threads=%d", frames, threads), func(b *testing.B) {
			opts := inference.SessionOptions{IntraOpThreads: threads}
			var sess [2]inference.Session
			var batch [2]*inference.Batch
			for i, be := range []inference.Backend{o, pg} {
				if sess[i], err = be.Load(m, onnx, opts); err != nil {
					b.Fatal(err)
				}
				defer sess[i].Close()
				if batch[i], err = sess[i].NewBatch(frames); err != nil {
					b.Fatal(err)
				}
				defer batch[i].Close()
			}
			pix := make([]byte, w*h)
			for f := range frames {
				g.Next(pix)
				in, _ := batch[0].Frame(f)
				if err := pre.Fill(in, &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: pix}); err != nil {
					b.Fatal(err)
				}
			}
			copy(batch[1].Input, batch[0].Input)
			ctx := context.Background()
			var spent [2]time.Duration
			b.ReportAllocs()
			b.SetBytes(int64(2 * 4 * len(batch[0].Input)))
			b.ResetTimer()
			for b.Loop() {
				for i := range sess {
					start := time.Now()
					if err := sess[i].Run(ctx, batch[i]); err != nil {
						b.Fatal(err)
					}
					spent[i] += time.Since(start)
				}
			}
			n := float64(b.N * frames)
			ortFPS, pgFPS := n/spent[0].Seconds(), n/spent[1].Seconds()
			b.ReportMetric(ortFPS, "ort-frames/s")
			b.ReportMetric(pgFPS, "purego-frames/s")
			b.ReportMetric(pgFPS/ortFPS, "purego/ort")
		})
	}
}
