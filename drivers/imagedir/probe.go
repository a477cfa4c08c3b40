package imagedir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgedrun/edged/drivers"
)

var _ drivers.Prober = (*Driver)(nil)

// Probe checks what Run will need of the file system: the watched folder exists and can
// be listed, and the driver can write where it moves, quarantines and records files.
// A camera share mounted read-only shows here, not at the first image.
func (d *Driver) Probe(ctx context.Context) error {
	var errs []error
	fail := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("imagedir: source %q: "+format, append([]any{d.spec.Name}, a...)...))
	}
	if fi, err := os.Stat(d.cfg.Dir); err != nil {
		fail("dir %q: %w", d.cfg.Dir, err)
		return errors.Join(errs...)
	} else if !fi.IsDir() {
		fail("dir %q is not a folder", d.cfg.Dir)
		return errors.Join(errs...)
	}
	if _, err := os.ReadDir(d.cfg.Dir); err != nil {
		fail("dir %q cannot be listed: %w", d.cfg.Dir, err)
	}
	dirs := []struct{ key, path string }{{"quarantine_dir", d.cfg.QuarantineDir}, {"state_file", filepath.Dir(d.cfg.StateFile)}}
	if d.cfg.After == AfterMove {
		dirs = append(dirs, struct{ key, path string }{"done_dir", d.cfg.DoneDir})
	}
	if d.cfg.After != AfterKeep {
		// Moving or deleting a file needs write access to the watched folder.
		dirs = append(dirs, struct{ key, path string }{"dir", d.cfg.Dir})
	}
	for _, k := range dirs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := writable(k.path); err != nil {
			fail("%s %q is not writable: %w", k.key, k.path, err)
		}
	}
	return errors.Join(errs...)
}

// writable makes path (as Run would) and writes and removes a probe file in it.
func writable(path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(path, ".edged-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	cerr := f.Close()
	if err := os.Remove(name); err != nil {
		return err
	}
	return cerr
}
