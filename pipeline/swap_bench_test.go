package pipeline

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models/demo"
)

// BenchmarkSwapLatency runs el-defect under a steady paced load, then under the same
// load with a swap between two loaded versions every 100ms, and reports the p99 of
// the frames' total latency (capture to hand-over) in each phase and their ratio: what
// a swap costs the line. Each iteration is a bounded run of 2 x swapPhaseFrames frames.
// Both versions are warmed up first, as the swap manager does before a swap.
func BenchmarkSwapLatency(b *testing.B) {
	const (
		swapPhaseFrames = 5000
		warmup          = 200 // frames left out of the steady phase
		every           = 100 * time.Millisecond
	)
	o := orttest.Open(b)
	versions := [2]*Model{loadVersion(b, o, demo.Name, "1", nil), loadVersion(b, o, demo.Name, "2", nil)}
	for _, m := range versions {
		warm(b, m)
	}
	var steady, swapping []float64
	var swaps int
	b.ReportAllocs()
	for range b.N {
		drv := newPacer(b, 2*swapPhaseFrames, 4)
		phase := make(chan struct{})
		drv.before = func(seq uint64) {
			if seq == swapPhaseFrames+1 {
				close(phase)
			}
		}
		s := &swapSink{lead: "el", window: drv.window}
		p, err := New(Config{
			RingSize: 256, Workers: 1, MaxBatch: 4, MaxWait: time.Millisecond,
			Sink: s, Registerer: prometheus.NewRegistry(),
		}, []Source{{Spec: drivers.Spec{Name: "cam"}, Driver: drv, Backpressure: Block}},
			[]Inspection{{Name: "el", Source: "cam", Model: versions[0]}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		var n atomic.Int64
		swapped := make(chan error, 1)
		go func() {
			<-phase
			t := time.NewTicker(every)
			defer t.Stop()
			for k := 1; ; k++ {
				select {
				case <-drv.done:
					swapped <- nil
					return
				case <-t.C:
				}
				_, idle, err := p.SwapModel(versions[k%2])
				if err != nil {
					swapped <- err
					return
				}
				n.Add(1)
				select {
				case <-idle:
				case <-time.After(10 * time.Second):
					swapped <- context.DeadlineExceeded
					return
				}
			}
		}()
		if err := <-swapped; err != nil {
			b.Fatal(err)
		}
		// The last frames are at most the pacer's window away.
		for end := time.Now().Add(time.Minute); s.frames.Load() < 2*swapPhaseFrames; {
			if time.Now().After(end) {
				b.Fatalf("%d of %d frames judged after a minute", s.frames.Load(), 2*swapPhaseFrames)
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		swaps += int(n.Load())
		for _, r := range s.results() {
			switch {
			case r.seq <= warmup:
			case r.seq <= swapPhaseFrames:
				steady = append(steady, r.total)
			default:
				swapping = append(swapping, r.total)
			}
		}
	}
	b.StopTimer()
	sp, wp := p99(steady), p99(swapping)
	b.ReportMetric(sp, "steady-p99-ms")
	b.ReportMetric(wp, "swap-p99-ms")
	b.ReportMetric(wp/sp, "p99-ratio")
	b.ReportMetric(float64(swaps)/float64(b.N), "swaps/op")
}

func p99(ms []float64) float64 {
	if len(ms) == 0 {
		return 0
	}
	slices.Sort(ms)
	return ms[(len(ms)*99)/100]
}

// warm runs a session once for each batch size the benchmark gathers, as the swap
// manager warms a model before it swaps it in: the first runs of a session pay for
// ONNX Runtime's allocations, which are not the swap's cost.
func warm(b *testing.B, m *Model) {
	bt, err := m.Session.NewBatch(4)
	if err != nil {
		b.Fatal(err)
	}
	defer bt.Close()
	for k := 1; k <= 4; k++ {
		if err := bt.Use(k); err != nil {
			b.Fatal(err)
		}
		if err := m.Session.Run(context.Background(), bt); err != nil {
			b.Fatal(err)
		}
	}
}
