//go:build cgo

package inference

// ortBuiltIn says whether this binary carries the ONNX Runtime backend, which needs cgo.
const ortBuiltIn = true

func openORTBackend(lib string) (Backend, error) {
	o, err := OpenORT(lib)
	if err != nil {
		return nil, err
	}
	return o, nil
}

func describeORT(b Backend) (BackendInfo, bool) {
	o, ok := b.(*ORT)
	if !ok {
		return BackendInfo{}, false
	}
	return BackendInfo{Name: o.Name(), Version: o.Version(), Library: o.Library()}, true
}
