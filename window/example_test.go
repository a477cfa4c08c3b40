package window_test

import (
	"fmt"
	"math"
	"time"

	"github.com/edgedrun/edged/window"
)

// A Windower sits in front of a model: feed it every sample, and hand the model each
// window it completes.
func ExampleWindower() {
	cfg := window.Config{
		Channels: []string{"acc_x"},
		Length:   1024,
		Hop:      512,
		RateHz:   2048,
		MaxGap:   2,
		Features: []string{"rms", "kurtosis", "band"},
		Bands:    [][2]float64{{0, 100}, {100, 400}},
	}
	names := window.FeatureNames(cfg)
	w, err := window.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sample := map[string]float64{}
	features := map[string]float64{}
	for i := range 2048 {
		sample["acc_x"] = 0.5 * math.Sin(2*math.Pi*160*float64(i)/2048) // 160 Hz, 0.5 g
		t := start.Add(time.Duration(i) * time.Second / 2048)
		if !w.Add(t, uint64(i), sample) {
			continue
		}
		w.Features(features)
		fmt.Printf("window ending at seq %d:", w.Window().Seq)
		for _, name := range names {
			fmt.Printf(" %s=%.3f", name, features[name])
		}
		fmt.Println()
	}
	fmt.Println("resets:", w.Resets())
	// Output:
	// window ending at seq 1023: acc_x.rms=0.354 acc_x.kurtosis=1.500 acc_x.band_0_100=0.000 acc_x.band_100_400=0.354
	// window ending at seq 1535: acc_x.rms=0.354 acc_x.kurtosis=1.500 acc_x.band_0_100=0.000 acc_x.band_100_400=0.354
	// window ending at seq 2047: acc_x.rms=0.354 acc_x.kurtosis=1.500 acc_x.band_0_100=0.000 acc_x.band_100_400=0.354
	// resets: map[clock:0 gap:0 missing_channel:0 restart:0]
}
