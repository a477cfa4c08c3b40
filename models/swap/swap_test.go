package swap_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/swap"
	"github.com/edgedrun/edged/pipeline"
)

// TestPushActivates: a good push over HTTP goes through every step, the line's results
// name the new version from then on, the event stream tells each step, and the metrics
// and audit log say so.
func TestPushActivates(t *testing.T) {
	l := newLine(t, lineOpts{})
	m, onnx := l.signed("2", good)
	r := l.put("/v1/models/lin/2", m, onnx)
	if r.status != http.StatusOK {
		t.Fatalf("push: %d %s", r.status, r.raw)
	}
	rep := r.report
	if rep.Name != modelName || rep.Version != "2" || rep.Previous != "1" || rep.Staged || rep.SHA256 != m.SHA256 || rep.ID == "" {
		t.Errorf("report %+v", rep)
	}
	want := []string{swap.StepReceived, swap.StepVerified, swap.StepInstalled, swap.StepLoaded, swap.StepChecked, swap.StepWarmed, swap.StepGolden, swap.StepActivated}
	var steps []string
	for _, s := range rep.Steps {
		steps = append(steps, s.Name)
	}
	if !slices.Equal(steps, want) {
		t.Errorf("report steps %v, want %v", steps, want)
	}
	var evSteps []string
	for _, ev := range l.ev.of(rep.ID) {
		evSteps = append(evSteps, ev.Step)
		if ev.Name != modelName || ev.Version != "2" {
			t.Errorf("event %+v", ev)
		}
	}
	if !slices.Equal(evSteps, want) {
		t.Errorf("event steps %v, want %v", evSteps, want)
	}
	l.serving("2")
	if got := swapsCounted(t, l, modelName, swap.ResultOK); got != 1 {
		t.Errorf("edged_model_swaps_total{result=ok} = %v", got)
	}
	recs := l.audit()
	if len(recs) == 0 || recs[len(recs)-1].Action != "push" || recs[len(recs)-1].Result != "ok" || recs[len(recs)-1].KeyID != m.KeyID || !strings.HasPrefix(recs[len(recs)-1].Via, "http ") {
		t.Errorf("audit %+v", recs)
	}
	list, err := l.mgr.List()
	if err != nil || len(list) != 1 || list[0].Active != "2" || len(list[0].Versions) != 2 || len(list[0].Swaps) != 1 || list[0].Swaps[0].From != "1" || list[0].Swaps[0].To != "2" {
		t.Errorf("list %+v (%v)", list, err)
	}
	// The same build pushed again is nothing to do.
	if r := l.put("/v1/models/lin/2", m, onnx); r.status != http.StatusOK {
		t.Errorf("same push again: %d %s", r.status, r.raw)
	}
	l.serving("2")
	// The list is open; the changes need the admin token.
	resp, err := l.client.Get(l.srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/models: %d", resp.StatusCode)
	}
	resp, err = l.client.Post(l.srv.URL+"/v1/models/lin/rollback", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("rollback without the admin token: %d", resp.StatusCode)
	}
	l.serving("2")
}

// swapsCounted reads edged_model_swaps_total{name,result}.
func swapsCounted(t *testing.T, l *line, name, result string) float64 {
	t.Helper()
	mfs, err := l.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edged_model_swaps_total" {
			continue
		}
		for _, m := range mf.Metric {
			lbl := map[string]string{}
			for _, lp := range m.Label {
				lbl[lp.GetName()] = lp.GetValue()
			}
			if lbl["name"] == name && lbl["result"] == result {
				return m.Counter.GetValue()
			}
		}
	}
	return 0
}

// TestStageActivateRollback: a staged model is installed and checked but the line keeps
// its model; activating it swaps; rollback goes back, and back again.
func TestStageActivateRollback(t *testing.T) {
	l := newLine(t, lineOpts{})
	if r := l.post("/v1/models/lin/rollback"); r.status != http.StatusNotFound {
		t.Errorf("rollback with no earlier version: %d %s", r.status, r.raw)
	}
	if r := l.post("/v1/models/lin/9/activate"); r.status != http.StatusNotFound {
		t.Errorf("activate a version not installed: %d %s", r.status, r.raw)
	}
	m, onnx := l.signed("2", good)
	r := l.put("/v1/models/lin/2?stage=1", m, onnx)
	if r.status != http.StatusOK || !r.report.Staged {
		t.Fatalf("stage: %d %s", r.status, r.raw)
	}
	l.serving("1")
	if _, err := os.Stat(filepath.Join(l.dir, modelName, "2", models.ModelFile)); err != nil {
		t.Fatalf("staged version not installed: %v", err)
	}
	if r := l.post("/v1/models/lin/2/activate"); r.status != http.StatusOK || r.report.Previous != "1" {
		t.Fatalf("activate: %d %s", r.status, r.raw)
	}
	l.serving("2")
	r = l.post("/v1/models/lin/rollback")
	if r.status != http.StatusOK || r.report.Version != "1" || r.report.Previous != "2" {
		t.Fatalf("rollback: %d %s", r.status, r.raw)
	}
	if last := r.report.Steps[len(r.report.Steps)-1].Name; last != swap.StepRolledBack {
		t.Errorf("rollback's last step %q", last)
	}
	l.serving("1")
	// Through the command an MQTT client sends.
	c := mustCommand(t, map[string]any{"id": "rb-2", "action": "rollback", "name": modelName})
	rep, err := l.mgr.Handle(context.Background(), c, "mqtt")
	if err != nil || rep.Version != "2" || rep.ID != "rb-2" {
		t.Fatalf("rollback command: %+v %v", rep, err)
	}
	l.serving("2")
	c = mustCommand(t, map[string]any{"id": "act-1", "action": "activate", "name": modelName, "version": "1"})
	if _, err := l.mgr.Handle(context.Background(), c, "mqtt"); err != nil {
		t.Fatal(err)
	}
	l.serving("1")
	var actions []string
	for _, a := range l.audit() {
		actions = append(actions, a.Action+":"+a.Result)
	}
	want := []string{"refuse:", "refuse:", "stage:ok", "activate:ok", "rollback:ok", "rollback:ok", "activate:ok"}
	if len(actions) != len(want) {
		t.Fatalf("audit actions %v", actions)
	}
	for i := range want {
		if !strings.HasPrefix(actions[i], want[i]) {
			t.Errorf("audit %d: %s, want %s", i, actions[i], want[i])
		}
	}
}

// TestConcurrentPushesSerialised: two pushes at once both succeed, one after the other:
// the second's previous version is the first's, and their steps never interleave.
func TestConcurrentPushesSerialised(t *testing.T) {
	l := newLine(t, lineOpts{})
	var wg sync.WaitGroup
	reps := make([]*swap.Report, 2)
	errs := make([]error, 2)
	for i, v := range []string{"2", "3"} {
		m, onnx := l.signed(v, good)
		wg.Go(func() {
			reps[i], errs[i] = l.mgr.Push(context.Background(), swap.Request{ID: "push-" + v, Manifest: m, Body: strings.NewReader(string(onnx)), Via: "test"})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	first, second := reps[0], reps[1]
	if first.Previous != "1" {
		first, second = second, first
	}
	if first.Previous != "1" || second.Previous != first.Version {
		t.Fatalf("previous versions %q then %q: not one after the other", first.Previous, second.Previous)
	}
	l.serving(second.Version)
	// From install to activation, one push's events run without the other's between.
	var ids []string
	for _, ev := range l.ev.all() {
		if ev.Step == swap.StepReceived || ev.Step == swap.StepVerified {
			continue
		}
		if len(ids) == 0 || ids[len(ids)-1] != ev.ID {
			ids = append(ids, ev.ID)
		}
	}
	if len(ids) != 2 {
		t.Errorf("the pushes' steps interleaved: %v", ids)
	}
}

// TestKeepPrunes: with keep 2, pushing versions 2, 3 and 4 leaves 3 (previous) and 4
// (active); 1 and 2 are removed and audited.
func TestKeepPrunes(t *testing.T) {
	l := newLine(t, lineOpts{keep: 2})
	for _, v := range []string{"2", "3", "4"} {
		m, onnx := l.signed(v, good)
		if _, err := l.mgr.Push(context.Background(), swap.Request{Manifest: m, Body: strings.NewReader(string(onnx)), Via: "cli"}); err != nil {
			t.Fatal(err)
		}
	}
	l.serving("4")
	ents, err := os.ReadDir(filepath.Join(l.dir, modelName))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"3", "4", models.ActiveFile}; !slices.Equal(names, want) {
		t.Errorf("model folder holds %v, want %v", names, want)
	}
	var removed []string
	for _, a := range l.audit() {
		if a.Action == "remove" {
			removed = append(removed, a.Version)
		}
	}
	slices.Sort(removed)
	if !slices.Equal(removed, []string{"1", "2"}) {
		t.Errorf("audited removals %v", removed)
	}
	if prev, err := l.repo.Previous(modelName); err != nil || prev != "3" {
		t.Errorf("previous %q %v", prev, err)
	}
}

func pushReq(m *models.Manifest, onnx []byte) swap.Request {
	return swap.Request{Manifest: m, Body: strings.NewReader(string(onnx)), Via: "test"}
}

// refusingSwap is the real pipeline whose SwapModel fails, as it would if the line's
// inspections changed between the check and the swap.
type refusingSwap struct{ *pipeline.Pipeline }

func (refusingSwap) SwapModel(*pipeline.Model) (*pipeline.Model, <-chan struct{}, error) {
	return nil, nil, errors.New("inspections changed under the swap")
}

// TestSwapFailureRestoresPointer: the repository pointer was moved to the new version
// when the pipeline refused it; it goes back, the old model serves, the new version is
// removed again, and Close stays safe twice.
func TestSwapFailureRestoresPointer(t *testing.T) {
	l := newLine(t, lineOpts{wrap: func(p *pipeline.Pipeline) swap.Pipeline { return refusingSwap{p} }})
	before := l.listing()
	m, onnx := l.signed("2", good)
	_, err := l.mgr.Push(context.Background(), pushReq(m, onnx))
	var se *swap.Error
	if !errors.As(err, &se) || se.Step != swap.StepActivated || se.Result != swap.ResultFailed {
		t.Fatalf("push with a failing swap: %v", err)
	}
	l.serving("1")
	if after := l.listing(); !slices.Equal(after, before) {
		t.Errorf("repository holds %v, held %v", after, before)
	}
	if _, err := l.repo.Previous(modelName); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("previous after the failed swap: %v (the removed version is no rollback target)", err)
	}
}

// TestPushModelNoInspectionRuns: a model for a config about to name it is verified,
// loaded, warmed and golden-tested like any other; staged it stays inactive, pushed it
// becomes the active version the next start loads, and the line goes on with its own.
func TestPushModelNoInspectionRuns(t *testing.T) {
	l := newLine(t, lineOpts{})
	m, onnx := l.signed("1", good)
	m.Name = "spare"
	l.sign(m)
	if r := l.put("/v1/models/spare/1?stage=1", m, onnx); r.status != http.StatusOK || !r.report.Staged {
		t.Fatalf("stage: %d %s", r.status, r.raw)
	}
	if _, err := l.repo.ActiveVersion("spare"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("a staged model has an active version: %v", err)
	}
	r := l.put("/v1/models/spare/1", m, onnx)
	if r.status != http.StatusOK || r.report.Staged {
		t.Fatalf("push: %d %s", r.status, r.raw)
	}
	var steps []string
	for _, s := range r.report.Steps {
		steps = append(steps, s.Name)
	}
	if want := []string{swap.StepReceived, swap.StepVerified, swap.StepInstalled, swap.StepLoaded, swap.StepChecked, swap.StepWarmed, swap.StepGolden, swap.StepActivated}; !slices.Equal(steps, want) {
		t.Errorf("steps %v, want %v", steps, want)
	}
	if v, err := l.repo.ActiveVersion("spare"); err != nil || v != "1" {
		t.Fatalf("active version of spare: %q %v", v, err)
	}
	if _, ok := l.p.Model("spare"); ok {
		t.Error("the pipeline serves a model no inspection runs")
	}
	l.serving("1")
	// A broken one is refused all the same: the checks that need no inspection still run.
	bad, badOnnx := l.signed("2", nanOut)
	bad.Name = "spare"
	l.sign(bad)
	if r := l.put("/v1/models/spare/2", bad, badOnnx); r.status != http.StatusUnprocessableEntity || r.err.Step != swap.StepWarmed {
		t.Fatalf("a NaN model for spare: %d %s", r.status, r.raw)
	}
	if v, _ := l.repo.ActiveVersion("spare"); v != "1" {
		t.Errorf("active version of spare %q after a refused push, want 1", v)
	}
}
