package main

import (
	"flag"
	"fmt"
)

func cmdValidate(args []string) error {
	fs := flag.NewFlagSet("edged validate", flag.ContinueOnError)
	path := fs.String("c", "", "config file to check (required)")
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
	fmt.Printf("%s: ok (%d sources, %d inspections, hardware profile %s)\n", *path, len(cfg.Sources), len(cfg.Inspections), prof.Name)
	return nil
}
