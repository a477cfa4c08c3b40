package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
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
