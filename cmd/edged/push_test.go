package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgedrun/edged/internal/testmqtt"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
	"github.com/edgedrun/edged/models/swap"
)

const testToken = "t0ken-for-the-tests"

// signer is a key pair made by `edged model keygen`, and the bundled el-defect model
// with manifests signed by it under new versions.
type signer struct {
	dir       string
	key, pub  string
	modelFile string
}

func newSigner(t *testing.T) *signer {
	t.Helper()
	s := &signer{dir: t.TempDir()}
	p := startEdged(t, "model", "keygen", "-out", s.dir, "-name", "plant")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("model keygen: exit %d\n%s", code, p.output())
	}
	s.key, s.pub = filepath.Join(s.dir, "plant.key"), filepath.Join(s.dir, "plant.pub")
	if !strings.Contains(p.output(), "key id ed25519:") {
		t.Fatalf("keygen output lacks the key id:\n%s", p.output())
	}
	_, onnx, err := demo.LoadNamed("el-defect")
	if err != nil {
		t.Fatal(err)
	}
	s.modelFile = filepath.Join(s.dir, "model.onnx")
	if err := os.WriteFile(s.modelFile, onnx, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// sign writes a manifest for version of el-defect (the bundled model's bytes) and signs
// it with `edged model sign`.
func (s *signer) sign(t *testing.T, version string) string {
	t.Helper()
	m, _, err := demo.LoadNamed("el-defect")
	if err != nil {
		t.Fatal(err)
	}
	m.Version = version
	m.SHA256, m.Size, m.Signature, m.KeyID = "", 0, "", ""
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, "manifest-"+version+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startEdged(t, "model", "sign", "-key", s.key, "-manifest", path, "-model", s.modelFile)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("model sign: exit %d\n%s", code, p.output())
	}
	return path
}

// signFast signs in the test's process, for loops of many versions.
func (s *signer) signFast(t *testing.T, version string) *models.Manifest {
	t.Helper()
	m, _, err := demo.LoadNamed("el-defect")
	if err != nil {
		t.Fatal(err)
	}
	key, err := models.ReadPrivateKey(s.key)
	if err != nil {
		t.Fatal(err)
	}
	m.Version = version
	if err := models.Sign(m, key); err != nil {
		t.Fatal(err)
	}
	return m
}

// edgedCLI runs an edged subcommand to its end and returns its exit code and output.
func edgedCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := startEdged(t, args...)
	code := p.wait(t, 120*time.Second)
	return code, p.output()
}

// trustConfig gives a test line an admin token and the signer's key.
func trustConfig(t *testing.T, l *testLine, s *signer) {
	t.Helper()
	replaceConfig(t, l, fmt.Sprintf(`http: {listen: "%s"}`, l.httpAddr), fmt.Sprintf(`http: {listen: "%s", admin_token: "%s"}`, l.httpAddr, testToken))
	replaceConfig(t, l, fmt.Sprintf(`models: {dir: "%s"}`, l.modelsDir), fmt.Sprintf(`models: {dir: "%s", trusted_keys: ["%s"]}`, l.modelsDir, s.pub))
}

// versionsAfter returns the model versions of the results captured after since.
func (c *collector) versionsAfter(since time.Time) (versions map[string]int, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	versions = map[string]int{}
	for _, r := range c.results {
		at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(r["captured_at"]))
		if !at.After(since) {
			continue
		}
		m, _ := r["model"].(map[string]any)
		versions[fmt.Sprint(m["version"])]++
		n++
	}
	return versions, n
}

// waitVersion waits for n results captured after since and checks every one names
// version.
func (c *collector) waitVersion(t *testing.T, since time.Time, version string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		vs, got := c.versionsAfter(since)
		if got >= n {
			if len(vs) != 1 || vs[version] != got {
				t.Fatalf("results captured after the call returned name versions %v, want all %s", vs, version)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d results captured after %s within 60s, want %d", got, since.Format(time.RFC3339Nano), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestModelPushHTTP walks the README's "Pushing a model": keygen, sign, push over the
// admin API, rollback, while the simulated line runs; and the refusals a user meets:
// no token, a tampered manifest.
func TestModelPushHTTP(t *testing.T) {
	s := newSigner(t)
	l := writeConfig(t, "embedded", "")
	trustConfig(t, l, s)
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	c := subscribe(t, l.brokerURL, l)
	c.waitFor(t, 50, 60*time.Second)
	box := "http://" + l.httpAddr

	manifest := s.sign(t, "1.1.0")
	code, out := edgedCLI(t, "model", "verify", "-manifest", manifest, "-model", s.modelFile, "-trust", s.pub)
	if code != 0 || !strings.Contains(out, "signature by ed25519:") {
		t.Fatalf("model verify: exit %d\n%s", code, out)
	}

	// Without the token nothing changes.
	req, err := uploadRequest(box, &swap.Command{Name: "el-defect", Version: "1.1.0", Manifest: s.signFast(t, "1.1.0")}, openFile(s.modelFile))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("push without the token: %s, want 401", resp.Status)
	}

	code, out = edgedCLI(t, "model", "push", "-box", box, "-token", testToken, "-manifest", manifest, "-model", s.modelFile)
	pushed := time.Now()
	if code != 0 || !strings.Contains(out, "el-defect 1.1.0 active") {
		t.Fatalf("model push: exit %d\n%s", code, out)
	}
	c.waitVersion(t, pushed, "1.1.0", 50)

	// A manifest changed after signing is refused, and 1.1.0 keeps serving.
	b, err := os.ReadFile(s.sign(t, "1.2.0"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(s.dir, "tampered.json")
	if err := os.WriteFile(tampered, bytes.Replace(b, []byte(`"threshold": 0.`), []byte(`"threshold": 0.9`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = edgedCLI(t, "model", "push", "-box", box, "-token", testToken, "-manifest", tampered, "-model", s.modelFile)
	refused := time.Now()
	if code == 0 || !strings.Contains(out, "403") || !strings.Contains(strings.ToLower(out), "signature") {
		t.Fatalf("tampered push: exit %d, want a refusal naming the signature\n%s", code, out)
	}
	c.waitVersion(t, refused, "1.1.0", 20)
	if _, err := os.Stat(filepath.Join(l.modelsDir, "el-defect", "1.2.0")); !os.IsNotExist(err) {
		t.Fatalf("the refused version is in the repository: %v", err)
	}

	code, out = edgedCLI(t, "model", "rollback", "-box", box, "-token", testToken, "-name", "el-defect")
	rolled := time.Now()
	if code != 0 || !strings.Contains(out, "back to 1.0.0") {
		t.Fatalf("model rollback: exit %d\n%s", code, out)
	}
	c.waitVersion(t, rolled, "1.0.0", 50)

	code, out = edgedCLI(t, "model", "list", "-box", box, "-token", testToken)
	if code != 0 || !strings.Contains(out, `"1.1.0"`) || !strings.Contains(out, `"active": "1.0.0"`) {
		t.Fatalf("model list: exit %d\n%s", code, out)
	}
	m := scrape(t, l.httpAddr)
	checkConservation(t, m)
	for _, outcome := range []string{"dropped_full", "dropped_stale", "error"} {
		if n := frames(m, outcome); n != 0 {
			t.Errorf("%v frames %s across the swaps, want 0", n, outcome)
		}
	}
	if got := m[`edged_model_swaps_total{name="el-defect",result="ok"}`]; got != 2 {
		t.Errorf("edged_model_swaps_total ok = %v, want 2 (push, rollback)", got)
	}
	if got := m[`edged_model_swaps_total{name="el-defect",result="refused"}`]; got != 1 {
		t.Errorf("edged_model_swaps_total refused = %v, want 1", got)
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	audit, err := os.ReadFile(filepath.Join(l.modelsDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"action":"push"`, `"action":"rollback"`, `"action":"refuse"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit.log lacks %s:\n%s", want, audit)
		}
	}
}

func openFile(path string) func() (io.Reader, func() error, error) {
	return func() (io.Reader, func() error, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		return f, f.Close, nil
	}
}

// fleetBoxes is how many edged instances the fleet test runs against one mosquitto.
const fleetBoxes = 20

// TestModelPushFleet: `edged model push` through a real mosquitto reaches every box of
// the line, canaries first; each box downloads the model from the plant's model
// server, verifies and swaps it, and reports on its event topic.
func TestModelPushFleet(t *testing.T) {
	bin := buildPlain(t)
	broker := testmqtt.Start(t)
	s := newSigner(t)
	manifest := s.sign(t, "2.0.0")
	var downloads, ranged atomicCounter
	files := http.FileServer(http.Dir(s.dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		downloads.add()
		if r.Header.Get("Range") != "" {
			ranged.add()
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()

	type box struct {
		node, http string
		p          *proc
	}
	var boxes []box
	root := t.TempDir()
	for i := range fleetBoxes {
		// Port 0: twenty addresses picked ahead would race the boxes' own outgoing
		// connections for the ephemeral ports; each box says where it listens.
		b := box{node: fmt.Sprintf("n%02d", i+1)}
		dir := filepath.Join(root, b.node)
		cfg := fmt.Sprintf(`node: {site: s1, line: fleet, name: %s}
log: {level: info, format: json}
runtime: {intra_op_threads: 1, inter_op_threads: 1}
http: {listen: "127.0.0.1:0"}
mqtt: {broker: "%s", connect_timeout: 2s, spool: {dir: "%s"}}
models: {dir: "%s", trusted_keys: ["%s"]}
sources:
  - name: cam
    type: sim
    sim: {rate_hz: 2, seed: %d}
inspections:
  - name: el
    source: cam
    model: el-defect
`, b.node, broker, filepath.Join(dir, "spool"), filepath.Join(dir, "models"), s.pub, i+1)
		path := filepath.Join(root, b.node+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		b.p = startBin(t, bin, "run", "-c", path)
		boxes = append(boxes, b)
	}
	for i := range boxes {
		boxes[i].http = listenAddr(t, boxes[i].p)
		waitReady(t, boxes[i].p, boxes[i].http)
	}
	start := time.Now()
	p := startBin(t, bin, "model", "push", "-broker", broker, "-site", "s1", "-line", "fleet",
		"-manifest", manifest, "-model-url", srv.URL+"/model.onnx", "-canary-count", "2", "-discover", "1s", "-timeout", "2m")
	code := p.wait(t, 3*time.Minute)
	took := time.Since(start)
	out := p.output()
	if code != 0 || !strings.Contains(out, fmt.Sprintf("all %d boxes done", fleetBoxes)) {
		t.Fatalf("fleet push: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "canary: 2 boxes done") {
		t.Errorf("no canary wave in the output:\n%s", out)
	}
	for _, b := range boxes {
		var st statusDoc
		getJSON(t, "http://"+b.http+"/v1/status", &st)
		if len(st.Models) != 1 || st.Models[0].Version != "2.0.0" {
			t.Errorf("%s serves %+v, want el-defect 2.0.0", b.node, st.Models)
		}
	}
	t.Logf("fleet: %d boxes on one mosquitto swapped to 2.0.0 in %v (command to the last box's event, 1 s discovery included); %d downloads, %d with Range", fleetBoxes, took.Round(time.Millisecond), downloads.get(), ranged.get())
	t.Logf("push output:\n%s", out)
	for _, b := range boxes {
		if code := b.p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Errorf("%s: exit %d after SIGTERM", b.node, code)
		}
	}
}

var startedHTTP = regexp.MustCompile(`"msg":"edged started".*"http":"http://([0-9.:]+)"`)

// listenAddr waits for edged's start line and returns the admin server's address.
func listenAddr(t *testing.T, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if m := startedHTTP.FindStringSubmatch(p.output()); m != nil {
			return m[1]
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("edged exited before it started: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("edged did not log its start within 60s")
	return ""
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestKilledDuringPush: edged killed with SIGKILL at a random moment of a push and swap,
// again and again; every time it starts again, serves one active version of the model,
// and the repository holds nothing half written.
func TestKilledDuringPush(t *testing.T) {
	rounds := 8
	if soak() {
		rounds = 50
	}
	bin := buildPlain(t)
	s := newSigner(t)
	l := writeConfig(t, "embedded", "")
	trustConfig(t, l, s)
	_, onnx, err := demo.LoadNamed("el-defect")
	if err != nil {
		t.Fatal(err)
	}
	box := "http://" + l.httpAddr
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	seen := map[string]bool{}
	var pushed string
	landed := 0
	for round := range rounds {
		p := startBin(t, bin, "run", "-c", l.config)
		waitReady(t, p, l.httpAddr)
		var list struct {
			Models []modelStatusDoc `json:"models"`
		}
		getJSON(t, box+"/v1/models", &list)
		ms := list.Models
		if len(ms) != 1 || ms[0].Name != "el-defect" || ms[0].Active == "" {
			t.Fatalf("round %d: /v1/models %+v, want el-defect with an active version", round, ms)
		}
		seen[ms[0].Active] = true
		if pushed != "" && ms[0].Active == pushed {
			landed++
		}
		checkRepository(t, l.modelsDir)
		m := s.signFast(t, fmt.Sprintf("1.%d.0", round+1))
		pushed = m.Version
		req, err := uploadRequest(box, &swap.Command{Name: m.Name, Version: m.Version, Manifest: m}, func() (io.Reader, func() error, error) {
			return bytes.NewReader(onnx), func() error { return nil }, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		// A push and swap of this model takes tens of milliseconds here: the kill
		// lands before, during or after it.
		time.Sleep(time.Duration(rng.IntN(120)) * time.Millisecond)
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		p.wait(t, 30*time.Second)
		<-done
	}
	p := startBin(t, bin, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	checkRepository(t, l.modelsDir)
	if v, _ := models.OpenRepository(l.modelsDir); v != nil {
		if active, err := v.ActiveVersion("el-defect"); err == nil && active == pushed {
			landed++
		}
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	var vs []string
	for v := range seen {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	t.Logf("%d kills during push and swap (%d after the push was active, %d before); edged started every time; active versions seen at start: %v", rounds, landed, rounds-landed, vs)
}

type modelStatusDoc struct {
	Name   string `json:"name"`
	Active string `json:"active"`
}

// checkRepository reads the repository as edged would: one active version that loads
// and verifies, and no leftovers of an install once it was opened.
func checkRepository(t *testing.T, dir string) {
	t.Helper()
	repo, err := models.OpenRepository(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.LoadActive("el-defect"); err != nil {
		t.Fatalf("active model: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "el-defect"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover %s in the repository after it was opened", e.Name())
		}
	}
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) add()       { c.n.Add(1) }
func (c *atomicCounter) get() int64 { return c.n.Load() }
