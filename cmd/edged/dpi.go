package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/dpi"
	"github.com/edgedrun/edged/publish"
)

// alertKindDPI is the alert topic's last level for the Modbus traffic guard.
const alertKindDPI = "modbus_dpi"

// alertQueue hands alerts from the proxies to the publisher without ever making a
// proxy wait: a full queue drops the alert, counted, while the anomaly metrics keep
// counting every frame.
type alertQueue struct {
	pub     *publish.Publisher
	q       chan dpi.Alert
	dropped prometheus.Counter
	log     *slog.Logger
}

func newAlertQueue(pub *publish.Publisher, reg prometheus.Registerer, log *slog.Logger) (*alertQueue, error) {
	a := &alertQueue{
		pub: pub,
		q:   make(chan dpi.Alert, 256),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_alerts_dropped_total",
			Help: "Alerts not published because the alert queue was full (the broker is slower than the anomalies).",
		}),
		log: log,
	}
	if err := reg.Register(a.dropped); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *alertQueue) put(al dpi.Alert) {
	select {
	case a.q <- al:
	default:
		a.dropped.Inc()
	}
}

// run publishes queued alerts until ctx ends.
func (a *alertQueue) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case al := <-a.q:
			if err := a.pub.PublishAlert(ctx, alertKindDPI, al); err != nil && ctx.Err() == nil {
				a.log.Warn("alert not published", "kind", alertKindDPI, "class", al.Class, "err", err)
			}
		}
	}
}

// newProxies builds the Modbus traffic guards of the config; none run until runProxies.
func newProxies(cfg *config.Config, alerts func(dpi.Alert), reg prometheus.Registerer, log *slog.Logger) ([]*dpi.Proxy, error) {
	var ps []*dpi.Proxy
	for i, m := range cfg.ModbusDPI {
		c, err := dpiConfig(m)
		if err != nil {
			return nil, fmt.Errorf("modbus_dpi[%d] %q: %w", i, m.Name, err)
		}
		c.Alerts, c.Registerer, c.Log = alerts, reg, log.With("component", "modbus_dpi", "proxy", m.Name)
		p, err := dpi.New(c)
		if err != nil {
			return nil, fmt.Errorf("modbus_dpi[%d] %q: %w", i, m.Name, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// dpiConfig turns a validated config entry into the proxy's settings.
func dpiConfig(m config.ModbusDPI) (dpi.Config, error) {
	c := dpi.Config{
		Name:            m.Name,
		Listen:          m.Listen,
		Upstream:        m.Upstream,
		MaxClients:      m.MaxClients,
		IdleTimeout:     m.IdleTimeout.Std(),
		DialTimeout:     m.DialTimeout.Std(),
		FloodRequests:   m.Flood.Requests,
		FloodExceptions: m.Flood.Exceptions,
		FloodWindow:     m.Flood.Window.Std(),
		AlertEvery:      m.AlertEvery.Std(),
		Actions:         map[dpi.Class]dpi.Action{},
	}
	for _, u := range m.Units {
		c.Units = append(c.Units, uint8(u))
	}
	c.DefaultFunctions = functionCodes(m.DefaultFunctions)
	var err error
	if c.Map, err = dpiRanges(m.Map); err != nil {
		return c, err
	}
	for _, cl := range m.Clients {
		w, err := dpiRanges(cl.Writes)
		if err != nil {
			return c, err
		}
		rs, err := dpiRanges(cl.Ranges)
		if err != nil {
			return c, err
		}
		var units []uint8
		for _, u := range cl.Units {
			units = append(units, uint8(u))
		}
		c.Clients = append(c.Clients, dpi.ClientPolicy{Addresses: cl.Addresses, Functions: functionCodes(cl.Functions), ReadOnly: cl.ReadOnly, Writes: w, Units: units, Ranges: rs})
	}
	for class, action := range m.Actions {
		c.Actions[dpi.Class(class)] = dpi.Action(action)
	}
	return c, nil
}

func functionCodes(fs []int) []uint8 {
	out := make([]uint8, len(fs))
	for i, f := range fs {
		out[i] = uint8(f)
	}
	return out
}

var dpiTables = map[string]dpi.Table{"coil": dpi.Coils, "discrete": dpi.DiscreteInputs, "holding": dpi.HoldingRegisters, "input": dpi.InputRegisters}

func dpiRanges(rs []config.DPIRange) ([]dpi.Range, error) {
	var out []dpi.Range
	for _, r := range rs {
		t, ok := dpiTables[r.Table]
		if !ok {
			return nil, fmt.Errorf("table %q is not one of coil, discrete, holding, input", r.Table)
		}
		out = append(out, dpi.Range{Table: t, Start: uint16(r.Start), End: uint16(r.End)})
	}
	return out, nil
}
