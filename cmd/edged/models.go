package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/fetch"
	"github.com/edgedrun/edged/models/swap"
	"github.com/edgedrun/edged/publish"
)

// commandQueueSize bounds the MQTT commands waiting for the model manager: a command
// is minutes of download and checks, so a handful queued is plenty, and more means
// someone is sending in a loop.
const commandQueueSize = 8

// mqttCommand is one message from the box's cmd/{verb} topic.
type mqttCommand struct {
	verb    string
	payload []byte
}

// eventTimeout bounds handing a model event to the publisher's queue; the queue is
// only full while the broker is away and the spool cannot keep up, and a swap must not
// wait on that.
const eventTimeout = 2 * time.Second

// newModels builds the swap manager over the running pipeline: pushes over the admin
// API and MQTT commands go through it.
func (d *daemon) newModels(repo *models.Repository, opts inference.SessionOptions) error {
	m := d.cfg.Models
	var ring *models.Keyring
	if len(m.TrustedKeys) > 0 {
		var err error
		if ring, err = models.NewKeyring(m.TrustedKeys); err != nil {
			return fmt.Errorf("models.trusted_keys: %w", err)
		}
	}
	if m.AllowUnsigned {
		d.log.Warn("models.allow_unsigned is on: models pushed to this box are accepted without a signature; anyone with the admin token or the broker can change what judges the parts",
			"trusted_keys", len(m.TrustedKeys))
	} else if ring == nil {
		d.log.Info("no models.trusted_keys: model pushes are refused until a key is trusted (edged model keygen)")
	}
	mgr, err := swap.New(swap.Config{
		Repo:          repo,
		Backend:       d.backend,
		Options:       opts,
		Keyring:       ring,
		AllowUnsigned: m.AllowUnsigned,
		Keep:          m.Keep,
		MaxSize:       int64(m.MaxSize),
		Fetch: fetch.Config{
			Timeout:      m.Download.Timeout.Std(),
			StallTimeout: m.Download.StallTimeout.Std(),
			Retries:      fetchRetries(m.Download.Retries),
			Log:          d.log.With("component", "models"),
		},
		MaxBatch:   d.cfg.Pipeline.MaxBatch,
		Events:     d.modelEvent,
		Registerer: d.reg,
		Log:        d.log.With("component", "models"),
	}, d.pipe)
	if err != nil {
		return err
	}
	d.swaps = mgr
	// The pipeline's sessions are the manager's now: it closes each when it is replaced,
	// and the serving ones at the end.
	d.sessions = nil
	for pattern, h := range mgr.Routes(d.http.Admin) {
		d.http.Handle(pattern, h)
	}
	return nil
}

func (d *daemon) modelEvent(kind string, fields any) {
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := d.pub.PublishEvent(ctx, kind, fields); err != nil && !errors.Is(err, publish.ErrClosed) {
		d.log.Warn("model event not published", "kind", kind, "err", err)
	}
}

// onCommand takes a command from the publisher's MQTT client; it never blocks it.
func (d *daemon) onCommand(verb string, payload []byte) {
	select {
	case d.commands <- mqttCommand{verb: verb, payload: payload}:
	default:
		d.log.Warn("mqtt command refused: commands are still being worked through", "verb", verb, "queued", commandQueueSize)
		d.modelEvent("command", map[string]any{"verb": verb, "step": "failed", "reason": fmt.Sprintf("busy: %d commands queued", commandQueueSize)})
	}
}

// runCommands works through the MQTT commands one at a time until ctx ends.
func (d *daemon) runCommands(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-d.commands:
			d.command(ctx, c)
		}
	}
}

func (d *daemon) command(ctx context.Context, c mqttCommand) {
	log := d.log.With("component", "models", "via", "mqtt")
	if c.verb != "model" {
		log.Warn("mqtt command with an unknown verb ignored", "verb", c.verb, "known", "model")
		d.modelEvent("command", map[string]any{"verb": c.verb, "step": "failed", "reason": fmt.Sprintf("unknown command verb %q; known: model", c.verb)})
		return
	}
	cmd, err := swap.ParseCommand(c.payload)
	if err != nil {
		log.Warn("mqtt model command refused", "err", err)
		fields := map[string]any{"step": "failed", "reason": err.Error()}
		// The sender waits for its id: name it if the command carries one at all.
		var id struct {
			ID string `json:"id"`
		}
		if cmd != nil && cmd.ID != "" {
			fields["id"] = cmd.ID
		} else if json.Unmarshal(c.payload, &id) == nil && id.ID != "" && len(id.ID) <= 128 {
			fields["id"] = id.ID
		}
		d.modelEvent("model", fields)
		return
	}
	rep, err := d.swaps.Handle(ctx, cmd, "mqtt")
	if err != nil {
		log.Warn("mqtt model command failed", "id", cmd.ID, "action", cmd.Action, "name", cmd.Name, "err", err)
		return
	}
	log.Info("mqtt model command done", "id", cmd.ID, "action", cmd.Action, "name", rep.Name, "version", rep.Version, "took_ms", rep.TookMS)
}

// modelStatus is the models part of /v1/status: what serves now and the last swaps.
func (d *daemon) modelStatus() []modelDoc {
	var out []modelDoc
	if d.swaps == nil {
		for _, m := range d.models {
			out = append(out, modelDoc{Name: m.Manifest.Name, Version: m.Manifest.Version, SHA256: m.Manifest.SHA256})
		}
		return out
	}
	list, err := d.swaps.List()
	if err != nil {
		d.log.Warn("list models", "err", err)
	}
	for _, st := range list {
		doc := modelDoc{Name: st.Name, Version: st.Active}
		if pm, ok := d.pipe.Model(st.Name); ok {
			doc.Version, doc.SHA256 = pm.Manifest.Version, pm.Manifest.SHA256
		}
		doc.Swaps = st.Swaps
		out = append(out, doc)
	}
	return out
}

// fetchRetries maps models.download.retries, where 0 means none, onto fetch's
// setting, where 0 takes its default and below 0 means none.
func fetchRetries(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
