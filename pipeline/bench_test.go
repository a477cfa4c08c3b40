package pipeline

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/publish"
)

// feeder emits n frames as fast as the pipeline takes them (block), copying cached
// simulator images into pooled readings as a camera driver would.
type feeder struct {
	n     int
	imgs  [][]byte
	truth []string
	w, h  int
	done  chan struct{}
}

func newFeeder(tb testing.TB, n int) *feeder {
	g, err := sim.NewGenerator(sim.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	f := &feeder{n: n, done: make(chan struct{})}
	f.w, f.h = g.Size()
	for range 32 {
		buf := make([]byte, f.w*f.h)
		f.truth = append(f.truth, g.Next(buf))
		f.imgs = append(f.imgs, buf)
	}
	return f
}

func (f *feeder) Run(ctx context.Context, e drivers.Emitter) error {
	e.Health(true, nil)
	for i := range f.n {
		r := drivers.AcquireReading()
		copy(r.SetImage(drivers.FormatGray8, f.w, f.h, f.w*f.h), f.imgs[i%len(f.imgs)])
		r.Truth = f.truth[i%len(f.imgs)]
		e.Emit(ctx, r)
	}
	close(f.done)
	<-ctx.Done()
	return nil
}

// counter is a sink that counts results and signals when it has seen n.
type counter struct {
	n, want int64
	all     chan struct{}
}

func (c *counter) Publish(_ context.Context, _ *publish.Result) error {
	if atomic.AddInt64(&c.n, 1) == c.want {
		close(c.all)
	}
	return nil
}

// benchPipeline pushes b.N frames through the demo model with the given batch limit
// and reports frames/s: BenchmarkPipelineBatch1 against BenchmarkPipelineBatch8 is the
// batching ratio `make bench` prints.
func benchPipeline(b *testing.B, maxBatch int) {
	o := orttest.Open(b)
	m, sess := orttest.Demo(b, o)
	f := newFeeder(b, b.N)
	sink := &counter{want: int64(b.N), all: make(chan struct{})}
	p, err := New(Config{
		RingSize: 256, Workers: 1, MaxBatch: maxBatch, MaxWait: time.Millisecond,
		Sink: sink, Registerer: prometheus.NewRegistry(),
	}, []Source{{Spec: drivers.Spec{Name: "cam", Budget: time.Minute}, Driver: f, Backpressure: Block}},
		[]Inspection{{Name: "el", Source: "cam", Model: &Model{Manifest: m, Session: sess}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { done <- p.Run(ctx) }()
	<-sink.all
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

func BenchmarkPipelineBatch1(b *testing.B) { benchPipeline(b, 1) }
func BenchmarkPipelineBatch8(b *testing.B) { benchPipeline(b, 8) }
