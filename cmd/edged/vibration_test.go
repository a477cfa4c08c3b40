package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestVibrationDemo runs config/vibration-demo.yaml with the fault brought forward:
// the simulated motor is healthy for 8 s, then an outer-race defect grows over 6 s.
// Windows of its samples, taken directly and read over Modbus as waveform blocks,
// reach the anomaly model; while healthy no alert is raised, after the fault the
// vibration alert is raised on MQTT for both, and /v1/status shows the machine's health
// fall.
func TestVibrationDemo(t *testing.T) {
	raw, err := os.ReadFile("../../config/vibration-demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l := &testLine{site: "demo-site", line: "motors", node: "n1", httpAddr: freeAddr(t), modelsDir: filepath.Join(dir, "models")}
	embedded := freeAddr(t)
	l.brokerURL = "tcp://" + embedded
	mb := freeAddr(t)
	cfg := strings.NewReplacer(
		"127.0.0.1:5021", mb,
		"listen: 127.0.0.1:8080", "listen: "+l.httpAddr,
		"embedded_listen: 127.0.0.1:1883", "embedded_listen: "+embedded,
		"dir: var/vibration-demo/spool", "dir: "+filepath.Join(dir, "spool"),
		"dir: var/vibration-demo/models", "dir: "+l.modelsDir,
		`name: ""`, "name: n1",
		"fault: {kind: outer_race, onset: 60s, grow: 3m}", "fault: {kind: outer_race, onset: 8s, grow: 6s}",
		"min_duration: 5s", "min_duration: 2s",
	).Replace(string(raw))
	if strings.Contains(cfg, "var/vibration-demo") || strings.Contains(cfg, ":5021") || strings.Contains(cfg, "onset: 60s") || strings.Contains(cfg, "min_duration: 5s") {
		t.Fatalf("the test no longer matches config/vibration-demo.yaml:\n%s", cfg)
	}
	l.config = filepath.Join(dir, "vibration-demo.yaml")
	if err := os.WriteFile(l.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startEdged(t, "run", "-c", l.config)
	start := time.Now()
	waitReady(t, p, l.httpAddr)

	var mu sync.Mutex
	var alerts []map[string]any
	var verdicts, modbusVerdicts []string
	opts := mqtt.NewClientOptions().AddBroker(l.brokerURL).SetClientID(fmt.Sprintf("vib-sub-%d", time.Now().UnixNano())).SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	prefix := fmt.Sprintf("edged/v1/%s/%s/%s/", l.site, l.line, l.node)
	if tok := c.Subscribe(prefix+"#", 1, func(_ mqtt.Client, m mqtt.Message) {
		var ev map[string]any
		if json.Unmarshal(m.Payload(), &ev) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(m.Topic(), "/alert/vibration"):
			ev["received_s"] = time.Since(start).Seconds()
			alerts = append(alerts, ev)
		case strings.HasSuffix(m.Topic(), "/result/motor-1-bearing"):
			verdicts = append(verdicts, fmt.Sprint(ev["verdict"]))
		case strings.HasSuffix(m.Topic(), "/result/motor-1-bearing-modbus"):
			modbusVerdicts = append(modbusVerdicts, fmt.Sprint(ev["verdict"]))
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	raised := func(inspection string) map[string]any {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range alerts {
			if f, ok := a["fields"].(map[string]any); ok && f["state"] == "raised" && f["inspection"] == inspection {
				return a
			}
		}
		return nil
	}
	deadline := time.Now().Add(40 * time.Second)
	for (raised("motor-1-bearing") == nil || raised("motor-1-bearing-modbus") == nil) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// The same motor, judged from its samples directly and read over Modbus.
	a, am := raised("motor-1-bearing"), raised("motor-1-bearing-modbus")
	if a == nil || am == nil {
		mu.Lock()
		t.Fatalf("vibration alerts within 40 s: direct %v, over Modbus %v; verdicts so far: %v and %v", a != nil, am != nil, verdicts, modbusVerdicts)
	}
	if got := am["received_s"].(float64); got < 8 {
		t.Errorf("alert over Modbus raised %.1f s after start, before the fault's onset at 8 s", got)
	}
	f := a["fields"].(map[string]any)
	if f["source"] != "motor-1" || f["inspection"] != "motor-1-bearing" {
		t.Errorf("alert %v", a)
	}
	// Raised after the fault began (8 s after start), not while healthy.
	if got := a["received_s"].(float64); got < 8 {
		t.Errorf("alert raised %.1f s after start, before the fault's onset at 8 s", got)
	}
	mu.Lock()
	nOK, nNG := strings.Count(strings.Join(verdicts, " "), "OK"), strings.Count(strings.Join(verdicts, " "), "NG")
	mOK, mNG := strings.Count(strings.Join(modbusVerdicts, " "), "OK"), strings.Count(strings.Join(modbusVerdicts, " "), "NG")
	mu.Unlock()
	if mOK < 5 || mNG < 1 {
		t.Errorf("verdicts over Modbus: %d OK, %d NG; want healthy windows judged OK first, then anomalies", mOK, mNG)
	}
	t.Logf("over Modbus: alert raised %.1f s after start; %d OK and %d NG windows so far", am["received_s"], mOK, mNG)
	if nOK < 5 || nNG < 1 {
		t.Errorf("verdicts: %d OK, %d NG; want healthy windows judged OK first, then anomalies", nOK, nNG)
	}
	t.Logf("alert raised %.1f s after start (fault onset at 8 s, full at 14 s); %d OK and %d NG windows so far", a["received_s"], nOK, nNG)

	resp, err := http.Get("http://" + l.httpAddr + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st struct {
		Sources map[string]struct {
			Health *struct {
				Score, Index float64
				Alert        bool
			} `json:"health"`
		} `json:"sources"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	h := st.Sources["motor-1"].Health
	if h == nil || !h.Alert || h.Index > 0.5 {
		t.Errorf("status health %+v, want the alert raised and an index below 0.5: %s", h, body)
	}
	m := scrape(t, l.httpAddr)
	if r := m[`edged_window_resets_total{reason="gap",source="motor-1-modbus"}`] + m[`edged_window_resets_total{reason="restart",source="motor-1-modbus"}`]; r != 0 {
		t.Errorf("the window over Modbus started over %v times: the waveform blocks should join up", r)
	}
	if m[`edged_window_samples_total{source="motor-1"}`] < 2048*8 || m[`edged_alert_active{inspection="motor-1-bearing",kind="vibration"}`] != 1 {
		t.Errorf("samples %v, alert active %v", m[`edged_window_samples_total{source="motor-1"}`], m[`edged_alert_active{inspection="motor-1-bearing",kind="vibration"}`])
	}
	c.Disconnect(100)
	if code := p.stop(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
