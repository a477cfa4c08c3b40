// Package demo provides the bundled demo model: an EL solar-cell defect classifier
// trained on the line simulator's images (drivers/sim), so that edged inspects out of
// the box with no model repository set up. train.py and README.md say how it was made.
package demo

import _ "embed"

// Name and Version of the bundled model, as its manifest states them.
const (
	Name    = "el-defect"
	Version = "1.0.0"
)

var (
	//go:embed el-defect/1.0.0/model.onnx
	modelONNX []byte
	//go:embed el-defect/1.0.0/manifest.json
	manifestJSON []byte
)

// Model returns the ONNX file and its manifest. The slices are shared: callers must
// not modify them.
func Model() (onnx, manifest []byte) { return modelONNX, manifestJSON }
