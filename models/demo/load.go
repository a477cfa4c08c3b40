package demo

import (
	"bytes"
	"fmt"

	"github.com/edgedrun/edged/models"
)

// Load parses and verifies the bundled model. It returns copies, free to modify.
func Load() (*models.Manifest, []byte, error) {
	onnx, mb := Model()
	m, err := models.ParseManifest(mb)
	if err != nil {
		return nil, nil, fmt.Errorf("bundled demo model: %w", err)
	}
	if err := models.Verify(m, onnx); err != nil {
		return nil, nil, fmt.Errorf("bundled demo model: %w", err)
	}
	return m, bytes.Clone(onnx), nil
}
