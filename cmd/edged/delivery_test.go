package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/edgedrun/edged/internal/testmqtt"
	"github.com/edgedrun/edged/spool"
)

// TestSpoolSurvivesCrash: edged inspects while its broker is down, so its results go
// to the spool on disk; it is then killed outright (SIGKILL: no drain, no goodbye). The
// next edged on the same spool folder, with the broker back, must deliver every result
// the first one spooled, seq 1..N without a gap, before any result of its own.
func TestSpoolSurvivesCrash(t *testing.T) {
	srv := testmqtt.StartServer(t, testmqtt.Options{})
	srv.Stop()
	l := writeConfig(t, srv.URL(), "")
	dir := spoolDir(t, l)

	first := startEdged(t, "run", "-c", l.config)
	// A few seconds of results with nowhere to go but the spool.
	waitMetric(t, first, l.httpAddr, "edged_mqtt_spool_records", 300, 90*time.Second)
	if code := first.stop(t, syscall.SIGKILL, 10*time.Second); code != -1 {
		t.Fatalf("exit code %d after SIGKILL", code)
	}
	killed := time.Now()

	// What the crash left: the spool recovers it on open, as the next edged will.
	sp, err := spool.Open(spool.Options{Dir: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	spooled := sp.Len()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if spooled < 300 {
		t.Fatalf("the spool holds %d records after the crash; the metric said at least 300 were spooled", spooled)
	}

	srv.Start()
	c := subscribe(t, srv.URL(), l)
	restarted := time.Now()
	second := startEdged(t, "run", "-c", l.config)
	waitReady(t, second, l.httpAddr)

	// Results of the first run were captured before the crash; the second run's after
	// its start.
	firstRun := func() (seqs []uint64, ownSeen bool, ids map[string]int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		ids = map[string]int{}
		for _, r := range c.results {
			at, _ := time.Parse(time.RFC3339Nano, r["captured_at"].(string))
			id := r["id"].(string)
			switch {
			case at.Before(killed):
				ids[id]++
				if ids[id] > 1 {
					continue
				}
				if ownSeen {
					t.Fatalf("a result of the first run (seq %v) arrived after results of the second", r["seq"])
				}
				seqs = append(seqs, uint64(r["seq"].(float64)))
			case at.After(restarted):
				ownSeen = true
			default:
				t.Fatalf("result captured at %s, between the crash and the restart", at)
			}
		}
		return seqs, ownSeen, ids
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		seqs, ownSeen, _ := firstRun()
		if len(seqs) >= spooled && ownSeen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90s the subscriber has %d of the %d spooled results (second run's own seen: %v)", len(seqs), spooled, ownSeen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := second.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}

	seqs, _, ids := firstRun()
	c.mu.Lock()
	for i, r := range c.results {
		checkPayload(t, c.topics[i], r, l)
	}
	c.mu.Unlock()
	if !sort.SliceIsSorted(seqs, func(i, j int) bool { return seqs[i] < seqs[j] }) {
		t.Errorf("first-run results arrived out of order: %v", seqs[:min(len(seqs), 20)])
	}
	sorted := append([]uint64(nil), seqs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	for i, s := range sorted {
		if s != uint64(i+1) {
			t.Fatalf("first-run results: seq %d where %d was due: the spooled results are not 1..%d without a gap", s, i+1, len(sorted))
		}
	}
	if len(sorted) != spooled {
		t.Errorf("%d first-run results delivered, the spool held %d", len(sorted), spooled)
	}
	dups := 0
	for _, n := range ids {
		dups += n - 1
	}
	t.Logf("first run spooled %d results (seq 1..%d) before SIGKILL; all delivered by the second run before its own, %d duplicates",
		spooled, len(sorted), dups)
}

// spoolDir returns the spool folder of l's config, giving it one in the test's own
// folder if it has none (the default, var/spool, would be shared between tests).
func spoolDir(t *testing.T, l *testLine) string {
	t.Helper()
	b, err := os.ReadFile(l.config)
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`spool: \{dir: "([^"]+)"`).FindSubmatch(b); m != nil {
		return string(m[1])
	}
	dir := filepath.Join(t.TempDir(), "spool")
	replaceConfig(t, l, "connect_timeout: 2s}", fmt.Sprintf("connect_timeout: 2s, spool: {dir: %q}}", dir))
	return dir
}

// waitMetric polls /metrics until name (a full sample name with its labels, as scrape
// keys it) reaches at least atLeast.
func waitMetric(t *testing.T, p *proc, addr, name string, atLeast float64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("edged exited while waiting for %s: %v", name, err)
		default:
		}
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if v := scrape(t, addr)[name]; v >= atLeast {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach %v within %v", name, atLeast, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
