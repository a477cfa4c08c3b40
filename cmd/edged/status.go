package main

import (
	"runtime/debug"
	"time"

	"github.com/edgedrun/edged/health"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models/swap"
)

// statusDoc is served at /v1/status.
type statusDoc struct {
	Version string    `json:"version"`
	Node    nodeDoc   `json:"node"`
	Started time.Time `json:"started"`
	UptimeS float64   `json:"uptime_s"`
	Profile string    `json:"hwprofile"`
	// Backend is what runs the models: onnxruntime or purego.
	Backend     string               `json:"backend"`
	ONNXRuntime ortDoc               `json:"onnxruntime"`
	Models      []modelDoc           `json:"models"`
	Sources     map[string]sourceDoc `json:"sources"`
	MQTT        mqttDoc              `json:"mqtt"`
	// Breakers maps each breaker (inference:<model>, mqtt) to closed, half_open or open.
	Breakers map[string]string `json:"breakers"`
	// Power is the board's power draw and images per joule; on Jetson boards only.
	Power *powerDoc `json:"power,omitempty"`
}

type sourceDoc struct {
	sourceCounts
	Type string `json:"type"`
	// Up is whether the driver reaches its device; LastFault is why it last did not
	// (kept after it recovers).
	Up           bool   `json:"up"`
	LastFault    string `json:"last_fault,omitempty"`
	Backpressure string `json:"backpressure"`
	// RateHz is the measured rate of accepted frames; RateLimitHz the rate controller's
	// limit, 0 while the source runs at its own pace.
	RateHz      float64 `json:"rate_hz"`
	RateLimitHz float64 `json:"rate_limit_hz"`
	// Health is the machine's standing by its anomaly scores, for sources an
	// inspection with an alert reads.
	Health *health.Status `json:"health,omitempty"`
}

type nodeDoc struct {
	Site string `json:"site"`
	Line string `json:"line"`
	Name string `json:"name"`
}

type ortDoc struct {
	Library string `json:"library"`
	From    string `json:"from"`
	Version string `json:"version"`
}

type modelDoc struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	// Swaps are the latest pushes, activations and rollbacks, newest first.
	Swaps []swap.SwapRecord `json:"swaps,omitempty"`
}

type sourceCounts struct {
	Accepted        uint64 `json:"accepted"`
	Published       uint64 `json:"published"`
	DroppedFull     uint64 `json:"dropped_full"`
	DroppedStale    uint64 `json:"dropped_stale"`
	Errors          uint64 `json:"error"`
	DroppedShutdown uint64 `json:"dropped_shutdown"`
	InFlight        uint64 `json:"in_flight"`
}

type mqttDoc struct {
	Broker       string `json:"broker"`
	Connected    bool   `json:"connected"`
	Accepted     uint64 `json:"accepted"`
	Acked        uint64 `json:"acked"`
	Failed       uint64 `json:"failed"`
	SpoolRecords int    `json:"spool_records"`
	SpoolBytes   int64  `json:"spool_bytes"`
}

func (d *daemon) status() any {
	doc := statusDoc{
		Version:  version(),
		Node:     nodeDoc{d.cfg.Node.Site, d.cfg.Node.Line, d.cfg.Node.Name},
		Started:  d.started.UTC(),
		UptimeS:  time.Since(d.started).Seconds(),
		Profile:  d.prof.Name,
		Sources:  map[string]sourceDoc{},
		Breakers: map[string]string{},
	}
	running := d.running.Load()
	if d.backend != nil {
		info := inference.Describe(d.backend)
		doc.Backend = info.Name
		doc.ONNXRuntime = ortDoc{info.Library.Path, info.Library.From, info.Version}
	}
	doc.Models = d.modelStatus()
	doc.Power = d.powerStatus()
	var health map[string]health.Status
	if d.scores != nil {
		health = d.scores.Machines()
	}
	for _, s := range running.Sources {
		c, ok := d.pipe.Counts(s.Name)
		if !ok {
			continue
		}
		limit, arrival, _ := d.pipe.RateLimit(s.Name)
		up, fault, _ := d.pipe.Health(s.Name)
		sd := sourceDoc{sourceCounts: sourceCounts(c), Type: s.Type, Up: up, LastFault: fault, Backpressure: s.Backpressure, RateHz: arrival, RateLimitHz: limit}
		if h, ok := health[s.Name]; ok {
			sd.Health = &h
		}
		doc.Sources[s.Name] = sd
	}
	doc.Breakers["mqtt"] = d.pub.BreakerState().String()
	for name, st := range d.pipe.BreakerStates() {
		doc.Breakers["inference:"+name] = st.String()
	}
	st := d.pub.Stats()
	doc.MQTT = mqttDoc{Broker: d.cfg.MQTT.Broker, Connected: d.pub.Connected(), Accepted: st.Accepted, Acked: st.Acked, Failed: st.Failed}
	if d.broker != nil {
		doc.MQTT.Broker = "embedded " + d.broker.Addr()
	}
	if d.spool != nil {
		ss := d.spool.Stats()
		doc.MQTT.SpoolRecords, doc.MQTT.SpoolBytes = ss.Records, ss.Bytes
	}
	return doc
}

// buildVersion is set by the Makefile (-ldflags -X main.buildVersion=...).
var buildVersion = ""

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) >= 12 {
			return "dev-" + rev[:12] + dirty
		}
	}
	return "dev"
}
