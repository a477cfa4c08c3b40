package opcua

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// The conformance suite against node-opcua: its Counter changes every 50 ms, and Stop
// and Start kill the server process and start it again on the same port.
func TestConformance(t *testing.T) {
	srv := startNodeServer(t)
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			f, err := drivers.Lookup("opcua")
			if err != nil {
				t.Fatal(err)
			}
			cfg := f.NewConfig()
			src := strings.ReplaceAll(`
endpoint: ENDPOINT
request_timeout: 2s
reconnect: {min: 50ms, max: 500ms}
nodes:
  - {name: counter, node_id: "ns=1;s=Line1.Counter", sampling_interval: 50ms}
  - {name: force, node_id: "ns=1;s=Line1.Force"}
`, "ENDPOINT", srv.endpoint)
			dec := yaml.NewDecoder(strings.NewReader(src))
			dec.KnownFields(true)
			if err := dec.Decode(cfg); err != nil {
				t.Fatal(err)
			}
			if err := cfg.(*Config).Validate(); err != nil {
				t.Fatal(err)
			}
			d, err := f.New(drivers.Spec{Name: "conformance", Budget: 2 * time.Second}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Stop:  srv.Stop,
		Start: srv.Start,
		Wait:  30 * time.Second,
	})
}
