package pipeline

import (
	"context"
	"errors"
	"math/bits"
	"runtime"
	"sync/atomic"
)

// ErrClosed is returned by a ring's Push once the ring is closed, and by its Pop once the
// ring is closed and drained.
var ErrClosed = errors.New("ring closed")

// cacheLine is the padding unit that keeps indices written by different goroutines from
// sharing a line, so a push does not invalidate the line the consumer reads from. 64 bytes
// is the line size of amd64 and arm64; padding to 128 against the adjacent-line prefetcher
// measured no better in the ring benchmarks.
const cacheLine = 64

// ringSpins and ringYields bound the spin of Push and Pop before they register as waiters
// and park: ringSpins retries, each after ringYields calls to runtime.Gosched. Waking a
// parked goroutine costs the waker microseconds (readying it, often waking an idle thread),
// far more than a push or pop, and a few yields usually give the other side time to make
// room or deliver a batch. Each retry waits several yields because every look at the ring
// pulls the other side's cache lines over.
const (
	ringSpins  = 4
	ringYields = 4
)

// backoff lets other goroutines run between two looks at a ring.
func backoff() {
	for range ringYields {
		runtime.Gosched()
	}
}

// ringClosedBit is set in the producer-side index by Close. Keeping it in the same word the
// producers advance makes "closed" and "nothing more will ever be pushed" one atomic fact:
// a push that claims a slot did so before Close, so Pop can report ErrClosed exactly when
// every accepted element has been taken.
const ringClosedBit = 1 << 63

// maxRingCap is the largest power of two an int holds, the most ringSize can round up to.
// Positions are uint64 and count every push since the ring was made; at a billion a
// second they would reach ringClosedBit after about 290 years, so they are never wrapped.
const maxRingCap = 1 << (bits.UintSize - 2)

// ringSize rounds capacity up to a power of two so a position maps to its slot by masking.
// Two is the minimum: with one slot, an MPMC slot's "full for this lap" and "free for the
// next lap" sequence numbers would be equal. SPSC keeps the same minimum so both behave
// alike.
func ringSize(capacity int) int {
	if capacity > maxRingCap {
		panic("pipeline: ring capacity too large")
	}
	if capacity < 2 {
		return 2
	}
	return 1 << bits.Len(uint(capacity-1))
}

// ringGate lets one side of a ring wait for the other without slowing the side that does
// not wait. Waiters count themselves before their last look at the ring and the other side
// looks at the count after publishing its change. Go's sync/atomic operations are
// sequentially consistent, so of "count, then look at the index" and "move the index, then
// look at the count" at least one sees the other's write: either the waiter finds the
// change or the other side finds the waiter and leaves a token. That is the Dekker pattern;
// without sequential consistency both could read stale values and a waiter would sleep
// through the only push it was waiting for.
//
// The channel holds at most one token, so signals collapse; whoever takes a token and makes
// progress passes it on while there is more to take and others still wait.
type ringGate struct {
	ch chan struct{}
	// waiters counts goroutines about to block on ch, plus one for good once anyone has
	// asked for ch directly (see watch).
	waiters atomic.Int32
	watched atomic.Bool
	_       [cacheLine - 16]byte
}

func (g *ringGate) init() { g.ch = make(chan struct{}, 1) }

// wake leaves a token unless one is already waiting; it never blocks.
func (g *ringGate) wake() {
	select {
	case g.ch <- struct{}{}:
	default:
	}
}

// wakeIfWaiting wakes only when someone besides the caller's own self registrations waits,
// which keeps the common case to one load of a line nobody writes.
func (g *ringGate) wakeIfWaiting(self int32) {
	if g.waiters.Load() > self {
		g.wake()
	}
}

// watch hands out the channel to callers that select on it themselves. Such a caller cannot
// tell the ring when it stops waiting, so the first call counts a permanent waiter: from
// then on every change offers a token, which costs a failed non-blocking send while one is
// already buffered. The first call also leaves a token, because the caller may have looked
// at the ring before it was counted and would otherwise sleep through a change made in
// between.
func (g *ringGate) watch() <-chan struct{} {
	if !g.watched.Load() && g.watched.CompareAndSwap(false, true) {
		g.waiters.Add(1)
		g.wake()
	}
	return g.ch
}

// await blocks until a token arrives or ctx ends. A token it takes is never dropped on the
// way out: it returns ctx.Err() only when the select chose ctx.Done().
func (g *ringGate) await(ctx context.Context) error {
	select {
	case <-g.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// clampLen turns two positions read at slightly different moments into a length within
// [0, capacity].
func clampLen(head, tail, capacity uint64) int {
	if tail <= head {
		return 0
	}
	if n := tail - head; n < capacity {
		return int(n)
	}
	return int(capacity)
}
