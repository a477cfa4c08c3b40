package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"
)

var inspections = []string{"cap-presence", "label-skew"}

// makeResults gives n results spread over inspections, numbered per inspection.
func makeResults(n int) []*Result {
	seq := map[string]uint64{}
	out := make([]*Result, n)
	for i := range out {
		insp := inspections[i%len(inspections)]
		seq[insp]++
		out[i] = &Result{
			TraceID:    fmt.Sprintf("trace-%d", i),
			Inspection: insp,
			Source:     "cam1",
			Seq:        seq[insp],
			CapturedAt: time.Date(2025, 1, 2, 3, 4, 5, i, time.UTC),
			Verdict:    VerdictOK,
			Label:      "ok",
			Score:      0.99,
			Scores:     map[string]float64{"ok": 0.99, "ng": 0.01},
			Model:      ModelRef{Name: "m", Version: "1", SHA256: "abc"},
			LatencyMS:  Latency{Queue: 1, Infer: 2, Total: 3},
		}
		if i%7 == 3 {
			// Some frames the model could not judge, so payloads carry reason and action.
			out[i].Verdict, out[i].Reason, out[i].Action = VerdictUnknown, ReasonDegraded, "divert"
		}
	}
	return out
}

func publishAll(t testing.TB, p *running, results []*Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, r := range results {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
}

// TestDeliversEveryResultInOrder publishes a burst and checks, from an independent
// subscriber, that every result arrives once, on its inspection's topic, decodable, and in
// order per inspection.
func TestDeliversEveryResultInOrder(t *testing.T) {
	const n = 500
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			url := bk.start(t)
			cfg := testConfig(url)
			var onResult atomic.Int64
			cfg.OnResult = func(r *Result, err error) {
				if err != nil {
					t.Errorf("OnResult(%s): %v", r.ID, err)
				}
				onResult.Add(1)
			}
			sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
			p := startPublisher(t, cfg)
			results := makeResults(n)
			publishAll(t, p, results)

			byID := map[string]*Result{}
			for _, r := range results {
				byID[r.ID] = r
			}
			lastSeq := map[string]uint64{}
			for range n {
				m := sub.next(t, "results")
				var got Result
				if err := json.Unmarshal(m.Payload(), &got); err != nil {
					t.Fatalf("payload on %s is not a result: %v: %s", m.Topic(), err, m.Payload())
				}
				want, ok := byID[got.ID]
				if !ok {
					t.Fatalf("unknown or repeated result id %q", got.ID)
				}
				delete(byID, got.ID)
				if !reflect.DeepEqual(&got, want) {
					t.Fatalf("result differs:\n got %+v\nwant %+v", got, *want)
				}
				if m.Topic() != p.ResultTopic(got.Inspection) || m.Topic() != "edged/v1/s1/l1/n1/result/"+got.Inspection {
					t.Fatalf("result of %s on topic %s", got.Inspection, m.Topic())
				}
				if got.Seq != lastSeq[got.Inspection]+1 {
					t.Fatalf("%s: seq %d after %d", got.Inspection, got.Seq, lastSeq[got.Inspection])
				}
				lastSeq[got.Inspection] = got.Seq
				if got.V != ResultVersion || got.Node != "n1" {
					t.Fatalf("publisher did not fill v and node: %+v", got)
				}
			}

			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st != (Stats{Accepted: n, Acked: n}) {
				t.Errorf("stats %+v, want %d accepted and acked", st, n)
			}
			if got := onResult.Load(); got != n {
				t.Errorf("OnResult called %d times, want %d", got, n)
			}
			// online + results + offline, all at QoS 1.
			if got := p.metric(t, "edged_mqtt_published_total", "qos", "1"); got != n+2 {
				t.Errorf("edged_mqtt_published_total{qos=1} = %v, want %d", got, n+2)
			}
			for name, want := range map[string]float64{
				"edged_mqtt_publish_errors_total": 0,
				"edged_mqtt_connected":            0,
				"edged_mqtt_queue_depth":          0,
				"edged_mqtt_inflight":             0,
			} {
				if got := p.metric(t, name); got != want {
					t.Errorf("%s = %v after Run, want %v", name, got, want)
				}
			}
		})
	}
}

// TestStatusRetained checks the birth and the clean-shutdown status as a late
// subscriber (a dashboard opened later) sees them.
func TestStatusRetained(t *testing.T) {
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			url := bk.start(t)
			p := startPublisher(t, testConfig(url))
			waitFor(t, "birth acknowledged", func() bool { return p.metric(t, "edged_mqtt_published_total", "qos", "1") >= 1 })
			if !p.Connected() || p.metric(t, "edged_mqtt_connected") != 1 {
				t.Fatal("not connected after the birth was acknowledged")
			}

			m := subscribe(t, url, p.StatusTopic()).nextStatus(t, p.StatusTopic())
			if string(m.Payload()) != StatusOnline || !m.Retained() {
				t.Fatalf("late subscriber got %q (retained %v), want retained %q", m.Payload(), m.Retained(), StatusOnline)
			}

			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			m = subscribe(t, url, p.StatusTopic()).nextStatus(t, p.StatusTopic())
			if string(m.Payload()) != StatusOffline || !m.Retained() {
				t.Fatalf("after Run: got %q (retained %v), want retained %q", m.Payload(), m.Retained(), StatusOffline)
			}
		})
	}
}

// TestLastWillAndRebirth cuts the publisher's connection without a DISCONNECT: the
// broker must publish the will (`offline`), and the publisher must reconnect and
// announce itself again.
func TestLastWillAndRebirth(t *testing.T) {
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			url := bk.start(t)
			px := startProxy(t, url)
			p := startPublisher(t, testConfig(px.url()))
			waitFor(t, "birth acknowledged", func() bool { return p.metric(t, "edged_mqtt_published_total", "qos", "1") >= 1 })
			sub := subscribe(t, url, "edged/v1/s1/l1/n1/status")
			if m := sub.nextStatus(t, p.StatusTopic()); string(m.Payload()) != StatusOnline {
				t.Fatalf("first status %q, want %q", m.Payload(), StatusOnline)
			}

			px.sever()
			// A broker may deliver the birth twice (as retained and live) when the
			// subscription races it; a missing will shows as a timeout here.
			m := sub.nextStatus(t, p.StatusTopic())
			for string(m.Payload()) == StatusOnline {
				m = sub.nextStatus(t, p.StatusTopic())
			}
			if string(m.Payload()) != StatusOffline {
				t.Fatalf("status after the cut %q, want the will %q", m.Payload(), StatusOffline)
			}
			if m := sub.nextStatus(t, p.StatusTopic()); string(m.Payload()) != StatusOnline {
				t.Fatalf("status after reconnecting %q, want %q", m.Payload(), StatusOnline)
			}
			p.waitConnected(t)
			if !strings.Contains(p.log.String(), "mqtt connection lost; reconnecting") {
				t.Error("the connection loss was not logged")
			}
		})
	}
}

// TestReconnectLosesNothing cuts the connection twice in the middle of a stream: every
// result must still arrive (at least once) and be counted acknowledged.
func TestReconnectLosesNothing(t *testing.T) {
	const n = 600
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			url := bk.start(t)
			px := startProxy(t, url)
			cfg := testConfig(px.url())
			cfg.MaxInflight = 32
			sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
			p := startPublisher(t, cfg)
			results := makeResults(n)

			done := make(chan struct{})
			go func() {
				defer close(done)
				publishAll(t, p, results)
			}()
			for _, at := range []uint64{n / 4, n / 2} {
				waitFor(t, fmt.Sprintf("%d results acknowledged", at), func() bool { return p.Stats().Acked >= at })
				px.sever()
			}
			<-done

			missing := map[string]bool{}
			for _, r := range results {
				missing[r.ID] = true
			}
			t.Cleanup(func() {
				for _, r := range results {
					if missing[r.ID] {
						t.Logf("never delivered: %s (%s seq %d)", r.ID, r.TraceID, r.Seq)
					}
				}
			})
			dups := 0
			for len(missing) > 0 {
				m := sub.next(t, fmt.Sprintf("%d more results", len(missing)))
				var got Result
				if err := json.Unmarshal(m.Payload(), &got); err != nil {
					t.Fatal(err)
				}
				if !missing[got.ID] {
					dups++
				}
				delete(missing, got.ID)
			}
			t.Logf("%d duplicates (allowed: delivery is at least once)", dups)
			waitFor(t, "all acknowledged", func() bool { return p.Stats().Acked == n })
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st.Accepted != n || st.Acked != n || st.Failed != 0 {
				t.Errorf("stats %+v, want %d accepted and acked, none failed", st, n)
			}
		})
	}
}

func TestPublishEvent(t *testing.T) {
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	p := startPublisher(t, testConfig(url))
	sub := subscribe(t, url, p.EventTopic())
	fields := map[string]any{"model": "cap-presence", "from": "2", "to": "3"}
	if err := p.PublishEvent(context.Background(), "model_swap", fields); err != nil {
		t.Fatal(err)
	}
	m := sub.next(t, "the event")
	var ev Event
	if err := json.Unmarshal(m.Payload(), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != "model_swap" || ev.Node != "n1" || ev.V != 1 || ev.ID == "" || ev.Time.IsZero() || !reflect.DeepEqual(ev.Fields, fields) {
		t.Errorf("event %+v", ev)
	}
	if err := p.PublishEvent(context.Background(), "bad", func() {}); err == nil {
		t.Error("an unencodable event was accepted")
	}
}

func TestPublishAlert(t *testing.T) {
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	p := startPublisher(t, testConfig(url))
	if got, want := p.AlertTopic("modbus_dpi"), "edged/v1/s1/l1/n1/alert/modbus_dpi"; got != want {
		t.Fatalf("alert topic %q, want %q", got, want)
	}
	sub := subscribe(t, url, p.AlertTopic("modbus_dpi"))
	fields := map[string]any{"class": "flood", "client": "10.0.3.7:50122"}
	if err := p.PublishAlert(context.Background(), "modbus_dpi", fields); err != nil {
		t.Fatal(err)
	}
	m := sub.next(t, "the alert")
	var ev Event
	if err := json.Unmarshal(m.Payload(), &ev); err != nil {
		t.Fatal(err)
	}
	if m.Topic() != p.AlertTopic("modbus_dpi") || ev.Kind != "modbus_dpi" || ev.Node != "n1" || ev.ID == "" || !reflect.DeepEqual(ev.Fields, fields) {
		t.Errorf("alert on %s: %+v", m.Topic(), ev)
	}
	for _, kind := range []string{"", "a/b", "x+", "#"} {
		if err := p.PublishAlert(context.Background(), kind, fields); err == nil {
			t.Errorf("alert kind %q accepted", kind)
		}
	}
}

// TestPublishBlocksWhenQueueFull: Publish pushes back instead of dropping, and gives up
// only when its context ends.
func TestPublishBlocksWhenQueueFull(t *testing.T) {
	cfg := testConfig("tcp://" + freeAddr(t))
	cfg.QueueSize = 2
	p, err := NewPublisher(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	results := makeResults(3)
	for _, r := range results[:2] {
		if err := p.Publish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Publish(ctx, results[2]) }()
	select {
	case err := <-errc:
		t.Fatalf("Publish returned %v with the queue full", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish after cancel: %v, want context.Canceled", err)
	}
	if st := p.Stats(); st.Accepted != 2 {
		t.Errorf("accepted %d, want 2", st.Accepted)
	}
}

// TestUnreachableBroker: an unreachable broker is one clear error line, not a failure;
// Run stays up, stops cleanly, and connects once the broker appears.
func TestUnreachableBroker(t *testing.T) {
	addr := freeAddr(t)
	cfg := testConfig("tcp://" + addr)
	cfg.MaxReconnectInterval = 50 * time.Millisecond
	p := startPublisher(t, cfg)

	want := fmt.Sprintf("mqtt broker tcp://%s unreachable: dial tcp %s: connect: connection refused; check mqtt.broker and that the broker is running", addr, addr)
	waitFor(t, "several connection attempts", func() bool { return strings.Count(p.log.String(), "mqtt connect attempt failed") >= 3 })
	logs := p.log.String()
	if !strings.Contains(logs, want) {
		t.Fatalf("log lacks %q:\n%s", want, logs)
	}
	if n := strings.Count(logs, "level=ERROR"); n != 1 {
		t.Errorf("%d error lines for one outage, want 1:\n%s", n, logs)
	}
	if p.Connected() || p.metric(t, "edged_mqtt_connected") != 0 {
		t.Error("connected to nothing")
	}

	// A result published during the outage is delivered once the broker is there.
	r := makeResults(1)[0]
	if err := p.Publish(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if got := p.metric(t, "edged_mqtt_queue_depth"); got != 1 {
		t.Errorf("queue depth %v, want 1", got)
	}
	startBroker(t, addr)
	sub := subscribe(t, "tcp://"+addr, "edged/v1/s1/l1/n1/result/#")
	p.waitConnected(t)
	waitFor(t, "the queued result acknowledged", func() bool { return p.Stats().Acked == 1 })
	// The subscriber may have joined after the result passed; what matters here is the
	// acknowledgement, and that a result published now arrives.
	r2 := makeResults(2)[1]
	if err := p.Publish(context.Background(), r2); err != nil {
		t.Fatal(err)
	}
	for {
		var got Result
		if err := json.Unmarshal(sub.next(t, "a result").Payload(), &got); err != nil {
			t.Fatal(err)
		}
		if got.ID == r2.ID {
			break
		}
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownWithoutBroker: with no broker, Run still returns promptly after cancel,
// and every accepted result is reported undelivered rather than vanishing.
func TestShutdownWithoutBroker(t *testing.T) {
	cfg := testConfig("tcp://" + freeAddr(t))
	cfg.DrainTimeout = 100 * time.Millisecond
	var mu sync.Mutex
	failed := map[string]error{}
	cfg.OnResult = func(r *Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		failed[r.ID] = err
	}
	p := startPublisher(t, cfg)
	results := makeResults(3)
	publishAll(t, p, results)

	start := time.Now()
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %s to return", d)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range results {
		if err := failed[r.ID]; !errors.Is(err, ErrNotDelivered) {
			t.Errorf("result %s: OnResult error %v, want ErrNotDelivered", r.ID, err)
		}
	}
	if st := p.Stats(); st != (Stats{Accepted: 3, Failed: 3}) {
		t.Errorf("stats %+v", st)
	}
	if err := p.Publish(context.Background(), makeResults(1)[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Run: %v, want ErrClosed", err)
	}
	if err := p.Run(context.Background()); err == nil {
		t.Error("a second Run was accepted")
	}
}

func TestPublishRejectsBadInspection(t *testing.T) {
	p, err := NewPublisher(testConfig("tcp://127.0.0.1:1883"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, insp := range []string{"", "a/b", "x+", "#"} {
		r := makeResults(1)[0]
		r.Inspection = insp
		if err := p.Publish(context.Background(), r); err == nil {
			t.Errorf("inspection %q accepted", insp)
		}
	}
	if err := p.Publish(context.Background(), nil); err == nil {
		t.Error("nil result accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := testConfig("tcp://127.0.0.1:1883")
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no broker", func(c *Config) { c.Broker = "" }, "mqtt.broker: missing"},
		{"bad scheme", func(c *Config) { c.Broker = "http://u:secret@h:1" }, `mqtt.broker: "http://u:xxxxx@h:1" has scheme "http"`},
		{"no host", func(c *Config) { c.Broker = "tcp://" }, `mqtt.broker: "tcp://" has no host`},
		{"qos", func(c *Config) { c.QoS = new(byte(3)) }, "mqtt.qos: 3 is not one of 0, 1, 2"},
		{"site slash", func(c *Config) { c.Site = "a/b" }, `mqtt.site: "a/b" must not contain`},
		{"empty node", func(c *Config) { c.Node = "" }, `mqtt.node: "" is empty`},
		{"wildcard line", func(c *Config) { c.Line = "#" }, `mqtt.line: "#" must not contain`},
		{"keep alive", func(c *Config) { c.KeepAlive = 10 * time.Millisecond }, "mqtt.keep_alive: 10ms is below 1s"},
		{"negative timeout", func(c *Config) { c.ConnectTimeout = -time.Second }, "mqtt.connect_timeout: -1s is negative"},
		{"inflight", func(c *Config) { c.MaxInflight = 70000 }, "mqtt.max_inflight: 70000 is out of range 1..16384"},
		{"queue", func(c *Config) { c.QueueSize = -1 }, "mqtt.queue_size: -1 is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the password: %v", err)
			}
			if _, err := NewPublisher(c, nil, nil); err == nil {
				t.Error("NewPublisher accepted the config")
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := testConfig("tcp://127.0.0.1:1883")
	c.ClientID = ""
	d := c.withDefaults()
	if d.ClientID != "edged-s1-l1-n1" || *d.QoS != 1 || d.MaxInflight != DefaultMaxInflight ||
		d.QueueSize != DefaultQueueSize || d.KeepAlive != DefaultKeepAlive || d.DrainTimeout != 5*time.Second {
		t.Errorf("defaults: %+v", d)
	}
	c.QoS = new(byte(0))
	if *c.withDefaults().QoS != 0 {
		t.Error("an explicit QoS 0 was replaced by the default")
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewPublisher(testConfig("tcp://127.0.0.1:1883"), reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPublisher(testConfig("tcp://127.0.0.1:1883"), reg, nil); err == nil {
		t.Error("a second publisher registered the same metrics")
	}
}

func TestConnectProblem(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w : %w", packets.ErrorNetworkError, errors.New("dial tcp 10.0.0.5:1883: i/o timeout")),
			"mqtt broker tcp://b:1 unreachable: dial tcp 10.0.0.5:1883: i/o timeout; check mqtt.broker and that the broker is running"},
		{fmt.Errorf("%w : %w", packets.ErrorNetworkError, nil),
			"closed the connection during the MQTT handshake"},
		{packets.ErrorRefusedNotAuthorised, "refused the connection: not Authorized; check mqtt.username and mqtt.password"},
	} {
		if got := connectProblem("tcp://b:1", tc.err, certAskedNot); !strings.Contains(got, tc.want) {
			t.Errorf("connectProblem(%v) = %q, want it to contain %q", tc.err, got, tc.want)
		}
	}
}

func TestSessionStoreOrderAndAck(t *testing.T) {
	s := newSessionStore()
	for _, k := range []string{"o.9", "o.3", "o.7", "i.1"} {
		s.Put(k, nil)
	}
	if got := s.All(); !reflect.DeepEqual(got, []string{"o.9", "o.3", "o.7", "i.1"}) {
		t.Errorf("All() = %v, want insertion order", got)
	}
	ch, waiting := s.waitAck(3)
	if !waiting {
		t.Fatal("o.3 not pending")
	}
	s.Del("i.1")
	select {
	case <-ch:
		t.Fatal("an inbound delete woke the waiter")
	default:
	}
	s.Del("o.3")
	<-ch
	if _, waiting := s.waitAck(3); waiting {
		t.Error("o.3 still pending after its delete")
	}
}
