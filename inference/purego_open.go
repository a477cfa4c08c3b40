package inference

import (
	"fmt"
	"runtime"
)

// Backend names, as the runtime.backend config key spells them.
const (
	BackendAuto        = "auto"
	BackendONNXRuntime = "onnxruntime"
	BackendPureGo      = "purego"
)

// Open opens the backend called name. "auto" picks ONNX Runtime where this binary
// was built with it (cgo) and ONNX Runtime ships a library for the architecture, and
// the pure-Go backend elsewhere (riscv64, builds without cgo). ortLibrary is
// runtime.ort_library, used only by ONNX Runtime.
func Open(name, ortLibrary string) (Backend, error) {
	switch name {
	case BackendAuto, "":
		if ortBuiltIn && runtime.GOARCH != "riscv64" {
			return openORTBackend(ortLibrary)
		}
		return OpenPureGo(), nil
	case BackendONNXRuntime:
		return openORTBackend(ortLibrary)
	case BackendPureGo:
		return OpenPureGo(), nil
	}
	return nil, fmt.Errorf("runtime.backend %q: unknown backend (want %s, %s or %s)", name, BackendAuto, BackendONNXRuntime, BackendPureGo)
}

// BackendInfo says which backend runs models and from what, for logs and /v1/status.
type BackendInfo struct {
	Name    string // "onnxruntime" or "purego"
	Version string // ONNX Runtime's version, or the interpreter's description
	// Library is the ONNX Runtime library in use and why it was chosen; zero for the
	// pure-Go backend.
	Library LibraryChoice
}

// Describe reports what b is without the caller naming backend types, so code that
// wires backends builds alike with cgo (ONNX Runtime present) and without.
func Describe(b Backend) BackendInfo {
	if info, ok := describeORT(b); ok {
		return info
	}
	if p, ok := b.(*PureGo); ok {
		return BackendInfo{Name: p.Name(), Version: p.Version()}
	}
	return BackendInfo{Name: b.Name()}
}
