// Package sniff tells the format of an encoded camera image from its bytes and checks
// that its header decodes, without decoding the pixels: drivers that take images from
// outside (a folder, an upload) refuse a corrupt file before it reaches the pipeline.
package sniff

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"

	"golang.org/x/image/bmp"

	"github.com/edgedrun/edged/drivers"
)

// Reasons an image is refused; each is also a metric label, so they stay few and fixed.
const (
	ReasonEmpty       = "empty"
	ReasonUnknown     = "unknown_format"
	ReasonUndecodable = "undecodable"
)

// Error is a refused image: Reason is one of the Reason constants, Err the detail.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8, 0xff}
	bmpMagic  = []byte("BM")
)

// Image reports the format of data from its content, whatever name it came under, and
// the size its header gives. Only the header is decoded, so a file truncated in its
// pixel data passes; the model's decoder reports that one.
func Image(data []byte) (drivers.ImageFormat, image.Config, error) {
	if len(data) == 0 {
		return "", image.Config{}, &Error{ReasonEmpty, errors.New("empty file")}
	}
	var (
		f      drivers.ImageFormat
		decode func([]byte) (image.Config, error)
	)
	switch {
	case bytes.HasPrefix(data, pngMagic):
		f, decode = drivers.FormatPNG, func(b []byte) (image.Config, error) { return png.DecodeConfig(bytes.NewReader(b)) }
	case bytes.HasPrefix(data, jpegMagic):
		f, decode = drivers.FormatJPEG, func(b []byte) (image.Config, error) { return jpeg.DecodeConfig(bytes.NewReader(b)) }
	case bytes.HasPrefix(data, bmpMagic):
		f, decode = drivers.FormatBMP, func(b []byte) (image.Config, error) { return bmp.DecodeConfig(bytes.NewReader(b)) }
	default:
		head := data[:min(len(data), 8)]
		return "", image.Config{}, &Error{ReasonUnknown, fmt.Errorf("not a PNG, JPEG or BMP image (starts with % x)", head)}
	}
	c, err := decode(data)
	if err != nil {
		return "", image.Config{}, &Error{ReasonUndecodable, fmt.Errorf("%s header does not decode: %w", f, err)}
	}
	if c.Width <= 0 || c.Height <= 0 {
		return "", image.Config{}, &Error{ReasonUndecodable, fmt.Errorf("%s header gives size %dx%d", f, c.Width, c.Height)}
	}
	return f, c, nil
}

// Reason returns the refusal reason of an error from Image, or ReasonUndecodable.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonUndecodable
}
