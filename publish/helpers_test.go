package publish

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/internal/testmqtt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait in these tests; generous for -race on a loaded machine.
const waitTimeout = 20 * time.Second

// brokerKinds are the real brokers every delivery test runs against.
var brokerKinds = []struct {
	name  string
	start func(t testing.TB) string
}{
	{"embedded", func(t testing.TB) string { return "tcp://" + startBroker(t, "127.0.0.1:0").Addr() }},
	{"mosquitto", testmqtt.Start},
}

// startBroker runs the embedded broker until the test ends.
func startBroker(t testing.TB, listen string) *Broker {
	t.Helper()
	b := NewBroker(listen, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("embedded broker: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("embedded broker Run: %v", err)
		}
	})
	return b
}

// logBuffer is a slog destination the test can search; it is printed if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// capture returns a debug-level logger into a buffer, shown when the test fails. Tests
// do not log through t directly: client goroutines may log after the test returned.
func capture(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := new(logBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func testLog(t testing.TB) *slog.Logger {
	l, _ := capture(t)
	return l
}

var clientSeq atomic.Int64

func uniqueID(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, clientSeq.Add(1))
}

func testConfig(broker string) Config {
	return Config{
		Broker:               broker,
		ClientID:             uniqueID("edged-test"),
		Site:                 "s1",
		Line:                 "l1",
		Node:                 "n1",
		ConnectTimeout:       2 * time.Second,
		MaxReconnectInterval: 200 * time.Millisecond,
		DrainTimeout:         5 * time.Second,
	}
}

// running is a publisher whose Run goroutine the test owns.
type running struct {
	*Publisher
	reg    *prometheus.Registry
	log    *logBuffer
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

func startPublisher(t testing.TB, cfg Config) *running {
	t.Helper()
	log, buf := capture(t)
	reg := prometheus.NewRegistry()
	p, err := NewPublisher(cfg, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Publisher: p, reg: reg, log: buf, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- p.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// stop ends Run and returns its result; safe to call more than once.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.errc:
		case <-time.After(waitTimeout):
			r.err = fmt.Errorf("Run did not return within %s of cancel", waitTimeout)
		}
	})
	return r.err
}

func (r *running) waitConnected(t testing.TB) {
	t.Helper()
	waitFor(t, "publisher connected", r.Connected)
}

// metric reads one sample from the publisher's registry.
func (r *running) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return gather(t, r.reg, name, labels...)
}

func gather(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// subscriber is an independent paho client that records what the broker delivers.
type subscriber struct {
	client mqtt.Client
	msgs   chan mqtt.Message
}

func subscribe(t testing.TB, broker, filter string) *subscriber {
	t.Helper()
	s := &subscriber{msgs: make(chan mqtt.Message, 1<<16)}
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(uniqueID("sub")).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetOrderMatters(true)
	s.client = mqtt.NewClient(opts)
	if tok := s.client.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	tok := s.client.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { s.msgs <- m })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return s
}

func (s *subscriber) next(t testing.TB, what string) mqtt.Message {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		return nil
	}
}

// nextStatus skips everything but the status topic.
func (s *subscriber) nextStatus(t testing.TB, topic string) mqtt.Message {
	t.Helper()
	for {
		if m := s.next(t, "a status message on "+topic); m.Topic() == topic {
			return m
		}
	}
}

// proxy forwards TCP connections to a broker. It can cut them all at once (sever), which
// is what a pulled cable or a crashed box looks like to the broker: no DISCONNECT, just
// a dead socket. It can be closed (setDown), hanging up on every new connection until
// it is opened again, so that a test decides when the publisher gets back in. And,
// started withRecording, it reads the MQTT packets going through: which results the
// publisher sent, in what order, and which ones the broker acknowledged (PUBACK), with
// the time; the test's independent witness of what the broker took responsibility for.
type proxy struct {
	ln     net.Listener
	target string
	record bool
	down   atomic.Bool
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// sent lists result publishes in the order they passed, across connections.
	sent []wirePub
	// acks holds, per result id, when the broker acknowledged it, every time it did.
	acks map[string][]time.Time
	// sessions holds, per connection in the order of their CONNECTs, the clean session
	// flag the client sent and the session present flag of the broker's CONNACK.
	sessions []*sessionSeen
}

// sessionSeen is one recorded connection's CONNECT and CONNACK.
type sessionSeen struct {
	clean          bool
	acked          bool // a CONNACK came
	sessionPresent bool
}

// proxyOption configures startProxy.
type proxyOption func(*proxy)

// withRecording makes the proxy decode and record result PUBLISHes and their PUBACKs.
func withRecording(p *proxy) { p.record = true }

type wirePub struct {
	id, inspection string
	seq            uint64
	dup            bool
	qos            byte
}

// startProxy forwards to target, a broker URL ("tcp://host:port") or a bare address.
func startProxy(t testing.TB, target string, opts ...proxyOption) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: strings.TrimPrefix(target, "tcp://"), conns: map[net.Conn]struct{}{}, acks: map[string][]time.Time{}}
	for _, o := range opts {
		o(p)
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.sever()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "tcp://" + p.ln.Addr().String() }

// setDown closes the way to the broker (every new connection is hung up on) or opens
// it. Connections already open are left alone: sever cuts them.
func (p *proxy) setDown(down bool) { p.down.Store(down) }

// sever closes every forwarded connection on both sides.
func (p *proxy) sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			_ = in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		if !p.record {
			go p.pipe(out, in)
			go p.pipe(in, out)
			continue
		}
		c := &proxyConn{p: p, mids: map[uint16]string{}}
		go p.pipePackets(out, in, c.clientPacket)
		go p.pipePackets(in, out, c.brokerPacket)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// pipePackets forwards whole packets from src to dst, showing each to see first.
func (p *proxy) pipePackets(dst, src net.Conn, see func(hdr byte, body []byte)) {
	defer p.wg.Done()
	defer func() {
		_ = dst.Close()
		_ = src.Close()
	}()
	r := bufio.NewReader(src)
	for {
		raw, hdr, body, err := readPacket(r)
		if err != nil {
			return
		}
		see(hdr, body)
		if _, err := dst.Write(raw); err != nil {
			return
		}
	}
}

// readPacket reads one MQTT control packet: the fixed header, the remaining length
// (1 to 4 bytes), the rest. raw is all of it, as read.
func readPacket(r *bufio.Reader) (raw []byte, hdr byte, body []byte, err error) {
	hdr, err = r.ReadByte()
	if err != nil {
		return nil, 0, nil, err
	}
	raw = append(raw, hdr)
	n, shift := 0, 0
	for i := 0; ; i++ {
		if i == 4 {
			return nil, 0, nil, errors.New("remaining length longer than 4 bytes")
		}
		b, err := r.ReadByte()
		if err != nil {
			return nil, 0, nil, err
		}
		raw = append(raw, b)
		n |= int(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			break
		}
	}
	start := len(raw)
	raw = append(raw, make([]byte, n)...)
	if _, err := io.ReadFull(r, raw[start:]); err != nil {
		return nil, 0, nil, err
	}
	return raw, hdr, raw[start:], nil
}

// proxyConn is one recorded connection: packet ids are per connection.
type proxyConn struct {
	p    *proxy
	mu   sync.Mutex
	mids map[uint16]string // packet id -> result id, for publishes awaiting PUBACK
	sess *sessionSeen      // set by the CONNECT
}

func (c *proxyConn) clientPacket(hdr byte, body []byte) {
	if hdr>>4 == 1 { // CONNECT: protocol name, level, flags (bit 1: clean session)
		if len(body) < 2 {
			return
		}
		if at := 2 + int(binary.BigEndian.Uint16(body)) + 1; len(body) > at {
			ss := &sessionSeen{clean: body[at]&0x02 != 0}
			c.mu.Lock()
			c.sess = ss
			c.mu.Unlock()
			c.p.mu.Lock()
			c.p.sessions = append(c.p.sessions, ss)
			c.p.mu.Unlock()
		}
		return
	}
	if hdr>>4 != 3 { // PUBLISH
		return
	}
	qos := hdr >> 1 & 3
	if len(body) < 2 {
		return
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return
	}
	topic := string(body[2 : 2+tl])
	rest := body[2+tl:]
	var mid uint16
	if qos > 0 {
		if len(rest) < 2 {
			return
		}
		mid, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	if !strings.Contains(topic, "/result/") {
		return
	}
	var r Result
	if err := json.Unmarshal(rest, &r); err != nil {
		return
	}
	c.mu.Lock()
	c.mids[mid] = r.ID
	c.mu.Unlock()
	c.p.mu.Lock()
	c.p.sent = append(c.p.sent, wirePub{id: r.ID, inspection: r.Inspection, seq: r.Seq, dup: hdr&0x08 != 0, qos: qos})
	c.p.mu.Unlock()
}

func (c *proxyConn) brokerPacket(hdr byte, body []byte) {
	if hdr>>4 == 2 && len(body) >= 2 { // CONNACK: flags (bit 0: session present), return code
		c.mu.Lock()
		ss := c.sess
		c.mu.Unlock()
		if ss != nil {
			c.p.mu.Lock()
			ss.acked = body[1] == 0
			ss.sessionPresent = body[0]&0x01 != 0
			c.p.mu.Unlock()
		}
		return
	}
	if hdr>>4 != 4 || len(body) < 2 { // PUBACK
		return
	}
	mid := binary.BigEndian.Uint16(body)
	c.mu.Lock()
	id, ok := c.mids[mid]
	delete(c.mids, mid)
	c.mu.Unlock()
	if !ok {
		return
	}
	now := time.Now()
	c.p.mu.Lock()
	c.p.acks[id] = append(c.p.acks[id], now)
	c.p.mu.Unlock()
}

// mustRecord guards the recording's readers: a proxy started without recording has
// seen nothing, which must not read as "the broker acknowledged nothing".
func (p *proxy) mustRecord() {
	if !p.record {
		panic("proxy: started without withRecording")
	}
}

// ackedCount is how many distinct results the broker acknowledged.
func (p *proxy) ackedCount() int {
	p.mustRecord()
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acks)
}

// connections returns what the recorded connections' CONNECT and CONNACK said, oldest
// first.
func (p *proxy) connections() []sessionSeen {
	p.mustRecord()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]sessionSeen, len(p.sessions))
	for i, ss := range p.sessions {
		out[i] = *ss
	}
	return out
}

// connAcks counts the connections the broker accepted.
func (p *proxy) connAcks() int {
	n := 0
	for _, ss := range p.connections() {
		if ss.acked {
			n++
		}
	}
	return n
}

// ackedSet is the results the broker acknowledged so far.
func (p *proxy) ackedSet() map[string]bool {
	p.mustRecord()
	p.mu.Lock()
	defer p.mu.Unlock()
	set := make(map[string]bool, len(p.acks))
	for id := range p.acks {
		set[id] = true
	}
	return set
}

func (p *proxy) ackTimes(id string) []time.Time {
	p.mustRecord()
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.acks[id]...)
}

// sentResults returns the result publishes seen so far, in the order they passed.
func (p *proxy) sentResults() []wirePub {
	p.mustRecord()
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wirePub(nil), p.sent...)
}

// checkSendOrder checks that the publisher sent every result's first copy after the
// first copies of all earlier results of the same inspection.
func (p *proxy) checkSendOrder(t testing.TB) (copies int) {
	t.Helper()
	p.mustRecord()
	p.mu.Lock()
	defer p.mu.Unlock()
	checkFirstCopyOrder(t, "publisher to broker", len(p.sent), func(i int) (string, string, uint64) {
		return p.sent[i].id, p.sent[i].inspection, p.sent[i].seq
	})
	return len(p.sent)
}

// freeAddr returns a loopback address nothing listens on (for the moment).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
