package inference_test

import (
	"strings"
	"testing"

	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
)

// checkLoadRefuses holds a backend to the Load contract every backend shares: a
// manifest that does not describe the model's real inputs and outputs, or bytes that
// are not a model, are refused with the same words whichever backend reads them.
// extra are cases only some backends meet.
func checkLoadRefuses(t *testing.T, b inference.Backend, extra ...loadCase) {
	t.Helper()
	m, onnx, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	cases := append([]loadCase{
		{func(m *models.Manifest) { m.Inputs[0].Name = "pixels" }, `input 0 is named "image" in the model, "pixels" in the manifest`},
		{func(m *models.Manifest) { m.Inputs[0].Shape = []int64{-1, 3, 64, 64} }, `input "image" has shape`},
		{func(m *models.Manifest) { m.Outputs[0].Shape = []int64{-1, 5} }, `output "logits" has shape`},
	}, extra...)
	for _, tc := range cases {
		bad := *m
		bad.Inputs = append([]models.Tensor(nil), m.Inputs...)
		bad.Outputs = append([]models.Tensor(nil), m.Outputs...)
		tc.edit(&bad)
		if s, err := b.Load(&bad, onnx, inference.SessionOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: got %v, want an error containing %q", b.Name(), err, tc.want)
		}
	}
	if _, err := b.Load(m, []byte("garbage"), inference.SessionOptions{}); err == nil || !strings.Contains(err.Error(), "cannot read it") {
		t.Errorf("%s: garbage model: %v", b.Name(), err)
	}
}

// loadCase is one edit of a sound manifest and the words the refusal must contain.
type loadCase struct {
	edit func(m *models.Manifest)
	want string
}
