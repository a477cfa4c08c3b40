// Command gen writes the training and calibration data of the vib-anomaly demo model:
// the features package window computes from windows of the vibration simulator's
// signal (drivers/sim), one CSV row per window, exactly as edged computes them on a
// line. train.py reads the files it writes.
//
//	go run ./models/demo/vib-anomaly/gen -out var/vib-anomaly
//
// It writes two files into -out:
//
//	train.csv  healthy runs only (the model learns what healthy looks like);
//	calib.csv  held-out healthy runs and faulty runs of every kind, on seeds of their
//	           own, for the threshold and the figures in the manifest.
//
// Seeds: training 1000.., calibration healthy 2000.., calibration faulty 3000.. (one
// range per kind, 100 apart). The Go evaluation test uses seeds from 9000 on, which
// neither file holds.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/edgedrun/edged/models/demo/vib-anomaly/vibrun"
	"github.com/edgedrun/edged/window"
)

func main() {
	out := flag.String("out", "var/vib-anomaly", "folder to write train.csv and calib.csv into")
	trainRuns := flag.Int("train-runs", 48, "healthy training runs")
	trainLen := flag.Duration("train-len", 10*time.Minute, "length of each training run")
	calibHealthy := flag.Int("calib-healthy", 16, "held-out healthy runs")
	calibFaulty := flag.Int("calib-faulty", 6, "faulty calibration runs per fault kind")
	flag.Parse()
	if err := run(*out, *trainRuns, *trainLen, *calibHealthy, *calibFaulty); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string, trainRuns int, trainLen time.Duration, calibHealthy, calibFaulty int) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var train []vibrun.Run
	for i := range trainRuns {
		train = append(train, vibrun.Run{Kind: "none", Seed: int64(1000 + i), Length: trainLen})
	}
	var calib []vibrun.Run
	for i := range calibHealthy {
		calib = append(calib, vibrun.Run{Kind: "none", Seed: int64(2000 + i), Length: trainLen})
	}
	for k, kind := range vibrun.FaultKinds {
		for i := range calibFaulty {
			calib = append(calib, vibrun.FaultRun(kind, int64(3000+100*k+i)))
		}
	}
	for _, f := range []struct {
		name string
		runs []vibrun.Run
	}{{"train.csv", train}, {"calib.csv", calib}} {
		if err := write(filepath.Join(out, f.name), f.runs); err != nil {
			return err
		}
	}
	return nil
}

func write(path string, runs []vibrun.Run) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	cfg := vibrun.WindowConfig()
	names := window.FeatureNames(cfg)
	fmt.Fprint(w, "run,kind,seed,t_s,truth,severity")
	for _, n := range names {
		fmt.Fprint(w, ",", n)
	}
	fmt.Fprintln(w)
	rows := 0
	for i, r := range runs {
		err := vibrun.Simulate(r, func(win vibrun.Window) {
			fmt.Fprintf(w, "%d,%s,%d,%.3f,%s,%.5f", i, r.Kind, r.Seed, win.T.Seconds(), win.Truth, win.Severity)
			for _, n := range names {
				w.WriteByte(',')
				w.WriteString(strconv.FormatFloat(win.Features[n], 'g', 8, 64))
			}
			w.WriteByte('\n')
			rows++
		})
		if err != nil {
			return fmt.Errorf("run %d (%s, seed %d): %w", i, r.Kind, r.Seed, err)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s: %d runs, %d windows\n", path, len(runs), rows)
	return f.Close()
}
