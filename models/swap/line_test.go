package swap_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/onnxbuild"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/fetch"
	"github.com/edgedrun/edged/models/swap"
	"github.com/edgedrun/edged/pipeline"
	"github.com/edgedrun/edged/publish"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The test line: one scalar source feeding one inspection that runs the model "lin",
// a linear classifier of four named values built by internal/onnxbuild.
const (
	modelName  = "lin"
	inspection = "press"
	token      = "admin-token"
	// waitFor bounds every wait for results or events; a healthy run needs far less.
	waitFor = 30 * time.Second
)

var features = []string{"f0", "f1", "f2", "f3"}

// weights gives each version its own model bytes, so versions differ in sha256 too.
func weights(seed int, n, classes int) (w, b []float32) {
	w = make([]float32, n*classes)
	for i := range w {
		w[i] = float32((i*7+seed*13)%11-5) / 10
	}
	b = make([]float32, classes)
	for i := range b {
		b[i] = float32(seed%3) / 10
	}
	return w, b
}

// kinds of test model.
const (
	good       = "good"
	nanOut     = "nan"
	failsAtRun = "fails"
	wideInput  = "wide"    // five values per frame where the line gives four
	badGolden  = "golden"  // golden outputs that the model does not give
	notONNX    = "notonnx" // bytes that are not a model at all
)

// build makes a model of the given kind and its manifest (unsigned), with two golden
// frames computed in Go.
func build(t testing.TB, version, kind string) (*models.Manifest, []byte) {
	t.Helper()
	n := len(features)
	if kind == wideInput {
		n = 5
	}
	seed := 0
	for _, c := range version {
		seed = seed*31 + int(c)
	}
	w, b := weights(seed, n, 2)
	var onnx []byte
	var err error
	switch kind {
	case good, badGolden, wideInput:
		onnx, err = onnxbuild.Linear("x", []int64{int64(n)}, "y", 2, w, b)
	case nanOut:
		onnx, err = onnxbuild.NaNOutput("x", []int64{int64(n)}, "y", 2, w, b)
	case failsAtRun:
		onnx, err = onnxbuild.FailsAtRun("x", []int64{int64(n)}, "y", 2)
	case notONNX:
		onnx = bytes.Repeat([]byte("not a model "), 40)
	default:
		t.Fatalf("unknown test model kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(onnx)
	mean, std := make([]float32, len(features)), make([]float32, len(features))
	for i := range std {
		std[i] = 1
	}
	m := &models.Manifest{
		Name: modelName, Version: version, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(onnx)),
		Inputs:      []models.Tensor{{Name: "x", DType: "float32", Shape: []int64{-1, int64(n)}}},
		Outputs:     []models.Tensor{{Name: "y", DType: "float32", Shape: []int64{-1, 2}}},
		Preprocess:  models.Preprocess{Kind: models.PreprocessScalars, Features: features, Mean: mean, Std: std},
		Postprocess: models.Postprocess{Kind: models.PostprocessSoftmax, Labels: []string{"ok", "ng"}, OKLabels: []string{"ok"}, Threshold: 0.5},
		Created:     time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC),
	}
	for _, in := range [][]float32{{1, 2, 3, 4, 5}, {-1, 0.5, 0, 2, -3}} {
		in = in[:n]
		out := onnxbuild.LinearOutput(in, w, b, 2)
		if kind == badGolden {
			out[0] += 1
		}
		m.Golden = append(m.Golden, models.Golden{Input: in, Output: out, Tolerance: 1e-4})
	}
	return m, onnx
}

// sink records the model version of every result and wakes waiters.
type sink struct {
	mu       sync.Mutex
	versions map[string]int
	total    int
	wake     chan struct{}
}

func newSink() *sink { return &sink{versions: map[string]int{}, wake: make(chan struct{}, 1)} }

func (s *sink) Publish(_ context.Context, r *publish.Result) error {
	s.mu.Lock()
	s.versions[r.Model.Version]++
	s.total++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

func (s *sink) count(version string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[version]
}

func (s *sink) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for v := range s.versions {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// feeder emits one reading of the four values every period until ctx ends: a light,
// steady line.
type feeder struct{ period time.Duration }

func (f *feeder) Run(ctx context.Context, e drivers.Emitter) error {
	e.Health(true, nil)
	tk := time.NewTicker(f.period)
	defer tk.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		e.Emit(ctx, &drivers.Reading{Scalars: map[string]float64{
			"f0": float64(i % 7), "f1": 1, "f2": -1, "f3": 0.5,
		}})
	}
}

// events records what the manager publishes.
type events struct {
	mu   sync.Mutex
	list []swap.Event
}

func (e *events) add(kind string, fields any) {
	ev, ok := fields.(swap.Event)
	if kind != swap.EventKind || !ok {
		panic(fmt.Sprintf("event of kind %q with fields %T", kind, fields))
	}
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

func (e *events) of(id string) []swap.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []swap.Event
	for _, ev := range e.list {
		if ev.ID == id {
			out = append(out, ev)
		}
	}
	return out
}

// reset forgets what was recorded, for tests that make thousands of changes and check
// none of their events.
func (e *events) reset() {
	e.mu.Lock()
	e.list = nil
	e.mu.Unlock()
}

func (e *events) all() []swap.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// line is a running pipeline with the swap manager, its repository, trusted key and
// admin HTTP server.
type line struct {
	t      testing.TB
	ort    *inference.ORT
	dir    string
	repo   *models.Repository
	p      *pipeline.Pipeline
	mgr    *swap.Manager
	sink   *sink
	ev     *events
	reg    *prometheus.Registry
	priv   ed25519.PrivateKey
	srv    *httptest.Server
	client *http.Client
}

type lineOpts struct {
	allowUnsigned bool
	keep          int
	maxSize       int64
	period        time.Duration
	fetch         fetch.Config
	// wrap puts a fault between the manager and the pipeline.
	wrap func(*pipeline.Pipeline) swap.Pipeline
}

func newLine(t testing.TB, o lineOpts) *line {
	t.Helper()
	if o.period == 0 {
		o.period = 2 * time.Millisecond
	}
	l := &line{t: t, ort: orttest.Open(t), dir: t.TempDir(), sink: newSink(), ev: &events{}, reg: prometheus.NewRegistry()}
	var err error
	if l.repo, err = models.OpenRepository(l.dir); err != nil {
		t.Fatal(err)
	}
	pub, priv, err := models.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	l.priv = priv
	kr, err := models.NewKeyring([]string{"ed25519:" + base64.StdEncoding.EncodeToString(pub)})
	if err != nil {
		t.Fatal(err)
	}
	m1, onnx1 := l.signed("1", good)
	if err := l.repo.Install(m1, onnx1); err != nil {
		t.Fatal(err)
	}
	if err := l.repo.Activate(modelName, "1"); err != nil {
		t.Fatal(err)
	}
	sess, err := l.ort.Load(m1, onnx1, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	l.p, err = pipeline.New(pipeline.Config{
		Identity: pipeline.Identity{Node: "n1"}, RingSize: 256, Workers: 1, MaxBatch: 4,
		MaxWait: time.Millisecond, Sink: l.sink, Registerer: l.reg, Log: log,
	}, []pipeline.Source{{Spec: drivers.Spec{Name: "line"}, Driver: &feeder{period: o.period}, Backpressure: pipeline.Block}},
		[]pipeline.Inspection{{Name: inspection, Source: "line", Model: &pipeline.Model{Manifest: m1, Session: sess}}})
	if err != nil {
		sess.Close()
		t.Fatal(err)
	}
	var sp swap.Pipeline = l.p
	if o.wrap != nil {
		sp = o.wrap(l.p)
	}
	l.mgr, err = swap.New(swap.Config{
		Repo: l.repo, Backend: l.ort, Options: inference.SessionOptions{IntraOpThreads: 1},
		Keyring: kr, AllowUnsigned: o.allowUnsigned, Keep: o.keep, MaxSize: o.maxSize, MaxBatch: 4,
		Fetch: o.fetch, Events: l.ev.add, Registerer: l.reg, Log: log,
	}, sp)
	if err != nil {
		sess.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.p.Run(ctx) }()
	mux := http.NewServeMux()
	for pattern, h := range l.mgr.Routes(admin) {
		mux.Handle(pattern, h)
	}
	l.srv = httptest.NewServer(mux)
	l.client = &http.Client{
		Transport: &http.Transport{},
		// A redirect is an answer to check, not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(func() {
		l.srv.Close()
		l.client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pipeline: %v", err)
		}
		c, _ := l.p.Counts("line")
		if !c.Balanced() || c.DroppedFull != 0 || c.DroppedStale != 0 || c.Errors != 0 {
			t.Errorf("frames lost or failed on the line: %+v", c)
		}
		if err := l.mgr.Close(); err != nil {
			t.Errorf("close swap manager: %v", err)
		}
	})
	l.waitResults("1", 5)
	return l
}

// admin is the bearer token check the admin server puts around mutating routes.
func admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"error":"admin token needed"}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// signed builds a model of kind and signs its manifest with the line's trusted key.
func (l *line) signed(version, kind string) (*models.Manifest, []byte) {
	m, onnx := build(l.t, version, kind)
	l.sign(m)
	return m, onnx
}

func (l *line) sign(m *models.Manifest) {
	if err := models.Sign(m, l.priv); err != nil {
		l.t.Fatal(err)
	}
}

// waitResults waits until n more results of version have been published.
func (l *line) waitResults(version string, n int) {
	l.t.Helper()
	want := l.sink.count(version) + n
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for l.sink.count(version) < want {
		select {
		case <-l.sink.wake:
		case <-deadline.C:
			l.t.Fatalf("waited %v for %d results of version %s; seen versions %v (%d of %s)", waitFor, n, version, l.sink.seen(), l.sink.count(version), version)
		}
	}
}

// serving asserts the line still runs version: the pipeline serves it and new results
// name it.
func (l *line) serving(version string) {
	l.t.Helper()
	pm, ok := l.p.Model(modelName)
	if !ok || pm.Manifest.Version != version {
		l.t.Fatalf("pipeline serves %+v, want version %s", pm, version)
	}
	l.waitResults(version, 3)
	if a, err := l.repo.ActiveVersion(modelName); err != nil || a != version {
		l.t.Fatalf("repository active version %q (%v), want %s", a, err, version)
	}
}

// listing is what the model folder and the repository root hold.
func (l *line) listing() []string {
	l.t.Helper()
	var out []string
	for _, d := range []string{l.dir, filepath.Join(l.dir, modelName)} {
		ents, err := os.ReadDir(d)
		if err != nil {
			l.t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() == "audit.log" {
				continue
			}
			rel, _ := filepath.Rel(l.dir, filepath.Join(d, e.Name()))
			out = append(out, rel)
		}
	}
	slices.Sort(out)
	return out
}

// audit reads the audit log's records.
func (l *line) audit() []models.AuditRecord {
	l.t.Helper()
	f, err := os.Open(filepath.Join(l.dir, "audit.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	var out []models.AuditRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r models.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			l.t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// reply is an HTTP answer of the model API.
type reply struct {
	status int
	report swap.Report
	err    struct {
		Error string `json:"error"`
		Step  string `json:"step"`
	}
	raw string
}

func (l *line) do(req *http.Request) reply {
	l.t.Helper()
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := l.client.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, raw: string(b)}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r.report); err != nil {
			l.t.Fatalf("report %q: %v", b, err)
		}
	} else {
		_ = json.Unmarshal(b, &r.err) // a redirect or the mux's own 404 is not JSON
	}
	return r
}

// put pushes over HTTP: the manifest part, then the model part.
func (l *line) put(path string, m *models.Manifest, model []byte) reply {
	l.t.Helper()
	mb, err := json.Marshal(m)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.putParts(path, []part{{"manifest", mb}, {"model", model}})
}

type part struct {
	name string
	body []byte
}

func (l *line) putParts(path string, parts []part) reply {
	l.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		w, err := mw.CreateFormFile(p.name, p.name)
		if err != nil {
			l.t.Fatal(err)
		}
		w.Write(p.body)
	}
	mw.Close()
	req, err := http.NewRequest(http.MethodPut, l.srv.URL+path, &buf)
	if err != nil {
		l.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return l.do(req)
}

func (l *line) post(path string) reply {
	l.t.Helper()
	req, err := http.NewRequest(http.MethodPost, l.srv.URL+path, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.do(req)
}
