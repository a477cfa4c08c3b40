package swap_test

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
	"github.com/edgedrun/edged/models/swap"
	"github.com/edgedrun/edged/pipeline"
)

// camera emits simulator images at a steady, light rate until ctx ends.
type camera struct {
	imgs   []*drivers.Image
	period time.Duration
}

func newCamera(t testing.TB, n int) *camera {
	t.Helper()
	g, err := sim.NewGenerator(sim.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	c := &camera{period: 5 * time.Millisecond}
	for range n {
		buf := make([]byte, w*h)
		g.Next(buf)
		c.imgs = append(c.imgs, &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: buf})
	}
	return c
}

func (c *camera) Run(ctx context.Context, e drivers.Emitter) error {
	e.Health(true, nil)
	tk := time.NewTicker(c.period)
	defer tk.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		e.Emit(ctx, &drivers.Reading{Image: c.imgs[i%len(c.imgs)]})
	}
}

// TestDemoModelPush swaps the bundled el-defect model for a new version of it on a
// camera line, with golden frames made from simulator images by the serving model: the
// image path through load, check, warm-up and golden, and a refused push (a golden
// output off by more than its tolerance) that leaves 1.0.0 serving.
func TestDemoModelPush(t *testing.T) {
	o := orttest.Open(t)
	repo, err := models.OpenRepository(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m1, onnx, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Install(m1, onnx); err != nil {
		t.Fatal(err)
	}
	if err := repo.Activate(m1.Name, m1.Version); err != nil {
		t.Fatal(err)
	}
	sess, err := o.Load(m1, onnx, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	cam := newCamera(t, 4)
	golden := goldenFrames(t, m1, sess, cam.imgs)
	s := newSink()
	reg := prometheus.NewRegistry()
	p, err := pipeline.New(pipeline.Config{RingSize: 64, Workers: 1, MaxBatch: 2, MaxWait: time.Millisecond, Sink: s, Registerer: reg},
		[]pipeline.Source{{Spec: drivers.Spec{Name: "cam"}, Driver: cam, Backpressure: pipeline.Block}},
		[]pipeline.Inspection{{Name: "el", Source: "cam", Model: &pipeline.Model{Manifest: m1, Session: sess}}})
	if err != nil {
		sess.Close()
		t.Fatal(err)
	}
	pub, priv, err := models.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := models.NewKeyring([]string{"ed25519:" + base64.StdEncoding.EncodeToString(pub)})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := swap.New(swap.Config{Repo: repo, Backend: o, Options: inference.SessionOptions{IntraOpThreads: 1}, Keyring: kr, MaxBatch: 2, WarmupRuns: 1, Registerer: reg}, p)
	if err != nil {
		sess.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		for range 2 { // safe twice
			if err := mgr.Close(); err != nil {
				t.Error(err)
			}
		}
	}()
	l := &line{t: t, sink: s}
	l.waitResults(m1.Version, 3)

	bad := *m1
	bad.Version, bad.Golden = "1.0.1", slices.Clone(golden)
	bad.Golden[1].Output = slices.Clone(bad.Golden[1].Output)
	bad.Golden[1].Output[2] += 0.01
	if err := models.Sign(&bad, priv); err != nil {
		t.Fatal(err)
	}
	_, err = mgr.Push(ctx, swap.Request{Manifest: &bad, Body: strings.NewReader(string(onnx)), Via: "test"})
	if err == nil || !strings.Contains(err.Error(), "frame 1 output[2]") {
		t.Fatalf("golden off by 0.01: %v", err)
	}
	l.waitResults(m1.Version, 3)

	next := *m1
	next.Version, next.Golden = "1.0.2", golden
	if err := models.Sign(&next, priv); err != nil {
		t.Fatal(err)
	}
	rep, err := mgr.Push(ctx, swap.Request{Manifest: &next, Body: strings.NewReader(string(onnx)), Via: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Previous != m1.Version {
		t.Errorf("report %+v", rep)
	}
	l.waitResults("1.0.2", 3)
	if pm, _ := p.Model(demo.Name); pm.Manifest.Version != "1.0.2" {
		t.Errorf("serving %s", pm.Manifest.Version)
	}
	if v := s.seen(); !slices.Equal(v, []string{"1.0.0", "1.0.2"}) {
		t.Errorf("results named %v", v)
	}
	if vs, err := repo.Versions(demo.Name); err != nil || len(vs) != 2 {
		t.Errorf("installed %+v %v", vs, err)
	}
}

// goldenFrames preprocesses images and runs the serving model on them: what a model
// maker would put in a manifest.
func goldenFrames(t *testing.T, m *models.Manifest, s inference.Session, imgs []*drivers.Image) []models.Golden {
	t.Helper()
	pre, err := inference.NewPreprocessor(m.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.NewBatch(1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var out []models.Golden
	for _, img := range imgs {
		in, o := b.Frame(0)
		if err := pre.Fill(in, img); err != nil {
			t.Fatal(err)
		}
		if err := s.Run(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		out = append(out, models.Golden{Input: slices.Clone(in), Output: slices.Clone(o), Tolerance: 1e-3})
	}
	return out
}
