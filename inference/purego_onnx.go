package inference

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// The pure-Go backend reads ONNX files with protowire rather than generated protobuf
// code: the generated ONNX types that Go libraries ship (gonnx's among them) pull in
// gorgonia, which does not build for riscv64. Only the messages and fields an
// inference graph needs are decoded (onnx.proto field numbers in the comments);
// everything else, including training info and metadata, is skipped.

// onnxModel is the part of ModelProto the interpreter uses.
type onnxModel struct {
	irVersion int64
	opset     int64 // version of the default ("" or "ai.onnx") domain
	graph     onnxGraph
}

type onnxGraph struct {
	nodes   []onnxNode
	inits   []onnxTensor
	inputs  []onnxValueInfo
	outputs []onnxValueInfo
}

type onnxNode struct {
	opType, domain, name string
	inputs, outputs      []string
	attrs                []onnxAttr
}

type onnxAttr struct {
	name   string
	f      float32
	i      int64
	ints   []int64
	floats []float32
	t      *onnxTensor
	s      []byte
	// has records which of the fields above were present, since 0 is a valid value.
	hasF, hasI, hasT bool
}

// onnxTensor is a TensorProto with its data decoded: float32 into f, int64 into i.
type onnxTensor struct {
	name     string
	dims     []int64
	dataType int64
	f        []float32
	i        []int64
	raw      []byte
	external bool
}

type onnxValueInfo struct {
	name     string
	elemType int64
	dims     []int64 // -1 for a symbolic or unknown dimension
	hasShape bool
}

// ONNX TensorProto.DataType values the interpreter reads.
const (
	onnxFloat = 1
	onnxInt64 = 7
)

var errTruncated = errors.New("truncated or malformed protobuf")

// fields walks the top-level fields of one protobuf message, calling fn with each
// field's number, wire type and raw value (varint or fixed value in v, bytes in b).
func fields(msg []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return errTruncated
		}
		msg = msg[n:]
		var v uint64
		var b []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(msg)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(msg)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(msg)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(msg)
		default:
			n = protowire.ConsumeFieldValue(num, typ, msg)
		}
		if n < 0 {
			return errTruncated
		}
		msg = msg[n:]
		if err := fn(num, typ, v, b); err != nil {
			return err
		}
	}
	return nil
}

// appendInt64s decodes a repeated int64 field, packed or not.
func appendInt64s(dst []int64, typ protowire.Type, v uint64, b []byte) ([]int64, error) {
	if typ == protowire.VarintType {
		return append(dst, int64(v)), nil
	}
	if typ != protowire.BytesType {
		return dst, errTruncated
	}
	for len(b) > 0 {
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, errTruncated
		}
		dst = append(dst, int64(x))
		b = b[n:]
	}
	return dst, nil
}

// appendFloats decodes a repeated float field, packed or not.
func appendFloats(dst []float32, typ protowire.Type, v uint64, b []byte) ([]float32, error) {
	if typ == protowire.Fixed32Type {
		return append(dst, math.Float32frombits(uint32(v))), nil
	}
	if typ != protowire.BytesType || len(b)%4 != 0 {
		return dst, errTruncated
	}
	for ; len(b) >= 4; b = b[4:] {
		x, _ := protowire.ConsumeFixed32(b)
		dst = append(dst, math.Float32frombits(x))
	}
	return dst, nil
}

func parseONNX(data []byte) (*onnxModel, error) {
	m := &onnxModel{opset: -1}
	var graph []byte
	err := fields(data, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch {
		case num == 1 && typ == protowire.VarintType: // ir_version
			m.irVersion = int64(v)
		case num == 7 && typ == protowire.BytesType: // graph
			graph = b
		case num == 8 && typ == protowire.BytesType: // opset_import
			domain, version := "", int64(0)
			if err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
				switch {
				case num == 1 && typ == protowire.BytesType:
					domain = string(b)
				case num == 2 && typ == protowire.VarintType:
					version = int64(v)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("opset_import: %w", err)
			}
			if domain == "" || domain == "ai.onnx" {
				m.opset = version
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if graph == nil {
		return nil, errors.New("no graph in the model")
	}
	if err := parseGraph(graph, &m.graph); err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	return m, nil
}

func parseGraph(data []byte, g *onnxGraph) error {
	return fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // node
			n, err := parseNode(b)
			if err != nil {
				return fmt.Errorf("node %d: %w", len(g.nodes), err)
			}
			g.nodes = append(g.nodes, n)
		case 5: // initializer
			t, err := parseTensor(b)
			if err != nil {
				return fmt.Errorf("initializer %d: %w", len(g.inits), err)
			}
			g.inits = append(g.inits, t)
		case 11, 12: // input, output
			vi, err := parseValueInfo(b)
			if err != nil {
				return fmt.Errorf("value info: %w", err)
			}
			if num == 11 {
				g.inputs = append(g.inputs, vi)
			} else {
				g.outputs = append(g.outputs, vi)
			}
		}
		return nil
	})
}

func parseNode(data []byte) (onnxNode, error) {
	var n onnxNode
	err := fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			n.inputs = append(n.inputs, string(b))
		case 2:
			n.outputs = append(n.outputs, string(b))
		case 3:
			n.name = string(b)
		case 4:
			n.opType = string(b)
		case 5:
			a, err := parseAttr(b)
			if err != nil {
				return fmt.Errorf("attribute %d: %w", len(n.attrs), err)
			}
			n.attrs = append(n.attrs, a)
		case 7:
			n.domain = string(b)
		}
		return nil
	})
	return n, err
}

func parseAttr(data []byte) (onnxAttr, error) {
	var a onnxAttr
	err := fields(data, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		var err error
		switch {
		case num == 1 && typ == protowire.BytesType:
			a.name = string(b)
		case num == 2 && typ == protowire.Fixed32Type:
			a.f, a.hasF = math.Float32frombits(uint32(v)), true
		case num == 3 && typ == protowire.VarintType:
			a.i, a.hasI = int64(v), true
		case num == 4 && typ == protowire.BytesType:
			a.s = b
		case num == 5 && typ == protowire.BytesType:
			var t onnxTensor
			if t, err = parseTensor(b); err == nil {
				a.t, a.hasT = &t, true
			}
		case num == 7:
			a.floats, err = appendFloats(a.floats, typ, v, b)
		case num == 8:
			a.ints, err = appendInt64s(a.ints, typ, v, b)
		}
		return err
	})
	return a, err
}

func parseTensor(data []byte) (onnxTensor, error) {
	var t onnxTensor
	err := fields(data, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		var err error
		switch {
		case num == 1:
			t.dims, err = appendInt64s(t.dims, typ, v, b)
		case num == 2 && typ == protowire.VarintType:
			t.dataType = int64(v)
		case num == 4:
			t.f, err = appendFloats(t.f, typ, v, b)
		case num == 7:
			t.i, err = appendInt64s(t.i, typ, v, b)
		case num == 8 && typ == protowire.BytesType:
			t.name = string(b)
		case num == 9 && typ == protowire.BytesType:
			t.raw = b
		case num == 14 && typ == protowire.VarintType:
			t.external = v == 1 // data_location EXTERNAL
		}
		return err
	})
	if err != nil {
		return t, err
	}
	for _, d := range t.dims {
		if d < 0 {
			return t, fmt.Errorf("tensor %q: negative dimension in %v", t.name, t.dims)
		}
	}
	return t, nil
}

func parseValueInfo(data []byte) (onnxValueInfo, error) {
	var vi onnxValueInfo
	var tensorType []byte
	err := fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			vi.name = string(b)
		case 2: // TypeProto
			return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
				if num == 1 && typ == protowire.BytesType { // tensor_type
					tensorType = b
				}
				return nil
			})
		}
		return nil
	})
	if err != nil || tensorType == nil {
		return vi, err
	}
	err = fields(tensorType, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			vi.elemType = int64(v)
		case num == 2 && typ == protowire.BytesType: // TensorShapeProto
			vi.hasShape = true
			return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
				if num != 1 || typ != protowire.BytesType {
					return nil
				}
				d := int64(-1)
				if err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
					if num == 1 && typ == protowire.VarintType {
						d = int64(v)
					}
					return nil
				}); err != nil {
					return err
				}
				vi.dims = append(vi.dims, d)
				return nil
			})
		}
		return nil
	})
	return vi, err
}

// floats returns a float32 tensor's values from whichever field holds them.
func (t *onnxTensor) floats() ([]float32, error) {
	if t.external {
		return nil, fmt.Errorf("tensor %q: external data is not supported; embed the weights in the model file", t.name)
	}
	if t.dataType != onnxFloat {
		return nil, fmt.Errorf("tensor %q: element type %d, the pure-Go backend computes in float32 (type 1) only", t.name, t.dataType)
	}
	n, err := elemCount(t.dims)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.name, err)
	}
	var v []float32
	switch {
	case t.raw != nil:
		if len(t.raw) != 4*n {
			return nil, fmt.Errorf("tensor %q: %d bytes of raw data for dims %v (want %d)", t.name, len(t.raw), t.dims, 4*n)
		}
		v = make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(uint32(t.raw[4*i]) | uint32(t.raw[4*i+1])<<8 | uint32(t.raw[4*i+2])<<16 | uint32(t.raw[4*i+3])<<24)
		}
	default:
		if len(t.f) != n {
			return nil, fmt.Errorf("tensor %q: %d values for dims %v (want %d)", t.name, len(t.f), t.dims, n)
		}
		v = t.f
	}
	return v, nil
}

// maxElems bounds any one tensor (64 MiB of float32), so a corrupt dims field cannot
// ask for terabytes; the largest per-frame tensors of edge vision models are a few
// million elements.
const maxElems = 1 << 24

func elemCount(dims []int64) (int, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in %v", dims)
		}
		if d != 0 && n > maxElems/d {
			return 0, fmt.Errorf("dims %v exceed %d elements", dims, maxElems)
		}
		n *= d
	}
	return int(n), nil
}
