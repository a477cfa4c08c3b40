package pipeline

import (
	"sync"

	"github.com/edgedrun/edged/drivers"
)

// Ring is a bounded FIFO of readings over a slice allocated once, so a burst can never
// grow memory. Push never blocks: a full ring refuses the reading and the caller counts
// the drop and tells the driver to slow down.
type Ring struct {
	mu     sync.Mutex
	buf    []*drivers.Reading
	head   int // index of the oldest reading
	n      int
	closed bool
	// ready holds a token while the ring may have readings or is closed, so consumers
	// wait on a channel and can select on their context too.
	ready chan struct{}
}

// NewRing makes a ring holding up to capacity readings.
func NewRing(capacity int) *Ring {
	if capacity < 1 {
		capacity = 1
	}
	return &Ring{buf: make([]*drivers.Reading, capacity), ready: make(chan struct{}, 1)}
}

// Cap is the ring's capacity.
func (r *Ring) Cap() int { return len(r.buf) }

// Len is the number of readings waiting.
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Occupancy is Len/Cap.
func (r *Ring) Occupancy() float64 { return float64(r.Len()) / float64(len(r.buf)) }

// Push appends x; it returns false when the ring is full or closed.
func (r *Ring) Push(x *drivers.Reading) (ok bool, occupancy float64) {
	r.mu.Lock()
	if r.closed || r.n == len(r.buf) {
		occ := float64(r.n) / float64(len(r.buf))
		r.mu.Unlock()
		return false, occ
	}
	r.buf[(r.head+r.n)%len(r.buf)] = x
	r.n++
	occ := float64(r.n) / float64(len(r.buf))
	r.mu.Unlock()
	r.signal()
	return true, occ
}

// Pop takes the oldest reading. more is false once the ring is closed and empty.
func (r *Ring) Pop() (x *drivers.Reading, more bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		if r.closed {
			r.signal() // let every other consumer see the end too
		}
		return nil, !r.closed
	}
	x = r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n > 0 || r.closed {
		r.signal() // wake the next consumer
	}
	return x, true
}

// Ready is signalled when readings may be waiting or the ring was closed.
func (r *Ring) Ready() <-chan struct{} { return r.ready }

// Close refuses further pushes; consumers drain what is left.
func (r *Ring) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.signal()
}

func (r *Ring) signal() {
	select {
	case r.ready <- struct{}{}:
	default:
	}
}
