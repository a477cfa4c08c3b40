package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/edgedrun/edged/internal/testmodbus"
)

// lineServer is a test server process that prints its lines on stdout.
type lineServer struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	ready chan string
	done  chan struct{}
}

func startLineServer(t *testing.T, env []string, name string, args ...string) *lineServer {
	t.Helper()
	s := &lineServer{cmd: exec.Command(name, args...), ready: make(chan string, 1), done: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), env...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.lines = append(s.lines, line)
			s.mu.Unlock()
			if strings.HasPrefix(line, "ready") {
				select {
				case s.ready <- line:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
		_ = s.cmd.Wait()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("%s output:\n%s", filepath.Base(name), strings.Join(s.lines, "\n"))
			s.mu.Unlock()
		}
	})
	select {
	case <-s.ready:
	case <-s.done:
		t.Fatalf("%s exited before it was ready", name)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready within 60s", name)
	}
	return s
}

func (s *lineServer) output() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

func freePortNum(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestPLCDemo runs config/plc-demo.yaml against the independent test servers: the
// libmodbus server as the spindle's vibration transmitter, node-opcua as the press-fit
// station's PLC. Every part the PLC presents gets the verdict the process window calls
// for, on MQTT with its part id, and the verdict is written back to the PLC for that
// part; the vibration alarm lights the transmitter's coil.
func TestPLCDemo(t *testing.T) {
	nodeServer, err := filepath.Abs("../../drivers/opcua/testdata/nodeserver")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(nodeServer, "node_modules")); err != nil {
		t.Fatal("node-opcua is not installed: run make test-setup (npm ci in drivers/opcua/testdata/nodeserver)")
	}
	dir := t.TempDir()
	mbBin := testmodbus.ServerBinary(t)
	// The vibration runs healthy for 4 s, then faulty for 2 s, over and over.
	mbPort := freePortNum(t)
	startLineServer(t, nil, mbBin, strconv.Itoa(mbPort), "6")
	uaPort := freePortNum(t)
	press := startLineServer(t, []string{"XDG_CONFIG_HOME=" + dir, "HOME=" + dir}, "node", filepath.Join(nodeServer, "server.js"),
		"--port", strconv.Itoa(uaPort), "--toggle", "250", "--press", "1")

	raw, err := os.ReadFile("../../config/plc-demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := &testLine{site: "demo-site", line: "press-line", node: "n1", httpAddr: freeAddr(t), modelsDir: filepath.Join(dir, "models")}
	embedded := freeAddr(t)
	l.brokerURL = "tcp://" + embedded
	cfg := strings.NewReplacer(
		"127.0.0.1:5020", fmt.Sprintf("127.0.0.1:%d", mbPort),
		"opc.tcp://127.0.0.1:4840/edged", fmt.Sprintf("opc.tcp://127.0.0.1:%d/edged", uaPort),
		"listen: 127.0.0.1:8080", "listen: "+l.httpAddr,
		"embedded_listen: 127.0.0.1:1883", "embedded_listen: "+embedded,
		"dir: var/plc-demo/spool", "dir: "+filepath.Join(dir, "spool"),
		"dir: var/plc-demo/models", "dir: "+l.modelsDir,
		`name: ""`, "name: n1",
	).Replace(string(raw))
	if cfg == string(raw) || strings.Contains(cfg, ":5020") || strings.Contains(cfg, ":4840") || strings.Contains(cfg, "var/plc-demo") {
		t.Fatalf("the test no longer matches config/plc-demo.yaml:\n%s", cfg)
	}
	l.config = filepath.Join(dir, "plc-demo.yaml")
	if err := os.WriteFile(l.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if p := startEdged(t, "validate", "-c", l.config, "-probe"); p.wait(t, 30*time.Second) != 0 {
		t.Fatalf("edged validate -probe:\n%s", p.output())
	}

	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	sub := subscribe(t, l.brokerURL, l)

	// Parts come every 500 ms, vibration readings 5 times a second: 14 s see two
	// fault phases and over twenty parts.
	time.Sleep(14 * time.Second)
	sub.mu.Lock()
	results := append([]map[string]any(nil), sub.results...)
	sub.mu.Unlock()
	// Writes are queued before a result is published, and land within its budget.
	time.Sleep(time.Second)
	parts := map[string]string{} // part id -> expected verdict, from the station's log
	partLine := regexp.MustCompile(`^part (P\d+) force ([\d.]+) depth ([\d.]+)$`)
	writes := map[string]bool{}
	for _, line := range press.output() {
		if m := partLine.FindStringSubmatch(line); m != nil {
			force, _ := strconv.ParseFloat(m[2], 64)
			depth, _ := strconv.ParseFloat(m[3], 64)
			want := "OK"
			if force < 8 || force > 12 || depth < 4.8 || depth > 5.2 {
				want = "NG"
			}
			parts[m[1]] = want
		}
		if v, ok := strings.CutPrefix(line, "write Verdict "); ok {
			writes[strings.Trim(v, `"`)] = true
		}
	}
	judged, vib := map[string]string{}, map[string]int{}
	for _, r := range results {
		switch r["inspection"] {
		case "press-fit":
			id, _ := r["part_id"].(string)
			judged[id] = r["verdict"].(string)
		case "spindle-vibration":
			vib[r["verdict"].(string)]++
		}
	}
	if len(judged) < 15 {
		t.Fatalf("%d parts judged in 14s, want at least 15 (parts presented: %d)", len(judged), len(parts))
	}
	ng := 0
	for id, got := range judged {
		want, ok := parts[id]
		if !ok {
			t.Errorf("a verdict for part %q, which the station never presented", id)
			continue
		}
		if got != want {
			t.Errorf("part %s: verdict %s, want %s", id, got, want)
		}
		if got == "NG" {
			ng++
		}
		if !writes[id+":"+got] {
			t.Errorf("part %s: %s:%s was not written back to the PLC", id, id, got)
		}
	}
	if ng == 0 {
		t.Errorf("no part judged NG among %d; every fifth is out of the window", len(judged))
	}
	if vib["OK"] < 10 || vib["NG"] < 5 {
		t.Errorf("vibration verdicts %v, want both OK and NG (two fault phases)", vib)
	}

	// The alarm lamp follows the last vibration verdict: wait for a fault phase and
	// read the coil as the plant's HMI would.
	h := modbus.NewTCPClientHandler(fmt.Sprintf("127.0.0.1:%d", mbPort))
	h.Timeout = time.Second
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mb := modbus.NewClient(h)
	lit := false
	for end := time.Now().Add(10 * time.Second); !lit && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		b, err := mb.ReadCoils(5, 1)
		if err != nil {
			t.Fatal(err)
		}
		lit = len(b) == 1 && b[0]&1 == 1
	}
	if !lit {
		t.Error("the alarm coil 5 never lit during a fault phase")
	}

	m := scrape(t, l.httpAddr)
	t.Logf("%d parts judged (%d NG), vibration verdicts %v; writes: press ok=%v late=%v error=%v, spindle ok=%v late=%v error=%v",
		len(judged), ng, vib,
		m[`edged_writeback_total{inspection="press-fit",result="ok",writer="press"}`],
		m[`edged_writeback_total{inspection="press-fit",result="late",writer="press"}`],
		m[`edged_writeback_total{inspection="press-fit",result="error",writer="press"}`],
		m[`edged_writeback_total{inspection="spindle-vibration",result="ok",writer="spindle"}`],
		m[`edged_writeback_total{inspection="spindle-vibration",result="late",writer="spindle"}`],
		m[`edged_writeback_total{inspection="spindle-vibration",result="error",writer="spindle"}`])
	for _, w := range []string{"press", "spindle"} {
		if n := m[`edged_writeback_seconds_count{writer="`+w+`"}`]; n > 0 {
			t.Logf("%s: mean write %.2f ms over %v writes", w, 1000*m[`edged_writeback_seconds_sum{writer="`+w+`"}`]/n, n)
		}
	}
	for _, k := range []string{
		`edged_writeback_total{inspection="press-fit",result="ok",writer="press"}`,
		`edged_writeback_total{inspection="spindle-vibration",result="ok",writer="spindle"}`,
	} {
		if m[k] == 0 {
			t.Errorf("%s is 0", k)
		}
	}
	if code := p.stop(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
