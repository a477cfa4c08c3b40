package httpupload

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/imagedir/sniff"
)

// countingEmitter takes every reading, checks it and releases it at once, so a long
// fuzz run keeps no memory.
type countingEmitter struct {
	n   atomic.Int64
	bad atomic.Int64
}

func (c *countingEmitter) Emit(_ context.Context, r *drivers.Reading) drivers.Pressure {
	c.n.Add(1)
	if f, _, err := sniff.Image(r.Image.Data); err != nil || f != r.Image.Format {
		c.bad.Add(1)
	}
	r.Release()
	return drivers.Pressure{Accepted: true}
}

func (c *countingEmitter) Health(bool, error) {}

// FuzzUpload sends outside bytes, under a content type, through the whole request
// path: single bodies and multipart batches. It must answer a known status, never
// panic, emit only images that sniff as what they claim, and no more than max_batch.
func FuzzUpload(f *testing.F) {
	img := pngImage(f, 2, 2)
	ct, body := multipartBody(f, []part{{filename: "a.png", data: img}, {field: "part_id", value: "x"}, {filename: "b.bin", data: []byte("junk")}})
	f.Add(ct, body.Bytes())
	f.Add("image/png", img)
	f.Add("image/bmp", []byte("BM"))
	f.Add("multipart/form-data; boundary=b", []byte("--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.png\"\r\n\r\n\x89PNG\r\n\x1a\n\r\n--b--\r\n"))
	f.Add("multipart/form-data; boundary=b", []byte("--b\r\nContent-Disposition: form-data; name=\"part_id\"\r\n\r\n"))
	f.Add("text/plain", []byte("hello"))

	cfg := DefaultConfig()
	cfg.MaxBytes, cfg.MaxBatch = 64<<10, 3
	d, err := New(drivers.Spec{Name: "fuzz", Log: slog.New(slog.DiscardHandler)}, cfg)
	if err != nil {
		f.Fatal(err)
	}
	e := &countingEmitter{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx, e); close(done) }()
	f.Cleanup(func() { cancel(); <-done })
	for {
		d.mu.Lock()
		up := d.run != nil
		d.mu.Unlock()
		if up {
			break
		}
		runtime.Gosched()
	}
	known := map[int]bool{200: true, 202: true, 207: true, 400: true, 413: true, 415: true}
	f.Fuzz(func(t *testing.T, ctype string, data []byte) {
		before := e.n.Load()
		req := httptest.NewRequest(http.MethodPost, "/v1/sources/fuzz/upload", bytes.NewReader(data))
		req.Header.Set("Content-Type", ctype)
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, req)
		if !known[rec.Code] {
			t.Fatalf("status %d for %q: %s", rec.Code, ctype, rec.Body)
		}
		if n := e.n.Load() - before; n > int64(cfg.MaxBatch) {
			t.Fatalf("%d readings from one request, max_batch %d", n, cfg.MaxBatch)
		}
		if e.bad.Load() != 0 {
			t.Fatal("emitted an image that does not sniff as its format")
		}
	})
}
