package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	smb "github.com/simonvetter/modbus"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// swapBytes and swapWords turn big-endian register bytes into the other layouts,
// written independently of the driver's decoding.
func swapBytes(b []byte) []byte {
	out := bytes.Clone(b)
	for i := 0; i+1 < len(out); i += 2 {
		out[i], out[i+1] = out[i+1], out[i]
	}
	return out
}

func swapWords(b []byte) []byte {
	out := make([]byte, len(b))
	for i := 0; i < len(b); i += 2 {
		copy(out[len(b)-2-i:], b[i:i+2])
	}
	return out
}

// bigEndian is the value's bytes in the Modbus specification's layout.
func bigEndian(typ Type, v float64) []byte {
	switch typ {
	case Int16:
		return binary.BigEndian.AppendUint16(nil, uint16(int16(v)))
	case Uint16:
		return binary.BigEndian.AppendUint16(nil, uint16(v))
	case Int32:
		return binary.BigEndian.AppendUint32(nil, uint32(int32(v)))
	case Uint32:
		return binary.BigEndian.AppendUint32(nil, uint32(v))
	case Float32:
		return binary.BigEndian.AppendUint32(nil, math.Float32bits(float32(v)))
	default:
		return binary.BigEndian.AppendUint64(nil, math.Float64bits(v))
	}
}

func TestValuesEveryTypeAndOrder(t *testing.T) {
	h := &vHandler{}
	values := map[Type]float64{
		Int16: -1234, Uint16: 54321, Int32: -123456789, Uint32: 3000000000,
		Float32: -21.5, Float64: math.Pi * 1e10,
	}
	var regs []Register
	want := map[string]float64{}
	addr := 0
	for _, typ := range []Type{Int16, Uint16, Int32, Uint32, Float32, Float64} {
		for _, bo := range []Order{Big, Little} {
			for _, wo := range []Order{Big, Little} {
				b := bigEndian(typ, values[typ])
				if wo == Little {
					b = swapWords(b)
				}
				if bo == Little {
					b = swapBytes(b)
				}
				for i := 0; i < len(b); i += 2 {
					h.holding[addr+i/2] = binary.BigEndian.Uint16(b[i:])
					h.input[addr+i/2] = binary.BigEndian.Uint16(b[i:])
				}
				name := fmt.Sprintf("%s_%s_%s", typ, bo, wo)
				regs = append(regs,
					Register{Name: name, Address: addr, Type: typ, ByteOrder: bo, WordOrder: wo},
					Register{Name: "in_" + name, Address: addr, Function: Input, Type: typ, ByteOrder: bo, WordOrder: wo})
				want[name], want["in_"+name] = values[typ], values[typ]
				addr += typ.words() + 1
			}
		}
	}
	// The same register read as another type, scaled, needs no request of its own.
	scale := 0.5
	regs = append(regs, Register{Name: "first_word", Address: 0, Type: Uint16, Scale: &scale, Offset: 1})
	first := int16(-1234)
	want["first_word"] = float64(uint16(first))*0.5 + 1
	for i := range 16 {
		h.coils[300+i] = i%3 == 0
		h.discretes[400+i] = i%2 == 1
		c, d := fmt.Sprintf("coil%d", i), fmt.Sprintf("disc%d", i)
		regs = append(regs, Register{Name: c, Address: 300 + i, Function: Coil},
			Register{Name: d, Address: 400 + i, Function: Discrete, Type: Bool})
		want[c], want[d] = 0, 0
		if i%3 == 0 {
			want[c] = 1
		}
		if i%2 == 1 {
			want[d] = 1
		}
	}
	d := newDriver(t, "orders", testConfig(startVServer(t, h), regs...))
	e := newRecEmitter()
	drivertest.Start(t, d, e)
	e.waitReadings(t, 1, 5*time.Second)
	r := e.last()
	for name, w := range want {
		if got, ok := r.Scalars[name]; !ok || got != w {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, w)
		}
	}
	if len(r.Scalars) != len(want) {
		t.Errorf("reading has %d scalars, want %d", len(r.Scalars), len(want))
	}
	if r.Source != "orders" || r.Seq == 0 || r.CapturedAt.IsZero() || r.Deadline.Sub(r.CapturedAt) != 200*time.Millisecond {
		t.Errorf("reading source %q seq %d captured %v deadline %v", r.Source, r.Seq, r.CapturedAt, r.Deadline)
	}

	// The device's orders apply to registers that do not set their own.
	c := testConfig(d.cfg.Address, Register{Name: "f", Address: 0, Type: Int16})
	c.ByteOrder = Little
	d2 := newDriver(t, "device-order", c)
	e2 := newRecEmitter()
	drivertest.Start(t, d2, e2)
	e2.waitReadings(t, 1, 5*time.Second)
	if got, want := e2.last().Scalars["f"], float64(int16(binary.LittleEndian.Uint16(bigEndian(Int16, -1234)))); got != want {
		t.Errorf("device byte order little: f = %v, want %v", got, want)
	}
}

func TestRequestsPerPoll(t *testing.T) {
	h := &vHandler{}
	regs := []Register{
		{Name: "a", Address: 0}, {Name: "b", Address: 1}, {Name: "c", Address: 5, Type: Float32},
		{Name: "d", Address: 15, Type: Int32}, // 8 unused registers from c: merged
		{Name: "e", Address: 26},              // 9 unused from d: a new request
		{Name: "f", Address: 200, Type: Float64},
		{Name: "g", Address: 0, Function: Input}, {Name: "h", Address: 100, Function: Input},
		{Name: "i", Address: 0, Function: Coil}, {Name: "j", Address: 8, Function: Coil}, {Name: "k", Address: 900, Function: Coil},
		{Name: "l", Address: 3, Function: Discrete},
	}
	d := newDriver(t, "gaps", testConfig(startVServer(t, h), regs...))
	var want []string
	for _, q := range d.Requests() {
		want = append(want, "read "+q.String())
	}
	wantPlan := []string{"read coil 0..8", "read coil 900..900", "read discrete 3..3",
		"read holding 0..16", "read holding 26..26", "read holding 200..203",
		"read input 0..0", "read input 100..100"}
	if fmt.Sprint(want) != fmt.Sprint(wantPlan) {
		t.Fatalf("plan %q, want %q", want, wantPlan)
	}
	e := newRecEmitter()
	stop := drivertest.Start(t, d, e)
	e.waitReadings(t, 5, 5*time.Second)
	stop()
	h.mu.Lock()
	ops := append([]string(nil), h.ops...)
	h.mu.Unlock()
	polls := e.count()
	// Every poll is the plan, in order; the driver may have begun one more poll when it
	// was stopped.
	if len(ops) < polls*len(want) || len(ops) >= (polls+1)*len(want) {
		t.Fatalf("%d requests for %d polls of %d requests", len(ops), polls, len(want))
	}
	for i, op := range ops {
		if op != want[i%len(want)] {
			t.Fatalf("request %d is %q, want %q (requests: %q)", i, op, want[i%len(want)], ops)
		}
	}
}

// syncBuffer is a log sink safe for the driver's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func TestException(t *testing.T) {
	h := &vHandler{refuse: smb.ErrIllegalDataAddress}
	addr := startVServer(t, h)
	regs := []Register{{Name: "x", Address: 100}, {Name: "y", Address: 109}, {Name: "z", Address: 0, Function: Input}}
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	d, err := New(drivers.Spec{Name: "vib", Log: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg}, testConfig(addr, regs...))
	if err != nil {
		t.Fatal(err)
	}
	const wantErr = `source "vib": read holding 100..109: exception 2 (illegal data address)`
	err = d.Probe(context.Background())
	if err == nil || err.Error() != wantErr {
		t.Fatalf("Probe = %v, want %q", err, wantErr)
	}
	var exc *ExceptionError
	if !errors.As(err, &exc) || exc.Code != 2 {
		t.Fatalf("Probe error %v does not carry exception 2", err)
	}

	e := newRecEmitter()
	drivertest.Start(t, d, e)
	e.waitFor(t, "3 exceptions counted", 5*time.Second, func() bool {
		return counterValue(t, reg, "edged_modbus_exceptions_total", map[string]string{"source": "vib", "code": "2"}) >= 3
	})
	if n := counterValue(t, reg, "edged_modbus_requests_total", map[string]string{"source": "vib", "function": "read_holding", "result": "exception"}); n < 3 {
		t.Errorf("requests_total{result=exception} = %v", n)
	}
	if !strings.Contains(logs.String(), `err="read holding 100..109: exception 2 (illegal data address)"`) {
		t.Errorf("log does not name the exception:\n%s", logs.String())
	}
	// The device answered: it is up, on the same connection, and emits nothing.
	for _, hr := range e.healthReports() {
		if !hr.up {
			t.Fatalf("health down on an exception: %v", hr.err)
		}
	}
	if len(e.healthReports()) == 0 {
		t.Error("no health report")
	}
	if e.count() != 0 {
		t.Errorf("%d readings emitted from refused polls", e.count())
	}

	// Once the device answers again, readings flow.
	h.mu.Lock()
	h.refuse = nil
	h.holding[100] = 7
	h.mu.Unlock()
	e.waitReadings(t, 1, 5*time.Second)
	if got := e.last().Scalars["x"]; got != 7 {
		t.Errorf("x = %v, want 7", got)
	}
	if n := counterValue(t, reg, "edged_modbus_requests_total", map[string]string{"source": "vib", "function": "read_input", "result": "ok"}); n < 1 {
		t.Errorf("requests_total{read_input,ok} = %v", n)
	}
}

func TestWrites(t *testing.T) {
	h := &vHandler{}
	addr := startVServer(t, h)
	d := newDriver(t, "gate", testConfig(addr, Register{Name: "h40", Address: 40}))
	e := newRecEmitter()

	// Not running: no connection, and the write says so at once.
	err := d.Write(context.Background(), drivers.Write{Target: "coil:5", Value: true})
	if err == nil || !strings.Contains(err.Error(), `source "gate": write coil:5: not connected`) {
		t.Fatalf("write before Run = %v", err)
	}

	drivertest.Start(t, d, e)
	e.waitReadings(t, 1, 5*time.Second)
	ctx := context.Background()
	for _, w := range []drivers.Write{
		{Target: "coil:5", Value: true},
		{Target: "coil:6", Value: int64(1)},
		{Target: "coil:7", Value: "true"},
		{Target: "holding:40", Value: int64(54321)},
		{Target: "holding:42:float32", Value: 21.5},
		{Target: "holding:44:int32", Value: int64(-2)},
		{Target: "holding:48:float64", Value: "2.5"},
		{Target: "holding:52:int16", Value: -7.0},
	} {
		if err := d.CheckWrite(w); err != nil {
			t.Errorf("CheckWrite(%+v) = %v", w, err)
		}
		if err := d.Write(ctx, w); err != nil {
			t.Errorf("Write(%+v) = %v", w, err)
		}
	}
	h.mu.Lock()
	coils := h.coils[4:8]
	holding := h.holding[40:53]
	h.mu.Unlock()
	if want := [4]bool{false, true, true, true}; [4]bool(coils) != want {
		t.Errorf("coils 4..7 = %v, want %v", coils, want)
	}
	want := []uint16{54321, 0, 0x41AC, 0, 0xFFFF, 0xFFFE, 0, 0, 0x4004, 0, 0, 0, 0xFFF9}
	if fmt.Sprint(holding) != fmt.Sprint(want) {
		t.Errorf("holding 40..52 = %#04x, want %#04x", holding, want)
	}
	// The poll reads back what was written.
	e.waitFor(t, "h40 read back", 5*time.Second, func() bool {
		r := e.last()
		return r != nil && r.Scalars["h40"] == 54321
	})
	if err := d.Write(ctx, drivers.Write{Target: "coil:5", Value: false}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	if h.coils[5] {
		t.Error("coil 5 still set after writing false")
	}
	h.mu.Unlock()

	// The device's word order applies to typed writes.
	c := testConfig(addr, Register{Name: "h0", Address: 0})
	c.WordOrder = Little
	dl := newDriver(t, "gate-le", c)
	drivertest.Start(t, dl, newRecEmitter())
	e.waitFor(t, "little-endian write", 5*time.Second, func() bool {
		return dl.Write(ctx, drivers.Write{Target: "holding:60:float32", Value: 21.5}) == nil
	})
	h.mu.Lock()
	if got := h.holding[60:62]; got[0] != 0 || got[1] != 0x41AC {
		t.Errorf("little word order float32 = %#04x, want [0 0x41ac]", got)
	}
	h.mu.Unlock()

	for _, c := range []struct {
		w    drivers.Write
		want string
	}{
		{drivers.Write{Target: "holding:40", Value: int64(70000)}, `source "gate": write holding:40: value 70000: 70000 does not fit uint16`},
		{drivers.Write{Target: "holding:40:int16", Value: 1.5}, `write holding:40:int16: value 1.5: 1.5 does not fit int16`},
		{drivers.Write{Target: "holding:40:float32", Value: 1e300}, `write holding:40:float32: value 1e+300: 1e+300 does not fit float32`},
		{drivers.Write{Target: "coil:5", Value: int64(2)}, `write coil:5: value 2 is not a coil state`},
		{drivers.Write{Target: "coil:5", Value: "maybe"}, `write coil:5: value "maybe" is not a number`},
		{drivers.Write{Target: "coil:5", Value: []int{1}}, `value [1] is a []int`},
		{drivers.Write{Target: "input:5", Value: int64(1)}, `write input:5: "input" cannot be written`},
		{drivers.Write{Target: "holding:70000", Value: int64(1)}, `write holding:70000: address "70000" is not 0..65535`},
		{drivers.Write{Target: "holding:65535:float32", Value: 1.0}, `address 65535 leaves no room`},
		{drivers.Write{Target: "holding:1:int8", Value: 1.0}, `type "int8" is not int16`},
		{drivers.Write{Target: "coil:1:float32", Value: 1.0}, `type "float32" is not bool`},
		{drivers.Write{Target: "coil", Value: true}, `want "coil:<address>"`},
	} {
		err := d.CheckWrite(c.w)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckWrite(%+v) = %v, want %q", c.w, err, c.want)
		}
		err = d.Write(ctx, c.w)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Write(%+v) = %v, want %q", c.w, err, c.want)
		}
	}
}

// TestWriteDoesNotWaitForPoll: against a slow device, a write waits for the request
// in flight, not for the whole poll, and its ctx bounds the wait.
func TestWriteDoesNotWaitForPoll(t *testing.T) {
	const delay = 60 * time.Millisecond
	h := &vHandler{delay: delay}
	addr := startVServer(t, h)
	c := testConfig(addr, Register{Name: "a", Address: 0}, Register{Name: "b", Address: 100},
		Register{Name: "c", Address: 200}, Register{Name: "d", Address: 300}, Register{Name: "e", Address: 400})
	c.PollInterval = config.Duration(time.Millisecond)
	d := newDriver(t, "slow", c)
	if n := len(d.Requests()); n != 5 {
		t.Fatalf("%d requests, want 5", n)
	}
	e := newRecEmitter()
	drivertest.Start(t, d, e)
	e.waitReadings(t, 1, 5*time.Second)
	var worst time.Duration
	for i := range 4 {
		start := time.Now()
		if err := d.Write(context.Background(), drivers.Write{Target: "holding:500", Value: int64(i)}); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
	}
	// A whole poll takes 5*delay; one request in flight at most delay.
	if worst >= 3*delay {
		t.Errorf("slowest write took %v; a poll is %v, one request %v", worst, 5*delay, delay)
	}

	// A write whose ctx ends while a poll's request is in flight gives up.
	h.mu.Lock()
	h.delay = 300 * time.Millisecond
	h.entered = make(chan struct{}, 1)
	entered := h.entered
	h.mu.Unlock()
	select {
	case <-entered: // may be from a request that began before the wait was set
	case <-time.After(5 * time.Second):
		t.Fatal("no slow read began")
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no slow read began")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := d.Write(ctx, drivers.Write{Target: "holding:500", Value: int64(9)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("write past its ctx = %v, want deadline exceeded", err)
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("write past its ctx took %v", took)
	}
}

// TestWriteCancelledMidRequest: a write whose ctx ends while the device works on it
// drops the connection (the late answer would be taken for the next request's), and
// polling connects again without reporting the device down.
func TestWriteCancelledMidRequest(t *testing.T) {
	h := &vHandler{slowWrite: 300 * time.Millisecond}
	d := newDriver(t, "cut", testConfig(startVServer(t, h), Register{Name: "a", Address: 0}))
	e := newRecEmitter()
	drivertest.Start(t, d, e)
	e.waitReadings(t, 1, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := d.Write(ctx, drivers.Write{Target: "holding:3", Value: int64(1)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write cut short = %v, want deadline exceeded", err)
	}
	h.mu.Lock()
	h.slowWrite = 0
	h.mu.Unlock()
	e.waitReadings(t, 3, 5*time.Second)
	for _, hr := range e.healthReports() {
		if !hr.up {
			t.Errorf("health down after a cancelled write: %v", hr.err)
		}
	}
	if err := d.Write(context.Background(), drivers.Write{Target: "holding:3", Value: int64(2)}); err != nil {
		t.Fatalf("write after reconnect: %v", err)
	}
}
