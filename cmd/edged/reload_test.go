package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgedrun/edged/config"
)

// TestReloadOnSIGHUP: a file that does not validate changes nothing and sets
// edged_config_reload_success to 0; a good one changes the threshold, the fail-safe
// action and the simulator's rate while results keep flowing, and names what needs a
// restart.
func TestReloadOnSIGHUP(t *testing.T) {
	l := writeConfig(t, "embedded", "")
	orig, err := os.ReadFile(l.config)
	if err != nil {
		t.Fatal(err)
	}
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	c := subscribe(t, l.brokerURL, l)
	c.waitFor(t, 20, 30*time.Second)

	rewrite := func(edit func(string) string) {
		t.Helper()
		if err := os.WriteFile(l.config, []byte(edit(string(orig))), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	waitValue := func(name string, want float64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, ok := scrape(t, l.httpAddr)[name]
			if ok && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v (present %v), want %v", name, got, ok, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A threshold out of range: refused as a whole, with the rate change beside it.
	rewrite(func(s string) string {
		return strings.Replace(s, "rate_hz: 100", "rate_hz: 40", 1) + "    threshold: 1.5\n"
	})
	waitValue(`edged_config_reloads_total{result="refused"}`, 1)
	waitValue("edged_config_reload_success", 0)
	if r := scrape(t, l.httpAddr)[`edged_source_rate_hz{source="cam"}`]; r != 100 {
		t.Errorf("rate %v Hz after a refused reload, want 100", r)
	}
	// A probability of 1.5 is refused by the model's postprocessing (a score model
	// would take it), naming the key.
	if out := p.output(); !strings.Contains(out, "config reload refused") || !strings.Contains(out, "inspections[0].threshold") || !strings.Contains(out, "threshold 1.5 is not in (0,1)") {
		t.Errorf("the refusal does not name the bad key:\n%s", out)
	}

	// A good file: every frame NG from a threshold just above 0, the fail-safe and
	// rate changed live, and shutdown_timeout reported as needing a restart.
	rewrite(func(s string) string {
		s = strings.Replace(s, "rate_hz: 100", "rate_hz: 40", 1)
		s = strings.Replace(s, "shutdown_timeout: 10s", "shutdown_timeout: 11s", 1)
		return s + "    threshold: 0.000001\n    fail_safe: reject\n"
	})
	waitValue(`edged_config_reloads_total{result="applied"}`, 1)
	waitValue("edged_config_reload_success", 1)
	waitValue(`edged_source_rate_hz{source="cam"}`, 40)
	before := c.count()
	c.waitFor(t, before+40, 30*time.Second)
	c.mu.Lock()
	tail := c.results[before+10:] // a few may have been in flight during the reload
	c.mu.Unlock()
	for _, r := range tail {
		if r["verdict"] != "NG" {
			t.Fatalf("verdict %v after the threshold became 1e-6: %v", r["verdict"], r)
		}
	}
	out := p.output()
	for _, want := range []string{"config reloaded", "inspections[0].threshold", "inspections[0].fail_safe", "sources[0].sim", "take effect at the next start", "shutdown_timeout"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestRestartKeys: what a reload cannot apply live is named, key by key.
func TestRestartKeys(t *testing.T) {
	a, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	b, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	if k := restartKeys(a, b); len(k) != 0 {
		t.Errorf("equal configs: %v", k)
	}
	b.Log.Level = "debug"
	b.MQTT.QoS = 0
	b.MQTT.Breaker.MinCalls = 3
	if k := restartKeys(a, b); len(k) != 0 {
		t.Errorf("live changes reported as needing a restart: %v", k)
	}
	b.Pipeline.RingSize = 7
	b.HTTP.Listen = "127.0.0.1:1"
	b.MQTT.Broker = "tcp://127.0.0.1:1"
	b.ShutdownTimeout = config.Duration(time.Second)
	got := strings.Join(restartKeys(a, b), ",")
	if got != "http.listen,mqtt.broker,pipeline.ring_size,shutdown_timeout" {
		t.Errorf("restart keys %s", got)
	}
}
