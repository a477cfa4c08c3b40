// Package swap provides the model swap manager: it takes a model pushed to the box (over
// the admin HTTP API or an MQTT command with a download URL), verifies its signature and
// bytes, installs it into the repository, loads it, checks it against the inspections
// that run it, warms it up, runs its golden inputs, and swaps it in while the line runs.
// Any failure leaves the serving model in place and the repository as it was, and every
// change is audited, counted and published as an event. Rollback to the previous
// version is one call.
package swap

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/fetch"
	"github.com/edgedrun/edged/pipeline"
)

// Pipeline is what the manager needs of the running pipeline.
type Pipeline interface {
	CheckModel(*pipeline.Model) error
	SwapModel(*pipeline.Model) (*pipeline.Model, <-chan struct{}, error)
	Model(name string) (*pipeline.Model, bool)
}

var _ Pipeline = (*pipeline.Pipeline)(nil)

// Config wires a Manager.
type Config struct {
	Repo    *models.Repository
	Backend inference.Backend
	Options inference.SessionOptions
	// Keyring holds the trusted keys; nil or empty only makes sense with AllowUnsigned.
	Keyring *models.Keyring
	// AllowUnsigned accepts models without a signature (each is logged at Warn). A
	// signature that does not verify is refused all the same.
	AllowUnsigned bool
	// Keep is how many versions per name stay installed (0 = 3); the active and the
	// previous one always stay.
	Keep int
	// MaxSize is the largest model accepted in bytes (0 = 1 GiB).
	MaxSize int64
	// WarmupRuns is how many runs a new model makes before it serves (0 = 3).
	WarmupRuns int
	// MaxBatch is the frames per warm-up and golden run: the pipeline's max batch, so
	// that warm-up allocates what serving will (0 = 8; the model's own limit caps it).
	MaxBatch int
	Fetch    fetch.Config
	// Events publishes an event on the box's event topic; nil publishes none.
	Events     func(kind string, fields any)
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Results of a change, as in edged_model_swaps_total{result}.
const (
	ResultOK      = "ok"
	ResultStaged  = "staged"
	ResultRefused = "refused" // the input was bad: name, manifest, signature, size, hash
	ResultFailed  = "failed"  // the model or the box failed: load, check, warm-up, golden, activation
)

// Steps of a change, as in events and reports.
const (
	StepReceived   = "received"
	StepVerified   = "verified"
	StepInstalled  = "installed"
	StepLoaded     = "loaded"
	StepChecked    = "checked"
	StepWarmed     = "warmed"
	StepGolden     = "golden"
	StepActivated  = "activated"
	StepStaged     = "staged"
	StepRolledBack = "rolled_back"
	StepFailed     = "failed"
)

// EventKind is the kind of every event the manager publishes.
const EventKind = "model"

// Event is the fields of a "model" event.
type Event struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Version string  `json:"version"`
	Step    string  `json:"step"`
	TookMS  float64 `json:"took_ms"`
	Reason  string  `json:"reason,omitempty"`
	// FailedStep is the step that failed, on a "failed" event.
	FailedStep string `json:"failed_step,omitempty"`
}

// Request is one model pushed to the box.
type Request struct {
	// ID is echoed in events and the report; "" gets a generated one.
	ID       string
	Manifest *models.Manifest
	// Body is the model file; it is read once, after the manifest passed its checks.
	Body io.Reader
	// Stage installs and checks the model without activating it.
	Stage bool
	// Via says where the request came from, for the audit log ("http 1.2.3.4:5", "mqtt").
	Via string
}

// Step is one finished step of a change and how long it took.
type Step struct {
	Name   string  `json:"step"`
	TookMS float64 `json:"took_ms"`
}

// Report says what a change did.
type Report struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	Version  string  `json:"version"`
	SHA256   string  `json:"sha256"`
	Previous string  `json:"previous,omitempty"`
	Staged   bool    `json:"staged"`
	Steps    []Step  `json:"steps"`
	TookMS   float64 `json:"took_ms"`
}

// Error is why a change was not made: the step that failed, whether the input was
// refused or the model or box failed, and the HTTP status that says so.
type Error struct {
	Step   string
	Result string // ResultRefused or ResultFailed
	Status int
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// SwapRecord is one change of a model, kept in memory for the status page.
type SwapRecord struct {
	Time   time.Time `json:"time"`
	ID     string    `json:"id"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Action string    `json:"action"`
	Result string    `json:"result"`
	Reason string    `json:"reason,omitempty"`
}

// ModelStatus is one model name in the repository.
type ModelStatus struct {
	Name     string               `json:"name"`
	Active   string               `json:"active"`
	Versions []models.VersionInfo `json:"versions"`
	Swaps    []SwapRecord         `json:"swaps"`
}

// swapHistory is how many swap records per name List shows.
const swapHistory = 20

// Manager makes model changes one at a time.
type Manager struct {
	cfg     Config
	p       Pipeline
	log     *slog.Logger
	swaps   *prometheus.CounterVec
	keyring *models.Keyring

	// sem serialises changes: a channel rather than a mutex so a waiting change gives
	// up when its context ends.
	sem chan struct{}
	// Guarded by sem: the sessions the manager owns (one per serving model name).
	serving map[string]*pipeline.Model
	closed  bool

	// retiring tracks the goroutines that close replaced sessions once idle.
	retiring sync.WaitGroup

	mu      sync.Mutex // guards history
	history map[string][]SwapRecord
}

// New builds a manager for the models serving in p, taking ownership of their sessions:
// Close closes them. It starts nothing.
func New(cfg Config, p Pipeline) (*Manager, error) {
	if cfg.Repo == nil {
		return nil, errors.New("model swap: no repository")
	}
	if cfg.Backend == nil {
		return nil, errors.New("model swap: no inference backend")
	}
	if p == nil {
		return nil, errors.New("model swap: no pipeline")
	}
	if cfg.Keep < 0 {
		return nil, fmt.Errorf("model swap: keep %d is below 0", cfg.Keep)
	}
	if cfg.Keep == 0 {
		cfg.Keep = 3
	}
	if cfg.MaxSize < 0 {
		return nil, fmt.Errorf("model swap: max size %d is below 0", cfg.MaxSize)
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = 1 << 30
	}
	if cfg.WarmupRuns < 0 {
		return nil, fmt.Errorf("model swap: warm-up runs %d is below 0", cfg.WarmupRuns)
	}
	if cfg.WarmupRuns == 0 {
		cfg.WarmupRuns = 3
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 8
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	kr := cfg.Keyring
	if kr == nil {
		var err error
		if kr, err = models.NewKeyring(nil); err != nil {
			return nil, fmt.Errorf("model swap: empty keyring: %w", err)
		}
	}
	swaps := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_model_swaps_total",
		Help: "Model pushes, activations and rollbacks by model name and result (ok, staged, refused, failed).",
	}, []string{"name", "result"})
	if err := cfg.Registerer.Register(swaps); err != nil {
		return nil, fmt.Errorf("model swap: register metrics: %w", err)
	}
	m := &Manager{
		cfg: cfg, p: p, log: cfg.Log, swaps: swaps, keyring: kr,
		sem: make(chan struct{}, 1), serving: map[string]*pipeline.Model{},
		history: map[string][]SwapRecord{},
	}
	names, err := cfg.Repo.Names()
	if err != nil {
		cfg.Registerer.Unregister(swaps)
		return nil, fmt.Errorf("model swap: %w", err)
	}
	for _, n := range names {
		if pm, ok := p.Model(n); ok && pm != nil {
			m.serving[n] = pm
		}
		// At zero from the start, so that increase() in an alert rule sees the first
		// failed swap of a model rather than only the ones after it.
		for _, r := range []string{ResultOK, ResultStaged, ResultRefused, ResultFailed} {
			swaps.WithLabelValues(n, r)
		}
	}
	return m, nil
}

// lock waits for the change in progress, if any, or for ctx to end.
func (m *Manager) lock(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the model change in progress: %w", ctx.Err())
	}
	if m.closed {
		<-m.sem
		return errors.New("model swap manager is closed")
	}
	return nil
}

func (m *Manager) unlock() { <-m.sem }

// op is one change in progress: what it reports, audits and publishes.
type op struct {
	m      *Manager
	action string // push, stage, activate, rollback
	via    string
	rep    *Report
	begin  time.Time
	stepAt time.Time
	keyID  string
	nameOK bool // the name passed CheckName, so it may label a metric
}

func (m *Manager) newOp(id, action, via, name, version string) *op {
	if id == "" {
		id = newID()
	}
	now := time.Now()
	return &op{
		m: m, action: action, via: via, begin: now, stepAt: now,
		rep:    &Report{ID: id, Name: name, Version: version, Steps: []Step{}},
		nameOK: checkNames(name, "x") == nil,
	}
}

// step records a finished step and publishes it.
func (o *op) step(name string) {
	now := time.Now()
	took := msSince(o.stepAt, now)
	o.stepAt = now
	o.rep.Steps = append(o.rep.Steps, Step{Name: name, TookMS: took})
	o.m.event(Event{ID: o.rep.ID, Name: o.rep.Name, Version: o.rep.Version, Step: name, TookMS: took})
}

// fail ends the op with err at step: counted, audited, recorded and published.
func (o *op) fail(step, result string, status int, err error) error {
	e := &Error{Step: step, Result: result, Status: status, Err: err}
	o.rep.TookMS = msSince(o.begin, time.Now())
	action := o.action
	if result == ResultRefused {
		action = models.AuditRefuse
	}
	o.m.audit(o, action, err.Error())
	o.m.count(o, result)
	o.m.record(o, result, err.Error())
	o.m.event(Event{ID: o.rep.ID, Name: o.rep.Name, Version: o.rep.Version, Step: StepFailed,
		TookMS: o.rep.TookMS, Reason: err.Error(), FailedStep: step})
	o.m.log.Warn("model change not made", "id", o.rep.ID, "action", o.action, "model", o.rep.Name,
		"version", o.rep.Version, "step", step, "result", result, "via", o.via, "err", err)
	return e
}

// done ends the op successfully.
func (o *op) done(result string) *Report {
	o.rep.TookMS = msSince(o.begin, time.Now())
	action := o.action
	if result == ResultStaged {
		action = models.AuditStage
	}
	o.m.audit(o, action, ResultOK)
	o.m.count(o, result)
	o.m.record(o, result, "")
	o.m.log.Info("model changed", "id", o.rep.ID, "action", action, "model", o.rep.Name,
		"version", o.rep.Version, "previous", o.rep.Previous, "via", o.via, "took_ms", o.rep.TookMS)
	return o.rep
}

func (m *Manager) audit(o *op, action, result string) {
	rec := models.AuditRecord{
		Time: time.Now().UTC(), Action: action, Name: o.rep.Name, Version: o.rep.Version,
		SHA256: o.rep.SHA256, KeyID: o.keyID, Via: o.via, Result: result,
	}
	if err := m.cfg.Repo.Audit(rec); err != nil {
		m.log.Error("audit log not written", "action", action, "model", o.rep.Name, "version", o.rep.Version, "err", err)
	}
}

func (m *Manager) count(o *op, result string) {
	name := o.rep.Name
	if !m.known(o) {
		// A name no inspection runs is whatever was sent: it must not make a series.
		name = "unknown"
	}
	m.swaps.WithLabelValues(name, result).Inc()
}

// known reports whether o is about a model the line runs, whose name may label metrics
// and keep a history.
func (m *Manager) known(o *op) bool {
	if !o.nameOK {
		return false
	}
	_, ok := m.p.Model(o.rep.Name)
	return ok
}

func (m *Manager) record(o *op, result, reason string) {
	if !m.known(o) {
		return
	}
	r := SwapRecord{Time: time.Now().UTC(), ID: o.rep.ID, From: o.rep.Previous, To: o.rep.Version,
		Action: o.action, Result: result, Reason: reason}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := append([]SwapRecord{r}, m.history[o.rep.Name]...)
	if len(h) > swapHistory {
		h = h[:swapHistory]
	}
	m.history[o.rep.Name] = h
}

func (m *Manager) event(e Event) {
	if m.cfg.Events != nil {
		m.cfg.Events(EventKind, e)
	}
}

// Push verifies, installs, checks and (unless r.Stage) activates a model. On any failure
// the serving model stays, and a version this push installed is removed again.
func (m *Manager) Push(ctx context.Context, r Request) (*Report, error) {
	return m.push(ctx, r, func(context.Context) (io.ReadCloser, error) {
		if r.Body == nil {
			return nil, errors.New("no model body")
		}
		return io.NopCloser(r.Body), nil
	})
}

// opener opens the model's bytes once the manifest has been checked, so a download
// starts only for a model that would be taken.
type opener func(ctx context.Context) (io.ReadCloser, error)

func (m *Manager) push(ctx context.Context, r Request, open opener) (*Report, error) {
	action := models.AuditPush
	if r.Stage {
		action = models.AuditStage
	}
	mf := r.Manifest
	if mf == nil {
		o := m.newOp(r.ID, action, r.Via, "", "")
		return nil, o.fail(StepReceived, ResultRefused, http.StatusBadRequest, errors.New("push: no manifest"))
	}
	o := m.newOp(r.ID, action, r.Via, mf.Name, mf.Version)
	o.rep.SHA256 = mf.SHA256
	o.keyID = mf.KeyID
	if err := checkNames(mf.Name, mf.Version); err != nil {
		return nil, o.fail(StepReceived, ResultRefused, http.StatusBadRequest, fmt.Errorf("push: %w", err))
	}
	if err := mf.Validate(); err != nil {
		return nil, o.fail(StepReceived, ResultRefused, http.StatusBadRequest, fmt.Errorf("push %s %s: %w", mf.Name, mf.Version, err))
	}
	if mf.Size > m.cfg.MaxSize {
		return nil, o.fail(StepReceived, ResultRefused, http.StatusRequestEntityTooLarge,
			fmt.Errorf("push %s %s: size %d bytes is above the largest model accepted, %d (models.max_size)", mf.Name, mf.Version, mf.Size, m.cfg.MaxSize))
	}
	o.step(StepReceived)
	if err := m.verify(mf); err != nil {
		return nil, o.fail(StepVerified, ResultRefused, http.StatusForbidden, err)
	}
	o.step(StepVerified)

	if err := m.lock(ctx); err != nil {
		return nil, o.fail(StepInstalled, ResultFailed, http.StatusServiceUnavailable, fmt.Errorf("push %s %s: %w", mf.Name, mf.Version, err))
	}
	defer m.unlock()
	had := m.installed(mf.Name, mf.Version)
	if err := m.install(ctx, mf, open); err != nil {
		result, status := installResult(err), installStatus(err)
		var e *Error
		if errors.As(err, &e) {
			result, status = e.Result, e.Status
		}
		return nil, o.fail(StepInstalled, result, status, err)
	}
	o.step(StepInstalled)
	// From here a failure takes back what this push installed, so that a refused
	// model leaves nothing behind but its audit line.
	undo := func() {
		if had {
			return
		}
		if err := m.cfg.Repo.Remove(mf.Name, mf.Version); err != nil {
			m.log.Error("refused model not removed from the repository", "model", mf.Name, "version", mf.Version, "err", err)
		}
	}
	if err := m.change(ctx, o, r.Stage); err != nil {
		undo()
		return nil, err
	}
	m.prune(o)
	if r.Stage {
		return o.done(ResultStaged), nil
	}
	return o.done(ResultOK), nil
}

// verify checks the manifest's signature against the trusted keys.
func (m *Manager) verify(mf *models.Manifest) error {
	err := m.keyring.Verify(mf)
	if err == nil {
		return nil
	}
	if errors.Is(err, models.ErrUnsigned) && m.cfg.AllowUnsigned {
		m.log.Warn("unsigned model accepted (models.allow_unsigned is on)", "model", mf.Name, "version", mf.Version, "sha256", mf.SHA256)
		return nil
	}
	return err // names the model, version and key
}

func (m *Manager) installed(name, version string) bool {
	vs, err := m.cfg.Repo.Versions(name)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(vs, func(v models.VersionInfo) bool { return v.Version == version })
}

func (m *Manager) install(ctx context.Context, mf *models.Manifest, open opener) error {
	body, err := open(ctx)
	if err != nil {
		return fmt.Errorf("push %s %s: open the model: %w", mf.Name, mf.Version, err)
	}
	defer body.Close()
	return m.cfg.Repo.InstallStream(mf, body) // its errors name the model and version
}

func installResult(err error) string {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, models.ErrTruncated), errors.Is(err, models.ErrTooLarge),
		errors.Is(err, models.ErrHashMismatch), errors.Is(err, models.ErrVersionExists),
		errors.As(err, &tooBig):
		return ResultRefused
	}
	return ResultFailed
}

func installStatus(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, models.ErrTooLarge), errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, models.ErrTruncated), errors.Is(err, models.ErrHashMismatch):
		return http.StatusUnprocessableEntity
	case errors.Is(err, models.ErrVersionExists):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// Activate makes an installed version serve: load, check, warm up, golden, swap.
func (m *Manager) Activate(ctx context.Context, name, version, via string) (*Report, error) {
	o := m.newOp("", models.AuditActivate, via, name, version)
	return m.activate(ctx, o, StepActivated)
}

// Rollback makes the version that was active before the current one serve again.
func (m *Manager) Rollback(ctx context.Context, name, via string) (*Report, error) {
	o := m.newOp("", models.AuditRollback, via, name, "")
	return m.activate(ctx, o, StepRolledBack)
}

func (m *Manager) activate(ctx context.Context, o *op, final string) (*Report, error) {
	name := o.rep.Name
	check := o.rep.Version
	if o.action == models.AuditRollback {
		check = "x" // the version comes from the repository
	}
	if err := checkNames(name, check); err != nil {
		return nil, o.fail(StepReceived, ResultRefused, http.StatusBadRequest, fmt.Errorf("%s: %w", o.action, err))
	}
	if err := m.lock(ctx); err != nil {
		return nil, o.fail(StepReceived, ResultFailed, http.StatusServiceUnavailable, fmt.Errorf("%s %s %s: %w", o.action, name, o.rep.Version, err))
	}
	defer m.unlock()
	if o.action == models.AuditRollback {
		// Under the lock, so that the target is the previous version of what serves now.
		prev, err := m.cfg.Repo.Previous(name)
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, models.ErrNotFound) {
				status = http.StatusNotFound
			}
			return nil, o.fail(StepReceived, ResultRefused, status, fmt.Errorf("rollback %s: no earlier version to go back to: %w", name, err))
		}
		o.rep.Version = prev
	}
	version := o.rep.Version
	if !m.installed(name, version) {
		return nil, o.fail(StepReceived, ResultRefused, http.StatusNotFound,
			fmt.Errorf("%s %s %s: %w", o.action, name, version, models.ErrNotFound))
	}
	o.step(StepReceived)
	if err := m.change(ctx, o, false); err != nil {
		return nil, err
	}
	if final == StepRolledBack {
		// The swap published "activated"; a rollback says what it was as well.
		o.step(StepRolledBack)
	}
	return o.done(ResultOK), nil
}

// change loads the installed version o names, checks, warms and golden-tests it, and
// (unless stage) swaps it in. It runs under the lock.
func (m *Manager) change(ctx context.Context, o *op, stage bool) error {
	name, version := o.rep.Name, o.rep.Version
	cur, serving := m.p.Model(name)
	if serving && cur != nil && cur.Manifest.Version != version {
		o.rep.Previous = cur.Manifest.Version
	}
	mf, onnx, err := m.cfg.Repo.Load(name, version)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, models.ErrNotFound) {
			status = http.StatusNotFound
		}
		return o.fail(StepLoaded, ResultFailed, status, fmt.Errorf("%s %s %s: %w", o.action, name, version, err))
	}
	o.rep.SHA256, o.keyID = mf.SHA256, mf.KeyID
	if !stage && serving && cur != nil && cur.Manifest.Version == version && cur.Manifest.SHA256 == mf.SHA256 {
		// Already serving: nothing to swap, and the pointer already says so.
		o.step(StepActivated)
		return nil
	}
	sess, err := m.cfg.Backend.Load(mf, onnx, m.cfg.Options)
	if err != nil {
		return o.fail(StepLoaded, ResultFailed, http.StatusUnprocessableEntity, fmt.Errorf("%s: load: %w", o.action, err))
	}
	next := &pipeline.Model{Manifest: mf, Session: sess}
	keep := false
	defer func() {
		if !keep {
			if err := sess.Close(); err != nil {
				m.log.Error("close the refused model's session", "model", name, "version", version, "err", err)
			}
		}
	}()
	o.step(StepLoaded)
	// A model no inspection runs yet (for a config about to name it) has nothing to be
	// checked against or swapped with: it is warmed and golden-tested like any other,
	// and made the active version the next start loads.
	unused := false
	if err := m.p.CheckModel(next); errors.Is(err, pipeline.ErrModelNotRun) {
		unused = true
	} else if err != nil {
		return o.fail(StepChecked, ResultFailed, http.StatusUnprocessableEntity, fmt.Errorf("%s %s %s: %w", o.action, name, version, err))
	}
	b, err := m.batch(next)
	if err != nil {
		return o.fail(StepChecked, ResultFailed, http.StatusUnprocessableEntity, fmt.Errorf("%s %s %s: %w", o.action, name, version, err))
	}
	defer b.Close()
	o.step(StepChecked)
	if err := m.warmup(ctx, next, b); err != nil {
		return o.fail(StepWarmed, ResultFailed, http.StatusUnprocessableEntity, fmt.Errorf("%s %s %s: warm-up: %w", o.action, name, version, err))
	}
	o.step(StepWarmed)
	if err := golden(ctx, next, b); err != nil {
		return o.fail(StepGolden, ResultFailed, http.StatusUnprocessableEntity, fmt.Errorf("%s %s %s: golden: %w", o.action, name, version, err))
	}
	o.step(StepGolden)
	if stage {
		o.rep.Staged = true
		o.step(StepStaged)
		return nil
	}
	if unused {
		if err := m.cfg.Repo.Activate(name, version); err != nil {
			return o.fail(StepActivated, ResultFailed, http.StatusInternalServerError, fmt.Errorf("%s %s %s: %w", o.action, name, version, err))
		}
		m.log.Info("model active for the next start: no inspection runs it yet", "model", name, "version", version)
		o.step(StepActivated)
		return nil
	}
	if err := m.swap(o, next); err != nil {
		return o.fail(StepActivated, ResultFailed, http.StatusInternalServerError, err)
	}
	keep = true
	o.step(StepActivated)
	return nil
}

// swap points the repository at the new version and puts it in the pipeline; if the
// pipeline refuses it, the pointer goes back.
func (m *Manager) swap(o *op, next *pipeline.Model) error {
	name, version := next.Manifest.Name, next.Manifest.Version
	if err := m.cfg.Repo.Activate(name, version); err != nil {
		return fmt.Errorf("%s %s %s: %w", o.action, name, version, err)
	}
	old, idle, err := m.p.SwapModel(next)
	if err != nil {
		err = fmt.Errorf("%s %s %s: swap: %w", o.action, name, version, err)
		if o.rep.Previous != "" {
			if rerr := m.cfg.Repo.Activate(name, o.rep.Previous); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore the active version %s: %w", o.rep.Previous, rerr))
			}
		}
		return err
	}
	m.serving[name] = next
	if old != nil {
		o.rep.Previous = old.Manifest.Version
		m.retire(old, idle)
	}
	return nil
}

// retire closes the replaced model's session once its last run has ended.
func (m *Manager) retire(old *pipeline.Model, idle <-chan struct{}) {
	m.retiring.Go(func() {
		if idle != nil {
			<-idle
		}
		if err := old.Session.Close(); err != nil {
			m.log.Error("close the replaced model's session", "model", old.Manifest.Name, "version", old.Manifest.Version, "err", err)
			return
		}
		m.log.Debug("replaced model closed", "model", old.Manifest.Name, "version", old.Manifest.Version)
	})
}

// prune removes the oldest versions beyond Keep; a failure is logged, not returned: the
// new model serves either way.
func (m *Manager) prune(o *op) {
	removed, err := m.cfg.Repo.Prune(o.rep.Name, m.cfg.Keep)
	if err != nil {
		m.log.Error("old model versions not pruned", "model", o.rep.Name, "keep", m.cfg.Keep, "err", err)
	}
	for _, v := range removed {
		m.audit(&op{rep: &Report{Name: o.rep.Name, Version: v}, via: o.via}, models.AuditRemove, ResultOK)
		m.log.Info("old model version removed", "model", o.rep.Name, "version", v, "keep", m.cfg.Keep)
	}
}

// List reports every model in the repository: the active version, what is installed
// and the recent changes.
func (m *Manager) List() ([]ModelStatus, error) {
	names, err := m.cfg.Repo.Names()
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	out := make([]ModelStatus, 0, len(names))
	for _, n := range names {
		st := ModelStatus{Name: n}
		if v, err := m.cfg.Repo.ActiveVersion(n); err == nil {
			st.Active = v
		}
		if st.Versions, err = m.cfg.Repo.Versions(n); err != nil {
			return nil, fmt.Errorf("list models: %w", err)
		}
		m.mu.Lock()
		st.Swaps = slices.Clone(m.history[n])
		m.mu.Unlock()
		if st.Swaps == nil {
			st.Swaps = []SwapRecord{}
		}
		out = append(out, st)
	}
	return out, nil
}

// Close waits for the replaced sessions to close once idle, then closes the serving
// ones. Call it after the pipeline has stopped. It is safe twice.
func (m *Manager) Close() error {
	if m == nil {
		return nil
	}
	m.sem <- struct{}{}
	defer func() { <-m.sem }()
	if m.closed {
		return nil
	}
	m.closed = true
	m.retiring.Wait()
	var errs []error
	for name, pm := range m.serving {
		if err := pm.Session.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close model %s %s: %w", name, pm.Manifest.Version, err))
		}
	}
	clear(m.serving)
	return errors.Join(errs...)
}

// checkNames applies the repository's rule for names and versions, and its reserved
// names, before anything is read or written.
func checkNames(name, version string) error {
	if err := models.CheckName(name); err != nil {
		return fmt.Errorf("model name %w", err)
	}
	if err := models.CheckName(version); err != nil {
		return fmt.Errorf("model %s: version %w", name, err)
	}
	if name == models.AuditFile {
		return fmt.Errorf("model name %q is reserved for the audit log", name)
	}
	if version == models.ActiveFile {
		return fmt.Errorf("model %s: version %q is reserved for the active-version pointer", name, version)
	}
	return nil
}

func msSince(t, now time.Time) float64 { return float64(now.Sub(t).Microseconds()) / 1000 }

// newID is 64 random bits in hex: unique enough to match events to a request.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
