// Package demo provides the bundled demo models, so that edged inspects out of the box
// with no model repository set up: el-defect, an EL solar-cell defect classifier
// trained on the line simulator's images (drivers/sim; train.py and README.md say how
// it was made), two models of named scalar values trained on synthetic line data,
// vib-iso (machine vibration) and press-fit (a press-fit station's force and depth;
// scalar/train_scalar.py and scalar/README.md say how they were made), and
// vib-anomaly, an anomaly score of vibration window features trained on the vibration
// simulator's healthy runs (vib-anomaly/README.md says how it was made).
package demo

import (
	"bytes"
	_ "embed"
	"fmt"
	"slices"
	"strings"

	"github.com/edgedrun/edged/models"
)

// Name and Version of the bundled image model, as its manifest states them.
const (
	Name    = "el-defect"
	Version = "1.0.0"
)

// Names of the bundled scalar models, as their manifests state them (version 1.0.0).
const (
	VibISO     = "vib-iso"
	PressFit   = "press-fit"
	VibAnomaly = "vib-anomaly"
)

var (
	//go:embed el-defect/1.0.0/model.onnx
	modelONNX []byte
	//go:embed el-defect/1.0.0/manifest.json
	manifestJSON []byte

	//go:embed vib-iso/1.0.0/model.onnx
	vibISOONNX []byte
	//go:embed vib-iso/1.0.0/manifest.json
	vibISOManifest []byte

	//go:embed press-fit/1.0.0/model.onnx
	pressFitONNX []byte
	//go:embed press-fit/1.0.0/manifest.json
	pressFitManifest []byte

	//go:embed vib-anomaly/1.0.0/model.onnx
	vibAnomalyONNX []byte
	//go:embed vib-anomaly/1.0.0/manifest.json
	vibAnomalyManifest []byte
)

// bundle holds every bundled model by name.
var bundle = map[string]struct{ onnx, manifest []byte }{
	Name:       {modelONNX, manifestJSON},
	VibISO:     {vibISOONNX, vibISOManifest},
	PressFit:   {pressFitONNX, pressFitManifest},
	VibAnomaly: {vibAnomalyONNX, vibAnomalyManifest},
}

// Model returns the ONNX file and manifest of el-defect. The slices are shared: callers
// must not modify them.
func Model() (onnx, manifest []byte) { return modelONNX, manifestJSON }

// Names returns the names of all bundled models, sorted.
func Names() []string {
	names := make([]string, 0, len(bundle))
	for n := range bundle {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Bundled reports whether edged carries a model called name, which an empty
// repository can then install.
func Bundled(name string) bool {
	_, ok := bundle[name]
	return ok
}

// LoadNamed parses and verifies the bundled model called name. It returns copies, free
// to modify.
func LoadNamed(name string) (*models.Manifest, []byte, error) {
	b, ok := bundle[name]
	if !ok {
		return nil, nil, fmt.Errorf("no bundled demo model is named %q (bundled: %s)", name, strings.Join(Names(), ", "))
	}
	m, err := models.ParseManifest(b.manifest)
	if err != nil {
		return nil, nil, fmt.Errorf("bundled demo model %q: %w", name, err)
	}
	if m.Name != name {
		return nil, nil, fmt.Errorf("bundled demo model %q: its manifest names %q", name, m.Name)
	}
	if err := models.Verify(m, b.onnx); err != nil {
		return nil, nil, fmt.Errorf("bundled demo model %q: %w", name, err)
	}
	return m, bytes.Clone(b.onnx), nil
}
