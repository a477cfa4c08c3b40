package dpi_test

import (
	"bytes"
	"testing"

	"github.com/edgedrun/edged/dpi"
)

// benchFrames is the mix a proxy sees: the clean captures of real clients and servers
// (reads and writes of every table, exceptions, the serial-line functions) and the clean
// cases of the table, in both directions.
func benchFrames(b *testing.B) (adus [][]byte, dirs []dpi.Direction, size int) {
	for name, adu := range captureFiles(b) {
		adus = append(adus, adu)
		dirs = append(dirs, captureDir(name))
	}
	for _, c := range parseCases() {
		if c.want == "" {
			adus = append(adus, c.adu)
			dirs = append(dirs, c.dir)
		}
	}
	for _, a := range adus {
		size += len(a)
	}
	return adus, dirs, size
}

// BenchmarkParse parses the whole mix per op; ns/frame is the figure to quote.
func BenchmarkParse(b *testing.B) {
	adus, dirs, size := benchFrames(b)
	b.ReportAllocs()
	b.SetBytes(int64(size))
	for b.Loop() {
		for i, adu := range adus {
			if _, c := dpi.Parse(adu, dirs[i]); c != "" {
				b.Fatalf("% x: %q", adu, c)
			}
		}
	}
	frames := float64(b.N) * float64(len(adus))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/frames, "ns/frame")
	b.ReportMetric(frames/b.Elapsed().Seconds(), "frames/s")
}

// BenchmarkSplitterParse frames a stream of the mix arriving in 1460-byte segments (a
// TCP MSS) and parses each frame, as a proxy does per connection.
func BenchmarkSplitterParse(b *testing.B) {
	adus, _, _ := benchFrames(b)
	var reqs [][]byte
	for i, adu := range adus {
		if _, c := dpi.Parse(adu, dpi.Request); c == "" {
			reqs = append(reqs, adus[i])
		}
	}
	stream := bytes.Join(reqs, nil)
	var s dpi.Splitter
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		for p := stream; len(p) > 0; {
			n := s.Feed(p[:min(len(p), 1460)])
			p = p[n:]
			for {
				adu, ok, err := s.Next()
				if err != nil {
					b.Fatal(err)
				}
				if !ok {
					break
				}
				dpi.Parse(adu, dpi.Request)
			}
		}
	}
	frames := float64(b.N) * float64(len(reqs))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/frames, "ns/frame")
}
