package modbus

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	smb "github.com/simonvetter/modbus"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/internal/testmodbus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { testmodbus.Cleanup() }))
}

// cServerBinary is the libmodbus server, built once per test binary.
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

// cServer is the libmodbus server process; Stop kills it, Start brings it back on
// the same port.
type cServer struct {
	bin  string
	port int
	cmd  *exec.Cmd
}

func startCServer(tb testing.TB) *cServer {
	tb.Helper()
	s := &cServer{bin: cServerBinary(tb), port: freePort(tb)}
	s.Start(tb)
	tb.Cleanup(func() { s.Stop(tb) })
	return s
}

func (s *cServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *cServer) Start(tb testing.TB) {
	tb.Helper()
	if s.cmd != nil {
		tb.Fatal("libmodbus server already running")
	}
	cmd := exec.Command(s.bin, strconv.Itoa(s.port))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start libmodbus server: %v", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		cmd.Process.Kill()
		cmd.Wait()
		tb.Fatalf("libmodbus server on port %d did not get ready: %q, %v", s.port, line, err)
	}
	s.cmd = cmd
}

func (s *cServer) Stop(tb testing.TB) {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// vHandler is the simonvetter server's register map. It counts read requests by
// table and can answer every holding read with an exception.
type vHandler struct {
	mu        sync.Mutex
	coils     [1024]bool
	discretes [1024]bool
	holding   [1024]uint16
	input     [1024]uint16
	reads     map[Function]int
	ops       []string // "read holding 0..9", "write coil 5"
	refuse    error    // answer holding reads with this
	delay     time.Duration
	entered   chan struct{} // told when a delayed read begins
	slowWrite time.Duration
}

func (h *vHandler) note(op string, fn Function) {
	h.ops = append(h.ops, op)
	if h.reads == nil {
		h.reads = map[Function]int{}
	}
	if strings.HasPrefix(op, "read") {
		h.reads[fn]++
	}
}

func (h *vHandler) HandleCoils(req *smb.CoilsRequest) ([]bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(h.coils) {
		return nil, smb.ErrIllegalDataAddress
	}
	if req.IsWrite {
		h.note(fmt.Sprintf("write coil %d", req.Addr), Coil)
		copy(h.coils[req.Addr:], req.Args)
		return nil, nil
	}
	h.note(fmt.Sprintf("read coil %d..%d", req.Addr, int(req.Addr)+int(req.Quantity)-1), Coil)
	return append([]bool(nil), h.coils[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

func (h *vHandler) HandleDiscreteInputs(req *smb.DiscreteInputsRequest) ([]bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(h.discretes) {
		return nil, smb.ErrIllegalDataAddress
	}
	h.note(fmt.Sprintf("read discrete %d..%d", req.Addr, int(req.Addr)+int(req.Quantity)-1), Discrete)
	return append([]bool(nil), h.discretes[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

func (h *vHandler) HandleHoldingRegisters(req *smb.HoldingRegistersRequest) ([]uint16, error) {
	h.mu.Lock()
	delay, entered, slowWrite := h.delay, h.entered, h.slowWrite
	h.mu.Unlock()
	if req.IsWrite && slowWrite > 0 {
		time.Sleep(slowWrite)
	}
	if delay > 0 && !req.IsWrite {
		select {
		case entered <- struct{}{}:
		default:
		}
		time.Sleep(delay) // a slow PLC: the request is in flight meanwhile
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(h.holding) {
		return nil, smb.ErrIllegalDataAddress
	}
	if req.IsWrite {
		h.note(fmt.Sprintf("write holding %d..%d", req.Addr, int(req.Addr)+int(req.Quantity)-1), Holding)
		copy(h.holding[req.Addr:], req.Args)
		return nil, nil
	}
	h.note(fmt.Sprintf("read holding %d..%d", req.Addr, int(req.Addr)+int(req.Quantity)-1), Holding)
	if h.refuse != nil {
		return nil, h.refuse
	}
	return append([]uint16(nil), h.holding[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

func (h *vHandler) HandleInputRegisters(req *smb.InputRegistersRequest) ([]uint16, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(h.input) {
		return nil, smb.ErrIllegalDataAddress
	}
	h.note(fmt.Sprintf("read input %d..%d", req.Addr, int(req.Addr)+int(req.Quantity)-1), Input)
	return append([]uint16(nil), h.input[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

// startVServer starts the simonvetter server on a free port; it cannot listen on port
// 0 and say which port it got.
func startVServer(tb testing.TB, h *vHandler) string {
	tb.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(tb))
	s, err := smb.NewServer(&smb.ServerConfiguration{
		URL:    "tcp://" + addr,
		Logger: log.New(io.Discard, "", 0),
	}, h)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatalf("start modbus server on %s: %v", addr, err)
	}
	tb.Cleanup(func() { s.Stop() })
	return addr
}

// recEmitter records what a driver emits: a copy of each reading's scalars (the
// reading itself is released at once, as the pipeline would) and each health report.
type recEmitter struct {
	mu       sync.Mutex
	readings []*drivers.Reading
	health   []healthReport
	pressure drivers.Pressure
	changed  chan struct{}
}

type healthReport struct {
	up  bool
	err error
}

func newRecEmitter() *recEmitter {
	return &recEmitter{pressure: drivers.Pressure{Accepted: true}, changed: make(chan struct{}, 1)}
}

func (e *recEmitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	c := &drivers.Reading{Source: r.Source, Seq: r.Seq, CapturedAt: r.CapturedAt, Deadline: r.Deadline,
		Scalars: maps.Clone(r.Scalars)}
	r.Release()
	e.mu.Lock()
	e.readings = append(e.readings, c)
	p := e.pressure
	e.mu.Unlock()
	e.signal()
	return p
}

func (e *recEmitter) Health(up bool, err error) {
	e.mu.Lock()
	e.health = append(e.health, healthReport{up, err})
	e.mu.Unlock()
	e.signal()
}

func (e *recEmitter) signal() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

func (e *recEmitter) setPressure(p drivers.Pressure) {
	e.mu.Lock()
	e.pressure = p
	e.mu.Unlock()
}

func (e *recEmitter) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.readings)
}

func (e *recEmitter) last() *drivers.Reading {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.readings) == 0 {
		return nil
	}
	return e.readings[len(e.readings)-1]
}

func (e *recEmitter) healthReports() []healthReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]healthReport(nil), e.health...)
}

// waitFor waits until cond holds, checking on every emit or health report and at
// least every 10ms, and fails the test after timeout.
func (e *recEmitter) waitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("%s: not within %v", what, timeout)
		case <-e.changed:
		case <-tick.C:
		}
	}
}

// waitReadings waits for n more readings than there are now.
func (e *recEmitter) waitReadings(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	want := e.count() + n
	e.waitFor(tb, fmt.Sprintf("%d readings", want), timeout, func() bool { return e.count() >= want })
}

// waitHealth waits for a health report of up after the first `after` reports.
func (e *recEmitter) waitHealth(tb testing.TB, up bool, after int, timeout time.Duration) healthReport {
	tb.Helper()
	var got healthReport
	e.waitFor(tb, fmt.Sprintf("health %v", up), timeout, func() bool {
		hs := e.healthReports()
		for _, h := range hs[min(after, len(hs)):] {
			if h.up == up {
				got = h
				return true
			}
		}
		return false
	})
	return got
}

// testConfig is a config for addr with fast polling and reconnects, so tests are quick.
func testConfig(addr string, regs ...Register) *Config {
	c := DefaultConfig()
	c.Address = addr
	c.PollInterval = config.Duration(5 * time.Millisecond)
	c.Timeout = config.Duration(500 * time.Millisecond)
	c.BackoffMin = config.Duration(10 * time.Millisecond)
	c.BackoffMax = config.Duration(100 * time.Millisecond)
	c.Registers = regs
	return c
}

func newDriver(tb testing.TB, name string, c *Config) *Driver {
	tb.Helper()
	d, err := New(drivers.Spec{Name: name, Budget: 200 * time.Millisecond, Log: quietLog()}, c)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
