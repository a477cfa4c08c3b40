//go:build !cgo

package inference_test

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/inference"
)

// Without cgo the ONNX Runtime tests, and the TestMain that comes with them, are not
// built; the pure-Go tests still check for leaked goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpenWithoutCgo(t *testing.T) {
	be, err := inference.Open(inference.BackendAuto, "")
	if err != nil || be.Name() != inference.BackendPureGo {
		t.Fatalf("auto without cgo: %v %v", be, err)
	}
	if _, err := inference.Open(inference.BackendONNXRuntime, ""); err == nil || !strings.Contains(err.Error(), "built without cgo") {
		t.Errorf("onnxruntime without cgo: %v", err)
	}
}
