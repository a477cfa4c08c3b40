package pipeline

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/publish"
)

type countSink struct{ n atomic.Int64 }

func (c *countSink) Publish(context.Context, *publish.Result) error { c.n.Add(1); return nil }

func TestVerdictsHandsResultsToWatchers(t *testing.T) {
	next := &countSink{}
	v := NewVerdicts(next, []Inspection{{Name: "a", Source: "cam"}, {Name: "b", Source: "cam"}, {Name: "c", Source: "plc"}})
	wait, stop := v.Watch("cam", "t1")
	defer stop()
	waitNone, stop2 := v.Watch("other", "t2")
	defer stop2()
	if vs, err := waitNone(context.Background()); err != nil || len(vs) != 0 {
		t.Errorf("a source without inspections: %v, %v; want no verdicts at once", vs, err)
	}
	res := func(trace, source, ins string) *publish.Result {
		return &publish.Result{TraceID: trace, Source: source, Inspection: ins, Verdict: publish.VerdictNG, PartID: "P1"}
	}
	for _, r := range []*publish.Result{res("t0", "cam", "a"), res("t1", "plc", "c"), res("t1", "cam", "a")} {
		if err := v.Publish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	vs, err := wait(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || len(vs) != 1 || vs[0].Inspection != "a" {
		t.Fatalf("with one of two verdicts: %v, %v; want inspection a and the deadline", vs, err)
	}
	if err := v.Publish(context.Background(), res("t1", "cam", "b")); err != nil {
		t.Fatal(err)
	}
	vs, err = wait(context.Background())
	if err != nil || len(vs) != 2 || vs[1].Inspection != "b" || vs[1].PartID != "P1" || vs[1].Verdict != publish.VerdictNG {
		t.Fatalf("verdicts %+v, %v; want a and b", vs, err)
	}
	if next.n.Load() != 4 {
		t.Errorf("%d results passed on, want 4", next.n.Load())
	}
	stop()
	stop()
	if len(v.ws) != 1 {
		t.Errorf("%d watches left after stop, want 1", len(v.ws))
	}
}
