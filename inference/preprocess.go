package inference

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // camera drops are JPEG, PNG or BMP
	_ "image/png"
	"maps"
	"math"
	"slices"
	"strings"

	_ "golang.org/x/image/bmp"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/models"
)

// Preprocessor turns images into a model's input tensor as its manifest says: decode,
// area-resize, scale to 0..1, normalise per channel, NCHW float32. One Preprocessor
// serves one goroutine: it keeps its resize tables and decode buffer between frames.
type Preprocessor struct {
	p        models.Preprocess
	channels int
	scale    []float32 // per channel: 1/(255*std)
	offset   []float32 // per channel: -mean/std
	// Area-resize bins for the last source size, as adaptive average pooling lays them
	// out (start=floor(i*in/out), end=ceil((i+1)*in/out)), so edged feeds the model
	// exactly what it was trained on.
	srcW, srcH int
	xs, ys     []span
	colSum     []uint32  // per source column, for the output row being made
	invW       []float32 // 1/width of each output column's bin
	decoded    []byte    // planes of decoded PNG/JPEG images, reused
}

type span struct{ start, end int }

// MaxImagePixels bounds the size of an encoded image edged decodes (64 megapixels,
// above any line camera), so a damaged or hostile header cannot exhaust memory.
const MaxImagePixels = 64 << 20

// NewPreprocessor checks the manifest's preprocessing and builds a Preprocessor.
func NewPreprocessor(p models.Preprocess) (*Preprocessor, error) {
	pp := &Preprocessor{p: p}
	if p.Kind == models.PreprocessScalars {
		if len(p.Features) == 0 || len(p.Mean) != len(p.Features) || len(p.Std) != len(p.Features) {
			return nil, fmt.Errorf("preprocess: want features with one mean and std each, have %d features, %d mean, %d std", len(p.Features), len(p.Mean), len(p.Std))
		}
		for i, sd := range p.Std {
			if sd == 0 {
				return nil, fmt.Errorf("preprocess: std[%d] is 0", i)
			}
			pp.scale = append(pp.scale, 1/sd)
			pp.offset = append(pp.offset, -p.Mean[i]/sd)
		}
		return pp, nil
	}
	switch p.Color {
	case "gray":
		pp.channels = 1
	case "rgb", "bgr":
		pp.channels = 3
	default:
		return nil, fmt.Errorf("preprocess: color %q is not one of gray, rgb, bgr", p.Color)
	}
	if len(p.Mean) != pp.channels || len(p.Std) != pp.channels {
		return nil, fmt.Errorf("preprocess: want %d mean and std values, have %d and %d", pp.channels, len(p.Mean), len(p.Std))
	}
	if p.Width <= 0 || p.Height <= 0 {
		return nil, fmt.Errorf("preprocess: size %dx%d is not positive", p.Width, p.Height)
	}
	for c := 0; c < pp.channels; c++ {
		if p.Std[c] == 0 {
			return nil, fmt.Errorf("preprocess: std[%d] is 0", c)
		}
		pp.scale = append(pp.scale, 1/(255*p.Std[c]))
		pp.offset = append(pp.offset, -p.Mean[c]/p.Std[c])
	}
	return pp, nil
}

// InputLen is the number of float32 values one frame fills.
func (pp *Preprocessor) InputLen() int {
	if pp.p.Kind == models.PreprocessScalars {
		return len(pp.p.Features)
	}
	return pp.channels * pp.p.Width * pp.p.Height
}

// FillReading writes what the model takes from r (its image, or its named scalars)
// into dst, which must hold InputLen values.
func (pp *Preprocessor) FillReading(dst []float32, r *drivers.Reading) error {
	if pp.p.Kind != models.PreprocessScalars {
		return pp.Fill(dst, r.Image)
	}
	if len(dst) != len(pp.p.Features) {
		return fmt.Errorf("preprocess: tensor holds %d values, the model needs %d", len(dst), len(pp.p.Features))
	}
	for i, f := range pp.p.Features {
		v, ok := r.Scalars[f]
		if !ok {
			return fmt.Errorf("preprocess: reading has no value %q (has %s)", f, scalarNames(r.Scalars))
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("preprocess: value %q is %v", f, v)
		}
		// The explicit conversion rounds the product, so arm64 does not fuse the
		// multiply-add: a register value gives the same tensor on every box.
		dst[i] = float32(float32(v)*pp.scale[i]) + pp.offset[i]
	}
	return nil
}

// scalarNames lists a reading's value names, sorted, for an error message.
func scalarNames(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// Fill writes img into dst, which must hold InputLen values.
func (pp *Preprocessor) Fill(dst []float32, img *drivers.Image) error {
	if len(dst) != pp.InputLen() {
		return fmt.Errorf("preprocess: tensor holds %d values, the model needs %d", len(dst), pp.InputLen())
	}
	if pp.p.Kind == models.PreprocessScalars {
		return fmt.Errorf("preprocess: the model takes scalars, not an image")
	}
	if img == nil {
		return fmt.Errorf("preprocess: reading has no image")
	}
	var planes [3][]byte
	var w, h int
	switch img.Format {
	case drivers.FormatGray8:
		w, h = img.Width, img.Height
		if w <= 0 || h <= 0 || len(img.Data) != w*h {
			return fmt.Errorf("preprocess: gray8 image %dx%d has %d bytes, want %d", w, h, len(img.Data), w*h)
		}
		// A gray source feeds every channel of a colour model alike.
		planes = [3][]byte{img.Data, img.Data, img.Data}
	case drivers.FormatPNG, drivers.FormatJPEG, drivers.FormatBMP:
		var err error
		planes, w, h, err = pp.decode(img.Data)
		if err != nil {
			return fmt.Errorf("preprocess: decode %s image: %w", img.Format, err)
		}
	default:
		return fmt.Errorf("preprocess: image format %q is not one of gray8, png, jpeg, bmp", img.Format)
	}
	pp.tables(w, h)
	plane := pp.p.Width * pp.p.Height
	for c := 0; c < pp.channels; c++ {
		pp.resizePlane(dst[c*plane:(c+1)*plane], planes[c], w, pp.scale[c], pp.offset[c])
	}
	return nil
}

// resizePlane area-averages one w-wide plane into out, then normalises. Column sums of
// each output row's source rows are gathered first, so every source pixel is read once
// in order.
func (pp *Preprocessor) resizePlane(out []float32, pix []byte, w int, scale, offset float32) {
	ow := pp.p.Width
	if w == 2*ow && pp.srcH == 2*pp.p.Height {
		halve(out, pix, w, ow, scale/4, offset)
		return
	}
	col := pp.colSum[:w]
	for oy, ys := range pp.ys {
		clear(col)
		for y := ys.start; y < ys.end; y++ {
			row := pix[y*w : y*w+w]
			for x, v := range row {
				col[x] += uint32(v)
			}
		}
		rows := float32(ys.end - ys.start)
		o := out[oy*ow : oy*ow+ow]
		for ox, xs := range pp.xs {
			var sum uint32
			for _, v := range col[xs.start:xs.end] {
				sum += v
			}
			o[ox] = float32(sum)*pp.invW[ox]/rows*scale + offset
		}
	}
}

// halve is the 2x2 case of resizePlane, the common one (cameras at twice the model's
// input size), without the general case's bin tables.
func halve(out []float32, pix []byte, w, ow int, scale, offset float32) {
	for oy := 0; oy < len(out)/ow; oy++ {
		r0 := pix[2*oy*w : 2*oy*w+w]
		r1 := pix[(2*oy+1)*w : (2*oy+1)*w+w]
		o := out[oy*ow : oy*ow+ow]
		for ox := range o {
			x := 2 * ox
			sum := uint32(r0[x]) + uint32(r0[x+1]) + uint32(r1[x]) + uint32(r1[x+1])
			o[ox] = float32(sum)*scale + offset
		}
	}
}

func (pp *Preprocessor) tables(w, h int) {
	if w == pp.srcW && h == pp.srcH {
		return
	}
	pp.srcW, pp.srcH = w, h
	pp.xs = bins(pp.xs[:0], w, pp.p.Width)
	pp.ys = bins(pp.ys[:0], h, pp.p.Height)
	pp.colSum = make([]uint32, w)
	pp.invW = pp.invW[:0]
	for _, xs := range pp.xs {
		pp.invW = append(pp.invW, 1/float32(xs.end-xs.start))
	}
}

func bins(dst []span, in, out int) []span {
	for i := 0; i < out; i++ {
		start := i * in / out
		end := ((i+1)*in + out - 1) / out
		dst = append(dst, span{start, end})
	}
	return dst
}

// decode turns a PNG or JPEG into the channel planes the model wants: one luminance
// plane for gray, or R,G,B (B,G,R) planes for colour models.
func (pp *Preprocessor) decode(b []byte) ([3][]byte, int, int, error) {
	var planes [3][]byte
	// Check the header first: a few bytes can claim a size that would take gigabytes.
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return planes, 0, 0, err
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxImagePixels {
		return planes, 0, 0, fmt.Errorf("image is %dx%d, above the limit of %d pixels", cfg.Width, cfg.Height, MaxImagePixels)
	}
	m, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return planes, 0, 0, err
	}
	r := m.Bounds()
	w, h := r.Dx(), r.Dy()
	if w <= 0 || h <= 0 {
		return planes, 0, 0, fmt.Errorf("empty image %dx%d", w, h)
	}
	n := w * h
	if cap(pp.decoded) < pp.channels*n {
		pp.decoded = make([]byte, pp.channels*n)
	}
	buf := pp.decoded[:pp.channels*n]
	if pp.channels == 1 {
		g := buf
		if gm, ok := m.(*image.Gray); ok {
			for y := 0; y < h; y++ {
				copy(g[y*w:(y+1)*w], gm.Pix[y*gm.Stride:y*gm.Stride+w])
			}
		} else {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					g[y*w+x] = color.GrayModel.Convert(m.At(r.Min.X+x, r.Min.Y+y)).(color.Gray).Y
				}
			}
		}
		return [3][]byte{g, g, g}, w, h, nil
	}
	rp, gp, bp := buf[:n], buf[n:2*n], buf[2*n:]
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBAModel.Convert(m.At(r.Min.X+x, r.Min.Y+y)).(color.NRGBA)
			i := y*w + x
			rp[i], gp[i], bp[i] = c.R, c.G, c.B
		}
	}
	if pp.p.Color == "bgr" {
		return [3][]byte{bp, gp, rp}, w, h, nil
	}
	return [3][]byte{rp, gp, bp}, w, h, nil
}
