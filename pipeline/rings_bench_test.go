package pipeline

import (
	"context"
	"sync"
	"testing"

	"github.com/edgedrun/edged/drivers"
)

// The ring and channel benchmarks run the same traffic: capacity 1024, one preallocated
// reading passed by pointer, b.N messages in all. They are meant to be read side by side.
const benchRingCap = 1024

// In these benchmarks Push and Pop wait on a background context and nothing closes the
// ring, so an error is a bug in the ring; producers panic because only the benchmark's own
// goroutine may call b.Fatal.

func reportMsgs(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkRingSPSC(b *testing.B) {
	ctx := context.Background()
	q := NewSPSC[*drivers.Reading](benchRingCap)
	reading := &drivers.Reading{Source: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range b.N {
			if err := q.Push(ctx, reading); err != nil {
				panic(err)
			}
		}
	})
	for range b.N {
		if _, err := q.Pop(ctx); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	reportMsgs(b)
}

func BenchmarkChannelSPSC(b *testing.B) {
	ch := make(chan *drivers.Reading, benchRingCap)
	reading := &drivers.Reading{Source: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range b.N {
			ch <- reading
		}
	})
	for range b.N {
		<-ch
	}
	wg.Wait()
	b.StopTimer()
	reportMsgs(b)
}

// benchProducers is the fan-in of the MPSC benchmarks: several drivers feeding one worker.
const benchProducers = 4

// share splits b.N messages among the producers.
func share(n, p int) int {
	per := n / benchProducers
	if p < n%benchProducers {
		per++
	}
	return per
}

func BenchmarkRingMPSC(b *testing.B) {
	ctx := context.Background()
	q := NewMPMC[*drivers.Reading](benchRingCap)
	reading := &drivers.Reading{Source: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for p := range benchProducers {
		wg.Go(func() {
			for range share(b.N, p) {
				if err := q.Push(ctx, reading); err != nil {
					panic(err)
				}
			}
		})
	}
	for range b.N {
		if _, err := q.Pop(ctx); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	reportMsgs(b)
}

func BenchmarkChannelMPSC(b *testing.B) {
	ch := make(chan *drivers.Reading, benchRingCap)
	reading := &drivers.Reading{Source: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for p := range benchProducers {
		wg.Go(func() {
			for range share(b.N, p) {
				ch <- reading
			}
		})
	}
	for range b.N {
		<-ch
	}
	wg.Wait()
	b.StopTimer()
	reportMsgs(b)
}

// benchConsumerWork is the work the consumer of the SlowConsumer benchmarks does per
// message, in iterations of pause: some tens of nanoseconds, enough that producers outrun
// it.
const benchConsumerWork = 200

// The SlowConsumer benchmarks are the pipeline's block policy under overload: the consumer
// is the bottleneck, the ring stays full and producers wait in Push for room, so they
// measure what waiting and waking cost (see roomWakeAt) rather than the ring's fast path.
func BenchmarkRingMPSCSlowConsumer(b *testing.B) {
	ctx := context.Background()
	q := NewMPMC[*drivers.Reading](benchRingCap)
	reading := &drivers.Reading{Source: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for p := range benchProducers {
		wg.Go(func() {
			for range share(b.N, p) {
				if err := q.Push(ctx, reading); err != nil {
					panic(err)
				}
			}
		})
	}
	for range b.N {
		if _, err := q.Pop(ctx); err != nil {
			b.Fatal(err)
		}
		pause(benchConsumerWork)
	}
	wg.Wait()
	b.StopTimer()
	reportMsgs(b)
}

func BenchmarkChannelMPSCSlowConsumer(b *testing.B) {
	ch := make(chan *drivers.Reading, benchRingCap)
	reading := &drivers.Reading{Source: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for p := range benchProducers {
		wg.Go(func() {
			for range share(b.N, p) {
				ch <- reading
			}
		})
	}
	for range b.N {
		<-ch
		pause(benchConsumerWork)
	}
	wg.Wait()
	b.StopTimer()
	reportMsgs(b)
}
