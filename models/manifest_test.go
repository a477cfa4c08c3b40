package models_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgedrun/edged/models"
)

const demoManifestPath = "demo/el-defect/1.0.0/manifest.json"

func demoManifestBytes(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(demoManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseManifestDemo(t *testing.T) {
	m, err := models.ParseManifest(demoManifestBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	onnx, err := os.ReadFile("demo/el-defect/1.0.0/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "el-defect" || m.Version != "1.0.0" {
		t.Errorf("name, version = %q, %q", m.Name, m.Version)
	}
	if m.Size != int64(len(onnx)) {
		t.Errorf("size %d, model.onnx is %d bytes", m.Size, len(onnx))
	}
	if err := models.Verify(m, onnx); err != nil {
		t.Errorf("verify against model.onnx: %v", err)
	}
	if want := time.Date(2026, 11, 27, 21, 28, 33, 0, time.UTC); !m.Created.Equal(want) {
		t.Errorf("created %v, want %v", m.Created, want)
	}
	if len(m.Inputs) != 1 || !slices.Equal(m.Inputs[0].Shape, []int64{-1, 1, 64, 64}) {
		t.Errorf("inputs %+v", m.Inputs)
	}
	if p := m.Preprocess; p.Layout != "NCHW" || p.Color != "gray" || !slices.Equal(p.Mean, []float32{0.5294}) || !slices.Equal(p.Std, []float32{0.1757}) {
		t.Errorf("preprocess %+v", p)
	}
	if q := m.Postprocess; q.Kind != "softmax" || q.Threshold != 0.5 || !slices.Equal(q.OKLabels, []string{"ok"}) || len(q.Labels) != 4 {
		t.Errorf("postprocess %+v", q)
	}
}

// edit turns a change to the demo manifest into a change to its JSON bytes.
func edit(f func(m *models.Manifest)) func(t *testing.T, b []byte) []byte {
	return func(t *testing.T, b []byte) []byte {
		t.Helper()
		var m models.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		f(&m)
		out, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// raw changes the manifest's bytes directly, for faults a Manifest value cannot hold.
func raw(f func(b []byte) []byte) func(t *testing.T, b []byte) []byte {
	return func(_ *testing.T, b []byte) []byte { return f(bytes.Clone(b)) }
}

func TestParseManifestAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, b []byte) []byte
	}{
		{"demo as is", raw(func(b []byte) []byte { return b })},
		{"rgb with 3 mean and std", edit(func(m *models.Manifest) {
			m.Preprocess.Color = "rgb"
			m.Preprocess.Mean = []float32{0.485, 0.456, 0.406}
			m.Preprocess.Std = []float32{0.229, 0.224, 0.225}
		})},
		{"bgr with 3 mean and std", edit(func(m *models.Manifest) {
			m.Preprocess.Color = "bgr"
			m.Preprocess.Mean = []float32{0, 0, 0}
			m.Preprocess.Std = []float32{1, 1, 1}
		})},
		{"upper-case sha256", edit(func(m *models.Manifest) { m.SHA256 = strings.ToUpper(m.SHA256) })},
		{"several ok labels", edit(func(m *models.Manifest) { m.Postprocess.OKLabels = []string{"ok", "crack"} })},
		{"threshold just inside (0,1)", edit(func(m *models.Manifest) { m.Postprocess.Threshold = 0.999 })},
		{"trailing white space", raw(func(b []byte) []byte { return append(b, " \n\t\n"...) })},
		{"signature fields kept", edit(func(m *models.Manifest) { m.Signature, m.KeyID = "c2ln", "key-1" })},
		{"scalars", edit(func(m *models.Manifest) {
			m.Preprocess = models.Preprocess{Kind: models.PreprocessScalars, Features: []string{"rms", "temp"}, Mean: []float32{2, 60}, Std: []float32{1, 10}}
			m.Inputs[0].Shape = []int64{-1, 2}
		})},
		{"image kind named", edit(func(m *models.Manifest) { m.Preprocess.Kind = models.PreprocessImage })},
		{"golden frames", edit(func(m *models.Manifest) {
			m.Golden = []models.Golden{{Input: []float32{0.5, -1}, Output: []float32{9, 0, 0, 0}, Tolerance: 0.001}, {Input: []float32{0}, Output: []float32{0}}}
		})},
		{"score model", edit(func(m *models.Manifest) {
			m.Outputs[0].Shape = []int64{-1, 1}
			m.Postprocess = models.Postprocess{Kind: models.PostprocessScore, Labels: []string{"ok", "anomaly"}, OKLabels: []string{"ok"}, Threshold: 1.7}
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(t, demoManifestBytes(t))
			if _, err := models.ParseManifest(b); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

func TestParseManifestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, b []byte) []byte
		// want are the texts the error must hold: the field it is about, and the value
		// where there is one.
		want []string
	}{
		{"not json", raw(func([]byte) []byte { return []byte("name: el-defect\n") }), []string{"parse manifest"}},
		{"empty", raw(func([]byte) []byte { return nil }), []string{"parse manifest", "EOF"}},
		{"unknown top-level field", raw(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"name":`), []byte(`"colour": "gray", "name":`), 1)
		}), []string{"unknown field", `"colour"`}},
		{"unknown nested field", raw(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"layout":`), []byte(`"channels": 1, "layout":`), 1)
		}), []string{"unknown field", `"channels"`}},
		{"wrong type", raw(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"size": 190761`), []byte(`"size": "190761"`), 1)
		}), []string{"parse manifest", "size"}},
		{"trailing object", raw(func(b []byte) []byte { return append(b, "{}"...) }), []string{"trailing data"}},
		{"trailing word", raw(func(b []byte) []byte { return append(b, "\nextra"...) }), []string{"trailing data"}},
		{"trailing brace", raw(func(b []byte) []byte { return append(b, "}"...) }), []string{"trailing data"}},
		{"trailing bracket", raw(func(b []byte) []byte { return append(b, "]"...) }), []string{"trailing data"}},
		{"missing name", edit(func(m *models.Manifest) { m.Name = "" }), []string{"name is empty"}},
		{"missing version", edit(func(m *models.Manifest) { m.Version = "" }), []string{"version is empty"}},
		{"sha256 too short", edit(func(m *models.Manifest) { m.SHA256 = "3b646bd9" }), []string{`sha256 "3b646bd9"`}},
		{"sha256 too long", edit(func(m *models.Manifest) { m.SHA256 += "0" }), []string{"sha256"}},
		{"sha256 missing", edit(func(m *models.Manifest) { m.SHA256 = "" }), []string{`sha256 ""`}},
		{"sha256 not hex", edit(func(m *models.Manifest) { m.SHA256 = strings.Repeat("z", 64) }), []string{"sha256", "zzzz"}},
		{"zero size", edit(func(m *models.Manifest) { m.Size = 0 }), []string{"size 0"}},
		{"negative size", edit(func(m *models.Manifest) { m.Size = -5 }), []string{"size -5"}},
		{"created before year 0 in UTC", raw(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"2026-11-27T21:28:33Z"`), []byte(`"0000-01-01T00:00:00+23:59"`), 1)
		}), []string{"created 0000-01-01T00:00:00+23:59", "UTC"}},
		{"no input", edit(func(m *models.Manifest) { m.Inputs = nil }), []string{"inputs", "have 0"}},
		{"two inputs", edit(func(m *models.Manifest) { m.Inputs = append(m.Inputs, m.Inputs[0]) }), []string{"inputs", "have 2"}},
		{"two outputs", edit(func(m *models.Manifest) { m.Outputs = append(m.Outputs, m.Outputs[0]) }), []string{"outputs", "have 2"}},
		{"input dtype float64", edit(func(m *models.Manifest) { m.Inputs[0].DType = "float64" }), []string{`"image"`, `dtype "float64"`}},
		{"output dtype uint8", edit(func(m *models.Manifest) { m.Outputs[0].DType = "uint8" }), []string{`"logits"`, `dtype "uint8"`}},
		{"input without name", edit(func(m *models.Manifest) { m.Inputs[0].Name = "" }), []string{`tensor 0 ("")`}},
		{"output without shape", edit(func(m *models.Manifest) { m.Outputs[0].Shape = nil }), []string{`"logits"`, "shape []"}},
		{"zero width", edit(func(m *models.Manifest) { m.Preprocess.Width = 0 }), []string{"width 0"}},
		{"negative height", edit(func(m *models.Manifest) { m.Preprocess.Height = -1 }), []string{"height -1"}},
		{"layout NHWC", edit(func(m *models.Manifest) { m.Preprocess.Layout = "NHWC" }), []string{`preprocess.layout "NHWC"`}},
		{"layout lower case", edit(func(m *models.Manifest) { m.Preprocess.Layout = "nchw" }), []string{`preprocess.layout "nchw"`}},
		{"color unknown", edit(func(m *models.Manifest) { m.Preprocess.Color = "cmyk" }), []string{`preprocess.color "cmyk"`}},
		{"color missing", edit(func(m *models.Manifest) { m.Preprocess.Color = "" }), []string{`preprocess.color ""`}},
		{"rgb with one mean", edit(func(m *models.Manifest) {
			m.Preprocess.Color = "rgb"
			m.Preprocess.Std = []float32{1, 1, 1}
		}), []string{"mean and std", "need 3", `"rgb"`, "have 1 and 3"}},
		{"gray with two std", edit(func(m *models.Manifest) { m.Preprocess.Std = []float32{1, 1} }), []string{"mean and std", "have 1 and 2"}},
		{"std 0", edit(func(m *models.Manifest) { m.Preprocess.Std = []float32{0} }), []string{"preprocess.std[0] is 0"}},
		{"third std 0", edit(func(m *models.Manifest) {
			m.Preprocess.Color = "bgr"
			m.Preprocess.Mean = []float32{0, 0, 0}
			m.Preprocess.Std = []float32{1, 1, 0}
		}), []string{"preprocess.std[2] is 0"}},
		{"preprocess kind unknown", edit(func(m *models.Manifest) { m.Preprocess.Kind = "audio" }), []string{`preprocess.kind "audio"`}},
		{"features on an image model", edit(func(m *models.Manifest) { m.Preprocess.Features = []string{"rms"} }), []string{"preprocess.features", "not images"}},
		{"scalars without features", edit(func(m *models.Manifest) {
			m.Preprocess = models.Preprocess{Kind: models.PreprocessScalars}
		}), []string{"preprocess.features is empty"}},
		{"scalars with a repeated feature", edit(func(m *models.Manifest) {
			m.Preprocess = models.Preprocess{Kind: models.PreprocessScalars, Features: []string{"rms", "rms"}, Mean: []float32{0, 0}, Std: []float32{1, 1}}
		}), []string{`preprocess.features[1] "rms"`}},
		{"scalars with image size", edit(func(m *models.Manifest) {
			m.Preprocess.Kind, m.Preprocess.Features = models.PreprocessScalars, []string{"rms"}
		}), []string{"width, height, layout and color are for images"}},
		{"scalars with too few mean", edit(func(m *models.Manifest) {
			m.Preprocess = models.Preprocess{Kind: models.PreprocessScalars, Features: []string{"a", "b"}, Mean: []float32{0}, Std: []float32{1, 1}}
		}), []string{"one value per feature (2)", "have 1 and 2"}},
		{"scalars std 0", edit(func(m *models.Manifest) {
			m.Preprocess = models.Preprocess{Kind: models.PreprocessScalars, Features: []string{"a"}, Mean: []float32{0}, Std: []float32{0}}
		}), []string{"preprocess.std[0] is 0"}},
		{"score model with softmax labels", edit(func(m *models.Manifest) {
			m.Outputs[0].Shape = []int64{-1, 1}
			m.Postprocess.Kind = models.PostprocessScore
		}), []string{"score model has labels [ok, anomaly]"}},
		{"score model with two outputs per frame", edit(func(m *models.Manifest) {
			m.Outputs[0].Shape = []int64{-1, 2}
			m.Postprocess = models.Postprocess{Kind: models.PostprocessScore, Labels: []string{"ok", "anomaly"}, OKLabels: []string{"ok"}, Threshold: 2}
		}), []string{"outputs[0].shape [-1 2]", "[-1, 1]"}},
		{"score model with threshold 0", edit(func(m *models.Manifest) {
			m.Outputs[0].Shape = []int64{-1, 1}
			m.Postprocess = models.Postprocess{Kind: models.PostprocessScore, Labels: []string{"ok", "anomaly"}, OKLabels: []string{"ok"}}
		}), []string{"postprocess.threshold 0 is not a positive score"}},
		{"kind sigmoid", edit(func(m *models.Manifest) { m.Postprocess.Kind = "sigmoid" }), []string{`postprocess.kind "sigmoid"`}},
		{"one label", edit(func(m *models.Manifest) {
			m.Postprocess.Labels = []string{"ok"}
		}), []string{"postprocess.labels", "have 1"}},
		{"no ok labels", edit(func(m *models.Manifest) { m.Postprocess.OKLabels = nil }), []string{"postprocess.ok_labels is empty"}},
		{"ok label not a label", edit(func(m *models.Manifest) { m.Postprocess.OKLabels = []string{"good"} }), []string{"postprocess.ok_labels", `"good"`}},
		{"threshold 0", edit(func(m *models.Manifest) { m.Postprocess.Threshold = 0 }), []string{"postprocess.threshold 0"}},
		{"threshold 1", edit(func(m *models.Manifest) { m.Postprocess.Threshold = 1 }), []string{"postprocess.threshold 1"}},
		{"threshold negative", edit(func(m *models.Manifest) { m.Postprocess.Threshold = -0.5 }), []string{"postprocess.threshold -0.5"}},
		{"threshold above 1", edit(func(m *models.Manifest) { m.Postprocess.Threshold = 1.5 }), []string{"postprocess.threshold 1.5"}},
		{"golden without input", edit(func(m *models.Manifest) {
			m.Golden = []models.Golden{{Input: []float32{1}, Output: []float32{1}}, {Output: []float32{1}}}
		}), []string{"golden[1]", "have 0 and 1"}},
		{"golden without output", edit(func(m *models.Manifest) { m.Golden = []models.Golden{{Input: []float32{1}}} }), []string{"golden[0]", "have 1 and 0"}},
		{"golden negative tolerance", edit(func(m *models.Manifest) {
			m.Golden = []models.Golden{{Input: []float32{1}, Output: []float32{1}, Tolerance: -0.1}}
		}), []string{"golden[0].tolerance -0.1"}},
		{"golden input null", raw(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"description"`), []byte(`"golden":[{"input":null,"output":[1],"tolerance":0}],"description"`), 1)
		}), []string{"golden[0]", "have 0 and 1"}},
		{"golden unknown field", raw(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"description"`), []byte(`"golden":[{"input":[1],"output":[1],"tol":0}],"description"`), 1)
		}), []string{"unknown field", `"tol"`}},
		{"golden value beyond float32", raw(func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"description"`), []byte(`"golden":[{"input":[1e39],"output":[1],"tolerance":0}],"description"`), 1)
		}), []string{"parse manifest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(t, demoManifestBytes(t))
			m, err := models.ParseManifest(b)
			if err == nil {
				t.Fatalf("accepted (manifest ends %q)", b[max(0, len(b)-60):])
			}
			if m != nil {
				t.Errorf("returned a manifest with the error %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// Each case breaks one thing, so the error is about that thing only.
			if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
				t.Errorf("%d errors for one fault:\n%v", n, err)
			}
		})
	}
}

// TestParseManifestReportsEveryFault checks faults are all reported at once, so whoever
// writes a manifest fixes it in one go rather than one error per try.
func TestParseManifestReportsEveryFault(t *testing.T) {
	b := edit(func(m *models.Manifest) {
		m.Name = ""
		m.Size = 0
		m.Preprocess.Layout = "NHWC"
		m.Postprocess.Threshold = 2
	})(t, demoManifestBytes(t))
	_, err := models.ParseManifest(b)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"name is empty", "size 0", `preprocess.layout "NHWC"`, "postprocess.threshold 2"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// FuzzParseManifest feeds ParseManifest outside bytes. Beyond not panicking, a manifest
// it accepts must survive what Repository.Install does to it (encode it again) and still
// parse to the same value, or an installed model could not be loaded back.
func FuzzParseManifest(f *testing.F) {
	f.Add(demoManifestBytes(f))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"name":"x"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"preprocess":{"color":"rgb","mean":[1e39],"std":[-0]}}`))
	f.Add([]byte(`{"created":"0000-01-01T00:00:00+23:59"}`))
	f.Add(bytes.Replace(demoManifestBytes(f), []byte(`"description"`), []byte(`"golden":[{"input":[1,2],"output":[0.5],"tolerance":1e-3}],"description"`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := models.ParseManifest(b)
		if err != nil {
			if m != nil {
				t.Fatalf("manifest and error %v both returned", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted a manifest that does not validate: %v", err)
		}
		again, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			t.Fatalf("accepted manifest does not encode again: %v", err)
		}
		m2, err := models.ParseManifest(again)
		if err != nil {
			t.Fatalf("accepted manifest refused once encoded again: %v\n%s", err, again)
		}
		if !m2.Created.Equal(m.Created) {
			t.Fatalf("created %v became %v", m.Created, m2.Created)
		}
		m.Created, m2.Created = time.Time{}, time.Time{}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("manifest changed once encoded again:\n%+v\n%+v", m, m2)
		}
	})
}

// TestValidateGoldenNotFinite: NaN and infinities cannot come through JSON, but a
// manifest built in code (a signing tool) can hold them; it must not sign or install.
func TestValidateGoldenNotFinite(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, tc := range []struct {
		name string
		g    models.Golden
		want string
	}{
		{"nan input", models.Golden{Input: []float32{0, nan}, Output: []float32{1}}, "golden[0].input[1] NaN"},
		{"inf output", models.Golden{Input: []float32{0}, Output: []float32{-inf}}, "golden[0].output[0] -Inf"},
		{"nan tolerance", models.Golden{Input: []float32{0}, Output: []float32{1}, Tolerance: nan}, "golden[0].tolerance NaN"},
		{"inf tolerance", models.Golden{Input: []float32{0}, Output: []float32{1}, Tolerance: inf}, "golden[0].tolerance +Inf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := models.ParseManifest(demoManifestBytes(t))
			if err != nil {
				t.Fatal(err)
			}
			m.Golden = []models.Golden{tc.g}
			if err := m.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}
