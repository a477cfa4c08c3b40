package opcua

import (
	"io"
	"log/slog"
	"testing"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgedrun/edged/drivers"
)

func notification(values ...any) *ua.DataChangeNotification {
	n := &ua.DataChangeNotification{}
	for _, v := range values {
		n.MonitoredItems = append(n.MonitoredItems, &ua.MonitoredItemNotification{
			ClientHandle: 0,
			Value:        &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(v)},
		})
	}
	return n
}

// Edges wait in the bounded queue while inspections are slow; once it is full, each
// further edge is counted in edged_opcua_trigger_overflow_total and dropped, and the
// notifications never block.
func TestTriggerEdges(t *testing.T) {
	for _, tc := range []struct {
		edge   string
		values []any
		want   int
	}{
		{EdgeRising, []any{true, true, false, true, false, false, true}, 3},
		{EdgeChange, []any{true, true, false, true, false, false, true}, 5},
		{EdgeRising, []any{int32(0), int32(3), int32(4), int32(0), int32(1)}, 2},
	} {
		reg := prometheus.NewRegistry()
		d := newDriver(t, "press", &Config{Endpoint: "opc.tcp://127.0.0.1:4840", Mode: ModeTrigger,
			Nodes:   []Node{{Name: "force", NodeID: "ns=2;s=Force"}},
			Trigger: Trigger{NodeID: "ns=2;s=Present", Edge: tc.edge},
		}, drivers.Spec{Registerer: reg})
		edges := make(chan edge, triggerQueue)
		d.edges(notification(tc.values...), 0, edges, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if len(edges) != tc.want {
			t.Errorf("%s edges of %v: %d queued, want %d", tc.edge, tc.values, len(edges), tc.want)
		}
	}

	d := newDriver(t, "press", &Config{Endpoint: "opc.tcp://127.0.0.1:4840", Mode: ModeTrigger,
		Nodes:   []Node{{Name: "force", NodeID: "ns=2;s=Force"}},
		Trigger: Trigger{NodeID: "ns=2;s=Present"},
	})
	edges := make(chan edge, triggerQueue)
	var pulses []any
	for range triggerQueue + 10 {
		pulses = append(pulses, true, false)
	}
	prev := d.edges(notification(pulses...), 0, edges, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if prev != 0 || len(edges) != triggerQueue {
		t.Errorf("queue holds %d edges (last value %v), want %d", len(edges), prev, triggerQueue)
	}
	if got := testutil.ToFloat64(d.m.overflow); got != 10 {
		t.Errorf("trigger_overflow_total = %v, want 10", got)
	}
}

// Sources share the daemon's registry: the second source's counters join the first's.
func TestMetricsShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := &Config{Endpoint: "opc.tcp://127.0.0.1:4840", Nodes: []Node{{Name: "force", NodeID: "ns=2;s=Force"}}}
	a := newDriver(t, "a", cfg, drivers.Spec{Registerer: reg})
	b := newDriver(t, "b", cfg, drivers.Spec{Registerer: reg})
	for _, d := range []*Driver{a, b} {
		d.m.register(reg, d.spec.Name, d.log())
	}
	a.m.reconnects.Inc()
	b.m.reconnects.Add(2)
	if n, err := testutil.GatherAndCount(reg, "edged_opcua_reconnects_total"); err != nil || n != 2 {
		t.Errorf("%d reconnects series (%v), want one per source", n, err)
	}
}
