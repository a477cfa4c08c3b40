package pipeline

import (
	"context"
	"sync"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/publish"
)

// Verdicts is a Sink that also hands results to drivers waiting for the verdicts on
// their readings (drivers.Verdicts: an upload that answers with its verdict), then
// passes every result on. Results nobody waits for cost one map lookup.
type Verdicts struct {
	next Sink
	// per is how many inspections read each source: how many verdicts a reading gets.
	per map[string]int
	mu  sync.Mutex
	ws  map[string]*watch // by trace id
}

type watch struct {
	source string
	want   int
	got    []drivers.Verdict
	done   chan struct{}
}

// NewVerdicts wraps next; inspections are the pipeline's, to count the verdicts each
// source's readings get.
func NewVerdicts(next Sink, inspections []Inspection) *Verdicts {
	v := &Verdicts{next: next, per: map[string]int{}, ws: map[string]*watch{}}
	for _, in := range inspections {
		v.per[in.Source]++
	}
	return v
}

// SetNext sets the sink results go on to, for a chain built after the drivers that
// wait on v. Call it before the pipeline runs.
func (v *Verdicts) SetNext(next Sink) { v.next = next }

// Publish gives r to a driver waiting for it, then to the next sink.
func (v *Verdicts) Publish(ctx context.Context, r *publish.Result) error {
	v.mu.Lock()
	if w, ok := v.ws[r.TraceID]; ok && w.source == r.Source && len(w.got) < w.want {
		w.got = append(w.got, drivers.Verdict{
			ID: r.ID, Inspection: r.Inspection, Verdict: r.Verdict, Label: r.Label, Score: r.Score,
			PartID: r.PartID, Reason: r.Reason, Action: r.Action,
		})
		if len(w.got) == w.want {
			close(w.done)
		}
	}
	v.mu.Unlock()
	return v.next.Publish(ctx, r)
}

// Watch implements drivers.Verdicts.
func (v *Verdicts) Watch(source, traceID string) (func(context.Context) ([]drivers.Verdict, error), func()) {
	w := &watch{source: source, want: v.per[source], done: make(chan struct{})}
	if w.want == 0 {
		close(w.done)
	}
	v.mu.Lock()
	v.ws[traceID] = w
	v.mu.Unlock()
	wait := func(ctx context.Context) ([]drivers.Verdict, error) {
		var err error
		select {
		case <-w.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		return append([]drivers.Verdict(nil), w.got...), err
	}
	stop := func() {
		v.mu.Lock()
		if v.ws[traceID] == w {
			delete(v.ws, traceID)
		}
		v.mu.Unlock()
	}
	return wait, stop
}

var _ drivers.Verdicts = (*Verdicts)(nil)
