package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/internal/testmodbus"
	"github.com/edgedrun/edged/internal/testmqtt"
)

// edgedBin is the binary under test, built once with the race detector.
var edgedBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edged-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	edgedBin = filepath.Join(dir, "edged")
	build := exec.Command("go", "build", "-race", "-o", edgedBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build edged:", err)
		os.Exit(1)
	}
	// VerifyTestMain exits the process itself, so the clean-up goes through it.
	goleak.VerifyTestMain(m,
		goleak.Cleanup(func(int) { os.RemoveAll(dir); testmodbus.Cleanup() }),
		// paho's store and network goroutines end after Disconnect returns, a moment later.
		goleak.IgnoreTopFunction("github.com/eclipse/paho.mqtt.golang.(*router).matchAndDispatch.func1"),
	)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type testLine struct {
	site, line, node string
	httpAddr         string
	brokerURL        string // what subscribers connect to
	config           string // path
	modelsDir        string
}

// writeConfig makes a config for a fast simulated line. broker is "embedded" or a URL.
func writeConfig(t *testing.T, broker string, extra string) *testLine {
	t.Helper()
	dir := t.TempDir()
	l := &testLine{site: "s1", line: "l1", node: "n1", httpAddr: freeAddr(t), modelsDir: filepath.Join(dir, "models")}
	embedded := freeAddr(t)
	if broker == "embedded" {
		l.brokerURL = "tcp://" + embedded
	} else {
		l.brokerURL = broker
	}
	cfg := fmt.Sprintf(`node: {site: %s, line: %s, name: %s}
log: {level: info, format: json}
http: {listen: "%s"}
mqtt: {broker: "%s", embedded_listen: "%s", connect_timeout: 2s, spool: {dir: "%s"}}
models: {dir: "%s"}
shutdown_timeout: 10s
sources:
  - name: cam
    type: sim
    verdict_budget: 2s
    sim: {rate_hz: 100, seed: 42, defect_rate: 0.2}
inspections:
  - name: el
    source: cam
    model: el-defect
%s`, l.site, l.line, l.node, l.httpAddr, broker, embedded, filepath.Join(dir, "spool"), l.modelsDir, extra)
	l.config = filepath.Join(dir, "edged.yaml")
	if err := os.WriteFile(l.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

// proc is a running edged.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

func startEdged(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(edgedBin, args...), done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	p.cmd.Stdout = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.Write(sc.Bytes())
			p.stderr.WriteByte('\n')
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := p.cmd.Wait()
		pw.Close()
		<-copied
		p.done <- err
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("edged output:\n%s", p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// stop sends sig and waits for the exit, returning its code.
func (p *proc) stop(t *testing.T, sig os.Signal, within time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return p.wait(t, within)
}

func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("edged wait: %v", err)
	case <-time.After(within):
		t.Fatalf("edged did not exit within %v", within)
	}
	return -1
}

func waitReady(t *testing.T, p *proc, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("edged exited before it was ready: %v", err)
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("edged not ready within 60s")
}

// collector subscribes to a node's results.
type collector struct {
	mu      sync.Mutex
	results []map[string]any
	raw     [][]byte
	topics  []string
	status  []string
	client  mqtt.Client
}

func subscribe(t *testing.T, brokerURL string, l *testLine) *collector {
	t.Helper()
	c := &collector{}
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(fmt.Sprintf("e2e-sub-%d", time.Now().UnixNano())).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetOrderMatters(true).
		// Reconnecting after the broker inside edged stops would outlive the test.
		SetAutoReconnect(false)
	c.client = mqtt.NewClient(opts)
	tok := c.client.Connect()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", brokerURL, tok.Error())
	}
	prefix := fmt.Sprintf("edged/v1/%s/%s/%s/", l.site, l.line, l.node)
	st := c.client.Subscribe(prefix+"#", 1, func(_ mqtt.Client, m mqtt.Message) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case strings.HasPrefix(m.Topic(), prefix+"result/"):
			var r map[string]any
			if err := json.Unmarshal(m.Payload(), &r); err != nil {
				t.Errorf("result payload is not JSON: %v: %s", err, m.Payload())
				return
			}
			c.results = append(c.results, r)
			c.raw = append(c.raw, append([]byte(nil), m.Payload()...))
			c.topics = append(c.topics, m.Topic())
		case m.Topic() == prefix+"status":
			c.status = append(c.status, string(m.Payload()))
		}
	})
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("subscribe: %v", st.Error())
	}
	t.Cleanup(func() { c.client.Disconnect(100) })
	return c
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.results)
}

func (c *collector) waitFor(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for c.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("received %d results in %v, want %d", c.count(), within, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle waits until no result has arrived for quiet.
func (c *collector) settle(quiet time.Duration) {
	last := -1
	for c.count() != last {
		last = c.count()
		time.Sleep(quiet)
	}
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)
var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkPayload validates one result against the documented fields.
func checkPayload(t *testing.T, topic string, r map[string]any, l *testLine) {
	t.Helper()
	want := []string{"v", "id", "trace_id", "node", "inspection", "source", "seq", "captured_at", "verdict", "label", "score", "scores", "model", "latency_ms", "truth"}
	if len(r) != len(want) {
		t.Fatalf("result has keys %v, want exactly %v", keys(r), want)
	}
	for _, k := range want {
		if _, ok := r[k]; !ok {
			t.Fatalf("result lacks %q: %v", k, r)
		}
	}
	if topic != fmt.Sprintf("edged/v1/%s/%s/%s/result/el", l.site, l.line, l.node) {
		t.Fatalf("topic %q", topic)
	}
	if r["v"] != 1.0 || r["node"] != l.node || r["inspection"] != "el" || r["source"] != "cam" {
		t.Fatalf("identity fields: %v", r)
	}
	if !hex32.MatchString(r["id"].(string)) || !hex32.MatchString(r["trace_id"].(string)) {
		t.Fatalf("id %v / trace_id %v are not 32 hex digits", r["id"], r["trace_id"])
	}
	if seq, ok := r["seq"].(float64); !ok || seq < 1 || seq != math.Trunc(seq) {
		t.Fatalf("seq %v", r["seq"])
	}
	if _, err := time.Parse(time.RFC3339Nano, r["captured_at"].(string)); err != nil {
		t.Fatalf("captured_at: %v", err)
	}
	labels := []string{"ok", "crack", "dark_spot", "broken_finger"}
	v, label := r["verdict"].(string), r["label"].(string)
	if (v == "OK") != (label == "ok") || (v != "OK" && v != "NG") {
		t.Fatalf("verdict %q with label %q", v, label)
	}
	score := r["score"].(float64)
	if score < 0.5 || score > 1 {
		t.Fatalf("score %v of the verdict must be in [0.5,1] at threshold 0.5", score)
	}
	scores := r["scores"].(map[string]any)
	sum := 0.0
	for _, lb := range labels {
		p, ok := scores[lb].(float64)
		if !ok || p < 0 || p > 1 {
			t.Fatalf("scores[%s] = %v", lb, scores[lb])
		}
		sum += p
	}
	if len(scores) != len(labels) || math.Abs(sum-1) > 1e-3 {
		t.Fatalf("scores %v: want the 4 labels summing to 1", scores)
	}
	m := r["model"].(map[string]any)
	if m["name"] != "el-defect" || m["version"] == "" || !hex64.MatchString(m["sha256"].(string)) || len(m) != 3 {
		t.Fatalf("model %v", m)
	}
	lat := r["latency_ms"].(map[string]any)
	for _, k := range []string{"queue", "infer", "total"} {
		if x, ok := lat[k].(float64); !ok || x < 0 {
			t.Fatalf("latency_ms.%s = %v", k, lat[k])
		}
	}
	if lat["total"].(float64) < lat["infer"].(float64) {
		t.Fatalf("latency total %v below infer %v", lat["total"], lat["infer"])
	}
	if tr := r["truth"].(string); !contains(labels, tr) {
		t.Fatalf("truth %q", tr)
	}
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// checkResults validates every payload, the order and uniqueness, and returns the
// verdict accuracy against the simulator's ground truth.
func checkResults(t *testing.T, c *collector, l *testLine) (accuracy float64, seqs []uint64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := map[string]bool{}
	correct := 0
	for i, r := range c.results {
		checkPayload(t, c.topics[i], r, l)
		if ids[r["id"].(string)] {
			t.Fatalf("result id %v repeated", r["id"])
		}
		ids[r["id"].(string)] = true
		seq := uint64(r["seq"].(float64))
		if len(seqs) > 0 && seq != seqs[len(seqs)-1]+1 {
			t.Fatalf("result %d has seq %d after %d: results are missing or out of order", i, seq, seqs[len(seqs)-1])
		}
		seqs = append(seqs, seq)
		if (r["truth"] == "ok") == (r["verdict"] == "OK") {
			correct++
		}
	}
	return float64(correct) / float64(len(c.results)), seqs
}

// scrape reads /metrics into name{labels} -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func frames(m map[string]float64, outcome string) float64 {
	return m[`edged_frames_total{outcome="`+outcome+`",source="cam"}`]
}

// checkConservation asserts accepted = published + dropped + in flight in one scrape.
func checkConservation(t *testing.T, m map[string]float64) {
	t.Helper()
	acc := frames(m, "accepted")
	sum := frames(m, "published") + frames(m, "dropped_full") + frames(m, "dropped_stale") + frames(m, "error") +
		frames(m, "dropped_shutdown") + m[`edged_frames_in_flight{source="cam"}`]
	if acc == 0 || acc != sum {
		t.Fatalf("frames accepted %v != published + dropped + in flight %v", acc, sum)
	}
}

func TestEndToEndEmbeddedBroker(t *testing.T) {
	l := writeConfig(t, "embedded", "")
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	c := subscribe(t, l.brokerURL, l)
	c.waitFor(t, 250, 60*time.Second)

	// Everything the pipeline had published by the scrape must reach the subscriber.
	m := scrape(t, l.httpAddr)
	checkConservation(t, m)
	published := frames(m, "published")
	if frames(m, "error") != 0 || frames(m, "dropped_full") != 0 || frames(m, "dropped_stale") != 0 {
		t.Fatalf("frames lost on an idle box: %v", m)
	}
	verdicts := m[`edged_verdicts_total{inspection="el",verdict="OK"}`] + m[`edged_verdicts_total{inspection="el",verdict="NG"}`]
	if verdicts < published {
		t.Fatalf("verdicts_total %v below frames published %v", verdicts, published)
	}
	// Messages acknowledged by the broker: the results plus the retained status. The
	// publisher's counter is read a moment after the pipeline's in one scrape, so it is
	// bounded by the frames accepted as of a later scrape.
	later := scrape(t, l.httpAddr)
	if acked := m[`edged_mqtt_published_total{qos="1"}`]; acked > frames(later, "accepted")+1 || acked < 200 {
		t.Fatalf("mqtt_published_total %v with %v frames accepted by the next scrape", acked, frames(later, "accepted"))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, seqs := checkResults(t, c, l)
		if seqs[len(seqs)-1] >= uint64(published) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber saw up to seq %d; metrics said %v published", seqs[len(seqs)-1], published)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m[`edged_model_info{name="el-defect",sha256="`] == 0 { // label order is name, sha256, version
		found := false
		for k := range m {
			found = found || strings.HasPrefix(k, `edged_model_info{name="el-defect"`)
		}
		if !found {
			t.Fatal("edged_model_info for el-defect missing")
		}
	}
	for _, name := range []string{"edged_ring_occupancy{stage=\"source:cam\"}", "edged_driver_up{source=\"cam\"}", "edged_source_rate_hz{source=\"cam\"}", "edged_inference_seconds_count", "edged_batch_size_count", "edged_mqtt_connected"} {
		if _, ok := m[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if m[`edged_driver_up{source="cam"}`] != 1 || m[`edged_source_rate_hz{source="cam"}`] <= 0 {
		t.Errorf("driver_up %v source_rate_hz %v", m[`edged_driver_up{source="cam"}`], m[`edged_source_rate_hz{source="cam"}`])
	}

	if code := p.stop(t, syscall.SIGINT, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
	acc, _ := checkResults(t, c, l)
	t.Logf("embedded broker: %d results, verdict accuracy %.4f", c.count(), acc)
	if acc < 0.97 {
		t.Fatalf("verdict accuracy against truth %.4f below 0.97", acc)
	}
	out := p.output()
	for _, bad := range []string{"panic", "DATA RACE", "goroutine "} {
		if strings.Contains(out, bad) {
			t.Fatalf("output contains %q", bad)
		}
	}
	if !strings.Contains(out, `"msg":"edged started"`) || !strings.Contains(out, `"msg":"edged stopped"`) {
		t.Fatal("start-up or stop line missing")
	}
}

// stopCounts reads the source and mqtt counts from the "edged stopped" log line.
func stopCounts(t *testing.T, out string) (published, acked int) {
	t.Helper()
	m := stopLine(t, out)
	return int(m["cam"]["published"]), int(m["mqtt"]["acked"])
}

// Against a real mosquitto the subscriber is there before edged starts, so it must see
// every result edged published, no more and no fewer, after a SIGTERM drain.
func TestEndToEndMosquitto(t *testing.T) {
	url := testmqtt.Start(t)
	l := writeConfig(t, url, "")
	c := subscribe(t, url, l)
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	c.waitFor(t, 250, 60*time.Second)
	checkConservation(t, scrape(t, l.httpAddr))
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	c.settle(300 * time.Millisecond)
	published, acked := stopCounts(t, p.output())
	acc, seqs := checkResults(t, c, l)
	if seqs[0] != 1 || len(seqs) != published || acked != published {
		t.Fatalf("subscriber got %d results (seq %d..%d); edged published %d frames, broker acked %d",
			len(seqs), seqs[0], seqs[len(seqs)-1], published, acked)
	}
	t.Logf("mosquitto: %d results, verdict accuracy %.4f", len(seqs), acc)
	if acc < 0.97 {
		t.Fatalf("verdict accuracy against truth %.4f below 0.97", acc)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.status) == 0 || c.status[0] != "online" || c.status[len(c.status)-1] != "offline" {
		t.Fatalf("status messages %v: want online first and offline last", c.status)
	}
}
