package modbus

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestConformance(t *testing.T) {
	srv := startCServer(t)
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			doc := fmt.Sprintf(`
address: %s
poll_interval: 20ms
timeout: 200ms
backoff_min: 20ms
backoff_max: 200ms
registers:
  - {name: counter, address: 0}
  - {name: temp, address: 2, type: float32}
  - {name: gate, address: 10, function: coil}
`, srv.Addr())
			return drivertest.Build(t, "modbus", drivers.Spec{Name: "modbus-conf", Budget: 2 * time.Second, Log: quietLog()}, doc)
		},
		Stop:  srv.Stop,
		Start: srv.Start,
	})
}
