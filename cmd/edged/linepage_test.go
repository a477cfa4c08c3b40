package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgedrun/edged/internal/testmqtt"
)

// The line page is tested in a real browser: Debian's chromium, headless, driven by
// playwright-core (pinned in testdata/browser/package-lock.json) from a Node script that
// reports over its stdout what it wants done to the line.
const (
	browserDir     = "testdata/browser"
	browserScript  = "linepage.js"
	chromiumBinary = "/usr/bin/chromium"
	// browserTimeout bounds the script; the test's own waits are shorter than it.
	browserTimeout = 75 * time.Second
	// pageToken is set as the admin token so that the page is seen to need none.
	pageToken = "line-page-test-token"
)

// requireBrowser fails the test, naming what to install, unless node, chromium and the
// pinned playwright-core are all there. It returns node's path.
func requireBrowser(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumBinary); err != nil {
		t.Fatalf("chromium is needed for the line page test: apt-get install -y chromium (%v)", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed for the line page test: apt-get install -y nodejs npm (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("playwright-core is not installed: run make test-setup (npm ci --prefix cmd/edged/testdata/browser) (%v)", err)
	}
	return node
}

// artifactPath is where a test keeps a file for people to look at after the run:
// $EDGED_ARTIFACTS, else var/test-artifacts in the repository.
func artifactPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("EDGED_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "var", "test-artifacts")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts folder: %v", err)
	}
	path := filepath.Join(dir, name)
	// A screenshot left by an earlier run must not pass for this one's.
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return path
}

// browser is the running Node script.
type browser struct {
	cmd    *exec.Cmd
	lines  chan string // its stdout, closed at EOF
	stderr bytes.Buffer
	done   chan error
}

func startBrowser(t *testing.T, node string, args ...string) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout+10*time.Second)
	b := &browser{lines: make(chan string, 64), done: make(chan error, 1)}
	b.cmd = exec.CommandContext(ctx, node, append([]string{browserScript, fmt.Sprintf("--timeout-ms=%d", browserTimeout.Milliseconds())}, args...)...)
	b.cmd.Dir = browserDir
	b.cmd.Stderr = &b.stderr
	// SIGTERM lets playwright close chromium; what outlives WaitDelay is killed.
	b.cmd.Cancel = func() error { return b.cmd.Process.Signal(syscall.SIGTERM) }
	b.cmd.WaitDelay = 10 * time.Second
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s %s: %v", node, browserScript, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		close(b.lines)
		// Wait closes the pipe, so it waits for the reads to end.
		b.done <- b.cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		for range b.lines {
		}
		err := <-b.done
		b.done <- err
		if t.Failed() {
			t.Logf("browser script output:\n%s", b.stderr.String())
		}
	})
	return b
}

// expect waits for the script's next line to be want.
func (b *browser) expect(t *testing.T, want string, within time.Duration) {
	t.Helper()
	select {
	case line, ok := <-b.lines:
		if !ok {
			t.Fatalf("browser script ended before it said %q: %v", want, b.exit())
		}
		if line != want {
			t.Fatalf("browser script said %q, want %q", line, want)
		}
	case <-time.After(within):
		t.Fatalf("browser script did not say %q within %v", want, within)
	}
}

// exit waits for the script to end, after its stdout closed.
func (b *browser) exit() error {
	err := <-b.done
	b.done <- err
	return err
}

// finish reads the script's summary and its exit status 0.
func (b *browser) finish(t *testing.T, within time.Duration) map[string]any {
	t.Helper()
	var summary map[string]any
	timeout := time.After(within)
	for {
		select {
		case line, ok := <-b.lines:
			if !ok {
				if err := b.exit(); err != nil {
					t.Fatalf("browser script: %v", err)
				}
				if summary == nil {
					t.Fatal("browser script exited 0 without a summary")
				}
				return summary
			}
			js, found := strings.CutPrefix(line, "summary ")
			if !found {
				t.Fatalf("browser script said %q, want its summary", line)
			}
			if err := json.Unmarshal([]byte(js), &summary); err != nil {
				t.Fatalf("browser summary %q: %v", js, err)
			}
		case <-timeout:
			t.Fatalf("browser script did not finish within %v", within)
		}
	}
}

// servingVersion reads the serving version of model from /v1/status.
func servingVersion(t *testing.T, addr, model string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Models []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"models"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("decode /v1/status: %v", err)
	}
	for _, m := range st.Models {
		if m.Name == model && m.Version != "" {
			return m.Version
		}
	}
	t.Fatalf("/v1/status lists no active version of %s: %+v", model, st.Models)
	return ""
}

// linePageConfig is a simulated line that makes NG images often, with an admin token
// the page must do without.
func linePageConfig(t *testing.T, broker string) *testLine {
	t.Helper()
	l := writeConfig(t, broker, "")
	replaceConfig(t, l, "sim: {rate_hz: 100, seed: 42, defect_rate: 0.2}", "sim: {rate_hz: 20, seed: 42, defect_rate: 0.5}")
	replaceConfig(t, l, fmt.Sprintf(`http: {listen: "%s"}`, l.httpAddr), fmt.Sprintf(`http: {listen: "%s", admin_token: %q}`, l.httpAddr, pageToken))
	return l
}

// TestLinePageInBrowser opens the line page in chromium at a panel PC's 1366x768 while
// edged runs the simulator: the stream goes live, verdicts arrive newest first, an NG
// image loads from the box, the counters, the active model and the source show, no
// banner is up, nothing is fetched from elsewhere and nothing but reads is asked, all
// without the admin token. A model pushed meanwhile shows as the active version, in
// the swap history, and in the verdicts after it. Then edged is stopped (SIGTERM, exit 0 with the page
// attached): the page says the stream is down; edged starts again on the same address
// and the page reconnects by itself and shows the new run's verdicts. The screenshot is
// kept as an artefact (and becomes docs/linepage.png with EDGED_UPDATE_SCREENSHOT=1).
func TestLinePageInBrowser(t *testing.T) {
	node := requireBrowser(t)
	s := newSigner(t)
	l := linePageConfig(t, "embedded")
	replaceConfig(t, l, fmt.Sprintf(`models: {dir: "%s"}`, l.modelsDir), fmt.Sprintf(`models: {dir: "%s", trusted_keys: ["%s"]}`, l.modelsDir, s.pub))
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	version := servingVersion(t, l.httpAddr, "el-defect")
	shot := artifactPath(t, "linepage.png")

	b := startBrowser(t, node, "--url=http://"+l.httpAddr+"/", "--screenshot="+shot, "--scenario=restart",
		"--inspection=el", "--source=cam", "--model=el-defect", "--version="+version, "--push=1.1.0")
	b.expect(t, "push", 45*time.Second)
	if code, out := edgedCLI(t, "model", "push", "-box", "http://"+l.httpAddr, "-token", pageToken,
		"-manifest", s.sign(t, "1.1.0"), "-model", s.modelFile); code != 0 {
		t.Fatalf("model push while the page watches: exit %d\n%s", code, out)
	}
	b.expect(t, "restart", 45*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("edged exited %d on SIGTERM with the line page open, want 0", code)
	}
	b.expect(t, "down", 20*time.Second)
	p = startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	summary := b.finish(t, 45*time.Second)
	js, _ := json.Marshal(summary)
	t.Logf("browser: %s", js)
	t.Logf("line page screenshot (1366x768): %s", shot)

	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if before, after := summary["max_seq_before"].(float64), summary["first_seq_after"].(float64); after >= before || after < 1 {
		t.Fatalf("first seq after the restart %v, before it %v: want the new run's lower seq", after, before)
	}
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("edged exited %d on SIGTERM after the restart, want 0", code)
	}
	if os.Getenv("EDGED_UPDATE_SCREENSHOT") == "1" {
		copyFile(t, shot, filepath.Join("..", "..", "docs", "linepage.png"))
	}
}

// TestLinePageBrokerBanner: while the MQTT broker is down the page keeps its stream
// and puts up the banner that says so; once the broker is back the banner goes.
func TestLinePageBrokerBanner(t *testing.T) {
	node := requireBrowser(t)
	srv := testmqtt.StartServer(t, testmqtt.Options{})
	l := linePageConfig(t, srv.URL())
	replaceConfig(t, l, "connect_timeout: 2s,", "connect_timeout: 2s, breaker: {window: 2s, min_calls: 5, open_timeout: 1s},")
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	shot := artifactPath(t, "linepage-banner.png")

	b := startBrowser(t, node, "--url=http://"+l.httpAddr+"/", "--screenshot="+shot, "--scenario=banner")
	b.expect(t, "stop-broker", 30*time.Second)
	srv.Stop()
	b.expect(t, "start-broker", 40*time.Second)
	srv.Start()
	summary := b.finish(t, 50*time.Second)
	js, _ := json.Marshal(summary)
	t.Logf("browser: %s", js)
	t.Logf("broker banner screenshot (1366x768): %s", shot)
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("edged exited %d on SIGTERM, want 0", code)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(to)
	t.Logf("updated %s", abs)
}
