package swap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/fetch"
)

// Command actions.
const (
	ActionPush     = "push"
	ActionActivate = "activate"
	ActionRollback = "rollback"
)

// Command is a model change sent over MQTT: push a model from a download URL, activate
// an installed version, or roll back.
type Command struct {
	ID       string           `json:"id"`
	Action   string           `json:"action"`
	Manifest *models.Manifest `json:"manifest,omitempty"`
	URL      string           `json:"url,omitempty"`
	Name     string           `json:"name,omitempty"`
	Version  string           `json:"version,omitempty"`
	Stage    bool             `json:"stage,omitempty"`
}

// maxCommand bounds a command's size: a manifest with golden frames fits well within.
const maxCommand = 16 << 20

// ParseCommand decodes a command strictly and checks it has what its action needs and
// nothing another action takes.
func ParseCommand(b []byte) (*Command, error) {
	if len(b) > maxCommand {
		return nil, fmt.Errorf("model command: %d bytes, more than %d", len(b), maxCommand)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Command
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("model command: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("model command: trailing data after the JSON object")
	}
	if len(c.ID) > 128 {
		return nil, fmt.Errorf("model command: id is %d characters, at most 128", len(c.ID))
	}
	switch c.Action {
	case ActionPush:
		if c.Manifest == nil {
			return nil, errors.New("model command push: no manifest")
		}
		if err := c.Manifest.Validate(); err != nil {
			return nil, fmt.Errorf("model command push: %w", err)
		}
		if err := checkNames(c.Manifest.Name, c.Manifest.Version); err != nil {
			return nil, fmt.Errorf("model command push: %w", err)
		}
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("model command push %s %s: url %q is not an http or https URL", c.Manifest.Name, c.Manifest.Version, fetch.Redact(c.URL))
		}
		if c.Name != "" || c.Version != "" {
			return nil, fmt.Errorf("model command push: name and version come from the manifest, not the command (have %q %q)", c.Name, c.Version)
		}
	case ActionActivate, ActionRollback:
		if c.Manifest != nil || c.URL != "" || c.Stage {
			return nil, fmt.Errorf("model command %s: manifest, url and stage are for push", c.Action)
		}
		v := c.Version
		if c.Action == ActionRollback {
			v = "x"
		}
		if err := checkNames(c.Name, v); err != nil {
			return nil, fmt.Errorf("model command %s: %w", c.Action, err)
		}
		if c.Action == ActionRollback && c.Version != "" {
			return nil, fmt.Errorf("model command rollback %s: version %q: a rollback goes to the previous version", c.Name, c.Version)
		}
	default:
		return nil, fmt.Errorf("model command: action %q is not one of %s, %s, %s", c.Action, ActionPush, ActionActivate, ActionRollback)
	}
	return &c, nil
}

// Handle carries out a command. A push downloads the model (resuming after cuts and
// stalls) only once its manifest has been checked and verified.
func (m *Manager) Handle(ctx context.Context, c *Command, via string) (*Report, error) {
	if c == nil {
		return nil, &Error{Step: StepReceived, Result: ResultRefused, Status: http.StatusBadRequest, Err: errors.New("model command: none")}
	}
	switch c.Action {
	case ActionPush:
		r := Request{ID: c.ID, Manifest: c.Manifest, Stage: c.Stage, Via: via}
		return m.push(ctx, r, func(ctx context.Context) (io.ReadCloser, error) {
			return fetch.Open(ctx, m.cfg.Fetch, c.URL, c.Manifest.Size)
		})
	case ActionActivate:
		o := m.newOp(c.ID, models.AuditActivate, via, c.Name, c.Version)
		return m.activate(ctx, o, StepActivated)
	case ActionRollback:
		o := m.newOp(c.ID, models.AuditRollback, via, c.Name, "")
		return m.activate(ctx, o, StepRolledBack)
	}
	return nil, &Error{Step: StepReceived, Result: ResultRefused, Status: http.StatusBadRequest,
		Err: fmt.Errorf("model command: action %q is not one of %s, %s, %s", c.Action, ActionPush, ActionActivate, ActionRollback)}
}
