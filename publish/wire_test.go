package publish

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/spool"
)

// wire is a TCP proxy between the publisher and a broker that reads the MQTT packets
// going through it: which results the publisher sent, in what order, and which ones the
// broker acknowledged (PUBACK), with the time. It is the test's independent witness of
// what the broker took responsibility for. It can also be closed (setDown), which looks
// to the publisher like a broker that went away: new connections are refused, open ones
// cut.
type wire struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// sent lists result publishes in the order they passed, across connections.
	sent []wirePub
	// acks holds, per result id, when the broker acknowledged it, every time it did.
	acks map[string][]time.Time
}

type wirePub struct {
	id, inspection string
	seq            uint64
	dup            bool
}

func startWire(t testing.TB, target string) *wire {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{ln: ln, target: target, conns: map[net.Conn]struct{}{}, acks: map[string][]time.Time{}}
	w.wg.Add(1)
	go w.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		w.sever()
		w.wg.Wait()
	})
	return w
}

func (w *wire) url() string { return "tcp://" + w.ln.Addr().String() }

// setDown closes the way to the broker (refusing and cutting connections) or opens it.
func (w *wire) setDown(down bool) {
	w.down.Store(down)
	if down {
		w.sever()
	}
}

func (w *wire) sever() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c := range w.conns {
		_ = c.Close()
		delete(w.conns, c)
	}
}

func (w *wire) accept() {
	defer w.wg.Done()
	for {
		in, err := w.ln.Accept()
		if err != nil {
			return
		}
		if w.down.Load() {
			_ = in.Close()
			continue
		}
		out, err := net.Dial("tcp", w.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		w.mu.Lock()
		w.conns[in], w.conns[out] = struct{}{}, struct{}{}
		w.mu.Unlock()
		c := &wireConn{w: w, mids: map[uint16]string{}}
		w.wg.Add(2)
		go w.pipe(out, in, c.clientPacket)
		go w.pipe(in, out, c.brokerPacket)
	}
}

// pipe forwards whole packets from src to dst, showing each to see first.
func (w *wire) pipe(dst, src net.Conn, see func(hdr byte, body []byte)) {
	defer w.wg.Done()
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

// wireConn is one proxied connection: packet ids are per connection.
type wireConn struct {
	w    *wire
	mu   sync.Mutex
	mids map[uint16]string // packet id -> result id, for publishes awaiting PUBACK
}

func (c *wireConn) clientPacket(hdr byte, body []byte) {
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
	c.w.mu.Lock()
	c.w.sent = append(c.w.sent, wirePub{id: r.ID, inspection: r.Inspection, seq: r.Seq, dup: hdr&0x08 != 0})
	c.w.mu.Unlock()
}

func (c *wireConn) brokerPacket(hdr byte, body []byte) {
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
	c.w.mu.Lock()
	c.w.acks[id] = append(c.w.acks[id], now)
	c.w.mu.Unlock()
}

// ackedCount is how many distinct results the broker acknowledged.
func (w *wire) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// ackedSet is the results the broker acknowledged so far.
func (w *wire) ackedSet() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	set := make(map[string]bool, len(w.acks))
	for id := range w.acks {
		set[id] = true
	}
	return set
}

func (w *wire) ackTimes(id string) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.acks[id]...)
}

// checkSendOrder checks that the publisher sent every result's first copy after the
// first copies of all earlier results of the same inspection.
func (w *wire) checkSendOrder(t testing.TB) (copies int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	checkFirstCopyOrder(t, "publisher to broker", len(w.sent), func(i int) (string, string, uint64) {
		return w.sent[i].id, w.sent[i].inspection, w.sent[i].seq
	})
	return len(w.sent)
}

// checkFirstCopyOrder fails the test when a result arrives for the first time after a
// later result of its inspection arrived; duplicates of earlier results are fine.
func checkFirstCopyOrder(t testing.TB, where string, n int, at func(int) (id, inspection string, seq uint64)) (dups int) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]uint64{}
	for i := range n {
		id, insp, seq := at(i)
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		if seq < last[insp] {
			t.Errorf("%s: %s seq %d arrived for the first time after seq %d (message %d of %d)", where, insp, seq, last[insp], i, n)
		}
		last[insp] = max(last[insp], seq)
	}
	return dups
}

// persistentSub is a QoS 1 subscriber with a persistent session (clean session off, a
// fixed client id) that reconnects by itself, as a dashboard or MES would: a broker that
// keeps its session queues what it misses while away.
type persistentSub struct {
	client mqtt.Client
	lost   chan error
	cancel context.CancelFunc
	done   chan struct{}
	up     atomic.Bool

	mu       sync.Mutex
	got      []wirePub // in arrival order
	sessions []bool    // session present, per connection
}

func startPersistentSub(t testing.TB, broker, filter string) *persistentSub {
	t.Helper()
	s := &persistentSub{lost: make(chan error, 1), done: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(uniqueID("persistent-sub")).
		SetCleanSession(false).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectTimeout(2 * time.Second).
		SetOrderMatters(true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case s.lost <- err:
			default:
			}
		})
	opts.SetDefaultPublishHandler(s.receive)
	s.client = mqtt.NewClient(opts)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx, filter)
	t.Cleanup(s.stop)
	waitFor(t, "the subscriber connected", s.up.Load)
	return s
}

func (s *persistentSub) receive(_ mqtt.Client, m mqtt.Message) {
	var r Result
	if err := json.Unmarshal(m.Payload(), &r); err != nil {
		return
	}
	s.mu.Lock()
	s.got = append(s.got, wirePub{id: r.ID, inspection: r.Inspection, seq: r.Seq, dup: m.Duplicate()})
	s.mu.Unlock()
}

func (s *persistentSub) run(ctx context.Context, filter string) {
	defer close(s.done)
	for ctx.Err() == nil {
		tok := s.client.Connect()
		<-tok.Done() // bounded by the connect timeout
		if tok.Error() == nil && ctx.Err() == nil {
			ct, _ := tok.(*mqtt.ConnectToken)
			s.mu.Lock()
			s.sessions = append(s.sessions, ct != nil && ct.SessionPresent())
			s.mu.Unlock()
			// Subscribing again is harmless with a session present, and needed without.
			st := s.client.Subscribe(filter, 1, s.receive)
			<-st.Done()
			if st.Error() == nil {
				s.up.Store(true)
				select {
				case <-s.lost:
				case <-ctx.Done():
				}
				s.up.Store(false)
			}
		}
		if s.client.IsConnectionOpen() {
			s.client.Disconnect(100)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *persistentSub) stop() {
	s.cancel()
	<-s.done
}

func (s *persistentSub) received() []wirePub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wirePub(nil), s.got...)
}

func (s *persistentSub) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]struct{}, len(s.got))
	for _, g := range s.got {
		seen[g.id] = struct{}{}
	}
	return len(seen)
}

func (s *persistentSub) sessionFlags() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.sessions...)
}

// openSpool opens a spool in a fresh folder (unless o.Dir is set), with its metrics on
// a registry of its own, closed when the test ends.
func openSpool(t testing.TB, o spool.Options) (*spool.Spool, *prometheus.Registry) {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Log == nil {
		o.Log = testLog(t)
	}
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	sp, err := spool.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sp.Close(); err != nil {
			t.Errorf("close spool: %v", err)
		}
	})
	return sp, reg
}

// outcomes records what OnResult said about each result.
type outcomes struct {
	mu    sync.Mutex
	by    map[string][]error
	calls int
}

func newOutcomes() *outcomes { return &outcomes{by: map[string][]error{}} }

func (o *outcomes) onResult(r *Result, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.by[r.ID] = append(o.by[r.ID], err)
	o.calls++
}

// check wants exactly one call per result, each with nil or ErrSpooled, and returns
// how many were spooled.
func (o *outcomes) check(t testing.TB, results []*Result) (spooled int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range results {
		errs := o.by[r.ID]
		switch {
		case len(errs) != 1:
			t.Errorf("result %s (%s seq %d): OnResult called %d times: %v", r.ID, r.Inspection, r.Seq, len(errs), errs)
		case errors.Is(errs[0], ErrSpooled):
			spooled++
		case errs[0] != nil:
			t.Errorf("result %s: OnResult(%v), want nil or ErrSpooled", r.ID, errs[0])
		}
	}
	if o.calls != len(results) {
		t.Errorf("OnResult called %d times for %d results", o.calls, len(results))
	}
	return spooled
}

// publishPaced publishes results at rate per second, in bursts every 5ms, and returns
// when all are accepted.
func publishPaced(t testing.TB, p *running, results []*Result, rate float64, published *atomic.Int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	for i, r := range results {
		if due := start.Add(time.Duration(float64(i) / rate * float64(time.Second))); time.Until(due) > 5*time.Millisecond {
			time.Sleep(time.Until(due))
		}
		if err := p.Publish(ctx, r); err != nil {
			return fmt.Errorf("Publish result %d: %w", i, err)
		}
		published.Add(1)
	}
	return nil
}

// logLines counts the lines of a captured log that contain s.
func logLines(l *logBuffer, s string) int { return strings.Count(l.String(), s) }

// sortedKeys is for stable failure messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
