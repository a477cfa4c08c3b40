package spool

import (
	"bytes"
	"log/slog"
	"testing"
	"time"
)

// resultPayload is about the size of one verdict as the publisher sends it.
var resultPayload = func() []byte {
	b := []byte(`{"v":1,"id":"cq2m9ke0f1m3b8r0q7s0","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",` +
		`"node":"jetson-07","inspection":"cap-presence","source":"cam-left","seq":1234567,` +
		`"captured_at":"2025-01-01T12:00:00.123456Z","verdict":"NG","label":"missing_cap",` +
		`"score":0.9731,"scores":{"ok":0.0269,"missing_cap":0.9731},` +
		`"model":{"name":"cap-presence","version":"3","sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},` +
		`"latency_ms":{"queue":0.4,"infer":3.2,"total":4.1}}`)
	return append(b, bytes.Repeat([]byte(" "), max(0, 600-len(b)))...)
}()

func benchAppend(b *testing.B, interval time.Duration) {
	s, err := Open(Options{
		Dir:           b.TempDir(),
		MaxBytes:      64 << 20, // wraps by dropping on long runs, as on a box in a long outage
		SegmentBytes:  8 << 20,
		FsyncInterval: interval,
		Log:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(int64(len(resultPayload)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := s.Append(resultPayload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkAppendFsyncEach: every Append waits for its fsync.
func BenchmarkAppendFsyncEach(b *testing.B) { benchAppend(b, 0) }

// BenchmarkAppendFsync10ms: the flusher syncs at most 10ms after an append.
func BenchmarkAppendFsync10ms(b *testing.B) { benchAppend(b, 10*time.Millisecond) }

// BenchmarkNextAck is the sender's side: read back from disk and ack.
func BenchmarkNextAck(b *testing.B) {
	s, err := Open(Options{
		Dir:           b.TempDir(),
		MaxBytes:      1 << 30,
		SegmentBytes:  8 << 20,
		FsyncInterval: time.Hour,
		Log:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const batch = 10000
	b.SetBytes(int64(len(resultPayload)))
	b.ReportAllocs()
	for b.Loop() {
		r, ok := s.Next()
		if !ok {
			b.StopTimer()
			for range batch {
				if err := s.Append(resultPayload); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			r, ok = s.Next()
		}
		if !ok {
			b.Fatal("no record")
		}
		if err := s.Ack(r.ID); err != nil {
			b.Fatal(err)
		}
	}
}
