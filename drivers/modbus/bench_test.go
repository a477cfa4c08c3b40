package modbus

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	gmb "github.com/goburrow/modbus"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// countEmitter releases every reading, as a pipeline that keeps up does, and notes the
// times of the first and the last-wanted reading.
type countEmitter struct {
	want        int
	n           int
	first, last time.Time
	done        chan struct{}
}

func (e *countEmitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	r.Release()
	e.n++
	switch e.n {
	case 1:
		e.first = time.Now()
	case e.want:
		e.last = time.Now()
		close(e.done)
	}
	return drivers.Pressure{Accepted: true}
}

func (e *countEmitter) Health(bool, error) {}

func benchRegisters() []Register {
	regs := make([]Register, 10)
	for i := range regs {
		regs[i] = Register{Name: fmt.Sprintf("r%d", i), Address: i}
	}
	return regs
}

// BenchmarkModbusDriverPoll is the driver polling the libmodbus server as fast as it
// may: one request of 10 holding registers per poll, every reading emitted.
func BenchmarkModbusDriverPoll(b *testing.B) {
	srv := startCServer(b)
	cfg := testConfig(srv.Addr(), benchRegisters()...)
	cfg.PollInterval = config.Duration(time.Nanosecond)
	d := newDriver(b, "bench", cfg)
	if n := len(d.Requests()); n != 1 {
		b.Fatalf("%d requests per poll, want 1", n)
	}
	// Timed from the first reading, so connecting is left out as in the bare loop.
	e := &countEmitter{want: b.N + 1, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.Run(ctx, e); err != nil {
			b.Error(err)
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	select {
	case <-e.done:
	case <-time.After(time.Minute):
		b.Error("driver did not poll b.N times within a minute")
	}
	cancel()
	wg.Wait()
	if !e.last.IsZero() {
		b.ReportMetric(float64(b.N)/e.last.Sub(e.first).Seconds(), "reads/s")
	}
}

// BenchmarkModbusBareGoburrow is a bare goburrow client reading the same 10 registers
// in a loop: the ceiling the driver is measured against.
func BenchmarkModbusBareGoburrow(b *testing.B) {
	srv := startCServer(b)
	h := gmb.NewTCPClientHandler(srv.Addr())
	h.Timeout = time.Second
	h.IdleTimeout = 0
	h.SlaveId = 1
	if err := h.Connect(); err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	c := gmb.NewClient(h)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := c.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
}
