package publish

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/spool"
)

// testBreaker decides within a test's patience: a 1s window, open for 300ms.
func testBreaker() breaker.Config {
	return breaker.Config{Window: time.Second, Bucket: 100 * time.Millisecond, MinCalls: 5, OpenTimeout: 300 * time.Millisecond}
}

// TestBreakerBrokerOutage: results flow at a steady rate when the way to the broker
// closes (the connection cut, every new one hung up on). The lost messages and the
// failed connection attempts open the breaker, and results go to the spool. Once the
// broker is reachable again the breaker turns half-open, the first replayed records
// are its probes, it closes, and the publisher goes back to direct sends: every result
// reaches the subscriber, first copies in order.
func TestBreakerBrokerOutage(t *testing.T) {
	const n, rate = 1000, 250.0
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	w := startProxy(t, trimScheme(url), withRecording)
	sub := startPersistentSub(t, url, "edged/v1/s1/l1/n1/result/#")
	sp, _ := openSpool(t, spool.Options{FsyncInterval: 10 * time.Millisecond})
	cfg := testConfig(w.url())
	cfg.Spool = sp
	cfg.MaxInflight = 32
	cfg.WriteTimeout = time.Second
	cfg.Breaker = testBreaker()
	out := newOutcomes()
	cfg.OnResult = out.onResult
	p := startPublisher(t, cfg)
	p.waitConnected(t)
	state := func() float64 { return p.metric(t, "edged_breaker_state", "name", "mqtt") }
	if got := state(); got != 0 {
		t.Fatalf("edged_breaker_state = %v before the outage, want 0", got)
	}

	results := makeResults(n)
	var published atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- publishPaced(t, p, results, rate, &published) }()

	waitFor(t, "results acknowledged", func() bool { return w.ackedCount() >= n/4 })
	w.setDown(true)
	w.sever()
	down := time.Now()
	waitFor(t, "the breaker open", func() bool { return state() == 2 })
	opened := time.Since(down)
	spooledWhileOpen := p.Stats().Spooled
	waitFor(t, "results spooled while open", func() bool { return sp.Len() > 0 && p.Stats().Spooled > spooledWhileOpen })
	if p.BreakerState() == breaker.Closed {
		t.Error("BreakerState closed while the broker is away")
	}
	w.setDown(false)

	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every result acknowledged, the spool empty, the breaker closed", func() bool {
		return w.ackedCount() == n && sp.Len() == 0 && !p.spooling.Load() && p.BreakerState() == breaker.Closed
	})
	waitFor(t, "the subscriber to have every result", func() bool { return sub.distinct() == n })
	got := sub.received()
	dups := checkFirstCopyOrder(t, "broker to subscriber", len(got), func(i int) (string, string, uint64) {
		return got[i].id, got[i].inspection, got[i].seq
	})
	w.checkSendOrder(t)
	if got := state(); got != 0 {
		t.Errorf("edged_breaker_state = %v after the outage, want 0", got)
	}
	for _, to := range []string{"open", "half_open", "closed"} {
		if got := p.metric(t, "edged_breaker_transitions_total", "name", "mqtt", "to", to); got < 1 {
			t.Errorf("edged_breaker_transitions_total{to=%s} = %v, want at least 1", to, got)
		}
	}
	if got := p.metric(t, "edged_breaker_calls_total", "name", "mqtt", "result", "failure"); got < float64(testBreaker().MinCalls) {
		t.Errorf("edged_breaker_calls_total{result=failure} = %v", got)
	}
	if logLines(p.log, "circuit breaker open: too many calls failed") < 1 || logLines(p.log, "circuit breaker closed") < 1 {
		t.Error("the breaker's opening and closing were not logged")
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	spooled := out.check(t, results)
	st := p.Stats()
	if st.Accepted != n || st.Acked+st.Spooled != n || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d results at %.0f/s: breaker open %s into the outage; %d spooled, %d redelivered, %d duplicates at the subscriber",
		n, rate, opened.Round(time.Millisecond), spooled, st.Redelivered, dups)
}

// TestBreakerOpenRefusesLiveSends: an open breaker keeps results off the wire although
// the connection is up: they go to the spool, and out only once the open timeout has
// passed, in order, behind what went before.
func TestBreakerOpenRefusesLiveSends(t *testing.T) {
	const before, during = 10, 20
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	w := startProxy(t, trimScheme(url), withRecording)
	sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
	sp, _ := openSpool(t, spool.Options{})
	cfg := testConfig(w.url())
	cfg.Spool = sp
	cfg.Breaker = testBreaker()
	cfg.Breaker.OpenTimeout = time.Second
	out := newOutcomes()
	cfg.OnResult = out.onResult
	p := startPublisher(t, cfg)
	p.waitConnected(t)
	results := makeResults(before + during)
	publishAll(t, p, results[:before])
	waitFor(t, "the first results acknowledged", func() bool { return p.Stats().Acked == before })

	// Failures from elsewhere open it; the broker is fine. (Taken before: the breaker
	// counts its open timeout from a moment after.)
	opened := time.Now()
	brk := p.brk.Load()
	for i := 0; brk.State() != breaker.Open; i++ {
		if i == 100 {
			t.Fatal("100 failures did not open the breaker")
		}
		brk.Record(errors.New("test failure"))
	}
	publishAll(t, p, results[before:])
	waitFor(t, "the new results spooled", func() bool { return p.Stats().Spooled == during })
	if time.Since(opened) < cfg.Breaker.OpenTimeout {
		if sent := len(w.sentResults()); sent != before {
			t.Errorf("%d results on the wire while the breaker is open, want the %d from before", sent, before)
		}
		if !p.Connected() || p.BreakerState() != breaker.Open {
			t.Errorf("connected %v, breaker %s; want connected and open", p.Connected(), p.BreakerState())
		}
	} else {
		t.Logf("spooling took longer than the open timeout; the wire was not checked")
	}

	for i, want := range results {
		m := sub.next(t, "a result")
		var got Result
		if err := json.Unmarshal(m.Payload(), &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID {
			t.Fatalf("result %d is %s seq %d, want %s seq %d", i, got.Inspection, got.Seq, want.Inspection, want.Seq)
		}
	}
	// The subscriber may have a result before the PUBACK passed the proxy.
	waitFor(t, "every result acknowledged", func() bool { return w.ackedCount() == before+during })
	for _, r := range results[before:] {
		acks := w.ackTimes(r.ID)
		if len(acks) == 0 {
			t.Fatalf("result %s not acknowledged", r.ID)
		}
		if early := opened.Add(cfg.Breaker.OpenTimeout).Sub(acks[0]); early > 0 {
			t.Errorf("result %s acknowledged %s before the breaker could let it through", r.ID, early)
		}
	}
	waitFor(t, "the breaker closed and direct sends again", func() bool {
		return p.BreakerState() == breaker.Closed && !p.spooling.Load() && sp.Len() == 0
	})
	if got := p.metric(t, "edged_breaker_calls_total", "name", "mqtt", "result", "rejected"); got < 1 {
		t.Errorf("edged_breaker_calls_total{result=rejected} = %v, want at least 1", got)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	if spooled := out.check(t, results); spooled != during {
		t.Errorf("%d results spooled, want %d", spooled, during)
	}
}

// TestBreakerWithoutSpool: without a spool, results wait in the queue while the
// breaker is open, and go out once it lets them.
func TestBreakerWithoutSpool(t *testing.T) {
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
	cfg := testConfig(url)
	cfg.Breaker = testBreaker()
	p := startPublisher(t, cfg)
	p.waitConnected(t)
	opened := time.Now()
	brk := p.brk.Load()
	for range 5 {
		brk.Record(errors.New("test failure"))
	}
	if brk.State() != breaker.Open {
		t.Fatal("5 failures did not open the breaker")
	}
	results := makeResults(20)
	publishAll(t, p, results)
	for i, want := range results {
		var got Result
		if err := json.Unmarshal(sub.next(t, "a result").Payload(), &got); err != nil {
			t.Fatal(err)
		}
		if i == 0 && time.Since(opened) < cfg.Breaker.OpenTimeout {
			t.Errorf("a result arrived %s after the breaker opened, before its open timeout", time.Since(opened))
		}
		if got.ID != want.ID {
			t.Fatalf("result %d is %s seq %d, want %s seq %d", i, got.Inspection, got.Seq, want.Inspection, want.Seq)
		}
	}
	waitFor(t, "the breaker closed, every result acknowledged", func() bool {
		return p.BreakerState() == breaker.Closed && p.Stats().Acked == 20
	})
	if st := p.Stats(); st.Spooled != 0 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestBreakerConfig: the publisher's breaker settings are checked with the rest.
func TestBreakerConfig(t *testing.T) {
	cfg := testConfig("tcp://127.0.0.1:1883")
	cfg.Breaker.FailureRatio = 1.5
	err := cfg.Validate()
	if want := `mqtt.breaker: breaker "mqtt": failure_ratio 1.5 is out of range (0,1)`; err == nil || err.Error() != want {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
	if _, err := NewPublisher(cfg, nil, nil); err == nil {
		t.Error("NewPublisher accepted the config")
	}

	// A shared set of breaker metrics is used as is.
	m, err := breaker.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg = testConfig("tcp://127.0.0.1:1883")
	cfg.Breaker.Name = "uplink"
	cfg.BreakerMetrics = m
	p, err := NewPublisher(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.BreakerState() != breaker.Closed || p.brk.Load().Config().Name != "uplink" || p.brk.Load().Config().MinCalls != breaker.DefaultMinCalls {
		t.Errorf("breaker %+v, state %s", p.brk.Load().Config(), p.BreakerState())
	}
}

// TestBreakerOpensWhileDisconnected: with nothing in flight when the broker goes away
// and reconnects backing off, the results that arrive meanwhile still open the breaker.
func TestBreakerOpensWhileDisconnected(t *testing.T) {
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	w := startProxy(t, trimScheme(url))
	sp, _ := openSpool(t, spool.Options{FsyncInterval: 10 * time.Millisecond})
	cfg := testConfig(w.url())
	cfg.Spool = sp
	cfg.Breaker = testBreaker()
	cfg.Breaker.MinCalls = 20
	p := startPublisher(t, cfg)
	p.waitConnected(t)
	w.setDown(true)
	w.sever()
	waitFor(t, "disconnected", func() bool { return !p.Connected() })
	for _, r := range makeResults(40) {
		if err := p.Publish(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the breaker open", func() bool { return p.BreakerState() == breaker.Open })
	w.setDown(false)
	waitFor(t, "the breaker closed after the broker came back", func() bool { return p.BreakerState() == breaker.Closed && sp.Len() == 0 })
}
