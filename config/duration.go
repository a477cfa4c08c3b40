package config

import "github.com/edgedrun/edged/config/units"

// Duration is a time.Duration written in YAML as a Go duration string: "500ms", "10s",
// "1m30s"; see units.Duration.
type Duration = units.Duration
