package inference

import (
	"testing"

	"github.com/edgedrun/edged/models/demo"
)

// FuzzPureGoModel feeds arbitrary bytes to the pure-Go backend's ONNX reader and
// planner, and runs one zero frame through any graph they accept: model files come
// from outside (pushed over the admin API or MQTT), so no byte string may panic.
func FuzzPureGoModel(f *testing.F) {
	for _, name := range demo.Names() {
		_, onnx, err := demo.LoadNamed(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(onnx)
	}
	f.Add([]byte{})
	f.Add([]byte{0x3a, 0x02, 0x0a, 0x00})             // graph { node {} }
	f.Add([]byte{0x42, 0x02, 0x10, 0x0d, 0x3a, 0x00}) // opset 13, empty graph
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseONNX(data)
		if err != nil || len(m.graph.inputs) == 0 || len(m.graph.outputs) == 0 {
			return
		}
		in := m.graph.inputs[0]
		if len(in.dims) == 0 {
			return
		}
		size := 1
		for _, d := range in.dims[1:] {
			if d <= 0 || d > 1<<12 {
				return
			}
			size *= int(d)
			if size > 1<<16 {
				return
			}
		}
		pl, err := compile(m, in.name, in.dims, m.graph.outputs[0].name)
		if err != nil {
			return
		}
		out := make([]float32, pl.vals[pl.output].size())
		pl.run(pl.newState(), make([]float32, size), out)
	})
}
