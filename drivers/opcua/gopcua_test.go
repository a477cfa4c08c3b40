package opcua

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func bits(f float64) uint64 { return math.Float64bits(f) }
func f64(b uint64) float64  { return math.Float64frombits(b) }

// waitFor polls cond until it holds or limit passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lastReading(e *drivertest.Emitter) *drivers.Reading {
	rs := e.Readings()
	if len(rs) == 0 {
		return nil
	}
	return rs[len(rs)-1]
}

// Stream mode: every data change emits the latest value of every node, converted to
// float64 (int32 and bool included).
func TestStreamGopcua(t *testing.T) {
	g := newGopcuaServer(t)
	g.speed.Store(bits(1.25))
	g.count.Store(7)
	g.present.Store(true)
	d := newDriver(t, "line1", &Config{Endpoint: g.endpoint, Nodes: []Node{
		{Name: "speed", NodeID: g.id("Speed")},
		{Name: "count", NodeID: g.id("Count")},
		{Name: "present", NodeID: g.id("Present")},
	}})
	e := drivertest.NewEmitter()
	defer e.Close()
	run(t, d, e)
	e.WaitHealth(t, true, 10*time.Second)
	e.WaitReadings(t, 1, 10*time.Second)
	r := e.Readings()[0]
	want := map[string]float64{"speed": 1.25, "count": 7, "present": 1}
	for k, v := range want {
		if r.Scalars[k] != v {
			t.Errorf("first reading %s = %v, want %v (all: %v)", k, r.Scalars[k], v, r.Scalars)
		}
	}
	if r.Source != "line1" || r.CapturedAt.IsZero() || r.Deadline.IsZero() {
		t.Errorf("reading source %q captured %v deadline %v", r.Source, r.CapturedAt, r.Deadline)
	}
	g.setSpeed(7.5)
	waitFor(t, 5*time.Second, "a reading with speed 7.5", func() bool {
		r := lastReading(e)
		return r != nil && r.Scalars["speed"] == 7.5 && r.Scalars["count"] == 7
	})
}

// Trigger mode: a rising edge of the part-present tag reads every node and the part
// id in one Read and emits one reading carrying the part id.
func TestTriggerGopcua(t *testing.T) {
	g := newGopcuaServer(t)
	d := newDriver(t, "press", &Config{Endpoint: g.endpoint, Mode: ModeTrigger,
		Nodes:   []Node{{Name: "speed", NodeID: g.id("Speed")}, {Name: "count", NodeID: g.id("Count")}},
		Trigger: Trigger{NodeID: g.id("Present"), PartIDNode: g.id("PartID")},
	})
	e := drivertest.NewEmitter()
	defer e.Close()
	run(t, d, e)
	e.WaitHealth(t, true, 10*time.Second)

	for i, part := range []string{"A1", "A2"} {
		g.speed.Store(bits(float64(i) + 0.5))
		g.count.Store(int32(10 + i))
		g.part.Store(part)
		g.present.Store(true)
		g.changed("Present")
		e.WaitReadings(t, i+1, 5*time.Second)
		r := e.Readings()[i]
		if r.PartID != part || r.Scalars["speed"] != float64(i)+0.5 || r.Scalars["count"] != float64(10+i) {
			t.Errorf("reading %d: part %q scalars %v, want part %s speed %v count %d", i, r.PartID, r.Scalars, part, float64(i)+0.5, 10+i)
		}
		// The falling edge starts nothing. gopcua's server keeps one value per item
		// until the next publish, so the test waits for the driver to see it.
		seen := testutil.ToFloat64(d.m.notifications)
		g.present.Store(false)
		g.changed("Present")
		waitFor(t, 5*time.Second, "the falling edge", func() bool { return testutil.ToFloat64(d.m.notifications) > seen })
		time.Sleep(50 * time.Millisecond)
		if n := len(e.Readings()); n != i+1 {
			t.Fatalf("%d readings after the falling edge of part %s, want %d", n, part, i+1)
		}
	}
}

// An unknown node id is a config fault: Run returns at once, naming the source, the
// node and the status code.
func TestConfigFaultsGopcua(t *testing.T) {
	g := newGopcuaServer(t)
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  []string
	}{
		{"unknown", []Node{{Name: "speed", NodeID: g.id("Speed")}, {Name: "ghost", NodeID: g.id("Nope")}}, []string{`"cell7"`, `"ghost"`, "Nope", "StatusBadNodeIDUnknown"}},
		{"not a number", []Node{{Name: "label", NodeID: g.id("Name")}}, []string{`"cell7"`, `"label"`, "String", "not a number"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriver(t, "cell7", &Config{Endpoint: g.endpoint, Nodes: tc.nodes})
			e := drivertest.NewEmitter()
			defer e.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := d.Run(ctx, e)
			if err == nil {
				t.Fatal("Run returned nil, want the config fault")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
			if perr := d.Probe(ctx); perr == nil || perr.Error() != err.Error() {
				t.Errorf("Probe = %v, want %v", perr, err)
			}
		})
	}
	d := newDriver(t, "cell7", &Config{Endpoint: g.endpoint, Nodes: []Node{{Name: "speed", NodeID: g.id("Speed")}}})
	if err := d.Probe(context.Background()); err != nil {
		t.Errorf("Probe of a good config: %v", err)
	}
}

// Nothing listening at the endpoint is transient: Health(false) names the endpoint,
// Run keeps retrying and returns nil when cancelled.
func TestUnreachableGopcua(t *testing.T) {
	ep := "opc.tcp://127.0.0.1:" + strconv.Itoa(freePort(t))
	d := newDriver(t, "cell8", &Config{Endpoint: ep, Nodes: []Node{{Name: "x", NodeID: "ns=1;s=X"}}})
	e := drivertest.NewEmitter()
	defer e.Close()
	stop, _ := run(t, d, e)
	e.WaitHealth(t, false, 5*time.Second)
	if err := e.LastHealthErr(); err == nil || !strings.Contains(err.Error(), ep) {
		t.Errorf("health error %v does not name the endpoint %s", err, ep)
	}
	stop()
}

// Writes land on the server converted to the node's type; a value that does not fit,
// and an unknown node, are errors naming node and value.
func TestWriteGopcua(t *testing.T) {
	g := newGopcuaServer(t)
	d := newDriver(t, "gate", &Config{Endpoint: g.endpoint, Nodes: []Node{{Name: "speed", NodeID: g.id("Speed")}}})
	e := drivertest.NewEmitter()
	defer e.Close()
	if err := d.Write(context.Background(), drivers.Write{Target: g.id("Reject"), Value: true}); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("write before Run = %v, want a not connected error", err)
	}
	run(t, d, e)
	e.WaitHealth(t, true, 10*time.Second)

	// gopcua's server tells of a write on a channel only a waiting receiver gets.
	got := make(chan any, 1)
	go func() {
		select {
		case id := <-g.ns.ExternalNotification:
			got <- g.ns.Node(id).Value().Value.Value()
		case <-time.After(5 * time.Second):
			got <- nil
		}
	}()
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Write(ctx, drivers.Write{Target: g.id("Reject"), Value: int64(1)}); err != nil {
		t.Fatalf("write Reject: %v", err)
	}
	if v := <-got; v != true {
		t.Errorf("server has Reject = %v (%T), want true", v, v)
	}

	for _, tc := range []struct {
		w    drivers.Write
		want []string
	}{
		{drivers.Write{Target: g.id("Small"), Value: int64(70000)}, []string{"Small", "70000", "Int16"}},
		{drivers.Write{Target: g.id("Small"), Value: 1.5}, []string{"Small", "1.5", "whole"}},
		{drivers.Write{Target: g.id("Nope"), Value: true}, []string{"Nope", "StatusBadNodeIDUnknown"}},
		{drivers.Write{Target: "ns=1;x", Value: true}, []string{"ns=1;x"}},
		{drivers.Write{Target: g.id("Reject"), Value: []byte("x")}, []string{"Reject", "[]uint8"}},
	} {
		err := d.Write(ctx, tc.w)
		if err == nil {
			t.Errorf("write %v to %s: no error", tc.w.Value, tc.w.Target)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("write %v to %s: error %q does not name %s", tc.w.Value, tc.w.Target, err, w)
			}
		}
	}
	if err := d.CheckWrite(drivers.Write{Target: "ns=2;s=Line1.Reject", Value: "NG"}); err != nil {
		t.Errorf("CheckWrite of a good write: %v", err)
	}
}

// Under MaxRateHz the driver raises the items' sampling interval (gopcua's server has
// no ModifyMonitoredItems, so they are created again) and coalesces readings; when the
// limit goes, the configured interval comes back.
func TestBackpressureGopcua(t *testing.T) {
	g := newGopcuaServer(t)
	d := newDriver(t, "fast", &Config{Endpoint: g.endpoint, Nodes: []Node{
		{Name: "speed", NodeID: g.id("Speed"), SamplingInterval: config.Duration(20 * time.Millisecond)},
	}})
	e := drivertest.NewEmitter()
	defer e.Close()
	run(t, d, e)
	e.WaitHealth(t, true, 10*time.Second)

	stopChanges := make(chan struct{})
	changes := make(chan struct{})
	go func() {
		defer close(changes)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopChanges:
				return
			case <-tk.C:
				g.setSpeed(float64(i))
			}
		}
	}()
	defer func() { close(stopChanges); <-changes }()

	e.WaitReadings(t, 5, 5*time.Second)
	e.SetPressure(drivers.Pressure{Accepted: true, MaxRateHz: 5})
	waitFor(t, 5*time.Second, "sampling interval raised to 200ms", func() bool {
		return time.Duration(d.sampling.Load()) >= 200*time.Millisecond
	})
	n := len(e.Readings())
	time.Sleep(time.Second)
	if got := len(e.Readings()) - n; got > 5+2 {
		t.Errorf("%d readings in 1s at MaxRateHz 5, want at most 7", got)
	}
	e.SetPressure(drivers.Pressure{Accepted: true})
	waitFor(t, 5*time.Second, "sampling interval back to 20ms", func() bool {
		return time.Duration(d.sampling.Load()) == 20*time.Millisecond
	})
}
