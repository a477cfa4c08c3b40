package swap_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSwapCyclesFlat activates two installed versions back and forth under a light
// frame load: goroutines, open files and memory must come back to where they were, so
// that months of pushes leave nothing behind. EDGED_SWAP_CYCLES sets the count (make
// soak runs 1000).
func TestSwapCyclesFlat(t *testing.T) {
	cycles := 100
	if s := os.Getenv("EDGED_SWAP_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("EDGED_SWAP_CYCLES=%q: want a positive count", s)
		}
		cycles = n
	}
	l := newLine(t, lineOpts{period: time.Millisecond})
	ctx := context.Background()
	m, onnx := l.signed("2", good)
	activate := func(v string) {
		t.Helper()
		if _, err := l.mgr.Activate(ctx, modelName, v, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.mgr.Push(ctx, pushReq(m, onnx)); err != nil {
		t.Fatal(err)
	}
	// One round first, so what is made once (pools, runtime arenas) is in the baseline.
	activate("1")
	activate("2")
	activate("1")
	l.waitResults("1", 3)
	g0, fd0, rss0, heap0 := settle(t, -1), openFiles(t), rss(t), goHeap()
	for i := range cycles {
		activate("2")
		activate("1")
		if i%10 == 0 {
			l.waitResults("1", 1)
			// The test's own record of events would otherwise grow with the cycles.
			l.ev.reset()
		}
	}
	l.waitResults("1", 3)
	g1, fd1, rss1, heap1 := settle(t, g0), openFiles(t), rss(t), goHeap()
	t.Logf("%d cycles (%d swaps): goroutines %d -> %d, open files %d -> %d, rss %.1f -> %.1f MiB (Go heap in use %.1f -> %.1f MiB)",
		cycles, 2*cycles, g0, g1, fd0, fd1, float64(rss0)/(1<<20), float64(rss1)/(1<<20), float64(heap0)/(1<<20), float64(heap1)/(1<<20))
	if g1 != g0 {
		t.Errorf("goroutines %d after the swaps, %d before", g1, g0)
	}
	if fd1 != fd0 {
		t.Errorf("open files %d after the swaps, %d before", fd1, fd0)
	}
	if limit := rss0 + rss0/5 + 16<<20; rss1 > limit {
		t.Errorf("rss grew from %d to %d bytes, more than 20%% + 16 MiB", rss0, rss1)
	}
	list, err := l.mgr.List()
	if err != nil || len(list) != 1 || len(list[0].Swaps) != 20 {
		t.Errorf("swap history holds %d records, want the last 20 (%v)", len(list[0].Swaps), err)
	}
}

// settle waits for the goroutine count to reach want (the retiring sessions' goroutines
// end once their last batch is done), or, with want < 0, to hold still; it gives up
// after a bounded number of looks and returns what it saw.
func settle(t *testing.T, want int) int {
	t.Helper()
	n, same := runtime.NumGoroutine(), 0
	for range 500 {
		time.Sleep(2 * time.Millisecond)
		m := runtime.NumGoroutine()
		if want >= 0 && m == want {
			return m
		}
		if m == n {
			same++
		} else {
			same = 0
		}
		if want < 0 && same >= 25 {
			return m
		}
		n = m
	}
	return n
}

// goHeap is the Go heap in use after a collection: what Go holds, as against what
// ONNX Runtime's C allocations add to the RSS.
func goHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func openFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count open files: %v (this test needs Linux's /proc)", err)
	}
	return len(ents)
}

// rss is the resident set size in bytes, from /proc/self/statm.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatalf("read rss: %v (this test needs Linux's /proc)", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		t.Fatalf("/proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(fmt.Errorf("/proc/self/statm: %w", err))
	}
	return pages * int64(os.Getpagesize())
}
