package modbus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestConformance(t *testing.T) {
	srv := startCServer(t)
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			f, err := drivers.Lookup("modbus")
			if err != nil {
				t.Fatal(err)
			}
			cfg := f.NewConfig()
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
			dec := yaml.NewDecoder(strings.NewReader(doc))
			dec.KnownFields(true)
			if err := dec.Decode(cfg); err != nil {
				t.Fatal(err)
			}
			d, err := f.New(drivers.Spec{Name: "modbus-conf", Budget: 2 * time.Second, Log: quietLog()}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Stop:  srv.Stop,
		Start: srv.Start,
	})
}
