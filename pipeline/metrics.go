package pipeline

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RateReporter is implemented by drivers that can say their current rate (after
// backpressure), shown as edged_source_rate_hz.
type RateReporter interface {
	RateHz() float64
}

type metrics struct {
	inferSeconds prometheus.Histogram
	batchSize    prometheus.Histogram
	verdicts     *prometheus.CounterVec
	modelInfo    *prometheus.GaugeVec
}

// collector reads the pipeline's own counters at scrape time, so the metrics and the
// accounting the tests assert are one and the same numbers.
type collector struct {
	p                                *Pipeline
	frames, inFlight, ring, up, rate *prometheus.Desc
}

func newMetrics(reg prometheus.Registerer, p *Pipeline) (*metrics, error) {
	m := &metrics{
		inferSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edged_inference_seconds",
			Help:    "Time to run the model on one batch and postprocess its outputs.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edged_batch_size",
			Help:    "Frames per inference batch.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_verdicts_total",
			Help: "Verdicts published, by inspection and verdict (OK, NG, UNKNOWN).",
		}, []string{"inspection", "verdict"}),
		modelInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_model_info",
			Help: "The active model of each name: 1 for the loaded version.",
		}, []string{"name", "version", "sha256"}),
	}
	c := &collector{
		p: p,
		frames: prometheus.NewDesc("edged_frames_total",
			"Frames by source and outcome: accepted = published + dropped_* + error + in flight.",
			[]string{"source", "outcome"}, nil),
		inFlight: prometheus.NewDesc("edged_frames_in_flight",
			"Frames accepted and not yet published or dropped, by source.", []string{"source"}, nil),
		ring: prometheus.NewDesc("edged_ring_occupancy",
			"Fill level (0..1) of each stage's ring.", []string{"stage"}, nil),
		up: prometheus.NewDesc("edged_driver_up",
			"1 while the source's device is reachable.", []string{"source"}, nil),
		rate: prometheus.NewDesc("edged_source_rate_hz",
			"Current rate of the source after backpressure.", []string{"source"}, nil),
	}
	for _, col := range []prometheus.Collector{m.inferSeconds, m.batchSize, m.verdicts, m.modelInfo, c} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register pipeline metrics: %w", err)
		}
	}
	return m, nil
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.frames
	ch <- c.inFlight
	ch <- c.ring
	ch <- c.up
	ch <- c.rate
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.p.sources {
		n := s.counts()
		name := s.spec.Name
		for _, o := range []struct {
			outcome string
			v       uint64
		}{
			{OutcomeAccepted, n.Accepted},
			{OutcomePublished, n.Published},
			{OutcomeDroppedFull, n.DroppedFull},
			{OutcomeDroppedStale, n.DroppedStale},
			{OutcomeError, n.Errors},
			{OutcomeDroppedShutdown, n.DroppedShutdown},
		} {
			ch <- prometheus.MustNewConstMetric(c.frames, prometheus.CounterValue, float64(o.v), name, o.outcome)
		}
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(n.InFlight), name)
		ch <- prometheus.MustNewConstMetric(c.ring, prometheus.GaugeValue, s.ring.Occupancy(), "source:"+name)
		up := 0.0
		if s.up.Load() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, name)
		if rr, ok := s.driver.(RateReporter); ok {
			ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, rr.RateHz(), name)
		}
	}
}
