package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers/sim"
)

// Kinds of data set `edged sim dump` writes.
const (
	dumpKindEL        = "el"
	dumpKindVibration = "vibration"
)

// dumpKind takes --kind out of the dump's arguments; the EL images are the default,
// so the dump's older command lines mean what they meant.
func dumpKind(args []string) (kind string, rest []string, err error) {
	kind = dumpKindEL
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "kind" {
			rest = append(rest, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return "", nil, errors.New("--kind: want el or vibration")
			}
			i++
			value = args[i]
		}
		kind = value
	}
	if kind != dumpKindEL && kind != dumpKindVibration {
		return "", nil, fmt.Errorf("--kind: %q is not el or vibration", kind)
	}
	return kind, rest, nil
}

var vibFlagNames = strings.NewReplacer("rate_hz:", "--rate:", "fault.kind:", "--fault:", "fault.onset:", "--onset:",
	"fault.grow:", "--grow:", "shaft_hz:", "--shaft-hz:", "noise:", "--noise:", "load_change_every:", "--load-change-every:")

// cmdSimDumpVibration runs `edged sim dump --kind vibration`.
func cmdSimDumpVibration(args []string, stdout, stderr io.Writer) error {
	cfg := sim.DefaultVibrationConfig()
	fs := flag.NewFlagSet("edged sim dump --kind vibration", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, simUsage) }
	seconds := fs.Float64("seconds", 0, "length of the signal in seconds")
	out := fs.String("out", "", "output CSV file, - for standard output")
	onset := fs.Duration("onset", cfg.Fault.Onset.Std(), "time until the fault begins")
	grow := fs.Duration("grow", cfg.Fault.Grow.Std(), "time from onset to full severity")
	loadEvery := fs.Duration("load-change-every", cfg.LoadChangeEvery.Std(), "how often the load changes; 0 never")
	fs.StringVar(&cfg.Fault.Kind, "fault", cfg.Fault.Kind, "fault: "+strings.Join(sim.FaultKinds, ", "))
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the signal")
	fs.Float64Var(&cfg.RateHz, "rate", cfg.RateHz, "sample rate in Hz")
	fs.Float64Var(&cfg.ShaftHz, "shaft-hz", cfg.ShaftHz, "shaft speed in Hz")
	fs.Float64Var(&cfg.Noise, "noise", cfg.Noise, "white noise RMS in g")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	bad := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "edged sim dump: "+format+"\n\n%s", append(a, simUsage)...)
		return errUsage
	}
	n := int64(math.Round(*seconds * cfg.RateHz))
	switch {
	case fs.NArg() > 0:
		return bad("unexpected argument %q", fs.Arg(0))
	case !(*seconds > 0 && *seconds <= 7*24*3600):
		return bad("--seconds: want a length in (0, 604800], have %v", *seconds)
	case *out == "":
		return bad("--out: the output file is required")
	}
	cfg.Fault.Onset, cfg.Fault.Grow, cfg.LoadChangeEvery = config.Duration(*onset), config.Duration(*grow), config.Duration(*loadEvery)
	if err := cfg.Validate(); err != nil {
		// Validate names the config file's keys; here the user typed flags.
		return bad("%s", vibFlagNames.Replace(strings.ReplaceAll(err.Error(), "\n", "; ")))
	}
	if n < 1 {
		return bad("--seconds: %v s at %v Hz is less than one sample", *seconds, cfg.RateHz)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *out == "-" {
		return sim.WriteVibrationCSV(ctx, stdout, n, cfg)
	}
	if err := writeFileAtomic(*out, func(w io.Writer) error { return sim.WriteVibrationCSV(ctx, w, n, cfg) }); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d samples (%s at %v Hz, fault %s, onset %v, grow %v) to %s\n",
		n, time.Duration(*seconds*float64(time.Second)), cfg.RateHz, cfg.Fault.Kind, *onset, *grow, *out)
	return nil
}

// writeFileAtomic writes path through a temporary file renamed into place, so a dump
// that was cut short leaves no file that looks whole.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := write(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
