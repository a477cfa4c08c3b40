package linepage

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgedrun/edged/publish"
)

// BenchmarkPublish is the cost the line page adds to every verdict, with nobody
// watching and with 100 browsers that read as fast as they can.
func BenchmarkPublish(b *testing.B) {
	for _, clients := range []int{0, 100} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			const buffer = 4096
			p, err := New(Config{ClientBuffer: buffer}, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var subs []*client
			for range clients {
				cctx, ccancel := context.WithCancel(ctx)
				c, _, err := p.subscribe(ccancel)
				if err != nil {
					b.Fatal(err)
				}
				subs = append(subs, c)
				wg.Go(func() {
					defer p.unsubscribe(c)
					for {
						select {
						case <-cctx.Done():
							return
						case <-c.ch:
						}
					}
				})
			}
			// Two cores cannot drain 100 readers as fast as Publish fills them: the timer
			// stops while they catch up, so what is measured is Publish with 100
			// browsers connected, not a benchmark of dropping them.
			drain := func() {
				for _, c := range subs {
					for len(c.ch) > 0 {
						runtime.Gosched()
					}
				}
			}
			r := result(1, publish.VerdictOK)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%(buffer/2) == 0 && clients > 0 {
					b.StopTimer()
					drain()
					b.StartTimer()
				}
				r.Seq = uint64(i)
				if err := p.Publish(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "results/s")
			// Readers that fell behind were dropped, as a slow browser is.
			b.ReportMetric(testutil.ToFloat64(p.dropped), "dropped_clients")
			cancel()
			wg.Wait()
		})
	}
}
