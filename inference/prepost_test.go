package inference

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/png"
	"math"
	"strings"
	"testing"

	"golang.org/x/image/bmp"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/models"
)

func grayPre(t *testing.T, w, h int) *Preprocessor {
	t.Helper()
	pp, err := NewPreprocessor(models.Preprocess{Width: w, Height: h, Layout: "NCHW", Color: "gray", Mean: []float32{0.5}, Std: []float32{0.25}})
	if err != nil {
		t.Fatal(err)
	}
	return pp
}

// The resize must match adaptive average pooling bin for bin: the demo model was trained
// on images pooled that way.
func TestAreaResizeMatchesAdaptivePooling(t *testing.T) {
	for _, tc := range []struct{ inW, inH, outW, outH int }{
		{128, 128, 64, 64}, {100, 70, 64, 64}, {64, 64, 64, 64}, {50, 30, 64, 64},
	} {
		pp := grayPre(t, tc.outW, tc.outH)
		src := make([]byte, tc.inW*tc.inH)
		for i := range src {
			src[i] = byte((i*7 + i/tc.inW*13) % 256)
		}
		dst := make([]float32, pp.InputLen())
		if err := pp.Fill(dst, &drivers.Image{Format: drivers.FormatGray8, Width: tc.inW, Height: tc.inH, Data: src}); err != nil {
			t.Fatal(err)
		}
		for oy := 0; oy < tc.outH; oy++ {
			y0, y1 := oy*tc.inH/tc.outH, int(math.Ceil(float64((oy+1)*tc.inH)/float64(tc.outH)))
			for ox := 0; ox < tc.outW; ox++ {
				x0, x1 := ox*tc.inW/tc.outW, int(math.Ceil(float64((ox+1)*tc.inW)/float64(tc.outW)))
				var sum float64
				for y := y0; y < y1; y++ {
					for x := x0; x < x1; x++ {
						sum += float64(src[y*tc.inW+x])
					}
				}
				want := (sum/float64((y1-y0)*(x1-x0))/255 - 0.5) / 0.25
				if got := dst[oy*tc.outW+ox]; math.Abs(float64(got)-want) > 1e-4 {
					t.Fatalf("%dx%d->%dx%d at (%d,%d): got %v want %v", tc.inW, tc.inH, tc.outW, tc.outH, ox, oy, got, want)
				}
			}
		}
	}
}

func TestPreprocessPNGEqualsRaw(t *testing.T) {
	g := image.NewGray(image.Rect(0, 0, 96, 80))
	for i := range g.Pix {
		g.Pix[i] = byte(i % 251)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, g); err != nil {
		t.Fatal(err)
	}
	pp := grayPre(t, 64, 64)
	raw, enc := make([]float32, pp.InputLen()), make([]float32, pp.InputLen())
	if err := pp.Fill(raw, &drivers.Image{Format: drivers.FormatGray8, Width: 96, Height: 80, Data: g.Pix}); err != nil {
		t.Fatal(err)
	}
	if err := pp.Fill(enc, &drivers.Image{Format: drivers.FormatPNG, Data: buf.Bytes()}); err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		if raw[i] != enc[i] {
			t.Fatalf("value %d: raw %v png %v", i, raw[i], enc[i])
		}
	}
	// Some AOI cameras drop BMP files.
	buf.Reset()
	if err := bmp.Encode(&buf, g); err != nil {
		t.Fatal(err)
	}
	if err := pp.Fill(enc, &drivers.Image{Format: drivers.FormatBMP, Data: buf.Bytes()}); err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		if raw[i] != enc[i] {
			t.Fatalf("value %d: raw %v bmp %v", i, raw[i], enc[i])
		}
	}
}

func TestPreprocessBadInput(t *testing.T) {
	pp := grayPre(t, 64, 64)
	dst := make([]float32, pp.InputLen())
	for _, tc := range []struct {
		img  *drivers.Image
		want string
	}{
		{nil, "no image"},
		{&drivers.Image{Format: drivers.FormatGray8, Width: 10, Height: 10, Data: make([]byte, 99)}, "has 99 bytes, want 100"},
		{&drivers.Image{Format: drivers.FormatPNG, Data: []byte("not a png")}, "decode png image"},
		{&drivers.Image{Format: "tiff", Data: []byte{1}}, `"tiff" is not one of`},
		{&drivers.Image{Format: drivers.FormatBMP, Data: []byte{1}}, "decode bmp image"},
		{&drivers.Image{Format: drivers.FormatPNG, Data: hugePNGHeader()}, "above the limit"},
	} {
		err := pp.Fill(dst, tc.img)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Fill: got %v, want an error containing %q", err, tc.want)
		}
	}
	if err := pp.Fill(make([]float32, 3), &drivers.Image{Format: drivers.FormatGray8, Width: 1, Height: 1, Data: []byte{0}}); err == nil {
		t.Error("Fill into a wrong-sized tensor: no error")
	}
}

func TestPostprocess(t *testing.T) {
	post, err := NewPostprocessor(models.Postprocess{Kind: "softmax", Labels: []string{"ok", "crack", "dark_spot"}, OKLabels: []string{"ok"}, Threshold: 0.5}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var v Verdict
	if err := post.Apply([]float32{5, 0, 0}, &v); err != nil {
		t.Fatal(err)
	}
	if v.Verdict != VerdictOK || v.Label != "ok" || v.Score < 0.98 {
		t.Errorf("confident ok: got %+v", v)
	}
	// Two defect labels together outweigh ok although neither alone does.
	if err := post.Apply([]float32{1, 0.8, 0.8}, &v); err != nil {
		t.Fatal(err)
	}
	if v.Verdict != VerdictNG || v.Label != "crack" {
		t.Errorf("split defect mass: got %+v", v)
	}
	var sum float32
	for _, s := range v.Scores {
		sum += s
	}
	if math.Abs(float64(sum-1)) > 1e-5 {
		t.Errorf("scores sum to %v", sum)
	}
	if err := post.Apply([]float32{1, 2}, &v); err == nil {
		t.Error("wrong logit count: no error")
	}
	if err := post.Apply([]float32{float32(math.NaN()), 0, 0}, &v); err == nil {
		t.Error("NaN logits: no error")
	}
	strict, _ := NewPostprocessor(models.Postprocess{Kind: "softmax", Labels: []string{"ok", "crack"}, OKLabels: []string{"ok"}, Threshold: 0.5}, 0.9)
	if err := strict.Apply([]float32{0, 1}, &v); err != nil || v.Verdict != VerdictOK {
		t.Errorf("threshold override 0.9 with p(crack)=0.73: got %+v %v", v, err)
	}
}

func BenchmarkPreprocessGray128(b *testing.B) {
	pp, _ := NewPreprocessor(models.Preprocess{Width: 64, Height: 64, Layout: "NCHW", Color: "gray", Mean: []float32{0.5}, Std: []float32{0.25}})
	img := &drivers.Image{Format: drivers.FormatGray8, Width: 128, Height: 128, Data: make([]byte, 128*128)}
	dst := make([]float32, pp.InputLen())
	b.ReportAllocs()
	b.SetBytes(int64(len(img.Data)))
	for b.Loop() {
		if err := pp.Fill(dst, img); err != nil {
			b.Fatal(err)
		}
	}
}

// hugePNGHeader is a PNG whose header claims 100000x100000 pixels.
func hugePNGHeader() []byte {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1)))
	b := buf.Bytes()
	// The IHDR chunk: type at 12..16, width and height (big-endian) at 16..24, its
	// CRC over type and data at 29..33.
	for _, off := range []int{16, 20} {
		binary.BigEndian.PutUint32(b[off:], 100000)
	}
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

func TestPreprocessScalars(t *testing.T) {
	pp, err := NewPreprocessor(models.Preprocess{Kind: models.PreprocessScalars, Features: []string{"rms", "temp"}, Mean: []float32{2, 60}, Std: []float32{0.5, 10}})
	if err != nil {
		t.Fatal(err)
	}
	if pp.InputLen() != 2 {
		t.Fatalf("InputLen %d, want 2", pp.InputLen())
	}
	dst := make([]float32, 2)
	r := &drivers.Reading{Scalars: map[string]float64{"temp": 75, "rms": 3, "extra": 1}}
	if err := pp.FillReading(dst, r); err != nil {
		t.Fatal(err)
	}
	if dst[0] != 2 || dst[1] != 1.5 {
		t.Errorf("filled %v, want [2 1.5]", dst)
	}
	for _, tc := range []struct {
		name string
		r    *drivers.Reading
		want string
	}{
		{"missing value", &drivers.Reading{Scalars: map[string]float64{"rms": 1, "speed": 2}}, `no value "temp" (has rms, speed)`},
		{"no values", &drivers.Reading{}, `no value "rms" (has none)`},
		{"NaN", &drivers.Reading{Scalars: map[string]float64{"rms": math.NaN(), "temp": 1}}, `value "rms" is NaN`},
		{"image", &drivers.Reading{Image: &drivers.Image{Format: drivers.FormatGray8, Width: 1, Height: 1, Data: []byte{1}}}, `no value "rms"`},
	} {
		if err := pp.FillReading(dst, tc.r); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one holding %q", tc.name, err, tc.want)
		}
	}
	if err := pp.Fill(dst, &drivers.Image{Format: drivers.FormatGray8, Width: 1, Height: 1, Data: []byte{1}}); err == nil {
		t.Error("a scalars model took an image")
	}
	if _, err := NewPreprocessor(models.Preprocess{Kind: models.PreprocessScalars, Features: []string{"a"}, Mean: []float32{0}, Std: []float32{0}}); err == nil {
		t.Error("std 0 accepted")
	}
}

func TestPostprocessScore(t *testing.T) {
	p := models.Postprocess{Kind: models.PostprocessScore, Labels: []string{"ok", "anomaly"}, OKLabels: []string{"ok"}, Threshold: 1.5}
	pp, err := NewPostprocessor(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := pp.Labels(); len(got) != 1 || got[0] != "anomaly" {
		t.Errorf("labels %v, want [anomaly]: the scores map holds the score under it", got)
	}
	var v Verdict
	for _, tc := range []struct {
		score   float32
		verdict string
		label   string
	}{{0.2, VerdictOK, "ok"}, {1.49, VerdictOK, "ok"}, {1.5, VerdictNG, "anomaly"}, {40, VerdictNG, "anomaly"}} {
		if err := pp.Apply([]float32{tc.score}, &v); err != nil {
			t.Fatal(err)
		}
		if v.Verdict != tc.verdict || v.Label != tc.label || v.Score != tc.score || len(v.Scores) != 1 || v.Scores[0] != tc.score {
			t.Errorf("score %v: %+v, want %s %s", tc.score, v, tc.verdict, tc.label)
		}
	}
	if err := pp.Apply([]float32{1, 2}, &v); err == nil {
		t.Error("two values from a score model: no error")
	}
	if err := pp.Apply([]float32{float32(math.NaN())}, &v); err == nil {
		t.Error("NaN score: no error")
	}
	// An inspection may override the threshold with any positive score.
	if pp, err := NewPostprocessor(p, 3); err != nil || pp.Threshold() != 3 {
		t.Errorf("override: %v, %v", pp, err)
	}
	p.Labels = []string{"ok", "crack", "dent"}
	if _, err := NewPostprocessor(p, 0); err == nil {
		t.Error("score model with three labels accepted")
	}
}
