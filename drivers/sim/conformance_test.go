package sim_test

import (
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
	_ "github.com/edgedrun/edged/drivers/sim"
)

func TestConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			f, err := drivers.Lookup("sim")
			if err != nil {
				t.Fatal(err)
			}
			cfg := f.NewConfig()
			d, err := f.New(drivers.Spec{Name: "cam", Budget: time.Second}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	})
}
