package models

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Audit actions: what happened to a model version.
const (
	AuditPush     = "push"
	AuditStage    = "stage"
	AuditActivate = "activate"
	AuditRollback = "rollback"
	AuditRefuse   = "refuse"
	AuditRemove   = "remove"
)

// AuditRecord is one line of <dir>/audit.log: who changed which model how, and whether
// it worked, so that a plant can answer which model judged its parts and who put it there.
type AuditRecord struct {
	Time    time.Time `json:"time"`
	Action  string    `json:"action"` // push, stage, activate, rollback, refuse, remove
	Name    string    `json:"name"`
	Version string    `json:"version"`
	SHA256  string    `json:"sha256,omitempty"`
	KeyID   string    `json:"key_id,omitempty"`
	Via     string    `json:"via,omitempty"` // http 127.0.0.1:5555, mqtt, cli
	Result  string    `json:"result"`        // "ok" or the error text
}

// Audit appends rec as one JSON line to <dir>/audit.log and syncs it before returning,
// so that a change is not in force without its record. A zero Time is set to now.
func (r *Repository) Audit(rec AuditRecord) error {
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	rec.Time = rec.Time.UTC()
	b, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("audit %s %s %s: %w", rec.Action, rec.Name, rec.Version, err)
	}
	path := filepath.Join(r.dir, AuditFile)
	r.auditMu.Lock()
	defer r.auditMu.Unlock()
	// One write of a whole line with O_APPEND: lines of several processes do not mix.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("audit: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("audit: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("audit: close %s: %w", path, err)
	}
	return nil
}
