package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/drivers/sim"
)

// TestDaemonLeavesNoGoroutine runs the whole daemon in this process (simulator at a
// rate the model cannot keep up with, embedded broker, HTTP server), stops it mid-
// stream and checks that run returns within shutdown_timeout, every accepted frame
// is accounted for with none in flight, and no goroutine it started is left.
func TestDaemonLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := writeConfig(t, "embedded", "")
	cfg, prof, reasons, err := loadConfig(l.config)
	if err != nil {
		t.Fatal(err)
	}
	// Far past what the model does, so the ring is full when the stop comes.
	cfg.Sources[0].Backpressure = "drop_oldest"
	sc := cfg.Sources[0].Driver.(*sim.Config)
	sc.RateHz, sc.Cache = 20000, 16
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := newDaemon(cfg, prof, reasons, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		c, _ := d.pipe.Counts("cam")
		if c.Published >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("50 results not published within 30s: %+v", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(cfg.ShutdownTimeout.Std() + 5*time.Second):
		t.Fatalf("run did not return within shutdown_timeout %v", cfg.ShutdownTimeout)
	}
	t.Logf("stopped in %v", time.Since(start))
	c, _ := d.pipe.Counts("cam")
	if !c.Balanced() || c.InFlight != 0 {
		t.Errorf("after shutdown: %+v", c)
	}
	st := d.pub.Stats()
	if st.Accepted != c.Published {
		t.Errorf("publisher took %d results, pipeline published %d", st.Accepted, c.Published)
	}
}
