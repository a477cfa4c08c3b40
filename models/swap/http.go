package swap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"

	"github.com/edgedrun/edged/models"
)

// maxManifest bounds the manifest part: golden frames make it larger than a plain one,
// but never near a model's size.
const maxManifest = 16 << 20

// Routes returns the model API as Go 1.22 patterns and their handlers, for the admin
// server to mount. admin wraps the handlers that change anything (the bearer token check).
//
//	PUT  /v1/models/{name}/{version}           multipart: "manifest" (JSON) first, then "model"; ?stage=1 stages
//	POST /v1/models/{name}/{version}/activate
//	POST /v1/models/{name}/rollback
//	GET  /v1/models                            read-only
func (m *Manager) Routes(admin func(http.Handler) http.Handler) map[string]http.Handler {
	if admin == nil {
		admin = func(h http.Handler) http.Handler { return h }
	}
	return map[string]http.Handler{
		"PUT /v1/models/{name}/{version}":           admin(http.HandlerFunc(m.servePush)),
		"POST /v1/models/{name}/{version}/activate": admin(http.HandlerFunc(m.serveActivate)),
		"POST /v1/models/{name}/rollback":           admin(http.HandlerFunc(m.serveRollback)),
		"GET /v1/models":                            http.HandlerFunc(m.serveList),
	}
}

func via(r *http.Request) string { return "http " + r.RemoteAddr }

func (m *Manager) servePush(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("name"), r.PathValue("version")
	refuse := func(status int, err error) {
		// Refusals here never reach Push: audit and count them the same way.
		o := m.newOp("", models.AuditPush, via(r), name, version)
		writeError(w, o.fail(StepReceived, ResultRefused, status, err))
	}
	if err := checkNames(name, version); err != nil {
		refuse(http.StatusBadRequest, fmt.Errorf("push: %w", err))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, m.cfg.MaxSize+1<<20)
	mr, err := r.MultipartReader()
	if err != nil {
		refuse(http.StatusBadRequest, fmt.Errorf("push %s %s: want a multipart/form-data body with parts \"manifest\" and \"model\": %w", name, version, err))
		return
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "manifest" {
		refuse(http.StatusBadRequest, fmt.Errorf("push %s %s: the first part must be \"manifest\" (%s)", name, version, partName(part, err)))
		return
	}
	mb, err := io.ReadAll(io.LimitReader(part, maxManifest+1))
	if err != nil {
		refuse(statusOf(err, http.StatusBadRequest), fmt.Errorf("push %s %s: read the manifest: %w", name, version, err))
		return
	}
	if len(mb) > maxManifest {
		refuse(http.StatusRequestEntityTooLarge, fmt.Errorf("push %s %s: manifest is larger than %d bytes", name, version, maxManifest))
		return
	}
	mf, err := models.ParseManifest(mb)
	if err != nil {
		refuse(http.StatusBadRequest, fmt.Errorf("push %s %s: %w", name, version, err))
		return
	}
	if mf.Name != name || mf.Version != version {
		refuse(http.StatusBadRequest, fmt.Errorf("push %s %s: the manifest names %q %q", name, version, mf.Name, mf.Version))
		return
	}
	// The model part is opened only once Push has checked the manifest, so a refused
	// or oversized model is never read.
	rep, err := m.push(r.Context(), Request{Manifest: mf, Stage: r.URL.Query().Get("stage") == "1", Via: via(r)},
		func(context.Context) (io.ReadCloser, error) {
			p, err := mr.NextPart()
			if err != nil || p.FormName() != "model" {
				return nil, &Error{Step: StepInstalled, Result: ResultRefused, Status: http.StatusBadRequest,
					Err: fmt.Errorf("the second part must be \"model\" (%s)", partName(p, err))}
			}
			return p, nil
		})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func partName(p *multipart.Part, err error) string {
	switch {
	case err == io.EOF:
		return "no more parts"
	case err != nil:
		return err.Error()
	}
	return fmt.Sprintf("have %q", p.FormName())
}

func (m *Manager) serveActivate(w http.ResponseWriter, r *http.Request) {
	rep, err := m.Activate(r.Context(), r.PathValue("name"), r.PathValue("version"), via(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (m *Manager) serveRollback(w http.ResponseWriter, r *http.Request) {
	rep, err := m.Rollback(r.Context(), r.PathValue("name"), via(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (m *Manager) serveList(w http.ResponseWriter, _ *http.Request) {
	list, err := m.List()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": list})
}

func statusOf(err error, def int) int {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge
	}
	return def
}

func writeError(w http.ResponseWriter, err error) {
	status, step := http.StatusInternalServerError, ""
	var e *Error
	if errors.As(err, &e) {
		status, step = e.Status, e.Step
	}
	writeJSON(w, status, map[string]string{"error": err.Error(), "step": step})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to tell it
}
