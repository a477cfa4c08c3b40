// Package httpupload provides the upload driver: cameras and test rigs POST an image, or
// a batch of them, to edged's admin server at /v1/sources/{name}/upload, and may wait
// in the same request for the verdicts on it.
//
// The driver is an http.Handler the daemon mounts; it emits while its Run is active and
// answers 503 otherwise. When the source's config sets a token, the driver checks the
// request's bearer token itself; without one, the daemon checks the admin token before
// the request reaches the driver.
package httpupload

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// Config is the `httpupload:` block of a source.
type Config struct {
	// Token is the bearer token an upload must carry. Empty means the admin token,
	// which the daemon checks before the request reaches the driver.
	Token string `yaml:"token"`
	// MaxBytes is the largest image taken, per image; a larger one is answered 413.
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	// MaxBatch is the most images one multipart upload may carry.
	MaxBatch int `yaml:"max_batch"`
	// MaxConcurrent is how many uploaded images are read into memory at once; more
	// wait for their turn, so a burst of uploads cannot exhaust memory.
	MaxConcurrent int `yaml:"max_concurrent"`
	// WaitTimeout caps how long ?wait=1 waits for the verdicts; 0 means the source's
	// verdict budget. A wait never outlasts the reading's deadline.
	WaitTimeout config.Duration `yaml:"wait_timeout"`
}

// Limits of the settings.
const (
	maxMaxBytes      = 1 << 30
	maxMaxBatch      = 1024
	maxMaxConcurrent = 256
	maxWaitTimeout   = 10 * time.Minute
	// defaultWait bounds a wait when neither wait_timeout nor a verdict budget is set.
	defaultWait = 10 * time.Second
)

// DefaultConfig returns the defaults.
func DefaultConfig() *Config {
	return &Config{MaxBytes: 32 * config.MiB, MaxBatch: 16, MaxConcurrent: 4}
}

// Validate names each bad field and its value.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBytes <= 0 || c.MaxBytes > maxMaxBytes {
		errs = append(errs, fmt.Errorf("max_bytes: %v is out of range 1B..%v", c.MaxBytes, config.ByteSize(maxMaxBytes)))
	}
	if c.MaxBatch < 1 || c.MaxBatch > maxMaxBatch {
		errs = append(errs, fmt.Errorf("max_batch: %d is out of range 1..%d", c.MaxBatch, maxMaxBatch))
	}
	if c.MaxConcurrent < 1 || c.MaxConcurrent > maxMaxConcurrent {
		errs = append(errs, fmt.Errorf("max_concurrent: %d is out of range 1..%d", c.MaxConcurrent, maxMaxConcurrent))
	}
	if w := c.WaitTimeout.Std(); w < 0 || w > maxWaitTimeout {
		errs = append(errs, fmt.Errorf("wait_timeout: %v is out of range 0..%v", w, maxWaitTimeout))
	}
	if len(c.Token) > 0 && len(c.Token) < 16 {
		errs = append(errs, fmt.Errorf("token: %d characters is too short to guess hard; use 16 or more", len(c.Token)))
	}
	return errors.Join(errs...)
}

func init() {
	drivers.Register("httpupload", drivers.Factory{
		NewConfig: func() any { return DefaultConfig() },
		New: func(spec drivers.Spec, cfg any) (drivers.Driver, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("httpupload: config is %T, not *httpupload.Config", cfg)
			}
			return New(spec, c)
		},
	})
}
