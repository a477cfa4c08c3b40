package dpi

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metricVecs are the proxy's collectors; proxies on one registry share them, told apart
// by the proxy label.
type metricVecs struct {
	frames    *prometheus.CounterVec
	anomalies *prometheus.CounterVec
	clients   *prometheus.GaugeVec
	refused   *prometheus.CounterVec
	forgotten *prometheus.CounterVec
	dials     *prometheus.CounterVec
}

func newMetricVecs() *metricVecs {
	return &metricVecs{
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_dpi_frames_total",
			Help: "Modbus ADUs the proxy framed, by proxy and direction (request, response).",
		}, []string{"proxy", "direction"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_dpi_anomalies_total",
			Help: "Anomalies seen, by proxy, class and action taken on the frame (alert: forwarded, block: dropped), rate-limited alerts included.",
		}, []string{"proxy", "class", "action"}),
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_dpi_clients",
			Help: "Clients connected through the proxy.",
		}, []string{"proxy"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_dpi_clients_refused_total",
			Help: "Clients closed at once because max_clients were connected.",
		}, []string{"proxy"}),
		forgotten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_dpi_transactions_forgotten_total",
			Help: "Outstanding requests forgotten because a client had too many in flight.",
		}, []string{"proxy"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_dpi_upstream_dial_failures_total",
			Help: "Connections to the PLC that failed; the client is closed.",
		}, []string{"proxy"}),
	}
}

// register puts the collectors on reg, reusing those another proxy registered first.
func (m *metricVecs) register(reg prometheus.Registerer) error {
	var errs []error
	m.frames = registerOrReuse(reg, m.frames, &errs)
	m.anomalies = registerOrReuse(reg, m.anomalies, &errs)
	m.clients = registerOrReuse(reg, m.clients, &errs)
	m.refused = registerOrReuse(reg, m.refused, &errs)
	m.forgotten = registerOrReuse(reg, m.forgotten, &errs)
	m.dials = registerOrReuse(reg, m.dials, &errs)
	return errors.Join(errs...)
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	*errs = append(*errs, err)
	return c
}

// metrics are one proxy's counters, resolved once so the frame path does no label
// lookups.
type metrics struct {
	frames    [2]prometheus.Counter             // by Direction
	anomalies [numClasses][2]prometheus.Counter // by class index, then 0 alert, 1 block
	clients   prometheus.Gauge
	refused   prometheus.Counter
	forgotten prometheus.Counter
	dials     prometheus.Counter
}

func (m *metricVecs) resolve(proxy string) *metrics {
	r := &metrics{
		clients:   m.clients.WithLabelValues(proxy),
		refused:   m.refused.WithLabelValues(proxy),
		forgotten: m.forgotten.WithLabelValues(proxy),
		dials:     m.dials.WithLabelValues(proxy),
	}
	r.frames[Request] = m.frames.WithLabelValues(proxy, "request")
	r.frames[Response] = m.frames.WithLabelValues(proxy, "response")
	for i, c := range Classes[:numClasses] {
		r.anomalies[i][0] = m.anomalies.WithLabelValues(proxy, string(c), string(ActionAlert))
		r.anomalies[i][1] = m.anomalies.WithLabelValues(proxy, string(c), string(ActionBlock))
	}
	return r
}
