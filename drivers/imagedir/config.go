// Package imagedir provides the image-folder driver: AOI inspection cameras drop PNG,
// JPEG or BMP files into a folder, and the driver emits each complete file exactly once,
// also across restarts, then moves, deletes or keeps it. The folder is the buffer: under
// backpressure files wait on disk, never in memory.
package imagedir

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// What to do with a file once its reading was handed to the pipeline.
const (
	AfterMove   = "move"
	AfterDelete = "delete"
	AfterKeep   = "keep"
)

// Where a reading's part id comes from.
const (
	PartIDNone     = "none"
	PartIDFilename = "filename"
)

// Config is the `imagedir:` block of a source.
type Config struct {
	// Dir is the folder the cameras write to; it must exist when the source starts.
	Dir string `yaml:"dir"`
	// Patterns are the file names taken, as globs matched case-insensitively against
	// the base name.
	Patterns []string `yaml:"patterns"`
	// Settle is how long a file's size and modification time must stay unchanged before
	// it counts as complete; every write event starts the wait again. A file renamed
	// into place within the folder counts at once. (fsnotify v1.10 keeps its
	// close-after-write event unexported, so a writer that closes a file in place is
	// seen complete after Settle, not at the close.)
	Settle config.Duration `yaml:"settle"`
	// After is what happens to an emitted file: move, delete or keep.
	After string `yaml:"after"`
	// DoneDir takes emitted files when After is move; default <dir>/done.
	DoneDir string `yaml:"done_dir"`
	// QuarantineDir takes files that are not images, are empty or too large, each with
	// a <name>.reason file beside it; default <dir>/quarantine.
	QuarantineDir string `yaml:"quarantine_dir"`
	// StateFile records the files emitted, so none is inferred twice, even across a
	// restart; default <dir>/.edged-imagedir.state.
	StateFile string `yaml:"state_file"`
	// MaxFileBytes is the largest file read; larger ones go to quarantine.
	MaxFileBytes config.ByteSize `yaml:"max_file_bytes"`
	// PartIDFrom is none, or filename: the base name without extension becomes the
	// reading's part id.
	PartIDFrom string `yaml:"part_id_from"`
}

// Limits of the settings.
const (
	maxSettle    = time.Hour
	maxFileLimit = 1 << 30
)

// DefaultConfig returns the defaults; Dir has none.
func DefaultConfig() *Config {
	return &Config{
		Patterns:     []string{"*.png", "*.jpg", "*.jpeg", "*.bmp"},
		Settle:       config.Duration(200 * time.Millisecond),
		After:        AfterMove,
		MaxFileBytes: 64 * config.MiB,
		PartIDFrom:   PartIDFilename,
	}
}

// Validate names each bad field and its value.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Dir) == "" {
		errs = append(errs, errors.New("dir: missing; name the folder the cameras write to"))
	}
	if len(c.Patterns) == 0 {
		errs = append(errs, errors.New("patterns: empty; no file would ever be taken"))
	}
	for i, p := range c.Patterns {
		if p == "" || strings.ContainsRune(p, '/') || strings.ContainsRune(p, filepath.Separator) {
			errs = append(errs, fmt.Errorf("patterns[%d]: %q is not a file name glob", i, p))
			continue
		}
		if _, err := filepath.Match(strings.ToLower(p), ""); err != nil {
			errs = append(errs, fmt.Errorf("patterns[%d]: %q: %w", i, p, err))
		}
	}
	if s := c.Settle.Std(); s < 0 || s > maxSettle {
		errs = append(errs, fmt.Errorf("settle: %v is out of range 0..%v", s, maxSettle))
	}
	switch c.After {
	case AfterMove, AfterDelete, AfterKeep:
	default:
		errs = append(errs, fmt.Errorf("after: %q is not one of move, delete, keep", c.After))
	}
	if c.MaxFileBytes <= 0 || c.MaxFileBytes > maxFileLimit {
		errs = append(errs, fmt.Errorf("max_file_bytes: %v is out of range 1B..%v", c.MaxFileBytes, config.ByteSize(maxFileLimit)))
	}
	switch c.PartIDFrom {
	case PartIDNone, PartIDFilename:
	default:
		errs = append(errs, fmt.Errorf("part_id_from: %q is not one of none, filename", c.PartIDFrom))
	}
	if c.Dir != "" {
		dir := filepath.Clean(c.Dir)
		for _, k := range []struct{ key, path string }{{"done_dir", c.DoneDir}, {"quarantine_dir", c.QuarantineDir}} {
			if k.path != "" && filepath.Clean(k.path) == dir {
				errs = append(errs, fmt.Errorf("%s: %q is the watched folder itself", k.key, k.path))
			}
		}
	}
	return errors.Join(errs...)
}

// withDefaults fills the paths that default to places inside Dir.
func (c Config) withDefaults() Config {
	c.Dir = filepath.Clean(c.Dir)
	if c.DoneDir == "" {
		c.DoneDir = filepath.Join(c.Dir, "done")
	}
	if c.QuarantineDir == "" {
		c.QuarantineDir = filepath.Join(c.Dir, "quarantine")
	}
	if c.StateFile == "" {
		c.StateFile = filepath.Join(c.Dir, ".edged-imagedir.state")
	}
	c.Patterns = append([]string(nil), c.Patterns...)
	for i, p := range c.Patterns {
		c.Patterns[i] = strings.ToLower(p)
	}
	return c
}

// matches reports whether a base name is taken by the patterns (lower-cased already).
func (c *Config) matches(name string) bool {
	l := strings.ToLower(name)
	for _, p := range c.Patterns {
		if ok, _ := filepath.Match(p, l); ok {
			return true
		}
	}
	return false
}

func init() {
	drivers.Register("imagedir", drivers.Factory{
		NewConfig: func() any { return DefaultConfig() },
		New: func(spec drivers.Spec, cfg any) (drivers.Driver, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("imagedir: config is %T, not *imagedir.Config", cfg)
			}
			return New(spec, c)
		},
	})
}
