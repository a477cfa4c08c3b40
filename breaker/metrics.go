package breaker

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the result label of edged_breaker_calls_total.
const (
	resultSuccess  = "success"
	resultFailure  = "failure"
	resultRejected = "rejected"
)

// Metrics are the breaker metrics of a process, one set shared by all its breakers and
// labelled by breaker name. A nil *Metrics records nothing.
type Metrics struct {
	state       *prometheus.Desc
	transitions *prometheus.CounterVec
	calls       *prometheus.CounterVec

	mu       sync.Mutex
	breakers map[string]*Breaker
}

// NewMetrics makes the breaker metrics and registers them with reg, which may be nil:
//
//	edged_breaker_state{name}              0 closed, 1 half-open, 2 open
//	edged_breaker_transitions_total{name,to}
//	edged_breaker_calls_total{name,result} result: success, failure, rejected
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		state: prometheus.NewDesc("edged_breaker_state",
			"Circuit breaker state: 0 closed (calls go through), 1 half-open (probe calls go through), 2 open (calls are refused).",
			[]string{"name"}, nil),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_breaker_transitions_total",
			Help: "Circuit breaker state changes, by the state changed to: closed, half_open, open.",
		}, []string{"name", "to"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_breaker_calls_total",
			Help: "Calls through a circuit breaker by outcome: success, failure, or rejected (refused while open, or while half-open with its probes out); calls given up (context canceled) are not counted.",
		}, []string{"name", "result"}),
		breakers: map[string]*Breaker{},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{stateCollector{m}, m.transitions, m.calls} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register breaker metrics: %w", err)
			}
		}
	}
	return m, nil
}

// add makes b the breaker reported under its name, and its series visible at zero.
func (m *Metrics) add(b *Breaker) *series {
	m.mu.Lock()
	m.breakers[b.cfg.Name] = b
	m.mu.Unlock()
	s := &series{}
	for i, st := range []State{Closed, HalfOpen, Open} {
		s.transitions[i] = m.transitions.WithLabelValues(b.cfg.Name, st.String())
	}
	s.success = m.calls.WithLabelValues(b.cfg.Name, resultSuccess)
	s.failure = m.calls.WithLabelValues(b.cfg.Name, resultFailure)
	s.rejected = m.calls.WithLabelValues(b.cfg.Name, resultRejected)
	return s
}

// series are one breaker's counters; a nil *series counts nothing.
type series struct {
	transitions                [3]prometheus.Counter // by the State changed to
	success, failure, rejected prometheus.Counter
}

func (s *series) call(result string) {
	if s == nil {
		return
	}
	switch result {
	case resultSuccess:
		s.success.Inc()
	case resultFailure:
		s.failure.Inc()
	default:
		s.rejected.Inc()
	}
}

func (s *series) transition(to State) {
	if s != nil {
		s.transitions[to].Inc()
	}
}

// stateCollector reports each breaker's state as of the scrape: an open breaker turns
// half-open when asked after its timeout, not by a timer, so a gauge set on changes
// would go on saying open.
type stateCollector struct{ m *Metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.state }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	bs := make([]*Breaker, 0, len(c.m.breakers))
	for _, b := range c.m.breakers {
		bs = append(bs, b)
	}
	c.m.mu.Unlock()
	// Outside m.mu: State takes the breaker's lock, under which it may log and count a
	// transition.
	for _, b := range bs {
		ch <- prometheus.MustNewConstMetric(c.m.state, prometheus.GaugeValue, float64(b.State()), b.cfg.Name)
	}
}
