package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/api"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait on the server, so a hang fails the test instead of the run.
const wait = 10 * time.Second

type running struct {
	srv    *api.Server
	base   string
	client *http.Client
	cancel context.CancelFunc
	done   chan error // Run's result
}

// start runs the server on a free port and waits until it listens. setup, if not nil,
// adds routes before Run. The cleanup stops it and checks Run returned nil.
func start(t *testing.T, cfg api.Config, setup func(s *api.Server)) *running {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	s := api.New(cfg)
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(wait):
		cancel()
		t.Fatal("server not ready")
	}
	tr := &http.Transport{}
	r := &running{srv: s, base: "http://" + s.Addr(), client: &http.Client{Transport: tr, Timeout: wait}, cancel: cancel, done: done}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(wait):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

type reply struct {
	code   int
	header http.Header
	body   string
}

func (r *running) do(t *testing.T, method, path string, header map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, r.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func TestHealthz(t *testing.T) {
	r := start(t, api.Config{}, nil)
	got := r.do(t, "GET", "/healthz", nil)
	if got.code != http.StatusOK || got.body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\\n\"", got.code, got.body)
	}
	if ct := got.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	if got := r.do(t, "POST", "/healthz", nil); got.code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", got.code)
	}
	if got := r.do(t, "GET", "/nothing-here", nil); got.code != http.StatusNotFound {
		t.Errorf("GET /nothing-here = %d, want 404", got.code)
	}
}

func TestReadyz(t *testing.T) {
	ok := func() error { return nil }
	for _, tc := range []struct {
		name   string
		checks []api.Check
		code   int
		want   []string // lines the body must hold
		absent []string // texts it must not
	}{
		{"no checks", nil, 200, []string{"ready"}, []string{"not ready"}},
		{"all pass", []api.Check{{"model", ok}, {"broker", ok}}, 200, []string{"ready"}, []string{"not ready", "model", "broker"}},
		{
			"one fails",
			[]api.Check{{"model", ok}, {"broker", func() error { return errors.New("dial tcp 127.0.0.1:1883: connection refused") }}},
			503,
			[]string{"not ready", "broker: dial tcp 127.0.0.1:1883: connection refused"},
			[]string{"model"},
		},
		{
			"each failing check listed",
			[]api.Check{
				{"model", func() error { return errors.New("no active version") }},
				{"source line1", ok},
				{"broker", func() error { return errors.New("not connected") }},
			},
			503,
			[]string{"not ready", "model: no active version", "broker: not connected"},
			[]string{"line1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, api.Config{Ready: tc.checks}, nil)
			got := r.do(t, "GET", "/readyz", nil)
			if got.code != tc.code {
				t.Errorf("GET /readyz = %d, want %d; body %q", got.code, tc.code, got.body)
			}
			lines := strings.Split(strings.TrimSpace(got.body), "\n")
			for _, w := range tc.want {
				if !contains(lines, w) {
					t.Errorf("body %q lacks the line %q", got.body, w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(got.body, a) {
					t.Errorf("body %q holds %q", got.body, a)
				}
			}
		})
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

// TestReadyzFollowsChecks checks /readyz asks its checks on every request rather than
// once, so a box that becomes ready (or stops being ready) is seen as such.
func TestReadyzFollowsChecks(t *testing.T) {
	var up atomic.Bool
	r := start(t, api.Config{Ready: []api.Check{{"model", func() error {
		if !up.Load() {
			return errors.New("loading")
		}
		return nil
	}}}}, nil)
	for _, step := range []struct {
		up   bool
		code int
	}{{false, 503}, {true, 200}, {false, 503}} {
		up.Store(step.up)
		if got := r.do(t, "GET", "/readyz", nil); got.code != step.code {
			t.Errorf("check up=%v: /readyz %d, want %d", step.up, got.code, step.code)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_test_frames_total", Help: "Frames seen by the test.",
	}, []string{"source"})
	reg.MustRegister(frames)
	frames.WithLabelValues("line1").Add(3)

	r := start(t, api.Config{Gatherer: reg}, nil)
	got := r.do(t, "GET", "/metrics", nil)
	if got.code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", got.code)
	}
	if want := `edged_test_frames_total{source="line1"} 3`; !strings.Contains(got.body, want) {
		t.Errorf("metrics lack %q:\n%s", want, got.body)
	}
	// Only the registry passed in is served, not the global one.
	if strings.Contains(got.body, "go_goroutines") {
		t.Errorf("metrics hold the default registry's go_goroutines:\n%s", got.body)
	}
	// Served live: a later change shows on the next scrape.
	frames.WithLabelValues("line1").Inc()
	if got := r.do(t, "GET", "/metrics", nil); !strings.Contains(got.body, `edged_test_frames_total{source="line1"} 4`) {
		t.Errorf("second scrape does not show the increment:\n%s", got.body)
	}

	none := start(t, api.Config{}, nil)
	if got := none.do(t, "GET", "/metrics", nil); got.code != http.StatusNotFound {
		t.Errorf("GET /metrics without a Gatherer = %d, want 404", got.code)
	}
}

func TestStatus(t *testing.T) {
	type doc struct {
		Model   string `json:"model"`
		Version string `json:"version"`
		Frames  int64  `json:"frames"`
	}
	var frames atomic.Int64
	r := start(t, api.Config{Status: func() any {
		return doc{Model: "el-defect", Version: "1.0.0", Frames: frames.Add(1)}
	}}, nil)
	for want := int64(1); want <= 2; want++ {
		got := r.do(t, "GET", "/v1/status", nil)
		if got.code != http.StatusOK {
			t.Fatalf("GET /v1/status = %d", got.code)
		}
		if ct := got.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var d doc
		dec := json.NewDecoder(strings.NewReader(got.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("body %q: %v", got.body, err)
		}
		// Frames counts calls: the document is made afresh for each request.
		if (d != doc{"el-defect", "1.0.0", want}) {
			t.Errorf("status %+v, want frames %d", d, want)
		}
	}

	none := start(t, api.Config{}, nil)
	if got := none.do(t, "GET", "/v1/status", nil); got.code != http.StatusOK || strings.TrimSpace(got.body) != "{}" {
		t.Errorf("GET /v1/status without Status = %d %q, want 200 {}", got.code, got.body)
	}
}

func TestAdminEndpoints(t *testing.T) {
	const token = "s3cret-token"
	for _, tc := range []struct {
		name  string
		token string // the server's AdminToken
		auth  string // the request's Authorization header; "" sends none
		code  int
	}{
		{"off, no header", "", "", http.StatusForbidden},
		{"off, any bearer", "", "Bearer ", http.StatusForbidden},
		{"off, some token", "", "Bearer " + token, http.StatusForbidden},
		{"no header", token, "", http.StatusUnauthorized},
		{"wrong token", token, "Bearer wrong", http.StatusUnauthorized},
		{"token prefix", token, "Bearer " + token[:5], http.StatusUnauthorized},
		{"token with more", token, "Bearer " + token + "x", http.StatusUnauthorized},
		{"empty bearer", token, "Bearer ", http.StatusUnauthorized},
		{"token without scheme", token, token, http.StatusUnauthorized},
		{"basic scheme", token, "Basic " + token, http.StatusUnauthorized},
		{"right token", token, "Bearer " + token, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, api.Config{AdminToken: tc.token}, nil)
			header := map[string]string{}
			if tc.auth != "" {
				header["Authorization"] = tc.auth
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
				got := r.do(t, "GET", path, header)
				if got.code != tc.code {
					t.Errorf("GET %s = %d, want %d; body %q", path, got.code, tc.code, got.body)
				}
				challenge := got.header.Get("WWW-Authenticate")
				if (tc.code == http.StatusUnauthorized) != strings.HasPrefix(challenge, "Bearer ") {
					t.Errorf("GET %s = %d with WWW-Authenticate %q", path, got.code, challenge)
				}
				switch tc.code {
				case http.StatusForbidden:
					if !strings.Contains(got.body, "http.admin_token") {
						t.Errorf("403 body %q does not say which setting turns admin on", got.body)
					}
				case http.StatusOK:
					if path == "/debug/pprof/" && !strings.Contains(got.body, "goroutine") {
						t.Errorf("pprof index lacks the goroutine profile: %.200q", got.body)
					}
				}
				if tc.code != http.StatusOK && strings.Contains(got.body, token) {
					t.Errorf("refusal body %q echoes the token", got.body)
				}
			}
		})
	}
}

func TestHandleAndAdminWrapCustomRoutes(t *testing.T) {
	const token = "reload-token"
	var reloads, reads atomic.Int32
	r := start(t, api.Config{AdminToken: token}, func(s *api.Server) {
		s.Handle("POST /v1/reload", s.Admin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			reloads.Add(1)
			w.WriteHeader(http.StatusAccepted)
		})))
		s.Handle("GET /v1/open", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			reads.Add(1)
			fmt.Fprint(w, "open")
		}))
	})
	for _, tc := range []struct {
		method, path, auth string
		code               int
		reloads, reads     int32 // handler calls after this request
	}{
		{"POST", "/v1/reload", "", http.StatusUnauthorized, 0, 0},
		{"POST", "/v1/reload", "Bearer nope", http.StatusUnauthorized, 0, 0},
		{"POST", "/v1/reload", "Bearer " + token, http.StatusAccepted, 1, 0},
		{"GET", "/v1/reload", "Bearer " + token, http.StatusMethodNotAllowed, 1, 0},
		{"GET", "/v1/open", "", http.StatusOK, 1, 1},
	} {
		header := map[string]string{}
		if tc.auth != "" {
			header["Authorization"] = tc.auth
		}
		got := r.do(t, tc.method, tc.path, header)
		if got.code != tc.code {
			t.Errorf("%s %s (auth %q) = %d, want %d", tc.method, tc.path, tc.auth, got.code, tc.code)
		}
		if reloads.Load() != tc.reloads || reads.Load() != tc.reads {
			t.Errorf("after %s %s (auth %q): reload ran %d times, open %d; want %d and %d",
				tc.method, tc.path, tc.auth, reloads.Load(), reads.Load(), tc.reloads, tc.reads)
		}
	}
}

func TestListenErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	for _, addr := range []string{busy.Addr().String(), "127.0.0.1:notaport", "192.0.2.1:0"} {
		t.Run(addr, func(t *testing.T) {
			s := api.New(api.Config{Listen: addr})
			done := make(chan error, 1)
			go func() { done <- s.Run(context.Background()) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Run returned nil")
				}
				for _, w := range []string{addr, "http.listen"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
			case <-time.After(wait):
				t.Fatal("Run did not return on a listen failure")
			}
			select {
			case <-s.Ready():
				t.Error("Ready closed though the server never listened")
			default:
			}
		})
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	s := api.New(api.Config{Listen: "127.0.0.1:0"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(wait):
		t.Fatal("not ready")
	}
	addr := s.Addr()
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
		t.Fatalf("Addr() = %q after Ready; want the bound port", addr)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial while running: %v", err)
	}
	conn.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Run returned", addr)
	}
}

// TestShutdownDrains cancels Run while a request is in flight: new connections are
// refused at once, the request still gets its whole answer, and Run waits for it.
func TestShutdownDrains(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	r := start(t, api.Config{}, func(s *api.Server) {
		s.Handle("GET /slow", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			close(started)
			<-release
			fmt.Fprint(w, "done")
		}))
	})
	type result struct {
		reply reply
		err   error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := r.client.Get(r.base + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{reply{resp.StatusCode, resp.Header, string(b)}, err}
	}()
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatal("request did not reach the handler")
	}

	r.cancel()
	addr := r.srv.Addr()
	deadline := time.Now().Add(wait)
	for {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			break // the listener is closed: shutdown has begun
		}
		conn.Close()
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("listener still open after cancel")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-r.done:
		close(release)
		t.Fatalf("Run returned (%v) with a request in flight", err)
	default:
	}

	close(release)
	select {
	case got := <-res:
		if got.err != nil || got.reply.code != http.StatusOK || got.reply.body != "done" {
			t.Errorf("in-flight request: %d %q, %v; want 200 \"done\"", got.reply.code, got.reply.body, got.err)
		}
	case <-time.After(wait):
		t.Fatal("in-flight request got no answer")
	}
	// The cleanup checks Run then returns nil.
}
