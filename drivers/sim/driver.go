package sim

import (
	"context"
	"errors"

	"github.com/edgedrun/edged/drivers"
)

// Driver is the simulated line.
type Driver struct{}

// New builds a simulator driver; it starts nothing.
func New(spec drivers.Spec, cfg *Config) (*Driver, error) { return &Driver{}, nil }

// Run is being written.
func (d *Driver) Run(ctx context.Context, e drivers.Emitter) error { return errors.New("unfinished") }
