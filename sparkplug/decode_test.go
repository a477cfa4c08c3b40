package sparkplug_test

import (
	"math"
	"testing"
	"time"

	"github.com/edgedrun/edged/sparkplug"
	"github.com/edgedrun/edged/sparkplug/spbtest"
)

func TestRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 27, 10, 0, 0, 123e6, time.UTC)
	p := sparkplug.Payload{
		Timestamp: sparkplug.Millis(ts),
		Seq:       255,
		HasSeq:    true,
		Metrics: []sparkplug.Metric{
			{Name: "a/int32", Type: sparkplug.Int32, Int: -5},
			{Name: "a/int64", Type: sparkplug.Int64, Int: -1 << 40},
			{Name: "a/uint64", Type: sparkplug.UInt64, Uint: math.MaxUint64, Timestamp: sparkplug.Millis(ts)},
			{Name: "a/float", Type: sparkplug.Float, Float64: 0.5},
			{Name: "a/double", Type: sparkplug.Double, Float64: 0.123456789},
			{Name: "a/bool", Type: sparkplug.Boolean, Bool: true},
			{Name: "a/bool_false", Type: sparkplug.Boolean},
			{Name: "a/string", Type: sparkplug.String, Str: "héllo"},
			{Name: "a/empty", Type: sparkplug.String},
			{Name: "a/time", Type: sparkplug.DateTime, Int: int64(sparkplug.Millis(ts))},
			{Name: "a/null", Type: sparkplug.Double, Null: true},
		},
	}
	d := spbtest.Decode(t, p.Marshal())
	if d.Timestamp != sparkplug.Millis(ts) || d.Seq != 255 || !d.HasSeq {
		t.Fatalf("header: %+v", d)
	}
	want := []spbtest.Metric{
		{Name: "a/int32", Timestamp: 0, Datatype: 3, IsNull: false, Value: uint32(0xfffffffb)},
		{Name: "a/int64", Timestamp: 0, Datatype: 4, IsNull: false, Value: uint64(0xffffff0000000000)},
		{Name: "a/uint64", Timestamp: sparkplug.Millis(ts), Datatype: 8, IsNull: false, Value: uint64(math.MaxUint64)},
		{Name: "a/float", Timestamp: 0, Datatype: 9, IsNull: false, Value: float32(0.5)},
		{Name: "a/double", Timestamp: 0, Datatype: 10, IsNull: false, Value: 0.123456789},
		{Name: "a/bool", Timestamp: 0, Datatype: 11, IsNull: false, Value: true},
		{Name: "a/bool_false", Timestamp: 0, Datatype: 11, IsNull: false, Value: false},
		{Name: "a/string", Timestamp: 0, Datatype: 12, IsNull: false, Value: "héllo"},
		{Name: "a/empty", Timestamp: 0, Datatype: 12, IsNull: false, Value: ""},
		{Name: "a/time", Timestamp: 0, Datatype: 13, IsNull: false, Value: sparkplug.Millis(ts)},
		{Name: "a/null", Timestamp: 0, Datatype: 10, IsNull: true, Value: nil},
	}
	if len(d.Metrics) != len(want) {
		t.Fatalf("%d metrics, want %d", len(d.Metrics), len(want))
	}
	for i, w := range want {
		if d.Metrics[i] != w {
			t.Errorf("metric %d: got %+v, want %+v", i, d.Metrics[i], w)
		}
	}
}

func TestDeath(t *testing.T) {
	d := spbtest.Decode(t, sparkplug.Death(7, time.UnixMilli(1000)))
	if d.HasSeq || d.Timestamp != 1000 || len(d.Metrics) != 1 {
		t.Fatalf("death: %+v", d)
	}
	if m := d.Metrics[0]; m.Name != "bdSeq" || m.Datatype != uint32(sparkplug.Int64) || m.Value != uint64(7) {
		t.Fatalf("bdSeq metric: %+v", m)
	}
}

func TestTopic(t *testing.T) {
	if got := sparkplug.Topic("plant1", sparkplug.NDATA, "line3-box7"); got != "spBv1.0/plant1/NDATA/line3-box7" {
		t.Fatal(got)
	}
}
