package modbus

import (
	"testing"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// TestBackpressure: the poll interval doubles, up to 16 times, while the pipeline
// asks to slow down, keeps to the pipeline's rate limit, and comes back when the
// pressure falls.
func TestBackpressure(t *testing.T) {
	h := &vHandler{}
	c := testConfig(startVServer(t, h), Register{Name: "a", Address: 0})
	c.PollInterval = config.Duration(10 * time.Millisecond)
	d := newDriver(t, "press", c)
	e := newRecEmitter()
	drivertest.Start(t, d, e)
	e.waitReadings(t, 1, 5*time.Second)
	if got := d.RateHz(); got != 100 {
		t.Fatalf("rate %v Hz, want 100", got)
	}

	e.setPressure(drivers.Pressure{Accepted: true, Occupancy: 0.9})
	e.waitFor(t, "rate at 1/16", 5*time.Second, func() bool { return d.RateHz() == 100.0/16 })
	n := e.count()
	e.waitReadings(t, 2, 5*time.Second)
	e.mu.Lock()
	gap := e.readings[n+1].CapturedAt.Sub(e.readings[n].CapturedAt)
	e.mu.Unlock()
	if gap < 150*time.Millisecond {
		t.Errorf("polls %v apart at 1/16 of a 10ms interval", gap)
	}
	// Readings dropped by a full pipeline count as pressure too.
	e.setPressure(drivers.Pressure{Accepted: false})
	e.waitReadings(t, 1, 5*time.Second)
	if got := d.RateHz(); got != 100.0/16 {
		t.Errorf("rate %v Hz while readings are dropped, want %v", got, 100.0/16)
	}

	e.setPressure(drivers.Pressure{Accepted: true})
	e.waitFor(t, "rate back at 100 Hz", 5*time.Second, func() bool { return d.RateHz() == 100 })

	e.setPressure(drivers.Pressure{Accepted: true, MaxRateHz: 20})
	e.waitFor(t, "rate at the 20 Hz limit", 5*time.Second, func() bool { return d.RateHz() == 20 })
	e.setPressure(drivers.Pressure{Accepted: true})
	e.waitFor(t, "rate back at 100 Hz", 5*time.Second, func() bool { return d.RateHz() == 100 })
}

func TestBackoff(t *testing.T) {
	c := testConfig("127.0.0.1:1", Register{Name: "a"})
	c.BackoffMin = config.Duration(100 * time.Millisecond)
	c.BackoffMax = config.Duration(10 * time.Second)
	d := newDriver(t, "b", c)
	for n := range 40 {
		w := min(100*time.Millisecond<<min(n, 20), 10*time.Second)
		for range 20 {
			if got := d.backoff(n); got < w/2 || got > w {
				t.Fatalf("backoff(%d) = %v, want %v..%v", n, got, w/2, w)
			}
		}
	}
}

func TestReconfigure(t *testing.T) {
	h := &vHandler{}
	c := testConfig(startVServer(t, h), Register{Name: "a", Address: 0})
	c.PollInterval = config.Duration(10 * time.Millisecond)
	d := newDriver(t, "re", c)
	e := newRecEmitter()
	drivertest.Start(t, d, e)
	e.waitReadings(t, 1, 5*time.Second)

	c2 := *c
	c2.PollInterval = config.Duration(20 * time.Millisecond)
	restart, err := d.Reconfigure(&c2)
	if err != nil || len(restart) != 0 {
		t.Fatalf("Reconfigure(poll_interval) = %q, %v", restart, err)
	}
	e.waitFor(t, "rate at 50 Hz", 5*time.Second, func() bool { return d.RateHz() == 50 })

	c3 := c2
	c3.Address = "127.0.0.1:1"
	scale := 2.0
	c3.Registers = []Register{{Name: "a", Address: 0, Scale: &scale}}
	restart, err = d.Reconfigure(&c3)
	if err != nil || len(restart) != 2 || restart[0] != "address" || restart[1] != "registers" {
		t.Fatalf("Reconfigure(address, registers) = %q, %v", restart, err)
	}
	c3.UnitID = 999
	if _, err := d.Reconfigure(&c3); err == nil {
		t.Fatal("Reconfigure took an invalid config")
	}
}
