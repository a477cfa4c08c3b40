package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/edgedrun/edged/hwprofiles"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/models/demo"
	"github.com/edgedrun/edged/perf"
	"github.com/edgedrun/edged/progress"
)

func cmdBench(args []string) error {
	o := perf.DefaultOptions()
	fs := flag.NewFlagSet("edged bench", flag.ContinueOnError)
	fs.IntVar(&o.Frames, "frames", o.Frames, "frames per measured round")
	fs.IntVar(&o.Rounds, "rounds", o.Rounds, "paired rounds (bare loop, then pipeline); the median pair ratio counts")
	fs.IntVar(&o.Workers, "workers", o.Workers, "pipeline workers")
	fs.IntVar(&o.Session.IntraOpThreads, "threads", o.Session.IntraOpThreads, "ONNX Runtime intra-op threads, the same for both loops")
	lib := fs.String("ort-library", "", "path to libonnxruntime.so (default: search as edged run does)")
	backendName := fs.String("backend", "auto", "inference backend: auto, onnxruntime or purego")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	// The same runtime settings as edged run on this box, for both loops alike.
	prof, _, err := hwprofiles.Resolve(hwprofiles.Auto, os.DirFS("/"), runtime.GOARCH, runtime.NumCPU())
	if err != nil {
		return fmt.Errorf("hwprofile: %w", err)
	}
	tuneGC(prof.MemoryBudgetMB, slog.New(slog.DiscardHandler))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	backend, err := inference.Open(*backendName, *lib)
	if err != nil {
		return err
	}
	defer backend.Close()
	m, onnx, err := demo.Load()
	if err != nil {
		return err
	}
	bar := progress.New(os.Stderr, "bench", int64(o.Rounds), progress.Options{Unit: "rounds"})
	o.Round = func(done int) { bar.Set(int64(done), 0, "") }
	rep, err := perf.Run(ctx, backend, m, onnx, o)
	bar.Done()
	if err != nil {
		return err
	}
	w := os.Stdout
	fmt.Fprintf(w, "model %s, backend %s, %d worker(s), %d intra-op thread(s), %d frames x %d paired rounds\n",
		rep.Model, inference.Describe(backend).Version, rep.Workers, rep.IntraOpThreads, rep.Frames, o.Rounds)
	fmt.Fprintf(w, "bare session.Run loop       %8.1f frames/s best; rounds %s\n", rep.BareFPS, rounds(rep.BareRoundsFPS))
	fmt.Fprintf(w, "full pipeline (QoS 1 MQTT)  %8.1f frames/s best; rounds %s\n", rep.PipelineFPS, rounds(rep.PipelineRoundsFPS))
	fmt.Fprintf(w, "ratio pipeline/bare         %8.3f median of paired rounds, %.3f best/best (target >= 0.90)\n", rep.Ratio, rep.BestRatio)
	fmt.Fprintf(w, "Go allocations per frame    %8.1f  pipeline, %.1f bare run, %.1f outside ONNX Runtime (%.0f bytes/frame in the pipeline)\n",
		rep.PipelineAllocs, rep.BareAllocs, rep.AllocsOutsideORT, rep.PipelineBytes)
	fmt.Fprintf(w, "simulator rendering         %8.1f images/s on one core, %.1f allocations per image\n", rep.RenderFPS, rep.RenderAllocs)
	return nil
}

func rounds(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}
