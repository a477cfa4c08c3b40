// Package orttest gives tests the real ONNX Runtime and the bundled demo model. Under
// `make test` the runtime is always there (make ort fetches it), so a missing library
// fails the test rather than skipping it.
package orttest

import (
	"testing"

	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
)

// Open opens ONNX Runtime for the test and closes it when the test ends.
func Open(t testing.TB) *inference.ORT {
	t.Helper()
	o, err := inference.OpenORT("")
	if err != nil {
		t.Fatalf("ONNX Runtime is needed (run `make ort`): %v", err)
	}
	t.Cleanup(func() {
		if err := o.Close(); err != nil {
			t.Errorf("close onnx runtime: %v", err)
		}
	})
	return o
}

// Demo loads the bundled model on o with one intra-op thread; the session closes when
// the test ends, before o does.
func Demo(t testing.TB, o *inference.ORT) (*models.Manifest, inference.Session) {
	t.Helper()
	m, onnx, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	s, err := o.Load(m, onnx, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close model session: %v", err)
		}
	})
	return m, s
}
