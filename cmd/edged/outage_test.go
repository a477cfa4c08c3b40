package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedrun/edged/internal/testmqtt"
)

// TestBrokerOutageUnderLoad: the broker goes away while the line runs at a rate the
// worker keeps up with. While it is down the publisher's breaker opens, results go to
// the spool and /readyz says not ready; once it is back the breaker closes, the spool
// drains, and a subscriber with a persistent session sees every published seq: no gap
// (duplicates are allowed, QoS 1). Conservation holds in every scrape throughout.
func TestBrokerOutageUnderLoad(t *testing.T) {
	// Persistence keeps the subscriber's session and its queue across the restart, so
	// what edged replays before the subscriber is back waits for it in the broker.
	srv := testmqtt.StartServer(t, testmqtt.Options{Persistence: true})
	l := newLoadLine(t, srv.URL())
	l.RateHz, l.Cache = 200, 32
	l.MQTTExtra = ", breaker: {window: 2s, min_calls: 5, open_timeout: 1s}"
	l.write(t)
	down := soakOr(5*time.Second, 20*time.Second)

	c := subscribePersistent(t, srv.URL(), l.testLine)
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	waitMetric(t, p, l.httpAddr, `edged_frames_total{outcome="accepted",source="cam"}`, 1, 30*time.Second)
	w := newWatcher(p, l)
	w.run(t, soakOr(2*time.Second, 5*time.Second), 250*time.Millisecond)
	c.waitFor(t, 1, 10*time.Second)
	before := w.step(t)
	if st := before.m[`edged_breaker_state{name="mqtt"}`]; st != 0 {
		t.Fatalf("mqtt breaker state %v with the broker up, want 0 (closed)", st)
	}

	// The outage: at least `down`, and until the breaker, the spool and /readyz have all
	// shown it (bounded: 5s more).
	srv.Stop()
	stopped := time.Now()
	var openAt, spoolAt, notReadyAt time.Duration
	var spoolPeak float64
	for {
		s := w.step(t)
		since := time.Since(stopped)
		if openAt == 0 && s.m[`edged_breaker_state{name="mqtt"}`] == 2 {
			openAt = since
		}
		if n := s.m["edged_mqtt_spool_records"]; n > 0 {
			spoolPeak = max(spoolPeak, n)
			if spoolAt == 0 {
				spoolAt = since
			}
		}
		if notReadyAt == 0 && readyStatus(l.httpAddr) == 503 {
			notReadyAt = since
		}
		seen := openAt > 0 && spoolAt > 0 && notReadyAt > 0
		if (since >= down && seen) || since >= down+5*time.Second {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	outage := time.Since(stopped)
	downAt := w.samples[len(w.samples)-1]
	t.Logf("broker down %v: mqtt breaker open after %s, results spooled after %s (peak %v records), /readyz 503 after %s; %v frames published meanwhile",
		outage.Round(time.Millisecond), after(openAt), after(spoolAt), spoolPeak, after(notReadyAt),
		frames(downAt.m, "published")-frames(before.m, "published"))
	calls := func(m map[string]float64, result string) float64 {
		return m[`edged_breaker_calls_total{name="mqtt",result="`+result+`"}`]
	}
	t.Logf("mqtt breaker calls during the outage: %v failed, %v succeeded, %v refused (window 2s, min_calls 5)",
		calls(downAt.m, "failure")-calls(before.m, "failure"), calls(downAt.m, "success")-calls(before.m, "success"),
		calls(downAt.m, "rejected")-calls(before.m, "rejected"))
	if openAt == 0 {
		t.Errorf("edged_breaker_state{name=\"mqtt\"} never reached 2 (open) in %v without a broker", outage.Round(time.Millisecond))
	}
	if spoolAt == 0 {
		t.Errorf("edged_mqtt_spool_records stayed 0 in %v without a broker", outage.Round(time.Millisecond))
	}
	if notReadyAt == 0 {
		t.Errorf("/readyz never answered 503 in %v without a broker", outage.Round(time.Millisecond))
	}
	// Recovery and delivery are checked whatever the above found.

	// Back up: the breaker closes, the spool drains, /readyz is ready again. edged's next
	// connection attempt may be up to its backoff cap (30s) away; 45s bounds the wait.
	srv.Start()
	started := time.Now()
	var closedAt, drainedAt, readyAt time.Duration
	for closedAt == 0 || drainedAt == 0 || readyAt == 0 {
		s := w.step(t)
		since := time.Since(started)
		if closedAt == 0 && s.m[`edged_breaker_state{name="mqtt"}`] == 0 {
			closedAt = since
		}
		if drainedAt == 0 && s.m["edged_mqtt_spool_records"] == 0 {
			drainedAt = since
		}
		if readyAt == 0 && readyStatus(l.httpAddr) == 200 {
			readyAt = since
		}
		if since > 45*time.Second {
			t.Fatalf("45s after the broker came back: mqtt breaker state %v, spool records %v, /readyz %d",
				s.m[`edged_breaker_state{name="mqtt"}`], s.m["edged_mqtt_spool_records"], readyStatus(l.httpAddr))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("broker back: mqtt breaker closed after %s, spool empty after %s, /readyz 200 after %s",
		after(closedAt), after(drainedAt), after(readyAt))

	// A little more live traffic, then the subscriber catches up with what edged had
	// published by a scrape, and edged stops.
	w.run(t, time.Second, 250*time.Millisecond)
	target := frames(w.step(t).m, "published")
	deadline := time.Now().Add(30 * time.Second)
	for float64(len(c.seqSet())) < target {
		if time.Now().After(deadline) {
			t.Fatalf("30s after recovery the subscriber has %d distinct results; edged had published %v", len(c.seqSet()), target)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := stopAndBalance(t, p, 20*time.Second)
	c.settle(300 * time.Millisecond)

	cam, spool := st["cam"], st["spool"]
	seqs := c.seqSet()
	var maxSeq uint64
	dups := 0
	for s, n := range seqs {
		maxSeq = max(maxSeq, s)
		dups += n - 1
	}
	t.Logf("stop line: cam %v; mqtt %v; spool %v; subscriber: %d distinct results (%d duplicates), seq 1..%d",
		cam, st["mqtt"], spool, len(seqs), dups, maxSeq)
	if spool["records"] != 0 {
		t.Fatalf("%d results left in the spool at a clean stop with the broker up", spool["records"])
	}
	if int64(len(seqs)) != cam["published"] {
		t.Errorf("the subscriber has %d distinct results; edged published %d", len(seqs), cam["published"])
	}
	// Frames not published (stale, errors) leave their seqs out; at this rate there are
	// none, and then the seqs are 1..published without a gap.
	if n := cam["dropped_full"] + cam["dropped_stale"] + cam["error"] + cam["dropped_shutdown"]; n != 0 {
		t.Errorf("%d frames dropped or failed at a rate the worker keeps up with: %v", n, cam)
	}
	var missing []uint64
	for s := uint64(1); s <= maxSeq; s++ {
		if seqs[s] == 0 {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d seqs missing between 1 and %d, first %v", len(missing), maxSeq, missing[:min(len(missing), 20)])
	}
}

// after formats the time from an event to when it was first seen; 0 means never.
func after(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.Round(time.Millisecond).String()
}

// subscribePersistent subscribes to l's results at QoS 1 with a persistent session
// (clean session off, a fixed client id), reconnecting when the broker returns: with a
// broker that keeps sessions, results published while it is away from the subscriber
// wait for it.
func subscribePersistent(t *testing.T, brokerURL string, l *testLine) *collector {
	t.Helper()
	c := &collector{}
	prefix := fmt.Sprintf("edged/v1/%s/%s/%s/result/", l.site, l.line, l.node)
	handle := func(_ mqtt.Client, m mqtt.Message) {
		if !strings.HasPrefix(m.Topic(), prefix) {
			return
		}
		var r map[string]any
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Errorf("result payload is not JSON: %v: %s", err, m.Payload())
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.results = append(c.results, r)
		c.raw = append(c.raw, append([]byte(nil), m.Payload()...))
		c.topics = append(c.topics, m.Topic())
	}
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).
		SetClientID(fmt.Sprintf("outage-sub-%d", time.Now().UnixNano())).
		SetCleanSession(false).SetOrderMatters(true).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetAutoReconnect(true).SetMaxReconnectInterval(250 * time.Millisecond).
		// Messages the broker queued for the session arrive before any Subscribe call
		// after a reconnect: the default handler takes them.
		SetDefaultPublishHandler(handle)
	c.client = mqtt.NewClient(opts)
	tok := c.client.Connect()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", brokerURL, tok.Error())
	}
	st := c.client.Subscribe(prefix+"#", 1, handle)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("subscribe: %v", st.Error())
	}
	t.Cleanup(func() { c.client.Disconnect(100) })
	return c
}
