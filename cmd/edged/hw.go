package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/hwprofiles"
	"github.com/edgedrun/edged/inference"
)

// cmdHW prints what edged makes of the box: the hardware profile and why, its settings,
// whether the execution providers' libraries are there, the power mode and the board's
// power. Support asks for this output first.
func cmdHW(args []string) error {
	return hwReport(os.Stdout, args, queryNVPModel)
}

// nvpmodelTimeout bounds `nvpmodel -q`, which talks to a service that may hang.
const nvpmodelTimeout = 5 * time.Second

// queryNVPModel runs `nvpmodel -q`; a box without it returns exec.ErrNotFound.
func queryNVPModel() ([]byte, error) {
	bin, err := exec.LookPath("nvpmodel")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), nvpmodelTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-q").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s -q: %w", bin, err)
	}
	return out, nil
}

// hwReport writes the report to w. nvpmodel runs `nvpmodel -q`; it is used only on the
// live root, as a copied tree's power mode is in its state files.
func hwReport(w io.Writer, args []string, nvpmodel func() ([]byte, error)) error {
	fl := flag.NewFlagSet("edged hw", flag.ContinueOnError)
	fl.SetOutput(w)
	root := fl.String("root", "/", "read the board's files (device tree, sysfs, nvpmodel state, libraries) under this folder instead of /, e.g. a copy taken from a box")
	cfgPath := fl.String("c", "", "config file whose hwprofile, runtime.ort_library and runtime.execution_providers to use")
	profile := fl.String("hwprofile", "", "profile name, or auto to detect (default: the config's, else auto)")
	arch := fl.String("arch", runtime.GOARCH, "architecture to detect for (with -root, that of the box the files came from)")
	cpus := fl.Int("cpus", runtime.NumCPU(), "usable CPU count to adapt the profile to")
	if err := fl.Parse(args); err != nil {
		return errUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(w, "edged hw: unexpected argument %q\n", fl.Arg(0))
		return errUsage
	}
	live := filepath.Clean(*root) == "/"
	fsys := os.DirFS(*root)

	name, ortLibrary, providers := hwprofiles.Auto, "", []string(nil)
	if *cfgPath != "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		name, ortLibrary, providers = cfg.HWProfile, cfg.Runtime.ORTLibrary, cfg.Runtime.ExecutionProviders
	}
	if *profile != "" {
		name = *profile
	}
	prof, reasons, err := hwprofiles.Resolve(name, fsys, *arch, *cpus)
	if err != nil {
		return fmt.Errorf("hwprofile %q: %w", name, err)
	}
	if len(providers) == 0 {
		providers = prof.Runtime.ExecutionProviders
	}

	fmt.Fprintf(w, "profile      %s: %s\n", prof.Name, prof.Description)
	for i, r := range reasons {
		fmt.Fprintf(w, "%-12s %s\n", label(i, "why"), r)
	}
	rt, pl := prof.Runtime, prof.Pipeline
	spinning := "off"
	if rt.Spinning {
		spinning = "on"
	}
	fmt.Fprintf(w, "settings     %s, %d cores: %d workers × %d intra-op threads, %d inter-op, spinning %s\n",
		*arch, prof.Cores, pl.Workers, rt.IntraOpThreads, rt.InterOpThreads, spinning)
	fmt.Fprintf(w, "             execution providers %s\n", strings.Join(providers, ", "))
	fmt.Fprintf(w, "             ring %d frames, batch up to %d, memory budget %d MB\n", pl.RingSize, pl.MaxBatch, prof.MemoryBudgetMB)
	if prof.PowerMode != "" {
		fmt.Fprintf(w, "             tuned for power mode %s\n", prof.PowerMode)
	}

	// ONNX Runtime loads its provider plugins from its own folder, so that folder is
	// searched first.
	var extra []string
	if live {
		lib, err := inference.FindORTLibrary(ortLibrary)
		if err != nil {
			fmt.Fprintf(w, "onnxruntime  not found: %v\n", err)
		} else {
			abs, _ := filepath.Abs(lib.Path)
			fmt.Fprintf(w, "onnxruntime  %s (%s)\n", abs, lib.From)
			extra = append(extra, filepath.Dir(abs))
		}
		extra = append(extra, filepath.SplitList(os.Getenv("LD_LIBRARY_PATH"))...)
	} else {
		if ortLibrary != "" {
			extra = append(extra, path.Dir(ortLibrary))
		}
		if p := hwprofiles.FindLibrary(fsys, "libonnxruntime.so", extra); p != "" {
			fmt.Fprintf(w, "onnxruntime  %s (under %s)\n", p, *root)
			extra = append(extra, path.Dir(p))
		} else {
			fmt.Fprintf(w, "onnxruntime  not found under %s\n", *root)
		}
	}
	writeProviders(w, hwprofiles.CheckProviders(fsys, providers, extra))

	writePowerMode(w, fsys, live, prof.PowerMode, nvpmodel)

	meter, err := hwprofiles.NewPowerMeter(fsys, nil)
	if err != nil {
		return err
	}
	if meter != nil {
		// The report names the rails that do not read; no log lines besides.
		meter.Log = slog.New(slog.DiscardHandler)
		meter.Sample()
	}
	writePower(w, meter)
	return nil
}

// label is the row heading: the name on a section's first line, blank after.
func label(i int, name string) string {
	if i == 0 {
		return name
	}
	return ""
}

// writeProviders prints a line per provider; one with a library missing falls back to
// the next provider that has all of its own, CPU at the latest.
func writeProviders(w io.Writer, checks []hwprofiles.ProviderCheck) {
	for i, c := range checks {
		head := label(i, "providers")
		switch {
		case c.Provider == hwprofiles.ProviderCPU:
			fmt.Fprintf(w, "%-12s %-9s always available\n", head, c.Provider)
		case c.OK():
			libs := make([]string, 0, len(c.Found))
			for _, p := range c.Found {
				libs = append(libs, p)
			}
			slices.Sort(libs)
			fmt.Fprintf(w, "%-12s %-9s libraries found: %s\n", head, c.Provider, strings.Join(libs, ", "))
		default:
			fmt.Fprintf(w, "%-12s %-9s missing: %s, falls back to %s\n", head, c.Provider, strings.Join(c.Missing, ", "), hwprofiles.FallsBackTo(checks, i))
		}
	}
}

// writePowerMode prints the nvpmodel mode: from `nvpmodel -q` on the live root, else from
// nvpmodel's state files, else unknown; and says so when the profile was tuned for
// another.
func writePowerMode(w io.Writer, fsys fs.FS, live bool, tuned string, nvpmodel func() ([]byte, error)) {
	var (
		mode  hwprofiles.PowerMode
		known bool
		notes []string
	)
	if live && nvpmodel != nil {
		out, err := nvpmodel()
		if err == nil {
			mode, err = hwprofiles.ParseNVPModelQuery(out)
		}
		known = err == nil
		if err != nil && tuned != "" {
			notes = append(notes, err.Error())
		}
	}
	if !known {
		m, ok, err := hwprofiles.ReadPowerMode(fsys)
		if err != nil {
			notes = append(notes, err.Error())
		}
		mode, known = m, ok && err == nil
	}
	switch {
	case !known:
		fmt.Fprintln(w, "power mode   unknown")
	case tuned != "" && mode.Name != "" && mode.Name != tuned:
		fmt.Fprintf(w, "power mode   %s, from %s; the profile was tuned for %s, so throughput and power differ from its figures\n", mode, mode.From, tuned)
	default:
		fmt.Fprintf(w, "power mode   %s, from %s\n", mode, mode.From)
	}
	for _, n := range notes {
		fmt.Fprintf(w, "             (%s)\n", n)
	}
}

// writePower prints each rail's watts and the board total.
func writePower(w io.Writer, m *hwprofiles.PowerMeter) {
	if m == nil {
		fmt.Fprintln(w, "power        no INA3221 power rails (not a Jetson, or the kernel does not expose them)")
		return
	}
	total, rails, ok := m.Watts()
	failing := m.Failing()
	for i, name := range m.Rails() {
		head := label(i, "power")
		if err, bad := failing[name]; bad {
			fmt.Fprintf(w, "%-12s %-16s does not read, skipped: %v\n", head, name, err)
			continue
		}
		fmt.Fprintf(w, "%-12s %-16s %6.2f W\n", head, name, rails[name])
	}
	from := "sum of the rails"
	if in := m.InputRail(); in != "" {
		from = in
	}
	if ok {
		fmt.Fprintf(w, "%-12s %-16s %6.2f W (%s)\n", "", "board", total, from)
	} else {
		fmt.Fprintf(w, "%-12s %-16s unknown (%s does not read)\n", "", "board", from)
	}
}
