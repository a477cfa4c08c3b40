package onnxbuild_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/onnxbuild"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scalarsManifest describes a model over n named scalars with classes labels, taken as
// they are (mean 0, std 1), so the preprocessed tensor is the raw values.
func scalarsManifest(onnx []byte, n, classes int) *models.Manifest {
	feats := make([]string, n)
	mean := make([]float32, n)
	std := make([]float32, n)
	for i := range feats {
		feats[i], std[i] = fmt.Sprintf("f%d", i), 1
	}
	return manifest(onnx, []int64{-1, int64(n)}, classes, models.Preprocess{
		Kind: models.PreprocessScalars, Features: feats, Mean: mean, Std: std,
	})
}

func imageManifest(onnx []byte, h, w, classes int) *models.Manifest {
	return manifest(onnx, []int64{-1, 1, int64(h), int64(w)}, classes, models.Preprocess{
		Width: w, Height: h, Layout: "NCHW", Color: "gray", Mean: []float32{0}, Std: []float32{1},
	})
}

func manifest(onnx []byte, inShape []int64, classes int, pre models.Preprocess) *models.Manifest {
	sum := sha256.Sum256(onnx)
	labels := make([]string, classes)
	for i := range labels {
		labels[i] = fmt.Sprintf("c%d", i)
	}
	return &models.Manifest{
		Name: "built", Version: "1", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(onnx)),
		Inputs:      []models.Tensor{{Name: "x", DType: "float32", Shape: inShape}},
		Outputs:     []models.Tensor{{Name: "y", DType: "float32", Shape: []int64{-1, int64(classes)}}},
		Preprocess:  pre,
		Postprocess: models.Postprocess{Kind: models.PostprocessSoftmax, Labels: labels, OKLabels: labels[:1], Threshold: 0.5},
		Created:     time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC),
	}
}

func randoms(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func load(t *testing.T, o *inference.ORT, m *models.Manifest, onnx []byte) inference.Session {
	t.Helper()
	if err := m.Validate(); err != nil {
		t.Fatalf("manifest for the built model: %v", err)
	}
	s, err := o.Load(m, onnx, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("load built model: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close session: %v", err)
		}
	})
	return s
}

// run infers frames (back to back) in one batch and returns a copy of the outputs.
func run(t *testing.T, s inference.Session, frames []float32, frameLen int) ([]float32, error) {
	t.Helper()
	b, err := s.NewBatch(len(frames) / frameLen)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.InputLen != frameLen {
		t.Fatalf("session's per-frame input length %d, want %d", b.InputLen, frameLen)
	}
	copy(b.Input, frames)
	if err := s.Run(context.Background(), b); err != nil {
		return nil, err
	}
	return append([]float32(nil), b.Output...), nil
}

// TestLinearMatchesGo runs the built linear model in ONNX Runtime on scalar and image
// shapes, batches of 1 and more, and checks every output against LinearOutput: the
// golden values tests compute in Go are what the runtime computes.
func TestLinearMatchesGo(t *testing.T) {
	o := orttest.Open(t)
	rng := rand.New(rand.NewPCG(7, 11))
	for _, tc := range []struct {
		name    string
		shape   []int64
		classes int
		m       func(onnx []byte) *models.Manifest
	}{
		{"scalars4x3", []int64{4}, 3, func(b []byte) *models.Manifest { return scalarsManifest(b, 4, 3) }},
		{"scalars1x2", []int64{1}, 2, func(b []byte) *models.Manifest { return scalarsManifest(b, 1, 2) }},
		{"image8x6x4", []int64{1, 8, 6}, 4, func(b []byte) *models.Manifest { return imageManifest(b, 8, 6, 4) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := 1
			for _, d := range tc.shape {
				f *= int(d)
			}
			w, b := randoms(rng, f*tc.classes), randoms(rng, tc.classes)
			onnx, err := onnxbuild.Linear("x", tc.shape, "y", tc.classes, w, b)
			if err != nil {
				t.Fatal(err)
			}
			s := load(t, o, tc.m(onnx), onnx)
			for _, frames := range []int{1, 5} {
				x := randoms(rng, frames*f)
				got, err := run(t, s, x, f)
				if err != nil {
					t.Fatalf("run %d frames: %v", frames, err)
				}
				want := onnxbuild.LinearOutput(x, w, b, tc.classes)
				if len(got) != len(want) {
					t.Fatalf("%d outputs, want %d", len(got), len(want))
				}
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 {
						t.Errorf("%d frames: output %d is %v, Go computes %v", frames, i, got[i], want[i])
					}
				}
			}
		})
	}
}

func TestNaNOutput(t *testing.T) {
	o := orttest.Open(t)
	rng := rand.New(rand.NewPCG(3, 5))
	w, b := randoms(rng, 3*2), randoms(rng, 2)
	onnx, err := onnxbuild.NaNOutput("x", []int64{3}, "y", 2, w, b)
	if err != nil {
		t.Fatal(err)
	}
	s := load(t, o, scalarsManifest(onnx, 3, 2), onnx)
	for _, x := range [][]float32{{0, 0, 0}, randoms(rng, 3*4)} {
		got, err := run(t, s, x, 3)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			if !math.IsNaN(float64(v)) {
				t.Errorf("input %v: output %d is %v, want NaN", x, i, v)
			}
		}
	}
}

func TestFailsAtRun(t *testing.T) {
	o := orttest.Open(t)
	for _, tc := range []struct {
		shape []int64
		m     func(onnx []byte) *models.Manifest
	}{
		{[]int64{1}, func(b []byte) *models.Manifest { return scalarsManifest(b, 1, 2) }},
		{[]int64{3}, func(b []byte) *models.Manifest { return scalarsManifest(b, 3, 2) }},
		{[]int64{1, 4, 4}, func(b []byte) *models.Manifest { return imageManifest(b, 4, 4, 2) }},
	} {
		onnx, err := onnxbuild.FailsAtRun("x", tc.shape, "y", 2)
		if err != nil {
			t.Fatal(err)
		}
		s := load(t, o, tc.m(onnx), onnx)
		f := 1
		for _, d := range tc.shape {
			f *= int(d)
		}
		for _, frames := range []int{1, 2, 3} {
			if _, err := run(t, s, make([]float32, frames*f), f); err == nil || !strings.Contains(err.Error(), "out of data bounds") {
				t.Errorf("shape %v, %d frames: run error %v, want the gather's out of bounds", tc.shape, frames, err)
			}
		}
	}
}

// TestManifestMismatchRefused checks the built models declare what they say: a manifest
// with another frame size is refused at load.
func TestManifestMismatchRefused(t *testing.T) {
	o := orttest.Open(t)
	onnx, err := onnxbuild.Linear("x", []int64{4}, "y", 2, make([]float32, 8), make([]float32, 2))
	if err != nil {
		t.Fatal(err)
	}
	m := scalarsManifest(onnx, 5, 2)
	if s, err := o.Load(m, onnx, inference.SessionOptions{}); err == nil {
		s.Close()
		t.Fatal("a model of 4 features loaded under a manifest of 5")
	} else if !strings.Contains(err.Error(), "shape") {
		t.Errorf("error %q does not name the shape", err)
	}
}

func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func() ([]byte, error)
		want  string
	}{
		{"weights", func() ([]byte, error) {
			return onnxbuild.Linear("x", []int64{3}, "y", 2, make([]float32, 5), make([]float32, 2))
		}, "weights: want 6"},
		{"bias", func() ([]byte, error) {
			return onnxbuild.Linear("x", []int64{3}, "y", 2, make([]float32, 6), make([]float32, 3))
		}, "bias: want 2"},
		{"shape", func() ([]byte, error) { return onnxbuild.NaNOutput("x", []int64{3, 0}, "y", 2, nil, nil) }, "dimension 1 is 0"},
		{"empty shape", func() ([]byte, error) { return onnxbuild.FailsAtRun("x", nil, "y", 2) }, "frame shape is empty"},
		{"classes", func() ([]byte, error) { return onnxbuild.FailsAtRun("x", []int64{2}, "y", 0) }, "classes 0"},
		{"same names", func() ([]byte, error) { return onnxbuild.Linear("x", []int64{1}, "x", 1, []float32{1}, []float32{0}) }, "both named"},
		{"clash", func() ([]byte, error) { return onnxbuild.Linear("W", []int64{1}, "y", 1, []float32{1}, []float32{0}) }, `"W" is used`},
	} {
		if _, err := tc.build(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLinearOutput(t *testing.T) {
	// Two frames of two values, three classes: hand-computed.
	w := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{0.5, 0, -1}
	got := onnxbuild.LinearOutput([]float32{1, 1, 2, 0}, w, b, 3)
	want := []float32{5.5, 7, 8, 2.5, 4, 5}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if onnxbuild.LinearOutput([]float32{1, 2, 3}, w, b, 3) != nil {
		t.Error("a partial frame gave outputs")
	}
}
