package main

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/pipeline"
)

// reloader holds the metrics of config reloads.
type reloader struct {
	success, last prometheus.Gauge
	total         *prometheus.CounterVec
}

func newReloader(reg prometheus.Registerer) (*reloader, error) {
	r := &reloader{
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edged_config_reload_success",
			Help: "1 if the last config reload (SIGHUP) was applied, 0 if it was refused and nothing changed.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edged_config_reload_success_timestamp_seconds",
			Help: "Time of the last config reload that was applied (or of the start).",
		}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_config_reloads_total",
			Help: "Config reloads by result: applied or refused.",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{r.success, r.last, r.total} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register reload metrics: %w", err)
		}
	}
	r.success.Set(1)
	r.last.SetToCurrentTime()
	return r, nil
}

// change is one part of a reload: check says whether it can be applied without
// applying it; apply applies it. Every check runs before any apply, so a reload that
// cannot be applied whole changes nothing.
type change struct {
	what  string
	check func() error
	apply func() error
}

// reloadConfig reads the config file again and applies what can change while edged
// runs: log level, sources' backpressure, verdict budget and driver rates, inspections'
// thresholds and fail-safe actions, and the publisher's settings. Other changes are
// reported as needing a restart and left as they are. A file that does not load or
// validate, or a change that is refused, changes nothing.
func (d *daemon) reloadConfig() {
	start := time.Now()
	applied, restart, err := d.applyReload()
	if err != nil {
		d.reload.success.Set(0)
		d.reload.total.WithLabelValues("refused").Inc()
		d.log.Error("config reload refused; the running config is unchanged", "file", d.pathName(), "err", err)
		return
	}
	d.reload.success.Set(1)
	d.reload.last.SetToCurrentTime()
	d.reload.total.WithLabelValues("applied").Inc()
	args := []any{"file", d.pathName(), "took", time.Since(start).Round(time.Microsecond).String()}
	if len(applied) == 0 {
		args = append(args, "changed", "nothing")
	} else {
		args = append(args, "changed", strings.Join(applied, ", "))
	}
	d.log.Info("config reloaded", args...)
	if len(restart) > 0 {
		d.log.Warn("config reload: these changes take effect at the next start", "keys", strings.Join(restart, ", "))
	}
}

func (d *daemon) pathName() string {
	if d.path == "" {
		return "(embedded demo config)"
	}
	return d.path
}

// applyReload loads the file, plans the changes, checks them all, then applies them.
// It returns what changed and the keys that changed but need a restart.
func (d *daemon) applyReload() (applied, restart []string, err error) {
	next, _, _, err := loadConfig(d.path)
	if err != nil {
		return nil, nil, err
	}
	cur := d.running.Load()
	var plan []change

	if next.Log.Level != cur.Log.Level {
		lv := parseLevel(next.Log.Level)
		plan = append(plan, change{what: "log.level", apply: func() error { d.level.Set(lv); return nil }})
	}

	// Sources: the same names and types, or the set needs a restart.
	if !sameSources(cur.Sources, next.Sources) {
		restart = append(restart, "sources (added, removed, renamed or retyped)")
	} else {
		for i := range next.Sources {
			c, n := &cur.Sources[i], &next.Sources[i]
			path := fmt.Sprintf("sources[%d]", i)
			if c.Backpressure != n.Backpressure || c.VerdictBudget != n.VerdictBudget {
				st := pipeline.SourceSettings{Backpressure: n.Backpressure, Budget: n.VerdictBudget.Std()}
				name := n.Name
				var what []string
				if c.Backpressure != n.Backpressure {
					what = append(what, path+".backpressure")
				}
				if c.VerdictBudget != n.VerdictBudget {
					what = append(what, path+".verdict_budget")
				}
				plan = append(plan, change{
					what:  strings.Join(what, ", "),
					check: func() error { return d.pipe.CheckSource(name, st) },
					apply: func() error { return d.pipe.SetSource(name, st) },
				})
			}
			if !reflect.DeepEqual(c.Driver, n.Driver) {
				rc, ok := d.drivers[n.Name].(drivers.Reconfigurer)
				if !ok {
					restart = append(restart, path+"."+n.Type)
					continue
				}
				cfg := n.Driver
				plan = append(plan, change{
					what: path + "." + n.Type,
					apply: func() error {
						keys, err := rc.Reconfigure(cfg)
						for _, k := range keys {
							restart = append(restart, path+"."+n.Type+"."+k)
						}
						return err
					},
				})
			}
		}
	}

	// Inspections: the same names, sources and models, or the set needs a restart.
	if !sameInspections(cur.Inspections, next.Inspections) {
		restart = append(restart, "inspections (added, removed, renamed, or another source or model)")
	} else {
		for i := range next.Inspections {
			c, n := &cur.Inspections[i], &next.Inspections[i]
			if c.Threshold == n.Threshold && c.FailSafe == n.FailSafe {
				continue
			}
			st := pipeline.InspectionSettings{Threshold: float32(n.Threshold), FailSafe: n.FailSafe}
			name := n.Name
			var what []string
			if c.Threshold != n.Threshold {
				what = append(what, fmt.Sprintf("inspections[%d].threshold", i))
			}
			if c.FailSafe != n.FailSafe {
				what = append(what, fmt.Sprintf("inspections[%d].fail_safe", i))
			}
			plan = append(plan, change{
				what:  strings.Join(what, ", "),
				check: func() error { return d.pipe.CheckInspection(name, st) },
				apply: func() error { return d.pipe.SetInspection(name, st) },
			})
		}
	}

	if ch, ok := d.publisherChange(&cur.MQTT, &next.MQTT); ok {
		plan = append(plan, ch)
	}

	// What is left is compared whole: any difference needs a restart.
	restart = append(restart, restartKeys(cur, next)...)

	var errs []error
	for _, ch := range plan {
		if ch.check == nil {
			continue
		}
		if err := ch.check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ch.what, err))
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	for _, ch := range plan {
		if err := ch.apply(); err != nil {
			// Checked above, so this is a fault in edged; the log says what was applied.
			d.log.Error("config reload: a checked change failed to apply", "change", ch.what, "err", err, "applied", strings.Join(applied, ", "))
			continue
		}
		applied = append(applied, ch.what)
	}
	d.running.Store(merged(cur, next))
	return applied, restart, nil
}

func sameSources(a, b []config.Source) bool {
	return slices.EqualFunc(a, b, func(x, y config.Source) bool { return x.Name == y.Name && x.Type == y.Type })
}

func sameInspections(a, b []config.Inspection) bool {
	return slices.EqualFunc(a, b, func(x, y config.Inspection) bool {
		return x.Name == y.Name && x.Source == y.Source && x.Model == y.Model
	})
}

// merged is the config now running: cur with the live keys taken from next.
func merged(cur, next *config.Config) *config.Config {
	m := *cur
	m.Log.Level = next.Log.Level
	if sameSources(cur.Sources, next.Sources) {
		m.Sources = slices.Clone(cur.Sources)
		for i := range m.Sources {
			m.Sources[i].Backpressure = next.Sources[i].Backpressure
			m.Sources[i].VerdictBudget = next.Sources[i].VerdictBudget
			m.Sources[i].Driver = next.Sources[i].Driver
		}
	}
	if sameInspections(cur.Inspections, next.Inspections) {
		m.Inspections = slices.Clone(cur.Inspections)
		for i := range m.Inspections {
			m.Inspections[i].Threshold = next.Inspections[i].Threshold
			m.Inspections[i].FailSafe = next.Inspections[i].FailSafe
		}
	}
	mergeLiveMQTT(&m.MQTT, &next.MQTT)
	return &m
}

// restartKeys names the top-level sections (and for mqtt, pipeline and runtime, the
// keys) that differ once the live keys are set aside.
func restartKeys(cur, next *config.Config) []string {
	a, b := *cur, *next
	// Live keys and lists compared above are set equal.
	b.Log.Level = a.Log.Level
	a.Sources, b.Sources = nil, nil
	a.Inspections, b.Inspections = nil, nil
	mergeLiveMQTT(&b.MQTT, &a.MQTT)
	var keys []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if f.Type.Kind() == reflect.Struct {
			for j := range f.Type.NumField() {
				if !reflect.DeepEqual(va.Field(i).Field(j).Interface(), vb.Field(i).Field(j).Interface()) {
					keys = append(keys, name+"."+strings.Split(f.Type.Field(j).Tag.Get("yaml"), ",")[0])
				}
			}
			continue
		}
		keys = append(keys, name)
	}
	return keys
}
