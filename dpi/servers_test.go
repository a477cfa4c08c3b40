package dpi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gmb "github.com/goburrow/modbus"
	"github.com/prometheus/client_golang/prometheus"
	smb "github.com/simonvetter/modbus"

	"github.com/edgedrun/edged/internal/testmodbus"
)

// installHint says what provides the test's peers: the libmodbus server and mbpoll.
const installHint = "run make test-setup (Debian: apt-get install -y gcc libmodbus-dev mbpoll)"

// cServerBinary is the drivers' libmodbus test server, built once per test binary: an
// implementation of the PLC side independent of the Go ones.
func cServerBinary(tb testing.TB) string { return testmodbus.ServerBinary(tb) }

// freePort returns a port nothing listens on now, for servers that cannot listen on
// port 0 and say which port they got.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCServer starts the libmodbus server (holding 0..99 etc.; holding 0 counts
// requests) and returns its address; it is killed at cleanup. The port is picked free
// but may be taken before the server binds it (parallel tests): then another is tried.
func startCServer(tb testing.TB) string {
	tb.Helper()
	bin := cServerBinary(tb)
	var last string
	for try := 0; try < 5; try++ {
		port := freePort(tb)
		cmd := exec.Command(bin, strconv.Itoa(port))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			tb.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start libmodbus server: %v", err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if strings.HasPrefix(line, "ready") {
			tb.Cleanup(func() {
				cmd.Process.Kill()
				cmd.Wait()
			})
			return "127.0.0.1:" + strconv.Itoa(port)
		}
		cmd.Process.Kill()
		cmd.Wait()
		last = fmt.Sprintf("port %d: %q, %v, %s", port, line, err, stderr.String())
	}
	tb.Fatalf("libmodbus server did not get ready: %s", last)
	return ""
}

// startVServer starts the simonvetter server on a free port (it cannot listen on
// port 0 and say which port it got).
func startVServer(tb testing.TB) string {
	tb.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(tb))
	s, err := smb.NewServer(&smb.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 64,
		Logger: log.New(io.Discard, "", 0)}, &testmodbus.Memory{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatalf("start modbus server on %s: %v", addr, err)
	}
	tb.Cleanup(func() { s.Stop() })
	return addr
}

// alertLog collects the alerts a proxy sends.
type alertLog struct {
	mu      sync.Mutex
	alerts  []Alert
	changed chan struct{}
}

func newAlertLog() *alertLog { return &alertLog{changed: make(chan struct{}, 1)} }

func (l *alertLog) add(a Alert) {
	l.mu.Lock()
	l.alerts = append(l.alerts, a)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *alertLog) all() []Alert {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Alert(nil), l.alerts...)
}

// wait waits until at least n alerts came, and returns them.
func (l *alertLog) wait(tb testing.TB, n int, timeout time.Duration) []Alert {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if as := l.all(); len(as) >= n {
			return as
		}
		select {
		case <-l.changed:
		case <-deadline.C:
			tb.Fatalf("%d alerts, want %d: %+v", len(l.all()), n, l.all())
		}
	}
}

// testProxy is a running proxy with its registry and alerts.
type testProxy struct {
	*Proxy
	reg    *prometheus.Registry
	alerts *alertLog
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startProxy runs a proxy for cfg on a port of its own, waits until it listens and
// stops it at cleanup, checking that Run returned nil.
func startProxy(tb testing.TB, cfg Config, tweak ...func(*Proxy)) *testProxy {
	tb.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	cfg.Listen = "127.0.0.1:0"
	tp := &testProxy{reg: prometheus.NewRegistry(), alerts: newAlertLog()}
	cfg.Registerer = tp.reg
	cfg.Alerts = tp.alerts.add
	if cfg.Log == nil {
		cfg.Log = quietLog()
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range tweak {
		t(p)
	}
	tp.Proxy = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			tb.Errorf("Run did not return within 5s of cancel")
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		tb.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		tb.Fatal("proxy not ready within 5s")
	}
	return tp
}

// metric returns the value of the counter or gauge name with labels (the proxy label
// is implied), 0 when it has no sample.
func (tp *testProxy) metric(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	want := map[string]string{"proxy": tp.cfg.Name}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	mfs, err := tp.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

// anomalies returns every nonzero anomaly count as "class/action" -> count.
func (tp *testProxy) anomalies(tb testing.TB) map[string]float64 {
	tb.Helper()
	out := map[string]float64{}
	for _, c := range Classes {
		for _, a := range []Action{ActionAlert, ActionBlock} {
			if v := tp.metric(tb, "edged_dpi_anomalies_total", "class", string(c), "action", string(a)); v != 0 {
				out[string(c)+"/"+string(a)] = v
			}
		}
	}
	return out
}

// waitMetric waits until the metric has value v.
func (tp *testProxy) waitMetric(tb testing.TB, v float64, name string, labels ...string) {
	tb.Helper()
	waitUntil(tb, fmt.Sprintf("%s%v = %v", name, labels, v), 5*time.Second, func() bool {
		return tp.metric(tb, name, labels...) == v
	})
}

// waitUntil polls cond every 5ms and fails the test after timeout.
func waitUntil(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// relay is a recording TCP relay: each connection to it is carried to target, and the
// bytes are recorded per direction before they are passed on, so that once a peer has
// received them the recording holds them.
type relay struct {
	addr   string
	target string
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	up     bytes.Buffer // client to target
	down   bytes.Buffer // target to client
	conns  int
	closed int // connections whose both sides ended
}

func startRelay(tb testing.TB, target string) *relay {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String(), target: target, ln: ln}
	var mu sync.Mutex
	var open []net.Conn
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, t)
			mu.Unlock()
			r.mu.Lock()
			r.conns++
			r.mu.Unlock()
			var pair sync.WaitGroup
			pair.Add(2)
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				pair.Wait()
				c.Close()
				t.Close()
				r.mu.Lock()
				r.closed++
				r.mu.Unlock()
			}()
			for _, d := range []struct {
				src, dst net.Conn
				rec      *bytes.Buffer
			}{{c, t, &r.up}, {t, c, &r.down}} {
				r.wg.Add(1)
				go func() {
					defer r.wg.Done()
					defer pair.Done()
					buf := make([]byte, 4096)
					for {
						n, err := d.src.Read(buf)
						if n > 0 {
							r.mu.Lock()
							d.rec.Write(buf[:n])
							r.mu.Unlock()
							if _, err := d.dst.Write(buf[:n]); err != nil {
								break
							}
						}
						if err != nil {
							break
						}
					}
					// Either side ending ends the pair, as the proxy does.
					c.Close()
					t.Close()
				}()
			}
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *relay) recorded() (up, down []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.up.Bytes()), bytes.Clone(r.down.Bytes())
}

func (r *relay) closedConns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// fakePLC is the test's own PLC for what a real one never does (answer with another
// function, answer what was not asked): it frames requests by their MBAP length,
// records them, and writes whatever answer returns for each.
type fakePLC struct {
	addr string
	mu   sync.Mutex
	got  [][]byte
}

func startFakePLC(tb testing.TB, answer func(req []byte) []byte) *fakePLC {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakePLC{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for {
					adu, err := readADU(c, time.Minute)
					if err != nil {
						return
					}
					f.mu.Lock()
					f.got = append(f.got, adu)
					f.mu.Unlock()
					if out := answer(adu); len(out) > 0 {
						if _, err := c.Write(out); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return f
}

func (f *fakePLC) requests() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.got...)
}

// readADU reads one ADU, framed by its MBAP length field.
func readADU(c net.Conn, timeout time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	hdr := make([]byte, MBAPLen)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[4:6]))
	if n < 1 || n > 254 {
		return nil, fmt.Errorf("bad mbap length %d", n)
	}
	adu := make([]byte, 6+n)
	copy(adu, hdr)
	if _, err := io.ReadFull(c, adu[MBAPLen:]); err != nil {
		return nil, err
	}
	return adu, nil
}

// adu builds an ADU: transaction id, unit, PDU (the MBAP length follows the PDU).
func adu(tx uint16, unit uint8, pdu ...byte) []byte {
	b := make([]byte, MBAPLen, MBAPLen+len(pdu))
	binary.BigEndian.PutUint16(b[0:], tx)
	binary.BigEndian.PutUint16(b[4:], uint16(1+len(pdu)))
	b[6] = unit
	return append(b, pdu...)
}

// pdu16 builds a PDU of a function code followed by 16-bit words.
func pdu16(fc uint8, words ...uint16) []byte {
	b := []byte{fc}
	for _, w := range words {
		b = binary.BigEndian.AppendUint16(b, w)
	}
	return b
}

// dialRaw opens a raw TCP connection, closed at cleanup.
func dialRaw(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// expectClosed checks that the peer closes c within timeout, sending nothing first.
func expectClosed(tb testing.TB, c net.Conn, timeout time.Duration) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	var b [1]byte
	n, err := c.Read(b[:])
	var ne net.Error
	if n > 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		tb.Fatalf("connection not closed within %v: read %d bytes, %v", timeout, n, err)
	}
}

// goburrow returns a goburrow client of addr and closes it at cleanup.
func goburrow(tb testing.TB, addr string) gmb.Client {
	tb.Helper()
	h := gmb.NewTCPClientHandler(addr)
	h.Timeout = 5 * time.Second
	h.IdleTimeout = 0 // no close timer goroutine left behind
	h.SlaveId = 1
	if err := h.Connect(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return gmb.NewClient(h)
}
