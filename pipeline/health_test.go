package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
)

// flaky goes down, comes back, then stops with a fault retrying cannot mend.
type flaky struct{ step chan struct{} }

func (f *flaky) Run(ctx context.Context, e drivers.Emitter) error {
	e.Health(false, errors.New("dial tcp 127.0.0.1:502: connection refused"))
	<-f.step
	e.Health(true, nil)
	<-f.step
	return errors.New(`node "ns=2;s=Nope": StatusBadNodeIDUnknown`)
}

func TestHealthKeepsTheLastFault(t *testing.T) {
	f := &flaky{step: make(chan struct{})}
	p, err := New(Config{Workers: 1, RingSize: 4, DrainTimeout: time.Second, Sink: &sink{}}, []Source{{Spec: drivers.Spec{Name: "plc"}, Driver: f}}, []Inspection{{Name: "el", Source: "plc", Model: model(t)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := p.Health("nope"); ok {
		t.Error("Health of an unknown source: ok")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	want := func(up bool, fault string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			u, f, _ := p.Health("plc")
			if u == up && f == fault {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health %v %q, want %v %q", u, f, up, fault)
			}
			time.Sleep(time.Millisecond)
		}
	}
	want(false, "dial tcp 127.0.0.1:502: connection refused")
	f.step <- struct{}{}
	want(true, "dial tcp 127.0.0.1:502: connection refused")
	f.step <- struct{}{}
	want(false, `driver stopped: node "ns=2;s=Nope": StatusBadNodeIDUnknown`)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
