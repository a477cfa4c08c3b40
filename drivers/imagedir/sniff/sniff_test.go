package sniff

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"

	"golang.org/x/image/bmp"

	"github.com/edgedrun/edged/drivers"
)

func encode(t testing.TB, f drivers.ImageFormat) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 3, 2))
	img.Set(1, 1, color.Gray{200})
	var b bytes.Buffer
	var err error
	switch f {
	case drivers.FormatPNG:
		err = png.Encode(&b, img)
	case drivers.FormatJPEG:
		err = jpeg.Encode(&b, img, nil)
	case drivers.FormatBMP:
		err = bmp.Encode(&b, img)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestImage(t *testing.T) {
	for _, f := range []drivers.ImageFormat{drivers.FormatPNG, drivers.FormatJPEG, drivers.FormatBMP} {
		got, c, err := Image(encode(t, f))
		if err != nil || got != f || c.Width != 3 || c.Height != 2 {
			t.Errorf("%s: got %q %dx%d, %v", f, got, c.Width, c.Height, err)
		}
	}
	png := encode(t, drivers.FormatPNG)
	for _, tc := range []struct {
		name, reason string
		data         []byte
	}{
		{"empty", ReasonEmpty, nil},
		{"garbage", ReasonUnknown, []byte("hello, world")},
		{"truncated png header", ReasonUndecodable, png[:12]},
		{"bare jpeg magic", ReasonUndecodable, []byte{0xff, 0xd8, 0xff}},
		{"bare bmp magic", ReasonUndecodable, []byte("BM")},
	} {
		_, _, err := Image(tc.data)
		if err == nil || Reason(err) != tc.reason {
			t.Errorf("%s: err %v (reason %q), want reason %q", tc.name, err, Reason(err), tc.reason)
		}
	}
}

// FuzzImage feeds outside bytes to the sniffer: it must never panic, and what it
// accepts has a known format and a positive size.
func FuzzImage(f *testing.F) {
	for _, fm := range []drivers.ImageFormat{drivers.FormatPNG, drivers.FormatJPEG, drivers.FormatBMP} {
		f.Add(encode(f, fm))
	}
	f.Add([]byte("garbage that is no image"))
	f.Add([]byte{})
	f.Add([]byte("BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00\xff\xff\xff\x7f\x01\x00\x00\x00\x01\x00\x18\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fm, c, err := Image(data)
		if err != nil {
			if Reason(err) == "" {
				t.Fatalf("error without reason: %v", err)
			}
			return
		}
		if fm != drivers.FormatPNG && fm != drivers.FormatJPEG && fm != drivers.FormatBMP {
			t.Fatalf("accepted format %q", fm)
		}
		if c.Width <= 0 || c.Height <= 0 {
			t.Fatalf("accepted size %dx%d", c.Width, c.Height)
		}
	})
}
