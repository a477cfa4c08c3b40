package linepage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/publish"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// countSink is the next sink: it counts what reached it.
type countSink struct {
	n   atomic.Int64
	err error
}

func (s *countSink) Publish(context.Context, *publish.Result) error {
	s.n.Add(1)
	return s.err
}

// rig is a page mounted on a real HTTP server on 127.0.0.1:0 with Run going.
type rig struct {
	page   *Page
	srv    *httptest.Server
	next   *countSink
	reg    *prometheus.Registry
	client *http.Client
	stop   func() // ends Run and waits for it
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	r := &rig{next: &countSink{}, reg: prometheus.NewRegistry()}
	cfg.Registerer = r.reg
	p, err := New(cfg, r.next)
	if err != nil {
		t.Fatal(err)
	}
	r.page = p
	mux := http.NewServeMux()
	for pattern, h := range p.Routes() {
		mux.Handle(pattern, h)
	}
	r.srv = httptest.NewServer(mux)
	tr := &http.Transport{}
	r.client = &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		r.stop()
		r.srv.Close()
		tr.CloseIdleConnections()
	})
	return r
}

func result(seq uint64, verdict string) *publish.Result {
	return &publish.Result{
		V: publish.ResultVersion, ID: fmt.Sprintf("r%06d", seq), TraceID: "t", Node: "n1",
		Inspection: "surface", Source: "cam1", Seq: seq,
		CapturedAt: time.Date(2026, 11, 28, 4, 0, 0, int(seq)*1000, time.UTC),
		Verdict:    verdict, Label: strings.ToLower(verdict) + "-label", Score: 0.75,
		Model:     publish.ModelRef{Name: "surface", Version: "1.2.0", SHA256: "ab"},
		LatencyMS: publish.Latency{Queue: 1, Infer: 2, Total: 3.5},
		PartID:    fmt.Sprintf("P%d", seq),
	}
}

type event struct {
	name string
	data string
}

// stream reads server-sent events from one open /v1/events response.
type stream struct {
	resp *http.Response
	br   *bufio.Reader
}

func (r *rig) open(t *testing.T) *stream {
	t.Helper()
	req, err := http.NewRequest("GET", r.srv.URL+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET /v1/events: %s", resp.Status)
	}
	s := &stream{resp: resp, br: bufio.NewReader(resp.Body)}
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// next returns the next event, or an error when the stream ends.
func (s *stream) next() (event, error) {
	var ev event
	var data []string
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.name != "" || data != nil {
				ev.data = strings.Join(data, "\n")
				return ev, nil
			}
		case strings.HasPrefix(line, ":"), strings.HasPrefix(line, "retry:"):
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			return ev, fmt.Errorf("unexpected line %q", line)
		}
	}
}

func (s *stream) expect(t *testing.T, name string) event {
	t.Helper()
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatalf("waiting for %s event: %v", name, err)
		}
		if ev.name == "status" && name != "status" {
			continue
		}
		if ev.name != name {
			t.Fatalf("got %s event, want %s: %s", ev.name, name, ev.data)
		}
		return ev
	}
}

func decodeSnapshot(t *testing.T, data string) snapshot {
	t.Helper()
	var s snapshot
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		t.Fatalf("snapshot %s: %v", data, err)
	}
	return s
}

func TestPublishWithoutClientsRecordsAndHandsOn(t *testing.T) {
	next := &countSink{}
	p, err := New(Config{Title: "s/l/n"}, next)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 60 {
		v := publish.VerdictOK
		switch i % 3 {
		case 1:
			v = publish.VerdictNG
		case 2:
			v = "SOMETHING"
		}
		if err := p.Publish(ctx, result(uint64(i), v)); err != nil {
			t.Fatal(err)
		}
	}
	if got := next.n.Load(); got != 60 {
		t.Fatalf("next got %d results, want 60", got)
	}
	p.mu.Lock()
	s := p.snapshotLocked()
	p.mu.Unlock()
	want := map[string]uint64{"OK": 20, "NG": 20, "UNKNOWN": 20}
	if fmt.Sprint(s.Counters["surface"]) != fmt.Sprint(want) {
		t.Fatalf("counters %v, want %v", s.Counters["surface"], want)
	}
	if len(s.Results) != maxResults {
		t.Fatalf("snapshot has %d results, want %d", len(s.Results), maxResults)
	}
	var first struct{ Seq uint64 }
	if err := json.Unmarshal(s.Results[0], &first); err != nil || first.Seq != 59 {
		t.Fatalf("newest result seq %d (%v), want 59", first.Seq, err)
	}

	next.err = errors.New("spool full")
	if err := p.Publish(ctx, result(60, "OK")); !errors.Is(err, next.err) {
		t.Fatalf("Publish returned %v, want the next sink's error", err)
	}
	other := &countSink{}
	p.SetNext(other)
	if err := p.Publish(ctx, result(61, "OK")); err != nil || other.n.Load() != 1 {
		t.Fatalf("after SetNext: err %v, new sink got %d", err, other.n.Load())
	}
	p.SetNext(nil)
	if err := p.Publish(ctx, result(62, "OK")); err != nil {
		t.Fatalf("without a next sink: %v", err)
	}
}

func TestNewRejectsNegativeSizes(t *testing.T) {
	for _, cfg := range []Config{{MaxNGImages: -1}, {ClientBuffer: -2}, {StatusInterval: -time.Second}} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
}

func TestStreamSnapshotFirstThenResultsInOrder(t *testing.T) {
	r := newRig(t, Config{Title: "plant1/line3/box7", StatusInterval: time.Hour})
	ctx := context.Background()
	for i := range 3 {
		if err := r.page.Publish(ctx, result(uint64(i), publish.VerdictOK)); err != nil {
			t.Fatal(err)
		}
	}
	var streams []*stream
	for range 3 {
		streams = append(streams, r.open(t))
	}
	for _, s := range streams {
		if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		if s.resp.Header.Get("Cache-Control") != "no-cache" || s.resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("headers %v", s.resp.Header)
		}
		snap := decodeSnapshot(t, s.expect(t, "snapshot").data)
		if snap.Title != "plant1/line3/box7" || len(snap.Results) != 3 || snap.Counters["surface"]["OK"] != 3 {
			t.Fatalf("snapshot %+v", snap)
		}
	}
	if got := testutil.ToFloat64(r.page.clients); got != 3 {
		t.Fatalf("edged_linepage_clients %v, want 3", got)
	}
	const n = 200
	for i := 3; i < n; i++ {
		v := publish.VerdictOK
		if i%7 == 0 {
			v = publish.VerdictNG
		}
		if err := r.page.Publish(ctx, result(uint64(i), v)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range streams {
		for i := 3; i < n; i++ {
			ev := s.expect(t, "result")
			var got map[string]any
			if err := json.Unmarshal([]byte(ev.data), &got); err != nil {
				t.Fatalf("result event %s: %v", ev.data, err)
			}
			keys := make([]string, 0, len(got))
			for k := range got {
				keys = append(keys, k)
			}
			want := result(uint64(i), "")
			if got["seq"] != float64(i) || got["id"] != want.ID || got["inspection"] != "surface" ||
				got["source"] != "cam1" || got["score"] != 0.75 || got["latency_ms"] != 3.5 ||
				got["part_id"] != want.PartID || got["image"] != "" ||
				got["captured_at"] != want.CapturedAt.Format(time.RFC3339Nano) ||
				fmt.Sprint(got["model"]) != "map[name:surface version:1.2.0]" || len(keys) != 12 {
				t.Fatalf("result event %d: %s", i, ev.data)
			}
			if (i%7 == 0) != (got["verdict"] == "NG") {
				t.Fatalf("result event %d verdict %v", i, got["verdict"])
			}
		}
	}
	if got := testutil.ToFloat64(r.page.dropped); got != 0 {
		t.Fatalf("%v clients dropped, want none", got)
	}
}

type statusDoc struct {
	MQTT     map[string]any    `json:"mqtt"`
	Breakers map[string]string `json:"breakers"`
	N        int64             `json:"n"`
}

func TestStatusEvents(t *testing.T) {
	var calls atomic.Int64
	r := newRig(t, Config{
		StatusInterval: 5 * time.Millisecond,
		Status: func() any {
			return statusDoc{MQTT: map[string]any{"connected": false}, Breakers: map[string]string{"mqtt": "open"}, N: calls.Add(1)}
		},
	})
	s := r.open(t)
	s.expect(t, "snapshot")
	last := int64(0)
	for range 5 {
		ev := s.expect(t, "status")
		var d statusDoc
		if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
			t.Fatalf("status %s: %v", ev.data, err)
		}
		if d.N <= last || d.Breakers["mqtt"] != "open" || d.MQTT["connected"] != false {
			t.Fatalf("status %s after n=%d", ev.data, last)
		}
		last = d.N
	}
}

// stalledConn is a client that asks for the event stream and never reads a byte, with
// a receive buffer small enough that the server's writes soon block.
func stalledConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: smallReceiveBuffer}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET /v1/events HTTP/1.1\r\nHost: edged\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSlowClientsNeverSlowPublish(t *testing.T) {
	const (
		stalled = 50
		results = 20000
		buffer  = 1024
		batch   = 500
	)
	r := newRig(t, Config{ClientBuffer: buffer, StatusInterval: time.Hour})
	var conns []net.Conn
	for range stalled {
		conns = append(conns, stalledConn(t, r.srv.Listener.Addr().String()))
	}
	// The server has taken every stalled request once all 50 (and the reader) count as
	// clients.
	reader := r.open(t)
	reader.expect(t, "snapshot")
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(r.page.clients) < stalled+1; {
		if time.Now().After(deadline) {
			t.Fatalf("only %v clients connected", testutil.ToFloat64(r.page.clients))
		}
		time.Sleep(time.Millisecond)
	}

	// The reader reads concurrently and must get every result in order. The line is
	// paced in batches the reader's buffer holds, as a real line has a rate; the stalled
	// clients get the same batches and fall behind for good.
	var got atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		for got.Load() < results {
			ev, err := reader.next()
			if err != nil {
				readErr <- fmt.Errorf("stream ended after %d results: %w", got.Load(), err)
				return
			}
			if ev.name != "result" {
				continue
			}
			var res struct{ Seq uint64 }
			if err := json.Unmarshal([]byte(ev.data), &res); err != nil || res.Seq != uint64(got.Load()) {
				readErr <- fmt.Errorf("event %d: seq %d (%v): a gap or reorder", got.Load(), res.Seq, err)
				return
			}
			got.Add(1)
		}
		readErr <- nil
	}()

	ctx := context.Background()
	label := strings.Repeat("l", 200)
	for i := range results {
		res := result(uint64(i), publish.VerdictOK)
		res.Label = label
		if err := r.page.Publish(ctx, res); err != nil {
			t.Fatal(err)
		}
		if (i+1)%batch != 0 {
			continue
		}
		for deadline := time.Now().Add(20 * time.Second); got.Load() < int64(i+1); {
			if time.Now().After(deadline) {
				t.Fatalf("reader got %d of %d results", got.Load(), i+1)
			}
			select {
			case err := <-readErr:
				if err != nil {
					t.Fatalf("reader: %v", err)
				}
				readErr <- nil // it has every result; the check below takes it again
			case <-time.After(time.Millisecond):
			}
		}
	}
	if err := <-readErr; err != nil {
		t.Fatalf("reader: %v", err)
	}
	if got := r.next.n.Load(); got != results {
		t.Fatalf("next sink got %d results, want %d", got, results)
	}
	if got := testutil.ToFloat64(r.page.dropped); got != stalled {
		t.Fatalf("%v clients dropped, want the %d stalled ones", got, stalled)
	}
	if got := testutil.ToFloat64(r.page.clients); got != 1 {
		t.Fatalf("edged_linepage_clients %v, want only the reader", got)
	}
	// A dropped client's stream ends: cleanly (the last chunk written) where the
	// connection was not stuck, or by the connection closing where it was.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("stalled client %d: %v", i, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("stalled client %d: stream did not end: %v", i, err)
		}
	}
	reader.resp.Body.Close()

	// A dropped client comes back and starts again from a snapshot.
	again := r.open(t)
	snap := decodeSnapshot(t, again.expect(t, "snapshot").data)
	if snap.Counters["surface"]["OK"] != results || len(snap.Results) != maxResults {
		t.Fatalf("snapshot after reconnect: counters %v, %d results", snap.Counters, len(snap.Results))
	}
	if err := r.page.Publish(ctx, result(results, publish.VerdictNG)); err != nil {
		t.Fatal(err)
	}
	if ev := again.expect(t, "result"); !strings.Contains(ev.data, `"seq":20000`) {
		t.Fatalf("after reconnect: %s", ev.data)
	}
}

func TestRunEndClosesEveryStream(t *testing.T) {
	r := newRig(t, Config{StatusInterval: time.Hour})
	var streams []*stream
	for range 4 {
		s := r.open(t)
		s.expect(t, "snapshot")
		streams = append(streams, s)
	}
	stalledConn(t, r.srv.Listener.Addr().String())
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(r.page.clients) < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("only %v clients connected", testutil.ToFloat64(r.page.clients))
		}
		time.Sleep(time.Millisecond)
	}
	r.stop()
	for i, s := range streams {
		for {
			if _, err := s.next(); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("stream %d ended with %v, want EOF", i, err)
				}
				break
			}
		}
	}
	if got := testutil.ToFloat64(r.page.clients); got != 0 {
		t.Fatalf("edged_linepage_clients %v after Run ended", got)
	}
	resp, err := r.client.Get(r.srv.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("events after Run ended: %s", resp.Status)
	}
	if err := r.page.Run(context.Background()); err == nil {
		t.Fatal("a second Run was accepted")
	}
}

func TestMetricsRegistered(t *testing.T) {
	r := newRig(t, Config{})
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if fmt.Sprint(names) != "[edged_linepage_clients edged_linepage_clients_dropped_total]" {
		t.Fatalf("metrics %v", names)
	}
	if _, err := New(Config{Registerer: r.reg}, nil); err == nil {
		t.Fatal("registering twice was accepted")
	}
}

// TestStuckWriteIsWoken: a browser that stops reading with its socket full leaves the
// handler blocked in a network write; dropping the client must still end that handler
// (server Close in the cleanup would hang otherwise, and goleak would see it).
func TestStuckWriteIsWoken(t *testing.T) {
	r := newRig(t, Config{ClientBuffer: 8, StatusInterval: time.Hour})
	c := stalledConn(t, r.srv.Listener.Addr().String())
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(r.page.clients) < 1; {
		if time.Now().After(deadline) {
			t.Fatal("the stalled client never connected")
		}
		time.Sleep(time.Millisecond)
	}
	big := strings.Repeat("x", 64<<10)
	ctx := context.Background()
	published := 0
	// Each event is 64 KiB: the socket buffers fill within a few hundred, the handler
	// blocks writing, the client's buffer of 8 fills behind it and it is dropped.
	for published < 5000 && testutil.ToFloat64(r.page.dropped) == 0 {
		res := result(uint64(published), publish.VerdictOK)
		res.Label = big
		if err := r.page.Publish(ctx, res); err != nil {
			t.Fatal(err)
		}
		published++
	}
	if testutil.ToFloat64(r.page.dropped) != 1 {
		t.Fatalf("stalled client not dropped after %d results of 64 KiB", published)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stream did not end after %d bytes: %v", n, err)
	}
	t.Logf("dropped after %d results; the stalled client had %d bytes waiting", published, n)
	if got := testutil.ToFloat64(r.page.clients); got != 0 {
		t.Fatalf("edged_linepage_clients %v, want 0", got)
	}
}

func TestIdleStreamIsPinged(t *testing.T) {
	r := newRig(t, Config{StatusInterval: time.Hour})
	r.page.ping = 5 * time.Millisecond // set before any stream opens
	s := r.open(t)
	// Browsers reconnect within a second of a dropped stream or a restart.
	if first, err := s.br.ReadString('\n'); err != nil || first != "retry: 1000\n" {
		t.Fatalf("stream starts %q (%v), want the retry field", first, err)
	}
	for lines := 0; ; lines++ {
		line, err := s.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": ping\n" {
			return
		}
		if lines > 100 {
			t.Fatal("no ping comment on an idle stream")
		}
	}
}
