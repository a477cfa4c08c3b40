package fetch_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/models/fetch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const fileSize = 1 << 20

func content(size int) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, uint64(size)))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// server is a model server on 127.0.0.1 whose handler sees the request's ordinal.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []string // each request's Range header ("" when none)
	done   chan struct{}
	stalls chan int64 // a stalling handler sends its offset once stalled
}

func newServer(t *testing.T, h func(s *server, w http.ResponseWriter, r *http.Request, n int)) *server {
	t.Helper()
	s := &server{done: make(chan struct{}), stalls: make(chan int64, 16)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Header.Get("Range"))
		n := len(s.reqs)
		s.mu.Unlock()
		h(s, w, r, n)
	}))
	// Cleanups run last-registered first: release stalled handlers, then close the
	// server (which waits for them), then drop the client's idle connections.
	t.Cleanup(fetch.CloseIdleConnections)
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.done) })
	return s
}

func (s *server) ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

// rangeStart reads "bytes=N-"; 0 without a Range header.
func rangeStart(t *testing.T, r *http.Request) int64 {
	h := r.Header.Get("Range")
	if h == "" {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(h, "bytes="), "-"), 10, 64)
	if err != nil {
		t.Errorf("range header %q", h)
	}
	return n
}

// cut answers for the bytes from off on (206 when off > 0), sends n of them and drops
// the connection.
func cut(t *testing.T, w http.ResponseWriter, data []byte, off int64, n int) {
	conn, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	defer conn.Close()
	writeHead(bw, data, off)
	bw.Write(data[off : off+int64(n)])
	bw.Flush()
}

func writeHead(bw *bufio.ReadWriter, data []byte, off int64) {
	if off == 0 {
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(data))
	} else {
		fmt.Fprintf(bw, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n",
			off, len(data)-1, len(data), int64(len(data))-off)
	}
}

// stall sends n bytes from off, then nothing until the client gives up or the test ends.
func stall(s *server, w http.ResponseWriter, r *http.Request, data []byte, off int64, n int) {
	if off == 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
	} else {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, len(data)-1, len(data)))
		w.Header().Set("Content-Length", strconv.FormatInt(int64(len(data))-off, 10))
		w.WriteHeader(http.StatusPartialContent)
	}
	w.Write(data[off : off+int64(n)])
	http.NewResponseController(w).Flush()
	s.stalls <- off + int64(n)
	select {
	case <-r.Context().Done():
	case <-s.done:
	}
}

func serveRange(w http.ResponseWriter, r *http.Request, data []byte) {
	http.ServeContent(w, r, "model.onnx", time.Time{}, bytes.NewReader(data))
}

func quick() fetch.Config {
	return fetch.Config{Backoff: time.Millisecond, StallTimeout: 10 * time.Second, Timeout: time.Minute,
		Log: slog.New(slog.DiscardHandler)}
}

// readAll opens the download and checks the bytes read hash to data's sha256.
func readAll(t *testing.T, cfg fetch.Config, url string, data []byte) {
	t.Helper()
	r, err := fetch.Open(context.Background(), cfg, url, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), sha256Of(data)) {
		t.Fatalf("read %d bytes with sha256 %x, want %d bytes with %x", n, h.Sum(nil), len(data), sha256Of(data))
	}
}

func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestWhole(t *testing.T) {
	data := content(fileSize)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) { serveRange(w, r, data) })
	readAll(t, quick(), s.URL+"/m.onnx", data)
	cfg := quick()
	cfg.Client = s.Client() // a caller's own client works the same
	readAll(t, cfg, s.URL+"/m.onnx", data)
	empty := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) { serveRange(w, r, nil) })
	readAll(t, quick(), empty.URL, nil)
}

// A connection cut in the middle resumes with a Range request from the byte it reached.
func TestResumeAfterCut(t *testing.T) {
	data := content(fileSize)
	const at = 300_001
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			cut(t, w, data, 0, at)
			return
		}
		serveRange(w, r, data)
	})
	readAll(t, quick(), s.URL, data)
	if got := s.ranges(); len(got) != 2 || got[0] != "" || got[1] != fmt.Sprintf("bytes=%d-", at) {
		t.Errorf("requests' ranges %q, want none then bytes=%d-", got, at)
	}
}

// Every connection is cut after a little more progress: more cuts than Retries, but each
// failure follows progress, so the count starts again and the download completes.
func TestProgressResetsRetries(t *testing.T) {
	data := content(fileSize)
	const chunk = 100_000
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		off := rangeStart(t, r)
		cut(t, w, data, off, min(chunk, len(data)-int(off)))
	})
	cfg := quick()
	cfg.Retries = 2
	readAll(t, cfg, s.URL, data)
	if got := len(s.ranges()); got != (fileSize+chunk-1)/chunk {
		t.Errorf("%d requests, want %d", got, (fileSize+chunk-1)/chunk)
	}
}

// A server that stops sending (headers sent, connection open) is dropped after
// StallTimeout and the download resumes.
func TestResumeAfterStall(t *testing.T) {
	data := content(fileSize)
	const at = 500_000
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			stall(s, w, r, data, 0, at)
			return
		}
		serveRange(w, r, data)
	})
	cfg := quick()
	cfg.StallTimeout = 150 * time.Millisecond
	readAll(t, cfg, s.URL, data)
	if got := s.ranges(); len(got) != 2 || got[1] != fmt.Sprintf("bytes=%d-", at) {
		t.Errorf("requests' ranges %q, want none then bytes=%d-", got, at)
	}
}

// A server that answers nothing at all (not even headers) is a stall too.
func TestStallBeforeHeaders(t *testing.T) {
	data := content(1000)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			select {
			case <-r.Context().Done():
			case <-s.done:
			}
			return
		}
		serveRange(w, r, data)
	})
	cfg := quick()
	cfg.StallTimeout = 100 * time.Millisecond
	readAll(t, cfg, s.URL, data)
}

// A server that ignores Range sends the whole file again; the bytes already handed out
// are skipped, not repeated.
func TestServerIgnoresRange(t *testing.T) {
	data := content(fileSize)
	const at = 123_457
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			cut(t, w, data, 0, at)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	})
	readAll(t, quick(), s.URL, data)
	if got := s.ranges(); len(got) != 2 || got[1] != fmt.Sprintf("bytes=%d-", at) {
		t.Errorf("requests' ranges %q", got)
	}
}

// The server ignores Range and cuts the restarted download again before reaching the
// bytes already handed out: still no byte twice.
func TestServerIgnoresRangeCutWhileSkipping(t *testing.T) {
	data := content(fileSize)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 1:
			cut(t, w, data, 0, 600_000)
		case 2:
			cut(t, w, data, 0, 1000)
		default:
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data)
		}
	})
	readAll(t, quick(), s.URL, data)
}

func TestMoreThanSize(t *testing.T) {
	data := content(10_000)
	for _, tc := range []struct {
		name string
		h    func(w http.ResponseWriter, r *http.Request)
	}{
		{"content-length", func(w http.ResponseWriter, r *http.Request) { serveRange(w, r, append(data, 'x')) }},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			w.Write(data[:5000])
			http.NewResponseController(w).Flush() // no Content-Length: chunked
			w.Write(data[5000:])
			w.Write([]byte("more"))
		}},
		{"content-range total", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") == "" {
				cut(t, w, data, 0, 100)
				return
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 100-%d/%d", len(data), len(data)+1))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(append(data[100:], 'x'))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) { tc.h(w, r) })
			err := readErr(t, s.URL, len(data))
			if !errors.Is(err, fetch.ErrTooLarge) || !strings.Contains(err.Error(), s.URL) {
				t.Errorf("error %v: want ErrTooLarge naming %s", err, s.URL)
			}
		})
	}
}

// readErr reads the whole download and returns the error that ended it, from Open or Read.
func readErr(t *testing.T, url string, size int) error {
	t.Helper()
	r, err := fetch.Open(context.Background(), quick(), url, int64(size))
	if err != nil {
		return err
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if err == nil {
		t.Fatalf("read %d bytes of a %d-byte download without error", n, size)
	}
	if n > int64(size) {
		t.Errorf("handed out %d bytes, more than the size %d", n, size)
	}
	return err
}

// A server that sends fewer bytes, then 404s the resume: a permanent error naming the
// status, the URL and the byte reached, after exactly one resume.
func TestFewerThen404(t *testing.T) {
	data := content(10_000)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			cut(t, w, data, 0, 4000)
			return
		}
		http.NotFound(w, r)
	})
	err := readErr(t, s.URL+"/m.onnx", len(data))
	if !errors.Is(err, fetch.ErrStatus) || !strings.Contains(err.Error(), "404") ||
		!strings.Contains(err.Error(), s.URL+"/m.onnx") || !strings.Contains(err.Error(), "byte 4000 of 10000") {
		t.Errorf("error %v: want the 404, the url and byte 4000", err)
	}
	if got := len(s.ranges()); got != 2 {
		t.Errorf("%d requests, want 2 (a 404 is not retried)", got)
	}
}

// Fewer bytes every time: retried Retries times without progress, then an error.
func TestFewerAfterRetries(t *testing.T) {
	data := content(10_000)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		off := rangeStart(t, r)
		cut(t, w, data, off, max(0, 4000-int(off)))
	})
	cfg := quick()
	cfg.Retries = 3
	r, err := fetch.Open(context.Background(), cfg, s.URL, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if n != 4000 || err == nil || !strings.Contains(err.Error(), "giving up after 3 retries") || !strings.Contains(err.Error(), "byte 4000") {
		t.Errorf("read %d, error %v: want 4000 bytes then giving up at byte 4000", n, err)
	}
	if got := len(s.ranges()); got != 4 {
		t.Errorf("%d requests, want 4 (the first, then 3 retries from byte 4000)", got)
	}
}

func TestShortContentLength(t *testing.T) {
	data := content(10_000)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) { serveRange(w, r, data[:9000]) })
	err := readErr(t, s.URL, len(data))
	if !errors.Is(err, fetch.ErrTruncated) || !strings.Contains(err.Error(), "9000") {
		t.Errorf("error %v: want ErrTruncated naming 9000", err)
	}
	if got := len(s.ranges()); got != 1 {
		t.Errorf("%d requests, want 1", got)
	}
}

// Statuses other than 5xx and 429 are final at once; the error names the status and the
// URL without its query (which may hold a token).
func TestStatusNotRetried(t *testing.T) {
	for _, code := range []int{http.StatusNotFound, http.StatusForbidden, http.StatusUnauthorized} {
		s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
			http.Error(w, "no", code)
		})
		_, err := fetch.Open(context.Background(), quick(), s.URL+"/m.onnx?token=s3cret#frag", 100)
		if err == nil || !strings.Contains(err.Error(), strconv.Itoa(code)) || !strings.Contains(err.Error(), s.URL+"/m.onnx:") {
			t.Errorf("status %d: error %v, want one naming the status and the url", code, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q shows the query", err)
		}
		if got := len(s.ranges()); got != 1 {
			t.Errorf("status %d: %d requests, want 1", code, got)
		}
	}
}

func TestRetriedStatuses(t *testing.T) {
	data := content(5000)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 1:
			w.Header().Set("Retry-After", "0")
			http.Error(w, "busy", http.StatusTooManyRequests)
		case 2:
			http.Error(w, "down", http.StatusServiceUnavailable)
		case 3:
			cut(t, w, data, 0, 2000)
		case 4:
			http.Error(w, "oops", http.StatusBadGateway)
		default:
			serveRange(w, r, data)
		}
	})
	readAll(t, quick(), s.URL, data)
	if got := s.ranges(); len(got) != 5 || got[4] != "bytes=2000-" {
		t.Errorf("requests' ranges %q", got)
	}
	always := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		http.Error(w, "down", http.StatusInternalServerError)
	})
	cfg := quick()
	cfg.Retries = 2
	_, err := fetch.Open(context.Background(), cfg, always.URL, 10)
	if !errors.Is(err, fetch.ErrStatus) || !strings.Contains(err.Error(), "giving up after 2 retries") || !strings.Contains(err.Error(), "500") {
		t.Errorf("error %v: want giving up after 2 retries on 500", err)
	}
	if got := len(always.ranges()); got != 3 {
		t.Errorf("%d requests, want 3", got)
	}
}

func TestWrongResumeOffset(t *testing.T) {
	data := content(5000)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			cut(t, w, data, 0, 2000)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data)
	})
	err := readErr(t, s.URL, len(data))
	if err == nil || !strings.Contains(err.Error(), "resumes at byte 0, asked for 2000") {
		t.Errorf("error %v", err)
	}
}

func TestRefusedConnection(t *testing.T) {
	s := httptest.NewServer(http.NotFoundHandler())
	url := s.URL
	s.Close()
	cfg := quick()
	cfg.Retries = 1
	_, err := fetch.Open(context.Background(), cfg, url+"/m.onnx?sig=abc", 10)
	if err == nil || !strings.Contains(err.Error(), url+"/m.onnx") || strings.Contains(err.Error(), "sig=abc") {
		t.Errorf("error %v: want one naming the url without its query", err)
	}
}

// Cancelling ctx while the server stalls ends the blocked Read at once (the stall
// timeout is far away), with the context's error.
func TestCancelDuringStall(t *testing.T) {
	data := content(fileSize)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) { stall(s, w, r, data, 0, 1000) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := quick()
	cfg.StallTimeout = time.Hour
	r, err := fetch.Open(ctx, cfg, s.URL, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		errc <- err
	}()
	<-s.stalls
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "byte 1000") {
			t.Errorf("error %v: want context.Canceled at byte 1000", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("read still blocked 30s after cancel")
	}
}

// Close from another goroutine aborts a blocked Read.
func TestCloseDuringStall(t *testing.T) {
	data := content(fileSize)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) { stall(s, w, r, data, 0, 10) })
	cfg := quick()
	cfg.StallTimeout = time.Hour
	r, err := fetch.Open(context.Background(), cfg, s.URL, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		errc <- err
	}()
	<-s.stalls
	r.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("read ended without error after close")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("read still blocked 30s after close")
	}
	if _, err := r.Read(make([]byte, 1)); err == nil {
		t.Error("read after close: no error")
	}
}

func TestDownloadTimeout(t *testing.T) {
	data := content(fileSize)
	s := newServer(t, func(s *server, w http.ResponseWriter, r *http.Request, n int) { stall(s, w, r, data, 0, 10) })
	cfg := quick()
	cfg.StallTimeout = time.Hour
	cfg.Timeout = 200 * time.Millisecond
	r, err := fetch.Open(context.Background(), cfg, s.URL, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "download timeout 200ms") {
		t.Errorf("error %v: want the download timeout", err)
	}
}

func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		url  string
		size int64
		want string
	}{
		{"ftp://host/m.onnx", 1, `scheme "ftp"`},
		{"http://host/m.onnx?k=secret", -1, "size -1"},
		{"http://[::1/m.onnx?k=secret", 1, "bad url"},
	} {
		_, err := fetch.Open(context.Background(), quick(), tc.url, tc.size)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %v, want one containing %q without the query", tc.url, err, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@models.plant/a/m.onnx?X-Amz-Signature=abc#x": "https://models.plant/a/m.onnx",
		"http://host/m.onnx":      "http://host/m.onnx",
		"http://u:p@[::1/m?tok=1": "http://[::1/m",
	} {
		if got := fetch.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkDownload(b *testing.B) {
	data := content(8 << 20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveRange(w, r, data) }))
	defer srv.Close()
	defer fetch.CloseIdleConnections()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := fetch.Open(context.Background(), fetch.Config{}, srv.URL, int64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}

// BenchmarkDownloadCuts measures the cost of resuming: every connection is cut after
// 1 MiB.
func BenchmarkDownloadCuts(b *testing.B) {
	data := content(8 << 20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		off := int64(0)
		if h := r.Header.Get("Range"); h != "" {
			off, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(h, "bytes="), "-"), 10, 64)
		}
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		writeHead(bw, data, off)
		bw.Write(data[off:min(off+1<<20, int64(len(data)))])
		bw.Flush()
	}))
	defer srv.Close()
	defer fetch.CloseIdleConnections()
	cfg := fetch.Config{Backoff: time.Microsecond, Log: slog.New(slog.DiscardHandler)}
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := fetch.Open(context.Background(), cfg, srv.URL, int64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
