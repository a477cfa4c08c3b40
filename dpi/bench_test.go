package dpi

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// benchReads reads 10 holding registers b.N times through addr, one request at a time,
// and reports frames/s (requests answered per second) and the p50/p99 round trip.
func benchReads(b *testing.B, addr string) {
	c := goburrow(b, addr)
	for i := 0; i < 100; i++ { // warm up: connections, caches, the server's first answers
		if _, err := c.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := c.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	el := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/el.Seconds(), "frames/s")
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-us")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Nanoseconds())/1e3, "p99-us")
}

// BenchmarkDirect: a goburrow client straight to the libmodbus server.
func BenchmarkDirect(b *testing.B) {
	benchReads(b, startCServer(b))
}

// BenchmarkProxy: the same client and server with the proxy between them; the added
// latency is this one's p50/p99 less BenchmarkDirect's. The flood limit is lifted: the
// loop polls tens of thousands of times a second, far above any real poller.
func BenchmarkProxy(b *testing.B) {
	tp := startProxy(b, Config{Upstream: startCServer(b), Map: fullMap, Units: []uint8{1}, FloodRequests: 1 << 30})
	benchReads(b, tp.Addr())
	if a := tp.anomalies(b); len(a) != 0 {
		b.Fatalf("anomalies: %v", a)
	}
}

// BenchmarkClassifyRequest: the per-frame work of the request path without sockets;
// the clean path allocates nothing.
func BenchmarkClassifyRequest(b *testing.B) {
	p, err := New(Config{Name: "bench", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:502", Map: fullMap, Units: []uint8{1},
		FloodRequests: 1 << 30, Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	c := &conn{p: p, rule: p.rules.forClient(netip.MustParseAddr("127.0.0.1")),
		reqFlood: newWindow(p.cfg.FloodRequests, p.cfg.FloodWindow, now),
		excFlood: newWindow(p.cfg.FloodExceptions, p.cfg.FloodWindow, now)}
	req := adu(1, 1, pdu16(3, 0, 10)...)
	resp := adu(1, 1, append([]byte{3, 20}, make([]byte, 20)...)...)
	b.ReportAllocs()
	b.SetBytes(int64(len(req) + len(resp)))
	for i := 0; i < b.N; i++ {
		if c.request(req) != forward || c.response(resp) != forward {
			b.Fatal("clean frame not forwarded")
		}
	}
}

// BenchmarkAdded alternates one request straight to the libmodbus server and one
// through the proxy, so both see the same moment of a noisy machine, and reports the
// proxy's added p50/p99 (the difference of the percentiles) besides both sides'.
func BenchmarkAdded(b *testing.B) {
	srv := startCServer(b)
	tp := startProxy(b, Config{Upstream: srv, Map: fullMap, Units: []uint8{1}, FloodRequests: 1 << 30})
	direct, proxied := goburrow(b, srv), goburrow(b, tp.Addr())
	for i := 0; i < 100; i++ {
		if _, err := direct.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
		if _, err := proxied.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
	}
	dl := make([]time.Duration, 0, b.N)
	pl := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := direct.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := proxied.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
		dl, pl = append(dl, t1.Sub(t0)), append(pl, time.Since(t1))
	}
	b.StopTimer()
	slices.Sort(dl)
	slices.Sort(pl)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	p50, p99 := len(dl)/2, min(len(dl)-1, len(dl)*99/100)
	b.ReportMetric(us(dl[p50]), "direct-p50-us")
	b.ReportMetric(us(dl[p99]), "direct-p99-us")
	b.ReportMetric(us(pl[p50]), "proxy-p50-us")
	b.ReportMetric(us(pl[p99]), "proxy-p99-us")
	b.ReportMetric(us(pl[p50]-dl[p50]), "added-p50-us")
	b.ReportMetric(us(pl[p99]-dl[p99]), "added-p99-us")
}
