package main

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// gcPercent trades memory for CPU: each frame allocates a few kilobytes (results, MQTT
// packets) against a live heap of a few megabytes, so the default of 100 collects many
// times a second and steals a core's share from inference on a 2-core box. The memory
// limit from the hardware profile keeps the heap bounded whatever the percentage.
const gcPercent = 400

// tuneGC applies gcPercent and the profile's memory budget (90% of it to the Go heap,
// the rest is ONNX Runtime's) unless GOGC or GOMEMLIMIT are set, which win.
func tuneGC(budgetMB int, log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" && budgetMB > 0 {
		debug.SetMemoryLimit(int64(budgetMB) << 20 * 9 / 10)
	}
	// A negative limit only reads the current one.
	log.Debug("go runtime memory", "gogc_env", os.Getenv("GOGC"), "memory_limit_bytes", debug.SetMemoryLimit(-1))
}
