package httpupload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "0123456789abcdef-secret"

func pngImage(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// fakeVerdicts stands in for the daemon's verdict hub: it answers the verdicts of two
// inspections on a reading the emitter took, or with partial set only the first and
// then nothing until the wait ends.
type fakeVerdicts struct {
	e       *drivertest.Emitter
	partial bool

	mu      sync.Mutex
	watches int
	stopped int
}

func (f *fakeVerdicts) Watch(source, traceID string) (func(context.Context) ([]drivers.Verdict, error), func()) {
	f.mu.Lock()
	f.watches++
	f.mu.Unlock()
	var once sync.Once
	wait := func(ctx context.Context) ([]drivers.Verdict, error) {
		var part string
		found := false
		for _, r := range f.e.Readings() {
			if r.TraceID == traceID && r.Source == source {
				part, found = r.PartID, true
			}
		}
		if !found {
			return nil, fmt.Errorf("reading %s was not emitted before the wait", traceID)
		}
		vs := []drivers.Verdict{{ID: traceID + "-1", Inspection: "crack", Verdict: "OK", Label: "ok", Score: 0.97, PartID: part}}
		if f.partial {
			<-ctx.Done()
			return vs, ctx.Err()
		}
		return append(vs, drivers.Verdict{ID: traceID + "-2", Inspection: "spot", Verdict: "NG", Label: "dark_spot", Score: 0.81, PartID: part}), nil
	}
	stop := func() {
		once.Do(func() {
			f.mu.Lock()
			f.stopped++
			f.mu.Unlock()
		})
	}
	return wait, stop
}

// fixture is a driver behind a real HTTP server on 127.0.0.1, with its Run going.
type fixture struct {
	d   *Driver
	e   *drivertest.Emitter
	fv  *fakeVerdicts
	srv *httptest.Server
	c   *http.Client
	url string
	// stop ends Run and checks it returned nil.
	stop func()
}

func newFixture(t *testing.T, spec drivers.Spec, mod func(*Config), run bool) *fixture {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(cfg)
	}
	e := drivertest.NewEmitter()
	t.Cleanup(e.Close)
	fv := &fakeVerdicts{e: e}
	if spec.Name == "" {
		spec.Name = "rig1"
	}
	if spec.Log == nil {
		spec.Log = slog.New(slog.DiscardHandler)
	}
	if spec.Verdicts == nil {
		spec.Verdicts = fv
	}
	d, err := New(spec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	f := &fixture{d: d, e: e, fv: fv, srv: srv, url: srv.URL + "/v1/sources/rig1/upload",
		c: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, stop: func() {}}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx, e) }()
		var once sync.Once
		f.stop = func() {
			once.Do(func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Run returned %v, want nil", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Run did not return within 5s of cancel")
				}
			})
		}
		t.Cleanup(f.stop)
		e.WaitHealth(t, true, 5*time.Second)
	}
	return f
}

type response struct {
	status  int
	header  http.Header
	TraceID string            `json:"trace_id"`
	Seq     uint64            `json:"seq"`
	PartID  string            `json:"part_id"`
	Verdict []drivers.Verdict `json:"verdicts"`
	Error   string            `json:"error"`
	Results []struct {
		Index    int               `json:"index"`
		Filename string            `json:"filename"`
		Status   int               `json:"status"`
		TraceID  string            `json:"trace_id"`
		PartID   string            `json:"part_id"`
		Verdicts []drivers.Verdict `json:"verdicts"`
		Error    string            `json:"error"`
	} `json:"results"`
	raw string
}

func (f *fixture) do(t *testing.T, method, query, ctype string, body io.Reader, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, f.url+query, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: body %q is not JSON: %v", method, query, b, err)
	}
	return out
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.MaxBytes = 0 }, "max_bytes: 0B"},
		{func(c *Config) { c.MaxBatch = 0 }, "max_batch: 0"},
		{func(c *Config) { c.MaxConcurrent = 1000 }, "max_concurrent: 1000"},
		{func(c *Config) { c.WaitTimeout = config.Duration(-time.Second) }, "wait_timeout: -1s"},
		{func(c *Config) { c.Token = "short" }, "token: 5 characters"},
	} {
		c := DefaultConfig()
		tc.mod(c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, tc.want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestSingle(t *testing.T) {
	f := newFixture(t, drivers.Spec{Budget: 2 * time.Second}, nil, true)
	img := pngImage(t, 4, 3)
	// Declared as JPEG, the bytes are PNG: the content decides.
	r := f.do(t, "POST", "?part_id=P-17", "image/jpeg", bytes.NewReader(img), nil)
	if r.status != http.StatusAccepted || r.TraceID == "" || r.Seq != 1 || r.Verdict != nil {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	rs := f.e.Readings()
	if len(rs) != 1 {
		t.Fatalf("%d readings", len(rs))
	}
	got := rs[0]
	if got.TraceID != r.TraceID || got.PartID != "P-17" || got.Source != "rig1" || got.Image.Format != drivers.FormatPNG || !bytes.Equal(got.Image.Data, img) {
		t.Errorf("reading trace %q part %q source %q format %q", got.TraceID, got.PartID, got.Source, got.Image.Format)
	}
	if got.Deadline.Sub(got.CapturedAt) != 2*time.Second {
		t.Errorf("deadline capture+%v", got.Deadline.Sub(got.CapturedAt))
	}
	if strings.Contains(r.raw, `"status"`) {
		t.Errorf("single answer carries a status field: %s", r.raw)
	}
}

func TestSingleWait(t *testing.T) {
	f := newFixture(t, drivers.Spec{Budget: 2 * time.Second}, nil, true)
	r := f.do(t, "POST", "?wait=1&part_id=A1", "image/png", bytes.NewReader(pngImage(t, 2, 2)), nil)
	if r.status != http.StatusOK || len(r.Verdict) != 2 || r.Verdict[1].Verdict != "NG" || r.Verdict[0].PartID != "A1" {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	f.fv.mu.Lock()
	defer f.fv.mu.Unlock()
	if f.fv.watches != 1 || f.fv.stopped != 1 {
		t.Errorf("%d watches, %d stopped; want each watch stopped", f.fv.watches, f.fv.stopped)
	}
}

func TestWaitDeadline(t *testing.T) {
	const budget = 300 * time.Millisecond
	f := newFixture(t, drivers.Spec{Budget: budget}, nil, true)
	f.fv.partial = true
	t0 := time.Now()
	r := f.do(t, "POST", "?wait=true", "image/png", bytes.NewReader(pngImage(t, 2, 2)), nil)
	took := time.Since(t0)
	if r.status != http.StatusGatewayTimeout || r.TraceID == "" || len(r.Verdict) != 1 || r.Error == "" {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	if took < budget-20*time.Millisecond || took > 5*time.Second {
		t.Errorf("answered after %v with a %v budget", took, budget)
	}
	// wait_timeout caps the wait below the budget.
	g := newFixture(t, drivers.Spec{Budget: time.Hour}, func(c *Config) { c.WaitTimeout = config.Duration(100 * time.Millisecond) }, true)
	g.fv.partial = true
	t0 = time.Now()
	if r := g.do(t, "POST", "?wait=1", "image/png", bytes.NewReader(pngImage(t, 2, 2)), nil); r.status != http.StatusGatewayTimeout {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("wait_timeout 100ms, answered after %v", took)
	}
}

func TestWaitWithoutVerdicts(t *testing.T) {
	f := newFixture(t, drivers.Spec{}, nil, false)
	f.d.spec.Verdicts = nil
	r := f.do(t, "POST", "?wait=1", "image/png", bytes.NewReader(pngImage(t, 2, 2)), nil)
	if r.status != http.StatusNotImplemented || !strings.Contains(r.Error, "wait") {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
}

type part struct {
	field, value string // a text field
	filename, ct string
	data         []byte
}

func multipartBody(t testing.TB, parts []part) (string, *bytes.Buffer) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, p := range parts {
		if p.field != "" {
			mw.WriteField(p.field, p.value)
			continue
		}
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="image"; filename=%q`, p.filename))
		if p.ct != "" {
			h.Set("Content-Type", p.ct)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.data)
	}
	mw.Close()
	return mw.FormDataContentType(), &b
}

func TestBatch(t *testing.T) {
	f := newFixture(t, drivers.Spec{Budget: 2 * time.Second}, nil, true)
	img := pngImage(t, 2, 2)
	ct, body := multipartBody(t, []part{
		{filename: "cam1/P-1.png", ct: "image/png", data: img},
		{field: "part_id", value: "custom-2"},
		{filename: "x.png", ct: "application/octet-stream", data: img},
		{filename: `C:\rig\P-3.bmp`, data: img},
	})
	r := f.do(t, "POST", "?wait=1", ct, body, nil)
	if r.status != http.StatusOK || len(r.Results) != 3 {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	for i, want := range []string{"P-1", "custom-2", "P-3"} {
		res := r.Results[i]
		if res.Index != i || res.PartID != want || res.Status != http.StatusOK || len(res.Verdicts) != 2 || res.Verdicts[0].PartID != want {
			t.Errorf("result %d: %+v, want part %s with 2 verdicts", i, res, want)
		}
	}
	if n := len(f.e.Readings()); n != 3 {
		t.Errorf("%d readings, want 3", n)
	}

	// Mixed outcomes: 207 with each part's status.
	ct, body = multipartBody(t, []part{
		{filename: "ok.png", data: img},
		{filename: "bad.png", data: []byte("not an image")},
		{filename: "note.txt", ct: "text/plain", data: []byte("hello")},
	})
	r = f.do(t, "POST", "", ct, body, nil)
	if r.status != http.StatusMultiStatus || len(r.Results) != 3 {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	for i, want := range []int{http.StatusAccepted, http.StatusBadRequest, http.StatusUnsupportedMediaType} {
		if r.Results[i].Status != want {
			t.Errorf("result %d: status %d, want %d (%s)", i, r.Results[i].Status, want, r.Results[i].Error)
		}
	}
}

func TestBatchLimits(t *testing.T) {
	f := newFixture(t, drivers.Spec{}, func(c *Config) { c.MaxBatch = 2; c.MaxBytes = 4096 }, true)
	img := pngImage(t, 2, 2)
	ct, body := multipartBody(t, []part{{filename: "a.png", data: img}, {filename: "b.png", data: img}, {filename: "c.png", data: img}})
	r := f.do(t, "POST", "", ct, body, nil)
	if r.status != http.StatusMultiStatus || len(r.Results) != 3 || r.Results[2].Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	ct, body = multipartBody(t, []part{{filename: "big.png", data: make([]byte, 5000)}})
	if r := f.do(t, "POST", "", ct, body, nil); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized part: got %d %s", r.status, r.raw)
	}
	if r := f.do(t, "POST", "", "multipart/form-data; boundary=xyz", strings.NewReader("--xyz--\r\n"), nil); r.status != http.StatusBadRequest {
		t.Fatalf("empty batch: got %d %s", r.status, r.raw)
	}
	if r := f.do(t, "POST", "", "multipart/form-data", strings.NewReader(""), nil); r.status != http.StatusBadRequest {
		t.Fatalf("no boundary: got %d %s", r.status, r.raw)
	}
}

// onlyReader hides a body's length, so the request goes out chunked.
type onlyReader struct{ io.Reader }

func TestErrors(t *testing.T) {
	f := newFixture(t, drivers.Spec{}, func(c *Config) { c.MaxBytes = 1024 }, true)
	img := pngImage(t, 2, 2)
	big := make([]byte, 2048)
	copy(big, img)
	for _, tc := range []struct {
		name, method, query, ct string
		body                    io.Reader
		want                    int
		text                    string
	}{
		{"garbage", "POST", "", "image/png", strings.NewReader("hello"), 400, "unknown_format"},
		{"empty", "POST", "", "image/png", strings.NewReader(""), 400, "empty"},
		{"truncated", "POST", "", "image/png", bytes.NewReader(img[:16]), 400, "undecodable"},
		{"too large", "POST", "", "image/png", bytes.NewReader(big), 413, "max_bytes"},
		{"too large chunked", "POST", "", "image/png", onlyReader{bytes.NewReader(big)}, 413, "max_bytes"},
		{"text", "POST", "", "text/plain", strings.NewReader("hello"), 415, "text/plain"},
		{"no type", "POST", "", "", bytes.NewReader(img), 415, "Content-Type"},
		{"bad type", "POST", "", "image/png; ===", bytes.NewReader(img), 415, "Content-Type"},
		{"get", "GET", "", "", nil, 405, "GET"},
		{"bad wait", "POST", "?wait=maybe", "image/png", bytes.NewReader(img), 400, "maybe"},
		{"chunked ok", "POST", "", "image/png", onlyReader{bytes.NewReader(img)}, 202, ""},
	} {
		r := f.do(t, tc.method, tc.query, tc.ct, tc.body, nil)
		if r.status != tc.want || !strings.Contains(r.Error, tc.text) {
			t.Errorf("%s: got %d %s, want %d naming %q", tc.name, r.status, r.raw, tc.want, tc.text)
		}
		if tc.want == 405 && r.header.Get("Allow") != "POST" {
			t.Errorf("%s: Allow %q", tc.name, r.header.Get("Allow"))
		}
	}

	// The pipeline refuses: 503 with Retry-After, and the client is told.
	f.e.SetPressure(drivers.Pressure{Accepted: false, Occupancy: 1})
	r := f.do(t, "POST", "", "image/png", bytes.NewReader(img), nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || !strings.Contains(r.Error, "not taken") {
		t.Errorf("refused: got %d %s (Retry-After %q)", r.status, r.raw, r.header.Get("Retry-After"))
	}
	r = f.do(t, "POST", "?wait=1", "image/png", bytes.NewReader(img), nil)
	if r.status != http.StatusServiceUnavailable {
		t.Errorf("refused with wait: got %d %s", r.status, r.raw)
	}
	f.fv.mu.Lock()
	if f.fv.watches != f.fv.stopped {
		t.Errorf("%d watches, %d stopped", f.fv.watches, f.fv.stopped)
	}
	f.fv.mu.Unlock()
}

func TestToken(t *testing.T) {
	f := newFixture(t, drivers.Spec{}, func(c *Config) { c.Token = token }, true)
	img := pngImage(t, 2, 2)
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", 401},
		{"Bearer wrong-token-0123456789", 401},
		{"Basic " + token, 401},
		{"Bearer " + token, 202},
		{"bearer " + token, 202},
	} {
		r := f.do(t, "POST", "", "image/png", bytes.NewReader(img), map[string]string{"Authorization": tc.auth})
		if r.status != tc.want {
			t.Errorf("Authorization %q: got %d %s, want %d", tc.auth, r.status, r.raw, tc.want)
		}
		if tc.want == 401 && r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: 401 without WWW-Authenticate", tc.auth)
		}
	}
}

func TestNotRunning(t *testing.T) {
	f := newFixture(t, drivers.Spec{}, nil, false)
	img := pngImage(t, 2, 2)
	r := f.do(t, "POST", "", "image/png", bytes.NewReader(img), nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("before Run: got %d %s", r.status, r.raw)
	}
	g := newFixture(t, drivers.Spec{}, nil, true)
	g.stop()
	if r := g.do(t, "POST", "", "image/png", bytes.NewReader(img), nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("after Run: got %d %s", r.status, r.raw)
	}
}

// A request waiting for verdicts ends when Run's context ends, and Run waits for it.
func TestRunEndsWaits(t *testing.T) {
	f := newFixture(t, drivers.Spec{Budget: time.Hour}, nil, true)
	f.fv.partial = true
	done := make(chan response, 1)
	go func() {
		done <- f.do(t, "POST", "?wait=1", "image/png", bytes.NewReader(pngImage(t, 2, 2)), nil)
	}()
	f.e.WaitReadings(t, 1, 5*time.Second)
	f.stop()
	select {
	case r := <-done:
		if r.status != http.StatusServiceUnavailable || len(r.Verdict) != 1 {
			t.Errorf("got %d %s", r.status, r.raw)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting request did not end with Run")
	}
}
