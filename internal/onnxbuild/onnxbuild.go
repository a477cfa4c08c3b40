// Package onnxbuild writes tiny, valid ONNX models whose outputs are known exactly, so
// tests of model loading, golden checks and hot-swap run real ONNX Runtime sessions
// without shipping model files: a linear classifier, one whose output is always NaN, and
// one that loads but fails at every run.
//
// The ONNX messages are encoded by hand with protowire (ONNX's onnx.proto, ir_version 8,
// opset 13): only the few messages and fields these graphs need are written, and no
// generated code is needed for them.
package onnxbuild

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Versions written into every model.
const (
	IRVersion = 8
	Opset     = 13
)

// ONNX TensorProto.DataType values used here.
const (
	typeFloat = 1
	typeInt64 = 7
)

// ONNX AttributeProto.AttributeType values used here.
const attrInt = 2

// Linear is a classifier of one frame of frameShape into classes scores:
// input inName [-1, frameShape...] -> Flatten(axis=1) -> MatMul(W) -> Add(B) -> output
// outName [-1, classes]. w is the [prod(frameShape), classes] weight matrix, row-major;
// b has classes values. LinearOutput computes the same in Go.
func Linear(inName string, frameShape []int64, outName string, classes int, w []float32, b []float32) ([]byte, error) {
	g, err := newLinear(inName, frameShape, outName, classes, w, b)
	if err != nil {
		return nil, fmt.Errorf("linear model: %w", err)
	}
	g.nodes = append(g.nodes,
		node("Flatten", []string{inName}, []string{"flat"}, intAttr("axis", 1)),
		node("MatMul", []string{"flat", "W"}, []string{"logits"}),
		node("Add", []string{"logits", "B"}, []string{outName}),
	)
	return g.model(), nil
}

// NaNOutput is Linear with a numeric fault: the square root of -1 is added to every
// score, so the output is NaN for any input while the shapes and the load are fine.
func NaNOutput(inName string, frameShape []int64, outName string, classes int, w []float32, b []float32) ([]byte, error) {
	g, err := newLinear(inName, frameShape, outName, classes, w, b)
	if err != nil {
		return nil, fmt.Errorf("nan model: %w", err)
	}
	neg := make([]float32, classes)
	for i := range neg {
		neg[i] = -1
	}
	g.inits = append(g.inits, floatTensor("Neg", []int64{int64(classes)}, neg))
	g.nodes = append(g.nodes,
		node("Flatten", []string{inName}, []string{"flat"}, intAttr("axis", 1)),
		node("MatMul", []string{"flat", "W"}, []string{"logits"}),
		node("Add", []string{"logits", "B"}, []string{"scores"}),
		node("Sqrt", []string{"Neg"}, []string{"nan"}),
		node("Add", []string{"scores", "nan"}, []string{outName}),
	)
	return g.model(), nil
}

// FailsAtRun loads with input [-1, frameShape...] and output [-1, classes] but every Run
// fails: it gathers feature indices past the end of the frame. Shape inference cannot see
// index values, so the fault shows only when the runtime reads them.
func FailsAtRun(inName string, frameShape []int64, outName string, classes int) ([]byte, error) {
	f, err := frameLen(frameShape)
	if err != nil {
		return nil, fmt.Errorf("failing model: %w", err)
	}
	w := make([]float32, f*classes)
	b := make([]float32, classes)
	g, err := newLinear(inName, frameShape, outName, classes, w, b)
	if err != nil {
		return nil, fmt.Errorf("failing model: %w", err)
	}
	idx := make([]int64, f)
	for i := range idx {
		idx[i] = int64(f + 7 + i)
	}
	g.inits = append(g.inits, int64Tensor("Idx", []int64{int64(f)}, idx))
	g.nodes = append(g.nodes,
		node("Flatten", []string{inName}, []string{"flat"}, intAttr("axis", 1)),
		node("Gather", []string{"flat", "Idx"}, []string{"picked"}, intAttr("axis", 1)),
		node("MatMul", []string{"picked", "W"}, []string{"logits"}),
		node("Add", []string{"logits", "B"}, []string{outName}),
	)
	return g.model(), nil
}

// LinearOutput computes Linear's output for the frames in x (each prod(frameShape)
// values, back to back): per frame, out[c] = b[c] + sum_i x[i]*w[i*classes+c]. The sums
// are in float64 then rounded, which is within float32 tolerance of the runtime.
func LinearOutput(x, w, b []float32, classes int) []float32 {
	if classes <= 0 || len(b) != classes || len(w)%classes != 0 {
		return nil
	}
	f := len(w) / classes
	if f == 0 || len(x)%f != 0 {
		return nil
	}
	frames := len(x) / f
	out := make([]float32, frames*classes)
	for n := range frames {
		xi := x[n*f : (n+1)*f]
		for c := range classes {
			s := float64(b[c])
			for i, v := range xi {
				s += float64(v) * float64(w[i*classes+c])
			}
			out[n*classes+c] = float32(s)
		}
	}
	return out
}

func frameLen(frameShape []int64) (int, error) {
	if len(frameShape) == 0 {
		return 0, errors.New("frame shape is empty")
	}
	f := int64(1)
	for i, d := range frameShape {
		if d <= 0 {
			return 0, fmt.Errorf("frame shape %v: dimension %d is %d, want positive", frameShape, i, d)
		}
		f *= d
		if f > math.MaxInt32 {
			return 0, fmt.Errorf("frame shape %v: more than %d values", frameShape, math.MaxInt32)
		}
	}
	return int(f), nil
}

// graph gathers what a model needs before it is encoded.
type graph struct {
	inName, outName string
	frameShape      []int64
	classes         int
	nodes           [][]byte
	inits           [][]byte
}

func newLinear(inName string, frameShape []int64, outName string, classes int, w, b []float32) (*graph, error) {
	f, err := frameLen(frameShape)
	if err != nil {
		return nil, err
	}
	switch {
	case inName == "" || outName == "":
		return nil, fmt.Errorf("input name %q and output name %q must not be empty", inName, outName)
	case inName == outName:
		return nil, fmt.Errorf("input and output are both named %q", inName)
	case classes <= 0:
		return nil, fmt.Errorf("classes %d is not positive", classes)
	case len(w) != f*classes:
		return nil, fmt.Errorf("weights: want %d (%d values per frame x %d classes), have %d", f*classes, f, classes, len(w))
	case len(b) != classes:
		return nil, fmt.Errorf("bias: want %d values, have %d", classes, len(b))
	}
	// The graph's own value names must not clash with the caller's.
	for _, n := range []string{"flat", "W", "B", "logits", "scores", "nan", "Neg", "Idx", "picked"} {
		if inName == n || outName == n {
			return nil, fmt.Errorf("name %q is used inside the graph", n)
		}
	}
	return &graph{
		inName: inName, outName: outName, frameShape: frameShape, classes: classes,
		inits: [][]byte{
			floatTensor("W", []int64{int64(f), int64(classes)}, w),
			floatTensor("B", []int64{int64(classes)}, b),
		},
	}, nil
}

// model encodes ModelProto with the graph.
func (g *graph) model() []byte {
	var gp []byte
	for _, n := range g.nodes {
		gp = appendMessage(gp, 1, n) // GraphProto.node
	}
	gp = appendString(gp, 2, "edged_test") // GraphProto.name
	for _, t := range g.inits {
		gp = appendMessage(gp, 5, t) // GraphProto.initializer
	}
	gp = appendMessage(gp, 11, valueInfo(g.inName, append([]int64{-1}, g.frameShape...))) // input
	gp = appendMessage(gp, 12, valueInfo(g.outName, []int64{-1, int64(g.classes)}))       // output

	var opset []byte
	opset = appendString(opset, 1, "") // OperatorSetIdProto.domain: the default ONNX domain
	opset = appendInt(opset, 2, Opset) // OperatorSetIdProto.version

	var m []byte
	m = appendInt(m, 1, IRVersion)            // ModelProto.ir_version
	m = appendString(m, 2, "edged onnxbuild") // ModelProto.producer_name
	m = appendMessage(m, 7, gp)               // ModelProto.graph
	m = appendMessage(m, 8, opset)            // ModelProto.opset_import
	return m
}

// node encodes NodeProto.
func node(op string, inputs, outputs []string, attrs ...[]byte) []byte {
	var b []byte
	for _, s := range inputs {
		b = appendString(b, 1, s)
	}
	for _, s := range outputs {
		b = appendString(b, 2, s)
	}
	b = appendString(b, 3, op+"_"+outputs[0]) // name
	b = appendString(b, 4, op)                // op_type
	for _, a := range attrs {
		b = appendMessage(b, 5, a)
	}
	return b
}

// intAttr encodes an INT AttributeProto.
func intAttr(name string, v int64) []byte {
	var b []byte
	b = appendString(b, 1, name)
	b = appendInt(b, 3, v)        // i
	b = appendInt(b, 20, attrInt) // type
	return b
}

// valueInfo encodes ValueInfoProto of a float tensor; a -1 dimension is the symbolic
// batch dimension.
func valueInfo(name string, shape []int64) []byte {
	var sh []byte
	for _, d := range shape {
		var dim []byte
		if d < 0 {
			dim = appendString(dim, 2, "batch") // Dimension.dim_param
		} else {
			dim = appendInt(dim, 1, d) // Dimension.dim_value
		}
		sh = appendMessage(sh, 1, dim) // TensorShapeProto.dim
	}
	var tt []byte
	tt = appendInt(tt, 1, typeFloat) // TypeProto.Tensor.elem_type
	tt = appendMessage(tt, 2, sh)    // TypeProto.Tensor.shape
	var tp []byte
	tp = appendMessage(tp, 1, tt) // TypeProto.tensor_type
	var b []byte
	b = appendString(b, 1, name)
	b = appendMessage(b, 2, tp)
	return b
}

// floatTensor encodes TensorProto with packed float_data.
func floatTensor(name string, dims []int64, v []float32) []byte {
	b := tensorHead(name, dims, typeFloat)
	packed := make([]byte, 0, 4*len(v))
	for _, x := range v {
		packed = protowire.AppendFixed32(packed, math.Float32bits(x))
	}
	return appendMessage(b, 4, packed) // float_data, packed
}

// int64Tensor encodes TensorProto with packed int64_data.
func int64Tensor(name string, dims []int64, v []int64) []byte {
	b := tensorHead(name, dims, typeInt64)
	var packed []byte
	for _, x := range v {
		packed = protowire.AppendVarint(packed, uint64(x))
	}
	return appendMessage(b, 7, packed) // int64_data, packed
}

func tensorHead(name string, dims []int64, dataType int64) []byte {
	var packed []byte
	for _, d := range dims {
		packed = protowire.AppendVarint(packed, uint64(d))
	}
	var b []byte
	b = appendMessage(b, 1, packed) // dims, packed
	b = appendInt(b, 2, dataType)   // data_type
	b = appendString(b, 8, name)    // name
	return b
}

func appendInt(b []byte, num protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessage(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}
