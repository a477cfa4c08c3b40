package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/goburrow/modbus"

	"github.com/edgedrun/edged/internal/testmodbus"
)

// TestModbusGuard runs edged with a Modbus traffic guard in front of the libmodbus
// server: an HMI polling through it is served as if directly, a request for a function
// not allowed (read FIFO queue) is blocked with an illegal-function exception and
// alerted on MQTT, and a write outside the map passes with an alert.
func TestModbusGuard(t *testing.T) {
	mbBin := testmodbus.ServerBinary(t)
	plcPort := freePortNum(t)
	startLineServer(t, nil, mbBin, strconv.Itoa(plcPort))

	l := writeConfig(t, "embedded", "")
	guard := freeAddr(t)
	appendConfig(t, l, fmt.Sprintf(`modbus_dpi:
  - name: plc1-guard
    listen: "%s"
    upstream: "127.0.0.1:%d"
    units: [1]
    map:
      - {table: holding, start: 0, end: 49}
      - {table: coil, start: 0, end: 99}
    actions: {function_not_allowed: block}
    alert_every: 1ms
`, guard, plcPort))
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)

	var mu sync.Mutex
	var alerts []map[string]any
	opts := mqtt.NewClientOptions().AddBroker(l.brokerURL).SetClientID(fmt.Sprintf("dpi-sub-%d", time.Now().UnixNano())).
		SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	topic := fmt.Sprintf("edged/v1/%s/%s/%s/alert/modbus_dpi", l.site, l.line, l.node)
	if tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		var ev map[string]any
		if err := json.Unmarshal(m.Payload(), &ev); err == nil {
			mu.Lock()
			alerts = append(alerts, ev)
			mu.Unlock()
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	// The HMI polls through the guard: same answers as from the PLC itself.
	h := modbus.NewTCPClientHandler(guard)
	h.Timeout = 2 * time.Second
	h.SlaveId = 1
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	hmi := modbus.NewClient(h)
	for range 20 {
		b, err := hmi.ReadHoldingRegisters(1, 1)
		if err != nil || len(b) != 2 || int(b[0])<<8|int(b[1]) != 1234 {
			t.Fatalf("read through the guard: % x, %v; want 1234", b, err)
		}
	}

	// Read FIFO queue (function 24) is not among the default functions and is blocked
	// here: the HMI gets exception 1 from the guard; the PLC never sees it.
	_, err := hmi.ReadFIFOQueue(10)
	var me *modbus.ModbusError
	if !errors.As(err, &me) || me.ExceptionCode != 1 {
		t.Errorf("read FIFO queue through the guard: %v, want exception 1 (illegal function)", err)
	}
	// A write outside the map (the PLC has 100 registers; the map allows 50) is
	// alerted on and forwarded: the PLC answers.
	if _, err := hmi.WriteSingleRegister(60, 7); err != nil {
		t.Errorf("write outside the map (alert only): %v", err)
	}
	// The connection still serves after both.
	if b, err := hmi.ReadHoldingRegisters(1, 1); err != nil || len(b) != 2 || int(b[0])<<8|int(b[1]) != 1234 {
		t.Errorf("read after the anomalies: % x, %v", b, err)
	}

	want := map[string]string{"function_not_allowed": "block", "address_out_of_range": "alert"}
	deadline := time.Now().Add(10 * time.Second)
	got := map[string]string{}
	for len(got) < len(want) && time.Now().Before(deadline) {
		mu.Lock()
		for _, ev := range alerts {
			if f, ok := ev["fields"].(map[string]any); ok {
				got[fmt.Sprint(f["class"])] = fmt.Sprint(f["action"])
			}
		}
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	for class, action := range want {
		if got[class] != action {
			t.Errorf("alert for %s: action %q, want %q (alerts: %v)", class, got[class], action, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("alerts %v, want exactly %v: clean reads must raise none", got, want)
	}
	m := scrape(t, l.httpAddr)
	for k, v := range map[string]float64{
		`edged_dpi_anomalies_total{action="block",class="function_not_allowed",proxy="plc1-guard"}`: 1,
		`edged_dpi_anomalies_total{action="alert",class="address_out_of_range",proxy="plc1-guard"}`: 1,
	} {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	c.Disconnect(100)
	if code := p.stop(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	// Stopped with edged: nothing listens on the guard's address any more.
	if conn, err := net.DialTimeout("tcp", guard, time.Second); err == nil {
		conn.Close()
		t.Error("the guard still accepts connections after edged stopped")
	}
}
