//go:build cgo

package inference_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFindORTLibraryOrder(t *testing.T) {
	if _, err := inference.FindORTLibrary("/nonexistent/lib.so"); err == nil || !strings.Contains(err.Error(), "runtime.ort_library") {
		t.Errorf("configured missing path: %v", err)
	}
	t.Setenv(inference.EnvORTLibrary, "/nonexistent/env.so")
	if _, err := inference.FindORTLibrary(""); err == nil || !strings.Contains(err.Error(), inference.EnvORTLibrary) {
		t.Errorf("env missing path: %v", err)
	}
	dir := t.TempDir()
	lib := dir + "/libonnxruntime.so"
	os.WriteFile(lib, nil, 0o644)
	if c, err := inference.FindORTLibrary(lib); err != nil || c.From != "config runtime.ort_library" {
		t.Errorf("configured path: %+v %v", c, err)
	}
	t.Setenv(inference.EnvORTLibrary, lib)
	if c, err := inference.FindORTLibrary(""); err != nil || c.Path != lib || c.From != "$"+inference.EnvORTLibrary {
		t.Errorf("env path: %+v %v", c, err)
	}
	t.Setenv(inference.EnvORTLibrary, "")
	c, err := inference.FindORTLibrary("")
	if err != nil || c.From != "make ort folder" {
		t.Errorf("make folder: %+v %v (run `make ort`)", c, err)
	}
}

func TestLoadRefusesMismatchedManifest(t *testing.T) {
	checkLoadRefuses(t, orttest.Open(t))
}

// The bundled model, through the real runtime and edged's own pre- and post-processing,
// on a held-out set rendered from a seed it was not trained or validated on.
func TestDemoModelAccuracy(t *testing.T) {
	o := orttest.Open(t)
	m, sess := orttest.Demo(t, o)
	pre, err := inference.NewPreprocessor(m.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	post, err := inference.NewPostprocessor(m.Postprocess, 0)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 16
	b, err := sess.NewBatch(batch)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg := sim.DefaultConfig()
	cfg.Seed = 20261127 // never used for training or validation
	cfg.DefectRate = 0.5
	g, err := sim.NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	n := 2000
	if testing.Short() {
		n = 400
	}
	var tp, fp, fn, tn, labelOK int
	truth := make([]string, batch)
	pix := make([]byte, w*h)
	var v inference.Verdict
	for done := 0; done < n; done += batch {
		for i := range batch {
			truth[i] = g.Next(pix)
			in, _ := b.Frame(i)
			if err := pre.Fill(in, &drivers.Image{Format: drivers.FormatGray8, Width: w, Height: h, Data: pix}); err != nil {
				t.Fatal(err)
			}
		}
		if err := sess.Run(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		for i := range batch {
			_, out := b.Frame(i)
			if err := post.Apply(out, &v); err != nil {
				t.Fatal(err)
			}
			isNG, saysNG := truth[i] != sim.LabelOK, v.Verdict == inference.VerdictNG
			switch {
			case isNG && saysNG:
				tp++
			case !isNG && saysNG:
				fp++
			case isNG && !saysNG:
				fn++
			default:
				tn++
			}
			if v.Label == truth[i] {
				labelOK++
			}
		}
	}
	total := tp + fp + fn + tn
	acc := float64(tp+tn) / float64(total)
	prec := float64(tp) / float64(tp+fp)
	rec := float64(tp) / float64(tp+fn)
	t.Logf("held-out %d images (50%% defects, seed %d): verdict accuracy %.4f, NG precision %.4f, NG recall %.4f, label accuracy %.4f",
		total, cfg.Seed, acc, prec, rec, float64(labelOK)/float64(total))
	if acc < 0.97 {
		t.Errorf("verdict accuracy %.4f below 0.97", acc)
	}
}

func TestBatchBounds(t *testing.T) {
	o := orttest.Open(t)
	_, sess := orttest.Demo(t, o)
	if _, err := sess.NewBatch(0); err == nil {
		t.Error("batch of 0 accepted")
	}
	b, err := sess.NewBatch(1)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := sess.Run(context.Background(), b); err == nil {
		t.Error("run on a closed batch: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b2, _ := sess.NewBatch(1)
	defer b2.Close()
	if err := sess.Run(ctx, b2); err == nil {
		t.Error("run with a cancelled context: no error")
	}
}

func BenchmarkSessionRun(b *testing.B) {
	o := orttest.Open(b)
	_, sess := orttest.Demo(b, o)
	bt, err := sess.NewBatch(1)
	if err != nil {
		b.Fatal(err)
	}
	defer bt.Close()
	b.ReportAllocs()
	for b.Loop() {
		if err := sess.Run(context.Background(), bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

// TestPartialBatch runs the first k frames of a batch of 8 and checks each frame's
// outputs match the same frame run alone, and that the frames past k are left alone.
func TestPartialBatch(t *testing.T) {
	o := orttest.Open(t)
	_, sess := orttest.Demo(t, o)
	big, err := sess.NewBatch(8)
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	one, err := sess.NewBatch(1)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big.Input {
		big.Input[i] = float32(rng.NormFloat64())
	}
	if err := big.Use(9); err == nil {
		t.Error("Use(9) on a batch of 8 accepted")
	}
	for _, k := range []int{3, 8, 1, 3} {
		if err := big.Use(k); err != nil {
			t.Fatal(err)
		}
		for i := range big.Output {
			big.Output[i] = -999
		}
		if err := sess.Run(context.Background(), big); err != nil {
			t.Fatalf("k=%d: %v", k, err)
		}
		for f := range 8 {
			in, out := big.Frame(f)
			if f >= k {
				if out[0] != -999 {
					t.Errorf("k=%d: frame %d past the used ones was written", k, f)
				}
				continue
			}
			copy(one.Input, in)
			if err := sess.Run(context.Background(), one); err != nil {
				t.Fatal(err)
			}
			for j := range out {
				if d := math.Abs(float64(out[j] - one.Output[j])); d > 1e-4 {
					t.Fatalf("k=%d frame %d output %d: %v in the batch, %v alone", k, f, j, out[j], one.Output[j])
				}
			}
		}
	}
}
