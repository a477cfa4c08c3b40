// Package perf provides edged's throughput benchmark: the full pipeline (frames replayed
// from memory, preprocessing, inference, postprocessing, MQTT QoS 1 publish to the
// embedded broker) measured against a bare loop of session runs on pre-made tensors,
// with the same model and threads in the same run, so their ratio is edged's overhead.
package perf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/pipeline"
	"github.com/edgedrun/edged/publish"
)

// Options choose what to measure.
type Options struct {
	// Frames per measured round.
	Frames int
	// Rounds of paired measurements (bare loop, then pipeline).
	Rounds  int
	Workers int
	Session inference.SessionOptions
	// Distinct pre-rendered frames, cycled.
	Distinct int
	// Round, when set, is called after each paired round with the rounds done.
	Round func(done int)
}

// Report holds one run's figures.
type Report struct {
	Frames      int
	BareFPS     float64
	PipelineFPS float64
	// Ratio is the median over rounds of pipeline/bare, each pair measured back to back,
	// so that load from elsewhere on the box falls on both sides of each pair alike.
	Ratio             float64
	BestRatio         float64 // best pipeline round over best bare round
	PipelineAllocs    float64 // Go heap allocations per frame in the pipeline run
	BareAllocs        float64 // Go heap allocations per run in the bare loop
	AllocsOutsideORT  float64 // PipelineAllocs - BareAllocs
	PipelineBytes     float64 // Go heap bytes per frame in the pipeline run
	RenderFPS         float64 // simulator images rendered per second, one core
	RenderAllocs      float64
	Workers           int
	IntraOpThreads    int
	Model             string
	PipelineRoundsFPS []float64
	BareRoundsFPS     []float64
}

// DefaultOptions are what `make bench` runs.
func DefaultOptions() Options {
	return Options{Frames: 1000, Rounds: 15, Workers: 1, Distinct: 64, Session: inference.SessionOptions{IntraOpThreads: 1}}
}

// Run measures with the given backend and model.
func Run(ctx context.Context, backend inference.Backend, m *models.Manifest, onnx []byte, o Options) (*Report, error) {
	if o.Frames < 1 || o.Rounds < 1 || o.Workers < 1 || o.Distinct < 1 {
		return nil, fmt.Errorf("perf: frames %d, rounds %d, workers %d and distinct %d must be at least 1", o.Frames, o.Rounds, o.Workers, o.Distinct)
	}
	sess, err := backend.Load(m, onnx, o.Session)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	frames, renderFPS, renderAllocs, err := render(o.Distinct, o.Frames)
	if err != nil {
		return nil, err
	}
	rep := &Report{Frames: o.Frames, RenderFPS: renderFPS, RenderAllocs: renderAllocs, Workers: o.Workers,
		IntraOpThreads: o.Session.IntraOpThreads, Model: m.Name + " " + m.Version}

	bare, err := newBareLoop(sess, m, frames)
	if err != nil {
		return nil, err
	}
	defer bare.close()
	// Warm both paths once so neither pays first-run costs in a measured round.
	if _, _, err := bare.run(ctx, min(o.Frames, 200)); err != nil {
		return nil, err
	}
	if _, _, _, err := runPipeline(ctx, sess, m, frames, min(o.Frames, 200), o.Workers); err != nil {
		return nil, err
	}
	for round := range o.Rounds {
		// Alternate so drift in machine load falls on both alike.
		fps, allocs, err := bare.run(ctx, o.Frames)
		if err != nil {
			return nil, err
		}
		rep.BareRoundsFPS = append(rep.BareRoundsFPS, fps)
		if fps > rep.BareFPS {
			rep.BareFPS, rep.BareAllocs = fps, allocs
		}
		pfps, pallocs, pbytes, err := runPipeline(ctx, sess, m, frames, o.Frames, o.Workers)
		if err != nil {
			return nil, err
		}
		rep.PipelineRoundsFPS = append(rep.PipelineRoundsFPS, pfps)
		if pfps > rep.PipelineFPS {
			rep.PipelineFPS, rep.PipelineAllocs, rep.PipelineBytes = pfps, pallocs, pbytes
		}
		if o.Round != nil {
			o.Round(round + 1)
		}
	}
	ratios := make([]float64, len(rep.BareRoundsFPS))
	for i := range ratios {
		ratios[i] = rep.PipelineRoundsFPS[i] / rep.BareRoundsFPS[i]
	}
	slices.Sort(ratios)
	rep.Ratio = ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		rep.Ratio = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	}
	rep.BestRatio = rep.PipelineFPS / rep.BareFPS
	rep.AllocsOutsideORT = rep.PipelineAllocs - rep.BareAllocs
	return rep, nil
}

// render makes the frames both paths use, and times the simulator on its own.
func render(distinct, n int) ([]*drivers.Image, float64, float64, error) {
	cfg := sim.DefaultConfig()
	cfg.Seed = 7
	g, err := sim.NewGenerator(cfg)
	if err != nil {
		return nil, 0, 0, err
	}
	w, h := g.Size()
	frames := make([]*drivers.Image, distinct)
	for i := range frames {
		buf := make([]byte, w*h)
		g.Next(buf)
		frames[i] = &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: buf}
	}
	buf := make([]byte, w*h)
	m0 := mallocs()
	t0 := time.Now()
	for range n {
		g.Next(buf)
	}
	el := time.Since(t0)
	return frames, float64(n) / el.Seconds(), float64(mallocs()-m0) / float64(n), nil
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

func heapBytes() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// bareLoop runs the session on tensors filled once, the fastest edged could ever go.
type bareLoop struct {
	sess    inference.Session
	batches []*inference.Batch
}

func newBareLoop(sess inference.Session, m *models.Manifest, frames []*drivers.Image) (*bareLoop, error) {
	pre, err := inference.NewPreprocessor(m.Preprocess)
	if err != nil {
		return nil, err
	}
	b := &bareLoop{sess: sess}
	for _, f := range frames {
		bt, err := sess.NewBatch(1)
		if err != nil {
			b.close()
			return nil, err
		}
		b.batches = append(b.batches, bt)
		if err := pre.Fill(bt.Input, f); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

func (b *bareLoop) run(ctx context.Context, n int) (fps, allocsPerRun float64, err error) {
	m0 := mallocs()
	t0 := time.Now()
	for i := range n {
		if err := b.sess.Run(ctx, b.batches[i%len(b.batches)]); err != nil {
			return 0, 0, err
		}
	}
	el := time.Since(t0)
	return float64(n) / el.Seconds(), float64(mallocs()-m0) / float64(n), nil
}

func (b *bareLoop) close() {
	for _, bt := range b.batches {
		bt.Close()
	}
}

// replay is a driver that emits pre-rendered frames as fast as the pipeline takes them,
// easing off while the ring is above the slow-down mark so that no frame is dropped.
type replay struct {
	frames []*drivers.Image
	n      int
}

func (r *replay) Run(ctx context.Context, e drivers.Emitter) error {
	pr, ok := e.(drivers.PressureReader)
	if !ok {
		return errors.New("replay: the emitter cannot report pressure")
	}
	e.Health(true, nil)
	for i := 0; i < r.n; {
		if ctx.Err() != nil {
			return nil
		}
		p := e.Emit(ctx, &drivers.Reading{Image: r.frames[i%len(r.frames)]})
		if !p.Accepted {
			return errors.New("replay: the ring refused a frame; the benchmark would not count it")
		}
		i++
		// Above the slow-down mark the ring holds dozens of frames, milliseconds of
		// work, so a millisecond's nap never starves the workers and costs the box
		// far fewer wake-ups than polling.
		for p.SlowDown() && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
			p = pr.Pressure()
		}
	}
	<-ctx.Done()
	return nil
}

// runPipeline publishes n frames through a fresh pipeline, publisher and embedded broker
// and returns frames/s from the first emit to the last broker acknowledgement.
func runPipeline(ctx context.Context, sess inference.Session, m *models.Manifest, frames []*drivers.Image, n, workers int) (fps, allocs, bytes float64, err error) {
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	broker := publish.NewBroker("127.0.0.1:0", log)
	brokerErr := make(chan error, 1)
	go func() { brokerErr <- broker.Run(ctx) }()
	select {
	case <-broker.Ready():
	case err := <-brokerErr:
		return 0, 0, 0, fmt.Errorf("perf: embedded broker: %w", err)
	}
	acked := make(chan struct{}, n)
	qos := byte(1)
	reg := prometheus.NewRegistry()
	breakers, err := breaker.NewMetrics(reg)
	if err != nil {
		return 0, 0, 0, err
	}
	pub, err := publish.NewPublisher(publish.Config{
		Broker: "tcp://" + broker.Addr(), ClientID: "edged-bench", QoS: &qos, BreakerMetrics: breakers,
		Site: "bench", Line: "bench", Node: "bench",
		OnResult: func(_ *publish.Result, err error) {
			if err == nil {
				acked <- struct{}{}
			}
		},
	}, reg, log)
	if err != nil {
		return 0, 0, 0, err
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pubCtx) }()
	defer func() {
		stopPub()
		<-pubDone
		cancel()
		<-brokerErr
	}()
	src := &replay{frames: frames, n: n}
	p, err := pipeline.New(pipeline.Config{
		Identity: pipeline.Identity{Node: "bench"}, RingSize: 64, Workers: workers,
		Sink: pub, Registerer: reg, Breakers: breakers, Log: log,
	}, []pipeline.Source{{Spec: drivers.Spec{Name: "replay"}, Driver: src}},
		[]pipeline.Inspection{{Name: "bench", Source: "replay", Model: &pipeline.Model{Manifest: m, Session: sess}}})
	if err != nil {
		return 0, 0, 0, err
	}
	// Connect before the clock starts: the broker handshake is not per-frame work.
	for deadline := time.Now().Add(10 * time.Second); !pub.Connected(); {
		if time.Now().After(deadline) {
			return 0, 0, 0, errors.New("perf: publisher did not connect to the embedded broker")
		}
		time.Sleep(time.Millisecond)
	}
	pipeCtx, stopPipe := context.WithCancel(ctx)
	pipeDone := make(chan error, 1)
	m0, b0 := mallocs(), heapBytes()
	t0 := time.Now()
	go func() { pipeDone <- p.Run(pipeCtx) }()
	timeout := time.NewTimer(5 * time.Minute)
	defer timeout.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-acked:
		case <-timeout.C:
			stopPipe()
			<-pipeDone
			return 0, 0, 0, fmt.Errorf("perf: only %d of %d results acknowledged in 5 minutes", i, n)
		}
	}
	el := time.Since(t0)
	m1, b1 := mallocs(), heapBytes()
	stopPipe()
	<-pipeDone
	c, _ := p.Counts("replay")
	if c.Published != uint64(n) || !c.Balanced() {
		return 0, 0, 0, fmt.Errorf("perf: pipeline counts %+v after %d frames", c, n)
	}
	return float64(n) / el.Seconds(), float64(m1-m0) / float64(n), float64(b1-b0) / float64(n), nil
}
