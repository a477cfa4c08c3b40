package publish

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/internal/testmqtt"
	"github.com/edgedrun/edged/spool"
)

// sessionSaved is how long mosquitto may take to save a new session to its
// persistence file: it saves when the clock's whole second is past the last save by more
// than autosave_interval (1s in testmqtt), so within about 2s, plus slack.
const sessionSaved = 3 * time.Second

// TestSpoolBrokerOutages is the scenario: results flow at a steady rate while
// mosquitto is killed (SIGKILL) and started again, several times. The publisher must get
// every result acknowledged by the broker, sending each one's first copy in order, and
// a persistent subscriber must receive every result at least once, first copies in
// order per inspection.
//
// What the test holds the publisher to is what it controls: a PUBACK from the broker
// for every result, seen on the wire by a recording proxy, and the order of first copies.
// The broker's own part: mosquitto acknowledges a message before it saves it, so when
// it is killed it can lose what it had acknowledged but neither passed on nor saved yet.
// That loss is the broker's, and the test tells it apart exactly: at each kill it notes
// the results the broker had acknowledged that the subscriber had not received (a
// handful, since kills wait until the subscriber has caught up); a missing result is
// excused only if it is one of those and the broker never acknowledged it again after.
// Persistence is on, and the test checks that the subscriber's session survived every
// restart, so gaps cannot come from a broker that forgot the subscriber.
//
// Every other kill comes once the publisher sends directly again and the subscriber
// has caught up, as a crash in normal operation would; the others in the middle of a
// replay, records in flight, right after the broker came back. mosquitto queues a
// replay's burst in memory for the subscriber, so that is where it can lose some.
//
// `make test` runs 4000 results and 3 restarts; EDGED_SOAK=1 (make soak) runs 20,000
// and 5.
func TestSpoolBrokerOutages(t *testing.T) {
	n, restarts, rate := 4000, 3, 500.0
	if os.Getenv("EDGED_SOAK") == "1" {
		n, restarts, rate = 20000, 5, 1000.0
	}
	start := time.Now()
	srv := testmqtt.StartServer(t, testmqtt.Options{Persistence: true})
	w := startProxy(t, srv.Addr(), withRecording)
	sub := startPersistentSub(t, srv.URL(), "edged/v1/s1/l1/n1/result/#")
	subscribed := time.Now()

	sp, spReg := openSpool(t, spool.Options{FsyncInterval: 10 * time.Millisecond})
	cfg := testConfig(w.url())
	cfg.Spool = sp
	cfg.MaxInflight = 64
	cfg.WriteTimeout = time.Second
	out := newOutcomes()
	cfg.OnResult = out.onResult
	p := startPublisher(t, cfg)
	p.waitConnected(t)

	results := makeResults(n)
	var published atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- publishPaced(t, p, results, rate, &published) }()

	// atKill: results the broker had acknowledged and the subscriber not received
	// when the broker died, with the time of death.
	atKill := map[string]time.Time{}
	var outstanding []int
	midReplay := 0
	for i := range restarts {
		if i%2 == 1 {
			// Every other kill comes while the publisher replays what the last
			// outage left in the spool, records in flight: they must be rewound.
			replayed := p.Stats().Replayed
			waitFor(t, "the replay to start", func() bool { return p.Stats().Replayed > replayed || !p.spooling.Load() })
			if p.spooling.Load() {
				midReplay++
			}
		} else {
			// Spread the other outages over the stream; the first only once
			// mosquitto has saved the subscriber's session.
			due := int64(n) * int64(i+1) / int64(restarts+2)
			waitFor(t, "results to flow", func() bool { return published.Load() >= due })
			if wait := time.Until(subscribed.Add(sessionSaved)); wait > 0 {
				time.Sleep(wait)
			}
			waitCaughtUp(t, p, w, sub, atKill)
		}
		srv.Kill()
		killed := time.Now()
		got := map[string]bool{}
		for _, m := range sub.received() {
			got[m.id] = true
		}
		k := 0
		for id := range w.ackedSet() {
			if got[id] {
				continue
			}
			if _, before := atKill[id]; !before {
				k++
			}
			atKill[id] = killed
		}
		outstanding = append(outstanding, k)
		waitFor(t, "the publisher to notice", func() bool { return !p.Connected() })
		// Long enough for results to pile up in the spool.
		time.Sleep(time.Second)
		srv.Start()
		p.waitConnected(t)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// Everything through: the spool is empty, the broker acknowledged every result.
	waitFor(t, "every result acknowledged by the broker", func() bool {
		return w.ackedCount() == n && sp.Len() == 0 && !p.spooling.Load()
	})

	brokerLost := map[string]bool{}
	for id, killed := range atKill {
		last := w.ackTimes(id)
		if len(last) > 0 && !last[len(last)-1].After(killed) {
			brokerLost[id] = true
		}
	}
	missing := func() map[string]bool {
		got := map[string]bool{}
		for _, m := range sub.received() {
			got[m.id] = true
		}
		miss := map[string]bool{}
		for _, r := range results {
			if !got[r.ID] && !brokerLost[r.ID] {
				miss[r.ID] = true
			}
		}
		return miss
	}
	deadline := time.Now().Add(waitTimeout)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if miss := missing(); len(miss) > 0 {
		keys := sortedKeys(miss)
		t.Fatalf("%d results never reached the subscriber although the broker acknowledged them outside a kill's reach, e.g. %v", len(miss), keys[:min(5, len(keys))])
	}
	got := sub.received()
	seen := map[string]bool{}
	for _, m := range got {
		seen[m.id] = true
	}
	lost := 0
	for id := range brokerLost {
		if !seen[id] {
			lost++
		}
	}

	wireCopies := w.checkSendOrder(t)
	dups := checkFirstCopyOrder(t, "broker to subscriber", len(got), func(i int) (string, string, uint64) {
		return got[i].id, got[i].inspection, got[i].seq
	})
	sessions := sub.sessionFlags()
	if len(sessions) < restarts+1 {
		t.Errorf("the subscriber connected %d times over %d broker restarts", len(sessions), restarts)
	}
	for i, present := range sessions[1:] {
		if !present {
			t.Errorf("reconnection %d of the subscriber found no session: the broker forgot it, so its gaps would not be the publisher's", i+1)
		}
	}

	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	spooled := out.check(t, results)
	st := p.Stats()
	if st.Accepted != uint64(n) || st.Acked+st.Spooled != uint64(n) || st.Failed != 0 {
		t.Errorf("stats %+v: want %d accepted, each acked or spooled, none failed", st, n)
	}
	if st.Spooled == 0 || st.Replayed < st.Spooled {
		t.Errorf("stats %+v: results were spooled during the outages and all replayed", st)
	}
	if got := p.metric(t, "edged_mqtt_acked_total", "via", "spool"); got != float64(st.Replayed) {
		t.Errorf("edged_mqtt_acked_total{via=spool} = %v, want %d", got, st.Replayed)
	}
	if got := p.metric(t, "edged_mqtt_acked_total", "via", "direct"); got != float64(st.Acked) {
		t.Errorf("edged_mqtt_acked_total{via=direct} = %v, want %d", got, st.Acked)
	}
	if got := p.metric(t, "edged_mqtt_redelivered_total"); got != float64(st.Redelivered) {
		t.Errorf("edged_mqtt_redelivered_total = %v, want %d", got, st.Redelivered)
	}
	if got := gather(t, spReg, "edged_mqtt_spool_dropped_total", "reason", "full"); got != 0 {
		t.Errorf("the spool dropped %v records", got)
	}
	if n := logLines(p.log, "spool append failed"); n != 0 {
		t.Errorf("%d failed appends", n)
	}
	t.Logf("%d results at %.0f/s, %d broker restarts (SIGKILL), %s: %d results went through the spool, %d records redelivered after a rewind; "+
		"%d copies sent, all %d results acknowledged by the broker; the subscriber got %d messages, %d duplicates; "+
		"acknowledged but not yet received at each kill: %v (%d kills in a replay); of those, lost by the broker: %d",
		n, rate, restarts, time.Since(start).Round(time.Millisecond), spooled, st.Redelivered,
		wireCopies, n, len(got), dups, outstanding, midReplay, lost)
}

// waitCaughtUp waits until the publisher sends directly again and the subscriber has
// (nearly) everything the broker acknowledged, leaving out what an earlier kill may
// have cost.
func waitCaughtUp(t testing.TB, p *running, w *proxy, sub *persistentSub, atKill map[string]time.Time) {
	t.Helper()
	behind := func() int {
		got := map[string]bool{}
		for _, m := range sub.received() {
			got[m.id] = true
		}
		n := 0
		for id := range w.ackedSet() {
			if _, maybeLost := atKill[id]; !got[id] && !maybeLost {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(waitTimeout)
	for !(p.Connected() && !p.spooling.Load() && sub.up.Load() && behind() <= 16) {
		if time.Now().After(deadline) {
			t.Fatalf("publisher connected %v, spooling %v; subscriber connected %v, %d acknowledged results behind",
				p.Connected(), p.spooling.Load(), sub.up.Load(), behind())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSpoolSeveredConnections cuts the publisher's connection (a pulled cable: no
// DISCONNECT) three times while it sends at full speed; the spool takes what was in
// flight, then the rest, and replays it in order. The broker stays up, so the subscriber
// must see every result, first copies in order.
func TestSpoolSeveredConnections(t *testing.T) {
	const n = 3000
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			url := bk.start(t)
			w := startProxy(t, trimScheme(url), withRecording)
			sub := startPersistentSub(t, url, "edged/v1/s1/l1/n1/result/#")
			sp, _ := openSpool(t, spool.Options{FsyncInterval: 10 * time.Millisecond})
			cfg := testConfig(w.url())
			cfg.Spool = sp
			cfg.MaxInflight = 32
			// A publish stuck in the client of a cut connection ends within this; Run
			// waits for it at shutdown.
			cfg.WriteTimeout = time.Second
			out := newOutcomes()
			cfg.OnResult = out.onResult
			p := startPublisher(t, cfg)
			results := makeResults(n)

			done := make(chan struct{})
			go func() {
				defer close(done)
				publishAll(t, p, results)
			}()
			for _, at := range []int{n / 5, n / 2, 4 * n / 5} {
				waitFor(t, "results acknowledged", func() bool { return w.ackedCount() >= at })
				w.sever()
			}
			<-done
			waitFor(t, "all acknowledged and the spool empty", func() bool { return w.ackedCount() == n && sp.Len() == 0 })
			waitFor(t, "the subscriber to have every result", func() bool { return sub.distinct() == n })
			got := sub.received()
			dups := checkFirstCopyOrder(t, "broker to subscriber", len(got), func(i int) (string, string, uint64) {
				return got[i].id, got[i].inspection, got[i].seq
			})
			w.checkSendOrder(t)
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			spooled := out.check(t, results)
			st := p.Stats()
			if st.Accepted != n || st.Acked+st.Spooled != n || st.Failed != 0 || st.Retried != 0 {
				t.Errorf("stats %+v", st)
			}
			t.Logf("%d results, 3 cuts: %d spooled, %d redelivered, %d duplicates at the subscriber", n, spooled, st.Redelivered, dups)
		})
	}
}

// TestSpoolLeftByEarlierRun: a publisher that never reached the broker leaves its
// results in the spool when its Run ends; the next publisher on the same spool delivers
// them first, in order, then its own.
func TestSpoolLeftByEarlierRun(t *testing.T) {
	const n, more = 300, 50
	for _, bk := range []struct {
		name  string
		setup func(t *testing.T) (url string, up func())
	}{
		{"embedded", func(t *testing.T) (string, func()) {
			addr := freeAddr(t)
			return "tcp://" + addr, func() { startBroker(t, addr) }
		}},
		{"mosquitto", func(t *testing.T) (string, func()) {
			srv := testmqtt.StartServer(t, testmqtt.Options{})
			srv.Stop()
			return srv.URL(), srv.Start
		}},
	} {
		t.Run(bk.name, func(t *testing.T) {
			url, up := bk.setup(t)
			dir := t.TempDir()
			sp, _ := openSpool(t, spool.Options{Dir: dir})
			results := makeResults(n + more)

			cfg := testConfig(url)
			cfg.Spool = sp
			cfg.DrainTimeout = 100 * time.Millisecond
			first := newOutcomes()
			cfg.OnResult = first.onResult
			p1 := startPublisher(t, cfg)
			publishAll(t, p1, results[:n])
			if err := p1.stop(); err != nil {
				t.Fatal(err)
			}
			if spooled := first.check(t, results[:n]); spooled != n {
				t.Fatalf("%d of %d results spooled with no broker", spooled, n)
			}
			if st := p1.Stats(); st != (Stats{Accepted: n, Spooled: n}) {
				t.Errorf("first run stats %+v", st)
			}
			if sp.Len() != n {
				t.Fatalf("spool holds %d records after the first run, want %d", sp.Len(), n)
			}

			up()
			sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
			cfg2 := testConfig(url)
			cfg2.ClientID = cfg.ClientID
			cfg2.Spool = sp
			second := newOutcomes()
			cfg2.OnResult = second.onResult
			p2 := startPublisher(t, cfg2)
			publishAll(t, p2, results[n:])

			for i, want := range results {
				var got Result
				if err := json.Unmarshal(sub.next(t, "a result").Payload(), &got); err != nil {
					t.Fatal(err)
				}
				if got.ID != want.ID {
					t.Fatalf("message %d is %s seq %d, want %s seq %d: spooled results first, in order, then the new ones",
						i, got.Inspection, got.Seq, want.Inspection, want.Seq)
				}
			}
			waitFor(t, "the spool empty", func() bool { return sp.Len() == 0 })
			if err := p2.stop(); err != nil {
				t.Fatal(err)
			}
			second.check(t, results[n:])
			// Its own results, published while it was still replaying, went through the
			// spool behind the old ones.
			if st := p2.Stats(); st.Accepted != more || st.Acked+st.Spooled != more || st.Replayed != n+st.Spooled {
				t.Errorf("second run stats %+v: want %d replayed and %d of its own", st, n, more)
			}
			if got := p2.metric(t, "edged_mqtt_spooling"); got != 0 {
				t.Errorf("edged_mqtt_spooling = %v after Run", got)
			}
			select {
			case m := <-sub.msgs:
				t.Errorf("a message more: %s", m.Payload())
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}

// TestSpoolFullDuringLongOutage: a spool far too small for the outage drops its oldest
// segments, counts them, and the publisher keeps taking results; once the broker is
// back, what the spool kept arrives in order.
func TestSpoolFullDuringLongOutage(t *testing.T) {
	const n = 1500
	url := testmqtt.Start(t)
	w := startProxy(t, trimScheme(url), withRecording)
	w.setDown(true)
	sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
	sp, spReg := openSpool(t, spool.Options{MaxBytes: 32 << 10, SegmentBytes: 8 << 10, FsyncInterval: 10 * time.Millisecond})
	cfg := testConfig(w.url())
	cfg.Spool = sp
	p := startPublisher(t, cfg)
	results := makeResults(n)

	start := time.Now()
	publishAll(t, p, results)
	waitFor(t, "every result in the spool", func() bool { return p.Stats().Spooled == n })
	t.Logf("%d results spooled in %s with the broker away", n, time.Since(start).Round(time.Millisecond))
	st := sp.Stats()
	kept := sp.Len()
	if st.Dropped == 0 || uint64(kept)+st.Dropped != n || st.Appended != n {
		t.Fatalf("spool stats %+v with %d kept: want %d appended, the oldest dropped", st, kept, n)
	}
	if got := gather(t, spReg, "edged_mqtt_spool_dropped_total", "reason", "full"); got != float64(st.Dropped) {
		t.Errorf("edged_mqtt_spool_dropped_total{reason=full} = %v, want %d", got, st.Dropped)
	}
	if p.Connected() {
		t.Fatal("connected through a closed wire")
	}

	w.setDown(false)
	for i, want := range results[n-kept:] {
		var got Result
		if err := json.Unmarshal(sub.next(t, "a kept result").Payload(), &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID {
			t.Fatalf("kept result %d is %s seq %d, want %s seq %d: the newest %d, in order",
				i, got.Inspection, got.Seq, want.Inspection, want.Seq, kept)
		}
	}
	waitFor(t, "the spool empty", func() bool { return sp.Len() == 0 && !p.spooling.Load() })
	// Back to direct: a new result goes straight through.
	extra := makeResults(1)[0]
	extra.TraceID = "after"
	publishAll(t, p, []*Result{extra})
	var got Result
	if err := json.Unmarshal(sub.next(t, "the result after the outage").Payload(), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != extra.ID {
		t.Fatalf("got %s after the spool, want the new result", got.ID)
	}
	waitFor(t, "the new result acknowledged directly", func() bool { return p.Stats().Acked == 1 })
	t.Logf("spool of %d bytes kept %d of %d results, dropped %d", 32<<10, kept, n, st.Dropped)
}

// TestSpoolShutdownKeepsUnacked: a broker that takes publishes and never acknowledges
// them; at shutdown every result in flight or queued goes to the spool, in order, and a
// later run delivers them.
func TestSpoolShutdownKeepsUnacked(t *testing.T) {
	const n = 200
	sink := startSilentBroker(t)
	sp, _ := openSpool(t, spool.Options{})
	cfg := testConfig("tcp://" + sink)
	cfg.Spool = sp
	cfg.MaxInflight = 16
	cfg.QueueSize = 2 * n
	cfg.DrainTimeout = 200 * time.Millisecond
	out := newOutcomes()
	cfg.OnResult = out.onResult
	p := startPublisher(t, cfg)
	p.waitConnected(t)
	results := makeResults(n)
	publishAll(t, p, results)
	waitFor(t, "the window full", func() bool { return p.metric(t, "edged_mqtt_inflight") == 16 })
	if p.spooling.Load() {
		t.Fatal("spooling while connected to a broker that takes everything")
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	if spooled := out.check(t, results); spooled != n {
		t.Fatalf("%d of %d results spooled at shutdown", spooled, n)
	}
	if sp.Len() != n {
		t.Fatalf("spool holds %d, want %d", sp.Len(), n)
	}

	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
	cfg2 := testConfig(url)
	cfg2.Spool = sp
	startPublisher(t, cfg2)
	for i, want := range results {
		var got Result
		if err := json.Unmarshal(sub.next(t, "a spooled result").Payload(), &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID {
			t.Fatalf("result %d is %s seq %d, want %s seq %d", i, got.Inspection, got.Seq, want.Inspection, want.Seq)
		}
	}
}

// TestSpoolUnreadableRecord: a record this edged cannot read (another version, damage
// the spool's checksum missed) is skipped and counted, not sent, and does not block the
// records after it.
func TestSpoolUnreadableRecord(t *testing.T) {
	url := "tcp://" + startBroker(t, "127.0.0.1:0").Addr()
	sp, _ := openSpool(t, spool.Options{})
	good := makeResults(2)
	for i, data := range [][]byte{
		appendRecord(nil, &message{topic: "edged/v1/s1/l1/n1/result/" + good[0].Inspection, payload: good[0].AppendJSON(nil), qos: 1}),
		{9, 1, 0, 1, 't'},
		appendRecord(nil, &message{topic: "edged/v1/s1/l1/n1/result/" + good[1].Inspection, payload: good[1].AppendJSON(nil), qos: 1}),
	} {
		if err := sp.Append(data); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	sub := subscribe(t, url, "edged/v1/s1/l1/n1/result/#")
	cfg := testConfig(url)
	cfg.Spool = sp
	p := startPublisher(t, cfg)
	for _, want := range good {
		var got Result
		if err := json.Unmarshal(sub.next(t, "a good record").Payload(), &got); err != nil {
			t.Fatal(err)
		}
		if got.TraceID != want.TraceID {
			t.Fatalf("got %s, want %s", got.TraceID, want.TraceID)
		}
	}
	waitFor(t, "the spool empty", func() bool { return sp.Len() == 0 })
	if got := p.metric(t, "edged_mqtt_spool_errors_total", "op", "decode"); got != 1 {
		t.Errorf("decode errors %v, want 1", got)
	}
	if logLines(p.log, "mqtt spool record unreadable; skipped") != 1 {
		t.Error("the unreadable record was not logged once")
	}
}

func trimScheme(url string) string {
	if i := len("tcp://"); len(url) > i && url[:i] == "tcp://" {
		return url[i:]
	}
	return url
}

// startSilentBroker listens for MQTT clients, accepts their connection and answers
// pings, and never acknowledges a publish: a broker that stalls.
func startSilentBroker(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				silent(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func silent(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		_, hdr, _, err := readPacket(r)
		if err != nil {
			return
		}
		switch hdr >> 4 {
		case 1: // CONNECT
			_, _ = c.Write([]byte{0x20, 2, 0, 0})
		case 12: // PINGREQ
			_, _ = c.Write([]byte{0xd0, 0})
		case 14: // DISCONNECT
			return
		}
	}
}

// TestSpoolPersistentSession: with a spool the publisher connects to mosquitto with clean
// session off, so the broker keeps its session across a severed connection (session
// present on every reconnect, in the CONNACK and in the "mqtt connected" log line),
// and the spool, not paho, re-sends what was in flight: every result still arrives,
// first copies in order. The proxy reads the CONNECT and CONNACK flags off the wire.
func TestSpoolPersistentSession(t *testing.T) {
	const n = 3000
	url := testmqtt.Start(t)
	w := startProxy(t, trimScheme(url), withRecording)
	sub := startPersistentSub(t, url, "edged/v1/s1/l1/n1/result/#")
	sp, _ := openSpool(t, spool.Options{FsyncInterval: 10 * time.Millisecond})
	cfg := testConfig(w.url())
	cfg.Spool = sp
	cfg.MaxInflight = 32
	cfg.WriteTimeout = time.Second
	out := newOutcomes()
	cfg.OnResult = out.onResult
	p := startPublisher(t, cfg)
	results := makeResults(n)

	done := make(chan struct{})
	go func() {
		defer close(done)
		publishAll(t, p, results)
	}()
	const cuts = 2
	for i, at := range []int{n / 3, 2 * n / 3} {
		// Cut a connection the broker accepted, not one still connecting.
		waitFor(t, "results acknowledged on a new connection", func() bool {
			return w.ackedCount() >= at && w.connAcks() == i+1 && p.Connected()
		})
		w.sever()
	}
	<-done
	waitFor(t, "all acknowledged and the spool empty", func() bool { return w.ackedCount() == n && sp.Len() == 0 })
	waitFor(t, "the subscriber to have every result", func() bool { return sub.distinct() == n })
	got := sub.received()
	dups := checkFirstCopyOrder(t, "broker to subscriber", len(got), func(i int) (string, string, uint64) {
		return got[i].id, got[i].inspection, got[i].seq
	})
	w.checkSendOrder(t)
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	out.check(t, results)
	st := p.Stats()
	if st.Accepted != n || st.Acked+st.Spooled != n || st.Failed != 0 || st.Retried != 0 {
		t.Errorf("stats %+v", st)
	}

	conns := w.connections()
	if w.connAcks() < cuts+1 {
		t.Fatalf("%d connections accepted, want at least %d: %+v", w.connAcks(), cuts+1, conns)
	}
	accepted := 0
	for i, c := range conns {
		if c.clean {
			t.Errorf("connection %d: CONNECT with clean session on, want off", i)
		}
		if !c.acked {
			continue
		}
		// The client id is new to the broker: no session at first, the kept one after.
		if want := accepted > 0; c.sessionPresent != want {
			t.Errorf("connection %d (accepted %d): CONNACK session present %v, want %v", i, accepted, c.sessionPresent, want)
		}
		accepted++
	}
	if got := logLines(p.log, "session_present=true"); got != accepted-1 {
		t.Errorf(`%d "mqtt connected" lines with session_present=true, want %d`, got, accepted-1)
	}
	if got := logLines(p.log, "session_present=false"); got != 1 {
		t.Errorf(`%d "mqtt connected" lines with session_present=false, want 1`, got)
	}
	t.Logf("%d results, %d cuts, %d connections: %d redelivered, %d duplicates at the subscriber", n, cuts, accepted, st.Redelivered, dups)
}

// TestCleanSessionFlag: what each mode sends in CONNECT. Persistent without a spool and
// with one at QoS 0 and 1; clean with a spool at QoS 2, where a new client's packet ids
// could collide with QoS 2 flows the broker keeps for the old session, and with a spool
// and Sparkplug B, which requires it.
func TestCleanSessionFlag(t *testing.T) {
	url := testmqtt.Start(t)
	for _, tc := range []struct {
		name      string
		spool     bool
		qos       byte
		sparkplug bool
		wantClean bool
	}{
		{"no spool qos1", false, 1, false, false},
		{"no spool qos2", false, 2, false, false},
		{"spool qos0", true, 0, false, false},
		{"spool qos1", true, 1, false, false},
		{"spool qos2", true, 2, false, true},
		{"spool sparkplug", true, 1, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startProxy(t, trimScheme(url), withRecording)
			cfg := testConfig(w.url())
			cfg.QoS = &tc.qos
			if tc.spool {
				cfg.Spool, _ = openSpool(t, spool.Options{})
			}
			if tc.sparkplug {
				cfg.Format = FormatSparkplugB
			}
			p := startPublisher(t, cfg)
			p.waitConnected(t)
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			conns := w.connections()
			if len(conns) == 0 {
				t.Fatal("no CONNECT seen")
			}
			for i, c := range conns {
				if c.clean != tc.wantClean {
					t.Errorf("connection %d: clean session %v, want %v", i, c.clean, tc.wantClean)
				}
			}
		})
	}
}
