package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/alert"
	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/health"
	"github.com/edgedrun/edged/publish"
	"github.com/edgedrun/edged/writeback"
)

// newWriteback builds the sink that writes verdicts to the line, or nil when no
// inspection writes. Every action's writer must be a source whose driver writes and
// accepts the target: a misspelt coil is an error now, not at the first rejected part.
func newWriteback(cfg *config.Config, drvs map[string]drivers.Driver, next writeback.Next, reg prometheus.Registerer, log *slog.Logger) (*writeback.Sink, error) {
	rules := map[string]writeback.Rules{}
	for _, in := range cfg.Inspections {
		if len(in.OnNG)+len(in.OnOK)+len(in.OnDivert) == 0 {
			continue
		}
		rules[in.Name] = writeback.Rules{OnNG: actions(in.OnNG), OnOK: actions(in.OnOK), OnDivert: actions(in.OnDivert)}
	}
	if len(rules) == 0 {
		return nil, nil
	}
	writers := map[string]drivers.Writer{}
	for name, d := range drvs {
		if w, ok := d.(drivers.Writer); ok {
			writers[name] = w
		}
	}
	s, err := writeback.New(writeback.Config{Rules: rules, Writers: writers, Next: next, Registerer: reg, Log: log.With("component", "writeback")})
	if err != nil {
		return nil, fmt.Errorf("write-back: %w", err)
	}
	return s, nil
}

func actions(as []config.WriteAction) []writeback.Action {
	out := make([]writeback.Action, len(as))
	for i, a := range as {
		out[i] = writeback.Action{Writer: a.Writer, Target: a.Target, Value: a.Value.V}
	}
	return out
}

// newAlertSink builds the sink that raises and clears the inspections' alerts, or nil
// when no inspection has one.
func newAlertSink(cfg *config.Config, pub *publish.Publisher, next health.Next, reg prometheus.Registerer, log *slog.Logger) (*health.Sink, error) {
	rules := map[string]health.Rule{}
	for _, in := range cfg.Inspections {
		if a := in.Alert; a != nil {
			rules[in.Name] = health.Rule{Kind: a.Kind, Hysteresis: alert.Hysteresis{Enter: a.Enter, Leave: a.Leave, MinDuration: a.MinDuration.Std()}}
		}
	}
	if len(rules) == 0 {
		return nil, nil
	}
	return health.NewSink(health.Config{
		Rules: rules,
		Publish: func(ctx context.Context, kind string, m health.Message) error {
			return pub.PublishAlert(ctx, kind, m)
		},
		Next:       next,
		Registerer: reg,
		Log:        log.With("component", "alert"),
	})
}
