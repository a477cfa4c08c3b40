package opcua

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// benchServer is one node-opcua server changing Clock as fast as its event loop
// allows, shared by the benchmark's rounds (starting it takes seconds).
var benchServer struct {
	once sync.Once
	srv  *nodeServer
}

// latencyEmitter releases every reading at once and records how long after the
// server stamped the value (Clock holds the server's wall clock in ms) it was emitted.
type latencyEmitter struct {
	mu      sync.Mutex
	lat     []float64 // ms
	want    int
	reached chan struct{}
}

func (e *latencyEmitter) Emit(_ context.Context, r *drivers.Reading) drivers.Pressure {
	now := float64(time.Now().UnixNano()) / 1e6
	clock := r.Scalars["clock"]
	r.Release()
	e.mu.Lock()
	if len(e.lat) < e.want {
		e.lat = append(e.lat, now-clock)
		if len(e.lat) == e.want {
			close(e.reached)
		}
	}
	e.mu.Unlock()
	return drivers.Pressure{Accepted: true}
}

func (e *latencyEmitter) Health(bool, error) {}

// BenchmarkOPCUANotifications measures how many data change notifications a second
// the driver turns into readings (node-opcua changing a value as fast as it can, a
// 1 ms sampling interval with a queue of 1000 so every sample reaches the driver), and the p99 time from the server stamping a value to the
// driver emitting it.
func BenchmarkOPCUANotifications(b *testing.B) {
	benchServer.once.Do(func() {
		// A node server outlives the round that starts it; closing stops it.
		benchServer.srv = startNodeServerNoCleanup(b, "--period", "0", "--min-interval", "1")
	})
	srv := benchServer.srv
	if srv == nil {
		b.Fatal("node server did not start")
	}
	d := newDriver(b, "bench", &Config{Endpoint: srv.endpoint, Nodes: []Node{
		{Name: "clock", NodeID: nodeID("Clock"), SamplingInterval: config.Duration(time.Millisecond), QueueSize: 1000},
	}})
	// The first readings come while the session starts; they are not measured.
	const warm = 20
	e := &latencyEmitter{want: b.N + warm, reached: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, e) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	waitN := func(n int) {
		for {
			e.mu.Lock()
			got := len(e.lat)
			e.mu.Unlock()
			if got >= n {
				return
			}
			select {
			case <-e.reached:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
	waitN(warm)
	n0 := testutil.ToFloat64(d.m.notifications)
	b.ResetTimer()
	start := time.Now()
	select {
	case <-e.reached:
	case <-time.After(2 * time.Minute):
		b.Fatal("readings stopped coming")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	notifs := testutil.ToFloat64(d.m.notifications) - n0
	e.mu.Lock()
	lat := slices.Clone(e.lat[warm:])
	e.mu.Unlock()
	slices.Sort(lat)
	p99 := lat[min(len(lat)-1, len(lat)*99/100)]
	b.ReportMetric(notifs/elapsed.Seconds(), "notif/s")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "readings/s")
	b.ReportMetric(p99, "p99-ms")
}
