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
			return drivertest.Build(t, "sim", drivers.Spec{Name: "cam", Budget: time.Second}, "")
		},
	})
}
