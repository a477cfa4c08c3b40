package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/publish"
)

// holder serves one model name to every inspection that runs it. A swap replaces its
// current generation; batches pin the generation they were gathered for, so the old
// session is only given up once the last of them is finished.
type holder struct {
	name string
	// cur is read without the lock by the gathering stage, to notice a swap between
	// two frames of one batch.
	cur atomic.Pointer[generation]
	// ins are the inspections that run this model; each knows its index here.
	ins []*inspection
	// mu guards the pin counts and retirement of every generation of this holder.
	mu sync.Mutex
}

// generation is one model loaded under a holder's name, with everything built for it:
// its breaker, the ModelRef its results carry, and each inspection's postprocessor.
type generation struct {
	model *Model
	ref   publish.ModelRef
	// The breaker is per generation, so a new model starts closed. A tripped breaker
	// says the model now serving failed on this box; the usual reason to swap is to
	// replace that model (a fix, or the rollback from a bad push), and carrying the
	// open state over would fail the new one without ever running it. Should the
	// cause be outside the model (an accelerator gone), the new breaker trips again
	// after its MinCalls.
	br *breaker.Breaker
	// post[i] is the postprocessor of the holder's inspection i: this model's
	// postprocess with that inspection's threshold. SetInspection replaces the current
	// generation's.
	post []atomic.Pointer[inference.Postprocessor]
	// Under the holder's mu: batches gathered for this generation and not yet
	// finished, and whether a swap has replaced it. idle closes once both say done.
	pins    int
	retired bool
	idle    chan struct{}
}

func (h *holder) pin() *generation {
	h.mu.Lock()
	g := h.cur.Load()
	g.pins++
	h.mu.Unlock()
	return g
}

func (h *holder) unpin(g *generation) {
	h.mu.Lock()
	g.pins--
	if g.pins == 0 && g.retired {
		close(g.idle)
	}
	h.mu.Unlock()
}

// newGeneration builds what m needs to serve h's inspections, each with its current
// threshold. It changes nothing.
func (p *Pipeline) newGeneration(h *holder, m *Model) (*generation, error) {
	mf := m.Manifest
	g := &generation{
		model: m,
		ref:   publish.ModelRef{Name: mf.Name, Version: mf.Version, SHA256: mf.SHA256},
		post:  make([]atomic.Pointer[inference.Postprocessor], len(h.ins)),
		idle:  make(chan struct{}),
	}
	for i, in := range h.ins {
		post, err := inference.NewPostprocessor(mf.Postprocess, in.threshold)
		if err != nil {
			return nil, fmt.Errorf("inspection %q: model %q version %q: %w", in.name, mf.Name, mf.Version, err)
		}
		g.post[i].Store(post)
	}
	bc := p.cfg.Breaker
	bc.Name = "inference:" + mf.Name
	bc.Log = p.cfg.Log
	br, err := breaker.New(bc, p.cfg.Breakers)
	if err != nil {
		return nil, fmt.Errorf("model %q version %q: %w", mf.Name, mf.Version, err)
	}
	g.br = br
	return g, nil
}

// Model returns the model now serving name.
func (p *Pipeline) Model(name string) (*Model, bool) {
	h, ok := p.holders[name]
	if !ok {
		return nil, false
	}
	return h.cur.Load().model, true
}

// CheckModel reports whether m could serve every inspection that runs a model named
// m.Manifest.Name, changing nothing: the same kind of preprocessing, for a scalars
// model only features the model now serving takes (those are what the sources give),
// a per-frame input the preprocessing fills exactly, batches as large as the source
// gathers, and a postprocessor for each inspection's threshold.
// ErrModelNotRun is returned by CheckModel and SwapModel for a model that no
// inspection runs: there is nothing to check it against and nothing to swap.
var ErrModelNotRun = errors.New("no inspection runs a model of that name")

func (p *Pipeline) CheckModel(m *Model) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.checkModel(m)
	return err
}

func (p *Pipeline) checkModel(m *Model) (*holder, error) {
	if m == nil || m.Manifest == nil || m.Session == nil {
		return nil, errors.New("check model: no model loaded")
	}
	mf := m.Manifest
	h, ok := p.holders[mf.Name]
	if !ok {
		return nil, fmt.Errorf("model %q version %q: %w", mf.Name, mf.Version, ErrModelNotRun)
	}
	cur := h.cur.Load().model.Manifest
	pre, err := inference.NewPreprocessor(mf.Preprocess)
	if err != nil {
		return nil, fmt.Errorf("inspection %q: model %q version %q: %w", h.ins[0].name, mf.Name, mf.Version, err)
	}
	// The session's per-frame input length is only known from a batch; one frame's
	// worth is small, and this runs once per swap.
	b, err := m.Session.NewBatch(1)
	if err != nil {
		return nil, fmt.Errorf("inspection %q: model %q version %q: %w", h.ins[0].name, mf.Name, mf.Version, err)
	}
	inputLen, outputLen := b.InputLen, b.OutputLen
	_ = b.Close()
	for _, in := range h.ins {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("inspection %q: model %q version %q: %s", in.name, mf.Name, mf.Version, fmt.Sprintf(format, args...))
		}
		if preprocessKind(mf.Preprocess) != preprocessKind(cur.Preprocess) {
			return nil, bad("preprocess kind %q, the version now serving (%q) takes %q", preprocessKind(mf.Preprocess), cur.Version, preprocessKind(cur.Preprocess))
		}
		if preprocessKind(mf.Preprocess) == models.PreprocessScalars {
			for _, f := range mf.Preprocess.Features {
				if !slices.Contains(cur.Preprocess.Features, f) {
					return nil, bad("feature %q is not among those of the version now serving (%q): %v", f, cur.Version, cur.Preprocess.Features)
				}
			}
		}
		if inputLen != pre.InputLen() {
			return nil, bad("model input holds %d values per frame, preprocessing makes %d", inputLen, pre.InputLen())
		}
		if mb := m.Session.MaxBatch(); mb < in.src.batch {
			return nil, bad("takes batches of at most %d, source %q gathers %d", mb, in.src.spec.Name, in.src.batch)
		}
		post, err := inference.NewPostprocessor(mf.Postprocess, in.threshold)
		if err != nil {
			return nil, bad("threshold %v: %v", in.threshold, err)
		}
		if outputLen != len(post.Labels()) {
			return nil, bad("model output holds %d values per frame, postprocessing reads %d (labels %v)", outputLen, len(post.Labels()), mf.Postprocess.Labels)
		}
	}
	return h, nil
}

func preprocessKind(p models.Preprocess) string {
	if p.Kind == "" {
		return models.PreprocessImage
	}
	return p.Kind
}

// SwapModel puts m in place of the model of the same name for every inspection that
// runs it, after CheckModel. Batches pinned before the call finish on the old model;
// a frame taken from a ring after SwapModel returns runs on m, and none is dropped.
// idle closes once no batch uses old any more: the caller then closes old.Session.
func (p *Pipeline) SwapModel(m *Model) (old *Model, idle <-chan struct{}, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, err := p.checkModel(m)
	if err != nil {
		return nil, nil, err
	}
	// Only SwapModel changes cur, and p.mu keeps it out while this one runs.
	prev := h.cur.Load()
	if prev.model.Session == m.Session {
		// Closing "the old session" after idle would close the one serving.
		return nil, nil, fmt.Errorf("model %q version %q: its session is the one already serving", m.Manifest.Name, m.Manifest.Version)
	}
	g, err := p.newGeneration(h, m)
	if err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	h.cur.Store(g)
	prev.retired = true
	if prev.pins == 0 {
		close(prev.idle)
	}
	h.mu.Unlock()
	p.metrics.modelInfo.DeleteLabelValues(prev.ref.Name, prev.ref.Version, prev.ref.SHA256)
	p.metrics.modelInfo.WithLabelValues(g.ref.Name, g.ref.Version, g.ref.SHA256).Set(1)
	p.cfg.Log.Info("model swapped", "model", m.Manifest.Name, "from", prev.ref.Version, "to", g.ref.Version, "sha256", g.ref.SHA256)
	return prev.model, prev.idle, nil
}
