package dpi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fullMap is the libmodbus server's map: addresses 0..99 of each table.
var fullMap = []Range{{Coils, 0, 99}, {DiscreteInputs, 0, 99}, {HoldingRegisters, 0, 99}, {InputRegisters, 0, 99}}

// testClock is the proxy's clock in tests: it stands still until advanced, so flood
// windows and alert rate limits do not depend on how fast the machine runs the test.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Unix(1_700_000_000, 0)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *testClock) set(p *Proxy) { p.now = c.Now }

// TestCleanTraffic runs real clients through the proxy to real servers: every common
// function passes byte for byte (two recording relays, one each side of the proxy,
// see the same bytes) with no anomaly and no alert.
func TestCleanTraffic(t *testing.T) {
	mbpoll, err := exec.LookPath("mbpoll")
	if err != nil {
		t.Fatalf("mbpoll not found (%s): %v", installHint, err)
	}
	for _, srv := range []struct {
		name  string
		start func(testing.TB) string
		rw    bool // FC 22 and 23: libmodbus serves them, simonvetter answers illegal function
		top   uint16
	}{
		{"libmodbus", startCServer, true, 99},
		{"simonvetter", startVServer, false, 999},
	} {
		t.Run(srv.name, func(t *testing.T) {
			plc := srv.start(t)
			inner := startRelay(t, plc)
			cfg := Config{Upstream: inner.addr, Units: []uint8{1, 255},
				Map: []Range{{Coils, 0, srv.top}, {DiscreteInputs, 0, srv.top}, {HoldingRegisters, 0, srv.top}, {InputRegisters, 0, srv.top}}}
			tp := startProxy(t, cfg)
			outer := startRelay(t, tp.Addr())

			c := goburrow(t, outer.addr)
			calls := []struct {
				name string
				call func() ([]byte, error)
				exc  bool // the server answers with an exception
			}{
				{"read coils", func() ([]byte, error) { return c.ReadCoils(0, 20) }, false},
				{"read discrete", func() ([]byte, error) { return c.ReadDiscreteInputs(3, 13) }, false},
				{"read holding", func() ([]byte, error) { return c.ReadHoldingRegisters(0, 10) }, false},
				{"read input", func() ([]byte, error) { return c.ReadInputRegisters(0, 2) }, false},
				{"write coil", func() ([]byte, error) { return c.WriteSingleCoil(5, 0xFF00) }, false},
				{"write register", func() ([]byte, error) { return c.WriteSingleRegister(30, 77) }, false},
				{"write coils", func() ([]byte, error) { return c.WriteMultipleCoils(40, 10, []byte{0xA5, 0x01}) }, false},
				{"write registers", func() ([]byte, error) { return c.WriteMultipleRegisters(50, 3, []byte{0, 1, 0, 2, 0, 3}) }, false},
				{"mask write", func() ([]byte, error) { return c.MaskWriteRegister(31, 0x00F2, 0x0025) }, !srv.rw},
				{"read/write", func() ([]byte, error) { return c.ReadWriteMultipleRegisters(50, 3, 60, 2, []byte{0, 9, 0, 8}) }, !srv.rw},
			}
			for _, cl := range calls {
				_, err := cl.call()
				if (err != nil) != cl.exc {
					t.Errorf("%s: %v (exception expected: %v)", cl.name, err, cl.exc)
				}
			}
			if got, want := tp.metric(t, "edged_dpi_frames_total", "direction", "request"), float64(len(calls)); got != want {
				t.Errorf("request frames %v, want %v", got, want)
			}

			// mbpoll is libmodbus's client: another independent encoder.
			port := outer.addr[strings.LastIndexByte(outer.addr, ':')+1:]
			for _, args := range [][]string{
				{"-t", "0", "-r", "0", "-c", "8"},
				{"-t", "1", "-r", "0", "-c", "8"},
				{"-t", "3", "-r", "0", "-c", "2"},
				{"-t", "4", "-r", "0", "-c", "10"},
				{"-t", "0", "-r", "6", "127.0.0.1", "1"},
				{"-t", "0", "-r", "7", "127.0.0.1", "1", "0", "1"},
				{"-t", "4", "-r", "32", "127.0.0.1", "7"},
				{"-t", "4", "-r", "33", "127.0.0.1", "8", "9"},
			} {
				all := append([]string{"-m", "tcp", "-a", "1", "-p", port, "-0", "-1", "-o", "5"}, args...)
				if !slices.Contains(args, "127.0.0.1") {
					all = append(all, "127.0.0.1")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				out, err := exec.CommandContext(ctx, mbpoll, all...).CombinedOutput()
				cancel()
				if err != nil {
					t.Errorf("mbpoll %s: %v\n%s", strings.Join(all, " "), err, out)
				}
			}

			// Every byte the client side sent reached the PLC side and back; mbpoll
			// has closed, so wait until the relays have carried its last bytes.
			waitUntil(t, "relays agree", 5*time.Second, func() bool {
				ou, od := outer.recorded()
				iu, id := inner.recorded()
				return bytes.Equal(ou, iu) && bytes.Equal(od, id)
			})
			if ou, od := outer.recorded(); len(ou) == 0 || len(od) == 0 {
				t.Fatalf("relays recorded %d bytes up, %d down", len(ou), len(od))
			}
			if a := tp.anomalies(t); len(a) != 0 {
				t.Errorf("anomalies on clean traffic: %v", a)
			}
			if as := tp.alerts.all(); len(as) != 0 {
				t.Errorf("alerts on clean traffic: %+v", as)
			}
		})
	}
}

// classCase crafts one anomaly.
type classCase struct {
	name  string
	class Class
	cfg   func(*Config)
	// fake answers requests for the cases a real PLC cannot play (nil: the libmodbus
	// server behind a recording relay).
	fake func(req []byte) []byte
	// setup frames are sent first; each is answered and its answer read unless
	// setupHeld.
	setup     [][]byte
	setupHeld bool
	frame     []byte
	// Block outcome for requests: an exception with this code, or the connection
	// closed, or (neither) the frame dropped unanswered.
	exc    byte
	closes bool
	// The anomaly is in the PLC's answer to frame, which is then anomalous: alert
	// passes it to the client, block drops it.
	response  bool
	anomalous []byte
}

var probe = adu(0x7777, 1, pdu16(3, 1, 1)...)

// fakeAnswer answers an FC 3 read of one register, echoing the transaction id.
func fakeAnswer(req []byte) []byte {
	return adu(uint16(req[0])<<8|uint16(req[1]), req[6], 3, 2, 0, 42)
}

func classCases() []classCase {
	withProtocol := func(b []byte, id byte) []byte { b[3] = id; return b }
	read := func(tx uint16, addr, qty uint16) []byte { return adu(tx, 1, pdu16(3, addr, qty)...) }
	return []classCase{
		{name: "invalid protocol id", class: InvalidProtocolID, frame: withProtocol(read(0x10, 1, 1), 1), closes: true},
		{name: "invalid length in the pdu", class: InvalidLength, frame: adu(0x11, 1, 0x10, 0, 0, 0, 2, 4, 0, 1), closes: true},
		{name: "invalid length unframable", class: InvalidLength,
			frame: []byte{0, 0x12, 0, 0, 0x01, 0x00, 1, 3, 0, 0, 0, 1}, closes: true},
		{name: "malformed pdu", class: MalformedPDU, frame: adu(0x13, 1, 3, 0, 0, 0, 1, 0), exc: 3},
		{name: "unknown function code", class: UnknownFunctionCode, frame: adu(0x14, 1, 0x41), exc: 1},
		{name: "function not allowed", class: FunctionNotAllowed, frame: adu(0x15, 1, 8, 0, 0, 0x12, 0x34), exc: 1},
		{name: "function not allowed read only", class: FunctionNotAllowed,
			cfg:   func(c *Config) { c.Clients = []ClientPolicy{{Addresses: []string{"127.0.0.0/8"}, ReadOnly: true}} },
			frame: adu(0x16, 1, pdu16(6, 3, 9)...), exc: 1},
		{name: "function not allowed outside write window", class: FunctionNotAllowed,
			cfg: func(c *Config) {
				c.Clients = []ClientPolicy{{Addresses: []string{"127.0.0.1"}, Writes: []Range{{HoldingRegisters, 10, 19}}}}
			},
			frame: adu(0x17, 1, 0x10, 0, 18, 0, 3, 6, 0, 1, 0, 2, 0, 3), exc: 1},
		{name: "function code conflict", class: FunctionCodeConflict,
			fake: func(req []byte) []byte {
				if req[1] == 0x18 {
					return adu(0x18, 1, 4, 2, 0, 7) // input registers for a holding read
				}
				return fakeAnswer(req)
			},
			frame: read(0x18, 1, 1), response: true, anomalous: adu(0x18, 1, 4, 2, 0, 7)},
		{name: "address out of range", class: AddressOutOfRange, frame: read(0x19, 200, 1), exc: 2},
		{name: "quantity out of range of the map", class: QuantityOutOfRange, frame: read(0x1A, 95, 10), exc: 3},
		{name: "quantity out of range of the spec", class: QuantityOutOfRange, frame: read(0x1B, 0, 126), exc: 3},
		{name: "unit id not allowed", class: UnitIDNotAllowed, frame: adu(0x1C, 7, pdu16(3, 1, 1)...), exc: 0x0B},
		{name: "unsolicited response", class: UnsolicitedResponse,
			fake: func(req []byte) []byte {
				if req[1] == 0x1D {
					return append(fakeAnswer(req), adu(0x99, 1, 3, 2, 0, 1)...)
				}
				return fakeAnswer(req)
			},
			frame: read(0x1D, 1, 1), response: true, anomalous: adu(0x99, 1, 3, 2, 0, 1)},
		{name: "transaction id reuse", class: TransactionIDReuse,
			fake: func(req []byte) []byte {
				if req[1] == 0x1E {
					return nil // a slow PLC: the first request stays outstanding
				}
				return fakeAnswer(req)
			},
			setup: [][]byte{read(0x1E, 1, 1)}, setupHeld: true, frame: read(0x1E, 2, 1)},
		{name: "flood of requests", class: Flood, cfg: func(c *Config) { c.FloodRequests = 5 },
			setup: [][]byte{read(0x20, 1, 1), read(0x21, 1, 1), read(0x22, 1, 1), read(0x23, 1, 1), read(0x24, 1, 1)},
			frame: read(0x25, 1, 1), exc: 6},
		{name: "flood of exceptions", class: Flood, cfg: func(c *Config) { c.FloodExceptions = 2; c.Map = nil },
			setup:    [][]byte{read(0x26, 150, 1), read(0x27, 150, 1)},
			frame:    read(0x28, 150, 1),
			response: true, anomalous: adu(0x28, 1, 0x83, 2)},
	}
}

// TestClasses crafts each anomaly on a raw connection and checks that exactly its
// class is counted and alerted, and that the action is carried out: with alert the
// frame reaches the other side, with block it does not, and the client gets the
// exception, the close, or nothing.
func TestClasses(t *testing.T) {
	covered := map[Class]bool{}
	for _, cc := range classCases() {
		covered[cc.class] = true
		for _, action := range []Action{ActionAlert, ActionBlock} {
			t.Run(cc.name+"/"+string(action), func(t *testing.T) {
				t.Parallel()
				runClassCase(t, cc, action)
			})
		}
	}
	for _, c := range Classes {
		if !covered[c] {
			t.Errorf("class %s has no case", c)
		}
	}
}

func runClassCase(t *testing.T, cc classCase, action Action) {
	cfg := Config{Units: []uint8{1}, Map: fullMap, Actions: map[Class]Action{cc.class: action}}
	if cc.cfg != nil {
		cc.cfg(&cfg)
	}
	// received is what the PLC side got so far; closedUp reports the proxy's upstream
	// connection closed.
	var received func() []byte
	var closedUp func() bool
	if cc.fake != nil {
		f := startFakePLC(t, cc.fake)
		cfg.Upstream = f.addr
		received = func() []byte { return bytes.Join(f.requests(), nil) }
		closedUp = nil
	} else {
		r := startRelay(t, startCServer(t))
		cfg.Upstream = r.addr
		received = func() []byte { up, _ := r.recorded(); return up }
		closedUp = func() bool { return r.closedConns() > 0 }
	}
	clock := newTestClock()
	tp := startProxy(t, cfg, clock.set)
	c := dialRaw(t, tp.Addr())

	var sent []byte
	for _, s := range cc.setup {
		if _, err := c.Write(s); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, s...)
		if !cc.setupHeld {
			if _, err := readADU(c, 5*time.Second); err != nil {
				t.Fatalf("setup answer: %v", err)
			}
		}
	}
	waitUntil(t, "setup frames at the plc", 5*time.Second, func() bool { return bytes.Equal(received(), sent) })
	if _, err := c.Write(cc.frame); err != nil {
		t.Fatal(err)
	}

	switch {
	case action == ActionAlert && !cc.response && cc.fake == nil:
		// The frame reaches the real PLC, which may not make sense of it: no probe.
		want := append(bytes.Clone(sent), cc.frame...)
		waitUntil(t, "frame at the plc", 5*time.Second, func() bool {
			got := received()
			if cc.class == InvalidLength && cc.closes {
				// Unframable: forwarded as far as it was read, then closed.
				return len(got) >= len(sent)+MBAPLen && bytes.HasPrefix(want, got)
			}
			return bytes.Equal(got, want)
		})
	case action == ActionBlock && cc.closes:
		expectClosed(t, c, 5*time.Second)
		waitUntil(t, "upstream closed", 5*time.Second, closedUp)
		if got := received(); !bytes.Equal(got, sent) {
			t.Errorf("plc got % x, want % x", got, sent)
		}
	default:
		if action == ActionBlock && cc.exc != 0 {
			got, err := readADU(c, 5*time.Second)
			if err != nil {
				t.Fatalf("exception answer: %v", err)
			}
			want := adu(uint16(cc.frame[0])<<8|uint16(cc.frame[1]), cc.frame[6], cc.frame[7]|0x80, cc.exc)
			if !bytes.Equal(got, want) {
				t.Errorf("answer % x, want exception % x", got, want)
			}
		}
		// A clean request after it is answered; what comes before its answer says
		// whether an anomalous response was passed on. After a request flood, whose
		// last frame was answered, the window has passed.
		if cc.class == Flood && !cc.response {
			clock.Advance(time.Hour)
		}
		if _, err := c.Write(probe); err != nil {
			t.Fatal(err)
		}
		var before [][]byte
		for {
			got, err := readADU(c, 5*time.Second)
			if err != nil {
				t.Fatalf("probe answer: %v (before it: % x)", err, before)
			}
			if got[0] == 0x77 && got[1] == 0x77 {
				break
			}
			before = append(before, got)
		}
		if cc.response {
			passed := slices.ContainsFunc(before, func(b []byte) bool { return bytes.Equal(b, cc.anomalous) })
			if passed != (action == ActionAlert) {
				t.Errorf("anomalous response % x passed: %v; client got % x", cc.anomalous, passed, before)
			}
		} else {
			want := append(bytes.Clone(sent), probe...)
			if action == ActionAlert {
				want = append(append(bytes.Clone(sent), cc.frame...), probe...)
			}
			if got := received(); !bytes.Equal(got, want) {
				t.Errorf("plc got % x, want % x", got, want)
			}
		}
	}

	as := tp.alerts.wait(t, 1, 5*time.Second)
	want := map[string]float64{string(cc.class) + "/" + string(action): 1}
	if got := tp.anomalies(t); !maps.Equal(got, want) {
		t.Errorf("anomalies %v, want %v", got, want)
	}
	if len(as) != 1 || as[0].Class != string(cc.class) || as[0].Action != string(action) {
		t.Fatalf("alerts %+v, want one %s/%s", as, cc.class, action)
	}
	a := as[0]
	if a.Proxy != "test" || a.Severity != string(cc.class.Severity()) || !strings.HasPrefix(a.Client, "127.0.0.1:") ||
		a.Excerpt == "" || a.Time.IsZero() || a.Reason == "" {
		t.Errorf("alert fields: %+v", a)
	}
}

// TestFloodIsolation: one client floods (its requests beyond the limit are blocked)
// while another polls; the poller sees no error, no exception and no slow answer.
func TestFloodIsolation(t *testing.T) {
	plc := startCServer(t)
	tp := startProxy(t, Config{Upstream: plc, FloodRequests: 300, FloodWindow: time.Second,
		Actions: map[Class]Action{Flood: ActionBlock}})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flooder := dialRaw(t, tp.Addr())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the flood: pipelined reads as fast as the socket takes them
		defer wg.Done()
		batch := bytes.Repeat(adu(1, 1, pdu16(3, 0, 10)...), 64)
		var tx uint16
		for ctx.Err() == nil {
			for i := 0; i < len(batch); i += 12 {
				tx++ // distinct transaction ids, so only the rate is wrong
				batch[i], batch[i+1] = byte(tx>>8), byte(tx)
			}
			flooder.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := flooder.Write(batch); err != nil {
				return
			}
		}
	}()
	go func() { // drain the flooder's answers so its connection keeps going
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			flooder.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := flooder.Read(buf); err != nil {
				return
			}
		}
	}()
	tp.waitMetricAtLeast(t, 1, "edged_dpi_anomalies_total", "class", "flood", "action", "block")

	c := goburrow(t, tp.Addr())
	var lat []time.Duration
	for i := 0; i < 100; i++ {
		t0 := time.Now()
		if _, err := c.ReadHoldingRegisters(0, 10); err != nil {
			t.Fatalf("poll %d during the flood: %v", i, err)
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(10 * time.Millisecond) // a poller's pace: 100/s at most, under the limit
	}
	cancel()
	flooder.Close()
	wg.Wait()
	slices.Sort(lat)
	p50, p95, top := lat[len(lat)/2], lat[len(lat)*95/100], lat[len(lat)-1]
	t.Logf("poller during the flood: p50 %v, p95 %v, max %v; flood frames blocked %v", p50, p95, top,
		tp.metric(t, "edged_dpi_anomalies_total", "class", "flood", "action", "block"))
	// Loose bounds: the race detector and a shared 2-CPU machine; a poller starved by
	// the flood would take seconds or time out.
	if p95 > 100*time.Millisecond || top > time.Second {
		t.Errorf("poller p95 %v, max %v during a flood", p95, top)
	}
	for _, a := range tp.alerts.all() {
		if a.Client != flooder.LocalAddr().String() {
			t.Errorf("alert for another client than the flooder: %+v", a)
		}
	}
}

func (tp *testProxy) waitMetricAtLeast(tb testing.TB, v float64, name string, labels ...string) {
	tb.Helper()
	waitUntil(tb, fmt.Sprintf("%s%v >= %v", name, labels, v), 10*time.Second, func() bool {
		return tp.metric(tb, name, labels...) >= v
	})
}

// TestAlertRateLimit: 100 identical anomalies in a burst give one alert; the next one
// after AlertEvery carries the 99 held back. All 101 are counted.
func TestAlertRateLimit(t *testing.T) {
	plc := startCServer(t)
	clock := newTestClock()
	tp := startProxy(t, Config{Upstream: plc, AlertEvery: 10 * time.Second, Map: fullMap,
		Actions: map[Class]Action{AddressOutOfRange: ActionBlock}}, clock.set)
	c := dialRaw(t, tp.Addr())
	burst := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := c.Write(adu(uint16(i), 1, pdu16(3, 500, 1)...)); err != nil {
				t.Fatal(err)
			}
			if _, err := readADU(c, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	burst(100)
	if as := tp.alerts.all(); len(as) != 1 || as[0].Suppressed != 0 {
		t.Fatalf("after a burst of 100: alerts %+v, want 1", as)
	}
	clock.Advance(10 * time.Second)
	burst(1)
	as := tp.alerts.all()
	if len(as) != 2 || as[1].Suppressed != 99 {
		t.Fatalf("after AlertEvery: alerts %+v, want a second with Suppressed 99", as)
	}
	if got := tp.metric(t, "edged_dpi_anomalies_total", "class", "address_out_of_range", "action", "block"); got != 101 {
		t.Errorf("counted %v anomalies, want 101", got)
	}
}

// TestMaxClients: clients beyond the cap are closed and counted; a slot that frees up
// is taken again.
func TestMaxClients(t *testing.T) {
	plc := startCServer(t)
	tp := startProxy(t, Config{Upstream: plc, MaxClients: 2})
	a := goburrow(t, tp.Addr())
	b := dialRaw(t, tp.Addr())
	if _, err := a.ReadHoldingRegisters(1, 1); err != nil {
		t.Fatal(err)
	}
	tp.waitMetric(t, 2, "edged_dpi_clients")
	third := dialRaw(t, tp.Addr())
	expectClosed(t, third, 5*time.Second)
	tp.waitMetric(t, 1, "edged_dpi_clients_refused_total")

	b.Close()
	tp.waitMetric(t, 1, "edged_dpi_clients")
	d := dialRaw(t, tp.Addr())
	if _, err := d.Write(probe); err != nil {
		t.Fatal(err)
	}
	if got, err := readADU(d, 5*time.Second); err != nil || got[7] != 3 {
		t.Fatalf("client in the freed slot: % x, %v", got, err)
	}
	if _, err := a.ReadHoldingRegisters(1, 1); err != nil {
		t.Fatalf("first client after the churn: %v", err)
	}
}

// TestIdleTimeout: a silent client is closed after IdleTimeout; one that keeps talking
// is not.
func TestIdleTimeout(t *testing.T) {
	plc := startCServer(t)
	idle := 300 * time.Millisecond
	tp := startProxy(t, Config{Upstream: plc, IdleTimeout: idle})
	t0 := time.Now()
	silent := dialRaw(t, tp.Addr())
	talker := dialRaw(t, tp.Addr())
	closedAfter := make(chan time.Duration, 1)
	go func() {
		silent.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		silent.Read(b[:])
		closedAfter <- time.Since(t0)
	}()
	for time.Since(t0) < 3*idle {
		if _, err := talker.Write(probe); err != nil {
			t.Fatalf("talker after %v: %v", time.Since(t0), err)
		}
		if _, err := readADU(talker, 5*time.Second); err != nil {
			t.Fatalf("talker after %v: %v", time.Since(t0), err)
		}
		time.Sleep(idle / 6)
	}
	if el := <-closedAfter; el < idle || el > 3*idle {
		t.Errorf("silent client closed after %v, want about the idle timeout %v", el, idle)
	}
	tp.waitMetric(t, 1, "edged_dpi_clients")
}

// TestUpstreamDown: a client whose PLC connection cannot be made is closed, and the
// failure counted.
func TestUpstreamDown(t *testing.T) {
	port := freePort(t) // nothing listens there
	tp := startProxy(t, Config{Upstream: "127.0.0.1:" + strconv.Itoa(port), DialTimeout: time.Second})
	c := dialRaw(t, tp.Addr())
	expectClosed(t, c, 5*time.Second)
	tp.waitMetric(t, 1, "edged_dpi_upstream_dial_failures_total")
	tp.waitMetric(t, 0, "edged_dpi_clients")
}

// TestSlowPLCConnection: one client's request held by the PLC does not hold another
// client's: each has its own upstream connection and goroutines.
func TestSlowPLCConnection(t *testing.T) {
	release := make(chan struct{})
	f := startFakePLC(t, func(req []byte) []byte {
		if req[1] == 0x55 {
			<-release
		}
		return fakeAnswer(req)
	})
	defer close(release)
	tp := startProxy(t, Config{Upstream: f.addr})
	stuck := dialRaw(t, tp.Addr())
	if _, err := stuck.Write(adu(0x55, 1, pdu16(3, 1, 1)...)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "held request at the plc", 5*time.Second, func() bool { return len(f.requests()) == 1 })
	other := dialRaw(t, tp.Addr())
	for i := 0; i < 20; i++ {
		if _, err := other.Write(probe); err != nil {
			t.Fatal(err)
		}
		if _, err := readADU(other, 2*time.Second); err != nil {
			t.Fatalf("other client while one is held: %v", err)
		}
	}
}

// TestSplitAndCoalesced: frames split across writes and several frames in one write
// are framed and forwarded as they are.
func TestSplitAndCoalesced(t *testing.T) {
	plc := startCServer(t)
	r := startRelay(t, plc)
	tp := startProxy(t, Config{Upstream: r.addr})
	c := dialRaw(t, tp.Addr())
	var stream []byte
	for i := 0; i < 20; i++ {
		stream = append(stream, adu(uint16(i+1), 1, pdu16(3, uint16(i), 2)...)...)
	}
	// One byte, then the rest of the first frame, then everything else at once.
	for _, part := range [][]byte{stream[:1], stream[1:12], stream[12:]} {
		if _, err := c.Write(part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // let each part arrive as its own segment
	}
	for i := 0; i < 20; i++ {
		if _, err := readADU(c, 5*time.Second); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
	}
	if up, _ := r.recorded(); !bytes.Equal(up, stream) {
		t.Errorf("plc got % x, want % x", up, stream)
	}
	if a := tp.anomalies(t); len(a) != 0 {
		t.Errorf("anomalies: %v", a)
	}
}

// TestCleanPathNoAlloc: a clean request and its answer through the proxy allocate
// nothing (the client here allocates nothing either, and the PLC is the C server).
func TestCleanPathNoAlloc(t *testing.T) {
	tp := startProxy(t, Config{Upstream: startCServer(t), Map: fullMap, Units: []uint8{1}, FloodRequests: 1 << 30})
	c := dialRaw(t, tp.Addr())
	req := adu(1, 1, pdu16(3, 0, 10)...)
	resp := make([]byte, 9+20)
	roundTrip := func() {
		req[1]++
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		roundTrip()
	}
	if n := testing.AllocsPerRun(2000, roundTrip); n > 0.05 {
		t.Errorf("%.2f allocations per round trip", n)
	}
	if a := tp.anomalies(t); len(a) != 0 {
		t.Errorf("anomalies: %v", a)
	}
}

// TestRunStops: when its context ends Run closes every connection and returns nil; a
// second Run is refused.
func TestRunStops(t *testing.T) {
	p, err := New(Config{Name: "stop", Listen: "127.0.0.1:0", Upstream: startCServer(t), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-p.Ready()
	c := dialRaw(t, p.Addr())
	if _, err := c.Write(probe); err != nil {
		t.Fatal(err)
	}
	if _, err := readADU(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	expectClosed(t, c, 5*time.Second)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := p.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}

// TestSharedRegistry: two proxies on one registry share the metric families, told
// apart by the proxy label.
func TestSharedRegistry(t *testing.T) {
	plc := startCServer(t)
	reg := prometheus.NewRegistry()
	var ps []*Proxy
	for _, name := range []string{"a", "b"} {
		p, err := New(Config{Name: name, Listen: "127.0.0.1:0", Upstream: plc, Registerer: reg, Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Run(ctx); err != nil {
				t.Errorf("Run %s: %v", p.cfg.Name, err)
			}
		}()
		<-p.Ready()
	}
	defer func() { cancel(); wg.Wait() }()
	c := dialRaw(t, ps[1].Addr())
	if _, err := c.Write(probe); err != nil {
		t.Fatal(err)
	}
	if _, err := readADU(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	tb := &testProxy{Proxy: ps[1], reg: reg}
	ta := &testProxy{Proxy: ps[0], reg: reg}
	if got := tb.metric(t, "edged_dpi_frames_total", "direction", "request"); got != 1 {
		t.Errorf("proxy b counted %v requests", got)
	}
	if got := ta.metric(t, "edged_dpi_frames_total", "direction", "request"); got != 0 {
		t.Errorf("proxy a counted %v requests", got)
	}
}
