package dpi

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/internal/testmodbus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { testmodbus.Cleanup() }))
}
