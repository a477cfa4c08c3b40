package models_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	"github.com/edgedrun/edged/models"
)

// onlyReader hides bytes.Reader's WriterTo, so that copies go the way a network body's
// do: through InstallStream's own buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// BenchmarkVerifyStream100MB: a pushed 100 MB model streamed into the repository
// (hashing, writing, fsync, rename) against hashing the same bytes already in memory,
// the least any verification costs. The ratio of their MB/s is the price of streaming
// to disk; B/op shows the model is never held in memory.
func BenchmarkVerifyStream100MB(b *testing.B) {
	const size = 100 << 20
	m, onnx := sized(b, "1.0.0", size, 's')

	b.Run("sha256-memory", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(size)
		for b.Loop() {
			sha256.Sum256(onnx)
		}
	})
	b.Run("sha256-stream", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(size)
		buf := make([]byte, 256<<10)
		for b.Loop() {
			h := sha256.New()
			if _, err := io.CopyBuffer(h, onlyReader{bytes.NewReader(onnx)}, buf); err != nil {
				b.Fatal(err)
			}
			h.Sum(nil)
		}
	})
	b.Run("install-stream", func(b *testing.B) {
		r, err := models.OpenRepository(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(size)
		i := 0
		for b.Loop() {
			v := *m
			v.Version = fmt.Sprintf("1.0.%d", i)
			i++
			if err := r.InstallStream(&v, onlyReader{bytes.NewReader(onnx)}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := r.Remove(v.Name, v.Version); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}
