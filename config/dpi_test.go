package config

import (
	"reflect"
	"testing"
	"time"
)

func TestModbusDPIDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
sources:
  - {name: cell-cam, type: sim}
inspections:
  - {name: el-defect, source: cell-cam, model: el-defect}
modbus_dpi:
  - name: guard
    listen: "0.0.0.0:502"
    upstream: "10.0.3.10:502"
    clients:
      - addresses: [10.0.3.20, 10.0.4.0/24]
        read_only: true
    actions: {flood: block}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := ModbusDPI{
		Name: "guard", Listen: "0.0.0.0:502", Upstream: "10.0.3.10:502",
		MaxClients: 16, IdleTimeout: Duration(5 * time.Minute), DialTimeout: Duration(3 * time.Second),
		DefaultFunctions: DefaultDPIFunctions,
		Clients:          []DPIClient{{Addresses: []string{"10.0.3.20", "10.0.4.0/24"}, ReadOnly: true}},
		Actions:          map[string]string{"flood": "block"},
		Flood:            DPIFlood{Requests: 1000, Exceptions: 50, Window: Duration(time.Second)},
		AlertEvery:       Duration(10 * time.Second),
	}
	if len(cfg.ModbusDPI) != 1 || !reflect.DeepEqual(cfg.ModbusDPI[0], want) {
		t.Errorf("modbus_dpi %+v\nwant %+v", cfg.ModbusDPI, want)
	}
}
