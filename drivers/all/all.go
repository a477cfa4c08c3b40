// Package all registers every driver type built into edged.
package all

import (
	_ "github.com/edgedrun/edged/drivers/sim" // simulated EL line
)
