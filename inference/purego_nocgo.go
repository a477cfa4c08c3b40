//go:build !cgo

package inference

import (
	"fmt"
	"runtime"
)

// ortBuiltIn says whether this binary carries the ONNX Runtime backend, which needs cgo.
const ortBuiltIn = false

func openORTBackend(string) (Backend, error) {
	return nil, fmt.Errorf("runtime.backend %q: this edged for %s was built without cgo, so without ONNX Runtime; set runtime.backend to %q or %q",
		BackendONNXRuntime, runtime.GOARCH, BackendPureGo, BackendAuto)
}

func describeORT(Backend) (BackendInfo, bool) { return BackendInfo{}, false }
