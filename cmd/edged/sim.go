package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/progress"
)

const simUsage = `usage:
  edged sim dump [--kind el] --n N --out DIR [--seed S] [--defect-rate R] [--width W] [--height H]
  edged sim dump --kind vibration --seconds S --out FILE.csv [--fault KIND] [--onset D]
      [--grow D] [--seed N] [--rate HZ] [--shaft-hz HZ] [--noise G] [--load-change-every D]

The first writes N simulated EL images as PNG files with a labels.csv index into DIR.
The second writes S seconds of a simulated motor's vibration as CSV (t_s, one column
per accelerometer in g, truth, severity; --out - for standard output); KIND is none,
imbalance, misalignment, outer_race or inner_race. The same flags give the same files.
`

var flagNames = strings.NewReplacer("defect_rate:", "--defect-rate:", "width:", "--width:", "height:", "--height:")

// cmdSim runs `edged sim SUBCOMMAND`.
func cmdSim(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, simUsage)
		return errUsage
	}
	switch args[0] {
	case "dump":
		kind, rest, err := dumpKind(args[1:])
		if err != nil {
			fmt.Fprintf(os.Stderr, "edged sim dump: %v\n\n%s", err, simUsage)
			return errUsage
		}
		if kind == dumpKindVibration {
			return cmdSimDumpVibration(rest, os.Stdout, os.Stderr)
		}
		return cmdSimDump(rest, os.Stdout, os.Stderr)
	case "-h", "--help", "help":
		fmt.Print(simUsage)
		return nil
	default:
		fmt.Fprintf(os.Stderr, "edged sim: unknown subcommand %q\n\n%s", args[0], simUsage)
		return errUsage
	}
}

func cmdSimDump(args []string, stdout, stderr io.Writer) error {
	cfg := sim.DefaultConfig()
	fs := flag.NewFlagSet("edged sim dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, simUsage) }
	n := fs.Int("n", 0, "number of images")
	out := fs.String("out", "", "output directory")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the image sequence")
	fs.Float64Var(&cfg.DefectRate, "defect-rate", cfg.DefectRate, "share of defective cells, 0..1")
	fs.IntVar(&cfg.Width, "width", cfg.Width, "image width in pixels")
	fs.IntVar(&cfg.Height, "height", cfg.Height, "image height in pixels")
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
	switch {
	case fs.NArg() > 0:
		return bad("unexpected argument %q", fs.Arg(0))
	case *n <= 0:
		return bad("--n: want a positive number of images, have %d", *n)
	case *out == "":
		return bad("--out: the output directory is required")
	}
	if err := cfg.Validate(); err != nil {
		// Validate names the config file's keys; here the user typed flags.
		return bad("%s", flagNames.Replace(strings.ReplaceAll(err.Error(), "\n", "; ")))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bar := progress.New(stderr, "sim dump", int64(*n), progress.Options{Unit: "images"})
	counts, err := sim.DumpProgress(ctx, *out, *n, cfg, func(done int) { bar.Set(int64(done), 0, "") })
	bar.Done()
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "wrote %d images to %s:", *n, *out)
	for _, l := range append([]string{sim.LabelOK}, sim.DefectLabels...) {
		fmt.Fprintf(&b, " %s=%d", l, counts[l])
	}
	fmt.Fprintln(stdout, b.String())
	return nil
}
