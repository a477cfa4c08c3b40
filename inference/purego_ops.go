package inference

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// pgValue is one tensor of the graph as planned for a single frame.
type pgValue struct {
	name  string
	shape []int // dim 0 is 1 for values that carry the frame
	// konst holds a value known at load: an initializer, a Constant, or an op whose
	// inputs are all known. Shared read-only by every frame.
	konst []float32
	// frame marks values computed from the model input, which must keep dim 0 as the
	// frame axis so that frames can run one at a time.
	frame bool
	// alias is the value whose buffer this one shares (Flatten); -1 for none.
	alias int
}

func (v *pgValue) size() int {
	n := 1
	for _, d := range v.shape {
		n *= d
	}
	return n
}

// pgStep computes one node's outputs from vals, which holds every value's data for one
// frame, indexed like plan.vals.
type pgStep func(vals [][]float32)

// plan is a compiled graph: the steps in order and the values they read and write.
type plan struct {
	vals   []pgValue
	steps  []pgStep
	input  int
	output int
}

// pgOperators are the operators the pure-Go backend runs: those of the bundled demo
// models. Adding one means adding its planner here and a check against ONNX Runtime in
// purego_ort_test.go.
var pgOperators = map[string]func(p *planner, n *onnxNode) error{
	"Add":               planBinary(func(a, b float32) float32 { return a + b }),
	"Sub":               planBinary(func(a, b float32) float32 { return a - b }),
	"Mul":               planBinary(func(a, b float32) float32 { return a * b }),
	"Div":               planBinary(func(a, b float32) float32 { return a / b }),
	"Pow":               planBinary(func(a, b float32) float32 { return float32(math.Pow(float64(a), float64(b))) }),
	"Relu":              planUnary(func(x float32) float32 { return max(x, 0) }),
	"Tanh":              planUnary(func(x float32) float32 { return float32(math.Tanh(float64(x))) }),
	"Log":               planUnary(func(x float32) float32 { return float32(math.Log(float64(x))) }),
	"Clip":              planClip,
	"Constant":          planConstant,
	"Conv":              planConv,
	"MaxPool":           planMaxPool,
	"GlobalAveragePool": planGlobalAveragePool,
	"Concat":            planConcat,
	"Flatten":           planFlatten,
	"Gemm":              planGemm,
	"ReduceMean":        planReduceMean,
}

// PureGoOperators lists the ONNX operators the pure-Go backend runs, sorted.
func PureGoOperators() []string {
	ops := make([]string, 0, len(pgOperators))
	for op := range pgOperators {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// The default-domain opsets whose semantics the operators above implement: Clip takes
// its bounds as inputs from opset 11, ReduceMean takes its axes as an input from 18.
const (
	pgMinOpset = 11
	pgMaxOpset = 17
)

type planner struct {
	vals   []pgValue
	byName map[string]int
	steps  []pgStep
}

func (p *planner) add(v pgValue) int {
	p.vals = append(p.vals, v)
	p.byName[v.name] = len(p.vals) - 1
	return len(p.vals) - 1
}

// in returns the value index of node input i; ok is false for an absent optional input.
func (p *planner) in(n *onnxNode, i int) (idx int, ok bool, err error) {
	if i >= len(n.inputs) || n.inputs[i] == "" {
		return -1, false, nil
	}
	idx, ok = p.byName[n.inputs[i]]
	if !ok {
		return -1, false, fmt.Errorf("input %q is not produced by any earlier node, initializer or graph input", n.inputs[i])
	}
	return idx, true, nil
}

func (p *planner) need(n *onnxNode, i int) (int, error) {
	idx, ok, err := p.in(n, i)
	if err != nil {
		return -1, err
	}
	if !ok {
		return -1, fmt.Errorf("input %d is required", i)
	}
	return idx, nil
}

// out registers a node's single output and its step. If no input carries the frame,
// the step runs now and the output becomes a constant.
func (p *planner) out(n *onnxNode, shape []int, frame bool, step pgStep) error {
	if len(n.outputs) < 1 || n.outputs[0] == "" {
		return errors.New("no output")
	}
	if err := checkShape(shape); err != nil {
		return err
	}
	for _, o := range n.outputs[1:] {
		if o != "" {
			return fmt.Errorf("optional output %q is not supported", o)
		}
	}
	if frame && (len(shape) == 0 || shape[0] != 1) {
		return fmt.Errorf("output shape %v mixes frames of a batch; the pure-Go backend runs each frame on its own and needs dim 0 to stay the batch", shape)
	}
	v := pgValue{name: n.outputs[0], shape: shape, frame: frame, alias: -1}
	if !frame {
		vals := make([][]float32, len(p.vals)+1)
		for i := range p.vals {
			vals[i] = p.vals[i].konst
		}
		vals[len(p.vals)] = make([]float32, v.size())
		step(vals)
		v.konst = vals[len(p.vals)]
		p.add(v)
		return nil
	}
	p.add(v)
	p.steps = append(p.steps, step)
	return nil
}

// checkShape refuses a planned tensor too large for an edge box's memory, so a corrupt
// or hostile model fails at load instead of exhausting memory.
func checkShape(shape []int) error {
	n := 1
	for _, d := range shape {
		if d < 0 || (d > 0 && n > maxElems/d) {
			return fmt.Errorf("tensor of shape %v exceeds %d elements", shape, maxElems)
		}
		n *= d
	}
	return nil
}

func attr(n *onnxNode, name string) *onnxAttr {
	for i := range n.attrs {
		if n.attrs[i].name == name {
			return &n.attrs[i]
		}
	}
	return nil
}

func attrInt(n *onnxNode, name string, def int64) int64 {
	if a := attr(n, name); a != nil && a.hasI {
		return a.i
	}
	return def
}

func attrFloat(n *onnxNode, name string, def float32) float32 {
	if a := attr(n, name); a != nil && a.hasF {
		return a.f
	}
	return def
}

func attrInts(n *onnxNode, name string, def []int64) []int64 {
	if a := attr(n, name); a != nil && a.ints != nil {
		return a.ints
	}
	return def
}

// normAxis turns a possibly negative axis into 0..rank-1.
func normAxis(axis int64, rank int) (int, error) {
	if axis < -int64(rank) || axis >= int64(rank) {
		return 0, fmt.Errorf("axis %d is out of range for rank %d", axis, rank)
	}
	if axis < 0 {
		axis += int64(rank)
	}
	return int(axis), nil
}

func planUnary(f func(float32) float32) func(p *planner, n *onnxNode) error {
	return func(p *planner, n *onnxNode) error {
		x, err := p.need(n, 0)
		if err != nil {
			return err
		}
		xv := p.vals[x]
		o := len(p.vals)
		return p.out(n, slices.Clone(xv.shape), xv.frame, func(vals [][]float32) {
			src, dst := vals[x], vals[o]
			dst = dst[:len(src)]
			for i, v := range src {
				dst[i] = f(v)
			}
		})
	}
}

func planClip(p *planner, n *onnxNode) error {
	x, err := p.need(n, 0)
	if err != nil {
		return err
	}
	lo, hi := float32(math.Inf(-1)), float32(math.Inf(1))
	for i, bound := range []*float32{&lo, &hi} {
		idx, ok, err := p.in(n, i+1)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		v := p.vals[idx]
		if v.konst == nil || len(v.konst) != 1 {
			return fmt.Errorf("bound %q must be a constant scalar", v.name)
		}
		*bound = v.konst[0]
	}
	xv := p.vals[x]
	o := len(p.vals)
	return p.out(n, slices.Clone(xv.shape), xv.frame, func(vals [][]float32) {
		src, dst := vals[x], vals[o]
		dst = dst[:len(src)]
		for i, v := range src {
			dst[i] = min(max(v, lo), hi)
		}
	})
}

func planConstant(p *planner, n *onnxNode) error {
	a := attr(n, "value")
	if a == nil || !a.hasT {
		return errors.New("only the value attribute (a tensor) is supported")
	}
	t := *a.t
	if t.dataType == onnxInt64 && t.raw == nil {
		// Exponents and bounds are sometimes written as int64: exact as float32
		// below 2^24.
		t.f, t.dataType = make([]float32, len(t.i)), onnxFloat
		for i, v := range t.i {
			if v > 1<<24 || v < -(1<<24) {
				return fmt.Errorf("int64 constant %d does not fit float32 exactly", v)
			}
			t.f[i] = float32(v)
		}
	}
	data, err := t.floats()
	if err != nil {
		return err
	}
	shape := make([]int, len(t.dims))
	for i, d := range t.dims {
		shape[i] = int(d)
	}
	if len(n.outputs) != 1 {
		return errors.New("want one output")
	}
	p.add(pgValue{name: n.outputs[0], shape: shape, konst: data, alias: -1})
	return nil
}

// broadcastShape is numpy's multidirectional broadcast of a and b.
func broadcastShape(a, b []int) ([]int, error) {
	r := max(len(a), len(b))
	out := make([]int, r)
	for i := range r {
		da, db := 1, 1
		if j := i - (r - len(a)); j >= 0 {
			da = a[j]
		}
		if j := i - (r - len(b)); j >= 0 {
			db = b[j]
		}
		switch {
		case da == db || db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", a, b)
		}
	}
	return out, nil
}

// broadcastIndex maps every element of out to the element of in that broadcasts onto
// it. Built once at load, it makes a run of a binary op one indexed loop.
func broadcastIndex(in, out []int) []int32 {
	total := 1
	for _, d := range out {
		total *= d
	}
	strides := make([]int, len(out))
	s := 1
	for i := len(in) - 1; i >= 0; i-- {
		j := i + len(out) - len(in)
		if in[i] != 1 {
			strides[j] = s
		}
		s *= in[i]
	}
	idx := make([]int32, total)
	pos := make([]int, len(out))
	for k := range idx {
		off := 0
		for d, p := range pos {
			off += p * strides[d]
		}
		idx[k] = int32(off)
		for d := len(pos) - 1; d >= 0; d-- {
			if pos[d]++; pos[d] < out[d] {
				break
			}
			pos[d] = 0
		}
	}
	return idx
}

func planBinary(f func(a, b float32) float32) func(p *planner, n *onnxNode) error {
	return func(p *planner, n *onnxNode) error {
		a, err := p.need(n, 0)
		if err != nil {
			return err
		}
		b, err := p.need(n, 1)
		if err != nil {
			return err
		}
		av, bv := p.vals[a], p.vals[b]
		shape, err := broadcastShape(av.shape, bv.shape)
		if err != nil {
			return err
		}
		if err := checkShape(shape); err != nil {
			return err
		}
		o := len(p.vals)
		frame := av.frame || bv.frame
		if slices.Equal(av.shape, shape) && len(bv.konst) == 1 {
			c := bv.konst[0]
			return p.out(n, shape, frame, func(vals [][]float32) {
				src, dst := vals[a], vals[o]
				dst = dst[:len(src)]
				for i, x := range src {
					dst[i] = f(x, c)
				}
			})
		}
		ia, ib := broadcastIndex(av.shape, shape), broadcastIndex(bv.shape, shape)
		return p.out(n, shape, frame, func(vals [][]float32) {
			x, y, dst := vals[a], vals[b], vals[o]
			dst = dst[:len(ia)]
			for i := range dst {
				dst[i] = f(x[ia[i]], y[ib[i]])
			}
		})
	}
}

// window holds the attributes Conv and MaxPool share for a 2-D window of size
// kh x kw: pads (top, left, bottom, right), strides, dilations.
type window struct {
	kh, kw, sh, sw, dh, dw, pt, pl, pb, pr int
}

func readWindow(n *onnxNode, kh, kw int) (window, error) {
	w := window{kh: kh, kw: kw, sh: 1, sw: 1, dh: 1, dw: 1}
	if a := attr(n, "auto_pad"); a != nil && len(a.s) > 0 && string(a.s) != "NOTSET" {
		return w, fmt.Errorf("auto_pad %q is not supported; export with explicit pads", a.s)
	}
	if s := attrInts(n, "strides", nil); s != nil {
		if len(s) != 2 {
			return w, fmt.Errorf("strides %v: want 2 values", s)
		}
		w.sh, w.sw = int(s[0]), int(s[1])
	}
	if d := attrInts(n, "dilations", nil); d != nil {
		if len(d) != 2 {
			return w, fmt.Errorf("dilations %v: want 2 values", d)
		}
		w.dh, w.dw = int(d[0]), int(d[1])
	}
	if pd := attrInts(n, "pads", nil); pd != nil {
		if len(pd) != 4 {
			return w, fmt.Errorf("pads %v: want 4 values", pd)
		}
		w.pt, w.pl, w.pb, w.pr = int(pd[0]), int(pd[1]), int(pd[2]), int(pd[3])
	}
	if min(w.sh, w.sw, w.dh, w.dw) < 1 || min(w.pt, w.pl, w.pb, w.pr) < 0 || min(w.kh, w.kw) < 1 {
		return w, fmt.Errorf("window %dx%d, strides %dx%d, dilations %dx%d, pads %d,%d,%d,%d: out of range",
			w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.pt, w.pl, w.pb, w.pr)
	}
	return w, nil
}

// outSize is the floor-mode output length of one spatial axis.
func (w window) outSize(in, k, s, d, p0, p1 int) int {
	return (in+p0+p1-d*(k-1)-1)/s + 1
}

func frameImage(v pgValue) (c, h, w int, err error) {
	if len(v.shape) != 4 || v.shape[0] != 1 {
		return 0, 0, 0, fmt.Errorf("input %q has shape %v, want a 2-D image batch [N,C,H,W]", v.name, v.shape)
	}
	return v.shape[1], v.shape[2], v.shape[3], nil
}

func planConv(p *planner, n *onnxNode) error {
	x, err := p.need(n, 0)
	if err != nil {
		return err
	}
	wi, err := p.need(n, 1)
	if err != nil {
		return err
	}
	bi, hasB, err := p.in(n, 2)
	if err != nil {
		return err
	}
	c, h, wd, err := frameImage(p.vals[x])
	if err != nil {
		return err
	}
	if !p.vals[x].frame {
		return fmt.Errorf("input %q is a constant; only convolutions of the model input are run", p.vals[x].name)
	}
	wv := p.vals[wi]
	if wv.konst == nil || len(wv.shape) != 4 {
		return fmt.Errorf("weights %q must be a constant [M,C,kH,kW] tensor, have shape %v", wv.name, wv.shape)
	}
	if g := attrInt(n, "group", 1); g != 1 {
		return fmt.Errorf("group %d is not supported (only 1)", g)
	}
	m, kc, kh, kw := wv.shape[0], wv.shape[1], wv.shape[2], wv.shape[3]
	if kc != c {
		return fmt.Errorf("weights %q have %d input channels, the input has %d", wv.name, kc, c)
	}
	if ks := attrInts(n, "kernel_shape", nil); ks != nil && (len(ks) != 2 || int(ks[0]) != kh || int(ks[1]) != kw) {
		return fmt.Errorf("kernel_shape %v does not match weights %v", ks, wv.shape)
	}
	win, err := readWindow(n, kh, kw)
	if err != nil {
		return err
	}
	var bias []float32
	if hasB {
		bv := p.vals[bi]
		if bv.konst == nil || len(bv.konst) != m {
			return fmt.Errorf("bias %q must be a constant of %d values, have shape %v", bv.name, m, bv.shape)
		}
		bias = bv.konst
	}
	oh := win.outSize(h, kh, win.sh, win.dh, win.pt, win.pb)
	ow := win.outSize(wd, kw, win.sw, win.dw, win.pl, win.pr)
	if oh < 1 || ow < 1 {
		return fmt.Errorf("window leaves no output for a %dx%d input", h, wd)
	}
	weights := wv.konst
	// Convolution as dot products: gather, for each output position, the K = C*kH*kW
	// input values its window reads into one contiguous row (zeros for padding), then
	// each output is the dot product of that row with an output channel's weights,
	// which are stored the same way. Two channels by two positions at a time keep four
	// sums in registers and load each weight and input once per two multiply-adds;
	// this is several times faster in Go than adding shifted planes.
	plane, k := oh*ow, c*kh*kw
	if err := checkShape([]int{plane, k}); err != nil {
		return err
	}
	cols := p.add(pgValue{name: n.outputs[0] + "\x00cols", shape: []int{plane * k}, frame: true, alias: -1})
	o := len(p.vals)
	return p.out(n, []int{1, m, oh, ow}, p.vals[x].frame, func(vals [][]float32) {
		in, out, col := vals[x], vals[o], vals[cols]
		gatherWindows(col, in, win, c, h, wd, oh, ow)
		oc := 0
		for ; oc+2 <= m; oc += 2 {
			w0, w1 := weights[oc*k:(oc+1)*k], weights[(oc+1)*k:(oc+2)*k]
			var b0, b1 float32
			if bias != nil {
				b0, b1 = bias[oc], bias[oc+1]
			}
			o0, o1 := out[oc*plane:(oc+1)*plane], out[(oc+1)*plane:(oc+2)*plane]
			q := 0
			for ; q+2 <= plane; q += 2 {
				x0, x1 := col[q*k:(q+1)*k], col[(q+1)*k:(q+2)*k]
				x1, w1 := x1[:len(x0)], w1[:len(x0)]
				w0 := w0[:len(x0)]
				var a00, a01, a10, a11 float32
				for i, v0 := range x0 {
					v1 := x1[i]
					a00 += w0[i] * v0
					a01 += w0[i] * v1
					a10 += w1[i] * v0
					a11 += w1[i] * v1
				}
				o0[q], o0[q+1], o1[q], o1[q+1] = a00+b0, a01+b0, a10+b1, a11+b1
			}
			for ; q < plane; q++ {
				o0[q] = dot(w0, col[q*k:(q+1)*k]) + b0
				o1[q] = dot(w1, col[q*k:(q+1)*k]) + b1
			}
		}
		for ; oc < m; oc++ {
			var b float32
			if bias != nil {
				b = bias[oc]
			}
			for q := range plane {
				out[oc*plane+q] = dot(weights[oc*k:(oc+1)*k], col[q*k:(q+1)*k]) + b
			}
		}
	})
}

func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s float32
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// gatherWindows writes, for each output position of an oh x ow output, the C*kH*kW
// input values its window reads, in the weights' (channel, row, column) order, with
// zeros where the window reads padding.
func gatherWindows(col, in []float32, win window, c, h, wd, oh, ow int) {
	k := c * win.kh * win.kw
	for oy := range oh {
		for ox := range ow {
			dst := col[(oy*ow+ox)*k : (oy*ow+ox+1)*k]
			j := 0
			for ic := range c {
				src := in[ic*h*wd : (ic+1)*h*wd]
				for ky := range win.kh {
					iy := oy*win.sh - win.pt + ky*win.dh
					if iy < 0 || iy >= h {
						clear(dst[j : j+win.kw])
						j += win.kw
						continue
					}
					line := src[iy*wd : (iy+1)*wd]
					for kx := range win.kw {
						ix := ox*win.sw - win.pl + kx*win.dw
						if ix < 0 || ix >= wd {
							dst[j] = 0
						} else {
							dst[j] = line[ix]
						}
						j++
					}
				}
			}
		}
	}
}

func planMaxPool(p *planner, n *onnxNode) error {
	x, err := p.need(n, 0)
	if err != nil {
		return err
	}
	c, h, wd, err := frameImage(p.vals[x])
	if err != nil {
		return err
	}
	ks := attrInts(n, "kernel_shape", nil)
	if len(ks) != 2 {
		return fmt.Errorf("kernel_shape %v: want 2 values", ks)
	}
	if cm := attrInt(n, "ceil_mode", 0); cm != 0 {
		return fmt.Errorf("ceil_mode %d is not supported (only 0)", cm)
	}
	if so := attrInt(n, "storage_order", 0); so != 0 {
		return fmt.Errorf("storage_order %d is not supported (only 0)", so)
	}
	win, err := readWindow(n, int(ks[0]), int(ks[1]))
	if err != nil {
		return err
	}
	oh := win.outSize(h, win.kh, win.sh, win.dh, win.pt, win.pb)
	ow := win.outSize(wd, win.kw, win.sw, win.dw, win.pl, win.pr)
	if oh < 1 || ow < 1 {
		return fmt.Errorf("window leaves no output for a %dx%d input", h, wd)
	}
	o := len(p.vals)
	// Padding never wins a max, so positions outside the input are skipped.
	return p.out(n, []int{1, c, oh, ow}, p.vals[x].frame, func(vals [][]float32) {
		in, out := vals[x], vals[o]
		for ch := range c {
			src := in[ch*h*wd : (ch+1)*h*wd]
			dst := out[ch*oh*ow : (ch+1)*oh*ow]
			for oy := range oh {
				for ox := range ow {
					best := float32(math.Inf(-1))
					for ky := range win.kh {
						iy := oy*win.sh - win.pt + ky*win.dh
						if iy < 0 || iy >= h {
							continue
						}
						for kx := range win.kw {
							ix := ox*win.sw - win.pl + kx*win.dw
							if ix < 0 || ix >= wd {
								continue
							}
							best = max(best, src[iy*wd+ix])
						}
					}
					dst[oy*ow+ox] = best
				}
			}
		}
	})
}

func planGlobalAveragePool(p *planner, n *onnxNode) error {
	x, err := p.need(n, 0)
	if err != nil {
		return err
	}
	c, h, wd, err := frameImage(p.vals[x])
	if err != nil {
		return err
	}
	o := len(p.vals)
	return p.out(n, []int{1, c, 1, 1}, p.vals[x].frame, func(vals [][]float32) {
		in, out := vals[x], vals[o]
		for ch := range c {
			var s float32
			for _, v := range in[ch*h*wd : (ch+1)*h*wd] {
				s += v
			}
			out[ch] = s / float32(h*wd)
		}
	})
}

func planConcat(p *planner, n *onnxNode) error {
	if len(n.inputs) == 0 {
		return errors.New("no inputs")
	}
	first, err := p.need(n, 0)
	if err != nil {
		return err
	}
	rank := len(p.vals[first].shape)
	a := attr(n, "axis")
	if a == nil || !a.hasI {
		return errors.New("attribute axis is required")
	}
	axis, err := normAxis(a.i, rank)
	if err != nil {
		return err
	}
	shape := slices.Clone(p.vals[first].shape)
	shape[axis] = 0
	idx := make([]int, len(n.inputs))
	frame := false
	for i := range n.inputs {
		if idx[i], err = p.need(n, i); err != nil {
			return err
		}
		v := p.vals[idx[i]]
		frame = frame || v.frame
		if len(v.shape) != rank {
			return fmt.Errorf("input %q has rank %d, input %q has %d", v.name, len(v.shape), p.vals[first].name, rank)
		}
		for d := range rank {
			if d != axis && v.shape[d] != shape[d] {
				return fmt.Errorf("input %q has shape %v, input %q has %v: they differ outside axis %d", v.name, v.shape, p.vals[first].name, p.vals[first].shape, axis)
			}
		}
		shape[axis] += v.shape[axis]
	}
	outer := 1
	for _, d := range shape[:axis] {
		outer *= d
	}
	chunks := make([]int, len(idx)) // elements each input adds per outer step
	for i, vi := range idx {
		chunks[i] = p.vals[vi].size() / outer
	}
	o := len(p.vals)
	return p.out(n, shape, frame, func(vals [][]float32) {
		dst := vals[o]
		pos := 0
		for k := range outer {
			for i, vi := range idx {
				pos += copy(dst[pos:], vals[vi][k*chunks[i]:(k+1)*chunks[i]])
			}
		}
	})
}

func planFlatten(p *planner, n *onnxNode) error {
	x, err := p.need(n, 0)
	if err != nil {
		return err
	}
	xv := p.vals[x]
	axis := 0
	if len(xv.shape) > 0 {
		if axis, err = normAxis(attrInt(n, "axis", 1), len(xv.shape)+1); err != nil {
			return err
		}
	}
	outer := 1
	for _, d := range xv.shape[:axis] {
		outer *= d
	}
	shape := []int{outer, xv.size() / max(outer, 1)}
	if len(n.outputs) != 1 {
		return errors.New("want one output")
	}
	if xv.frame && outer != 1 {
		return fmt.Errorf("axis %d folds the batch into the features of shape %v", axis, xv.shape)
	}
	// The same data in a new shape: share the buffer instead of copying it.
	v := pgValue{name: n.outputs[0], shape: shape, frame: xv.frame, konst: xv.konst, alias: x}
	if xv.alias >= 0 {
		v.alias = xv.alias
	}
	if !xv.frame {
		v.alias = -1
	}
	p.add(v)
	return nil
}

func planGemm(p *planner, n *onnxNode) error {
	a, err := p.need(n, 0)
	if err != nil {
		return err
	}
	bi, err := p.need(n, 1)
	if err != nil {
		return err
	}
	ci, hasC, err := p.in(n, 2)
	if err != nil {
		return err
	}
	av, bv := p.vals[a], p.vals[bi]
	if len(av.shape) != 2 {
		return fmt.Errorf("input A %q has shape %v, want rank 2", av.name, av.shape)
	}
	if attrInt(n, "transA", 0) != 0 {
		return errors.New("transA 1 is not supported")
	}
	if bv.konst == nil || len(bv.shape) != 2 {
		return fmt.Errorf("input B %q must be a constant matrix, have shape %v", bv.name, bv.shape)
	}
	rows, k := av.shape[0], av.shape[1]
	transB := attrInt(n, "transB", 0) != 0
	bk, nn := bv.shape[0], bv.shape[1]
	if transB {
		bk, nn = nn, bk
	}
	if bk != k {
		return fmt.Errorf("input A %q is %v and input B %q is %v (transB %v): inner dimensions differ", av.name, av.shape, bv.name, bv.shape, transB)
	}
	// Keep B as [N,K] so each output is a dot product over two contiguous rows.
	bt := bv.konst
	if !transB {
		bt = make([]float32, nn*k)
		for r := range k {
			for col := range nn {
				bt[col*k+r] = bv.konst[r*nn+col]
			}
		}
	}
	alpha, beta := attrFloat(n, "alpha", 1), attrFloat(n, "beta", 1)
	var cIdx []int32
	var cData []float32
	if hasC {
		cv := p.vals[ci]
		if cv.konst == nil {
			return fmt.Errorf("input C %q must be a constant", cv.name)
		}
		if _, err := broadcastShape([]int{rows, nn}, cv.shape); err != nil || len(cv.shape) > 2 {
			return fmt.Errorf("input C %q has shape %v, which does not broadcast to [%d,%d]", cv.name, cv.shape, rows, nn)
		}
		cIdx, cData = broadcastIndex(cv.shape, []int{rows, nn}), cv.konst
	}
	o := len(p.vals)
	return p.out(n, []int{rows, nn}, av.frame, func(vals [][]float32) {
		x, dst := vals[a], vals[o]
		for r := range rows {
			xr := x[r*k : (r+1)*k]
			for col := range nn {
				w := bt[col*k : (col+1)*k]
				var s float32
				for i, v := range xr {
					s += v * w[i]
				}
				s *= alpha
				if cData != nil {
					s += beta * cData[cIdx[r*nn+col]]
				}
				dst[r*nn+col] = s
			}
		}
	})
}

func planReduceMean(p *planner, n *onnxNode) error {
	x, err := p.need(n, 0)
	if err != nil {
		return err
	}
	if len(n.inputs) > 1 {
		return errors.New("axes as an input (opset 18) is not supported")
	}
	xv := p.vals[x]
	rank := len(xv.shape)
	reduce := make([]bool, rank)
	axes := attrInts(n, "axes", nil)
	if axes == nil {
		for i := range reduce {
			reduce[i] = true
		}
	}
	for _, a := range axes {
		ax, err := normAxis(a, rank)
		if err != nil {
			return err
		}
		reduce[ax] = true
	}
	keep := attrInt(n, "keepdims", 1) != 0
	var shape, kept []int // kept: the output shape with reduced axes as 1
	count := 1
	for i, d := range xv.shape {
		if reduce[i] {
			count *= d
			kept = append(kept, 1)
			if keep {
				shape = append(shape, 1)
			}
			continue
		}
		kept = append(kept, d)
		shape = append(shape, d)
	}
	if xv.frame && reduce[0] && !keep {
		return fmt.Errorf("axes %v remove the batch dimension", axes)
	}
	// Each input element's output position, from the reduced shape broadcast back.
	total := xv.size()
	idx := make([]int32, total)
	strides := make([]int, rank)
	s := 1
	for i := rank - 1; i >= 0; i-- {
		if !reduce[i] {
			strides[i] = s
			s *= kept[i]
		}
	}
	pos := make([]int, rank)
	for k := range idx {
		off := 0
		for d, q := range pos {
			off += q * strides[d]
		}
		idx[k] = int32(off)
		for d := rank - 1; d >= 0; d-- {
			if pos[d]++; pos[d] < xv.shape[d] {
				break
			}
			pos[d] = 0
		}
	}
	o := len(p.vals)
	inv := 1 / float32(max(count, 1))
	return p.out(n, shape, xv.frame, func(vals [][]float32) {
		src, dst := vals[x], vals[o]
		clear(dst)
		for i, v := range src {
			dst[idx[i]] += v
		}
		for i := range dst {
			dst[i] *= inv
		}
	})
}

// compile turns the graph into a plan for frames of the given input shape (batch
// dimension first, set to 1 here).
func compile(m *onnxModel, inName string, inShape []int64, outName string) (*plan, error) {
	if m.opset < pgMinOpset || m.opset > pgMaxOpset {
		if m.opset < 0 {
			return nil, fmt.Errorf("no default-domain opset import; the pure-Go backend runs opsets %d..%d", pgMinOpset, pgMaxOpset)
		}
		return nil, fmt.Errorf("opset %d: the pure-Go backend runs opsets %d..%d", m.opset, pgMinOpset, pgMaxOpset)
	}
	p := &planner{byName: map[string]int{}}
	for i := range m.graph.inits {
		t := &m.graph.inits[i]
		data, err := t.floats()
		if err != nil {
			return nil, fmt.Errorf("initializer: %w", err)
		}
		shape := make([]int, len(t.dims))
		for j, d := range t.dims {
			shape[j] = int(d)
		}
		p.add(pgValue{name: t.name, shape: shape, konst: data, alias: -1})
	}
	shape := make([]int, len(inShape))
	for i, d := range inShape {
		shape[i] = int(d)
	}
	shape[0] = 1
	in := p.add(pgValue{name: inName, shape: shape, frame: true, alias: -1})
	for i := range m.graph.nodes {
		n := &m.graph.nodes[i]
		if n.domain != "" && n.domain != "ai.onnx" {
			return nil, fmt.Errorf("node %d %q: operator %s of domain %q is not supported", i, n.name, n.opType, n.domain)
		}
		planOp, ok := pgOperators[n.opType]
		if !ok {
			return nil, fmt.Errorf("node %d %q: operator %s is not supported by the pure-Go backend (it runs %s)",
				i, n.name, n.opType, strings.Join(PureGoOperators(), ", "))
		}
		if err := planOp(p, n); err != nil {
			return nil, fmt.Errorf("node %d %q (%s): %w", i, n.name, n.opType, err)
		}
	}
	out, ok := p.byName[outName]
	if !ok {
		return nil, fmt.Errorf("output %q is not produced by the graph", outName)
	}
	return &plan{vals: p.vals, steps: p.steps, input: in, output: out}, nil
}

// frameState is one worker's buffers for running the plan on a frame.
type frameState struct {
	vals [][]float32
}

func (pl *plan) newState() *frameState {
	st := &frameState{vals: make([][]float32, len(pl.vals))}
	for i, v := range pl.vals {
		switch {
		case v.konst != nil:
			st.vals[i] = v.konst
		case i == pl.input || v.alias >= 0:
		default:
			st.vals[i] = make([]float32, v.size())
		}
	}
	return st
}

// run infers one frame from in into out.
func (pl *plan) run(st *frameState, in, out []float32) {
	st.vals[pl.input] = in
	for i, v := range pl.vals {
		if v.alias >= 0 {
			st.vals[i] = st.vals[v.alias]
		}
	}
	for _, step := range pl.steps {
		step(st.vals)
	}
	copy(out, st.vals[pl.output])
}
