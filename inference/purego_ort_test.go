//go:build cgo

package inference_test

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models"
)

// pgTolerance is the largest absolute difference allowed between the pure-Go backend's
// outputs and ONNX Runtime's: the two sum in different orders and ONNX Runtime's tanh
// and log are vectorised approximations, so bit equality is not expected.
const pgTolerance = 1e-4

// Every demo model gives the same outputs on the pure-Go backend as on ONNX Runtime,
// within pgTolerance, on the same inputs; with EDGED_PUREGO_WANT set, so do the
// outputs another architecture's pure-Go run recorded there.
func TestPureGoMatchesORT(t *testing.T) {
	o := orttest.Open(t)
	pg := inference.OpenPureGo()
	for _, f := range pgInputs(t) {
		want := runFrames(t, o, f, inference.SessionOptions{IntraOpThreads: 1})
		got := runFrames(t, pg, f, inference.SessionOptions{IntraOpThreads: 2})
		d, at := maxDiff(got, want)
		t.Logf("%s %s: %d frames, largest difference from ONNX Runtime %.3g", f.Name, f.Version, f.Frames, d)
		if d > pgTolerance {
			t.Errorf("%s: output %d is %v on the pure-Go backend, %v on ONNX Runtime (difference %g > %g)", f.Name, at, got[at], want[at], d, pgTolerance)
		}
	}
	path := os.Getenv(envPureGoWant)
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("$%s: %v", envPureGoWant, err)
	}
	var rec pgRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("$%s=%s: %v", envPureGoWant, path, err)
	}
	if len(rec.Models) == 0 {
		t.Fatalf("$%s=%s holds no models", envPureGoWant, path)
	}
	for _, f := range rec.Models {
		want := runFrames(t, o, f, inference.SessionOptions{IntraOpThreads: 1})
		d, at := maxDiff(f.Output, want)
		t.Logf("%s %s on %s (%s): %d frames, largest difference from ONNX Runtime %s on this machine %.3g",
			f.Name, f.Version, rec.GOARCH, rec.Backend, f.Frames, o.Version(), d)
		if d > pgTolerance {
			if at < 0 {
				t.Errorf("%s on %s: %d outputs recorded, ONNX Runtime gives %d", f.Name, rec.GOARCH, len(f.Output), len(want))
				continue
			}
			t.Errorf("%s on %s: output %d is %v, ONNX Runtime gives %v (difference %g > %g)", f.Name, rec.GOARCH, at, f.Output[at], want[at], d, pgTolerance)
		}
	}
}

func TestOpenAutoPicksORT(t *testing.T) {
	be, err := inference.Open(inference.BackendAuto, "")
	if err != nil {
		t.Fatalf("auto (run `make ort`): %v", err)
	}
	defer be.Close()
	if be.Name() != inference.BackendONNXRuntime {
		t.Errorf("auto with cgo on amd64 opened %s, want onnxruntime", be.Name())
	}
	if info := inference.Describe(be); info.Library.Path == "" || info.Version == "" {
		t.Errorf("describe onnxruntime: %+v", info)
	}
}

// opCase is a one-node graph: input "x" of shape in (batch first), the node, and
// output "y" of shape out. Constant inputs are initializers.
type opCase struct {
	name    string
	op      string
	in, out []int64
	consts  []opConst
	attrs   [][]byte
	// inputs are the node's input names in order ("" for an absent optional one);
	// nil means x followed by the constants.
	inputs []string
}

type opConst struct {
	name string
	dims []int64
	v    []float32
}

func (c opCase) model() []byte {
	var node []byte
	inputs := c.inputs
	if inputs == nil {
		inputs = []string{"x"}
		for _, k := range c.consts {
			inputs = append(inputs, k.name)
		}
	}
	for _, s := range inputs {
		node = pbString(node, 1, s)
	}
	node = pbString(node, 2, "y")
	node = pbString(node, 3, c.name)
	node = pbString(node, 4, c.op)
	for _, a := range c.attrs {
		node = pbMessage(node, 5, a)
	}
	var g []byte
	g = pbMessage(g, 1, node)
	g = pbString(g, 2, "op_test")
	for _, k := range c.consts {
		var t []byte
		var dims []byte
		for _, d := range k.dims {
			dims = protowire.AppendVarint(dims, uint64(d))
		}
		t = pbMessage(t, 1, dims)
		t = pbInt(t, 2, 1) // float
		t = pbString(t, 8, k.name)
		raw := make([]byte, 0, 4*len(k.v))
		for _, x := range k.v {
			raw = protowire.AppendFixed32(raw, math.Float32bits(x))
		}
		t = pbMessage(t, 9, raw) // raw_data, as exporters write weights
		g = pbMessage(g, 5, t)
	}
	g = pbMessage(g, 11, pbValueInfo("x", c.in))
	g = pbMessage(g, 12, pbValueInfo("y", c.out))
	var opset []byte
	opset = pbString(opset, 1, "")
	opset = pbInt(opset, 2, 13)
	var m []byte
	m = pbInt(m, 1, 7)
	m = pbMessage(m, 7, g)
	m = pbMessage(m, 8, opset)
	return m
}

func pbValueInfo(name string, shape []int64) []byte {
	var sh []byte
	for i, d := range shape {
		var dim []byte
		if i == 0 {
			dim = pbString(dim, 2, "batch")
		} else {
			dim = pbInt(dim, 1, d)
		}
		sh = pbMessage(sh, 1, dim)
	}
	var tt []byte
	tt = pbInt(tt, 1, 1)
	tt = pbMessage(tt, 2, sh)
	var b []byte
	b = pbString(b, 1, name)
	return pbMessage(b, 2, pbMessage(nil, 1, tt))
}

func intsAttr(name string, v ...int64) []byte {
	b := pbString(nil, 1, name)
	for _, x := range v {
		b = pbInt(b, 8, x)
	}
	return pbInt(b, 20, 7) // INTS
}

func intAttr(name string, v int64) []byte {
	return pbInt(pbInt(pbString(nil, 1, name), 3, v), 20, 2) // INT
}

func floatAttr(name string, v float32) []byte {
	b := pbString(nil, 1, name)
	b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, math.Float32bits(v))
	return pbInt(b, 20, 1) // FLOAT
}

func pbInt(b []byte, num protowire.Number, v int64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), uint64(v))
}

func pbString(b []byte, num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func pbMessage(b []byte, num protowire.Number, m []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), m)
}

func randomFloats(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func prod(dims []int64) int {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	return n
}

// Each operator, with the attribute settings the demo models do not exercise (strides,
// asymmetric pads, dilations, other axes, broadcasting both ways), gives ONNX Runtime's
// outputs on random inputs, for a batch of three frames.
func TestPureGoOperatorsMatchORT(t *testing.T) {
	o := orttest.Open(t)
	pg := inference.OpenPureGo()
	rng := rand.New(rand.NewPCG(3, 5))
	w := func(dims ...int64) opConst { return opConst{dims: dims, v: randomFloats(rng, prod(dims))} }
	named := func(name string, c opConst) opConst { c.name = name; return c }
	cases := []opCase{
		{name: "conv stride 2 asymmetric pads", op: "Conv", in: []int64{-1, 3, 9, 11}, out: []int64{-1, 4, 5, 6},
			consts: []opConst{named("w", w(4, 3, 3, 3)), named("b", w(4))},
			attrs:  [][]byte{intsAttr("strides", 2, 2), intsAttr("pads", 1, 2, 1, 1), intsAttr("kernel_shape", 3, 3)}},
		{name: "conv dilation 2 no bias", op: "Conv", in: []int64{-1, 2, 10, 10}, out: []int64{-1, 5, 6, 8},
			consts: []opConst{named("w", w(5, 2, 3, 2))},
			attrs:  [][]byte{intsAttr("dilations", 2, 2)}},
		{name: "conv 1x1", op: "Conv", in: []int64{-1, 6, 4, 4}, out: []int64{-1, 3, 4, 4},
			consts: []opConst{named("w", w(3, 6, 1, 1)), named("b", w(3))}},
		{name: "maxpool 3x3 stride 2 padded", op: "MaxPool", in: []int64{-1, 2, 9, 8}, out: []int64{-1, 2, 5, 4},
			attrs: [][]byte{intsAttr("kernel_shape", 3, 3), intsAttr("strides", 2, 2), intsAttr("pads", 1, 1, 1, 0)}},
		{name: "maxpool dilated", op: "MaxPool", in: []int64{-1, 1, 7, 7}, out: []int64{-1, 1, 5, 5},
			attrs: [][]byte{intsAttr("kernel_shape", 2, 2), intsAttr("dilations", 2, 2)}},
		{name: "global average pool", op: "GlobalAveragePool", in: []int64{-1, 3, 5, 7}, out: []int64{-1, 3, 1, 1}},
		{name: "concat axis -1", op: "Concat", in: []int64{-1, 2, 3}, out: []int64{-1, 2, 6},
			inputs: []string{"x", "x"}, attrs: [][]byte{intAttr("axis", -1)}},
		{name: "flatten axis 2", op: "Flatten", in: []int64{-1, 1, 3, 4}, out: []int64{-1, 12},
			attrs: [][]byte{intAttr("axis", 2)}},
		{name: "gemm no transB, row bias, alpha beta", op: "Gemm", in: []int64{-1, 5}, out: []int64{-1, 3},
			consts: []opConst{named("b", w(5, 3)), named("c", w(1, 3))},
			attrs:  [][]byte{floatAttr("alpha", 0.5), floatAttr("beta", 2)}},
		{name: "gemm transB scalar bias", op: "Gemm", in: []int64{-1, 4}, out: []int64{-1, 2},
			consts: []opConst{named("b", w(2, 4)), named("c", w())}, attrs: [][]byte{intAttr("transB", 1)}},
		{name: "add broadcast over rows", op: "Add", in: []int64{-1, 3, 4}, out: []int64{-1, 3, 4},
			consts: []opConst{named("c", w(3, 1))}},
		{name: "sub constant first", op: "Sub", in: []int64{-1, 4}, out: []int64{-1, 4},
			consts: []opConst{named("c", w(4))}, inputs: []string{"c", "x"}},
		{name: "mul scalar", op: "Mul", in: []int64{-1, 6}, out: []int64{-1, 6}, consts: []opConst{named("c", w())}},
		{name: "div by a vector", op: "Div", in: []int64{-1, 2, 3}, out: []int64{-1, 2, 3},
			consts: []opConst{named("c", opConst{dims: []int64{3}, v: []float32{2, -0.5, 4}})}},
		{name: "pow 3", op: "Pow", in: []int64{-1, 5}, out: []int64{-1, 5},
			consts: []opConst{named("c", opConst{dims: []int64{}, v: []float32{3}})}},
		{name: "clip both bounds", op: "Clip", in: []int64{-1, 8}, out: []int64{-1, 8},
			consts: []opConst{named("lo", opConst{v: []float32{-0.5}}), named("hi", opConst{v: []float32{0.7}})}},
		{name: "clip max only", op: "Clip", in: []int64{-1, 8}, out: []int64{-1, 8},
			consts: []opConst{named("hi", opConst{v: []float32{0.1}})}, inputs: []string{"x", "", "hi"}},
		{name: "tanh", op: "Tanh", in: []int64{-1, 3, 2}, out: []int64{-1, 3, 2}},
		{name: "relu", op: "Relu", in: []int64{-1, 9}, out: []int64{-1, 9}},
		{name: "reduce mean axes 1,3", op: "ReduceMean", in: []int64{-1, 3, 4, 5}, out: []int64{-1, 1, 4, 1},
			attrs: [][]byte{intsAttr("axes", 1, -1)}},
		{name: "reduce mean no keepdims", op: "ReduceMean", in: []int64{-1, 3, 4}, out: []int64{-1, 4},
			attrs: [][]byte{intsAttr("axes", 1), intAttr("keepdims", 0)}},
	}
	const frames = 3
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			onnx := c.model()
			m := &models.Manifest{Name: "op-" + c.op, Version: "1",
				Inputs:  []models.Tensor{{Name: "x", DType: "float32", Shape: append([]int64{-1}, c.in[1:]...)}},
				Outputs: []models.Tensor{{Name: "y", DType: "float32", Shape: append([]int64{-1}, c.out[1:]...)}}}
			in := randomFloats(rng, frames*prod(c.in[1:]))
			var outs [2][]float32
			for i, be := range []inference.Backend{o, pg} {
				s, err := be.Load(m, onnx, inference.SessionOptions{IntraOpThreads: 1})
				if err != nil {
					t.Fatalf("%s: %v", be.Name(), err)
				}
				b, err := s.NewBatch(frames)
				if err != nil {
					t.Fatal(err)
				}
				copy(b.Input, in)
				if err := s.Run(context.Background(), b); err != nil {
					t.Fatalf("%s: %v", be.Name(), err)
				}
				outs[i] = append([]float32(nil), b.Output...)
				b.Close()
				s.Close()
			}
			if d, at := maxDiff(outs[1], outs[0]); d > pgTolerance {
				t.Errorf("output %d: pure-Go %v, ONNX Runtime %v (difference %g)", at, outs[1][at], outs[0][at], d)
			}
		})
	}
}
