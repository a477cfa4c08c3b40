package imagedir

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// countEmitter counts and releases readings.
type countEmitter struct {
	n    atomic.Int64
	done chan struct{}
	want int64
}

func (c *countEmitter) Emit(_ context.Context, r *drivers.Reading) drivers.Pressure {
	r.Release()
	if c.n.Add(1) == c.want {
		close(c.done)
	}
	return drivers.Pressure{Accepted: true}
}

func (c *countEmitter) Health(bool, error) {}

// BenchmarkDrain measures a backlog of files leaving the folder: read, sniff, state
// entry synced, emit, move to done. One op is one file.
func BenchmarkDrain(b *testing.B) {
	img := pngImage(b, 128, 128, 1) // about 16 KiB
	dir := b.TempDir()
	for i := range b.N {
		writeFile(b, filepath.Join(dir, fmt.Sprintf("f%07d.png", i)), img)
	}
	cfg := DefaultConfig()
	cfg.Dir, cfg.Settle = dir, config.Duration(0)
	d, err := New(drivers.Spec{Name: "bench", Log: slog.New(slog.DiscardHandler)}, cfg)
	if err != nil {
		b.Fatal(err)
	}
	e := &countEmitter{done: make(chan struct{}), want: int64(b.N)}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	go func() { res <- d.Run(ctx, e) }()
	select {
	case <-e.done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d files after a minute", e.n.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "files/s")
	b.StopTimer()
	cancel()
	if err := <-res; err != nil {
		b.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.png")); len(left) != 0 {
		b.Fatalf("%d files left", len(left))
	}
	os.RemoveAll(dir)
}
