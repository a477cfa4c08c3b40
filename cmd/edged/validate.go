package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

func cmdValidate(args []string) error {
	fs := flag.NewFlagSet("edged validate", flag.ContinueOnError)
	path := fs.String("c", "", "config file to check (required)")
	probe := fs.Bool("probe", false, "also check each source against its device: registers answer, node ids exist, credentials are accepted")
	timeout := fs.Duration("probe-timeout", 10*time.Second, "how long each device may take to answer the probe")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *path == "" {
		fs.Usage()
		return errUsage
	}
	cfg, prof, _, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if *probe {
		if err := probeSources(cfg, *timeout); err != nil {
			return err
		}
	}
	fmt.Printf("%s: ok (%d sources, %d inspections, hardware profile %s)\n", *path, len(cfg.Sources), len(cfg.Inspections), prof.Name)
	return nil
}

// probeSources runs every source's Prober, all of them, and reports each failure by
// source name; sources whose drivers cannot probe are listed as not checked.
func probeSources(cfg *config.Config, timeout time.Duration) error {
	var errs []error
	for i := range cfg.Sources {
		s := &cfg.Sources[i]
		f, err := drivers.Lookup(s.Type)
		if err != nil {
			errs = append(errs, fmt.Errorf("sources[%d] %q: %w", i, s.Name, err))
			continue
		}
		d, err := f.New(s.Spec(), s.Driver)
		if err != nil {
			errs = append(errs, fmt.Errorf("sources[%d] %q: %w", i, s.Name, err))
			continue
		}
		p, ok := d.(drivers.Prober)
		if !ok {
			fmt.Printf("source %q (%s): nothing to probe\n", s.Name, s.Type)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err = p.Probe(ctx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("sources[%d] %q: probe: %w", i, s.Name, err))
			continue
		}
		fmt.Printf("source %q (%s): device answers as configured\n", s.Name, s.Type)
	}
	return errors.Join(errs...)
}
