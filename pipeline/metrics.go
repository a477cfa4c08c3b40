package pipeline

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/publish"
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
	unknown      *prometheus.CounterVec
	modelInfo    *prometheus.GaugeVec
}

// collector reads the pipeline's own counters at scrape time, so the metrics and the
// accounting the tests assert are one and the same numbers.
type collector struct {
	p                                                     *Pipeline
	frames, inFlight, ring, up, rate, limit, misses, late *prometheus.Desc
	samples, resets                                       *prometheus.Desc
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
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_unknown_verdicts_total",
			Help: "UNKNOWN verdicts by inspection and reason: degraded (inference breaker open) or error (preprocessing or the model failed). Each carries the inspection's fail-safe action.",
		}, []string{"inspection", "reason"}),
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
			"Current rate of the source after backpressure: the driver's own pace where it reports one, else the measured rate of accepted frames.", []string{"source"}, nil),
		limit: prometheus.NewDesc("edged_source_rate_limit_hz",
			"The rate controller's limit for the source; 0 while the source runs at its own pace.", []string{"source"}, nil),
		misses: prometheus.NewDesc("edged_deadline_misses_total",
			"Frames that missed their verdict deadline: dropped as stale before inference, or published late.", []string{"source"}, nil),
		samples: prometheus.NewDesc("edged_window_samples_total",
			"Samples a windowed source's driver gave, before they became windows (frames).", []string{"source"}, nil),
		resets: prometheus.NewDesc("edged_window_resets_total",
			"Times a windowed source's window started over instead of mixing two runs of samples: gap (samples missing), restart (sequence going back), clock (time going back or jumping), missing_channel.", []string{"source", "reason"}, nil),
		late: prometheus.NewDesc("edged_frames_late_total",
			"Frames published after their deadline (also in edged_deadline_misses_total).", []string{"source"}, nil),
	}
	for _, col := range []prometheus.Collector{m.inferSeconds, m.batchSize, m.verdicts, m.unknown, m.modelInfo, c} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register pipeline metrics: %w", err)
		}
	}
	// Every series the dashboards and alert rules read exists at zero from the start:
	// increase() and rate() see nothing of a series' first event otherwise, so the first
	// NG or UNKNOWN of an inspection would never count.
	for name := range p.byIns {
		for _, v := range []string{publish.VerdictOK, publish.VerdictNG, publish.VerdictUnknown} {
			m.verdicts.WithLabelValues(name, v)
		}
		for _, reason := range []string{publish.ReasonDegraded, publish.ReasonError} {
			m.unknown.WithLabelValues(name, reason)
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
	ch <- c.limit
	ch <- c.misses
	ch <- c.late
	ch <- c.samples
	ch <- c.resets
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
		ch <- prometheus.MustNewConstMetric(c.ring, prometheus.GaugeValue, s.occupancy(), "source:"+name)
		up := 0.0
		if s.up.Load() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, name)
		rate := math.Float64frombits(s.arrival.Load())
		if rr, ok := s.driver.(RateReporter); ok {
			rate = rr.RateHz()
		}
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, rate, name)
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, math.Float64frombits(s.limit.Load()), name)
		late := s.late.Load()
		ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(n.DroppedStale+late), name)
		ch <- prometheus.MustNewConstMetric(c.late, prometheus.CounterValue, float64(late), name)
		if s.win != nil {
			ch <- prometheus.MustNewConstMetric(c.samples, prometheus.CounterValue, float64(s.win.samples.Load()), name)
			for reason, n := range s.win.resets() {
				ch <- prometheus.MustNewConstMetric(c.resets, prometheus.CounterValue, float64(n), name, reason)
			}
		}
	}
}
