package dpi

import "time"

// window counts events in a sliding window with two fixed buckets: the current one and
// the previous one, weighted by how much of it the sliding window still covers. Memory
// is constant whatever the limit, which an exact log of timestamps is not; the estimate
// is exact while the previous bucket is empty (a burst on a fresh connection). Not safe
// for concurrent use: each direction of a connection owns its own.
type window struct {
	limit      int
	width      time.Duration
	start      time.Time // the current bucket's start
	prev, curr int
}

func newWindow(limit int, width time.Duration, now time.Time) window {
	return window{limit: limit, width: width, start: now}
}

// hit records one event at now and reports whether the count in the window, this one
// included, is above the limit.
func (w *window) hit(now time.Time) bool {
	if el := now.Sub(w.start); el >= w.width {
		n := el / w.width
		w.start = w.start.Add(n * w.width)
		if n == 1 {
			w.prev = w.curr
		} else {
			w.prev = 0 // a whole bucket passed without events
		}
		w.curr = 0
	}
	w.curr++
	frac := 1 - float64(now.Sub(w.start))/float64(w.width)
	return float64(w.prev)*frac+float64(w.curr) > float64(w.limit)
}
