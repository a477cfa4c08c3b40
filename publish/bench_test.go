package publish

import (
	"context"
	"testing"
	"time"
)

// BenchmarkPublish measures results through Publish until the broker acknowledged them
// at QoS 1. With the embedded broker, the broker's own work and allocations run in this
// process and are included in the figures.
func BenchmarkPublish(b *testing.B) {
	for _, bk := range brokerKinds {
		b.Run(bk.name, func(b *testing.B) {
			cfg := testConfig(bk.start(b))
			p := startPublisher(b, cfg)
			p.waitConnected(b)
			tmpl := *makeResults(1)[0]
			ctx := context.Background()
			b.ReportAllocs()
			start := time.Now()
			b.ResetTimer()
			for i := range b.N {
				r := tmpl
				r.ID = ""
				r.Seq = uint64(i)
				if err := p.Publish(ctx, &r); err != nil {
					b.Fatal(err)
				}
			}
			for p.Stats().Acked < uint64(b.N) {
				time.Sleep(50 * time.Microsecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "results/s")
		})
	}
}
