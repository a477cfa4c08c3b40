package modbus

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are shared by every Modbus source on one registry, told apart by the source
// label.
type metrics struct {
	requests   *prometheus.CounterVec
	exceptions *prometheus.CounterVec
}

// registerMetrics registers the driver's counters on first Run, not in New, which
// has no side effects. A second source on the same registry reuses the counters the
// first registered.
func (d *Driver) registerMetrics() {
	d.metricsOnce.Do(func() {
		reg := d.spec.Registerer
		if reg == nil {
			return
		}
		m := &metrics{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "edged_modbus_requests_total",
				Help: "Modbus requests by source, function (read_holding, read_input, read_coil, read_discrete, write_coil, write_holding) and result (ok, exception, error).",
			}, []string{"source", "function", "result"}),
			exceptions: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "edged_modbus_exceptions_total",
				Help: "Modbus exception answers by source and exception code.",
			}, []string{"source", "code"}),
		}
		m.requests = registerOrReuse(reg, m.requests)
		m.exceptions = registerOrReuse(reg, m.exceptions)
		if m.requests == nil || m.exceptions == nil {
			d.logger().Warn("modbus metrics not registered: a different collector holds their names")
			return
		}
		d.metrics.Store(m)
	})
}

func registerOrReuse(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing
		}
	}
	return nil
}

// count records one request's outcome.
func (d *Driver) count(function string, err error) {
	m := d.metrics.Load()
	if m == nil || errors.Is(err, errCancelled) {
		return // a request abandoned at shutdown says nothing about the device
	}
	result := "ok"
	var exc *ExceptionError
	switch {
	case errors.As(err, &exc):
		result = "exception"
		m.exceptions.WithLabelValues(d.spec.Name, strconv.Itoa(int(exc.Code))).Inc()
	case err != nil:
		result = "error"
	}
	m.requests.WithLabelValues(d.spec.Name, function, result).Inc()
}
