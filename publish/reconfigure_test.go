package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/spool"
)

// passwordHook lets anonymous clients in (the test's subscribers) and named ones only
// with their password, which the test may change.
type passwordHook struct {
	mochi.HookBase
	mu    sync.Mutex
	users map[string]string
}

func (h *passwordHook) ID() string { return "test-passwords" }

func (h *passwordHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck}, []byte{b})
}

func (h *passwordHook) OnConnectAuthenticate(_ *mochi.Client, pk packets.Packet) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(pk.Connect.Username) == 0 {
		return true
	}
	pw, ok := h.users[string(pk.Connect.Username)]
	return ok && pw == string(pk.Connect.Password)
}

func (h *passwordHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

func (h *passwordHook) setPassword(user, pw string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users[user] = pw
}

// startAuthBroker runs a mochi broker that checks passwords, as the embedded one would
// with an auth hook, until the test ends.
func startAuthBroker(t *testing.T, users map[string]string) (string, *passwordHook) {
	t.Helper()
	log := testLog(t)
	srv := mochi.New(&mochi.Options{Logger: log})
	h := &passwordHook{users: users}
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(&staleAckHook{srv: srv}, nil); err != nil {
		t.Fatal(err)
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &tcpListener{ln: nl, log: log, conns: map[net.Conn]struct{}{}}
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return "tcp://" + ln.Address(), h
}

// TestReconfigureCredentials: a publisher refused for a wrong password connects at once
// when given the right one, without waiting out its backoff; later a password change
// while connected reconnects it in the middle of a stream, losing nothing, and without
// the will's `offline` in between.
func TestReconfigureCredentials(t *testing.T) {
	const n = 1500
	for _, withSpool := range []bool{true, false} {
		name := "spool"
		if !withSpool {
			name = "no spool"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			url, hook := startAuthBroker(t, map[string]string{"edged": "pw-old-1"})
			w := startProxy(t, trimScheme(url), withRecording)
			sub := startPersistentSub(t, url, "edged/v1/s1/l1/n1/result/#")
			cfg := testConfig(w.url())
			cfg.Username, cfg.Password = "edged", "pw-wrong-0"
			cfg.MaxReconnectInterval = time.Minute
			cfg.MaxInflight = 64
			if withSpool {
				cfg.Spool, _ = openSpool(t, spool.Options{FsyncInterval: 10 * time.Millisecond})
			}
			p := startPublisher(t, cfg)
			// Three refusals: the next attempt is due in 1s to 2s.
			waitFor(t, "three refused attempts", func() bool {
				return logLines(p.log, "refused the connection") == 1 && logLines(p.log, "mqtt connect attempt failed") >= 2
			})
			results := makeResults(n)
			publishAll(t, p, results[:100])

			l := cfg.Live()
			l.Password = "pw-old-1"
			start := time.Now()
			if err := p.Reconfigure(l); err != nil {
				t.Fatal(err)
			}
			p.waitConnected(t)
			if took := time.Since(start); took > 900*time.Millisecond {
				t.Errorf("connected %s after the new password, want at once", took)
			}
			status := subscribe(t, url, p.StatusTopic())
			if m := status.nextStatus(t, p.StatusTopic()); string(m.Payload()) != StatusOnline {
				t.Fatalf("status %q, want online", m.Payload())
			}

			done := make(chan struct{})
			go func() {
				defer close(done)
				publishAll(t, p, results[100:])
			}()
			waitFor(t, "results flowing", func() bool { return w.ackedCount() >= n/3 })
			conns := w.connAcks()
			hook.setPassword("edged", "pw-new-2")
			l.Password = "pw-new-2"
			if err := p.Reconfigure(l); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "a reconnection with the new password", func() bool { return w.connAcks() == conns+1 && p.Connected() })
			<-done
			waitFor(t, "the subscriber to have every result", func() bool { return sub.distinct() == n })
			got := sub.received()
			dups := checkFirstCopyOrder(t, "broker to subscriber", len(got), func(i int) (string, string, uint64) {
				return got[i].id, got[i].inspection, got[i].seq
			})
			if m := status.nextStatus(t, p.StatusTopic()); string(m.Payload()) != StatusOnline {
				t.Errorf("status %q after the reconnection, want online (the birth) and no offline before it", m.Payload())
			}
			if logLines(p.log, "mqtt reconnecting with new settings") != 1 {
				t.Error(`no single "mqtt reconnecting with new settings" line`)
			}
			if logs := p.log.String(); strings.Contains(logs, "pw-") {
				t.Error("a password reached the log")
			}
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st.Accepted != n || st.Acked+st.Spooled != n || st.Failed != 0 {
				t.Errorf("stats %+v", st)
			}
			line := p.log.String()
			if i := strings.Index(line, "mqtt reconnecting with new settings"); i >= 0 {
				line = line[i:]
				line = line[:strings.IndexByte(line, '\n')]
			}
			t.Logf("%d results, reconnected for a new password mid-stream (%s): %d duplicates at the subscriber", n, line, dups)
		})
	}
}

// TestReconfigureDrainTimesOut: a reconnect for new settings waits for what is in
// flight; a broker that never acknowledges makes it go ahead after the wait. What was
// in flight goes back to the spool, or without one stays in the session store, whose
// new client sends it again; at shutdown it is spooled or reported undelivered, none
// forgotten.
func TestReconfigureDrainTimesOut(t *testing.T) {
	const n = 20
	for _, withSpool := range []bool{true, false} {
		t.Run(map[bool]string{true: "spool", false: "no spool"}[withSpool], func(t *testing.T) {
			t.Parallel()
			sink := startSilentBroker(t)
			cfg := testConfig("tcp://" + sink)
			cfg.MaxInflight = 8
			cfg.DrainTimeout = 100 * time.Millisecond
			var sp *spool.Spool
			if withSpool {
				sp, _ = openSpool(t, spool.Options{})
				cfg.Spool = sp
			}
			out := newOutcomes()
			cfg.OnResult = out.onResult
			p := startPublisher(t, cfg)
			p.waitConnected(t)
			results := makeResults(n)
			publishAll(t, p, results)
			waitFor(t, "the window full", func() bool { return p.metric(t, "edged_mqtt_inflight") == 8 })
			l := cfg.Live()
			l.KeepAlive = 45 * time.Second
			if err := p.Reconfigure(l); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the reconnection after the drain timed out", func() bool {
				return logLines(p.log, "drain_timed_out=true") == 1 && logLines(p.log, "mqtt connected") == 2 && p.Connected()
			})
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			if withSpool {
				if spooled := out.check(t, results); spooled != n || sp.Len() != n {
					t.Errorf("%d results spooled, %d in the spool; want all %d", spooled, sp.Len(), n)
				}
				return
			}
			out.mu.Lock()
			defer out.mu.Unlock()
			for _, r := range results {
				if errs := out.by[r.ID]; len(errs) != 1 || !errors.Is(errs[0], ErrNotDelivered) {
					t.Errorf("result %s: OnResult %v, want one ErrNotDelivered", r.ID, errs)
				}
			}
		})
	}
}

// TestReconfigureQoS: a new QoS applies to results queued after the change, as the
// wire shows; with a spool, QoS 2 brings a clean session through a reconnect, and
// going back to QoS 1 the persistent one.
func TestReconfigureQoS(t *testing.T) {
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	w := startProxy(t, trimScheme(url), withRecording)
	sub := startPersistentSub(t, url, "edged/v1/s1/l1/n1/result/#")
	sp, _ := openSpool(t, spool.Options{})
	cfg := testConfig(w.url())
	cfg.Spool = sp
	p := startPublisher(t, cfg)
	p.waitConnected(t)
	results := makeResults(40)
	steps := []byte{1, 0, 2, 1}
	l := cfg.Live()
	conns := w.connAcks()
	for i, qos := range steps {
		l.QoS = new(qos)
		if err := p.Reconfigure(l); err != nil {
			t.Fatal(err)
		}
		if i > 0 && (steps[i-1] == 2) != (qos == 2) {
			waitFor(t, "a reconnection for the new session", func() bool { return w.connAcks() == conns+1 && p.Connected() })
		}
		conns = w.connAcks()
		publishAll(t, p, results[10*i:10*(i+1)])
		waitFor(t, "the results acknowledged", func() bool { return p.Stats().Acked+p.Stats().Replayed >= uint64(10*(i+1)) && sp.Len() == 0 })
	}
	first := map[string]byte{}
	for _, s := range w.sentResults() {
		if _, ok := first[s.id]; !ok {
			first[s.id] = s.qos
		}
	}
	for i, r := range results {
		if got, want := first[r.ID], steps[i/10]; got != want {
			t.Errorf("result %d went out at QoS %d, want %d", i, got, want)
		}
	}
	var clean []bool
	for _, c := range w.connections() {
		if c.acked {
			clean = append(clean, c.clean)
		}
	}
	if want := []bool{false, true, false}; !equalBools(clean, want) {
		t.Errorf("connections' clean session flags %v, want %v", clean, want)
	}
	waitFor(t, "the subscriber to have every result", func() bool { return sub.distinct() == len(results) })
	got := sub.received()
	checkFirstCopyOrder(t, "broker to subscriber", len(got), func(i int) (string, string, uint64) {
		return got[i].id, got[i].inspection, got[i].seq
	})
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestReconfigureRejects: an invalid change names the bad values and changes nothing.
func TestReconfigureRejects(t *testing.T) {
	cfg := testConfig("tcp://127.0.0.1:1883")
	cfg.Breaker.MinCalls = 7
	p, err := NewPublisher(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	brk := p.brk.Load()
	l := cfg.Live()
	l.QoS = new(byte(3))
	l.KeepAlive = 10 * time.Millisecond
	l.ConnectTimeout = -time.Second
	l.Breaker.FailureRatio = 1.5
	l.Username = "changed"
	err = p.Reconfigure(l)
	for _, want := range []string{
		"mqtt.qos: 3 is not one of 0, 1, 2",
		"mqtt.keep_alive: 10ms is below 1s",
		"mqtt.connect_timeout: -1s is negative",
		`mqtt.breaker: breaker "mqtt": failure_ratio 1.5 is out of range (0,1)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Reconfigure error %v, want it to name %q", err, want)
		}
	}
	if live := p.live.Load(); *live.QoS != 1 || live.Username != "" || live.KeepAlive != DefaultKeepAlive || p.brk.Load() != brk {
		t.Errorf("a rejected change changed the settings: %+v", live)
	}

	// The same breaker settings keep the breaker (and its state); others replace it.
	brk.Record(nil)
	if err := p.Reconfigure(cfg.Live()); err != nil {
		t.Fatal(err)
	}
	if p.brk.Load() != brk {
		t.Error("unchanged breaker settings replaced the breaker")
	}
	l = cfg.Live()
	l.Breaker.MinCalls = 9
	if err := p.Reconfigure(l); err != nil {
		t.Fatal(err)
	}
	if b := p.brk.Load(); b == brk || b.Config().MinCalls != 9 || b.Config().Name != "mqtt" {
		t.Errorf("breaker %+v after a change of min_calls", b.Config())
	}
}

// TestReconfigureBreaker: replacing an open breaker lets results out at once: the new
// one starts closed.
func TestReconfigureBreaker(t *testing.T) {
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
	sp, _ := openSpool(t, spool.Options{})
	cfg := testConfig(url)
	cfg.Spool = sp
	cfg.Breaker = testBreaker()
	cfg.Breaker.OpenTimeout = time.Minute
	p := startPublisher(t, cfg)
	p.waitConnected(t)
	for p.BreakerState() != breaker.Open {
		p.brk.Load().Record(context.DeadlineExceeded)
	}
	results := makeResults(10)
	publishAll(t, p, results)
	waitFor(t, "the results spooled", func() bool { return p.Stats().Spooled == 10 })

	l := cfg.Live()
	l.Breaker.OpenTimeout = 30 * time.Second
	if err := p.Reconfigure(l); err != nil {
		t.Fatal(err)
	}
	if p.BreakerState() != breaker.Closed {
		t.Fatalf("breaker %s after the change, want a new, closed one", p.BreakerState())
	}
	for i, want := range results {
		var got Result
		if err := json.Unmarshal(sub.next(t, "a result").Payload(), &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID {
			t.Fatalf("result %d is %s, want %s", i, got.ID, want.ID)
		}
	}
	waitFor(t, "direct sends again", func() bool { return !p.spooling.Load() && sp.Len() == 0 })
	if logLines(p.log, `breaker="replaced; closed" breaker_was=open`) != 1 {
		t.Error("the replacement was not logged")
	}
}

// TestReconfigureConcurrent: changes while results are published from several
// goroutines, with a spool and without; for the race detector, and nothing may be
// lost.
func TestReconfigureConcurrent(t *testing.T) {
	const producers, each = 4, 100
	for _, withSpool := range []bool{true, false} {
		t.Run(map[bool]string{true: "spool", false: "no spool"}[withSpool], func(t *testing.T) {
			url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
			sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
			cfg := testConfig(url)
			if withSpool {
				cfg.Spool, _ = openSpool(t, spool.Options{})
			}
			p := startPublisher(t, cfg)
			p.waitConnected(t)
			var wg sync.WaitGroup
			for g := range producers {
				wg.Go(func() {
					for i, r := range makeResults(each) {
						r.Inspection = "p" + string(rune('a'+g))
						if err := p.Publish(context.Background(), r); err != nil {
							t.Errorf("Publish %d: %v", i, err)
							return
						}
					}
				})
			}
			wg.Go(func() {
				for i := range 6 {
					l := cfg.Live()
					l.QoS = new(byte(i % 2))
					l.KeepAlive = time.Duration(30+i%2) * time.Second
					if err := p.Reconfigure(l); err != nil {
						t.Error(err)
						return
					}
					_ = p.BreakerState()
				}
			})
			wg.Wait()
			seen := map[string]bool{}
			for len(seen) < producers*each {
				var got Result
				if err := json.Unmarshal(sub.next(t, "a result").Payload(), &got); err != nil {
					t.Fatal(err)
				}
				seen[got.ID] = true
			}
		})
	}
}
