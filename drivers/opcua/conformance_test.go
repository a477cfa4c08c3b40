package opcua

import (
	"strings"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

// The conformance suite against node-opcua: its Counter changes every 50 ms, and Stop
// and Start kill the server process and start it again on the same port.
func TestConformance(t *testing.T) {
	srv := startNodeServer(t)
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			src := strings.ReplaceAll(`
endpoint: ENDPOINT
request_timeout: 2s
reconnect: {min: 50ms, max: 500ms}
nodes:
  - {name: counter, node_id: "ns=1;s=Line1.Counter", sampling_interval: 50ms}
  - {name: force, node_id: "ns=1;s=Line1.Force"}
`, "ENDPOINT", srv.endpoint)
			return drivertest.Build(t, "opcua", drivers.Spec{Name: "conformance", Budget: 2 * time.Second}, src)
		},
		Stop:  srv.Stop,
		Start: srv.Start,
		Wait:  30 * time.Second,
	})
}
