package modbus

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestLibmodbusPolling(t *testing.T) {
	srv := startCServer(t)
	regs := []Register{
		{Name: "counter", Address: 0},
		{Name: "fixed", Address: 1},
		{Name: "temp", Address: 2, Type: Float32},
		{Name: "neg", Address: 4, Type: Int16},
		{Name: "r9", Address: 9, Type: Int16, Scale: new(0.5), Offset: 1},
		{Name: "tenths", Address: 0, Function: Input},
		{Name: "answer", Address: 1, Function: Input},
		{Name: "coil3", Address: 3, Function: Coil},
		{Name: "coil4", Address: 4, Function: Coil},
		{Name: "disc2", Address: 2, Function: Discrete},
		{Name: "disc3", Address: 3, Function: Discrete},
	}
	d := newDriver(t, "libmodbus", testConfig(srv.Addr(), regs...))
	if err := d.Probe(t.Context()); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	e := newRecEmitter()
	drivertest.Start(t, d, e)
	e.waitReadings(t, 3, 5*time.Second)
	e.mu.Lock()
	rs := append(e.readings[:0:0], e.readings...)
	e.mu.Unlock()
	want := map[string]float64{"fixed": 1234, "temp": 21.5, "neg": -1, "r9": 509*0.5 + 1, "answer": 42,
		"coil3": 1, "coil4": 0, "disc2": 1, "disc3": 0}
	for i, r := range rs {
		for k, w := range want {
			if r.Scalars[k] != w {
				t.Errorf("reading %d: %s = %v, want %v", i, k, r.Scalars[k], w)
			}
		}
		if i > 0 {
			// The server bumps holding 0 on every request: each poll sees fresh data.
			if r.Scalars["counter"] <= rs[i-1].Scalars["counter"] || r.Seq <= rs[i-1].Seq || r.CapturedAt.Before(rs[i-1].CapturedAt) {
				t.Errorf("reading %d not fresh: counter %v after %v, seq %d after %d", i, r.Scalars["counter"], rs[i-1].Scalars["counter"], r.Seq, rs[i-1].Seq)
			}
		}
	}
}

// TestLibmodbusProbe: the independent server's exception for an address past its map
// is named with the range, and an unreachable device names its address.
func TestLibmodbusProbe(t *testing.T) {
	srv := startCServer(t)
	d := newDriver(t, "vib", testConfig(srv.Addr(), Register{Name: "ok", Address: 0},
		Register{Name: "past", Address: 150, Function: Input}, Register{Name: "past2", Address: 159, Function: Input}))
	err := d.Probe(t.Context())
	if want := `source "vib": read input 150..159: exception 2 (illegal data address)`; err == nil || err.Error() != want {
		t.Fatalf("Probe = %v, want %q", err, want)
	}
	srv.Stop(t)
	err = d.Probe(t.Context())
	if want := `source "vib": connect ` + srv.Addr() + `: `; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Probe of a stopped server = %v, want %q...", err, want)
	}
}

// TestLibmodbusRestart kills the server while the driver polls and starts it again on
// the same port: the driver reports down, reconnects by itself and emits again, and
// leaves no goroutine behind.
func TestLibmodbusRestart(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := startCServer(t)
	d := newDriver(t, "restart", testConfig(srv.Addr(), Register{Name: "counter", Address: 0}, Register{Name: "temp", Address: 2, Type: Float32}))
	e := newRecEmitter()
	stop := drivertest.Start(t, d, e)
	e.waitReadings(t, 3, 5*time.Second)

	srv.Stop(t)
	down := e.waitHealth(t, false, 0, 5*time.Second)
	if down.err == nil {
		t.Error("health down without a reason")
	}
	t.Logf("down: %v", down.err)
	after := len(e.healthReports())
	n := e.count()

	srv.Start(t)
	e.waitHealth(t, true, after, 10*time.Second)
	e.waitReadings(t, 3, 5*time.Second)
	if r := e.last(); r.Scalars["temp"] != 21.5 || r.Seq <= uint64(n) {
		t.Errorf("after restart: temp %v seq %d (had %d readings)", r.Scalars["temp"], r.Seq, n)
	}
	stop()
	srv.Stop(t)
}
