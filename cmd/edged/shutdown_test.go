package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgedrun/edged/internal/testmqtt"
)

// TestShutdownMidStreamOverload: SIGTERM while the source outruns the worker and frames
// wait in the ring. edged must exit 0 well within shutdown_timeout; its last log line
// must account for every frame accepted (published, or dropped with a reason; none left
// in flight); and every published result must have reached a subscriber that was there
// from the start, or be in the spool: nothing lost silently.
func TestShutdownMidStreamOverload(t *testing.T) {
	url := testmqtt.Start(t)
	l := newLoadLine(t, url)
	// About 3-5x what one worker under -race gets through with 512x512 images.
	l.RateHz, l.Width, l.Height, l.Cache = 300, 512, 512, 32
	l.RingSize, l.Workers, l.MaxBatch, l.IntraOp = 64, 1, 1, 1
	l.Backpressure, l.Budget, l.Shutdown = "block", "2s", "10s"
	const shutdownTimeout = 10 * time.Second
	l.write(t)

	c := subscribe(t, url, l.testLine)
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	waitMetric(t, p, l.httpAddr, `edged_frames_total{outcome="accepted",source="cam"}`, 1, 30*time.Second)
	w := newWatcher(p, l)
	w.run(t, soakOr(3*time.Second, 20*time.Second), 250*time.Millisecond)

	// Signal at a moment a quarter of the ring or more waits, so the drain has work to
	// do. The rate controller swings the ring between empty and half full every second
	// or two; polling often catches the upswing.
	var last sample
	deadline := time.Now().Add(15 * time.Second)
	for {
		last = w.step(t)
		if last.m[`edged_frames_in_flight{source="cam"}`] >= float64(l.RingSize/4) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scrape in 15s showed %d or more frames in flight: the source does not outrun the worker", l.RingSize/4)
		}
		time.Sleep(10 * time.Millisecond)
	}
	goroutines, ok := last.m["go_goroutines"]
	if !ok || goroutines <= 0 {
		t.Fatalf("go_goroutines %v (present %v) in the scrape before the signal", goroutines, ok)
	}
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := p.wait(t, shutdownTimeout+5*time.Second)
	took := time.Since(sent)
	t.Logf("SIGTERM with %v frames in flight (ring occupancy %.2f, %v goroutines, RSS %.0f MiB under -race): exit %d after %v (shutdown_timeout %v)",
		last.m[`edged_frames_in_flight{source="cam"}`], last.m[`edged_ring_occupancy{stage="source:cam"}`], goroutines,
		float64(last.rssKB)/1024, code, took.Round(time.Millisecond), shutdownTimeout)
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if took >= shutdownTimeout {
		t.Fatalf("edged took %v to stop; shutdown_timeout is %v", took, shutdownTimeout)
	}
	out := p.output()
	for _, bad := range []string{"panic", "DATA RACE", "did not stop within"} {
		if strings.Contains(out, bad) {
			t.Fatalf("output contains %q", bad)
		}
	}

	// The stop line balances, with nothing in flight, and is no less than the last scrape.
	st := stopLine(t, out)
	cam, spool, mq := st["cam"], st["spool"], st["mqtt"]
	sum := cam["published"] + cam["dropped_full"] + cam["dropped_stale"] + cam["error"] + cam["dropped_shutdown"]
	t.Logf("stop line: cam %v; mqtt %v; spool %v", cam, mq, spool)
	if cam["accepted"] != sum {
		t.Fatalf("stop line: accepted %d != published + dropped + error %d: %d frames unaccounted for", cam["accepted"], sum, cam["accepted"]-sum)
	}
	if float64(cam["accepted"]) < frames(last.m, "accepted") || float64(cam["published"]) < frames(last.m, "published") {
		t.Fatalf("stop line %v below the last scrape (accepted %v, published %v)", cam, frames(last.m, "accepted"), frames(last.m, "published"))
	}

	// Every published result reached the subscriber, or waits in the spool.
	c.settle(300 * time.Millisecond)
	seqs := c.seqSet()
	published, spooled := cam["published"], spool["records"]
	dups := 0
	for s, n := range seqs {
		dups += n - 1
		if s < 1 || s > uint64(cam["accepted"]) {
			t.Fatalf("received seq %d; edged accepted seqs 1..%d", s, cam["accepted"])
		}
	}
	t.Logf("subscriber: %d distinct results (%d duplicates) of %d published; %d in the spool at exit; broker acked %d",
		len(seqs), dups, published, spooled, mq["acked"])
	if int64(len(seqs)) > published {
		t.Fatalf("%d distinct results received, more than the %d published", len(seqs), published)
	}
	if int64(len(seqs))+spooled < published {
		t.Fatalf("%d published results neither received nor in the spool (received %d, spooled %d)",
			published-int64(len(seqs))-spooled, len(seqs), spooled)
	}
	// Block drops nothing but, at shutdown, the one frame waiting for room: the results
	// are then seq 1..published with no gap.
	if cam["dropped_full"]+cam["dropped_stale"]+cam["error"] == 0 && spooled == 0 {
		for s := uint64(1); s <= uint64(published); s++ {
			if seqs[s] == 0 {
				t.Fatalf("seq %d missing of 1..%d published", s, published)
			}
		}
	}
	c.mu.Lock()
	for i, r := range c.results {
		checkPayload(t, c.topics[i], r, l.testLine)
	}
	c.mu.Unlock()
}
