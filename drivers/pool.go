package drivers

import (
	"math/bits"
	"sync"
)

// Readings and their image buffers come from pools, so a source emitting thousands of
// frames a second does not make the garbage collector chase megabytes of pixels: the
// pipeline releases each reading when the frame's outcome is known, and the next
// capture reuses it.

var readingPool = sync.Pool{New: func() any { return &Reading{pooled: true} }}

// Buffers are pooled by power-of-two size class, from 1 KiB to 256 MiB; larger ones are
// allocated and left to the collector.
const (
	minBufShift = 10
	maxBufShift = 28
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

// AcquireReading returns an empty reading from the pool. Whoever ends up owning it (the
// pipeline, once Emit took it) calls Release when done with it.
func AcquireReading() *Reading {
	r := readingPool.Get().(*Reading)
	r.released = false
	return r
}

// SetImage points the reading at an image of n bytes in a pooled buffer and returns the
// buffer for the driver to fill. The buffer goes back to the pool with the reading.
func (r *Reading) SetImage(f ImageFormat, width, height, n int) []byte {
	r.putBuf()
	r.buf = getBuf(n)
	r.img = Image{Format: f, Width: width, Height: height, Data: (*r.buf)[:n]}
	r.Image = &r.img
	return r.img.Data
}

// Release returns a pooled reading and its image buffer for reuse; nothing may touch
// the reading afterwards. Readings not made by AcquireReading are left to the collector.
// Releasing twice is a bug and panics, since it would hand one buffer to two frames.
func (r *Reading) Release() {
	if r == nil || !r.pooled {
		return
	}
	if r.released {
		panic("drivers: reading released twice")
	}
	r.putBuf()
	scalars := r.Scalars
	clear(scalars)
	*r = Reading{pooled: true, released: true, Scalars: scalars}
	readingPool.Put(r)
}

func (r *Reading) putBuf() {
	if r.buf != nil {
		putBuf(r.buf)
		r.buf = nil
	}
	r.img = Image{}
}

func sizeClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

func getBuf(n int) *[]byte {
	c := sizeClass(n)
	if c >= len(bufPools) {
		b := make([]byte, n)
		return &b
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 1<<(c+minBufShift))
	return &b
}

func putBuf(p *[]byte) {
	n := cap(*p)
	c := sizeClass(n)
	// Only exact class sizes go back, so every pooled buffer fits its class.
	if c >= len(bufPools) || n != 1<<(c+minBufShift) {
		return
	}
	*p = (*p)[:n]
	bufPools[c].Put(p)
}
