package httpupload

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
)

// BenchmarkUpload measures single-image uploads over loopback HTTP with keep-alive,
// without waiting for verdicts: read, sniff, emit, answer. One op is one upload.
func BenchmarkUpload(b *testing.B) {
	// Noise, so the image is as large as a camera's and not a few hundred bytes.
	g := image.NewGray(image.Rect(0, 0, 128, 128))
	for i := range g.Pix {
		g.Pix[i] = uint8(rand.Uint32())
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, g); err != nil {
		b.Fatal(err)
	}
	img := buf.Bytes()
	d, err := New(drivers.Spec{Name: "bench", Log: slog.New(slog.DiscardHandler)}, DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	e := &countingEmitter{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, e) }()
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(d)
	defer srv.Close()
	c := srv.Client()
	defer c.CloseIdleConnections()
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for b.Loop() {
		resp, err := c.Post(srv.URL, "image/png", bytes.NewReader(img))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "uploads/s")
}
