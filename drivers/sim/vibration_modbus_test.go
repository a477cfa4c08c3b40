package sim

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// freeAddr returns a loopback address nothing listens on now: the Modbus server
// cannot listen on port 0 and say which port it got.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// dialModbus connects a goburrow client, waiting for the driver's server to listen.
func dialModbus(t *testing.T, addr string) (modbus.Client, func()) {
	t.Helper()
	h := modbus.NewTCPClientHandler(addr)
	h.Timeout = 2 * time.Second
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := h.Connect()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("modbus server on %s not up within 10s: %v", addr, err)
		}
		// Dialling a closed port fails at once; wait on the clock rather than spin.
		<-time.After(10 * time.Millisecond)
	}
	return modbus.NewClient(h), func() { h.Close() }
}

func TestVibrationModbus(t *testing.T) {
	addr := freeAddr(t)
	d := newVibDriver(t, func(c *VibrationConfig) {
		c.ModbusListen = addr
		c.Noise = 0.2 // values that move a lot between samples, so a stale one shows
	})
	e := drivertest.NewEmitter()
	defer e.Close()
	drivertest.Start(t, d, e)
	client, closeClient := dialModbus(t, addr)
	defer closeClient()

	read := func() (vals [2]uint16, counter uint16) {
		t.Helper()
		b, err := client.ReadHoldingRegisters(0, VibCounterRegister+1)
		if err != nil {
			t.Fatalf("read holding 0..100: %v", err)
		}
		if len(b) != 2*(VibCounterRegister+1) {
			t.Fatalf("read %d bytes, want %d", len(b), 2*(VibCounterRegister+1))
		}
		for i := range vals {
			vals[i] = binary.BigEndian.Uint16(b[2*i:])
		}
		for i := 2; i < VibCounterRegister; i++ {
			if v := binary.BigEndian.Uint16(b[2*i:]); v != 0 {
				t.Fatalf("unmapped register %d holds %d", i, v)
			}
		}
		return vals, binary.BigEndian.Uint16(b[2*VibCounterRegister:])
	}

	// Each read's values are the sample its counter names, as the driver emitted it.
	var last uint16
	advanced := 0
	for i := range 20 {
		vals, counter := read()
		var r *drivers.Reading
		deadline := time.Now().Add(5 * time.Second)
		for r == nil {
			for _, x := range e.Readings() {
				if uint16(x.Seq) == counter {
					r = x
				}
			}
			if r == nil {
				if time.Now().After(deadline) {
					t.Fatalf("no reading with seq ≡ %d (mod 65536) emitted", counter)
				}
				e.WaitReadings(t, len(e.Readings())+1, 5*time.Second)
			}
		}
		for c, name := range []string{"acc_x", "acc_y"} {
			g := float64(int16(vals[c])) / 1000
			if want := r.Scalars[name]; math.Abs(g-want) > 0.0005+1e-12 || vals[c] != Milli(want) {
				t.Errorf("read %d: register %d = %d mg (%v g), reading %d has %s = %v g", i, c, int16(vals[c]), g, r.Seq, name, want)
			}
		}
		if i > 0 && counter != last {
			advanced++
		}
		last = counter
		// Polls a few ms apart, as a modbus source would.
		<-time.After(3 * time.Millisecond)
	}
	if advanced < 10 {
		t.Errorf("the counter advanced on %d of 19 reads, want it to follow the samples", advanced)
	}

	// The input registers mirror the holding ones; writes and addresses past the
	// counter are refused.
	if b, err := client.ReadInputRegisters(VibCounterRegister, 1); err != nil || len(b) != 2 {
		t.Errorf("read input 100: %v, %d bytes", err, len(b))
	}
	var me *modbus.ModbusError
	if _, err := client.WriteSingleRegister(0, 1); !errors.As(err, &me) || me.ExceptionCode != modbus.ExceptionCodeIllegalFunction {
		t.Errorf("write holding 0: %v, want an illegal function exception", err)
	}
	if _, err := client.ReadHoldingRegisters(100, 2); !errors.As(err, &me) || me.ExceptionCode != modbus.ExceptionCodeIllegalDataAddress {
		t.Errorf("read holding 100..101: %v, want an illegal data address exception", err)
	}
}

func TestMilli(t *testing.T) {
	for _, tc := range []struct {
		g    float64
		want int16
	}{{0, 0}, {0.0014, 1}, {-0.0016, -2}, {1.5, 1500}, {-2.25, -2250}, {40, math.MaxInt16}, {-40, math.MinInt16}} {
		if got := int16(Milli(tc.g)); got != tc.want {
			t.Errorf("Milli(%v) = %d, want %d", tc.g, got, tc.want)
		}
	}
}

// TestVibrationModbusConformance runs the suite with the Modbus server on, so that
// starting and stopping it with Run is held to the contract too (no goroutine left).
func TestVibrationModbusConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			f, err := drivers.Lookup("sim_vibration")
			if err != nil {
				t.Fatal(err)
			}
			cfg := f.NewConfig().(*VibrationConfig)
			cfg.ModbusListen = freeAddr(t)
			d, err := f.New(drivers.Spec{Name: "motor", Budget: time.Second, Log: quiet}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	})
}
