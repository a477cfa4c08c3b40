package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/models"
)

func TestEmbeddedModel(t *testing.T) {
	onnx, raw := Model()
	m, err := models.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != Name || m.Version != Version {
		t.Errorf("manifest names %s %s, package says %s %s", m.Name, m.Version, Name, Version)
	}
	sum := sha256.Sum256(onnx)
	if got := hex.EncodeToString(sum[:]); got != m.SHA256 {
		t.Errorf("model.onnx sha256 %s, manifest says %s", got, m.SHA256)
	}
	if int64(len(onnx)) != m.Size {
		t.Errorf("model.onnx is %d bytes, manifest says %d", len(onnx), m.Size)
	}
	if len(onnx) > 1<<20 {
		t.Errorf("model.onnx is %d bytes, over the 1 MiB a bundled model may weigh", len(onnx))
	}
}

// TestBundledModels checks every bundled model the way an empty repository installs
// it: by name, verified against its manifest, and as a private copy.
func TestBundledModels(t *testing.T) {
	want := []string{Name, PressFit, VibAnomaly, VibISO}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("bundled models %v, want %v", got, want)
	}
	for _, name := range want {
		if !Bundled(name) {
			t.Errorf("Bundled(%q) is false", name)
		}
		m, onnx, err := LoadNamed(name)
		if err != nil {
			t.Errorf("load %s: %v", name, err)
			continue
		}
		if m.Name != name || m.Version != "1.0.0" {
			t.Errorf("%s: manifest names %s %s", name, m.Name, m.Version)
		}
		if len(onnx) > 1<<20 {
			t.Errorf("%s: model.onnx is %d bytes, over the 1 MiB a bundled model may weigh", name, len(onnx))
		}
		// The copy is the caller's: writing to it must not reach the embedded file.
		onnx[0] ^= 0xff
		if _, again, err := LoadNamed(name); err != nil || again[0] == onnx[0] {
			t.Errorf("%s: LoadNamed shares its bytes with the caller (%v)", name, err)
		}
	}
	m, _, err := LoadNamed(Name)
	if dm, _, derr := Load(); err != nil || derr != nil || m.SHA256 != dm.SHA256 {
		t.Errorf("LoadNamed(%q) and Load disagree: %v, %v", Name, err, derr)
	}
	if Bundled("no-such-model") {
		t.Error(`Bundled("no-such-model") is true`)
	}
	if _, _, err := LoadNamed("no-such-model"); err == nil || !strings.Contains(err.Error(), `"no-such-model"`) || !strings.Contains(err.Error(), VibISO) {
		t.Errorf("unknown model: %v, want an error naming it and the bundled ones", err)
	}
}

// TestLabelsMatchSimulator guards the contract between the model and the simulator it
// was trained on: the simulator's ground truth must be among the model's labels, or
// the line page could never show a verdict as right.
func TestLabelsMatchSimulator(t *testing.T) {
	_, raw := Model()
	m, err := models.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{sim.LabelOK}, sim.DefectLabels...)
	if !slices.Equal(m.Postprocess.Labels, want) {
		t.Errorf("model labels %v, simulator labels %v", m.Postprocess.Labels, want)
	}
	if !slices.Equal(m.Postprocess.OKLabels, []string{sim.LabelOK}) {
		t.Errorf("ok labels %v", m.Postprocess.OKLabels)
	}
	p := m.Preprocess
	if p.Width != 64 || p.Height != 64 || p.Color != "gray" {
		t.Errorf("preprocess %+v, want 64x64 gray", p)
	}
	if got := m.Inputs[0]; got.Name != "image" || !slices.Equal(got.Shape, []int64{-1, 1, 64, 64}) {
		t.Errorf("input %+v", got)
	}
	if got := m.Outputs[0]; got.Name != "logits" || !slices.Equal(got.Shape, []int64{-1, int64(len(want))}) {
		t.Errorf("output %+v", got)
	}
}
