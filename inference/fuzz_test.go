package inference

import (
	"bytes"
	"image"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/models"
)

// Camera drops are bytes from outside: whatever arrives, preprocessing returns an error
// or fills the tensor, and never panics.
func FuzzPreprocessEncoded(f *testing.F) {
	g := image.NewGray(image.Rect(0, 0, 40, 30))
	for i := range g.Pix {
		g.Pix[i] = byte(i)
	}
	var pb, jb bytes.Buffer
	png.Encode(&pb, g)
	jpeg.Encode(&jb, image.NewRGBA(image.Rect(0, 0, 17, 9)), nil)
	f.Add(pb.Bytes(), true)
	f.Add(jb.Bytes(), false)
	f.Add([]byte("\x89PNG\r\n\x1a\n"), true)
	gray, err := NewPreprocessor(models.Preprocess{Width: 16, Height: 16, Layout: "NCHW", Color: "gray", Mean: []float32{0.5}, Std: []float32{0.25}})
	if err != nil {
		f.Fatal(err)
	}
	rgb, err := NewPreprocessor(models.Preprocess{Width: 8, Height: 8, Layout: "NCHW", Color: "bgr", Mean: []float32{0.5, 0.5, 0.5}, Std: []float32{0.2, 0.2, 0.2}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, isPNG bool) {
		format := drivers.FormatJPEG
		if isPNG {
			format = drivers.FormatPNG
		}
		img := &drivers.Image{Format: format, Data: data}
		_ = gray.Fill(make([]float32, gray.InputLen()), img)
		_ = rgb.Fill(make([]float32, rgb.InputLen()), img)
	})
}
