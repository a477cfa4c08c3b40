package publish

import (
	"context"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedrun/edged/internal/testmqtt"
	"github.com/edgedrun/edged/spool"
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

// BenchmarkPublisherVsBarePaho compares the publisher with the least a program can do
// to get the same messages acknowledged: a paho client publishing the same payload at
// QoS 1 in a loop, with the same in-flight window, against the same local mosquitto.
// The two take turns in rounds of b.N/8 messages, so that a busy machine slows both
// alike, and the publisher's rate as a share of the bare rate is reported as the
// ratio. The publisher does more per result: it encodes the result and gives it an id,
// queues it, hands it to its sender goroutine and settles it in order; with a spool
// (here in direct mode: connected, nothing spooled) it also checks the spool first.
func BenchmarkPublisherVsBarePaho(b *testing.B) {
	const rounds = 8
	url := testmqtt.Start(b)
	tmpl := *makeResults(1)[0]
	tmpl.ID = newID()
	payload := tmpl.AppendJSON(nil)
	topic := "edged/v1/s1/l1/n1/result/" + tmpl.Inspection
	for _, withSpool := range []bool{false, true} {
		name := "nospool"
		if withSpool {
			name = "spool"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testConfig(url)
			cfg.MaxInflight = DefaultMaxInflight
			if withSpool {
				sp, _ := openSpool(b, spool.Options{FsyncInterval: 10 * time.Millisecond})
				cfg.Spool = sp
			}
			p := startPublisher(b, cfg)
			p.waitConnected(b)
			bare := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(uniqueID("bare")).
				SetProtocolVersion(4).SetAutoReconnect(false))
			if tok := bare.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
				b.Fatalf("bare client connect: %v", tok.Error())
			}
			defer bare.Disconnect(100)
			window := make([]mqtt.Token, cfg.MaxInflight)
			barePublish := func(n int) {
				for i := range n {
					slot := i % len(window)
					if t := window[slot]; t != nil {
						if t.Wait(); t.Error() != nil {
							b.Fatal(t.Error())
						}
					}
					window[slot] = bare.Publish(topic, 1, false, payload)
				}
				for i, t := range window {
					if t != nil {
						if t.Wait(); t.Error() != nil {
							b.Fatal(t.Error())
						}
						window[i] = nil
					}
				}
			}
			ctx := context.Background()
			seq := uint64(0)
			publish := func(n int) {
				acked := p.Stats().Acked
				for range n {
					r := tmpl
					r.ID = ""
					seq++
					r.Seq = seq
					if err := p.Publish(ctx, &r); err != nil {
						b.Fatal(err)
					}
				}
				for p.Stats().Acked < acked+uint64(n) {
					time.Sleep(20 * time.Microsecond)
				}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			var bareTime, pubTime time.Duration
			for r := range rounds {
				n := b.N / rounds
				if r == rounds-1 {
					n = b.N - (rounds-1)*(b.N/rounds)
				}
				start := time.Now()
				barePublish(n)
				bareTime += time.Since(start)
				start = time.Now()
				publish(n)
				pubTime += time.Since(start)
			}
			b.StopTimer()
			bareRate := float64(b.N) / bareTime.Seconds()
			pubRate := float64(b.N) / pubTime.Seconds()
			b.ReportMetric(pubRate, "results/s")
			b.ReportMetric(bareRate, "paho-msgs/s")
			b.ReportMetric(pubRate/bareRate, "ratio")
		})
	}
}
